"""Pointcept scene folders: one folder per scene with ``coord.npy``, ``color.npy``, ``segment.npy`` and more.

The layout written by Pointcept's ``preprocess_s3dis.py`` (``data/s3dis/Area_5/<room>/``) and
``preprocess_scannet.py`` (``data/scannet/{train,val}/<scene>/``, labels in ``segment20.npy``, -1 unlabelled):

- ``coord.npy``  (N, 3) float32 metres
- ``color.npy``  (N, 3) uint8 rgb
- ``segment.npy`` / ``segment20.npy`` (N,) or (N, 1) int, the label file named by ``DataConfig.segment_file``
- ``normal.npy`` (N, 3) float32, optional (PTv2 on ScanNet feeds it to the model)
- ``instance.npy`` (N,) int, optional, not used for semantic segmentation
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrofpn.data.config import DataConfig
from retrofpn.data.scene import Scene, check_scene, compact, load_npy, map_labels
from shared.errors import DataError

REQUIRED = ("coord.npy", "color.npy")


def is_scene_folder(path: Path) -> bool:
    return path.is_dir() and (path / "coord.npy").is_file()


def read_scene_folder(path: str | Path, cfg: DataConfig) -> Scene:
    """A checked ``Scene`` from one Pointcept folder; every length must match ``coord.npy``."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: scene folder not found; check data.root and data.train_dirs/test_dirs")
    for name in (*REQUIRED, cfg.segment_file):
        if not (path / name).is_file():
            raise DataError(
                f"{path}: no {name} in the scene folder; a Pointcept scene needs coord.npy, color.npy and "
                f"{cfg.segment_file} (data.segment_file)"
            )
    coord = load_npy(path / "coord.npy")
    if coord.ndim != 2 or coord.shape[1] != 3 or coord.dtype.kind != "f":
        raise DataError(
            f"{path / 'coord.npy'}: expected (N, 3) floats, got shape {coord.shape} dtype {coord.dtype}"
        )
    color = load_npy(path / "color.npy")
    if color.ndim != 2 or color.shape[1] != 3:
        raise DataError(f"{path / 'color.npy'}: expected (N, 3) rgb, got shape {color.shape}")
    raw = load_npy(path / cfg.segment_file)
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 1:
        raise DataError(f"{path / cfg.segment_file}: expected (N,) labels, got shape {raw.shape}")
    n = coord.shape[0]
    for name, array in (("color.npy", color), (cfg.segment_file, raw)):
        if array.shape[0] != n:
            raise DataError(
                f"{path}: {name} has {array.shape[0]} rows but coord.npy has {n}; the files of this scene disagree, "
                "re-run the preprocessing"
            )
    normal = None
    if (path / "normal.npy").is_file():
        normal = load_npy(path / "normal.npy").astype(np.float32)
        if normal.shape != (n, 3):
            raise DataError(f"{path / 'normal.npy'}: shape {normal.shape}, expected ({n}, 3) like coord.npy")
    segment = map_labels(
        raw, cfg.num_classes, cfg.ignore_index, cfg.raw_ignore_labels, str(path / cfg.segment_file)
    )
    scene = Scene(
        name=path.name,
        coord=(coord * cfg.coord_scale).astype(np.float32),
        segment=segment,
        color=color.astype(np.float32),
        normal=normal,
        source=str(path),
    )
    return compact(check_scene(scene))
