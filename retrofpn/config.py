"""Typed model configuration for Retro-FPN and its three backbones (``model`` section of the YAML configs).

Defaults are the small CPU scale of the embedded runs; each field's comment gives the official value, and
:func:`paper_model_config` returns the official widths/depths of one backbone (the settings of the official
code, github.com/AllenXiangX/Retro-FPN: ``s3dis_point-transformer/``, ``scannet_ptv2/``,
``s3dis_scannet_minkowskinet/``). Retro-FPN's own D, G, k and level strides default to ``None``, which picks
the official per-backbone value (:data:`RETRO_DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from shared.errors import ConfigError

Backbone = Literal["pt", "ptv2", "minkunet"]
NUM_LEVELS = 5  # every backbone exposes five decoder levels to Retro-FPN (level 1 = full resolution)

# D (retro_dim), G (retro_groups), k per level rt1..rt5, level strides: official per backbone
RETRO_DEFAULTS: dict[str, dict[str, object]] = {
    "pt": {"retro_dim": 32, "retro_groups": 1, "retro_k": [16] * 5, "retro_strides": [1] * 5},
    "minkunet": {"retro_dim": 32, "retro_groups": 4, "retro_k": [12] * 5, "retro_strides": [1] * 5},
    "ptv2": {
        "retro_dim": 48,
        "retro_groups": 4,
        "retro_k": [12, 12, 16, 16, 12],
        "retro_strides": [1, 4, 1, 1, 1],
    },
}


@dataclass
class ModelConfig:
    """One segmentor: a backbone, with (``retro: true``) or without Retro-FPN.

    Attributes:
        backbone: pt (Point Transformer, PTSeg50), ptv2 (Point Transformer V2, PTv2m2) or minkunet (MinkUNet18A).
        retro: true: Retro-FPN heads on the five decoder levels (deep supervision); false: the backbone's own head.
        in_channels: feature channels of the batch's ``feat`` (PT adds the 3 xyz channels itself).
        num_classes: number of semantic classes K.
        ignore_index: label ignored by the loss and by label pooling.
        retro_dim: D, width of every retro-transformer; null = official (PT 32, MinkUNet 32, PTv2 48).
        retro_groups: G, attention groups; null = official (PT 1, MinkUNet 4, PTv2 4).
        retro_k: neighbours in the coarser level for rt1..rt5; null = official (PT 16, MinkUNet 12, PTv2 12,12,16,16,12).
        retro_strides: random subsampling of each level before its retro-transformer; null = official (PTv2 1,4,1,1,1; others 1).
        retro_loss_weights: deep-supervision weight of levels 1..5 (official 1 each; MinkUNet ScanNet 2.0,1.6,1.2,0.8,0.4).
        pt_planes: PT channels per level (official 32,64,128,256,512).
        pt_blocks: PT encoder layers per level counting the TransitionDown (official PTSeg50 2,3,4,6,3).
        pt_share_planes: PT channels sharing one attention weight (official 8).
        pt_stride: PT FPS stride between levels (official 4).
        pt_k: PT neighbours per level (official 8,16,16,16,16).
        pt_fps: PT sampling: vanilla (exact, starts at each cloud's first point as pointops) or bucket (exact, ~30x faster, fpsample's own start).
        ptv2_patch_channels: PTv2 patch-embedding width (official 48).
        ptv2_patch_groups: PTv2 patch-embedding attention groups (official 6).
        ptv2_patch_depth: PTv2 patch-embedding blocks (official 1).
        ptv2_patch_k: PTv2 patch-embedding neighbours (official 8).
        ptv2_enc_depths: PTv2 blocks per encoder stage (official 2,2,6,2).
        ptv2_enc_channels: PTv2 encoder widths (official 96,192,384,512).
        ptv2_enc_groups: PTv2 encoder attention groups (official 12,24,48,64).
        ptv2_enc_k: PTv2 encoder neighbours (official 16,16,16,16).
        ptv2_dec_depths: PTv2 blocks per decoder stage (official 1,1,1,1).
        ptv2_dec_channels: PTv2 decoder widths, finest first (official 48,96,192,384).
        ptv2_dec_groups: PTv2 decoder attention groups (official 6,12,24,48).
        ptv2_dec_k: PTv2 decoder neighbours (official 16,16,16,16).
        ptv2_grid_sizes: PTv2 grid-pooling cell sizes in metres (official 0.06,0.15,0.375,0.9375 from a 0.02 m base).
        ptv2_drop_path: PTv2 stochastic-depth rate, rising linearly over the encoder blocks and over the decoder blocks (official 0.3).
        mink_init_dim: MinkUNet stem width (official 32).
        mink_planes: MinkUNet widths of block1..block8 (official MinkUNet18A 32,64,128,256,128,128,96,96).
        mink_layers: MinkUNet BasicBlocks in block1..block8 (official 1 each).
    """

    backbone: Backbone = "pt"
    retro: bool = True
    in_channels: int = 3
    num_classes: int = 13
    ignore_index: int = -1  # the package-wide ignore label (official 255 / 20 are mapped to it by the data)

    # --- Retro-FPN (facts: the retro-transformer of all three official copies) -------------------------------
    retro_dim: int | None = None
    retro_groups: int | None = None
    retro_k: list[int] | None = None
    retro_strides: list[int] | None = None
    retro_loss_weights: list[float] = field(default_factory=lambda: [1.0] * NUM_LEVELS)

    # --- Point Transformer (Zhao et al., ICCV 2021; official pointtransformer_seg.py) --------------------------
    pt_planes: list[int] = field(default_factory=lambda: [16, 32, 64, 64, 128])  # official 32,64,128,256,512
    pt_blocks: list[int] = field(default_factory=lambda: [1, 2, 2, 2, 1])  # official 2,3,4,6,3
    pt_share_planes: int = 8
    pt_stride: int = 4
    pt_k: list[int] = field(default_factory=lambda: [8, 16, 16, 16, 16])
    pt_fps: Literal["vanilla", "bucket"] = "vanilla"

    # --- Point Transformer V2 (Wu et al., NeurIPS 2022; Pointcept point_transformer_v2m2_base.py) --------------
    ptv2_patch_channels: int = 16  # official 48
    ptv2_patch_groups: int = 2  # official 6
    ptv2_patch_depth: int = 1
    ptv2_patch_k: int = 8
    ptv2_enc_depths: list[int] = field(default_factory=lambda: [1, 1, 1, 1])  # official 2,2,6,2
    ptv2_enc_channels: list[int] = field(default_factory=lambda: [32, 64, 64, 128])  # official 96,192,384,512
    ptv2_enc_groups: list[int] = field(default_factory=lambda: [4, 8, 8, 16])  # official 12,24,48,64
    ptv2_enc_k: list[int] = field(default_factory=lambda: [16, 16, 16, 16])
    ptv2_dec_depths: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    ptv2_dec_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 64])  # official 48,96,192,384
    ptv2_dec_groups: list[int] = field(default_factory=lambda: [2, 4, 8, 8])  # official 6,12,24,48
    ptv2_dec_k: list[int] = field(default_factory=lambda: [16, 16, 16, 16])
    # embedded: doubling from the 0.04 m voxels of the embedded data (about 4x fewer points per level, like PT's
    # FPS stride); official 0.06, 0.15, 0.375, 0.9375 from ScanNet's 0.02 m voxels
    ptv2_grid_sizes: list[float] = field(default_factory=lambda: [0.08, 0.16, 0.32, 0.64])
    ptv2_drop_path: float = 0.0  # official 0.3

    # --- MinkUNet18A (Choy et al., CVPR 2019; MinkUNetBase with BasicBlock) -----------------------------------
    mink_init_dim: int = 16  # official 32
    mink_planes: list[int] = field(default_factory=lambda: [16, 32, 64, 64, 64, 64, 32, 32])
    mink_layers: list[int] = field(default_factory=lambda: [1] * 8)

    def __post_init__(self) -> None:
        self.validate()

    # --- resolved Retro-FPN settings ---------------------------------------------------------------------------
    def _retro(self, name: str) -> object:
        value = getattr(self, name)
        return RETRO_DEFAULTS[self.backbone][name] if value is None else value

    def resolved_retro_dim(self) -> int:
        return int(self._retro("retro_dim"))  # type: ignore[arg-type]

    def resolved_retro_groups(self) -> int:
        return int(self._retro("retro_groups"))  # type: ignore[arg-type]

    def resolved_retro_k(self) -> list[int]:
        return list(self._retro("retro_k"))  # type: ignore[call-overload]

    def resolved_retro_strides(self) -> list[int]:
        return list(self._retro("retro_strides"))  # type: ignore[call-overload]

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first impossible value (called on construction)."""

        def need(ok: bool, key: str, message: str) -> None:
            if not ok:
                raise ConfigError(f"model.{key}: {message}")

        if self.backbone not in RETRO_DEFAULTS:
            raise ConfigError(
                f"model.backbone: expected one of {sorted(RETRO_DEFAULTS)}, got {self.backbone!r}"
            )
        need(self.in_channels >= 1, "in_channels", f"must be >= 1, got {self.in_channels}")
        need(self.num_classes >= 2, "num_classes", f"must be >= 2, got {self.num_classes}")
        need(
            not 0 <= self.ignore_index < self.num_classes,
            "ignore_index",
            f"{self.ignore_index} is a real class id (0..{self.num_classes - 1}); use e.g. 255",
        )
        for name, length in (("retro_k", NUM_LEVELS), ("retro_strides", NUM_LEVELS),
                             ("retro_loss_weights", NUM_LEVELS), ("pt_planes", NUM_LEVELS),
                             ("pt_blocks", NUM_LEVELS), ("pt_k", NUM_LEVELS), ("ptv2_enc_depths", 4),
                             ("ptv2_enc_channels", 4), ("ptv2_enc_groups", 4), ("ptv2_enc_k", 4),
                             ("ptv2_dec_depths", 4), ("ptv2_dec_channels", 4), ("ptv2_dec_groups", 4),
                             ("ptv2_dec_k", 4), ("ptv2_grid_sizes", 4), ("mink_planes", 8),
                             ("mink_layers", 8)):  # fmt: skip
            value = getattr(self, name)
            if value is not None:
                need(len(value) == length, name, f"needs {length} values (one per level), got {len(value)}")
                need(
                    all(v > 0 for v in value) or name == "retro_loss_weights",
                    name,
                    f"values must be > 0, got {list(value)}",
                )
        need(
            all(w >= 0 for w in self.retro_loss_weights) and sum(self.retro_loss_weights) > 0,
            "retro_loss_weights",
            f"must be >= 0 and not all 0, got {self.retro_loss_weights}",
        )
        d, g = self.resolved_retro_dim(), self.resolved_retro_groups()
        need(d >= 1 and g >= 1 and d % g == 0, "retro_dim", f"D={d} must be a positive multiple of G={g}")
        need(
            self.resolved_retro_strides()[0] == 1,
            "retro_strides",
            "level 1 must keep every point (stride 1): the prediction is read there",
        )
        need(self.pt_stride >= 2, "pt_stride", f"must be >= 2, got {self.pt_stride}")
        need(self.pt_blocks[0] >= 1, "pt_blocks", "every level has at least its Transition layer (>= 1)")
        need(
            all(p % self.pt_share_planes == 0 for p in self.pt_planes),
            "pt_share_planes",
            f"every pt_planes value {self.pt_planes} must be a multiple of pt_share_planes={self.pt_share_planes}",
        )
        for prefix, channels, groups in (
            ("ptv2_enc", self.ptv2_enc_channels, self.ptv2_enc_groups),
            ("ptv2_dec", self.ptv2_dec_channels, self.ptv2_dec_groups),
            ("ptv2_patch", [self.ptv2_patch_channels], [self.ptv2_patch_groups]),
        ):
            need(
                all(c % g == 0 for c, g in zip(channels, groups)),
                f"{prefix}_groups",
                f"channels {list(channels)} must be multiples of their groups {list(groups)}",
            )
        need(
            0.0 <= self.ptv2_drop_path < 1.0,
            "ptv2_drop_path",
            f"must be in [0, 1), got {self.ptv2_drop_path}",
        )


def paper_model_config(backbone: Backbone, **overrides: object) -> ModelConfig:
    """The official widths and depths of ``backbone`` (PTSeg50 / PTv2m2 ScanNet / MinkUNet18A).

    Data-dependent fields (in_channels, num_classes, ignore_index) keep their defaults unless overridden:
    the official runs use 3 (rgb) + xyz / 13 classes for PT on S3DIS, 9 (xyz, rgb, normal) / 20 for PTv2 on
    ScanNet, 3 / 13 or 20 for the MinkUNet.
    """
    official: dict[str, dict[str, object]] = {
        "pt": {"pt_planes": [32, 64, 128, 256, 512], "pt_blocks": [2, 3, 4, 6, 3]},
        "ptv2": {
            "ptv2_patch_channels": 48, "ptv2_patch_groups": 6,
            "ptv2_enc_depths": [2, 2, 6, 2], "ptv2_enc_channels": [96, 192, 384, 512],
            "ptv2_enc_groups": [12, 24, 48, 64], "ptv2_dec_channels": [48, 96, 192, 384],
            "ptv2_dec_groups": [6, 12, 24, 48], "ptv2_grid_sizes": [0.06, 0.15, 0.375, 0.9375],
            "ptv2_drop_path": 0.3,
        },
        "minkunet": {"mink_init_dim": 32, "mink_planes": [32, 64, 128, 256, 128, 128, 96, 96]},
    }  # fmt: skip
    return replace(ModelConfig(backbone=backbone), **{**official[backbone], **overrides})
