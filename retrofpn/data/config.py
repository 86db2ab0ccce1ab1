"""``DataConfig``: where the scenes are, how they are labelled, and the training/test pipeline of each backbone.

The defaults are the embedded small scale (the synthetic S3DIS-layout rooms of ``retrofpn.prepare``, the Point
Transformer pipeline with a smaller crop and loop); each field's comment gives the official value.
``official_data_config(pipeline)`` returns the paper-scale values of the three official pipelines:

- ``"pt"``: Point Transformer on S3DIS (Retro-FPN ``s3dis_point-transformer/train.py`` + POSTECH
  ``util/data_util.py``, ``util/transform.py``, ``util/voxelize.py``, ``test.py``);
- ``"mink"``: MinkUNet18A on S3DIS / ScanNet (Retro-FPN ``s3dis_scannet_minkowskinet/dataset/{S3DIS,scanNet3D}.py``
  with BPNet's ``dataset/voxelizer.py`` and ``dataset/augmentation.py``);
- ``"ptv2"``: PTv2m2 on ScanNet (Retro-FPN ``scannet/configs/scannet/semseg-ptv2m2-0-base.py``, Pointcept
  transforms).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from shared.errors import ConfigError

# The label order of the S3DIS class folders (PointNet ``meta/class_names.txt``, Pointcept ``S3DISDataset``):
# the preprocessed ``Area_X_<room>.npy`` files were written by that pipeline, so label i names CLASSES[i].
# The Retro-FPN/POSTECH ``s3dis_names.txt`` swaps table/chair and sofa/bookcase; it is only used for printing.
S3DIS_CLASSES: tuple[str, ...] = (
    "ceiling",
    "floor",
    "wall",
    "beam",
    "column",
    "window",
    "door",
    "table",
    "chair",
    "sofa",
    "bookcase",
    "board",
    "clutter",
)
# ScanNet v2, 20 classes: the nyu40 ids kept by the benchmark (BPNet/Pointcept ``VALID_CLASS_IDS``), in order.
SCANNET_VALID_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
SCANNET_CLASSES: tuple[str, ...] = (
    "wall",
    "floor",
    "cabinet",
    "bed",
    "chair",
    "sofa",
    "table",
    "door",
    "window",
    "bookshelf",
    "picture",
    "counter",
    "desk",
    "curtain",
    "refrigerator",
    "shower curtain",
    "toilet",
    "sink",
    "bathtub",
    "otherfurniture",
)
IGNORE_INDEX = -1  # the one ignore label of the package (Pointcept's; the official 255 / 20 are mapped to it)
EMBEDDED_ROOT = "data/retrofpn/synthetic_rooms/trainval_fullarea"

DatasetName = Literal["s3dis", "pointcept", "scannet", "las"]
PipelineName = Literal["pt", "mink", "ptv2"]


@dataclass
class DataConfig:
    """Data set, labels and the per-backbone training/test pipeline.

    Attributes:
        dataset: reader of ``root``: s3dis (Area_X_<room>.npy, N x 7), pointcept (a folder per scene), scannet (ScanNet v2 PLYs), las (LAS/LAZ files)
        root: folder holding the scenes (embedded: the synthetic rooms written by ``python -m retrofpn.prepare``)
        test_area: S3DIS area held out for testing (official 5); used by s3dis and by pointcept with Area_* folders
        train_dirs: sub-folders of root with training scenes (pointcept/scannet/las; empty = the Area_* folders except test_area)
        test_dirs: sub-folders of root with test scenes (pointcept/scannet/las; empty = the test_area folder)
        train_list: text file (absolute or relative to root) naming the training scenes, one per line (e.g. scannetv2_train.txt); empty = every scene found
        test_list: text file naming the test scenes, one per line (e.g. scannetv2_val.txt); empty = every scene found
        segment_file: label file of a pointcept scene folder (segment.npy for S3DIS, segment20.npy for ScanNet)
        num_classes: number of semantic classes K (S3DIS 13, ScanNet 20)
        class_names: the K class names, in label order (printing and reports)
        ignore_index: label of unlabelled points in every batch (the package uses -1 everywhere)
        raw_ignore_labels: label values in the files that mean unlabelled and become ignore_index (Pointcept -1, BPNet .pth 255)
        scannet_valid_ids: nyu40 ids kept from *_vh_clean_2.labels.ply, mapped to 0..K-1 in this order; other ids are ignored
        las_classes: ASPRS classification codes kept from LAS files, mapped to 0..K-1 in this order
        las_ignore_classes: ASPRS codes that become ignore_index (e.g. 7 low noise, 18 high noise); any other code is an error
        las_tile_size: about the side in metres of the x-y tiles a LAS file is cut into (equal tiles; 0 = one scene per file, split by train_dirs/test_dirs)
        las_test_modulus: tile (i, j) is a test tile when (i + 2 j) % las_test_modulus == 0 (used when las_tile_size > 0)
        coord_scale: factor from file units to metres (1.0; 0.3048006 for US survey feet)
        feat_keys: per-point channels concatenated into feat, in order (color, normal, coord, intensity, return_number, number_of_returns)
        color_norm: colour scaling into feat: unit = rgb/255 (PT), signed = rgb/127.5-1 (MinkUNet, PTv2 of the time)
        pipeline: training/test protocol: pt (Point Transformer), mink (MinkUNet voxelizer), ptv2 (Pointcept PTv2)
        voxel_size: voxel side in metres (official PT 0.04, MinkUNet 0.05, PTv2 0.02)
        voxel_max: training crop, the voxels nearest a random point (official PT 80000, Mink S3DIS 80000, PTv2 SphereCrop 100000; 0 = no crop)
        test_voxel_max: PT test passes larger than this are split into overlapping crops (official 80000; 0 = never split)
        loop: times the training scenes are repeated per epoch (official PT/Mink S3DIS 10, Mink ScanNet 6)
        augment: apply the training augmentations below (off only for debugging and overfitting checks)
        scale_range: RandomScale bounds (official [0.9, 1.1])
        auto_contrast_p: ChromaticAutoContrast probability (official 0.2; blend factor uniform in [0, 1])
        color_translation_p: ChromaticTranslation probability (official 0.95)
        color_translation_ratio: ChromaticTranslation shift, uniform in +-ratio*255 per channel (PT/PTv2 0.05, Mink 0.1)
        color_jitter_p: ChromaticJitter probability (official 0.95)
        color_jitter_std: ChromaticJitter Gaussian std as a fraction of 255 (PT 0.005, Mink 0.05, PTv2 0.05)
        hue_max: HueSaturationTranslation hue shift bound (PT/Mink 0.5; PTv2 0 = off)
        saturation_max: HueSaturationTranslation saturation ratio bound (PT/Mink 0.2; PTv2 0 = off)
        rotate_z: rotation about z, uniform in +-rotate_z*pi (PT 0, Mink 1, PTv2 1)
        rotate_xy: rotations about x and y, uniform in +-rotate_xy*pi (PT 0, Mink 1/64, PTv2 1/64)
        rotate_p: probability of each PTv2 rotation (official 0.5; the Mink voxelizer always rotates)
        elastic_params: ElasticDistortion (granularity, magnitude) pairs in metres (Mink/PTv2 [[0.2, 0.4], [0.8, 1.6]]; empty = off)
        flip_p: horizontal flip probability (Mink ScanNet 0.95 then 0.5 per axis; PTv2 RandomFlip 0.5 per axis; 0 = off)
        jitter_sigma: RandomJitter std in metres (PTv2 0.005; 0 = off)
        jitter_clip: RandomJitter clip in metres (PTv2 0.02)
        dropout_ratio: RandomDropout fraction of points dropped (PTv2 0.2; 0 = off)
        dropout_p: RandomDropout application probability (PTv2 0.2)
        mix_prob: Mix3D probability that the collate merges pairs of clouds into one (PTv2 0.8; 0 = off)
        test_vote: what the test passes sum per point: logits (PT, Mink) or softmax (PTv2)
        test_augmentations: test repeats: Mink random voxelizer draws (official 7), PTv2 the first n of its 13 fixed augmentations (official 13); PT must be 1
        test_batch: test passes given to one predict call (official PT 4)
        cache: keep every loaded scene in memory (the official code keeps them in /dev/shm)
    """

    dataset: DatasetName = "s3dis"
    root: str = EMBEDDED_ROOT
    test_area: int = 5
    train_dirs: list[str] = field(default_factory=list)
    test_dirs: list[str] = field(default_factory=list)
    train_list: str = ""
    test_list: str = ""
    segment_file: str = "segment.npy"
    num_classes: int = 13
    class_names: list[str] = field(default_factory=lambda: list(S3DIS_CLASSES))
    ignore_index: int = IGNORE_INDEX
    raw_ignore_labels: list[int] = field(default_factory=lambda: [-1])
    scannet_valid_ids: list[int] = field(default_factory=lambda: list(SCANNET_VALID_IDS))
    las_classes: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6])
    las_ignore_classes: list[int] = field(default_factory=lambda: [7, 18])
    las_tile_size: float = 0.0
    las_test_modulus: int = 5
    coord_scale: float = 1.0
    feat_keys: list[str] = field(default_factory=lambda: ["color"])
    color_norm: Literal["unit", "signed"] = "unit"
    pipeline: PipelineName = "pt"
    voxel_size: float = 0.04
    voxel_max: int = 24000  # official 80000
    test_voxel_max: int = 80000
    loop: int = 2  # official 10
    augment: bool = True
    scale_range: list[float] = field(default_factory=lambda: [0.9, 1.1])
    auto_contrast_p: float = 0.2
    color_translation_p: float = 0.95
    color_translation_ratio: float = 0.05
    color_jitter_p: float = 0.95
    color_jitter_std: float = 0.005
    hue_max: float = 0.5
    saturation_max: float = 0.2
    rotate_z: float = 0.0
    rotate_xy: float = 0.0
    rotate_p: float = 0.5
    elastic_params: list[list[float]] = field(default_factory=list)
    flip_p: float = 0.0
    jitter_sigma: float = 0.0
    jitter_clip: float = 0.02
    dropout_ratio: float = 0.0
    dropout_p: float = 0.2
    mix_prob: float = 0.0
    test_vote: Literal["logits", "softmax"] = "logits"
    test_augmentations: int = 1
    test_batch: int = 4
    cache: bool = True

    def __post_init__(self) -> None:
        validate(self)

    @property
    def in_channels(self) -> int:
        """Width of ``feat`` (the model adds xyz itself for PT: 3 + 3 = the official ``fea_dim`` 6)."""
        return sum(FEAT_WIDTH[k] for k in self.feat_keys)


FEAT_WIDTH = {"color": 3, "normal": 3, "coord": 3, "intensity": 1, "return_number": 1, "number_of_returns": 1}
ELASTIC_OFFICIAL = [[0.2, 0.4], [0.8, 1.6]]

# Paper-scale values of the three official pipelines (fields not named keep the DataConfig default). "mink" is
# the S3DIS setting; MinkUNet on ScanNet differs in voxel_max 0 (no crop), flip_p 0.95 and loop 6, and "ptv2"
# is its ScanNet setting on Pointcept folders (see retrofpn/README_data_draft.md for both as configs).
OFFICIAL: dict[str, dict[str, Any]] = {
    "pt": dict(
        pipeline="pt", voxel_size=0.04, voxel_max=80000, test_voxel_max=80000, loop=10, color_norm="unit"
    ),
    "mink": dict(
        pipeline="mink",
        voxel_size=0.05,
        voxel_max=80000,
        test_voxel_max=0,
        loop=10,
        color_norm="signed",
        color_translation_ratio=0.1,
        color_jitter_std=0.05,
        rotate_z=1.0,
        rotate_xy=1 / 64,
        elastic_params=ELASTIC_OFFICIAL,
        test_augmentations=7,
    ),
    "ptv2": dict(
        pipeline="ptv2",
        dataset="pointcept",
        root="data/retrofpn/scannet_pointcept",
        train_dirs=["train"],
        test_dirs=["val"],
        segment_file="segment20.npy",
        num_classes=20,
        class_names=list(SCANNET_CLASSES),
        voxel_size=0.02,
        voxel_max=100000,
        test_voxel_max=0,
        loop=1,
        feat_keys=["coord", "normal", "color"],
        color_norm="signed",
        color_jitter_std=0.05,
        hue_max=0.0,
        saturation_max=0.0,
        rotate_z=1.0,
        rotate_xy=1 / 64,
        rotate_p=0.5,
        elastic_params=ELASTIC_OFFICIAL,
        flip_p=0.5,
        jitter_sigma=0.005,
        jitter_clip=0.02,
        dropout_ratio=0.2,
        dropout_p=0.2,
        mix_prob=0.8,
        test_vote="softmax",
        test_augmentations=13,
    ),
}


def official_data_config(pipeline: PipelineName, **overrides: Any) -> DataConfig:
    """The official values of one pipeline (``OFFICIAL``), then ``overrides``."""
    if pipeline not in OFFICIAL:
        raise ConfigError(f"data.pipeline: expected one of {sorted(OFFICIAL)}, got {pipeline!r}")
    return replace(DataConfig(), **{**OFFICIAL[pipeline], **overrides})


def validate(cfg: DataConfig) -> None:
    """Impossible values are a ConfigError naming the key (also run by ``DataConfig.__post_init__``)."""

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"data.{key}: {why}")

    if cfg.num_classes < 1:
        raise bad("num_classes", f"must be >= 1, got {cfg.num_classes}")
    if len(cfg.class_names) != cfg.num_classes:
        raise bad("class_names", f"has {len(cfg.class_names)} names but num_classes is {cfg.num_classes}")
    if 0 <= cfg.ignore_index < cfg.num_classes:
        raise bad("ignore_index", f"{cfg.ignore_index} is a class id in [0, {cfg.num_classes}); use -1")
    if cfg.voxel_size <= 0:
        raise bad("voxel_size", f"must be > 0 metres, got {cfg.voxel_size}")
    for key in ("voxel_max", "test_voxel_max", "las_tile_size"):
        if getattr(cfg, key) < 0:
            raise bad(key, f"must be >= 0, got {getattr(cfg, key)}")
    if cfg.loop < 1 or cfg.test_batch < 1 or cfg.test_augmentations < 1 or cfg.las_test_modulus < 1:
        raise bad("loop/test_batch/test_augmentations/las_test_modulus", "must be >= 1")
    if cfg.coord_scale <= 0:
        raise bad("coord_scale", f"must be > 0, got {cfg.coord_scale}")
    unknown = [k for k in cfg.feat_keys if k not in FEAT_WIDTH]
    if unknown or not cfg.feat_keys:
        raise bad(
            "feat_keys", f"unknown or empty {unknown or cfg.feat_keys}; choose from {sorted(FEAT_WIDTH)}"
        )
    if len(cfg.scale_range) != 2 or not 0 < cfg.scale_range[0] <= cfg.scale_range[1]:
        raise bad("scale_range", f"expected [low, high] with 0 < low <= high, got {cfg.scale_range}")
    if any(len(p) != 2 or p[0] <= 0 for p in cfg.elastic_params):
        raise bad("elastic_params", f"expected [[granularity > 0, magnitude], ...], got {cfg.elastic_params}")
    for key in (
        "auto_contrast_p",
        "color_translation_p",
        "color_jitter_p",
        "rotate_p",
        "flip_p",
        "dropout_p",
    ):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise bad(key, f"is a probability, got {getattr(cfg, key)}")
    if not 0.0 <= cfg.mix_prob <= 1.0 or not 0.0 <= cfg.dropout_ratio < 1.0:
        raise bad("mix_prob/dropout_ratio", "mix_prob must be in [0, 1] and dropout_ratio in [0, 1)")
    if cfg.pipeline == "pt" and cfg.test_augmentations != 1:
        raise bad("test_augmentations", "the PT test protocol has no augmentation; set it to 1")
    if cfg.pipeline == "ptv2" and cfg.test_augmentations > 13:
        raise bad("test_augmentations", "PTv2 has 13 test augmentations; choose 1..13")
    if cfg.dataset == "las" and len(cfg.las_classes) != cfg.num_classes:
        raise bad("las_classes", f"lists {len(cfg.las_classes)} codes but num_classes is {cfg.num_classes}")
    if cfg.dataset == "scannet" and len(cfg.scannet_valid_ids) != cfg.num_classes:
        raise bad(
            "scannet_valid_ids",
            f"lists {len(cfg.scannet_valid_ids)} ids but num_classes is {cfg.num_classes}",
        )
    if set(cfg.las_classes) & set(cfg.las_ignore_classes):
        raise bad("las_ignore_classes", "shares codes with las_classes")


def field_names() -> list[str]:
    return [f.name for f in fields(DataConfig)]
