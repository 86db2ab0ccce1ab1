"""rcar/data/precomp.py on a tiny folder in the exact official precomp layout (36 x 2048 float32 features)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rcar.data import (
    DataConfig,
    PrecompDataset,
    Vocab,
    augment_caption,
    build_train_dataset,
    collate_train,
    load_eval_split,
    tokenize,
)
from shared.errors import DataError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rcar" / "tiny_precomp"
N_IMAGES, R, D = 2, 36, 2048  # the real BUTD layout; 2 images per split keep the files ~600 KB in tmp_path


@pytest.fixture()
def precomp(tmp_path: Path) -> Path:
    """Committed captions + vocab, features written here (too big to commit) with the real shapes."""
    root = tmp_path / "f30k_precomp"
    shutil.copytree(FIXTURE, root)
    rng = np.random.default_rng(0)
    for i, split in enumerate(("train", "dev", "test")):
        feats = rng.standard_normal((N_IMAGES, R, D)).astype(np.float32) + i
        np.save(root / f"{split}_ims.npy", feats)
    return root


@pytest.fixture()
def vocab(precomp: Path) -> Vocab:
    return Vocab.from_json(precomp / "vocab.json")


def test_vocab_specials_mask_and_unk(vocab: Vocab, precomp: Path) -> None:
    raw = json.loads((precomp / "vocab.json").read_text())
    assert (vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.mask_id == raw["idx"] == len(raw["word2idx"])  # appended after the json's words
    assert len(vocab) == len(raw["word2idx"]) + 1
    ids = vocab.encode("A man riding a ZEBRA.")
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id
    assert vocab.decode(ids[1:-1]) == "a man riding a <unk> ."
    assert tokenize("The dog's ball, isn't it?") == ["the", "dog", "'s", "ball", ",", "isn", "'t", "it", "?"]


def test_loader_shapes_and_memmap(precomp: Path, vocab: Vocab) -> None:
    ds = PrecompDataset(precomp, "train", vocab, augment=False, seed=0)
    assert isinstance(ds.features, np.memmap)
    assert (ds.n_images, ds.n_captions, ds.n_regions, ds.feat_dim) == (2, 10, R, D)
    assert len(ds) == 10
    feats, ids, cap_idx, img_idx = ds[7]
    assert feats.shape == (R, D) and feats.dtype == torch.float32
    assert (cap_idx, img_idx) == (7, 1)  # caption j belongs to image j // 5
    expected = np.load(precomp / "train_ims.npy")[1]
    assert np.array_equal(feats.numpy(), expected)
    caps = (precomp / "train_caps.txt").read_text().splitlines()
    assert ids.tolist() == vocab.encode(caps[7])


def test_eval_split_and_dev_truncation(precomp: Path, vocab: Vocab) -> None:
    feats, caps = load_eval_split(precomp, "test", vocab)
    assert feats.shape == (N_IMAGES, R, D) and len(caps) == 5 * N_IMAGES
    assert all(c[0] == vocab.start_id and c[-1] == vocab.end_id for c in caps)
    feats1, caps1 = load_eval_split(precomp, "dev", vocab, max_images=1)
    assert feats1.shape == (1, R, D) and len(caps1) == 5
    ds = PrecompDataset(precomp, "dev", vocab, augment=False, max_images=1)
    assert len(ds) == 5 and ds.n_images == 1


def test_coco_testall_split_name(precomp: Path, vocab: Vocab) -> None:
    for suffix in ("ims.npy", "caps.txt"):
        (precomp / f"test_{suffix}").rename(precomp / f"testall_{suffix}")
    feats, caps = load_eval_split(precomp, "testall", vocab)
    assert feats.shape[0] * 5 == len(caps)


def test_augmentation_rates_match_official() -> None:
    vocab_size, mask_id = 1000, 999
    inner = list(range(10, 210))  # ids distinct from mask and specials
    ids = [1, *inner, 2]
    n_tok = hit_mask = hit_other = kept = 0
    for i in range(300):
        out = augment_caption(ids, vocab_size, mask_id, np.random.default_rng(i))
        assert out[0] == 1 and out[-1] == 2  # <start>/<end> never touched
        body = out[1:-1]
        n_tok += len(inner)
        hit_mask += sum(t == mask_id for t in body)
        kept += sum(t in set(inner) for t in body)
        hit_other += len(body)
    deleted = n_tok - hit_other
    replaced_random = hit_other - hit_mask - kept  # random ids that happened to land on an inner id are rare
    # 60,000 tokens: expected rates 10% mask, 2% random, 8% deleted (binomial sd < 0.13%)
    assert abs(hit_mask / n_tok - 0.10) < 0.006
    assert abs(deleted / n_tok - 0.08) < 0.006
    assert abs(replaced_random / n_tok - 0.02 * (1 - 200 / 1000)) < 0.004
    assert abs(kept / n_tok - (0.8 + 0.02 * 200 / 1000)) < 0.008


def test_augmentation_seeded_per_epoch_and_off_for_eval(precomp: Path, vocab: Vocab) -> None:
    def draws(ds: PrecompDataset) -> list[list[int]]:
        return [ds[i][1].tolist() for i in range(len(ds))]

    a = PrecompDataset(precomp, "train", vocab, augment=True, seed=3)
    b = PrecompDataset(precomp, "train", vocab, augment=True, seed=3)
    assert draws(a) == draws(b)  # same seed and epoch -> same captions
    base = PrecompDataset(precomp, "train", vocab, augment=False)
    clean = draws(base)
    assert clean == [vocab.encode(c) for c in (precomp / "train_caps.txt").read_text().splitlines()]
    changed = set()
    for epoch in range(8):
        a.set_epoch(epoch)
        changed.add(tuple(map(tuple, draws(a))))
    assert len(changed) == 8  # every epoch draws other masks
    assert clean == draws(base)  # no augmentation ever on an eval-style dataset


def test_collate_pads_sorts_and_keeps_indices(precomp: Path, vocab: Vocab) -> None:
    ds = PrecompDataset(precomp, "train", vocab, augment=False)
    items = [ds[i] for i in (0, 5, 9, 2)]
    batch = collate_train(items)
    assert batch["images"].shape == (4, R, D)
    lengths = batch["lengths"]
    assert lengths.tolist() == sorted(lengths.tolist(), reverse=True)
    assert batch["captions"].shape == (4, int(lengths.max()))
    for row, n, ci, ii in zip(batch["captions"], lengths, batch["caption_index"], batch["image_index"]):
        assert row[:n].tolist() == ds.captions[int(ci)]
        assert (row[n:] == 0).all()
        assert int(ii) == int(ci) // 5
        assert torch.equal(batch["images"][list(batch["caption_index"]).index(ci)], ds[int(ci)][0])
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_train)
    assert sum(b["images"].shape[0] for b in loader) == 10


def test_pickled_dataset_reopens_the_memmap(precomp: Path, vocab: Vocab) -> None:
    ds = PrecompDataset(precomp, "dev", vocab, augment=True, seed=1, max_images=1)
    ds.set_epoch(2)
    clone = pickle.loads(pickle.dumps(ds))  # what a spawn-started loader worker receives
    assert isinstance(clone.features, np.memmap) and clone.n_images == 1 and len(clone) == 5
    for i in range(5):
        assert torch.equal(clone[i][0], ds[i][0]) and torch.equal(clone[i][1], ds[i][1])


def test_build_train_dataset_from_config(precomp: Path, vocab: Vocab) -> None:
    cfg = DataConfig(root=str(precomp), n_regions=R, feat_dim=D)
    assert cfg.vocab_path() == precomp / "vocab.json"
    ds = build_train_dataset(cfg, vocab, seed=0)
    assert ds.augment and ds.n_regions == R


# ------------------------------------------------------------------------------------------ bad inputs
def _expect(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_missing_split_names_file(precomp: Path, vocab: Vocab) -> None:
    msg = _expect("split 'val' not found", PrecompDataset, precomp, "val", vocab, augment=False)
    assert "val_ims.npy" in msg and "val_caps.txt" in msg
    (precomp / "test_caps.txt").unlink()
    _expect("test_caps.txt", load_eval_split, precomp, "test", vocab)


def test_caption_count_not_five_per_image(precomp: Path, vocab: Vocab) -> None:
    caps = precomp / "train_caps.txt"
    caps.write_text("\n".join(caps.read_text().splitlines()[:9]) + "\n")
    msg = _expect("9 captions", PrecompDataset, precomp, "train", vocab, augment=False)
    assert "train_caps.txt" in msg and "train_ims.npy" in msg and "10 lines" in msg


def test_wrong_feature_shape_and_dims(precomp: Path, vocab: Vocab) -> None:
    np.save(precomp / "dev_ims.npy", np.zeros((2, R * D), np.float32))
    _expect(r"dev_ims.npy: features must have shape \(N, R, D\)", load_eval_split, precomp, "dev", vocab)
    _expect("test_ims.npy: expected 37 regions", load_eval_split, precomp, "test", vocab, n_regions=37)
    _expect("test_ims.npy: expected feature dim 1024", load_eval_split, precomp, "test", vocab, feat_dim=1024)
    np.save(precomp / "train_ims.npy", np.zeros((2, R, D), np.int64))
    _expect(
        "train_ims.npy: features must be floating", PrecompDataset, precomp, "train", vocab, augment=False
    )
    (precomp / "test_ims.npy").write_bytes(b"not a numpy file")
    _expect("test_ims.npy: cannot read", load_eval_split, precomp, "test", vocab)


def test_vocab_missing_keys_and_specials(precomp: Path) -> None:
    path = precomp / "vocab.json"
    raw = json.loads(path.read_text())
    bad = {k: v for k, v in raw.items() if k != "idx2word"}
    path.write_text(json.dumps(bad))
    msg = _expect("missing key", Vocab.from_json, path)
    assert "vocab.json" in msg and "idx2word" in msg
    raw["word2idx"]["<unk>"] = 40
    path.write_text(json.dumps(raw))
    _expect("<unk>=3", Vocab.from_json, path)
    path.write_text("{not json")
    _expect("vocab.json: not valid JSON", Vocab.from_json, path)
    _expect("vocabulary file not found", Vocab.from_json, precomp / "nope.json")


@pytest.mark.parametrize("per_item", [False, True])
def test_nan_features_name_file_and_image(precomp: Path, vocab: Vocab, per_item: bool) -> None:
    feats = np.load(precomp / "train_ims.npy")
    feats[1, 3, 5] = np.nan
    np.save(precomp / "train_ims.npy", feats)
    if not per_item:
        _expect("train_ims.npy: image 1 has NaN", PrecompDataset, precomp, "train", vocab, augment=False)
    else:  # a "big" file: checked lazily as images are read
        ds = PrecompDataset(precomp, "train", vocab, augment=False, nan_scan_max_bytes=0)
        ds[0]
        _expect("train_ims.npy: image 1 has NaN", ds.__getitem__, 5)
    np.save(precomp / "test_ims.npy", np.full((2, R, D), np.inf, np.float32))
    _expect("test_ims.npy: image 0", load_eval_split, precomp, "test", vocab)


def test_empty_caption_line_names_line(precomp: Path, vocab: Vocab) -> None:
    caps = precomp / "dev_caps.txt"
    lines = caps.read_text().splitlines()
    lines[6] = "   "
    caps.write_text("\n".join(lines) + "\n")
    _expect("dev_caps.txt: line 7 is an empty caption", load_eval_split, precomp, "dev", vocab)


def _vocab_of(path: Path, words: list[str]) -> Path:
    w2i = {tok: i for i, tok in enumerate(["<pad>", "<start>", "<end>", "<unk>", *words])}
    path.write_text(
        json.dumps({"word2idx": w2i, "idx2word": {str(i): w for w, i in w2i.items()}, "idx": len(w2i)})
    )
    return path


def test_a_vocabulary_that_knows_no_caption_word_is_refused(precomp: Path, tmp_path: Path) -> None:
    """The official loader would train on all-<unk> captions; here it is one error naming both files."""
    foreign = Vocab.from_json(_vocab_of(tmp_path / "foreign.json", ["zebra", "giraffe"]))
    msg = _expect("knows none of the", PrecompDataset, precomp, "train", foreign, augment=False)
    assert "foreign.json" in msg and "train_caps.txt" in msg and "data.vocab" in msg
    msg = _expect("knows none of the", load_eval_split, precomp, "test", foreign)
    assert "foreign.json" in msg and "test_caps.txt" in msg


def test_a_mostly_unknown_train_split_is_refused_above_the_threshold(precomp: Path, tmp_path: Path) -> None:
    # "a" and "." only: most words of the train captions are unknown
    words = [tok for c in (precomp / "train_caps.txt").read_text().splitlines() for tok in tokenize(c)]
    share = 1 - sum(w in ("a", ".") for w in words) / len(words)
    assert 0.5 < share < 1
    thin = Vocab.from_json(_vocab_of(tmp_path / "thin.json", ["a", "."]))
    msg = _expect("unknown", PrecompDataset, precomp, "train", thin, augment=False, max_unknown_share=0.2)
    assert f"{share:.0%} of the {len(words)} words" in msg and "max_unknown_share=0.2" in msg
    ds = PrecompDataset(precomp, "train", thin, augment=False, max_unknown_share=0.99)
    assert ds.unknown_share == pytest.approx(share)
    full = PrecompDataset(precomp, "train", Vocab.from_json(precomp / "vocab.json"), augment=False)
    assert full.unknown_share == 0.0  # the fixture's vocabulary was built from these captions
    cfg = DataConfig(root=str(precomp), vocab=str(tmp_path / "thin.json"))
    _expect("data.max_unknown_share=0.2", build_train_dataset, cfg, thin, seed=0)  # the config's default
