"""MinkUNet18A (Choy et al., CVPR 2019, arXiv 1904.08755) on the plain-PyTorch sparse convolution of
``retrofpn.sparse``: MinkowskiEngine's ``MinkUNetBase`` (``examples/minkunet.py``, vendored by Retro-FPN's
``s3dis_scannet_minkowskinet/``) with ``BLOCK = BasicBlock``, ``LAYERS = (1,) * 8``,
``PLANES = (32, 64, 128, 256, 128, 128, 96, 96)``, ``INIT_DIM = 32``.

Stem conv k5 (stride 1) + BN-ReLU, then four times [conv k2 stride 2, BN-ReLU, BasicBlocks] down to tensor
stride 16 (block1..block4), then four times [transposed conv k2 stride 2, BN-ReLU, concatenation with the
encoder tensor of that stride, BasicBlocks] back to stride 1 (block5..block8); the head is a k1 conv with
bias (a Linear), removed under Retro-FPN. Weights: kaiming-normal (fan_out, ReLU) as ``ResNetBase``.

``forward`` returns, level 1 first, the outputs of block8/block7/block6/block5/block4 at tensor strides
1/2/4/8/16: the five levels Retro-FPN reads.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from retrofpn.config import ModelConfig
from retrofpn.ops import Hierarchy, scatter_mean
from retrofpn.sparse import SparseBatchNorm, SparseConv3d, SparseReLU, SparseTensor, sparse_cat

# (kernel, in stride, out stride) of every kernel map MinkUNet18A uses, built in advance by the hierarchy
KERNEL_MAPS = [(5, 1, 1), (3, 1, 1), (3, 2, 2), (3, 4, 4), (3, 8, 8), (3, 16, 16),
               (2, 1, 2), (2, 2, 4), (2, 4, 8), (2, 8, 16)]  # fmt: skip


class BasicBlock(nn.Module):
    """ME ``BasicBlock``: conv3-BN-ReLU-conv3-BN + (1x1 conv-BN projection when the width changes), ReLU."""

    def __init__(self, in_planes: int, planes: int) -> None:
        super().__init__()
        self.conv1 = SparseConv3d(in_planes, planes, 3)
        self.norm1 = SparseBatchNorm(planes)
        self.conv2 = SparseConv3d(planes, planes, 3)
        self.norm2 = SparseBatchNorm(planes)
        self.downsample = None
        if in_planes != planes:
            self.downsample = nn.Sequential(nn.Linear(in_planes, planes, bias=False), nn.BatchNorm1d(planes))

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = torch.relu(self.norm1(self.conv1(x)).feat)
        out = self.norm2(self.conv2(x.replace(out))).feat
        residual = x.feat if self.downsample is None else self.downsample(x.feat)  # k1 conv == Linear
        return x.replace(torch.relu(out + residual))


class MinkUNet(nn.Module):
    """MinkUNetBase; ``forward`` -> block8..block4 features (level 1 first), rows = the manager's voxels."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        planes, layers, init = cfg.mink_planes, cfg.mink_layers, cfg.mink_init_dim
        self.level_channels = [planes[7], planes[6], planes[5], planes[4], planes[3]]
        self.stem = nn.Sequential(SparseConv3d(cfg.in_channels, init, 5), SparseBatchNorm(init), SparseReLU())
        self.down, self.enc = nn.ModuleList(), nn.ModuleList()
        in_planes = init
        for i in range(4):
            self.down.append(
                nn.Sequential(
                    SparseConv3d(in_planes, in_planes, 2, stride=2), SparseBatchNorm(in_planes), SparseReLU()
                )
            )
            self.enc.append(self._layer(in_planes, planes[i], layers[i]))
            in_planes = planes[i]
        skip_planes = [planes[2], planes[1], planes[0], init]  # concatenated at strides 8, 4, 2, 1
        self.up, self.dec = nn.ModuleList(), nn.ModuleList()
        for i in range(4):
            self.up.append(
                nn.Sequential(
                    SparseConv3d(in_planes, planes[4 + i], 2, stride=2, transposed=True),
                    SparseBatchNorm(planes[4 + i]),
                    SparseReLU(),
                )
            )
            self.dec.append(self._layer(planes[4 + i] + skip_planes[i], planes[4 + i], layers[4 + i]))
            in_planes = planes[4 + i]
        self.head = None if cfg.retro else nn.Linear(planes[7], cfg.num_classes)
        self._init_weights()

    @staticmethod
    def _layer(in_planes: int, planes: int, blocks: int) -> nn.Sequential:
        return nn.Sequential(*(BasicBlock(in_planes if b == 0 else planes, planes) for b in range(blocks)))

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, SparseConv3d):
                # ME.utils.kaiming_normal_(kernel, mode="fan_out", nonlinearity="relu"): fan_out = K^3 * Cout
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.weight.shape[0] * m.weight.shape[2])))
            elif isinstance(m, nn.Linear):  # the k1 convs (block projections, head): fan_out = Cout
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, feat: Tensor, hierarchy: Hierarchy) -> list[Tensor]:
        cm = hierarchy.sparse
        voxel_feat = scatter_mean(
            feat, hierarchy.point_to_voxel, hierarchy.levels[0].num_points
        )  # ME average
        x = self.stem(SparseTensor(voxel_feat, 1, cm))
        skips = [x]  # tensor strides 1, 2, 4, 8
        for i in range(4):
            x = self.enc[i](self.down[i](x))
            skips.append(x)
        outs = [x]  # block4, stride 16
        for i in range(4):
            x = self.dec[i](sparse_cat(self.up[i](x), skips[3 - i]))
            outs.append(x)
        return [t.feat for t in reversed(outs)]
