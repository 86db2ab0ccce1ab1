"""Test protocol: passes that cover every original point, predictions summed per point, metrics on all points.

- PT (POSTECH/Retro-FPN ``test.py``): the room (shifted to its minimum) is voxelised; pass i takes the
  (i mod count)-th point of every voxel, ``count.max()`` passes in all, so every point is in at least one
  pass. A pass with more than ``test_voxel_max`` points is split into overlapping crops: each crop is the
  ``test_voxel_max`` points nearest the least-covered point (a random 1e-3 tie-break, then the crop adds
  ``(1 - d / d_max)^2`` to its points' cover) until every point of the pass is in a crop. Each crop is shifted
  to its minimum, rgb / 255; logits are summed per original point, ``test_batch`` crops per forward.
- Mink (BPNet-style ``test.py`` with ``eval_all``): ``test_augmentations`` (official 7) draws of the augmented
  voxelizer; each voxel's logits go to every point of the voxel (``inds_reconstruct``); summed.
- PTv2 (Pointcept ``SemSegTester``): centre shift, then for each of the first ``test_augmentations`` of the 13
  fixed augmentations (z rotations 0, 1/2, 1, 3/2 pi at scale 1, 0.95, 1.05, then a flip) the test-mode grid
  passes; softmax probabilities summed per point.

``vote_scene(scene, predict, cfg)`` runs one protocol; ``predict`` is any callable taking a batch dict (the
training batch contract, see ``retrofpn.data.dataset``) and returning (M, K) scores for its M points.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from retrofpn.data.config import DataConfig
from retrofpn.data.dataset import Batch, collate
from retrofpn.data.scene import Scene
from retrofpn.data.transforms import (
    Data,
    center_shift,
    finish,
    min_shift,
    mink_voxelize,
    rotate,
    rotation_matrix,
    scene_data,
    take,
    voxelize,
)
from shared.metrics import ConfusionMatrix

Predict = Callable[[Batch], "torch.Tensor | np.ndarray"]


@dataclass
class TestPass:
    """One model input of the test protocol and where its scores go.

    Attributes:
        sample: the sample dict (coord, feat, segment, grid_coord, index) given to ``predict``
        inverse: (N,) row of ``sample`` for every scene point (Mink: each voxel scores all its points), or None
            when the scores go to ``sample["index"]`` only
    """

    sample: Data
    inverse: np.ndarray | None = None


@dataclass
class VoteResult:
    """Summed scores of one scene.

    Attributes:
        scores: (N, K) float32 sum of the logits (or probabilities) of every pass over each original point
        hits: (N,) int32 number of passes that scored each point (>= 1 for every point)
    """

    scores: np.ndarray
    hits: np.ndarray

    @property
    def prediction(self) -> np.ndarray:
        return self.scores.argmax(axis=1)


def overlapping_crops(coord: np.ndarray, budget: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index sets of at most ``budget`` points covering all of ``coord`` (the official test-crop loop)."""
    n = len(coord)
    if n <= budget:
        return [np.arange(n)]
    cover = rng.random(n) * 1e-3
    covered = np.zeros(n, dtype=bool)
    crops = []
    while not covered.all():
        dist = np.square(coord - coord[np.argmin(cover)]).sum(axis=1)
        crop = np.argpartition(dist, budget - 1)[:budget]
        d = dist[crop]
        cover[crop] += np.square(1 - d / max(float(d.max()), 1e-12))
        covered[crop] = True
        crops.append(crop)
    return crops


def _pt_passes(scene: Scene, cfg: DataConfig, rng: np.random.Generator) -> Iterator[TestPass]:
    data = min_shift(scene_data(scene))
    vox = voxelize(data["coord"], cfg.voxel_size)
    for i in range(vox.passes):
        pick = vox.nth_point(i)
        part = take(data, pick)
        part["grid_coord"] = vox.grid[pick]
        crops = overlapping_crops(part["coord"], cfg.test_voxel_max, rng) if cfg.test_voxel_max else [None]
        for crop in crops:
            sub = min_shift(part if crop is None else take(part, crop))
            sub["grid_coord"] = sub["grid_coord"] - sub["grid_coord"].min(axis=0)
            yield TestPass(finish(sub, cfg, scene.source or scene.name))


def _mink_passes(scene: Scene, cfg: DataConfig, rng: np.random.Generator) -> Iterator[TestPass]:
    data = scene_data(scene)
    for _ in range(cfg.test_augmentations):
        grid, first, inverse = mink_voxelize(data["coord"], rng, cfg)
        sub = take(data, first)
        sub["coord"], sub["grid_coord"] = grid.astype(np.float32), grid
        yield TestPass(finish(sub, cfg, scene.source or scene.name), inverse=inverse)


# The 13 ``aug_transform`` entries of semseg-ptv2m2-0-base.py: (z rotation in units of pi, scale, flip).
PTV2_TEST_AUGMENTATIONS: tuple[tuple[float, float, bool], ...] = (
    *((a, 1.0, False) for a in (0, 0.5, 1, 1.5)),
    *((a, 0.95, False) for a in (0, 0.5, 1, 1.5)),
    *((a, 1.05, False) for a in (0, 0.5, 1, 1.5)),
    (0.0, 1.0, True),
)


def _ptv2_passes(scene: Scene, cfg: DataConfig, rng: np.random.Generator) -> Iterator[TestPass]:
    base = center_shift(scene_data(scene), apply_z=True)
    for angle, scale, flip in PTV2_TEST_AUGMENTATIONS[: cfg.test_augmentations]:
        data = rotate({k: v.copy() for k, v in base.items()}, rotation_matrix("z", angle * np.pi))
        data["coord"] = data["coord"] * np.float32(scale)
        if flip:  # RandomFlip(p=1): x and y negated (normals too)
            data["coord"][:, :2] *= -1
            if "normal" in data:
                data["normal"][:, :2] *= -1
        vox = voxelize(data["coord"], cfg.voxel_size)
        for i in range(vox.passes):
            pick = vox.nth_point(i)
            part = center_shift(take(data, pick), apply_z=False)
            part["grid_coord"] = vox.grid[pick]
            yield TestPass(finish(part, cfg, scene.source or scene.name))


PASSES = {"pt": _pt_passes, "mink": _mink_passes, "ptv2": _ptv2_passes}


def test_passes(scene: Scene, cfg: DataConfig, rng: np.random.Generator) -> Iterator[TestPass]:
    """The model inputs of ``cfg.pipeline``'s test protocol for one scene, in order."""
    return PASSES[cfg.pipeline](scene, cfg, rng)


test_passes.__test__ = False  # a library function, not a pytest test


def _chunks(items: Iterator[TestPass], size: int) -> Iterator[list[TestPass]]:
    chunk: list[TestPass] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def vote_scene(scene: Scene, predict: Predict, cfg: DataConfig, seed: int = 2023) -> VoteResult:
    """Per-point summed scores of ``scene`` under the test protocol of ``cfg.pipeline`` (official test seed
    2023); ``cfg.test_batch`` passes go to each ``predict`` call as one batch with ``offset``."""
    n, k = len(scene), cfg.num_classes
    scores = torch.zeros(n, k, dtype=torch.float64)
    hits = torch.zeros(n, dtype=torch.int32)
    rng = np.random.default_rng(seed)
    for chunk in _chunks(test_passes(scene, cfg, rng), cfg.test_batch):
        batch = collate([p.sample for p in chunk])
        with torch.no_grad():
            out = torch.as_tensor(predict(batch)).detach().to("cpu", torch.float64)
        if out.shape != (len(batch["coord"]), k):
            raise ValueError(
                f"predict returned shape {tuple(out.shape)}; expected ({len(batch['coord'])}, {k})"
            )
        if cfg.test_vote == "softmax":
            out = out.softmax(dim=1)
        start = 0
        for p in chunk:
            m = len(p.sample["coord"])
            part = out[start : start + m]
            if p.inverse is None:
                index = torch.from_numpy(p.sample["index"])
                scores.index_add_(0, index, part)
                hits.index_add_(0, index, torch.ones(m, dtype=torch.int32))
            else:
                scores += part[torch.from_numpy(p.inverse)]
                hits += 1
            start += m
    return VoteResult(scores.float().numpy(), hits.numpy())


def evaluate_scenes(
    scenes: Sequence[Scene], predict: Predict, cfg: DataConfig, seed: int = 2023
) -> tuple[ConfusionMatrix, list[np.ndarray]]:
    """Vote every scene; the confusion matrix over ALL original points (``compute()``: mIoU / mAcc / allAcc)
    and each scene's (N,) int16 predicted labels (the summed scores are dropped: 13 floats a point)."""
    matrix = ConfusionMatrix(cfg.num_classes, cfg.ignore_index)
    predictions = []
    for scene in scenes:
        pred = vote_scene(scene, predict, cfg, seed).prediction
        matrix.update(torch.from_numpy(pred), torch.from_numpy(scene.segment))
        predictions.append(pred.astype(np.int16))
    return matrix, predictions
