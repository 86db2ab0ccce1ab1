"""``Scene``: one room / scan as loaded from disk, and the checks every loader applies to it.

A scene holds the original points (no voxelisation): the training pipeline samples from it and the test
protocol votes back onto every one of its points, so the metrics are over all original points (the official
``test.py`` of Point Transformer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import DataError


@dataclass
class Scene:
    """Per-point arrays of one scene.

    Attributes:
        name: scene id (e.g. ``Area_5_office_1``, ``scene0000_00``)
        coord: (N, 3) float32 coordinates in metres, as stored (not shifted)
        segment: (N,) labels in [0, K) or the ignore index (int16 when they fit, else int64)
        color: (N, 3) rgb in [0, 255] (uint8 when integral, else float32), or None when the source has none
        normal: (N, 3) float32 unit normals, or None
        extra: further (N, C) float32 channels by name (e.g. ``intensity``)
        source: the file or folder it was read from (named in error messages)
    """

    name: str
    coord: np.ndarray
    segment: np.ndarray
    color: np.ndarray | None = None
    normal: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return int(self.coord.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """Fresh copies of every per-point array, keyed like Pointcept's data dict."""
        out = {"coord": self.coord.astype(np.float32, copy=True), "segment": self.segment.astype(np.int64)}
        if self.color is not None:
            out["color"] = self.color.astype(np.float32, copy=True)
        if self.normal is not None:
            out["normal"] = self.normal.astype(np.float32, copy=True)
        for key, value in self.extra.items():
            out[key] = value.astype(np.float32, copy=True)
        return out

    def subset(self, index: np.ndarray, name: str) -> Scene:
        """The scene restricted to ``index`` (used to cut LAS files into tiles)."""
        return Scene(
            name=name,
            coord=self.coord[index],
            segment=self.segment[index],
            color=None if self.color is None else self.color[index],
            normal=None if self.normal is None else self.normal[index],
            extra={k: v[index] for k, v in self.extra.items()},
            source=self.source,
        )


def load_npy(path: Path) -> np.ndarray:
    """``np.load`` with a one-line DataError for a missing, truncated or non-.npy file (never a pickle)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the data root or re-extract the data set")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        why = " ".join(str(exc).split())[:120]
        raise DataError(
            f"{path}: truncated or not a .npy array ({why}); re-extract or re-export this file"
        ) from exc


def map_labels(
    raw: np.ndarray, num_classes: int, ignore_index: int, raw_ignore: list[int], where: str
) -> np.ndarray:
    """Integer labels in [0, K) or one of ``raw_ignore`` (-> ``ignore_index``); anything else is an error."""
    raw = np.asarray(raw)
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            row = int(np.flatnonzero(~np.isfinite(raw) | (raw != np.round(raw)))[0])
            raise DataError(f"{where}: label {raw[row]} at point {row} is not an integer class id")
        raw = raw.astype(np.int64)
    elif raw.dtype.kind not in "iu":
        raise DataError(f"{where}: labels have dtype {raw.dtype}; expected integers")
    labels = raw.astype(np.int64)
    ignored = np.isin(labels, np.asarray(raw_ignore, dtype=np.int64))
    bad = ~ignored & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: label {labels[row]} at point {row} is outside [0, {num_classes}) ({int(bad.sum())} such "
            f"points); set data.num_classes, or list the value in data.raw_ignore_labels if it means unlabelled"
        )
    labels[ignored] = ignore_index
    return labels


def check_scene(scene: Scene) -> Scene:
    """Non-empty, finite coordinates, matching lengths, colours in [0, 255]; returns the scene."""
    where = scene.source or scene.name
    n = len(scene)
    if scene.coord.ndim != 2 or scene.coord.shape[1] != 3:
        raise DataError(f"{where}: coordinates have shape {scene.coord.shape}; expected (N, 3)")
    if n == 0:
        raise DataError(f"{where}: the scene has no points; delete it or re-export it")
    finite = np.isfinite(scene.coord).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise DataError(
            f"{where}: NaN or infinite coordinate at point {row} ({int((~finite).sum())} points); "
            "remove those points or re-export the scene"
        )
    named = {"segment": scene.segment, "color": scene.color, "normal": scene.normal, **scene.extra}
    for key, value in named.items():
        if value is not None and value.shape[0] != n:
            raise DataError(
                f"{where}: {key} has {value.shape[0]} rows but there are {n} points; the files disagree"
            )
    if scene.color is not None:
        if scene.color.shape != (n, 3):
            raise DataError(f"{where}: colours have shape {scene.color.shape}; expected ({n}, 3)")
        if not np.isfinite(scene.color).all() or scene.color.min() < 0 or scene.color.max() > 255:
            raise DataError(
                f"{where}: colours must be rgb values in [0, 255]; found [{scene.color.min()}, "
                f"{scene.color.max()}]"
            )
    return scene


def compact(scene: Scene) -> Scene:
    """Integral colours as uint8 and labels as int16 when they fit (17 instead of 32 bytes a point: a cached
    S3DIS, 273M points, then takes 4.6 GB instead of 8.7); ``arrays()`` hands out float32 / int64 copies."""
    if (
        scene.color is not None
        and scene.color.dtype != np.uint8
        and np.array_equal(scene.color, np.round(scene.color))
    ):
        scene.color = scene.color.astype(np.uint8)
    seg = scene.segment
    if seg.size and -32768 <= int(seg.min()) and int(seg.max()) < 32768:
        scene.segment = seg.astype(np.int16)
    return scene
