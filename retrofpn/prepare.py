"""Build the embedded Retro-FPN data: SYNTHETIC S3DIS-layout rooms over real registry meshes, and a real LiDAR scan.

``python -m retrofpn.prepare [--root data/retrofpn] [--force] [--quick]`` (``make data-retrofpn``):

1. ``shared.fetch`` extracts the object meshes of ``pybullet==3.2.7`` and ``metaworld==3.1.1`` into
   ``<root>/raw/{pybullet,metaworld}/`` and the LiDAR test scan of the ``laspy==2.7.0`` source archive into
   ``<root>/raw/laspy/``, each with a ``manifest.json`` (package, version, sha256 of the distribution,
   licence, every file's sha256); the distributions are downloaded once into ``data/.cache/downloads``.
2. ``retrofpn.data.rooms`` scans ``areas`` x ``rooms_per_area`` synthetic rooms (``--quick``:
   ``quick_rooms_per_area``) and writes ``<root>/synthetic_rooms/trainval_fullarea/Area_X_<room>.npy``, N x 7
   float32 (x, y, z, r, g, b, label), exactly the layout of the Point Transformer S3DIS archive; Area 5 is the
   test area. ``<root>/synthetic_rooms/manifest.json`` names it SYNTHETIC and lists every file's sha256.
3. ``<root>/synthetic_rooms/prepare_info.json``: the config, per-area class histograms and point counts, the
   LiDAR check's tiles and class counts per split, and the build time.

Deterministic given ``seed``; a second run with the same config finds every file intact and does nothing
(``--force`` rebuilds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrofpn.data import meshes, rooms
from retrofpn.data.catalog import list_scenes, load_scene
from retrofpn.data.config import S3DIS_CLASSES
from retrofpn.data.lidar import LAS_FILE, LAS_MEMBER, LASPY, lidar_check_config
from retrofpn.data.s3dis import write_room
from shared.config import config_to_dict, load_config
from shared.errors import ConfigError, run_cli
from shared.fetch import atomic_write_text, fetch_package, sha256_file
from shared.log import get_logger

GENERATOR_VERSION = 3  # bump when rooms.py / scanner.py / the LiDAR split change what prepare writes
log = get_logger("retrofpn.prepare")


@dataclass
class PrepareConfig:
    """What ``retrofpn.prepare`` builds.

    Attributes:
        root: output folder (raw assets in raw/, the rooms in synthetic_rooms/trainval_fullarea/)
        seed: seed of the room generator (every room is drawn from (seed, area, room))
        areas: number of areas Area_1 .. Area_<areas> (the test area is 5, so at least 5)
        rooms_per_area: rooms per area of the full build
        quick_rooms_per_area: rooms per area with --quick (3 still gives every area all 13 classes)
        points_min: fewest scanner rays per room (about the points of a room before voxelisation)
        points_max: most scanner rays per room
        cell_cap: most points a 4 cm cell keeps after the scans are merged (0 = keep all); bounds the PT test passes
        lidar: also fetch the laspy LiDAR test scan for the real-data check
    """

    root: str = "data/retrofpn"
    seed: int = 0
    areas: int = 6
    rooms_per_area: int = 10
    quick_rooms_per_area: int = 3
    points_min: int = 30000
    points_max: int = 55000
    cell_cap: int = 3
    lidar: bool = True


def _check(cfg: PrepareConfig) -> None:
    if cfg.areas < 5:
        raise ConfigError(f"areas: must be >= 5 so that Area_5 exists for testing, got {cfg.areas}")
    if min(cfg.rooms_per_area, cfg.quick_rooms_per_area) < 1 or not 1000 <= cfg.points_min <= cfg.points_max:
        raise ConfigError(
            "rooms_per_area and quick_rooms_per_area must be >= 1 and 1000 <= points_min <= points_max"
        )


def _up_to_date(info_path: Path, key: dict, folder: Path) -> dict | None:
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
        if info.get("key") != key:
            return None
        for name, meta in info["files"].items():
            path = folder / name
            if (
                not path.is_file()
                or path.stat().st_size != meta["bytes"]
                or sha256_file(path) != meta["sha256"]
            ):
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


def lidar_summary(raw: Path) -> dict:
    """Tiles and class counts per split of the embedded LiDAR check."""
    cfg = lidar_check_config(root=str(raw))
    out = {"file": LAS_FILE, "classes": cfg.class_names, "tile_size_m": cfg.las_tile_size}
    for split in ("train", "test"):
        tiles = [load_scene(r, cfg) for r in list_scenes(cfg, split)]
        seg = np.concatenate([t.segment for t in tiles])
        out[split] = {
            "tiles": [t.name for t in tiles],
            "points": len(seg),
            "histogram": np.bincount(seg[seg >= 0], minlength=cfg.num_classes).tolist(),
            "ignored": int((seg < 0).sum()),
        }
    return out


def prepare(cfg: PrepareConfig, force: bool = False, quick: bool = False) -> dict:
    """Fetch the assets, write the rooms (unless up to date) and return the prepare info."""
    _check(cfg)
    t0 = time.perf_counter()
    root = Path(cfg.root)
    raw = root / "raw"
    manifests = meshes.fetch_assets(raw, force=force)
    if cfg.lidar:
        manifests["laspy"] = fetch_package(
            LASPY, [LAS_MEMBER], raw / "laspy", strip="laspy-2.7.0/tests/data/", force=force,
            content="real airborne LiDAR points with ASPRS classes (the laspy test file)",
        )  # fmt: skip
    fetch_seconds = time.perf_counter() - t0
    base = root / "synthetic_rooms"
    folder = base / "trainval_fullarea"
    n_rooms = cfg.quick_rooms_per_area if quick else cfg.rooms_per_area
    key = {
        "config": config_to_dict(cfg),
        "quick": quick,
        "generator_version": GENERATOR_VERSION,
        "assets": {k: m["source"]["sha256"] for k, m in manifests.items()},
    }
    info_path = base / "prepare_info.json"
    if not force and (info := _up_to_date(info_path, key, folder)) is not None:
        log.info(
            "%s is up to date (%d rooms, same config and assets); --force rebuilds it",
            folder,
            len(info["files"]),
        )
        return info
    assets = meshes.load_assets(raw)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("Area_*.npy"):
        stale.unlink()
    files, areas = {}, {}
    t1 = time.perf_counter()
    for area in range(1, cfg.areas + 1):
        hist = np.zeros(len(S3DIS_CLASSES), dtype=np.int64)
        names, points = [], 0
        rays = (cfg.points_min, cfg.points_max)
        for name, room in rooms.area_rooms(cfg.seed, area, n_rooms, rays, assets, cfg.cell_cap):
            path = folder / f"{name}.npy"
            write_room(path, room[:, :3], room[:, 3:6], room[:, 6])
            files[path.name] = {
                "sha256": sha256_file(path),
                "bytes": path.stat().st_size,
                "points": len(room),
            }
            hist += np.bincount(room[:, 6].astype(np.int64), minlength=len(S3DIS_CLASSES))
            names.append(name)
            points += len(room)
        areas[f"Area_{area}"] = {
            "rooms": names,
            "points": points,
            "histogram": dict(zip(S3DIS_CLASSES, hist.tolist())),
        }
        log.info(
            "Area_%d: %d rooms, %d points, classes present %d/13",
            area,
            len(names),
            points,
            int((hist > 0).sum()),
        )
    build_seconds = time.perf_counter() - t1
    info = {
        "name": "SYNTHETIC S3DIS-layout rooms (retrofpn.data.rooms) over real registry meshes; not S3DIS",
        "key": key,
        "layout": "trainval_fullarea/Area_X_<room>.npy: float32 N x 7 (x, y, z metres, r, g, b 0-255, label 0-12)",
        "classes": list(S3DIS_CLASSES),
        "test_area": 5,
        "areas": areas,
        "total_points": sum(a["points"] for a in areas.values()),
        "bytes": sum(f["bytes"] for f in files.values()),
        "files": files,
        "lidar": lidar_summary(raw / "laspy") if cfg.lidar else None,
        "seconds": {
            "fetch": round(fetch_seconds, 2),
            "rooms": round(build_seconds, 2),
            "total": round(time.perf_counter() - t0, 2),
        },
    }
    manifest = {
        "name": "SYNTHETIC rooms in the S3DIS Point Transformer archive layout",
        "synthetic": True,
        "generator": "retrofpn/data/rooms.py + retrofpn/data/scanner.py",
        "generator_version": GENERATOR_VERSION,
        "seed": cfg.seed,
        "assets": {
            k: {
                "package": m["source"]["package"],
                "version": m["source"]["version"],
                "sha256": m["source"]["sha256"],
                "licence": m["licence"],
            }
            for k, m in manifests.items()
        },
        "files": {k: {"sha256": v["sha256"], "bytes": v["bytes"]} for k, v in files.items()},
        "fingerprint": hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest(),
    }
    atomic_write_text(json.dumps(manifest, indent=2) + "\n", base / "manifest.json")
    atomic_write_text(json.dumps(info, indent=2) + "\n", info_path)
    log.info(
        "wrote %d rooms (%.1f MB) to %s in %.1fs",
        len(files),
        info["bytes"] / 1e6,
        folder,
        info["seconds"]["total"],
    )
    return info


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="output folder (default data/retrofpn)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the outputs are up to date")
    parser.add_argument("--quick", action="store_true", help="fewer rooms per area (quick_rooms_per_area)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a PrepareConfig field, e.g. --set rooms_per_area=4")  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"root={args.root}"] if args.root else [])
    cfg = load_config(PrepareConfig, None, overrides)
    prepare(cfg, force=args.force, quick=args.quick)


if __name__ == "__main__":
    sys.exit(run_cli(main))
