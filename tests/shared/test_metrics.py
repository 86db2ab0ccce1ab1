"""shared.metrics against scikit-learn, slow reference loops and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, log_loss, roc_auc_score

from shared.metrics import (
    ConfusionMatrix,
    auc,
    binary_log_loss,
    f1_scores,
    group_auc,
    perplexity,
    recall_at_k,
    retrieval_ranks,
)

# --------------------------------------------------------------------------------------------- retrieval

# Two images, ten captions (captions 0-4 describe image 0, captions 5-9 image 1).
# Image 0 ranks c5 (.9), c6 (.8), c3 (.5), c0 (.45), ...: its best own caption sits at rank 2, although its
# first caption c0 sits at rank 3 -> i2t must use the best of the five.  Image 1 ranks c9 first -> rank 0.
HAND_SIMS = np.array(
    [
        [0.45, 0.2, 0.3, 0.5, 0.0, 0.9, 0.8, 0.4, 0.05, 0.01],
        [0.3, 0.1, 0.0, 0.2, 0.6, 0.7, 0.1, 0.2, 0.4, 0.9],
    ]
)
# Per caption, is the true image ahead of the other one?
HAND_T2I = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0])


def test_retrieval_ranks_hand_case_uses_best_of_five_captions():
    i2t, t2i = retrieval_ranks(HAND_SIMS, captions_per_image=5)
    np.testing.assert_array_equal(i2t, [2, 0])
    np.testing.assert_array_equal(t2i, HAND_T2I)


def test_recall_at_k_hand_case():
    r = recall_at_k(HAND_SIMS)
    assert r["i2t_r1"] == pytest.approx(50.0)
    assert r["i2t_r5"] == pytest.approx(100.0)
    assert r["i2t_r10"] == pytest.approx(100.0)
    assert r["t2i_r1"] == pytest.approx(60.0)
    assert r["t2i_r5"] == pytest.approx(100.0)
    assert r["t2i_r10"] == pytest.approx(100.0)
    assert r["rsum"] == pytest.approx(510.0)
    r2 = recall_at_k(HAND_SIMS, ks=(1, 3))
    assert r2["i2t_r3"] == pytest.approx(100.0)
    assert set(r2) == {"i2t_r1", "i2t_r3", "t2i_r1", "t2i_r3", "rsum"}
    assert r2["rsum"] == pytest.approx(50 + 100 + 60 + 100)


def _slow_ranks(sims: np.ndarray, cpi: int) -> tuple[np.ndarray, np.ndarray]:
    """Obviously-correct loops: count how many candidates score strictly higher than the ground truth."""
    n_img, n_cap = sims.shape
    i2t = np.zeros(n_img, dtype=int)
    for i in range(n_img):
        best = max(sims[i, c] for c in range(i * cpi, (i + 1) * cpi))
        i2t[i] = sum(1 for c in range(n_cap) if sims[i, c] > best)
    t2i = np.zeros(n_cap, dtype=int)
    for c in range(n_cap):
        gt = sims[c // cpi, c]
        t2i[c] = sum(1 for i in range(n_img) if sims[i, c] > gt)
    return i2t, t2i


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_ranks_match_slow_reference(seed):
    rng = np.random.default_rng(seed)
    n = 13
    sims = rng.standard_normal((n, 5 * n))
    sims[np.arange(n), 5 * np.arange(n) + 2] += 1.5  # make some hits
    i2t, t2i = retrieval_ranks(sims)
    ref_i2t, ref_t2i = _slow_ranks(sims, 5)
    np.testing.assert_array_equal(i2t, ref_i2t)
    np.testing.assert_array_equal(t2i, ref_t2i)
    r = recall_at_k(sims)
    for k in (1, 5, 10):
        assert r[f"i2t_r{k}"] == pytest.approx(100 * np.mean(ref_i2t < k))
        assert r[f"t2i_r{k}"] == pytest.approx(100 * np.mean(ref_t2i < k))


def test_retrieval_perfect_and_wrong_shape():
    n = 4
    sims = np.zeros((n, 5 * n))
    for i in range(n):
        sims[i, 5 * i : 5 * i + 5] = 1.0
    assert recall_at_k(sims)["rsum"] == pytest.approx(600.0)
    with pytest.raises(ValueError, match="expected"):
        retrieval_ranks(np.zeros((3, 14)))


# ---------------------------------------------------------------------------------------- recommendation


def test_auc_matches_sklearn_and_nan_for_one_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.random(200) + 0.3 * labels
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert math.isnan(auc(np.ones(5), rng.random(5)))
    assert math.isnan(auc(np.array([]), np.array([])))


def test_group_auc_impression_weighted_hand_case_skips_one_class_users():
    # user a: positive scored above both negatives -> AUC 1.0 over 3 impressions
    # user b: positives {.3, .6} vs negatives {.8, .1} -> 2 of 4 pairs ordered -> AUC 0.5 over 4 impressions
    # user c: only positives -> skipped
    # weighted by impressions: (3 * 1.0 + 4 * 0.5) / 7 = 5/7 (the unweighted mean would be 0.75)
    rows = [
        ("a", 1, 0.9),
        ("b", 0, 0.8),
        ("c", 1, 0.2),
        ("a", 0, 0.5),
        ("b", 1, 0.3),
        ("b", 1, 0.6),
        ("c", 1, 0.7),
        ("a", 0, 0.7),
        ("b", 0, 0.1),
    ]
    users = np.array([r[0] for r in rows])
    labels = np.array([r[1] for r in rows])
    scores = np.array([r[2] for r in rows])
    assert group_auc(labels, scores, users) == pytest.approx(5 / 7)
    ids = np.unique(users, return_inverse=True)[1] * 7 + 3  # integer ids give the same answer
    assert group_auc(labels, scores, ids) == pytest.approx(5 / 7)


def test_group_auc_matches_per_user_sklearn_loop_and_nan_when_no_user_qualifies():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 20, 400)
    labels = rng.integers(0, 2, 400)
    scores = rng.random(400) + 0.2 * labels
    num, den = 0.0, 0
    for u in np.unique(users):
        m = users == u
        if len(np.unique(labels[m])) == 2:
            num += roc_auc_score(labels[m], scores[m]) * m.sum()
            den += m.sum()
    assert group_auc(labels, scores, users) == pytest.approx(num / den)
    assert math.isnan(group_auc(np.array([1, 1, 0]), np.array([0.1, 0.2, 0.3]), np.array([1, 1, 2])))


def test_binary_log_loss_matches_sklearn_and_hand_value():
    assert binary_log_loss(np.array([1, 0]), np.array([0.8, 0.3])) == pytest.approx(
        -(math.log(0.8) + math.log(0.7)) / 2
    )
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 100)
    probs = rng.uniform(0.01, 0.99, 100)
    assert binary_log_loss(labels, probs) == pytest.approx(log_loss(labels, probs))
    # probabilities of exactly 0/1 are clipped, so a confident mistake is large but finite
    v = binary_log_loss(np.array([1, 0]), np.array([0.0, 1.0]))
    assert math.isfinite(v) and v == pytest.approx(-math.log(1e-7), rel=1e-6)
    # a single-class batch still works (labels=[0, 1] is fixed)
    assert binary_log_loss(np.array([1, 1]), np.array([0.5, 0.5])) == pytest.approx(math.log(2))


# ------------------------------------------------------------------------------------------ segmentation


def test_confusion_matrix_hand_case_with_ignore_label():
    cm = ConfusionMatrix(num_classes=3, ignore_index=255)
    # updated in two batches; the 255 voxel is ignored whatever its prediction
    cm.update(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]))
    cm.update(torch.tensor([[0, 2], [2, 2]]), torch.tensor([[2, 255], [2, 0]]))
    expected = torch.tensor([[1, 1, 1], [0, 2, 0], [1, 0, 1]])
    assert torch.equal(cm.matrix, expected)
    out = cm.compute()
    # IoU = tp / (gt + pred - tp): [1/4, 2/3, 1/3]; class recall: [1/3, 1, 1/2]; OA = 4/7
    assert out["iou"] == pytest.approx([1 / 4, 2 / 3, 1 / 3])
    assert out["miou"] == pytest.approx((1 / 4 + 2 / 3 + 1 / 3) / 3)
    assert out["macc"] == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
    assert out["oa"] == pytest.approx(4 / 7)


def test_confusion_matrix_absent_class_left_out_of_means():
    cm = ConfusionMatrix(num_classes=4)  # class 3 never appears; default ignore -1
    cm.update(torch.tensor([0, 1, 1, 1, 0, 2, 2, 9]), torch.tensor([0, 0, 1, 1, 2, 2, 0, -1]))
    out = cm.compute()
    assert math.isnan(out["iou"][3])
    assert out["miou"] == pytest.approx((1 / 4 + 2 / 3 + 1 / 3) / 3)
    assert out["macc"] == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)


def test_confusion_matrix_matches_sklearn_and_rejects_bad_labels():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(3)
    t = rng.integers(0, 5, 300)
    p = rng.integers(0, 5, 300)
    cm = ConfusionMatrix(5)
    cm.update(torch.from_numpy(p), torch.from_numpy(t))
    np.testing.assert_array_equal(cm.matrix.numpy(), confusion_matrix(t, p, labels=range(5)))
    assert cm.compute()["oa"] == pytest.approx(np.mean(t == p))
    with pytest.raises(ValueError, match="target"):
        cm.update(torch.tensor([0]), torch.tensor([5]))
    with pytest.raises(ValueError, match="predicted"):
        cm.update(torch.tensor([5]), torch.tensor([0]))
    empty = ConfusionMatrix(3).compute()
    assert math.isnan(empty["miou"]) and math.isnan(empty["macc"]) and math.isnan(empty["oa"])


# -------------------------------------------------------------------------- classification, language models


def test_f1_scores_hand_case_and_sklearn():
    # class 0: P=1, R=1/2 -> 2/3; class 1: P=2/3, R=1 -> 0.8; class 2: 1.0; supports 2, 2, 1
    out = f1_scores(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 2]))
    assert out["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)
    assert out["weighted_f1"] == pytest.approx((2 * 2 / 3 + 2 * 0.8 + 1.0) / 5)
    rng = np.random.default_rng(4)
    y, p = rng.integers(0, 6, 200), rng.integers(0, 6, 200)
    out = f1_scores(y, p)
    assert out["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert out["weighted_f1"] == pytest.approx(f1_score(y, p, average="weighted"))


def test_perplexity_matches_cross_entropy_and_uniform_case():
    torch.manual_seed(0)
    logits, targets = torch.randn(50, 11), torch.randint(0, 11, (50,))
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
    mean = torch.nn.functional.cross_entropy(logits, targets).item()
    assert perplexity(nll, 50) == pytest.approx(math.exp(mean), rel=1e-6)
    assert perplexity(20 * math.log(7), 20) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="token"):
        perplexity(1.0, 0)
