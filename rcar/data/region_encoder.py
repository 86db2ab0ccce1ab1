"""Region features for the embedded scenes, the way bottom-up-attention features come from a detector.

BUTD (Anderson et al. 2018) runs a Faster R-CNN over the photo and keeps, for 36 proposals, the 2048-d pooled
feature of each box. Here a small ConvNet is trained on scenes made only from a held-out set of digits (the
"encoder" pool, never used in the train/dev/test scenes) to classify, for each box pooled with
``torchvision.ops.roi_align``, the digit (or background), its colour and its size. Its penultimate layer is the
region feature. Each scene then gets R=12 boxes, all real (no padding, as in BUTD):

- the tight ink box of every digit (ground-truth boxes stand in for a perfect proposal network),
- one jittered copy of every digit box (shifted and rescaled, as overlapping detector proposals are),
- the whole image,
- random boxes (16-64 px) to fill up to R, which cover background or parts of digits.

The boxes are shuffled, so region order carries no information. Each region vector is
``[fc feature (248), x1, y1, x2, y2, cx, cy, w, h]`` with coordinates divided by the canvas size: D = 256.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou, roi_align

from shared.log import StepProgress, get_logger
from rcar.data.scenes import CANVAS, COLOURS, DigitBank, Scene, digit_box, random_scene, render

N_REGIONS = 12
FC_DIM = 248
GEOM_DIM = 8
FEAT_DIM = FC_DIM + GEOM_DIM
BACKGROUND = 10  # digit-head class of boxes that overlap no digit


class RegionEncoder(nn.Module):
    """ConvNet (stride 4) + roi_align(4x4) + fc: one 248-d feature per box, with three classifier heads."""

    def __init__(self, width: int = 16):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.backbone = nn.Sequential(
            *block(3, width),
            nn.MaxPool2d(2),  # 48x48
            *block(width, 2 * width),
            nn.MaxPool2d(2),  # 24x24, stride 4
            *block(2 * width, 4 * width),
        )
        self.channels = 4 * width
        self.fc = nn.Linear(self.channels * 16, FC_DIM)
        self.digit_head = nn.Linear(FC_DIM, 11)
        self.colour_head = nn.Linear(FC_DIM, len(COLOURS))
        self.size_head = nn.Linear(FC_DIM, 2)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """images (B, 3, 96, 96) in [0, 1]; boxes (B, R, 4) pixels -> region features (B, R, 248)."""
        b, r, _ = boxes.shape
        fmap = self.backbone(images)  # (B, C, 24, 24)
        pooled = roi_align(
            fmap,
            list(boxes.unbind(0)),
            output_size=(4, 4),
            spatial_scale=0.25,
            sampling_ratio=2,
            aligned=True,
        )  # (B*R, C, 4, 4)
        feats = F.relu(self.fc(pooled.flatten(1)))  # (B*R, 248)
        return feats.view(b, r, FC_DIM)


def proposals(
    bank: DigitBank, scene: Scene, rng: np.random.Generator, n_regions: int = N_REGIONS
) -> np.ndarray:
    """(R, 4) float32 boxes in pixels: digit boxes, jittered digit boxes, whole image, random fill; shuffled."""
    gt = np.stack([digit_box(bank, d) for d in scene.digits])  # (n, 4)
    w, h = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    scale = rng.uniform(0.85, 1.3, (len(gt), 1))
    ctr = np.stack([(gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2], 1)
    ctr = ctr + rng.uniform(-0.2, 0.2, (len(gt), 2)) * np.stack([w, h], 1)
    half = np.stack([w, h], 1) * scale / 2
    jitter = np.concatenate([ctr - half, ctr + half], 1)
    boxes = [gt, jitter, np.array([[0, 0, CANVAS, CANVAS]], np.float32)]
    n_fill = n_regions - sum(len(b) for b in boxes)
    size = rng.uniform(16, 64, (n_fill, 2))
    x1y1 = rng.uniform(0, 1, (n_fill, 2)) * (CANVAS - size)
    boxes.append(np.concatenate([x1y1, x1y1 + size], 1))
    out = np.clip(np.concatenate(boxes).astype(np.float32), 0, CANVAS)
    return out[rng.permutation(n_regions)]


def box_geometry(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) pixel boxes -> (..., 8): x1, y1, x2, y2, cx, cy, w, h divided by the canvas size."""
    b = boxes / CANVAS
    x1, y1, x2, y2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack([x1, y1, x2, y2, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1).astype(np.float32)


def box_targets(bank: DigitBank, scene: Scene, boxes: np.ndarray) -> np.ndarray:
    """(R, 3) int64 labels (digit-or-background, colour, size); colour/size are -1 on background boxes.

    A box is a digit's if its IoU with that digit's ink box is >= 0.5; background if < 0.3 with every digit;
    otherwise ignored (-1 everywhere).
    """
    gt = torch.from_numpy(np.stack([digit_box(bank, d) for d in scene.digits]))
    iou = box_iou(torch.from_numpy(boxes), gt)  # (R, n)
    best, idx = iou.max(1)
    out = np.full((len(boxes), 3), -1, np.int64)
    for r in range(len(boxes)):
        if best[r] >= 0.5:
            d = scene.digits[int(idx[r])]
            out[r] = (d.label, d.colour, int(d.large))
        elif best[r] < 0.3:
            out[r, 0] = BACKGROUND
    return out


def _batch(bank: DigitBank, scenes: list[Scene], rng: np.random.Generator):
    images = np.stack([render(bank, s, rng) for s in scenes])  # (B, 96, 96, 3) uint8
    boxes = np.stack([proposals(bank, s, rng) for s in scenes])  # (B, R, 4)
    return images, boxes


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)


def _losses(model: RegionEncoder, feats: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    f = feats.reshape(-1, FC_DIM)
    t = targets.reshape(-1, 3)
    digit = F.cross_entropy(model.digit_head(f), t[:, 0], ignore_index=-1)
    colour = F.cross_entropy(model.colour_head(f), t[:, 1], ignore_index=-1)
    size = F.cross_entropy(model.size_head(f), t[:, 2], ignore_index=-1)
    return digit, colour, size


def train_region_encoder(
    bank: DigitBank,
    train_pool: np.ndarray,
    val_pool: np.ndarray,
    seed: int,
    steps: int = 400,
    batch_size: int = 32,
    lr: float = 2e-3,
    val_scenes: int = 500,
    logger: logging.Logger | None = None,
    log_every: int = 50,
) -> tuple[RegionEncoder, dict[str, float]]:
    """Train on random scenes from ``train_pool``; report accuracies on ``val_scenes`` scenes from ``val_pool``.

    Progress (steps, loss, scenes/s, ETA) is a bar on a terminal, else a line every ``log_every`` steps.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 303])
    model = RegionEncoder()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    t0 = time.perf_counter()
    progress = StepProgress(steps, "region encoder", logger or get_logger("rcar.prepare"), log_every=log_every)
    model.train()
    for _ in range(steps):
        scenes = [random_scene(bank, train_pool, rng) for _ in range(batch_size)]
        images, boxes = _batch(bank, scenes, rng)
        targets = torch.from_numpy(np.stack([box_targets(bank, s, b) for s, b in zip(scenes, boxes)]))
        feats = model(to_tensor(images), torch.from_numpy(boxes))
        digit, colour, size = _losses(model, feats, targets)
        loss = digit + colour + size
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        progress.update(loss.item(), batch_size)
    progress.close()
    metrics = evaluate_region_encoder(model, bank, val_pool, seed, n_scenes=val_scenes)
    metrics["train_seconds"] = time.perf_counter() - t0
    return model, metrics


@torch.no_grad()
def evaluate_region_encoder(
    model: RegionEncoder, bank: DigitBank, pool: np.ndarray, seed: int, n_scenes: int = 500
) -> dict[str, float]:
    """Accuracy on the ink boxes of scenes built from ``pool`` (digit among 10, colour among 6, size)."""
    rng = np.random.default_rng([seed, 404])
    model.eval()
    scenes = [random_scene(bank, pool, rng) for _ in range(n_scenes)]
    images = np.stack([render(bank, s, rng) for s in scenes])
    correct = np.zeros(3)
    total = 0
    for lo in range(0, n_scenes, 100):
        chunk = scenes[lo : lo + 100]
        n_max = max(len(s.digits) for s in chunk)
        # pad each scene's ink boxes to n_max by repeating its first box; only real ones are counted
        boxes = np.stack(
            [
                np.stack([digit_box(bank, s.digits[min(i, len(s.digits) - 1)]) for i in range(n_max)])
                for s in chunk
            ]
        )
        feats = model(to_tensor(images[lo : lo + 100]), torch.from_numpy(boxes))  # (b, n_max, 248)
        preds = [
            model.digit_head(feats)[..., :10].argmax(-1),
            model.colour_head(feats).argmax(-1),
            model.size_head(feats).argmax(-1),
        ]
        for k, s in enumerate(chunk):
            for i, d in enumerate(s.digits):
                truth = (d.label, d.colour, int(d.large))
                correct += [int(p[k, i]) == t for p, t in zip(preds, truth)]
                total += 1
    acc = correct / total
    return {
        "digit_acc": float(acc[0]),
        "colour_acc": float(acc[1]),
        "size_acc": float(acc[2]),
        "n_boxes": total,
    }


@torch.no_grad()
def extract_features(
    model: RegionEncoder, bank: DigitBank, scenes: list[Scene], seed: int, batch_size: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the scenes and encode their proposals: (features (N, R, 256) float32, boxes (N, R, 4), images)."""
    rng = np.random.default_rng([seed, 505])
    model.eval()
    feats = np.empty((len(scenes), N_REGIONS, FEAT_DIM), np.float32)
    all_boxes = np.empty((len(scenes), N_REGIONS, 4), np.float32)
    images = np.empty((len(scenes), CANVAS, CANVAS, 3), np.uint8)
    for lo in range(0, len(scenes), batch_size):
        chunk = scenes[lo : lo + batch_size]
        ims, boxes = _batch(bank, chunk, rng)
        f = model(to_tensor(ims), torch.from_numpy(boxes)).numpy()  # (b, R, 248)
        feats[lo : lo + len(chunk)] = np.concatenate([f, box_geometry(boxes)], -1)
        all_boxes[lo : lo + len(chunk)] = boxes
        images[lo : lo + len(chunk)] = ims
    return feats, all_boxes, images
