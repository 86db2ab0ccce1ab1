"""Point Transformer segmentation network (Zhao et al., ICCV 2021, arXiv 2012.09164), PTSeg50.

Follows the official ``model/pointtransformer/pointtransformer_seg.py`` that Retro-FPN's
``s3dis_point-transformer/`` builds on:

- input = cat(xyz, feat) (6 channels for rgb);
- five levels at N, N/4, ... (FPS stride 4 per level), neighbours k = 8 at level 1 and 16 elsewhere (the
  official ``nsample = [8, 16, 16, 16, 16]``: level 1's blocks use 8, every TransitionDown and deeper block 16);
- ``TransitionDown``: level 1 Linear-BN-ReLU; then FPS + kNN grouping of cat(relative xyz, feature) of the
  finer level + Linear-BN-ReLU + max over the k neighbours;
- ``PointTransformerBlock``: Linear-BN-ReLU, vector self-attention (paper eq. 3-4: relation
  w = γ(φ(x_j) - ψ(x_i) + δ), position encoding δ = θ(p_j - p_i) added to the values too, weights shared by
  ``share_planes`` channels), BN-ReLU, Linear-BN, residual, ReLU;
- ``TransitionUp``: at the coarsest level cat(x, MLP(mean over the cloud)); elsewhere
  Linear-BN-ReLU(skip) + 3-NN inverse-distance interpolation of Linear-BN-ReLU(coarser);
- decoder: one TransitionUp + one block per level; head Linear-BN-ReLU-Linear (removed under Retro-FPN).

``forward`` returns the five decoder outputs (dec1..dec5, level 1 first), which Retro-FPN reads.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from retrofpn.config import ModelConfig
from retrofpn.layers import PointBatchNorm, linear_bn_relu, masked_softmax
from retrofpn.ops import Hierarchy, Level, Neighbours, interpolate, offset_to_batch, scatter_sum


class PointTransformerLayer(nn.Module):
    """Vector self-attention over the k nearest neighbours (official ``PointTransformerLayer``)."""

    def __init__(self, planes: int, share_planes: int) -> None:
        super().__init__()
        self.planes, self.share_planes = planes, share_planes
        self.linear_q = nn.Linear(planes, planes)
        self.linear_k = nn.Linear(planes, planes)
        self.linear_v = nn.Linear(planes, planes)
        self.linear_p = nn.Sequential(
            nn.Linear(3, 3), PointBatchNorm(3), nn.ReLU(inplace=True), nn.Linear(3, planes)
        )
        self.linear_w = nn.Sequential(
            PointBatchNorm(planes), nn.ReLU(inplace=True),
            nn.Linear(planes, planes // share_planes), PointBatchNorm(planes // share_planes), nn.ReLU(inplace=True),
            nn.Linear(planes // share_planes, planes // share_planes),
        )  # fmt: skip

    def forward(self, x: Tensor, coord: Tensor, nb: Neighbours) -> Tensor:
        n, k = nb.idx.shape
        q, key, v = self.linear_q(x), self.linear_k(x), self.linear_v(x)  # (n, C)
        p_r = self.linear_p(coord[nb.idx] - coord[:, None])  # δ: (n, k, C)
        w = self.linear_w(key[nb.idx] - q[:, None] + p_r)  # γ(φ - ψ + δ): (n, k, C/s)
        w = masked_softmax(w, nb.valid, dim=1)
        s = self.share_planes
        out = (v[nb.idx] + p_r).view(n, k, s, self.planes // s) * w.unsqueeze(2)  # (n, k, s, C/s)
        return out.sum(1).reshape(n, self.planes)


class PointTransformerBlock(nn.Module):
    """Bottleneck residual block around one PointTransformerLayer (official ``PointTransformerBlock``)."""

    def __init__(self, planes: int, share_planes: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(planes, planes, bias=False)
        self.bn1 = PointBatchNorm(planes)
        self.transformer = PointTransformerLayer(planes, share_planes)
        self.bn2 = PointBatchNorm(planes)
        self.linear3 = nn.Linear(planes, planes, bias=False)
        self.bn3 = PointBatchNorm(planes)

    def forward(self, x: Tensor, coord: Tensor, nb: Neighbours) -> Tensor:
        y = torch.relu(self.bn1(self.linear1(x)))
        y = torch.relu(self.bn2(self.transformer(y, coord, nb)))
        y = self.bn3(self.linear3(y))
        return torch.relu(y + x)


class TransitionDown(nn.Module):
    """Level 1: Linear-BN-ReLU. Deeper: group the finer level's kNN of each FPS point, MLP, max-pool."""

    def __init__(self, in_planes: int, out_planes: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.mlp = linear_bn_relu(in_planes if first else 3 + in_planes, out_planes)

    def forward(self, x: Tensor, finer: Level | None, level: Level) -> Tensor:
        if self.first:
            return self.mlp(x)
        nb = level.down_neighbours
        rel = finer.coord[nb.idx] - level.coord[:, None]  # (m, k, 3)
        grouped = self.mlp(torch.cat([rel, x[nb.idx]], -1))  # (m, k, C)
        # padded slots repeat the nearest real neighbour, so they cannot change the max
        return grouped.max(1).values


class TransitionUp(nn.Module):
    """Official ``TransitionUp``: the coarsest level's global-context form, or skip + 3-NN interpolation."""

    def __init__(self, in_planes: int, out_planes: int | None) -> None:
        super().__init__()
        self.head = out_planes is None
        if self.head:
            self.linear1 = linear_bn_relu(2 * in_planes, in_planes, bias=True)
            self.linear2 = nn.Sequential(nn.Linear(in_planes, in_planes), nn.ReLU(inplace=True))
        else:
            self.linear1 = linear_bn_relu(out_planes, out_planes, bias=True)
            self.linear2 = linear_bn_relu(in_planes, out_planes, bias=True)

    def forward(self, x: Tensor, level: Level, coarser: Tensor | None = None, coarser_level: Level | None = None
                ) -> Tensor:  # fmt: skip
        if self.head:
            batch = offset_to_batch(level.offset)
            counts = torch.bincount(batch, minlength=len(level.offset)).clamp(min=1).to(x.dtype)
            mean = scatter_sum(x, batch, len(level.offset)) / counts[:, None]  # (B, C) per-cloud mean
            return self.linear1(torch.cat([x, self.linear2(mean)[batch]], 1))
        up = interpolate(self.linear2(coarser), coarser_level.up_idx, coarser_level.up_weight)
        return self.linear1(x) + up


class PointTransformerSeg(nn.Module):
    """PTSeg: five encoder levels, five decoder levels; ``forward`` -> decoder features, level 1 first."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        planes, s = cfg.pt_planes, cfg.pt_share_planes
        self.ks = list(cfg.pt_k)
        self.level_channels = list(planes)
        in_planes = cfg.in_channels + 3
        self.enc_down, self.enc_blocks = nn.ModuleList(), nn.ModuleList()
        for li, (p, n_layers) in enumerate(zip(planes, cfg.pt_blocks)):
            self.enc_down.append(TransitionDown(in_planes, p, first=li == 0))
            self.enc_blocks.append(nn.ModuleList(PointTransformerBlock(p, s) for _ in range(n_layers - 1)))
            in_planes = p
        self.dec_up, self.dec_blocks = nn.ModuleList(), nn.ModuleList()
        for li in range(len(planes)):
            coarsest = li == len(planes) - 1
            self.dec_up.append(
                TransitionUp(planes[li] if coarsest else planes[li + 1], None if coarsest else planes[li])
            )
            self.dec_blocks.append(
                nn.ModuleList([PointTransformerBlock(planes[li], s)])
            )  # official: 1 per level
        self.head = None if cfg.retro else nn.Sequential(
            linear_bn_relu(planes[0], planes[0], bias=True), nn.Linear(planes[0], cfg.num_classes)
        )  # fmt: skip

    def _blocks(self, blocks: nn.ModuleList, x: Tensor, level: Level, k: int) -> Tensor:
        if len(blocks):
            nb = level.neighbours.first(k)
            for block in blocks:
                x = block(x, level.coord, nb)
        return x

    def forward(self, feat: Tensor, hierarchy: Hierarchy) -> list[Tensor]:
        levels = hierarchy.levels
        x = torch.cat([levels[0].coord, feat], 1)  # (N, 3 + C_in)
        skips = []
        for li, (down, blocks) in enumerate(zip(self.enc_down, self.enc_blocks)):
            x = down(x, levels[li - 1] if li else None, levels[li])
            x = self._blocks(blocks, x, levels[li], self.ks[li])
            skips.append(x)
        outs: list[Tensor] = [None] * len(levels)  # type: ignore[list-item]
        for li in reversed(range(len(levels))):
            if li == len(levels) - 1:
                x = self.dec_up[li](skips[li], levels[li])
            else:
                x = self.dec_up[li](skips[li], levels[li], outs[li + 1], levels[li + 1])
            outs[li] = self._blocks(self.dec_blocks[li], x, levels[li], self.ks[li])
        return outs
