"""S3DIS in the preprocessed layout of the Point Transformer archive: ``trainval_fullarea/Area_X_<room>.npy``.

Each file is one room, an (N, 7) float array: x, y, z in metres, r, g, b in 0-255, label in 0-12 (the
Google-Drive archive of POSTECH ``point-transformer`` / PointWeb, read by ``util/s3dis.py`` and ``test.py``).
Area 5 is the test area, the other five train (``test_area`` in the official configs). The embedded synthetic
rooms of ``retrofpn.prepare`` are written in exactly this layout, so this one reader serves both.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from retrofpn.data.config import DataConfig
from retrofpn.data.scene import Scene, check_scene, compact, load_npy, map_labels
from shared.errors import DataError

ROOM_FILE = re.compile(r"^Area_(\d+)_(.+)\.npy$")


def room_area(path: Path) -> int | None:
    match = ROOM_FILE.match(path.name)
    return int(match.group(1)) if match else None


def list_rooms(cfg: DataConfig, split: str) -> list[Path]:
    """Sorted room files of ``split`` ("train": every area but ``test_area``; "test": ``test_area`` only)."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(
            f"{root}: S3DIS folder not found; run `make data-retrofpn` for the embedded rooms or set data.root to "
            "the trainval_fullarea folder of the Point Transformer archive"
        )
    rooms = sorted(p for p in root.iterdir() if room_area(p) is not None)
    if not rooms:
        raise DataError(f"{root}: no Area_X_<room>.npy files; data.root must be the trainval_fullarea folder")
    areas = sorted({room_area(p) for p in rooms})
    if cfg.test_area not in areas:
        raise DataError(
            f"{root}: no rooms of the held-out Area_{cfg.test_area} (areas found: {areas}); add them or set "
            "data.test_area"
        )
    if split == "test":
        return [p for p in rooms if room_area(p) == cfg.test_area]
    if split == "train":
        train = [p for p in rooms if room_area(p) != cfg.test_area]
        if not train:
            raise DataError(
                f"{root}: every room is in the test area {cfg.test_area}; there is nothing to train on"
            )
        return train
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def read_room(path: str | Path, cfg: DataConfig) -> Scene:
    """One ``Area_X_<room>.npy`` (N x 7 float32/float64) as a checked ``Scene``."""
    path = Path(path)
    data = load_npy(path)
    if data.ndim != 2 or data.shape[1] != 7:
        raise DataError(
            f"{path}: expected an N x 7 array (x, y, z, r, g, b, label), got shape {data.shape}; this is not a "
            "preprocessed S3DIS room"
        )
    if data.dtype.kind != "f":
        raise DataError(f"{path}: expected a float array, got dtype {data.dtype}")
    segment = map_labels(data[:, 6], cfg.num_classes, cfg.ignore_index, cfg.raw_ignore_labels, str(path))
    scene = Scene(
        name=path.stem,
        coord=(data[:, :3] * cfg.coord_scale).astype(np.float32),
        segment=segment,
        color=data[:, 3:6].astype(np.float32),
        source=str(path),
    )
    return compact(check_scene(scene))


def write_room(path: str | Path, coord: np.ndarray, color: np.ndarray, label: np.ndarray) -> None:
    """Write one room in the archive layout (float32 N x 7), atomically (temp file, then ``os.replace``)."""
    path = Path(path)
    array = np.concatenate([coord, color, label[:, None]], axis=1).astype(np.float32)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
