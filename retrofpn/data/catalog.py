"""Which scenes form each split of a data set, and the one ``load_scene`` every consumer calls.

- s3dis: ``root/Area_X_<room>.npy``; test = ``test_area``, train = the other areas.
- pointcept: ``root/<dir>/<scene>/`` for each dir of ``train_dirs`` / ``test_dirs`` (empty: the ``Area_*``
  folders split by ``test_area``), optionally filtered by ``train_list`` / ``test_list``.
- scannet: ``root/<dir>/<scene>/<scene>_vh_clean_2{,.labels}.ply``, e.g. ``train_dirs=["scans"]`` with
  ``train_list="scannetv2_train.txt"`` and ``test_list="scannetv2_val.txt"``.
- las: every ``*.las`` / ``*.laz`` of ``root/<dir>``; with ``las_tile_size > 0`` each file is cut into x-y
  tiles and the split is by tile (``retrofpn.data.lidar.is_test_tile``); empty dirs then mean root itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# module imports, not `from retrofpn.data import ...`: that would run the package __init__, which imports this
# module (an import cycle by tests/test_contract.py)
import retrofpn.data.lidar as lidar
import retrofpn.data.pointcept as pointcept
import retrofpn.data.s3dis as s3dis
import retrofpn.data.scannet as scannet
from retrofpn.data.config import DataConfig
from retrofpn.data.scene import Scene
from shared.errors import DataError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class SceneRef:
    """Where one scene lives: a file or folder, and for tiled LAS files the tile name."""

    name: str
    path: str
    tile: str = ""


def _list_file(cfg: DataConfig, split: str) -> set[str] | None:
    text = cfg.train_list if split == "train" else cfg.test_list
    if not text:
        return None
    path = Path(text) if Path(text).is_absolute() else Path(cfg.root) / text
    if not path.is_file():
        raise DataError(
            f"{path}: scene list not found (data.{split}_list); give a text file with one scene per line"
        )
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _dirs(cfg: DataConfig, split: str) -> list[Path]:
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found; set data.root to the folder holding the scenes")
    names = cfg.train_dirs if split == "train" else cfg.test_dirs
    if not names and cfg.dataset == "las" and cfg.las_tile_size > 0:
        return [root]  # tiled LAS files: both splits come from the files in root, tile by tile
    if not names:
        areas = sorted(p.name for p in root.glob("Area_*") if p.is_dir())
        if not areas:
            raise DataError(
                f"{root}: no Area_* folders and data.{split}_dirs is empty; name the sub-folders holding the "
                f"{split} scenes (e.g. data.{split}_dirs=[{'train' if split == 'train' else 'val'}])"
            )
        test = f"Area_{cfg.test_area}"
        if test not in areas:
            raise DataError(
                f"{root}: no {test} folder for the held-out area (found {areas}); set data.test_area"
            )
        names = [test] if split == "test" else [a for a in areas if a != test]
    dirs = [root / n for n in names]
    for d in dirs:
        if not d.is_dir():
            raise DataError(f"{d}: folder not found (data.{split}_dirs); check the name or data.root")
    return dirs


def list_scenes(cfg: DataConfig, split: str) -> list[SceneRef]:
    """The scenes of ``split`` ("train" or "test"), sorted; an empty split is a DataError."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if cfg.dataset == "s3dis":
        return [SceneRef(p.stem, str(p)) for p in s3dis.list_rooms(cfg, split)]
    wanted = _list_file(cfg, split)
    refs: list[SceneRef] = []
    found: set[str] = set()
    for d in _dirs(cfg, split):
        if cfg.dataset == "las":
            for f in sorted([*d.glob("*.las"), *d.glob("*.laz"), *d.glob("*.LAS"), *d.glob("*.LAZ")]):
                if wanted is not None and f.stem not in wanted:
                    continue
                found.add(f.stem)
                if cfg.las_tile_size > 0:
                    refs += [
                        SceneRef(t.name, str(f), t.name)
                        for t in lidar.split_tiles(lidar.read_las(f, cfg), cfg, split)
                    ]
                else:
                    refs.append(SceneRef(f.stem, str(f)))
            continue
        for sub in sorted(p for p in d.iterdir() if p.is_dir()):
            if wanted is not None and sub.name not in wanted:
                continue
            if cfg.dataset == "pointcept" and not pointcept.is_scene_folder(sub):
                raise DataError(
                    f"{sub}: no coord.npy; every sub-folder of {d} must be a Pointcept scene folder"
                )
            found.add(sub.name)
            refs.append(SceneRef(sub.name, str(sub)))
    if not refs:
        raise DataError(
            f"{cfg.root}: the {split} split has no scenes; check data.{split}_dirs / data.{split}_list"
        )
    if wanted is not None and wanted - found:
        missing = sorted(wanted - found)[:3]
        raise DataError(f"{cfg.root}: scenes named in data.{split}_list are missing, e.g. {missing}")
    return refs


def load_scene(ref: SceneRef, cfg: DataConfig) -> Scene:
    """Read one scene with the reader of ``cfg.dataset``."""
    if cfg.dataset == "s3dis":
        return s3dis.read_room(ref.path, cfg)
    if cfg.dataset == "pointcept":
        return pointcept.read_scene_folder(ref.path, cfg)
    if cfg.dataset == "scannet":
        return scannet.read_scannet_scene(ref.path, cfg)
    scene = lidar.read_las(ref.path, cfg)
    if not ref.tile:
        return scene
    for tile in lidar.split_tiles(scene, cfg, "test") + lidar.split_tiles(scene, cfg, "train"):
        if tile.name == ref.tile:
            return tile
    raise DataError(f"{ref.path}: tile {ref.tile} not found; the file changed since the split was listed")


def load_scenes(cfg: DataConfig, split: str) -> list[Scene]:
    return [load_scene(ref, cfg) for ref in list_scenes(cfg, split)]
