"""Small blocks shared by the backbones and the retro-transformer.

- :class:`PointBatchNorm`: ``BatchNorm1d`` over the channels of (n, C) or per-neighbour (n, k, C) tensors (the
  official code transposes to (n, C, k) for the same statistics; flattening to (n·k, C) is equivalent).
- :func:`masked_softmax`: softmax over the neighbour axis with the padded slots of
  ``retrofpn.ops.Neighbours`` removed (every consumer of a padded kNN uses it).
- :class:`DropPath`: stochastic depth per point (timm's ``DropPath`` as PTv2 applies it to (n, C) features).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PointBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the last (channel) axis of a (n, C) or (n, k, C) tensor."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if x.dim() == 3:
            n, k, c = x.shape
            return super().forward(x.reshape(n * k, c)).view(n, k, c)
        return super().forward(x)


def masked_softmax(logits: Tensor, valid: Tensor, dim: int = 1) -> Tensor:
    """Softmax over ``dim`` (the k neighbours) of logits (n, k, ...), padded slots (valid False) get weight 0.

    Every row has at least one valid slot (the nearest neighbour always exists), so no row is all -inf.
    """
    mask = valid.view(*valid.shape, *([1] * (logits.dim() - valid.dim())))
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=dim)


class DropPath(nn.Module):
    """Zero a whole row (point) with probability p during training and rescale the rest by 1 / (1 - p)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = torch.rand(x.shape[0], 1, device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def linear_bn_relu(in_channels: int, out_channels: int, bias: bool = False) -> nn.Sequential:
    """Linear -> BatchNorm -> ReLU, the unit most official layers are made of."""
    return nn.Sequential(
        nn.Linear(in_channels, out_channels, bias=bias), PointBatchNorm(out_channels), nn.ReLU(inplace=True)
    )
