"""Typed configuration of Retro-FPN: ``RetrofpnConfig`` with the sections ``data`` / ``model`` / ``train`` / ``eval``.

YAML files in ``retrofpn/configs/`` are read first, then ``--set section.key=value`` overrides
(``shared.config.load_config``); ``--help`` lists every key with the meaning given in ``Attributes:``.

- ``data``: ``retrofpn.data.DataConfig`` (readers, the per-backbone pipeline, test protocol).
- ``model``: :class:`ModelConfig`. Defaults are the small CPU scale of the embedded runs; each field's comment
  gives the official value, and :func:`paper_model_config` returns the official widths/depths of one backbone
  (the settings of the official code, github.com/AllenXiangX/Retro-FPN: ``s3dis_point-transformer/``,
  ``scannet_ptv2/``, ``s3dis_scannet_minkowskinet/``). Retro-FPN's own D, G, k and level strides default to
  ``None``, which picks the official per-backbone value (:data:`RETRO_DEFAULTS`).
- ``train``: :class:`TrainConfig`, the optimiser and schedule of each official sub-project (PT: SGD, lr 0.1,
  MultiStep at 60 % / 80 % of the epochs; MinkUNet: SGD, per-iteration poly 0.9; PTv2: AdamW, OneCycle).
- ``eval``: :class:`EvalConfig`, the validation split (held-out training scenes, never the test area) and the
  test protocol's seed.

:func:`check_config` refuses, with one line naming the key, the combinations no run can use.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from retrofpn.data.config import DataConfig
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


@dataclass
class TrainConfig:
    """Optimisation and run settings (the official ``train.py`` of each sub-project; see configs/*.yaml).

    Attributes:
        seed: seed of python, numpy and torch, of the per-epoch samples and shuffles (official PT 7777)
        epochs: passes over the training split, each of data.loop repeats of every scene (official 100; PTv2 100 x loop 9)
        batch_size: scenes per optimiser step over all processes; each of W torchrun processes takes batch_size / W (official PT 4, MinkUNet 16, PTv2 12)
        workers: data-loader worker processes per training process; the batch hook (neighbour search) runs in them (0 = in the training process)
        optimizer: sgd (PT, MinkUNet) or adamw (PTv2)
        lr: base learning rate (official PT 0.1, MinkUNet 0.1, PTv2 0.005; the PT baseline config 0.5)
        momentum: SGD momentum (official 0.9)
        weight_decay: weight decay of every parameter (official SGD 1e-4, AdamW 0.02)
        scheduler: multistep (per epoch, PT / MinkUNet ScanNet), poly (per iteration, MinkUNet S3DIS), onecycle (per iteration, PTv2), cosine (per iteration), constant
        milestones: multistep: epochs at these fractions of train.epochs multiply the lr by gamma (official 0.6, 0.8)
        gamma: multistep factor (official 0.1)
        poly_power: poly: lr = base * (1 - iteration / total)^power (official 0.9)
        onecycle_pct: onecycle: fraction of the iterations spent warming up (official 0.05)
        onecycle_div: onecycle: the warm-up starts at lr / div (official 10)
        onecycle_final_div: onecycle: the run ends at lr / div / final_div (official 1000)
        grad_clip: clip the gradient norm to this value (0 = off; none of the official configs clips)
        amp: mixed precision (float16 autocast and a gradient scaler) on CUDA; ignored on CPU (official PTv2: on)
        sync_bn: BatchNorm -> SyncBatchNorm under torchrun on CUDA (the official multi-GPU runs); never on CPU
        max_steps_per_epoch: stop each epoch after this many steps (0 = the whole epoch; quick runs and tests)
        log_every: one progress line every this many steps when stderr is not a terminal (0 = none)
        threads: torch CPU threads of the training process (0 = torch's default)
        nan_at_step: inject a NaN loss at this step, to test the guard (-1: never)
        runs_root: folder holding runs/retrofpn/<experiment>/<timestamp>/
        deterministic: use torch's deterministic algorithms (slower on CUDA; CPU kernels here are deterministic)
    """

    seed: int = 0
    epochs: int = 6
    batch_size: int = 2
    workers: int = 0
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: Literal["multistep", "poly", "onecycle", "cosine", "constant"] = "multistep"
    milestones: list[float] = field(default_factory=lambda: [0.6, 0.8])
    gamma: float = 0.1
    poly_power: float = 0.9
    onecycle_pct: float = 0.05
    onecycle_div: float = 10.0
    onecycle_final_div: float = 1000.0
    grad_clip: float = 0.0
    amp: bool = True
    sync_bn: bool = True
    max_steps_per_epoch: int = 0
    log_every: int = 20
    threads: int = 0
    nan_at_step: int = -1
    runs_root: str = "runs"
    deterministic: bool = False


@dataclass
class EvalConfig:
    """Validation during training and the test protocol.

    Attributes:
        val_scenes: training-split scenes held out for validation (spread over the sorted list: every (n // v)-th scene, shifted by one more each time); 0 = no validation, the last epoch is kept as best
        val_voxel_max: validation sample of each held-out scene: one voxelised pass, cropped to this many points (official PT validation 800000, i.e. whole rooms; 0 = no crop)
        val_every: validate every this many epochs (and after the last one)
        vote_seed: seed of the test protocol's random draws (official 2023)
        test: score the best checkpoint on the test split with the full voting protocol at the end of training
        save_predictions: also write each test scene's (N,) int16 predicted labels to predictions/<scene>.npy in the run folder (for retrofpn.render)
    """

    val_scenes: int = 5
    val_voxel_max: int = 800000
    val_every: int = 1
    vote_seed: int = 2023
    test: bool = True
    save_predictions: bool = False


@dataclass
class RetrofpnConfig:
    """Retro-FPN's config: one YAML file in retrofpn/configs/ with these sections.

    Attributes:
        experiment: name of the run folder under runs/retrofpn/
        data: the data section (retrofpn.data.DataConfig)
        model: the model section (backbone, Retro-FPN switch and widths)
        train: the train section (optimiser, schedule, batch, run settings)
        eval: the eval section (validation split, test protocol)
    """

    experiment: str = "synthetic_pt"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def run_name(self) -> str:
        """The experiment folder: ``<experiment>_<backbone>_<retro|base>`` (both variants of a config apart)."""
        return f"{self.experiment}_{self.model.backbone}_{'retro' if self.model.retro else 'base'}"


def level_capacity(cfg: RetrofpnConfig) -> list[int] | None:
    """Most points per cloud at each of the five levels of a training crop (PT only: FPS keeps n // stride
    exactly; grid and voxel levels depend on the geometry), or None when it cannot be known in advance."""
    n = cfg.data.voxel_max
    if cfg.model.backbone != "pt" or n <= 0:
        return None
    return [max(1, n // cfg.model.pt_stride**level) for level in range(NUM_LEVELS)]


def check_config(cfg: RetrofpnConfig) -> None:
    """Refuse, before any run folder is made, the values no run can use (one line naming the key)."""
    t, d, m, e = cfg.train, cfg.data, cfg.model, cfg.eval
    for key in ("epochs", "batch_size", "val_every"):
        section, prefix = (e, "eval") if key == "val_every" else (t, "train")
        if getattr(section, key) < 1:
            raise ConfigError(f"{prefix}.{key} must be >= 1, got {getattr(section, key)}")
    for key in ("workers", "max_steps_per_epoch", "threads", "log_every", "grad_clip", "weight_decay"):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key} must be >= 0, got {getattr(t, key)}")
    if e.val_scenes < 0 or e.val_voxel_max < 0:
        raise ConfigError("eval.val_scenes and eval.val_voxel_max must be >= 0")
    if t.optimizer not in ("sgd", "adamw"):
        raise ConfigError(f"train.optimizer: expected sgd or adamw, got {t.optimizer!r}")
    if t.scheduler not in ("multistep", "poly", "onecycle", "cosine", "constant"):
        raise ConfigError(
            f"train.scheduler: expected multistep, poly, onecycle, cosine or constant, got {t.scheduler!r}"
        )
    if not t.lr > 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    if not 0 <= t.momentum < 1:
        raise ConfigError(f"train.momentum must be in [0, 1), got {t.momentum}")
    if any(not 0 < f <= 1 for f in t.milestones) or sorted(t.milestones) != list(t.milestones):
        raise ConfigError(
            f"train.milestones: increasing fractions of the epochs in (0, 1], got {t.milestones}"
        )
    if not 0 < t.onecycle_pct < 1 or t.onecycle_div <= 0 or t.onecycle_final_div <= 0 or t.gamma <= 0:
        raise ConfigError("train.onecycle_pct must be in (0, 1); onecycle_div, onecycle_final_div, gamma > 0")
    if m.in_channels != d.in_channels:
        raise ConfigError(
            f"model.in_channels is {m.in_channels} but data.feat_keys {d.feat_keys} give {d.in_channels} "
            f"channels; set model.in_channels={d.in_channels}"
        )
    if m.num_classes != d.num_classes:
        raise ConfigError(
            f"model.num_classes is {m.num_classes} but data.num_classes is {d.num_classes}; make them equal"
        )
    if m.ignore_index != d.ignore_index:
        raise ConfigError(
            f"model.ignore_index is {m.ignore_index} but data.ignore_index is {d.ignore_index}; make them equal"
        )
    capacity = level_capacity(cfg)
    if capacity is not None:
        for level, (k_within, k_retro) in enumerate(zip(m.pt_k, m.resolved_retro_k() if m.retro else m.pt_k)):
            if k_within > capacity[level]:
                raise ConfigError(
                    f"model.pt_k[{level}] = {k_within} but level {level + 1} of a data.voxel_max = "
                    f"{d.voxel_max} crop has at most {capacity[level]} points; lower it or raise data.voxel_max"
                )
            if not m.retro:
                continue
            strides = m.resolved_retro_strides()
            coarser = level + 1 if level + 1 < NUM_LEVELS else level
            available = max(1, capacity[coarser] // strides[coarser])
            if k_retro > available:
                raise ConfigError(
                    f"model.retro_k[{level}] = {k_retro} but the level {coarser + 1} it attends to has at most "
                    f"{available} points in a data.voxel_max = {d.voxel_max} crop; lower model.retro_k or "
                    "raise data.voxel_max"
                )
