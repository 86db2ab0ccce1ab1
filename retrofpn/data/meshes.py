"""Real object geometry for the synthetic rooms: meshes that ship inside two pinned registry packages.

- ``pybullet==3.2.7`` (zlib licence), the x86-64 CPython 3.11 wheel (98.4 MiB; pinned by ``--platform`` so
  every machine fetches the same file, whose sha256 is pinned below): ``pybullet_data/`` tables (URDF
  compositions), the Kiva storage pod (a shelf), a tray, duck, teddy, Stanford bunny, lego brick, toys and
  100 of its 1,000 procedurally generated random objects (``random_urdfs/000-099``).
- ``metaworld==3.1.1`` (MIT), the pure-Python wheel (35.0 MiB): the part meshes of its
  ``assets/objects/meshes/`` (shelf, drawer case, safe, bin, mug, cup, thermos, laptop, window frames, door
  and door handle, ...).

``fetch_assets`` extracts only these files (``shared.fetch``: sha256 of the distribution checked, manifest
written, download cached once). ``load_assets`` reads them with open3d into ``Mesh`` objects standing
z-up on z = 0, centred in x-y, in their native units; ``rooms.py`` scales them to furniture sizes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d

from shared.errors import DataError
from shared.fetch import PinnedPackage, fetch_package

PYBULLET = PinnedPackage(
    "pybullet",
    "3.2.7",
    sha256="5d858abf7c12a21ef3ed351cf81dac1b5e486ec25c9ab59bfc84beb89034edff",
    licence="pybullet and pybullet_data are under the zlib licence (Erwin Coumans and contributors)",
    pip_args=("--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--implementation", "cp",
              "--abi", "cp311"),
)  # fmt: skip
METAWORLD = PinnedPackage(
    "metaworld",
    "3.1.1",
    sha256="99e25d9baf97f2f1a19ca89c0d2ca9c6a2b396d9a9be81729de64eedc683f0d3",
    licence="Meta-World is MIT-licensed (Farama Foundation; Yu et al. 2019), meshes included",
)
PYBULLET_PATTERNS = [
    "pybullet_data/table/table.urdf",
    "pybullet_data/table/table.obj",
    "pybullet_data/table_square/table_square.urdf",
    "pybullet_data/table_square/table.obj",
    "pybullet_data/tray/tray_textured.obj",
    "pybullet_data/kiva_shelf/meshes/pod_lowres.stl",
    "pybullet_data/duck.obj",
    "pybullet_data/teddy2_VHACD_CHs.obj",
    "pybullet_data/bunny.obj",
    "pybullet_data/lego/lego.obj",
    "pybullet_data/soccerball.obj",
    "pybullet_data/torus/torus_textured.obj",
    "pybullet_data/toys/*.obj",
    "pybullet_data/random_urdfs/0[0-9][0-9]/[0-9][0-9][0-9].obj",
]
METAWORLD_PATTERNS = ["metaworld/assets/objects/meshes/*/*.stl"]


@dataclass
class Mesh:
    """A triangle mesh standing on z = 0, centred in x-y (``vertices`` (V, 3) float64, ``triangles`` (T, 3))."""

    name: str
    vertices: np.ndarray
    triangles: np.ndarray

    @property
    def extent(self) -> np.ndarray:
        return self.vertices.max(axis=0) - self.vertices.min(axis=0)


def _normalise(name: str, vertices: np.ndarray, triangles: np.ndarray, up: str) -> Mesh:
    v = np.asarray(vertices, dtype=np.float64)
    if up == "y":  # y-up source (OBJ convention of these assets): (x, y, z) -> (x, -z, y)
        v = np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)
    low, high = v.min(axis=0), v.max(axis=0)
    v = v - np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])
    return Mesh(name, v, np.asarray(triangles, dtype=np.int64))


def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    mesh = o3d.io.read_triangle_mesh(str(path))
    if len(mesh.triangles) == 0:
        raise DataError(f"{path}: open3d read no triangles; delete the folder and run prepare again")
    return np.asarray(mesh.vertices), np.asarray(mesh.triangles)


def _box(size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    box = o3d.geometry.TriangleMesh.create_box(*size).translate(-np.asarray(size) / 2)
    return np.asarray(box.vertices), np.asarray(box.triangles)


def _rpy(rpy: np.ndarray) -> np.ndarray:
    return o3d.geometry.get_rotation_matrix_from_xyz(rpy)  # URDF fixed-axis roll-pitch-yaw = Rz Ry Rx


def read_urdf(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The visual geometry of a one-link URDF (mesh and box visuals with their origins and scales)."""
    verts, tris, n = [], [], 0
    for visual in ET.parse(path).getroot().iter("visual"):
        origin = visual.find("origin")
        xyz = np.array((origin.get("xyz", "0 0 0") if origin is not None else "0 0 0").split(), float)
        rpy = np.array((origin.get("rpy", "0 0 0") if origin is not None else "0 0 0").split(), float)
        geometry = visual.find("geometry")
        if geometry is None:
            continue
        if (mesh := geometry.find("mesh")) is not None:
            v, t = read_mesh(path.parent / mesh.get("filename"))
            v = v * np.array(mesh.get("scale", "1 1 1").split(), float)
        elif (box := geometry.find("box")) is not None:
            v, t = _box(np.array(box.get("size").split(), float))
        else:
            continue
        verts.append(v @ _rpy(rpy).T + xyz)
        tris.append(t + n)
        n += len(v)
    if not verts:
        raise DataError(f"{path}: the URDF has no mesh or box visual")
    return np.concatenate(verts), np.concatenate(tris)


# name -> (package folder, file, up axis); the roles are used by rooms.py
ASSET_FILES: dict[str, tuple[str, str, str]] = {
    "pb_table": ("pybullet", "table/table.urdf", "z"),
    "pb_table_square": ("pybullet", "table_square/table_square.urdf", "z"),
    "kiva_pod": ("pybullet", "kiva_shelf/meshes/pod_lowres.stl", "y"),
    "tray": ("pybullet", "tray/tray_textured.obj", "z"),
    "duck": ("pybullet", "duck.obj", "y"),
    "teddy": ("pybullet", "teddy2_VHACD_CHs.obj", "y"),
    "bunny": ("pybullet", "bunny.obj", "y"),
    "lego": ("pybullet", "lego/lego.obj", "y"),
    "soccerball": ("pybullet", "soccerball.obj", "z"),
    "torus": ("pybullet", "torus/torus_textured.obj", "y"),
    "shape_sorter": ("pybullet", "toys/shape_sorter.obj", "z"),
    "toy_cylinder": ("pybullet", "toys/cylinder.obj", "z"),
    "toy_prism": ("pybullet", "toys/prism.obj", "z"),
    "mw_shelf": ("metaworld", "shelf/shelf.stl", "z"),
    "mw_shelf_frame": ("metaworld", "shelfb/shelf_frame.stl", "z"),
    "mw_drawercase": ("metaworld", "drawer/drawercase.stl", "z"),
    "mw_safe": ("metaworld", "doorlock/safe.stl", "z"),
    "mw_bin": ("metaworld", "bin/bin.stl", "z"),
    "mw_block": ("metaworld", "peg_block/block_outer.stl", "z"),
    "mw_mug": ("metaworld", "coffeemachine/mug.stl", "z"),
    "mw_cup": ("metaworld", "coffeemachine/cup.stl", "z"),
    "mw_coffee_body": ("metaworld", "coffeemachine/body1.stl", "z"),
    "mw_thermos": ("metaworld", "thermos/therm_body.stl", "z"),
    "mw_laptop_base": ("metaworld", "laptop/laptop_base.stl", "z"),
    "mw_laptop_top": ("metaworld", "laptop/laptop_top.stl", "z"),
    "mw_window_frame": ("metaworld", "window/window_frame.stl", "z"),
    "mw_windowa_frame": ("metaworld", "window/windowa_frame.stl", "z"),
    "mw_windowb_frame": ("metaworld", "window/windowb_frame.stl", "z"),
    "mw_door": ("metaworld", "doorlock/door.stl", "z"),
    "mw_door_handle": ("metaworld", "doorlock/door_handle.stl", "z"),
    "mw_faucet": ("metaworld", "faucet/faucetbase.stl", "z"),
    "mw_dial": ("metaworld", "dial/dial.stl", "z"),
    "mw_stopbox": ("metaworld", "buttonbox/stopbot.stl", "y"),
    "mw_hammer": ("metaworld", "hammer/hammerhead.stl", "z"),
    "mw_puck": ("metaworld", "puck/puck.stl", "z"),
    "mw_basketball": ("metaworld", "basketball/basketballouter.stl", "z"),
    "mw_lever": ("metaworld", "lever/lever_base.stl", "z"),
}
SMALL_OBJECTS = (
    "duck", "teddy", "bunny", "lego", "soccerball", "torus", "shape_sorter", "toy_cylinder", "toy_prism",
    "mw_mug", "mw_cup", "mw_coffee_body", "mw_thermos", "mw_faucet", "mw_dial", "mw_stopbox", "mw_hammer",
    "mw_puck", "mw_basketball", "mw_lever", "mw_block", "tray",
)  # fmt: skip
N_RANDOM_OBJECTS = 100


def fetch_assets(raw_dir: str | Path, force: bool = False) -> dict[str, dict]:
    """Extract the asset files into ``raw_dir/{pybullet,metaworld}`` (idempotent); their manifests."""
    raw_dir = Path(raw_dir)
    content = "object meshes (OBJ/STL/URDF) used as real geometry in the synthetic rooms of retrofpn.prepare"
    return {
        "pybullet": fetch_package(
            PYBULLET,
            PYBULLET_PATTERNS,
            raw_dir / "pybullet",
            strip="pybullet_data/",
            content=content,
            force=force,
        ),
        "metaworld": fetch_package(
            METAWORLD,
            METAWORLD_PATTERNS,
            raw_dir / "metaworld",
            strip="metaworld/assets/objects/meshes/",
            content=content,
            force=force,
        ),
    }


def load_assets(raw_dir: str | Path) -> dict[str, Mesh]:
    """Every asset of ``ASSET_FILES`` plus the random objects ``random_000`` ... as normalised meshes."""
    raw_dir = Path(raw_dir)
    out: dict[str, Mesh] = {}
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)  # the OBJ readers warn about materials
    for name, (package, rel, up) in ASSET_FILES.items():
        path = raw_dir / package / rel
        if not path.is_file():
            raise DataError(
                f"{path}: asset missing; run `python -m retrofpn.prepare --force` to extract it again"
            )
        v, t = read_urdf(path) if path.suffix == ".urdf" else read_mesh(path)
        out[name] = _normalise(name, v, t, up)
    for i in range(N_RANDOM_OBJECTS):
        path = raw_dir / "pybullet" / "random_urdfs" / f"{i:03d}" / f"{i:03d}.obj"
        if not path.is_file():
            raise DataError(
                f"{path}: asset missing; run `python -m retrofpn.prepare --force` to extract it again"
            )
        v, t = read_mesh(path)
        out[f"random_{i:03d}"] = _normalise(f"random_{i:03d}", v, t, "z")
    return out
