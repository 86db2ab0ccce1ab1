"""Furniture and object builders of the synthetic rooms: palettes, area styles, tables, chairs, sofas,
bookcases, boards and table-top clutter.

Each builder adds labelled parts to a ``scanner.RoomMesh`` in its current frame (origin at the object's
footprint centre, +y facing into the room), so ``rooms.py`` places an object by opening a frame. Real meshes
of ``meshes.py`` are used where the registry packages ship them (pybullet's URDF tables and Kiva pod,
metaworld's shelf, laptop, drawer case and door handle, the small objects on the tables); the rest is
procedural boxes and cylinders at real furniture sizes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from retrofpn.data.config import S3DIS_CLASSES
from retrofpn.data.meshes import SMALL_OBJECTS, Mesh
from retrofpn.data.scanner import BOARD, CARPET, FABRIC, FLOOR_TILE, METAL, PLAIN, SCREEN, WOOD, RoomMesh

L = {name: i for i, name in enumerate(S3DIS_CLASSES)}
WOODS = ([150, 105, 65], [190, 150, 105], [120, 80, 50], [205, 180, 140], [95, 70, 50])
GREYS = ([200, 200, 198], [150, 150, 152], [90, 92, 95], [45, 45, 48], [225, 222, 215])
FABRICS = (
    [35, 35, 40],
    [60, 62, 70],
    [40, 60, 120],
    [130, 40, 40],
    [50, 100, 70],
    [140, 140, 135],
    [90, 50, 100],
)
VIVID = ([200, 40, 40], [40, 120, 200], [230, 200, 40], [40, 160, 80], [240, 240, 235], [30, 30, 30],
         [230, 120, 30], [150, 80, 160], [120, 90, 60], [200, 200, 210])  # fmt: skip


def jitter(rng: np.random.Generator, color, amount: float = 12.0) -> np.ndarray:
    return np.clip(np.asarray(color, float) + rng.normal(0, amount, 3), 5, 250)


@dataclass
class AreaStyle:
    """The building an area is in: shared palettes and proportions of its rooms."""

    wall: np.ndarray
    ceiling: np.ndarray
    floor: np.ndarray
    floor_material: int
    wood: np.ndarray
    fabrics: list[np.ndarray]
    height: tuple[float, float]
    lights: float


def area_style(rng: np.random.Generator) -> AreaStyle:
    wall = np.array([rng.uniform(195, 235), rng.uniform(190, 230), rng.uniform(180, 225)])
    floor_material = int(rng.choice([CARPET, FLOOR_TILE, WOOD]))
    floor = {CARPET: jitter(rng, [95, 95, 105], 25), FLOOR_TILE: jitter(rng, [185, 175, 160], 20),
             WOOD: jitter(rng, [160, 115, 75], 20)}[floor_material]  # fmt: skip
    low = rng.uniform(2.6, 3.0)
    return AreaStyle(
        wall=wall,
        ceiling=jitter(rng, [225, 225, 222], 8),
        floor=floor,
        floor_material=floor_material,
        wood=jitter(rng, WOODS[rng.integers(len(WOODS))], 10),
        fabrics=[jitter(rng, FABRICS[i], 8) for i in rng.choice(len(FABRICS), 3, replace=False)],
        height=(low, low + rng.uniform(0.2, 0.8)),
        lights=rng.uniform(0.25, 0.45),
    )


def add_table(m: RoomMesh, rng: np.random.Generator, w: float, d: float, h: float, style: AreaStyle,
              assets: dict[str, Mesh], top_color=None) -> np.ndarray:  # fmt: skip
    """A table of footprint w x d and height h in the current frame (centred); returns its top color."""
    top_color = jitter(rng, [style.wood, *GREYS[:3]][rng.integers(4)], 8) if top_color is None else top_color
    material = WOOD if rng.random() < 0.5 else PLAIN
    leg_color = jitter(rng, GREYS[rng.integers(len(GREYS))], 6)
    kind = rng.choice(["legs", "panel", "urdf", "round"], p=[0.45, 0.25, 0.15, 0.15])
    if kind == "urdf":
        asset = assets["pb_table" if rng.random() < 0.5 else "pb_table_square"]
        m.mesh(asset, (w, d, h), L["table"], top_color, material)
        return top_color
    t = rng.uniform(0.025, 0.05)
    if kind == "round":
        r = min(w, d) / 2
        m.cylinder(0, 0, h - t, h, r, L["table"], top_color, material, segments=20)
        m.cylinder(0, 0, 0.02, h - t, 0.05, L["table"], leg_color, METAL)
        m.cylinder(0, 0, 0, 0.02, r * 0.5, L["table"], leg_color, METAL)
        return top_color
    m.box((-w / 2, -d / 2, h - t), (w / 2, d / 2, h), L["table"], top_color, material)
    if kind == "legs":
        lw = rng.uniform(0.03, 0.06)
        for sx in (-1, 1):
            for sy in (-1, 1):
                x, y = sx * (w / 2 - lw - 0.03), sy * (d / 2 - lw - 0.03)
                m.box(
                    (x - lw / 2, y - lw / 2, 0), (x + lw / 2, y + lw / 2, h - t), L["table"], leg_color, METAL
                )
    else:  # desk with side panels and a modesty panel
        for sx in (-1, 1):
            x = sx * (w / 2 - 0.03)
            m.box(
                (x - 0.02, -d / 2 + 0.03, 0), (x + 0.02, d / 2 - 0.03, h - t), L["table"], top_color, material
            )
        m.box(
            (-w / 2 + 0.05, d / 2 - 0.06, 0.3),
            (w / 2 - 0.05, d / 2 - 0.04, h - t),
            L["table"],
            top_color,
            material,
        )
    return top_color


def add_chair(m: RoomMesh, rng: np.random.Generator, style: AreaStyle, kind: str | None = None) -> None:
    """A chair facing +y at the frame origin (seat centre)."""
    fabric = style.fabrics[rng.integers(len(style.fabrics))]
    frame = jitter(rng, GREYS[rng.integers(2, 4)] if rng.random() < 0.7 else style.wood, 6)
    kind = kind or rng.choice(["office", "legs", "stool"], p=[0.55, 0.35, 0.1])
    sw, sh = rng.uniform(0.42, 0.52), rng.uniform(0.42, 0.5)
    if kind == "office":
        for a in np.linspace(0, 2 * np.pi, 5, endpoint=False) + rng.uniform(0, 1):
            with m.frame(0, 0, 0, a):
                m.box((0, -0.02, 0.03), (0.32, 0.02, 0.07), L["chair"], frame, METAL)
        m.cylinder(0, 0, 0.07, sh - 0.06, 0.03, L["chair"], frame, METAL)
    elif kind == "legs":
        for sx in (-1, 1):
            for sy in (-1, 1):
                x, y = sx * (sw / 2 - 0.03), sy * (sw / 2 - 0.03)
                m.box((x - 0.015, y - 0.015, 0), (x + 0.015, y + 0.015, sh - 0.04), L["chair"], frame, METAL)
    else:
        for a in np.linspace(0, 2 * np.pi, 4, endpoint=False):
            x, y = 0.17 * np.cos(a), 0.17 * np.sin(a)
            m.box((x - 0.015, y - 0.015, 0), (x + 0.015, y + 0.015, sh + 0.15), L["chair"], frame, METAL)
        m.cylinder(0, 0, sh + 0.15, sh + 0.2, 0.19, L["chair"], fabric, FABRIC)
        return
    m.box((-sw / 2, -sw / 2, sh - 0.06), (sw / 2, sw / 2, sh), L["chair"], fabric, FABRIC)
    back_h = rng.uniform(0.35, 0.6)
    with m.frame(0, -sw / 2 + 0.03, sh, 0):
        m.box((-sw / 2 + 0.02, -0.04, 0.05), (sw / 2 - 0.02, 0.0, back_h), L["chair"], fabric, FABRIC)
        m.box((-0.02, -0.05, 0), (0.02, -0.02, 0.08), L["chair"], frame, METAL)
    if kind == "office" and rng.random() < 0.6:
        for sx in (-1, 1):
            x = sx * (sw / 2 + 0.02)
            m.box((x - 0.025, -0.15, sh + 0.18), (x + 0.025, 0.15, sh + 0.22), L["chair"], frame)
            m.box((x - 0.015, -0.02, sh - 0.05), (x + 0.015, 0.02, sh + 0.18), L["chair"], frame, METAL)


def add_sofa(m: RoomMesh, rng: np.random.Generator, w: float, style: AreaStyle) -> None:
    """A sofa of width w facing +y, back along y = -d/2."""
    color = jitter(rng, FABRICS[rng.integers(len(FABRICS))] if rng.random() < 0.6 else [60, 40, 30], 10)
    material = FABRIC if rng.random() < 0.7 else PLAIN
    d, seat = rng.uniform(0.8, 0.95), rng.uniform(0.4, 0.46)
    arm = rng.uniform(0.12, 0.25)
    m.box((-w / 2, -d / 2, 0.08), (w / 2, d / 2, seat - 0.12), L["sofa"], color * 0.85, material)
    seats = max(1, round((w - 2 * arm) / 0.6))
    edges = np.linspace(-w / 2 + arm, w / 2 - arm, seats + 1)
    for a, b in itertools.pairwise(edges):
        m.box((a + 0.01, -d / 2 + 0.2, seat - 0.12), (b - 0.01, d / 2, seat), L["sofa"], color, material)
    m.box(
        (-w / 2, -d / 2, seat - 0.12),
        (w / 2, -d / 2 + 0.2, rng.uniform(0.75, 0.9)),
        L["sofa"],
        color,
        material,
    )
    for sx in (-1, 1):
        x0 = -w / 2 if sx < 0 else w / 2 - arm
        m.box((x0, -d / 2, 0.08), (x0 + arm, d / 2, rng.uniform(0.55, 0.65)), L["sofa"], color, material)
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * (w / 2 - 0.05), sy * (d / 2 - 0.05)
            m.box((x - 0.02, y - 0.02, 0), (x + 0.02, y + 0.02, 0.08), L["sofa"], [40, 35, 30])


def add_bookcase(m: RoomMesh, rng: np.random.Generator, w: float, d: float, h: float, style: AreaStyle,
                 assets: dict[str, Mesh]) -> None:  # fmt: skip
    """A bookcase of footprint w x d, height h, open side facing +y."""
    color = jitter(rng, [style.wood, GREYS[0], GREYS[1], style.wall][rng.integers(4)], 8)
    material = WOOD if rng.random() < 0.4 else PLAIN
    if rng.random() < 0.25:
        asset = assets["kiva_pod" if rng.random() < 0.5 else "mw_shelf"]
        m.mesh(asset, (w, d, h), L["bookcase"], color, material)
        return
    t = 0.02
    m.box((-w / 2, -d / 2, 0), (w / 2, -d / 2 + t, h), L["bookcase"], color, material)  # back
    for sx in (-1, 1):
        x0 = -w / 2 if sx < 0 else w / 2 - t
        m.box((x0, -d / 2, 0), (x0 + t, d / 2, h), L["bookcase"], color, material)
    shelves = np.linspace(0.05, h - t, int(rng.integers(4, 7)))
    for z in shelves:
        m.box((-w / 2 + t, -d / 2, z - t), (w / 2 - t, d / 2, z), L["bookcase"], color, material)
    for z0, z1 in itertools.pairwise(shelves):  # books, part of the bookcase in S3DIS
        x = -w / 2 + t + rng.uniform(0, 0.1)
        while x < w / 2 - t - 0.05 and rng.random() < 0.93:
            bw, bh = rng.uniform(0.02, 0.06), min(z1 - z0 - 0.02, rng.uniform(0.15, 0.32))
            tint = np.asarray(VIVID[rng.integers(len(VIVID))], float)
            m.box((x, -d / 2 + t, z0), (x + bw, -d / 2 + t + rng.uniform(0.15, d - t), z0 + bh),
                  L["bookcase"], jitter(rng, tint, 20))  # fmt: skip
            x += bw + (rng.uniform(0.1, 0.4) if rng.random() < 0.08 else 0.002)


def add_board(m: RoomMesh, rng: np.random.Generator, w: float, h: float) -> None:
    """A board on the wall of the current frame (the wall frame: x along the wall, y into the room)."""
    kind = rng.choice(["white", "black", "cork"], p=[0.65, 0.2, 0.15])
    surface = {"white": jitter(rng, [238, 238, 235], 6), "black": jitter(rng, [45, 65, 55], 8),
               "cork": jitter(rng, [175, 135, 90], 10)}[kind]  # fmt: skip
    frame = jitter(rng, [185, 185, 190], 8)
    t = rng.uniform(0.015, 0.04)
    part = m.box((0.02, 0, 0.02), (w - 0.02, t, h - 0.02), L["board"], surface, BOARD)
    for a, b, z0, z1 in ((0, w, 0, 0.02), (0, w, h - 0.02, h), (0, 0.02, 0, h), (w - 0.02, w, 0, h)):
        m.box((a, 0, z0), (b, t + 0.01, z1), L["board"], frame, METAL)
    if kind == "white":  # marker strokes
        strokes = []
        for _ in range(int(rng.integers(3, 15))):
            a = np.array([rng.uniform(0.1, w - 0.1), t, rng.uniform(0.1, h - 0.1)])
            b = a + np.array([rng.uniform(-0.4, 0.4), 0, rng.uniform(-0.1, 0.1)])
            strokes.append([a, b])
        part.strokes = m.to_world(np.array(strokes).reshape(-1, 3)).reshape(-1, 2, 3)
    if rng.random() < 0.6:
        m.box((0.1, 0, -0.03), (w - 0.1, 0.06, 0.0), L["board"], frame, METAL)  # marker tray


def add_table_clutter(m: RoomMesh, rng: np.random.Generator, w: float, d: float, h: float,
                      assets: dict[str, Mesh], n: int) -> None:  # fmt: skip
    """``n`` objects on a table top of w x d at height h (current frame centred on the table)."""
    for _ in range(n):
        x, y = rng.uniform(-w / 2 + 0.1, w / 2 - 0.1), rng.uniform(-d / 2 + 0.1, d / 2 - 0.1)
        with m.frame(x, y, h, rng.uniform(0, 2 * np.pi)):
            kind = rng.choice(["mesh", "random", "papers", "laptop", "monitor", "books"],
                              p=[0.35, 0.15, 0.15, 0.12, 0.13, 0.1])  # fmt: skip
            color = jitter(rng, VIVID[rng.integers(len(VIVID))], 20)
            if kind == "mesh":
                name = SMALL_OBJECTS[rng.integers(len(SMALL_OBJECTS))]
                m.mesh(assets[name], rng.uniform(0.06, 0.22), L["clutter"], color, PLAIN)
            elif kind == "random":
                m.mesh(
                    assets[f"random_{rng.integers(100):03d}"], rng.uniform(0.05, 0.15), L["clutter"], color
                )
            elif kind == "papers":
                m.box((-0.105, -0.15, 0), (0.105, 0.15, rng.uniform(0.002, 0.03)), L["clutter"],
                      jitter(rng, [240, 240, 236], 5))  # fmt: skip
            elif kind == "laptop":
                dark = jitter(rng, [60, 60, 65], 10)
                m.mesh(assets["mw_laptop_base"], (0.34, 0.24, 0.02), L["clutter"], dark, METAL)
                with m.frame(0, 0.12, 0.02, 0):
                    tilt = rng.uniform(0.1, 0.4)
                    verts = np.array([[-0.17, 0, 0], [0.17, 0, 0], [0.17, 0.24 * np.sin(tilt), 0.24 * np.cos(tilt)],
                                      [-0.17, 0.24 * np.sin(tilt), 0.24 * np.cos(tilt)]])  # fmt: skip
                    m.add(verts, np.array([[0, 1, 2], [0, 2, 3]]), L["clutter"], [25, 30, 40], SCREEN)
            elif kind == "monitor":
                m.box((-0.1, -0.08, 0), (0.1, 0.08, 0.015), L["clutter"], [40, 40, 42])
                m.box((-0.02, -0.02, 0.015), (0.02, 0.0, 0.15), L["clutter"], [40, 40, 42])
                m.box((-0.27, 0.0, 0.1), (0.27, 0.04, 0.45), L["clutter"], [25, 25, 30], SCREEN)
            else:
                for k in range(int(rng.integers(1, 5))):
                    z = 0.03 * k
                    m.box(
                        (-0.1, -0.14, z),
                        (0.1, 0.14, z + 0.03),
                        L["clutter"],
                        jitter(rng, VIVID[rng.integers(10)], 25),
                    )
