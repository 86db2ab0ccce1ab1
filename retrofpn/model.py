"""Retro-FPN: Retrospective Feature Pyramid Network for point-cloud semantic segmentation (Xiang et al.,
ICCV 2023; official code github.com/AllenXiangX/Retro-FPN, the retro-transformer is identical in its three
sub-projects ``s3dis_point-transformer/``, ``scannet_ptv2/`` and ``s3dis_scannet_minkowskinet/``).

The backbone's decoder runs first and exposes five levels (level 1 = full resolution). Retro-FPN then runs
top-down, rt5 -> rt1; at level l, with the backbone feature x_l (C_l channels) and the coarser level's output
h_{l+1} (D channels):

- information projection: ``info = Linear(C_l, D)(x)``;
- query branch: ``q_in = Linear(C_l, D, no bias) -> BN -> ReLU -> Linear(D, D, no bias)``;
- :class:`RetroCrossAttention`: q = Linear(q_in), k = Linear(h_{l+1}), v = Linear(h_{l+1}); each point
  attends to its k nearest level-(l+1) points of the same cloud; relative positions p_{l+1,j} - p_l go
  through ``Conv1d(3,3) -> BN -> ReLU -> Conv1d(3, 2G)``, giving one scalar per group and neighbour that is
  added to the queries and to the keys (not to the values); the weights are a softmax over the k neighbours
  of the per-group dot product / sqrt(D/G); out = Σ w v;
- output projection: ``y = BN -> ReLU -> Linear(D, D, no bias) -> BN`` of out;
- semantic gate: ``z = Sigmoid(Linear(D, D, no bias)(BN(y + info)))``, ``h_l = (1 - z) * y + z * info``.

The coarsest level has no coarser level: it attends to its own points (keys/values = its own ``q_in``).
Every level has a classifier on h_l (deep supervision, CE with ignore index, per-level weights); the
prediction is the level-1 classifier alone. Without Retro-FPN (``ModelConfig.retro = False``) the
backbone keeps its own head on the full-resolution decoder output and one CE.

Deviations (see also retrofpn/README.md):
- Padded neighbours (a cloud with fewer than k points at a level) are masked out of every softmax; the
  official PTv2 copy indexes row -1 there, the PT copy repeats the segment's first point.
- Label pooling: ignored points do not vote (the official one-hot pooling of the MinkUNet and PTv2 copies
  counts the ignore class as a 21st channel, so a cell of mostly unlabelled points became "ignore").
- A level whose labels are all ignored contributes 0 to the loss instead of the NaN of a mean over nothing.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from retrofpn.backbones import MinkUNet, PointTransformerSeg, PointTransformerV2
from retrofpn.backbones.minkunet import KERNEL_MAPS
from retrofpn.config import NUM_LEVELS, ModelConfig
from retrofpn.layers import PointBatchNorm, masked_softmax
from retrofpn.ops import Hierarchy, Neighbours, check_offset, fps_hierarchy, grid_hierarchy, retro_links
from retrofpn.sparse import sparse_hierarchy
from shared.errors import ConfigError, DataError


class RetroCrossAttention(nn.Module):
    """Grouped cross-attention to the k nearest coarser-level points with a per-group position term."""

    def __init__(self, dim: int, groups: int) -> None:
        super().__init__()
        self.dim, self.groups = dim, groups
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        # official Conv1d(kernel 1) over (n, 3, k) == a Linear per neighbour; BN statistics over n and k alike
        self.pos_enc = nn.Sequential(
            nn.Linear(3, 3), PointBatchNorm(3), nn.ReLU(inplace=True), nn.Linear(3, 2 * groups)
        )

    def forward(self, query: Tensor, key_value: Tensor, query_coord: Tensor, kv_coord: Tensor, nb: Neighbours
                ) -> Tensor:  # fmt: skip
        n, k = nb.idx.shape
        g, c = self.groups, self.dim // self.groups
        q = self.to_q(query).view(n, 1, g, c)  # (n, 1, G, D/G)
        keys = self.to_k(key_value)[nb.idx].view(n, k, g, c)  # (n, k, G, D/G)
        values = self.to_v(key_value)[nb.idx].view(n, k, g, c)
        pe_q, pe_k = self.pos_enc(kv_coord[nb.idx] - query_coord[:, None]).split(g, dim=-1)  # (n, k, G) each
        logits = ((q + pe_q[..., None]) * (keys + pe_k[..., None])).sum(-1) / math.sqrt(c)  # (n, k, G)
        w = masked_softmax(logits, nb.valid, dim=1)
        return torch.einsum("nkg,nkgc->ngc", w, values).reshape(n, self.dim)


class RetroTransformer(nn.Module):
    """One level of Retro-FPN: C_l-channel backbone features (+ the coarser h) -> the D-channel h_l."""

    def __init__(self, in_channels: int, dim: int, groups: int) -> None:
        super().__init__()
        self.info = nn.Linear(in_channels, dim)
        self.query_in = nn.Sequential(
            nn.Linear(in_channels, dim, bias=False), PointBatchNorm(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False),
        )  # fmt: skip
        self.attention = RetroCrossAttention(dim, groups)
        self.out_proj = nn.Sequential(
            PointBatchNorm(dim), nn.ReLU(inplace=True), nn.Linear(dim, dim, bias=False), PointBatchNorm(dim)
        )
        self.gate_norm = PointBatchNorm(dim)
        self.gate = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, coord: Tensor, nb: Neighbours, coarser: tuple[Tensor, Tensor] | None = None
                ) -> Tensor:  # fmt: skip
        """x (n, C_l), coord (n, 3), nb (n, k) rows of the coarser level (or of this level when
        ``coarser`` is None), coarser = (h_{l+1} (m, D), its coords (m, 3)) -> h_l (n, D)."""
        info = self.info(x)
        q_in = self.query_in(x)
        kv, kv_coord = (q_in, coord) if coarser is None else coarser
        y = self.out_proj(self.attention(q_in, kv, coord, kv_coord, nb))
        z = torch.sigmoid(self.gate(self.gate_norm(y + info)))  # semantic gate (n, D)
        return (1 - z) * y + z * info


def _classifier(kind: str, dim: int, num_classes: int) -> nn.Module:
    if kind == "bn_relu_linear":
        return nn.Sequential(PointBatchNorm(dim), nn.ReLU(inplace=True), nn.Linear(dim, num_classes))
    return nn.Sequential(nn.ReLU(), nn.Linear(dim, num_classes))  # not in place: h also feeds the finer level


# per-level classifier of the official copies (PTv2's is not recorded: PT's form, see the README)
RETRO_HEADS = {"pt": "bn_relu_linear", "ptv2": "bn_relu_linear", "minkunet": "relu_linear"}


class RetroFPN(nn.Module):
    """rt5 -> rt1 over the backbone's five levels, one classifier per level."""

    def __init__(self, level_channels: list[int], dim: int, groups: int, num_classes: int, head: str) -> None:
        super().__init__()
        self.transformers = nn.ModuleList(RetroTransformer(c, dim, groups) for c in level_channels)
        self.heads = nn.ModuleList(_classifier(head, dim, num_classes) for _ in level_channels)

    def forward(self, feats: list[Tensor], hierarchy: Hierarchy) -> list[Tensor]:
        """Backbone features per level (level 1 first) -> logits per level at the retro rows of that level."""
        logits: list[Tensor] = [None] * len(feats)  # type: ignore[list-item]
        coarser = None
        for li in reversed(range(len(feats))):
            link, level = hierarchy.retro[li], hierarchy.levels[li]
            every_row = len(link.rows) == level.num_points  # rows are sorted and unique: the identity
            x = feats[li] if every_row else feats[li][link.rows]
            coord = level.coord if every_row else level.coord[link.rows]
            h = self.transformers[li](x, coord, link.neighbours, coarser)
            logits[li] = self.heads[li](h)
            coarser = (h, coord)
        return logits


@dataclass
class SegmentationOutput:
    """What the segmentor returns.

    Attributes:
        logits: (N, K) scores of every input point (Retro-FPN: the level-1 head only).
        level_logits: scores per supervised level, level 1 first (Retro-FPN: five, at each level's retro rows;
            without it: one, at level 1; MinkUNet level 1 = one row per voxel).
        hierarchy: the batch's Hierarchy (for the labels of each level).
    """

    logits: Tensor
    level_logits: list[Tensor]
    hierarchy: Hierarchy


def compute_hierarchy(
    cfg: ModelConfig,
    coord: Tensor,
    offset: Tensor,
    grid_coord: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Hierarchy:
    """Sampling, neighbour and kernel-map structures of one batch (no weights involved).

    Call it in a data-loader worker on the collated batch (CPU tensors) and move the result with
    ``Hierarchy.to(device)``; the segmentor computes it itself when the batch has none. ``generator``
    seeds the random level subsampling of Retro-FPN (PTv2's level 2); None uses torch's global RNG.
    """
    check_offset(offset, coord.shape[0])
    if cfg.backbone == "pt":
        levels = fps_hierarchy(coord, offset, cfg.pt_stride, cfg.pt_k, cfg.pt_fps)
        hierarchy = Hierarchy(levels)
    elif cfg.backbone == "ptv2":
        hierarchy = Hierarchy(
            grid_hierarchy(coord, offset, cfg.ptv2_grid_sizes, PointTransformerV2.level_ks(cfg))
        )
    else:
        if grid_coord is None:
            raise DataError(
                "the minkunet backbone needs batch['grid_coord'] (integer voxel coordinates); "
                "voxelise the clouds in the data pipeline"
            )
        hierarchy = sparse_hierarchy(grid_coord, offset, NUM_LEVELS, KERNEL_MAPS)
    if cfg.retro:
        hierarchy.retro = retro_links(
            hierarchy.levels, cfg.resolved_retro_k(), cfg.resolved_retro_strides(), generator
        )
    return hierarchy


class HierarchyHook:
    """``batch -> batch`` with ``batch["hierarchy"]``, for the data loader's collate (runs in its workers).

    The random level subsampling (PTv2's level 2) is seeded by ``seed`` and a CRC32 of the batch's
    coordinates, so a batch gets the same hierarchy whichever worker builds it, and reruns are identical.
    """

    def __init__(self, cfg: ModelConfig, seed: int = 0) -> None:
        self.cfg, self.seed = cfg, seed

    def __call__(self, batch: dict) -> dict:
        coord = batch["coord"]
        crc = zlib.crc32(coord.detach().cpu().contiguous().numpy().tobytes())
        # torch's CPU generator keeps only 32 bits of a seed: mix both numbers into one 32-bit state
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, crc]).generate_state(1)[0])
        )
        batch["hierarchy"] = compute_hierarchy(
            self.cfg, coord, batch["offset"], batch.get("grid_coord"), generator
        )
        return batch


def check_batch(batch: dict, cfg: ModelConfig) -> None:
    """One-line ``DataError`` for a point dict the model cannot use."""
    for key in ("coord", "feat", "offset"):
        if key not in batch:
            raise DataError(f"batch has no '{key}'; a point dict needs coord (N,3), feat (N,C), offset (B,)")
    coord, feat = batch["coord"], batch["feat"]
    if coord.dim() != 2 or coord.shape[1] != 3 or not coord.is_floating_point():
        raise DataError(
            f"batch['coord']: expected a (N, 3) float tensor, got {tuple(coord.shape)} {coord.dtype}"
        )
    if feat.dim() != 2 or feat.shape[0] != coord.shape[0] or feat.shape[1] != cfg.in_channels:
        raise DataError(
            f"batch['feat']: expected ({coord.shape[0]}, {cfg.in_channels}) (model.in_channels), got "
            f"{tuple(feat.shape)}; set model.in_channels to the data's feature width"
        )
    if not bool(torch.isfinite(coord).all()) or not bool(torch.isfinite(feat).all()):
        raise DataError("batch['coord'] / batch['feat'] contain NaN or inf values; check the input files")
    check_offset(batch["offset"], coord.shape[0], "batch['offset']")


class Segmentor(nn.Module):
    """A backbone with (``cfg.retro``) or without Retro-FPN; the one model class of the package."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        backbones = {"pt": PointTransformerSeg, "ptv2": PointTransformerV2, "minkunet": MinkUNet}
        self.backbone = backbones[cfg.backbone](cfg)
        self.retro_fpn = None
        if cfg.retro:
            self.retro_fpn = RetroFPN(
                self.backbone.level_channels,
                cfg.resolved_retro_dim(),
                cfg.resolved_retro_groups(),
                cfg.num_classes,
                RETRO_HEADS[cfg.backbone],
            )

    def forward(self, batch: dict) -> SegmentationOutput:
        """``batch``: coord (N, 3), feat (N, C), offset (B,), grid_coord (N, 3) for the MinkUNet, and
        optionally ``hierarchy`` (from :func:`compute_hierarchy`, on the same device)."""
        check_batch(batch, self.cfg)
        hierarchy = batch.get("hierarchy")
        if hierarchy is None:
            hierarchy = compute_hierarchy(self.cfg, batch["coord"], batch["offset"], batch.get("grid_coord"))
        if (hierarchy.retro is not None) != self.cfg.retro:
            raise ConfigError(
                f"the batch's hierarchy was computed with model.retro={not self.cfg.retro} but the "
                f"model has model.retro={self.cfg.retro}; build both from the same model config"
            )
        if self.training and min(level.num_points for level in hierarchy.levels) < 2:
            sizes = [level.num_points for level in hierarchy.levels]
            raise DataError(
                f"the batch has {sizes} points per level: BatchNorm needs at least 2 at every level "
                f"in training; use larger clouds or more clouds per batch"
            )
        feats = self.backbone(batch["feat"], hierarchy)
        if self.retro_fpn is None:
            level_logits = [self.backbone.head(feats[0])]
        else:
            level_logits = self.retro_fpn(feats, hierarchy)
        logits = level_logits[0]
        if hierarchy.point_to_voxel is not None:
            logits = logits[hierarchy.point_to_voxel]  # voxel -> its points (ME slicing)
        return SegmentationOutput(logits, level_logits, hierarchy)

    def loss(self, output: SegmentationOutput, labels: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Deep-supervision CE (Retro-FPN) or the single CE: (total, per-level losses detached)."""
        cfg = self.cfg
        targets = output.hierarchy.retro_labels(labels, cfg.num_classes, cfg.ignore_index)
        weights = cfg.retro_loss_weights if cfg.retro else [1.0]
        return deep_supervision_loss(output.level_logits, targets, weights, cfg.ignore_index)


def deep_supervision_loss(
    level_logits: list[Tensor], level_labels: list[Tensor], weights: list[float], ignore_index: int
) -> tuple[Tensor, list[Tensor]]:
    """Σ_l w_l CE(logits_l, labels_l) with ignore index; a level with no labelled rows contributes 0."""
    total = level_logits[0].new_zeros(())
    per_level = []
    for logits, labels, w in zip(level_logits, level_labels, weights):
        n = (labels != ignore_index).sum().clamp(min=1)
        ce = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum") / n
        total = total + w * ce
        per_level.append(ce.detach())
    return total, per_level
