"""Your own data (``data.dataset: table``) and the checks that refuse silent wrongness: the README's worked
example, one file per split as CSV and parquet (ids agree however they are spelled), the int-vs-string
history ids, KuaiRand's one-tag-per-video column, and a one-line error for a field that would feed the
model only padding (all unknown, all histories empty, tokens that never meet their vocabulary)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import infnet.train
from infnet import reference
from infnet.data import DataConfig, load_dataset
from infnet.data.features import canonical_id, encode_frame, id_strings, load_feature_config
from infnet.data.load import encode_dataset, field_report
from shared.errors import ConfigError, DataError, run_cli

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "infnet"
CSV = FIXTURES / "table" / "interactions.csv"


def readme_example() -> dict[str, str]:
    """The code blocks of infnet/README.md's "Bring your own data" section, by the file their first line names."""
    text = (ROOT / "infnet" / "README.md").read_text()
    section = text.split("## Bring your own data", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:yaml|bash|text)\n(.*?)```", section, flags=re.S)
    named = {}
    for block in blocks:
        first = block.splitlines()[0]
        key = first.lstrip("# ").split(":")[0] if first.startswith("#") else first.split()[0]
        named[key] = block
    return named


def features(tmp_path: Path, **table) -> Path:
    """The README's feature config with its ``table`` section replaced, written beside the data."""
    cfg = yaml.safe_load(readme_example()["my_data/features.yaml"])
    cfg["table"] = table
    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def data_cfg(path: Path) -> DataConfig:
    return DataConfig(dataset="table", feature_config=str(path), cache=False)


def write_csv(tmp_path: Path, frame: pd.DataFrame, name: str = "interactions.csv") -> Path:
    frame.to_csv(tmp_path / name, index=False)
    return tmp_path / name


# --- the worked example -----------------------------------------------------------------------------------
def test_readme_bring_your_own_data_example_runs(tmp_path, monkeypatch):
    example = readme_example()
    assert (
        example["my_data/interactions.csv"].splitlines()[1] == CSV.read_text().splitlines()[0]
    )  # the header shown
    (tmp_path / "my_data").mkdir()
    shutil.copy(CSV, tmp_path / "my_data" / "interactions.csv")
    for name in ("my_data/features.yaml", "my_data/run.yaml"):
        (tmp_path / name).write_text(example[name])
    command = next(line for line in example["python"].splitlines() if "infnet.train" in line).split()
    assert command[:4] == ["python", "-m", "infnet.train", "--config"]
    monkeypatch.chdir(tmp_path)
    argv = [*command[3:], "--set", "train.epochs=1", "--set", "train.log_every=0", "--device", "cpu"]
    assert run_cli(infnet.train.main, argv) == 0
    (summary,) = (tmp_path / "runs" / "infnet" / "my_data").glob("*/summary.json")
    test = json.loads(summary.read_text())["test"]
    assert np.isfinite(test["click_auc"]) and np.isfinite(test["like_auc"])


# --- the table source ------------------------------------------------------------------------------------
def split_files(tmp_path: Path, fmt: str) -> Path:
    """The example's rows in three files by time (70/15/15), as CSV or as parquet with int64 id columns."""
    frame = pd.read_csv(CSV)
    cut = [int(len(frame) * 0.7), int(len(frame) * 0.85)]
    parts = {"train": frame.iloc[: cut[0]], "val": frame.iloc[cut[0] : cut[1]], "test": frame.iloc[cut[1] :]}
    files = {}
    for split, part in parts.items():
        files[split] = f"{split}.{fmt}"
        if fmt == "csv":
            part.to_csv(tmp_path / files[split], index=False)
        else:
            part.to_parquet(tmp_path / files[split])
    return features(tmp_path, files=files, time_column="timestamp")


def test_one_file_per_split_csv_and_parquet_encode_the_same(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "pq").mkdir()
    enc_csv, _ = encode_dataset(data_cfg(split_files(tmp_path / "csv", "csv")))
    enc_pq, _ = encode_dataset(data_cfg(split_files(tmp_path / "pq", "parquet")))
    n = len(pd.read_csv(CSV))
    assert np.bincount(enc_csv.part.numpy()).tolist() == [
        int(n * 0.7),
        int(n * 0.85) - int(n * 0.7),
        n - int(n * 0.85),
    ]
    # parquet holds int64 ids, the CSV text: read as canonical strings, they give the same ids everywhere
    assert torch.equal(enc_csv.cat, enc_pq.cat) and torch.equal(enc_csv.labels, enc_pq.labels)
    for a, b in zip(enc_csv.sequences, enc_pq.sequences):
        assert torch.equal(a.gather(np.arange(n)), b.gather(np.arange(n)))
    assert (enc_csv.cat[:, 1] > 0).all()  # every item id of the example is known


def test_history_ids_parsed_as_ints_meet_a_vocabulary_of_strings(tmp_path):
    """The issue's case: the history column came out as int64 while the item ids are text (here a parquet
    file with both columns), and every token used to encode to padding. Now they meet."""
    frame = pd.read_csv(CSV)
    frame["item_id"] = frame["item_id"].astype(str)  # text ids ...
    frame["clicked_item"] = frame["item_id"].astype(np.int64)  # ... and the same ids as integers
    frame.to_parquet(tmp_path / "interactions.parquet")
    path = features(tmp_path, file="interactions.parquet", time_column="timestamp")
    cfg = yaml.safe_load(path.read_text())
    cfg["fields"][4]["source"] = "clicked_item"  # hist_clicked reads the integer column
    path.write_text(yaml.safe_dump(cfg))
    enc, _ = encode_dataset(data_cfg(path))
    hist = enc.sequences[1].gather(np.arange(len(frame)))
    assert (hist > 0).any()
    # the same frame through the encoder directly (not canonicalised by the table reader): kinds differ,
    # the encoder compares canonical strings; the histories equal the per-row reference
    fcfg = load_feature_config(path, "table")
    frame = pd.read_parquet(tmp_path / "interactions.parquet").sort_values(
        "timestamp", kind="stable", ignore_index=True
    )
    frame["_time"] = frame["timestamp"]
    direct = encode_frame(frame, fcfg, path)
    item_ids = direct.cat[:, 1].numpy()
    user = frame["user_id"].to_numpy()
    tokens = np.where(frame["click"].to_numpy() == 1, item_ids, 0)
    want = [reference.history(user, frame["_time"], frame["click"], tokens, 10, i) for i in range(len(frame))]
    assert direct.sequences[1].gather(np.arange(len(frame))).tolist() == want
    assert torch.equal(direct.sequences[1].gather(np.arange(len(frame))), hist)


def test_kuairand_one_tag_per_video_is_not_lost(tmp_path):
    """KuaiRand's tag column with one tag per video and empty cells parses as float (12.0) in pandas; the
    reader keeps it as text, so first_tag and the tag list get the real tags, not id 0 for every row."""
    shutil.copytree(FIXTURES / "kuairand_pure", tmp_path / "kuairand_pure")
    videos_path = tmp_path / "kuairand_pure" / "video_features_basic_pure.csv"
    videos = pd.read_csv(videos_path)
    videos["tag"] = ["12", "3", "12", None, "65", "7", "12", "65"]
    videos.to_csv(videos_path, index=False)
    assert pd.read_csv(videos_path)["tag"].dtype == np.float64  # the trap: pandas alone reads 12.0
    cfg = DataConfig(dataset="kuairand_pure", root=str(tmp_path), cache=False)
    enc, _ = encode_dataset(cfg)
    names = [f.name for f in enc.spec.categorical]
    first_tag = enc.cat[:, names.index("first_tag")].numpy()
    seq_names = [f.name for f in enc.spec.sequences]
    video_tags = enc.sequences[seq_names.index("video_tags")].gather(np.arange(len(first_tag))).numpy()
    logs = pd.concat([pd.read_csv(p) for p in sorted((tmp_path / "kuairand_pure").glob("log_*.csv"))])
    has_tag = (
        logs.sort_values("time_ms", kind="stable")["video_id"].map(dict(enumerate(videos["tag"]))).notna()
    )
    part = enc.part.numpy()
    assert (first_tag[has_tag.to_numpy() & (part == 0)] > 0).all()
    # one tag per video: the list field's first token and first_tag are the same sorted-vocabulary id
    assert (video_tags[:, 0] == first_tag).all() and not video_tags[:, 1:].any()


def test_canonical_ids():
    assert [canonical_id(v) for v in (12, np.int64(12), 12.0, "12", " 12.0 ", "12.00", "007", 1.5, "a7")] == [
        "12", "12", "12", "12", "12", "12", "007", "1.5", "a7"
    ]  # fmt: skip
    s = id_strings(pd.Series([3.0, None, 4.0]))
    assert s.tolist()[0::2] == ["3", "4"] and s.isna().tolist() == [False, True, False]


# --- fields that would feed only padding --------------------------------------------------------------------
def test_all_unknown_field_is_a_one_line_error(tmp_path):
    frame = pd.read_csv(CSV).assign(category=None)
    csv = write_csv(tmp_path, frame)
    with pytest.raises(DataError, match=rf"{re.escape(str(csv))}: column 'category' \(categorical field "
                       r"'category'.*every value is unknown or missing"):  # fmt: skip
        encode_dataset(data_cfg(features(tmp_path, file=csv.name, time_column="timestamp")))


def test_all_empty_histories_are_a_one_line_error(tmp_path):
    csv = write_csv(tmp_path, pd.read_csv(CSV).assign(click=0, like=0))  # no click: no clicked history
    with pytest.raises(DataError, match=r"column 'item_id' \(history field 'hist_clicked'.*every row's history "
                       r"is empty \(no user has an earlier event with click != 0\)"):  # fmt: skip
        encode_dataset(data_cfg(features(tmp_path, file=csv.name, time_column="timestamp")))


def test_history_tokens_that_never_meet_their_vocabulary_are_an_error(tmp_path):
    csv = write_csv(tmp_path, pd.read_csv(CSV))
    path = features(tmp_path, file=csv.name, time_column="timestamp")
    cfg = yaml.safe_load(path.read_text())
    cfg["fields"][4]["source"] = "category"  # category names looked up in the item-id vocabulary
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(DataError, match=rf"{re.escape(str(csv))}: column 'category' \(history field "
                       r"'hist_clicked'.*never meet the vocabulary"):  # fmt: skip
        encode_dataset(data_cfg(path))


def test_field_report_shares_are_logged(tmp_path, caplog):
    csv = write_csv(tmp_path, pd.read_csv(CSV))
    cfg = data_cfg(features(tmp_path, file=csv.name, time_column="timestamp"))
    with caplog.at_level(logging.INFO, logger="infnet.data"):
        load_dataset(cfg)
    enc, _ = encode_dataset(cfg)
    report = {r["field"]: r for r in field_report(enc)}
    train = enc.part.numpy() == 0
    frame = pd.read_csv(CSV).sort_values("timestamp", kind="stable", ignore_index=True)
    assert report["category"]["train"] == pytest.approx(frame["category"].isna().to_numpy()[train].mean())
    assert report["category"]["what"] == "unknown" and report["hist_clicked"]["what"] == "empty"
    first_rows = ~frame.duplicated("user_id").to_numpy()  # a user's first row has no history
    assert report["hist_category"]["train"] >= first_rows[train].mean()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "share of rows with an unknown id or an empty sequence" in logged and "hist_clicked" in logged


# --- bad table configs and files ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "table, error, match",
    [
        ({"file": "interactions.csv", "files": {"train": "a.csv", "val": "b.csv", "test": "c.csv"}},
         ConfigError, "exactly one of 'files'"),
        ({"files": {"train": "a.csv", "test": "c.csv"}}, ConfigError, "needs exactly the keys train, val, test"),
        ({"file": "interactions.json"}, ConfigError, "cannot tell the format from the suffix '.json'"),
        ({"file": "missing.csv"}, DataError, "missing file"),
        ({"file": "interactions.csv", "time_column": "when"}, DataError,
         "reads column\\(s\\) when, which the file does not have"),
    ],
)  # fmt: skip
def test_bad_table_configs_are_one_line_errors(tmp_path, table, error, match):
    shutil.copy(CSV, tmp_path / "interactions.csv")
    shutil.copy(CSV, tmp_path / "interactions.json")
    with pytest.raises(error, match=match):
        encode_dataset(data_cfg(features(tmp_path, **table)))


def test_bad_time_cell_names_file_and_row(tmp_path):
    frame = pd.read_csv(CSV).astype({"timestamp": object})
    frame.loc[7, "timestamp"] = "yesterday"
    csv = write_csv(tmp_path, frame)
    with pytest.raises(
        DataError, match=rf"{re.escape(str(csv))}: time column 'timestamp' .* data row 7 \(line 9\)"
    ):
        encode_dataset(data_cfg(features(tmp_path, file=csv.name, time_column="timestamp")))


def test_bad_label_cell_is_shown_as_written(tmp_path):
    frame = pd.read_csv(CSV).astype({"like": object})
    frame.loc[11, "like"] = "yes"
    csv = write_csv(tmp_path, frame)
    with pytest.raises(
        DataError, match=rf"{re.escape(str(csv))}: column 'like' must be 0 or 1, got 'yes' at row 11"
    ):
        encode_dataset(data_cfg(features(tmp_path, file=csv.name, time_column="timestamp")))


def test_table_needs_a_feature_config():
    with pytest.raises(ConfigError, match=r"data\.dataset table needs data\.feature_config"):
        load_dataset(DataConfig(dataset="table"))
