"""RCAR evaluation: chunked exact sims == per-caption loop; recall, folds and ensemble on hand-made matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rcar.config import ModelConfig
from rcar.evaluate import (
    compute_sims,
    encode_captions,
    encode_images,
    ensemble,
    evaluate_sims,
    fold_sims,
    pairs_per_chunk,
    recall_metrics,
    sims_from_embeddings,
)
from rcar.model import RCAR
from rcar.reference import reference_shard_sims
from shared.errors import ConfigError

VOCAB = 30


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_model(mode: str, direction: str) -> RCAR:
    torch.manual_seed(0)
    cfg = ModelConfig(mode=mode, direction=direction, img_dim=12, embed_size=16, word_dim=8, sim_dim=8)
    return RCAR(cfg, VOCAB).eval()


def random_split(n_img: int = 6, seed: int = 0) -> tuple[np.ndarray, list[list[int]]]:
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n_img, 5, 12)).astype(np.float32)
    caps = [[1, *rng.integers(4, VOCAB, size=int(rng.integers(1, 9))).tolist(), 2] for _ in range(5 * n_img)]
    return feats, caps


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
@pytest.mark.parametrize("mode", ["baseline", "rcr", "rar", "rcar"])
def test_chunked_compute_sims_equals_official_loop(mode: str, direction: str) -> None:
    """Small budget and caption batches force many chunks, length sorting and scattering back."""
    model = tiny_model(mode, direction)
    feats, caps = random_split()
    fast = compute_sims(model, feats, caps, budget_mb=0.05, image_batch=4, caption_batch=7)
    with torch.no_grad():
        img = encode_images(model, feats, 64, torch.device("cpu"))
        cap, lengths = encode_captions(model, caps, torch.device("cpu"))
        ref = reference_shard_sims(model, img, cap, lengths, shard=4).numpy()
    assert fast.shape == (6, 30) and fast.dtype == np.float32
    assert np.abs(fast - ref).max() <= 1e-5


def test_chunking_is_invariant_to_the_budget() -> None:
    model = tiny_model("rcar", "i2t")
    feats, caps = random_split(seed=1)
    with torch.no_grad():
        img = encode_images(model, feats, 64, torch.device("cpu"))
        cap, lengths = encode_captions(model, caps, torch.device("cpu"))
        big = sims_from_embeddings(model, img, cap, lengths, budget_mb=64)
        small = sims_from_embeddings(model, img, cap, lengths, budget_mb=0.01)
    assert (
        pairs_per_chunk(model, 5, cap.shape[1], 0.01) < 6 * 30 <= pairs_per_chunk(model, 5, cap.shape[1], 64)
    )
    assert torch.allclose(big, small, atol=1e-6)


def test_recall_on_a_hand_made_matrix() -> None:
    """2 images x 10 captions with known ranks."""
    sims = np.zeros((2, 10), dtype=np.float32)
    sims[0, 0:5] = [0.9, 0.1, 0.1, 0.1, 0.1]  # image 0: its caption 0 ranks first
    sims[0, 5:10] = 0.5
    sims[1, 5:10] = 0.2  # image 1: its captions all lose to ... nothing: row 1 of captions 0-4 is 0
    sims[1, 0:5] = 0.3  # image 1 ranks image 0's captions first -> its best own caption at rank 5
    m = recall_metrics(sims)
    assert m["i2t_r1"] == 50.0 and m["i2t_r5"] == 50.0 and m["i2t_r10"] == 100.0
    # t2i: caption 0 -> image 0 (0.9 vs 0.3); captions 1-4 -> image 1 wins (0.3 > 0.1): rank 2;
    # captions 5-9 -> image 0 wins (0.5 > 0.2): rank 2
    assert m["t2i_r1"] == 10.0 and m["t2i_r5"] == 100.0 and m["t2i_r10"] == 100.0
    assert m["rsum"] == pytest.approx(50 + 50 + 100 + 10 + 100 + 100)


def test_fold_protocol_averages_the_diagonal_blocks() -> None:
    """Two folds of 2 images: perfect fold + reversed fold -> the mean of their metrics."""
    perfect = np.kron(np.eye(2), np.ones((1, 5))).astype(np.float32)  # (2, 10)
    reversed_ = np.kron(1 - np.eye(2), np.ones((1, 5))).astype(np.float32)
    m = evaluate_sims([perfect, reversed_])
    assert m["i2t_r1"] == pytest.approx((100 + 0) / 2)
    assert m["t2i_r1"] == pytest.approx((100 + 0) / 2)
    assert m["rsum"] == pytest.approx((600 + recall_metrics(reversed_)["rsum"]) / 2)


def test_fold_sims_are_the_diagonal_blocks_of_the_full_matrix() -> None:
    model = tiny_model("rar", "t2i")
    feats, caps = random_split(n_img=4, seed=2)
    full = compute_sims(model, feats, caps)
    folds = fold_sims(model, feats, caps, fold_images=2)
    assert len(folds) == 2
    np.testing.assert_allclose(folds[0], full[:2, :10], atol=1e-6)
    np.testing.assert_allclose(folds[1], full[2:, 10:], atol=1e-6)
    with pytest.raises(ConfigError, match="multiple of 3"):
        fold_sims(model, feats, caps, fold_images=3)


def test_ensemble_is_the_mean_of_two_matrices() -> None:
    a, b = np.arange(10.0).reshape(2, 5), np.ones((2, 5))
    np.testing.assert_allclose(ensemble(a, b), (a + b) / 2)
    np.testing.assert_allclose(ensemble([a], [b])[0], (a + b) / 2)
    with pytest.raises(ConfigError, match="shapes"):
        ensemble(a, np.ones((3, 5)))
