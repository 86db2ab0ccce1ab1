"""A virtual terrestrial scanner for the synthetic rooms: triangle meshes in, S3DIS-like coloured points out.

A room is one triangle soup (``RoomMesh``) whose triangles belong to parts; a part carries its S3DIS label, a
base colour and a material. ``scan`` casts rays with open3d's ``RaycastingScene`` (Embree) from 1-3 scanner
positions, so only surfaces a scanner sees get points (furniture occludes walls, table tops hide the floor,
a blind cone under each tripod), and the density falls with distance and grazing angle as in a real scan.
The colour of a return is the part's base colour times a material texture (wood grain, fabric and carpet
noise, tile grids, marker strokes on boards), the room's lights, an incidence shading term, the exposure
of that scanner position and the room's white balance, plus sensor noise; ranges get Gaussian noise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import open3d as o3d

from retrofpn.data.meshes import Mesh

PLAIN, WOOD, FABRIC, CARPET, FLOOR_TILE, CEILING_TILE, GLASS, LIGHT, BOARD, SCREEN, METAL = range(11)

_BOX_TRIANGLES = np.array(
    [[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
     [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]], dtype=np.int64,
)  # fmt: skip


def _yaw(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass
class Part:
    """One coloured, labelled piece of geometry (a wall segment, a chair leg, a book...)."""

    label: int
    color: np.ndarray
    material: int = PLAIN
    strokes: np.ndarray | None = None  # (S, 2, 3) marker strokes of a board, world coordinates


@dataclass
class RoomMesh:
    """Triangles of one room with the part of every triangle; geometry is added in the current frame."""

    vertices: list[np.ndarray] = field(default_factory=list)
    triangles: list[np.ndarray] = field(default_factory=list)
    part_of: list[np.ndarray] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    _count: int = 0
    _frames: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=lambda: [(np.eye(3), np.zeros(3))])

    @contextlib.contextmanager
    def frame(self, x: float, y: float, z: float = 0.0, yaw: float = 0.0) -> Iterator[None]:
        """Geometry added inside is given in a local frame at (x, y, z) rotated by ``yaw`` about z."""
        rot, shift = self._frames[-1]
        self._frames.append((rot @ _yaw(yaw), rot @ np.array([x, y, z]) + shift))
        try:
            yield
        finally:
            self._frames.pop()

    def to_world(self, points: np.ndarray) -> np.ndarray:
        rot, shift = self._frames[-1]
        return points @ rot.T + shift

    def add(
        self, vertices: np.ndarray, triangles: np.ndarray, label: int, color, material: int = PLAIN
    ) -> Part:
        part = Part(label, np.asarray(color, dtype=np.float64), material)
        self.vertices.append(self.to_world(np.asarray(vertices, dtype=np.float64)))
        self.triangles.append(np.asarray(triangles, dtype=np.int64) + self._count)
        self.part_of.append(np.full(len(triangles), len(self.parts), dtype=np.int64))
        self.parts.append(part)
        self._count += len(vertices)
        return part

    def box(self, lo, hi, label: int, color, material: int = PLAIN) -> Part:
        """An axis-aligned box of the current frame from corner ``lo`` to corner ``hi``."""
        (x0, y0, z0), (x1, y1, z1) = lo, hi
        corners = np.array(
            [[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0],
             [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]]
        )  # fmt: skip
        return self.add(corners, _BOX_TRIANGLES, label, color, material)

    def cylinder(self, x: float, y: float, z0: float, z1: float, radius: float, label: int, color,
                 material: int = PLAIN, segments: int = 12) -> Part:  # fmt: skip
        a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
        ring = np.stack([x + radius * np.cos(a), y + radius * np.sin(a)], axis=1)
        verts = np.concatenate([np.c_[ring, np.full(segments, z0)], np.c_[ring, np.full(segments, z1)],
                                [[x, y, z0], [x, y, z1]]])  # fmt: skip
        i, j = np.arange(segments), (np.arange(segments) + 1) % segments
        bottom, top = 2 * segments, 2 * segments + 1
        tris = np.concatenate([
            np.stack([i, j, segments + j], 1), np.stack([i, segments + j, segments + i], 1),
            np.stack([np.full(segments, bottom), j, i], 1), np.stack([np.full(segments, top), segments + i, segments + j], 1),
        ])  # fmt: skip
        return self.add(verts, tris, label, color, material)

    def mesh(self, asset: Mesh, size, label: int, color, material: int = PLAIN, z: float = 0.0) -> Part:
        """``asset`` scaled to ``size`` (sx, sy, sz; a scalar scales all axes alike to that height), standing at
        the frame origin (+ ``z``)."""
        extent = np.maximum(asset.extent, 1e-6)
        scale = np.full(3, float(size) / extent[2]) if np.isscalar(size) else np.asarray(size) / extent
        return self.add(asset.vertices * scale + np.array([0, 0, z]), asset.triangles, label, color, material)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.concatenate(self.vertices), np.concatenate(self.triangles), np.concatenate(self.part_of)


@dataclass
class Lighting:
    """Ceiling lights (positions (L, 3), intensities (L,)) and the ambient level of a room."""

    positions: np.ndarray
    intensity: np.ndarray
    ambient: float = 0.55
    radius: float = 2.2


def fibonacci_directions(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) unit vectors spread evenly over the sphere, randomly rotated about z and jittered."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5**0.5) * i + rng.uniform(0, 2 * np.pi)
    r = np.sqrt(1 - z**2)
    d = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1) + rng.normal(0, 0.5 / np.sqrt(n), (n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _texture(material: np.ndarray, p: np.ndarray, normal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N,) multiplicative texture of each return, by material."""
    n = len(p)
    tex = 1 + 0.02 * np.sin(1.3 * p[:, 0] + 0.7) * np.sin(1.1 * p[:, 1] + 0.3 * p[:, 2])
    along = np.where(np.abs(normal[:, 0]) > np.abs(normal[:, 1]), p[:, 1], p[:, 0])
    grain = 1 + 0.07 * np.sin(2 * np.pi * along / 0.035 + 1.7 * np.sin(2 * np.pi * p[:, 2] / 0.4 + along))
    tex = np.where(material == WOOD, grain, tex)
    tex = np.where(material == FABRIC, 1 + 0.06 * rng.standard_normal(n), tex)
    carpet = 1 + 0.1 * rng.standard_normal(n) + 0.05 * np.sin(3.1 * p[:, 0]) * np.sin(2.3 * p[:, 1])
    tex = np.where(material == CARPET, carpet, tex)
    for kind, cell, line, dark in ((FLOOR_TILE, 0.5, 0.012, 0.72), (CEILING_TILE, 0.6, 0.02, 0.82)):
        fx, fy = (
            np.abs(np.remainder(p[:, 0] / cell + 0.5, 1) - 0.5),
            np.abs(np.remainder(p[:, 1] / cell + 0.5, 1) - 0.5),
        )
        on_line = np.minimum(fx, fy) * cell < line / 2
        tile = np.floor(p[:, 0] / cell) * 7.13 + np.floor(p[:, 1] / cell) * 3.71
        value = np.where(on_line, dark, 1 + 0.04 * np.sin(tile))
        tex = np.where(material == kind, value, tex)
    tex = np.where(material == GLASS, 0.7 + 0.6 * rng.random(n), tex)
    tex = np.where(material == SCREEN, 1 + 0.5 * rng.random(n) ** 4, tex)
    tex = np.where(material == METAL, 1 + 0.12 * rng.standard_normal(n), tex)
    return tex


def scan(
    room: RoomMesh,
    scanners: np.ndarray,
    n_rays: int,
    lighting: Lighting,
    rng: np.random.Generator,
    color_noise: float = 4.0,
    range_noise: float = 0.002,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns of ``n_rays`` rays split over ``scanners`` (S, 3): xyz (N, 3), rgb (N, 3) ints, label (N,)."""
    vertices, triangles, part_of = room.arrays()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(triangles.astype(np.uint32))
    )
    labels = np.array([p.label for p in room.parts], dtype=np.int64)
    colors = np.stack([p.color for p in room.parts])
    materials = np.array([p.material for p in room.parts], dtype=np.int64)
    wb = rng.uniform(0.94, 1.06, 3)  # the room's white balance
    xyz, rgb, lab = [], [], []
    for origin in scanners:
        d = fibonacci_directions(n_rays // len(scanners), rng)
        d = d[d[:, 2] > -0.97]  # the tripod hides a small cone under the scanner
        rays = np.concatenate([np.broadcast_to(origin, d.shape), d], axis=1).astype(np.float32)
        hit = scene.cast_rays(o3d.core.Tensor(rays))
        t = hit["t_hit"].numpy()
        ok = np.isfinite(t)
        prim = hit["primitive_ids"].numpy()[ok].astype(np.int64)
        normal = hit["primitive_normals"].numpy()[ok]
        d, t = d[ok], t[ok].astype(np.float64)
        part = part_of[prim]
        mat = materials[part]
        keep = (mat != GLASS) | (rng.random(len(part)) < 0.35)  # most rays pass through glass into the void
        part, mat, d, t, normal = part[keep], mat[keep], d[keep], t[keep], normal[keep]
        noisy = (
            t
            + rng.normal(0, range_noise + 0.001 * t)
            + np.where(rng.random(len(t)) < 0.003, rng.normal(0, 0.03, len(t)), 0)
        )
        p = origin + d * noisy[:, None]
        tex = _texture(mat, p, normal, rng)
        shade = 0.8 + 0.2 * np.abs((normal * d).sum(axis=1))
        dist2 = ((p[:, None, :] - lighting.positions[None]) ** 2).sum(-1)
        light = lighting.ambient + (lighting.intensity / (1 + dist2 / lighting.radius**2)).sum(axis=1)
        exposure = rng.uniform(0.9, 1.1)  # each scan position is exposed differently, as in real merged scans
        c = colors[part] * (tex * shade * light * exposure)[:, None] * wb
        c = np.where((mat == LIGHT)[:, None], 246 + 6 * rng.random((len(p), 1)), c)
        for j in np.unique(part[mat == BOARD]):
            strokes = room.parts[j].strokes
            if strokes is None:
                continue
            on = np.flatnonzero(part == j)
            near = _distance_to_segments(p[on], strokes) < 0.008
            c[on[near]] = np.array([30.0, 40.0, 120.0]) * rng.uniform(0.8, 1.2)
        c = c + rng.normal(0, color_noise, c.shape)
        xyz.append(p)
        rgb.append(np.clip(np.rint(c), 0, 255))
        lab.append(labels[part])
    return np.concatenate(xyz), np.concatenate(rgb), np.concatenate(lab)


def thin(xyz: np.ndarray, rng: np.random.Generator, cell: float, cap: int) -> np.ndarray:
    """Indices keeping at most ``cap`` random points per ``cell``-sized cube (registered multi-scan clouds are
    thinned like this; near a scanner the raw density is far above what any voxel backbone uses)."""
    # cells counted from the cloud's minimum, the grid the PT test voxelises on (its coordinates are min-shifted)
    grid = np.floor((xyz - xyz.min(axis=0)) / cell).astype(np.int64)
    dims = grid.max(axis=0) + 1
    key = (grid[:, 0] * dims[1] + grid[:, 1]) * dims[2] + grid[:, 2]
    order = rng.permutation(len(xyz))
    order = order[np.argsort(key[order], kind="stable")]
    sorted_key = key[order]
    first = np.searchsorted(sorted_key, sorted_key, side="left")
    rank = np.arange(len(order)) - first
    return np.sort(order[rank < cap])


def _distance_to_segments(p: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """(N,) distance of each point to the nearest of the segments (S, 2, 3)."""
    a, b = seg[:, 0], seg[:, 1]
    ab = b - a
    t = np.clip(((p[:, None] - a[None]) * ab[None]).sum(-1) / np.maximum((ab**2).sum(-1), 1e-12), 0, 1)
    closest = a[None] + t[..., None] * ab[None]
    return np.sqrt(((p[:, None] - closest) ** 2).sum(-1)).min(axis=1)
