"""The three backbones Retro-FPN is evaluated on; each ``forward(feat, hierarchy)`` returns five decoder
levels (level 1 = full resolution first) and carries ``level_channels`` and, without Retro-FPN, ``head``."""

from retrofpn.backbones.minkunet import MinkUNet
from retrofpn.backbones.pt import PointTransformerSeg
from retrofpn.backbones.ptv2 import PointTransformerV2

__all__ = ["MinkUNet", "PointTransformerSeg", "PointTransformerV2"]
