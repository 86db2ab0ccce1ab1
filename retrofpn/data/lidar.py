"""Labelled LiDAR: a generic LAS/LAZ reader (ASPRS classes mapped by the config) and the embedded real scan.

Retro-FPN's code has no outdoor data set; this is a second, small check on real labelled points. The scan is
``tests/data/file_with_both_wkt_and_geotiff_vlrs.las`` from the ``laspy==2.7.0`` source archive (BSD-2-Clause):
25,408 airborne LiDAR points, LAS 1.4 point format 6 (no rgb; every point is return 1 of 1), coordinates in
US survey feet (CRS "NAD83_2011 / Nebraska (ft)"), an 18.3 m x 12.2 m x 15.6 m patch, ASPRS classes
2 ground 9,808 / 3 low vegetation 158 / 4 medium vegetation 724 / 5 high vegetation 10,956 / 6 building 3,737 /
7 low noise 25. The check maps 2-6 to labels 0-4 and noise to the ignore label, uses the intensity as the only
feature and cuts the patch into 5 x 3 tiles of about 4 m (3.66 m x 4.06 m); tile (i, j) is a test tile when
(i + 2j) % 5 == 0 (3 of the 15).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import laspy
import numpy as np

from retrofpn.data.config import DataConfig
from retrofpn.data.scene import Scene, check_scene, compact
from shared.errors import DataError
from shared.fetch import PinnedPackage

LASPY = PinnedPackage(
    "laspy",
    "2.7.0",
    sha256="f56feb5445e75d6ff12ee814aab6a35339290e75264ff277c6bf553f3025a3f5",
    licence="laspy is BSD-2-Clause (Grant Brown, Thomas Montaigu and contributors); the test scan ships in its "
    "source archive under the same licence",
    sdist=True,
)
LAS_MEMBER = "laspy-2.7.0/tests/data/file_with_both_wkt_and_geotiff_vlrs.las"
LAS_FILE = "file_with_both_wkt_and_geotiff_vlrs.las"
LIDAR_ROOT = "data/retrofpn/raw/laspy"
US_SURVEY_FOOT = 1200 / 3937  # metres
ASPRS_NAMES = {
    1: "unclassified", 2: "ground", 3: "low_vegetation", 4: "medium_vegetation", 5: "high_vegetation",
    6: "building", 7: "low_noise", 9: "water", 17: "bridge_deck", 18: "high_noise",
}  # fmt: skip


def lidar_check_config(**overrides: object) -> DataConfig:
    """The DataConfig of the embedded LiDAR check (the laspy test scan in ``data/retrofpn/raw/laspy``)."""
    base = DataConfig(
        dataset="las",
        root=LIDAR_ROOT,
        num_classes=5,
        class_names=[ASPRS_NAMES[c] for c in (2, 3, 4, 5, 6)],
        las_classes=[2, 3, 4, 5, 6],
        las_ignore_classes=[7],
        las_tile_size=4.0,
        las_test_modulus=5,
        coord_scale=US_SURVEY_FOOT,
        feat_keys=["intensity"],
        voxel_size=0.1,
        voxel_max=0,
        test_voxel_max=0,
        loop=4,
    )
    return replace(base, **overrides)


def map_asprs(codes: np.ndarray, cfg: DataConfig, where: str) -> np.ndarray:
    """ASPRS codes -> labels: ``las_classes`` to 0..K-1, ``las_ignore_classes`` to ignore, others an error."""
    lut = np.full(256, -2, dtype=np.int64)
    lut[np.asarray(cfg.las_ignore_classes, dtype=np.int64)] = cfg.ignore_index
    lut[np.asarray(cfg.las_classes, dtype=np.int64)] = np.arange(len(cfg.las_classes))
    labels = lut[codes.astype(np.int64)]
    unknown = np.unique(codes[labels == -2])
    if unknown.size:
        counts = {int(c): int((codes == c).sum()) for c in unknown}
        raise DataError(
            f"{where}: ASPRS classes {counts} (code: points) are in neither data.las_classes nor "
            "data.las_ignore_classes; add them to one of the two"
        )
    return labels


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime: int, key: tuple) -> Scene:
    return _read(Path(path), *key)


def _read(path: Path, classes, ignore_classes, feat_keys, coord_scale, num_classes, ignore_index) -> Scene:
    cfg = DataConfig(
        dataset="las",
        num_classes=num_classes,
        class_names=[str(c) for c in classes],
        ignore_index=ignore_index,
        las_classes=list(classes),
        las_ignore_classes=list(ignore_classes),
    )
    try:
        las = laspy.read(path)
    except (laspy.errors.LaspyException, OSError, ValueError, EOFError) as exc:
        why = " ".join(str(exc).split())[:160]
        raise DataError(f"{path}: not a readable LAS/LAZ file ({why}); re-export it") from exc
    if len(las.points) == 0:
        raise DataError(f"{path}: the file has no points")
    coord = np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], axis=1) * coord_scale
    segment = map_asprs(np.asarray(las.classification), cfg, str(path))
    dims = set(las.point_format.dimension_names)
    extra, color = {}, None
    for key in feat_keys:
        if key == "intensity":
            extra["intensity"] = (np.asarray(las.intensity, dtype=np.float32) / 65535.0)[:, None]
        elif key in ("return_number", "number_of_returns"):
            extra[key] = np.asarray(las[key], dtype=np.float32)[:, None]
        elif key == "color":
            if not {"red", "green", "blue"} <= dims:
                raise DataError(
                    f"{path}: point format {las.header.point_format.id} has no rgb; remove 'color' from data.feat_keys"
                )
            rgb = np.stack([np.asarray(las[c], dtype=np.float32) for c in ("red", "green", "blue")], axis=1)
            color = (
                rgb / 257.0 if rgb.max() > 255 else rgb
            )  # LAS stores 16-bit colour; some writers keep 0-255
        elif key != "coord":
            raise DataError(
                f"{path}: LAS files have no '{key}' channel; data.feat_keys may use coord, color, "
                "intensity, return_number, number_of_returns"
            )
    scene = Scene(path.stem, coord.astype(np.float32), segment, color=color, extra=extra, source=str(path))
    return compact(check_scene(scene))


def read_las(path: str | Path, cfg: DataConfig) -> Scene:
    """A LAS/LAZ file (LAZ through the ``lazrs`` backend) as one checked ``Scene``; cached per file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check data.root and data.train_dirs/test_dirs")
    key = (tuple(cfg.las_classes), tuple(cfg.las_ignore_classes), tuple(cfg.feat_keys), cfg.coord_scale,
           cfg.num_classes, cfg.ignore_index)  # fmt: skip
    return _read_cached(str(path.resolve()), path.stat().st_mtime_ns, key)


def tile_index(coord: np.ndarray, tile_size: float) -> np.ndarray:
    """(N, 2) x-y tile of every point. Each axis is cut into round(extent / tile_size) (at least 1) equal
    tiles, so no sliver of a tile is left at the far edge."""
    low, extent = coord[:, :2].min(axis=0), np.ptp(coord[:, :2], axis=0)
    count = np.maximum(1, np.round(extent / tile_size)).astype(np.int64)
    width = np.where(extent > 0, extent / count, 1.0)
    return np.minimum(np.floor((coord[:, :2] - low) / width).astype(np.int64), count - 1)


def is_test_tile(i: int, j: int, modulus: int) -> bool:
    # A Latin-square pattern: every row and every column of tiles holds out one tile in `modulus`, so the test
    # tiles spread over the whole scan instead of one corner (whose class mix could differ).
    return (i + 2 * j) % modulus == 0


def split_tiles(scene: Scene, cfg: DataConfig, split: str) -> list[Scene]:
    """The tiles of ``scene`` belonging to ``split`` (named ``<file>_x<i>_y<j>``), in (i, j) order."""
    tiles = tile_index(scene.coord, cfg.las_tile_size)
    keys, inverse = np.unique(tiles, axis=0, return_inverse=True)
    out = []
    for t, (i, j) in enumerate(keys.tolist()):
        if is_test_tile(i, j, cfg.las_test_modulus) == (split == "test"):
            out.append(scene.subset(np.flatnonzero(inverse.reshape(-1) == t), f"{scene.name}_x{i}_y{j}"))
    return out
