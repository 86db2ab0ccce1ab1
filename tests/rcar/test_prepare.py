"""The embedded rcar set: digit pools, scenes, captions, region encoder, and a tiny offline prepare run."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from rcar import prepare as prep
from rcar.data import PrecompDataset, Vocab, load_eval_split, tokenize
from rcar.region_encoder import (
    BACKGROUND,
    FEAT_DIM,
    N_REGIONS,
    RegionEncoder,
    box_targets,
    extract_features,
    proposals,
)
from rcar.scenes import (
    CANVAS,
    COLOUR_NAMES,
    DIGIT_WORDS,
    DigitBank,
    captions_for,
    digit_box,
    make_scenes,
    random_scene,
    render,
    split_digit_pools,
)
from shared.errors import ConfigError, DataError

PER_CLASS = 12


def _fake_digits(per_class: int = PER_CLASS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blob 'digits' (28x28 uint8) with labels; enough for the pipeline, no download needed."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    pixels = np.zeros((len(labels), 28, 28), np.uint8)
    for i, c in enumerate(labels):
        y, x = rng.integers(6, 10, 2)
        pixels[i, y : y + 12 + c % 3, x : x + 6 + c % 5] = rng.integers(150, 256)
    return pixels, labels


@pytest.fixture(scope="module")
def bank() -> DigitBank:
    return DigitBank(*_fake_digits())


POOLS = {"encoder": 3, "encoder_val": 1, "train": 4, "dev": 2, "test": 2}


def test_digit_pools_are_disjoint_and_balanced(bank: DigitBank) -> None:
    pools = split_digit_pools(bank.labels, POOLS, seed=0)
    ids = [set(p.tolist()) for p in pools.values()]
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            assert not ids[i] & ids[j]
    for name, n in POOLS.items():
        assert np.bincount(bank.labels[pools[name]], minlength=10).tolist() == [n] * 10
    assert split_digit_pools(bank.labels, POOLS, seed=0)["test"].tolist() == pools["test"].tolist()
    with pytest.raises(ValueError, match="pools need"):
        split_digit_pools(bank.labels, {"a": PER_CLASS, "b": 1}, seed=0)


def test_scenes_use_only_their_pool_and_are_deterministic(bank: DigitBank) -> None:
    pools = split_digit_pools(bank.labels, POOLS, seed=0)
    scenes = make_scenes(bank, pools["dev"], 41, seed=5)
    assert len(scenes) == 41
    used = {d.image_id for s in scenes for d in s.digits}
    assert used <= set(pools["dev"].tolist())
    again = make_scenes(bank, pools["dev"], 41, seed=5)
    assert [s.to_json() for s in scenes] == [s.to_json() for s in again]
    assert [s.to_json() for s in make_scenes(bank, pools["dev"], 41, seed=6)] != [s.to_json() for s in scenes]
    a = render(bank, scenes[0], np.random.default_rng(1))
    assert a.shape == (CANVAS, CANVAS, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render(bank, scenes[0], np.random.default_rng(1)))
    for s in scenes:
        assert 2 <= len(s.digits) <= 4
        assert len({d.cell for d in s.digits}) == len(s.digits)  # one digit per grid cell


def test_minimal_pairs_differ_by_one_edit(bank: DigitBank) -> None:
    pools = split_digit_pools(bank.labels, POOLS, seed=0)
    scenes = make_scenes(bank, pools["train"], 200, seed=1)
    by_pair: dict[int, list] = {}
    for s in scenes:
        by_pair.setdefault(s.pair_id, []).append(s)
    edits = set()
    for pair in by_pair.values():
        assert len(pair) == 2
        base, edited = sorted(pair, key=lambda s: s.edit != "")
        edits.add(edited.edit)
        assert [d.image_id for d in base.digits] == [d.image_id for d in edited.digits]  # same digit images
        diff_colour = sum(a.colour != b.colour for a, b in zip(base.digits, edited.digits))
        diff_cell = sum(a.cell != b.cell for a, b in zip(base.digits, edited.digits))
        diff_size = sum(a.large != b.large for a, b in zip(base.digits, edited.digits))
        expected = {"colour_swap": (2, 0, 0), "position_swap": (0, 2, 0), "size_change": (0, 0, 1)}
        assert (diff_colour, diff_cell, diff_size) == expected[edited.edit]
        assert sorted(d.colour for d in base.digits) == sorted(d.colour for d in edited.digits)
    assert edits == {"colour_swap", "position_swap", "size_change"}


def test_grammar_gives_five_distinct_captions_about_the_scene(bank: DigitBank) -> None:
    pools = split_digit_pools(bank.labels, POOLS, seed=0)
    rng = np.random.default_rng(0)
    number_words = {w: i for i, w in enumerate(DIGIT_WORDS)}
    for s in make_scenes(bank, pools["test"], 60, seed=2):
        caps = captions_for(s, rng)
        assert len(caps) == 5 and len(set(caps)) == 5
        labels = {d.label for d in s.digits}
        colours = {COLOUR_NAMES[d.colour] for d in s.digits}
        for cap in caps:
            tokens = tokenize(cap)
            numerals = {int(t) for t in tokens if re.fullmatch(r"\d", t)}
            assert numerals <= labels, (cap, labels)  # never names a digit that is not there
            mentioned = numerals | {number_words[t] for t in tokens if t in number_words}
            assert mentioned & labels, cap  # names at least one of the scene's digits
            assert {t for t in tokens if t in COLOUR_NAMES} <= colours, cap


def test_proposals_and_targets(bank: DigitBank) -> None:
    rng = np.random.default_rng(0)
    pools = split_digit_pools(bank.labels, POOLS, seed=0)
    for _ in range(20):
        s = random_scene(bank, pools["train"], rng)
        boxes = proposals(bank, s, rng)
        assert boxes.shape == (N_REGIONS, 4)
        assert (boxes >= 0).all() and (boxes <= CANVAS).all()
        assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()  # every region is real
        gt = np.stack([digit_box(bank, d) for d in s.digits])
        for g in gt:
            assert any(np.allclose(g, b) for b in boxes)  # every digit's box is proposed
        t = box_targets(bank, s, boxes)
        for d, g in zip(s.digits, gt):
            r = next(i for i, b in enumerate(boxes) if np.allclose(g, b))
            assert t[r].tolist() == [d.label, d.colour, int(d.large)]
        whole = next(i for i, b in enumerate(boxes) if np.allclose(b, [0, 0, CANVAS, CANVAS]))
        assert t[whole, 0] in (BACKGROUND, -1)


def test_region_features_shape_and_determinism(bank: DigitBank) -> None:
    torch.manual_seed(0)
    model = RegionEncoder()
    pools = split_digit_pools(bank.labels, POOLS, seed=0)
    scenes = make_scenes(bank, pools["train"], 2, seed=0)
    feats, boxes, images = extract_features(model, bank, scenes, seed=0)
    assert feats.shape == (2, N_REGIONS, FEAT_DIM) and feats.dtype == np.float32
    assert boxes.shape == (2, N_REGIONS, 4) and images.shape == (2, CANVAS, CANVAS, 3)
    assert np.isfinite(feats).all()
    np.testing.assert_allclose(feats[..., -8:-4], boxes / CANVAS, rtol=1e-6)  # geometry tail
    feats2, _, _ = extract_features(model, bank, scenes, seed=0)
    np.testing.assert_array_equal(feats, feats2)


def test_build_vocab_official_layout() -> None:
    v = prep.build_vocab(["a red 3 left of a blue 7", "a red 3"])
    assert list(v["word2idx"])[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert v["word2idx"]["a"] == 4 and v["word2idx"]["3"] == 5  # most frequent first
    assert v["idx"] == len(v["word2idx"]) and v["idx2word"]["4"] == "a"


def _write_raw(raw: Path) -> None:
    pixels, labels = _fake_digits()
    table = np.concatenate([pixels.reshape(len(labels), -1), labels[:, None]], 1)
    raw.mkdir(parents=True)
    path = raw / "mnist_5k.csv.gz"
    with gzip.open(path, "wt") as f:
        np.savetxt(f, table, fmt="%d", delimiter=",")
    (raw / "manifest.json").write_text(json.dumps({"sha256": prep.sha256(path)}))


def _tiny_cfg(tmp_path: Path) -> prep.PrepareConfig:
    return prep.PrepareConfig(
        out=str(tmp_path / "mnist_scenes_precomp"),
        raw_dir=str(tmp_path / "raw"),
        n_train=12,
        n_dev=6,
        n_test=6,
        encoder_pool=3,
        encoder_val_pool=1,
        train_pool=4,
        dev_pool=2,
        test_pool=2,
        encoder_steps=2,
        encoder_batch=4,
        encoder_val_scenes=4,
        threads=1,
    )


def test_tiny_prepare_end_to_end_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_raw(tmp_path / "raw")

    def no_download(*args, **kwargs):
        raise AssertionError("the raw file matches its manifest: nothing should be downloaded")

    monkeypatch.setattr(prep.subprocess, "run", no_download)
    cfg = _tiny_cfg(tmp_path)
    info = prep.prepare(cfg)
    out = Path(cfg.out)
    assert info["n_captions"] == {"train": 60, "dev": 30, "test": 30}
    vocab = Vocab.from_json(out / "vocab.json")
    ds = PrecompDataset(out, "train", vocab, augment=True, seed=0)
    assert (ds.n_images, ds.n_regions, ds.feat_dim) == (12, N_REGIONS, FEAT_DIM)
    feats, caps = load_eval_split(out, "test", vocab)
    assert feats.shape == (6, N_REGIONS, FEAT_DIM) and len(caps) == 30
    assert not any(vocab.unk_id in c for c in caps[:5]) or info["unseen_eval_tokens"]["test"] > 0
    stamp = (out / "train_ims.npy").stat().st_mtime_ns
    prep.prepare(cfg)  # up to date: nothing rewritten
    assert (out / "train_ims.npy").stat().st_mtime_ns == stamp
    first = np.load(out / "test_ims.npy")
    prep.prepare(cfg, force=True)  # same seed -> same bytes
    np.testing.assert_array_equal(np.load(out / "test_ims.npy"), first)
    assert (out / "test_caps.txt").read_text().count("\n") == 30


def test_impossible_pools_are_a_config_error(tmp_path: Path) -> None:
    _write_raw(tmp_path / "raw")
    cfg = _tiny_cfg(tmp_path)
    cfg.train_pool = PER_CLASS  # with the other pools: more digits than a class has
    with pytest.raises(ConfigError, match="digit pools"):
        prep.prepare(cfg)


def test_corrupt_raw_file_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(bad, "wt") as f:
        f.write("1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match=r"mnist_5k.csv.gz: expected rows of 784 pixels"):
        prep.load_digits(bad)
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"mnist_5k\.csv\.gz: cannot read"):
        prep.load_digits(bad)
