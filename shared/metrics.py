"""Metrics shared by the four papers; each is tested against scikit-learn or hand-computed cases.

- Retrieval (RCAR): Recall@K in both directions with 5 captions per image, and rsum.
- Recommendation (INFNet): AUC, group AUC, log loss.
- Segmentation (Retro-FPN): confusion-matrix mIoU / mAcc / overall accuracy with an ignore label.
- Classification and language modelling (GEM): macro / weighted F1, perplexity.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import f1_score, log_loss, roc_auc_score

# --------------------------------------------------------------------------------------------- retrieval


def retrieval_ranks(sims: np.ndarray, captions_per_image: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Ranks (0 = top) of the ground truth for image->text and text->image retrieval.

    ``sims`` is (N_img, N_img * captions_per_image); caption ``j`` describes image ``j // captions_per_image``.
    i2t takes the best-ranked of an image's captions (the SCAN/VSE++ protocol).
    """
    sims = np.asarray(sims)
    n_img, n_cap = sims.shape
    if n_cap != n_img * captions_per_image:
        raise ValueError(f"sims has shape {sims.shape}; expected (N, {captions_per_image} * N)")
    order_i2t = np.argsort(-sims, axis=1, kind="stable")  # (N_img, N_cap)
    owner = order_i2t // captions_per_image  # image owning each ranked caption
    i2t = np.argmax(owner == np.arange(n_img)[:, None], axis=1)
    order_t2i = np.argsort(-sims.T, axis=1, kind="stable")  # (N_cap, N_img)
    gt = np.arange(n_cap) // captions_per_image
    t2i = np.argmax(order_t2i == gt[:, None], axis=1)
    return i2t, t2i


def recall_at_k(
    sims: np.ndarray, captions_per_image: int = 5, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """R@K (in percent) for i2t and t2i, plus ``rsum`` (the sum of the six numbers)."""
    i2t, t2i = retrieval_ranks(sims, captions_per_image)
    out: dict[str, float] = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            out[f"{name}_r{k}"] = 100.0 * float(np.mean(ranks < k))
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks)
    return out


# ---------------------------------------------------------------------------------------- recommendation


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC; NaN when only one class is present (so an empty task is visible, not a crash)."""
    labels = np.asarray(labels)
    if labels.size == 0 or np.unique(labels).size < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def group_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """User-level AUC: mean of per-group AUCs weighted by the group's number of impressions.

    Groups whose labels are all one class are skipped (FuxiCTR's convention). NaN if no group qualifies.
    """
    labels, scores, groups = np.asarray(labels), np.asarray(scores), np.asarray(groups)
    order = np.argsort(groups, kind="stable")
    labels, scores, groups = labels[order], scores[order], groups[order]
    bounds = np.flatnonzero(groups[1:] != groups[:-1]) + 1  # works for string user ids too
    total, weight = 0.0, 0
    for lab, sc in zip(np.split(labels, bounds), np.split(scores, bounds)):
        if lab.size == 0 or lab.min() == lab.max():
            continue
        total += roc_auc_score(lab, sc) * lab.size
        weight += lab.size
    return total / weight if weight else float("nan")


def binary_log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy with probabilities clipped to [eps, 1 - eps]."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return float(log_loss(np.asarray(labels), probs, labels=[0, 1]))


# ------------------------------------------------------------------------------------------ segmentation


class ConfusionMatrix:
    """Accumulates a (C, C) confusion matrix (rows: truth, cols: prediction), skipping ``ignore_index``."""

    def __init__(self, num_classes: int, ignore_index: int = -1):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        if target.numel() and (target.min() < 0 or target.max() >= self.num_classes):
            raise ValueError(f"target labels must be in [0, {self.num_classes}) or {self.ignore_index}")
        if pred.numel() and (pred.min() < 0 or pred.max() >= self.num_classes):
            raise ValueError(f"predicted labels must be in [0, {self.num_classes})")
        idx = target * self.num_classes + pred
        self.matrix += torch.bincount(idx, minlength=self.num_classes**2).view(self.num_classes, -1)

    def compute(self) -> dict[str, float | list[float]]:
        """mIoU, mAcc (mean class recall) and overall accuracy; classes absent from truth and
        prediction are left out of the means (their IoU is NaN in ``iou``)."""
        m = self.matrix.double()
        tp = m.diag()
        gt = m.sum(1)
        pred = m.sum(0)
        union = gt + pred - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, float("nan")))
        total = m.sum()
        return {
            "miou": float(np.nanmean(iou.numpy())) if union.gt(0).any() else float("nan"),
            "macc": float(np.nanmean(acc.numpy())) if gt.gt(0).any() else float("nan"),
            "oa": float(tp.sum() / total) if total > 0 else float("nan"),
            "iou": iou.tolist(),
        }


# -------------------------------------------------------------------------- classification, language models


def f1_scores(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    """Macro and weighted F1 (classes present in either labels or predictions)."""
    return {
        "macro_f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(labels, preds, average="weighted", zero_division=0)),
    }


def perplexity(total_nll: float, num_tokens: int) -> float:
    """exp(mean negative log-likelihood per token), from a summed NLL in nats."""
    if num_tokens <= 0:
        raise ValueError("perplexity needs at least one token")
    return math.exp(total_nll / num_tokens)
