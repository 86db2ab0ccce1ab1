"""Point Transformer V2, PTv2m2 (Wu et al., NeurIPS 2022, arXiv 2210.05666), the backbone of Retro-FPN's
``scannet_ptv2/`` (a copy of the PTv2 "pcr" code base; Pointcept ``point_transformer_v2m2_base.py``).

- ``GroupedVectorAttention`` (paper §3.1, eq. 5-7): q, k = Linear-BN-ReLU, v = Linear; relation
  r = k_j - q_i + PE_bias(p_j - p_i) (the "positional encoding multiplier" is off, the bias on, as in the
  ScanNet config); G-group weight encoding Linear(C, G)-BN-ReLU-Linear(G, G); softmax over the k
  neighbours; out = Σ_j w_j (v_j + PE_bias) with one weight per group of C/G channels.
- ``Block``: Linear-BN-ReLU, GVA, BN-ReLU, Linear-BN, residual with stochastic depth, ReLU.
- ``GridPool`` (§3.2): Linear-BN-ReLU, then per grid cell mean coordinate / max feature; the clusters come
  from the precomputed hierarchy (``retrofpn.ops.grid_hierarchy``). ``UnpoolWithSkip``: Linear-BN-ReLU of the
  coarse features copied back through the cluster map ("map" backend) + Linear-BN-ReLU of the skip.
- Patch embedding (Linear-BN-ReLU + blocks at k=8), four encoder stages, four decoder stages.

``forward`` returns, level 1 first, the decoder outputs (48/96/192/384 channels officially) and the
coarsest encoder output (512), on grids base/0.06/0.15/0.375/0.9375 m: the five levels Retro-FPN reads.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from retrofpn.config import ModelConfig
from retrofpn.layers import DropPath, PointBatchNorm, linear_bn_relu, masked_softmax
from retrofpn.ops import Hierarchy, Level, Neighbours, scatter_max


class GroupedVectorAttention(nn.Module):
    """Grouped vector attention with a positional-encoding bias (PTv2 ``GroupedVectorAttention``)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.channels, self.groups = channels, groups
        self.linear_q = linear_bn_relu(channels, channels, bias=True)
        self.linear_k = linear_bn_relu(channels, channels, bias=True)
        self.linear_v = nn.Linear(channels, channels)
        self.linear_p_bias = nn.Sequential(
            nn.Linear(3, channels),
            PointBatchNorm(channels),
            nn.ReLU(inplace=True),
            nn.Linear(channels, channels),
        )
        self.weight_encoding = nn.Sequential(
            nn.Linear(channels, groups),
            PointBatchNorm(groups),
            nn.ReLU(inplace=True),
            nn.Linear(groups, groups),
        )

    def forward(self, feat: Tensor, coord: Tensor, nb: Neighbours) -> Tensor:
        n, k = nb.idx.shape
        q, key, v = self.linear_q(feat), self.linear_k(feat), self.linear_v(feat)  # (n, C)
        pe = self.linear_p_bias(coord[nb.idx] - coord[:, None])  # (n, k, C)
        relation = key[nb.idx] - q[:, None] + pe
        w = masked_softmax(self.weight_encoding(relation), nb.valid, dim=1)  # (n, k, G)
        value = (v[nb.idx] + pe).view(n, k, self.groups, self.channels // self.groups)
        return torch.einsum("nkgi,nkg->ngi", value, w).reshape(n, self.channels)


class Block(nn.Module):
    def __init__(self, channels: int, groups: int, drop_path: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels, bias=False)
        self.norm1 = PointBatchNorm(channels)
        self.attn = GroupedVectorAttention(channels, groups)
        self.norm2 = PointBatchNorm(channels)
        self.fc3 = nn.Linear(channels, channels, bias=False)
        self.norm3 = PointBatchNorm(channels)
        self.drop_path = DropPath(drop_path)

    def forward(self, feat: Tensor, coord: Tensor, nb: Neighbours) -> Tensor:
        y = torch.relu(self.norm1(self.fc1(feat)))
        y = torch.relu(self.norm2(self.attn(y, coord, nb)))
        y = self.norm3(self.fc3(y))
        return torch.relu(feat + self.drop_path(y))


class BlockSequence(nn.ModuleList):
    """Blocks sharing one kNN (PTv2 ``BlockSequence``: the reference index is queried once per sequence)."""

    def __init__(self, depth: int, channels: int, groups: int, k: int, drop_paths: list[float]) -> None:
        super().__init__(Block(channels, groups, drop_paths[i]) for i in range(depth))
        self.k = k

    def forward(self, feat: Tensor, level: Level) -> Tensor:  # type: ignore[override]
        nb = level.neighbours.first(self.k)
        for block in self:
            feat = block(feat, level.coord, nb)
        return feat


class GridPool(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = linear_bn_relu(in_channels, out_channels)

    def forward(self, feat: Tensor, coarser: Level) -> Tensor:
        return scatter_max(self.proj(feat), coarser.cluster, coarser.num_points)  # (m, C_out)


class UnpoolWithSkip(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = linear_bn_relu(in_channels, out_channels, bias=True)
        self.proj_skip = linear_bn_relu(skip_channels, out_channels, bias=True)

    def forward(self, feat: Tensor, skip: Tensor, coarser: Level) -> Tensor:
        return self.proj(feat)[coarser.cluster] + self.proj_skip(skip)


def _drop_path_rates(depths: list[int], rate: float) -> list[list[float]]:
    """``torch.linspace(0, rate, sum(depths))`` split per stage, as PTv2 assigns stochastic depth."""
    rates = torch.linspace(0, rate, sum(depths)).tolist()
    out, start = [], 0
    for d in depths:
        out.append(rates[start : start + d])
        start += d
    return out


class PointTransformerV2(nn.Module):
    """PTv2m2: patch embedding, 4 grid-pool encoder stages, 4 unpool decoder stages."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        enc_channels = [cfg.ptv2_patch_channels, *cfg.ptv2_enc_channels]
        dec_channels = [*cfg.ptv2_dec_channels, enc_channels[-1]]
        self.level_channels = [*cfg.ptv2_dec_channels, enc_channels[-1]]
        self.patch_proj = linear_bn_relu(cfg.in_channels, cfg.ptv2_patch_channels)
        self.patch_blocks = BlockSequence(
            cfg.ptv2_patch_depth,
            cfg.ptv2_patch_channels,
            cfg.ptv2_patch_groups,
            cfg.ptv2_patch_k,
            [0.0] * cfg.ptv2_patch_depth,
        )
        enc_dp = _drop_path_rates(cfg.ptv2_enc_depths, cfg.ptv2_drop_path)
        dec_dp = _drop_path_rates(cfg.ptv2_dec_depths, cfg.ptv2_drop_path)
        self.down, self.enc_blocks, self.up, self.dec_blocks = (nn.ModuleList() for _ in range(4))
        for i in range(4):
            self.down.append(GridPool(enc_channels[i], enc_channels[i + 1]))
            self.enc_blocks.append(
                BlockSequence(
                    cfg.ptv2_enc_depths[i],
                    enc_channels[i + 1],
                    cfg.ptv2_enc_groups[i],
                    cfg.ptv2_enc_k[i],
                    enc_dp[i],
                )
            )
            self.up.append(UnpoolWithSkip(dec_channels[i + 1], enc_channels[i], dec_channels[i]))
            self.dec_blocks.append(
                BlockSequence(
                    cfg.ptv2_dec_depths[i],
                    dec_channels[i],
                    cfg.ptv2_dec_groups[i],
                    cfg.ptv2_dec_k[i],
                    dec_dp[i],
                )
            )
        self.head = None if cfg.retro else nn.Sequential(
            linear_bn_relu(dec_channels[0], dec_channels[0], bias=True), nn.Linear(dec_channels[0], cfg.num_classes)
        )  # fmt: skip

    @staticmethod
    def level_ks(cfg: ModelConfig) -> list[int]:
        """Neighbours to precompute per level: the most any block sequence of that level uses."""
        return [
            max(cfg.ptv2_patch_k, cfg.ptv2_dec_k[0]),
            *(max(cfg.ptv2_enc_k[i - 1], cfg.ptv2_dec_k[i]) for i in range(1, 4)),
            cfg.ptv2_enc_k[3],
        ]

    def forward(self, feat: Tensor, hierarchy: Hierarchy) -> list[Tensor]:
        levels = hierarchy.levels
        x = self.patch_blocks(self.patch_proj(feat), levels[0])
        skips = [x]
        for i in range(4):
            x = self.enc_blocks[i](self.down[i](x, levels[i + 1]), levels[i + 1])
            skips.append(x)
        outs = [None] * 4 + [x]  # level 5 = the coarsest encoder output
        for i in reversed(range(4)):
            x = self.dec_blocks[i](self.up[i](x, skips[i], levels[i + 1]), levels[i])
            outs[i] = x
        return outs  # type: ignore[return-value]
