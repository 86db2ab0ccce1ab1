"""ScanNet v2 scenes as released: ``<scene>_vh_clean_2.ply`` (mesh vertices, rgb) + ``.labels.ply`` (nyu40 ids).

The BPNet preprocessing used by the Retro-FPN MinkUNet code (``prepare_3d_data.py``) and Pointcept's
``preprocess_scannet.py`` read exactly these two files: vertices and colours from the first, the ``label``
vertex property from the second, nyu40 ids mapped with ``VALID_CLASS_IDS`` [1-12, 14, 16, 24, 28, 33, 34, 36,
39] -> 0..19 and every other id to the ignore label (the official 255 / 20 / -1; here ``DataConfig.ignore_index``).

Coordinates and colours come from ``open3d.t.io.read_point_cloud`` (any PLY encoding). The labels cannot:
open3d 0.20 skips the ``label`` property because its type is ``ushort`` ("unsupported datatype"), so the
``.labels.ply`` vertex element is parsed here with numpy from the PLY header (binary or ascii).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d

from retrofpn.data.config import DataConfig
from retrofpn.data.scene import Scene, check_scene, compact
from shared.errors import DataError

PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def _parse_header(
    path: Path, blob: bytes
) -> tuple[str, list[tuple[str, int, list[tuple[str, str | None]]]], int]:
    """(format, [(element, count, [(property, type or None for lists)])], body start) of a PLY file."""
    end = blob.find(b"end_header")
    if not blob.startswith(b"ply") or end < 0:
        raise DataError(f"{path}: not a PLY file (no 'ply' magic or no end_header); re-download the scene")
    body = blob.index(b"\n", end) + 1
    fmt, elements = "", []
    for line in blob[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list":
                elements[-1][2].append((words[-1], None))
            elif words[1] in PLY_TYPES:
                elements[-1][2].append((words[2], PLY_TYPES[words[1]]))
            else:
                raise DataError(f"{path}: unknown PLY property type {words[1]!r} in line {line!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise DataError(f"{path}: unsupported PLY format {fmt!r}")
    return fmt, elements, body


def read_ply_vertices(path: str | Path) -> np.ndarray:
    """The vertex element of a PLY file as a numpy structured array (one field per scalar property)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; each ScanNet scene folder needs its _vh_clean_2 PLY files")
    blob = path.read_bytes()
    fmt, elements, start = _parse_header(path, blob)
    names = [e[0] for e in elements]
    if "vertex" not in names:
        raise DataError(f"{path}: the PLY file has no vertex element")
    before = elements[: names.index("vertex")]
    _, count, props = elements[names.index("vertex")]
    if any(t is None for _, t in props) or any(t is None for e in before for _, t in e[2]):
        raise DataError(f"{path}: list properties before or inside the vertex element are not supported")
    if fmt == "ascii":
        lines = blob[start:].decode("ascii", errors="replace").splitlines()
        skip = sum(e[1] for e in before)
        rows = lines[skip : skip + count]
        if len(rows) < count:
            raise DataError(
                f"{path}: truncated: the header declares {count} vertices, the file has {len(rows)}"
            )
        table = np.array([r.split()[: len(props)] for r in rows], dtype=np.float64).reshape(count, len(props))
        out = np.empty(count, dtype=[(n, t) for n, t in props])
        for j, (name, _) in enumerate(props):
            out[name] = table[:, j]
        return out
    endian = "<" if fmt == "binary_little_endian" else ">"
    skip = sum(e[1] * np.dtype([(n, endian + t) for n, t in e[2]]).itemsize for e in before)
    dtype = np.dtype([(n, endian + t) for n, t in props])
    need = start + skip + count * dtype.itemsize
    if len(blob) < need:
        raise DataError(
            f"{path}: truncated: the header declares {count} vertices ({need} bytes) but the file has {len(blob)} "
            "bytes; re-download the scene"
        )
    return np.frombuffer(blob, dtype=dtype, count=count, offset=start + skip).copy()


def scene_files(folder: Path) -> tuple[Path, Path]:
    return folder / f"{folder.name}_vh_clean_2.ply", folder / f"{folder.name}_vh_clean_2.labels.ply"


def nyu40_to_labels(nyu40: np.ndarray, valid_ids: list[int], ignore_index: int) -> np.ndarray:
    """nyu40 ids -> 0..K-1 in ``valid_ids`` order; every other id (0 = unannotated included) -> ignore."""
    lut = np.full(max(int(nyu40.max(initial=0)), max(valid_ids)) + 1, ignore_index, dtype=np.int64)
    lut[np.asarray(valid_ids)] = np.arange(len(valid_ids))
    return lut[nyu40.astype(np.int64)]


def read_scannet_scene(folder: str | Path, cfg: DataConfig) -> Scene:
    """One ScanNet v2 scene folder (``scans/<scene>/``) as a checked ``Scene`` (labels 0..19 or ignore)."""
    folder = Path(folder)
    mesh_file, label_file = scene_files(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: scene folder not found; check data.root and data.train_dirs/test_dirs")
    for f in (mesh_file, label_file):
        if not f.is_file():
            raise DataError(
                f"{f}: file not found; the ScanNet v2 scene folder needs {mesh_file.name} and {label_file.name}"
            )
    declared = read_ply_vertices(mesh_file)  # also checks that the file is complete
    cloud = o3d.t.io.read_point_cloud(str(mesh_file))
    if "positions" not in cloud.point or cloud.point.positions.shape[0] != declared.shape[0]:
        raise DataError(
            f"{mesh_file}: open3d could not read its {declared.shape[0]} vertices; re-download the scene"
        )
    coord = cloud.point.positions.numpy().astype(np.float32)
    if "colors" not in cloud.point:
        raise DataError(f"{mesh_file}: the vertices have no red/green/blue properties")
    color = cloud.point.colors.numpy()
    color = (color * 255.0 if color.dtype.kind == "f" else color).astype(np.float32)
    labelled = read_ply_vertices(label_file)
    if "label" not in (labelled.dtype.names or ()):
        raise DataError(
            f"{label_file}: the PLY vertices have no 'label' property; pass the *_vh_clean_2.labels.ply of ScanNet v2"
        )
    if labelled.shape[0] != coord.shape[0]:
        raise DataError(
            f"{label_file}: {labelled.shape[0]} vertices but {mesh_file.name} has {coord.shape[0]}; the two files "
            "are from different scenes or versions"
        )
    normal = None
    if "normal" in cfg.feat_keys:  # Pointcept's preprocess_scannet.py: vertex normals of the mesh
        mesh = o3d.io.read_triangle_mesh(str(mesh_file))
        mesh.compute_vertex_normals()
        normal = np.asarray(mesh.vertex_normals, dtype=np.float32)
    segment = nyu40_to_labels(labelled["label"], cfg.scannet_valid_ids, cfg.ignore_index)
    scene = Scene(
        name=folder.name,
        coord=coord * np.float32(cfg.coord_scale),
        segment=segment,
        color=color,
        normal=normal,
        source=str(folder),
    )
    return compact(check_scene(scene))
