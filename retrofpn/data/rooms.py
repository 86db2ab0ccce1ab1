"""SYNTHETIC indoor rooms with the 13 S3DIS classes, written as ``Area_X_<room>.npy`` (N x 7) like the real archive.

No indoor scan ships in a registry package, so ``retrofpn.prepare`` builds six areas of rooms (Area 5 held
out, as in the official protocol) and writes them in the layout of the Point Transformer S3DIS archive, read
by the same ``retrofpn.data.s3dis`` reader as the real data. Each room is a triangle mesh scanned by the
virtual scanner of ``scanner.py``:

- shell: floor, ceiling (tile grid, light panels), four walls cut around doors and windows; door leaves
  (closed or ajar) with frames and a real door-handle mesh; windows with frames (some the metaworld frame
  meshes), glass that most rays pass through, and blinds; columns at corners or along walls and ceiling
  beams, both in the wall colour;
- furniture: tables (procedural, or pybullet's URDF tables), chairs (office, four-legged, stools) pushed
  partly under the tables, sofas, bookcases (procedural with books, or the pybullet Kiva pod / metaworld shelf
  meshes), whiteboards / blackboards / corkboards with marker strokes;
- clutter: real meshes on the tables (duck, teddy, bunny, lego, mugs, thermos, laptops, toys, pybullet's
  random objects), paper stacks nearly flush with the table tops, monitors, desk-like cabinets and drawer
  pedestals in table colours, bins, boxes, radiators, posters (flat on walls like boards), pipes.

Hard cases on purpose: boards, posters, bookcase backs, doors, columns and beams share wall-like colours;
cabinets look like tables; chairs hide under tables; the far side of every object is unseen. Area styles
(palettes, floors, heights) differ, so the held-out area is a mild domain shift. Everything is drawn from a
``numpy.random.Generator`` seeded by (seed, area, room): the same seed writes the same files.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from retrofpn.data.furniture import (
    GREYS,
    VIVID,
    AreaStyle,
    L,
    add_board,
    add_bookcase,
    add_chair,
    add_sofa,
    add_table,
    add_table_clutter,
    area_style,
    jitter,
)
from retrofpn.data.meshes import Mesh
from retrofpn.data.scanner import (
    CEILING_TILE,
    FABRIC,
    GLASS,
    LIGHT,
    METAL,
    PLAIN,
    WOOD,
    Lighting,
    RoomMesh,
    scan,
    thin,
)

# Room kinds in the order they are given to an area (the first three give every area all 13 classes).
KIND_ORDER = ("conferenceRoom", "office", "lounge", "hallway", "office", "storage", "office", "pantry",
              "office", "copyRoom", "office", "hallway")  # fmt: skip


class Floorplan:
    """Occupied x-y rectangles of a room (furniture footprints), for rejection sampling of placements."""

    def __init__(self, width: float, depth: float):
        self.width, self.depth = width, depth
        self.rects: list[tuple[float, float, float, float]] = []

    def free(self, x0: float, y0: float, x1: float, y1: float, margin: float = 0.05) -> bool:
        if x0 < 0 or y0 < 0 or x1 > self.width or y1 > self.depth:
            return False
        return all(x1 + margin <= a or x0 - margin >= c or y1 + margin <= b or y0 - margin >= d
                   for a, b, c, d in self.rects)  # fmt: skip

    def take(self, x0: float, y0: float, x1: float, y1: float) -> None:
        self.rects.append((x0, y0, x1, y1))


def _footprint(x: float, y: float, w: float, d: float, yaw: float) -> tuple[float, float, float, float]:
    c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
    hw, hd = (w * c + d * s) / 2, (w * s + d * c) / 2
    return x - hw, y - hd, x + hw, y + hd


# --------------------------------------------------------------------------------------------------- shell


@dataclass
class Opening:
    wall: int  # 0 south (y=0), 1 east (x=W), 2 north (y=D), 3 west (x=0)
    s0: float
    s1: float
    z0: float
    z1: float
    kind: str  # door / window


def wall_frame(wall: int, width: float, depth: float) -> tuple[float, float, float, float]:
    """(x, y, yaw, length): a frame whose +x runs along the wall and +y points into the room."""
    return [
        (0, 0, 0, width),
        (width, 0, np.pi / 2, depth),
        (width, depth, np.pi, width),
        (0, depth, -np.pi / 2, depth),
    ][wall]


def build_wall(m: RoomMesh, wall: int, width: float, depth: float, height: float, thick: float,
               openings: list[Opening], color) -> None:  # fmt: skip
    """The wall minus its openings, as boxes behind the room side (y in [-thick, 0] of the wall frame)."""
    x, y, yaw, length = wall_frame(wall, width, depth)
    ops = [o for o in openings if o.wall == wall]
    cuts = sorted({0.0, length, *[o.s0 for o in ops], *[o.s1 for o in ops]})
    with m.frame(x, y, 0, yaw):
        for a, b in itertools.pairwise(cuts):
            gaps = sorted((o.z0, o.z1) for o in ops if o.s0 <= a and o.s1 >= b)
            z = 0.0
            a0, b1 = (a - thick if a == 0 else a), (b + thick if b == length else b)  # close the corners
            for g0, g1 in [*gaps, (height, height)]:
                if g0 > z + 1e-6:
                    m.box((a0, -thick, z), (b1, 0, g0), L["wall"], _vary(color))
                z = max(z, g1)


def _vary(color, amount: float = 0.03) -> np.ndarray:
    return np.asarray(color) * (1 + amount * np.sin(np.sum(color)))


def add_door(m: RoomMesh, rng: np.random.Generator, o: Opening, width: float, depth: float, thick: float,
             style: AreaStyle, assets: dict[str, Mesh]) -> None:  # fmt: skip
    x, y, yaw, _ = wall_frame(o.wall, width, depth)
    color = rng.choice([0, 1, 2])
    leaf_color = [style.wood, jitter(rng, GREYS[rng.integers(len(GREYS))]), style.wall * 0.97][color]
    material = WOOD if color == 0 else PLAIN
    w, h = o.s1 - o.s0, o.z1
    with m.frame(x, y, 0, yaw):
        trim = jitter(rng, [235, 235, 230], 8) if rng.random() < 0.6 else leaf_color
        for a, b, z0, z1 in (
            (o.s0 - 0.06, o.s0, 0, h),
            (o.s1, o.s1 + 0.06, 0, h),
            (o.s0 - 0.06, o.s1 + 0.06, h, h + 0.06),
        ):
            m.box((a, 0, z0), (b, 0.02, z1), L["door"], trim)
        angle = 0.0 if rng.random() < 0.6 else rng.uniform(0.3, 1.6)  # closed, or ajar into the room
        with m.frame(o.s0, -thick / 2, 0, angle):
            m.box((0, -0.02, 0.005), (w, 0.02, h - 0.005), L["door"], leaf_color, material)
            with m.frame(w - 0.1, 0.02, 0.95):
                m.mesh(
                    assets["mw_door_handle"],
                    (0.14, 0.05, 0.12),
                    L["door"],
                    jitter(rng, [170, 170, 170]),
                    METAL,
                )


def add_window(m: RoomMesh, rng: np.random.Generator, o: Opening, width: float, depth: float, thick: float,
               style: AreaStyle, assets: dict[str, Mesh]) -> None:  # fmt: skip
    x, y, yaw, _ = wall_frame(o.wall, width, depth)
    frame_color = jitter(rng, [230, 230, 228] if rng.random() < 0.6 else [70, 70, 75], 8)
    glass = jitter(rng, [190, 205, 215], 15)
    w, h = o.s1 - o.s0, o.z1 - o.z0
    with m.frame(x, y, 0, yaw):
        mid = -thick / 2
        if rng.random() < 0.5:
            asset = assets[("mw_window_frame", "mw_windowa_frame", "mw_windowb_frame")[rng.integers(3)]]
            with m.frame((o.s0 + o.s1) / 2, mid, o.z0):
                m.mesh(asset, (w, 0.06, h), L["window"], frame_color, METAL)
        else:
            bar = 0.05
            for a, b, z0, z1 in ((o.s0, o.s0 + bar, o.z0, o.z1), (o.s1 - bar, o.s1, o.z0, o.z1),
                                 (o.s0, o.s1, o.z0, o.z0 + bar), (o.s0, o.s1, o.z1 - bar, o.z1)):  # fmt: skip
                m.box((a, mid - 0.03, z0), (b, mid + 0.03, z1), L["window"], frame_color, METAL)
            if w > 1.2:
                c = (o.s0 + o.s1) / 2
                m.box(
                    (c - bar / 2, mid - 0.03, o.z0),
                    (c + bar / 2, mid + 0.03, o.z1),
                    L["window"],
                    frame_color,
                    METAL,
                )
        m.box((o.s0, mid - 0.005, o.z0), (o.s1, mid + 0.005, o.z1), L["window"], glass, GLASS)
        if rng.random() < 0.3:  # blinds, part of the window in S3DIS
            slat = jitter(rng, [215, 210, 200], 10)
            down = o.z1 - rng.uniform(0.3, 1.0) * h
            for z in np.arange(o.z1 - 0.04, down, -0.035):
                m.box((o.s0 + 0.02, 0.01, z), (o.s1 - 0.02, 0.035, z + 0.006), L["window"], slat)


def plan_openings(rng: np.random.Generator, kind: str, width: float, depth: float) -> list[Opening]:
    lengths = [width, depth, width, depth]
    ops: list[Opening] = []

    def fits(wall: int, s0: float, s1: float) -> bool:
        return s0 > 0.35 and s1 < lengths[wall] - 0.35 and all(
            o.wall != wall or s1 + 0.3 < o.s0 or s0 - 0.3 > o.s1 for o in ops)  # fmt: skip

    n_doors = int(rng.integers(2, 5)) if kind == "hallway" else int(rng.integers(1, 3))
    for _ in range(40):
        if sum(o.kind == "door" for o in ops) >= n_doors:
            break
        wall = int(rng.integers(4))
        w = rng.uniform(0.85, 1.0) if rng.random() < 0.85 else rng.uniform(1.5, 1.9)  # single or double door
        if lengths[wall] - w < 0.8:
            continue
        s0 = rng.uniform(0, lengths[wall] - w)
        if fits(wall, s0, s0 + w):
            ops.append(Opening(wall, s0, s0 + w, 0.0, rng.uniform(2.0, 2.2), "door"))
    if kind not in ("storage", "hallway") or rng.random() < 0.3:
        outer = int(rng.integers(4))
        n_win = int(rng.integers(1, 4))
        for _ in range(20):
            if sum(o.kind == "window" for o in ops) >= n_win:
                break
            w = rng.uniform(0.8, 2.4)
            if lengths[outer] - w < 0.8:
                continue
            s0 = rng.uniform(0, lengths[outer] - w)
            if fits(outer, s0, s0 + w):
                z0 = rng.uniform(0.75, 1.0)
                ops.append(Opening(outer, s0, s0 + w, z0, min(z0 + rng.uniform(1.0, 1.5), 2.35), "window"))
    return ops


def add_shell(m: RoomMesh, rng: np.random.Generator, kind: str, width: float, depth: float, height: float,
              style: AreaStyle, assets: dict[str, Mesh], force_beams: bool) -> tuple[list[Opening], Lighting, Floorplan]:  # fmt: skip
    thick = rng.uniform(0.1, 0.25)
    wall = np.clip(style.wall + rng.normal(0, 6, 3), 0, 255)
    m.box(
        (-thick, -thick, -0.05),
        (width + thick, depth + thick, 0),
        L["floor"],
        style.floor,
        style.floor_material,
    )
    m.box(
        (-thick, -thick, height),
        (width + thick, depth + thick, height + 0.05),
        L["ceiling"],
        style.ceiling,
        CEILING_TILE,
    )
    ops = plan_openings(rng, kind, width, depth)
    for w in range(4):
        build_wall(m, w, width, depth, height, thick, ops, wall)
    for o in ops:
        (add_door if o.kind == "door" else add_window)(m, rng, o, width, depth, thick, style, assets)
    plan = Floorplan(width, depth)
    for o in ops:  # keep door swings and the space in front of doors free
        if o.kind == "door":
            x, y, yaw, _ = wall_frame(o.wall, width, depth)
            c, s = np.cos(yaw), np.sin(yaw)
            pts = [(x + c * a - s * b, y + s * a + c * b) for a in (o.s0, o.s1) for b in (0, 1.0)]
            xs, ys = zip(*pts)
            plan.take(min(xs), min(ys), max(xs), max(ys))
    # columns: in corners or along walls, floor to ceiling, wall-coloured
    n_columns = int(rng.integers(1, 3)) if (kind == "conferenceRoom" or rng.random() < 0.35) else 0
    for _ in range(n_columns):
        cw, cd = rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.6)
        cx = (
            rng.choice([0.0, width - cw])
            if rng.random() < 0.5
            else rng.uniform(0.5, max(0.6, width - cw - 0.5))
        )
        cy = rng.choice([0.0, depth - cd])
        if plan.free(cx, cy, cx + cw, cy + cd, margin=0.0):
            m.box((cx, cy, 0), (cx + cw, cy + cd, height), L["column"], wall * rng.uniform(0.95, 1.02))
            plan.take(cx, cy, cx + cw, cy + cd)
    # beams across the ceiling
    if force_beams or rng.random() < 0.3:
        along_x = width < depth
        span = depth if along_x else width
        bw, bd = rng.uniform(0.25, 0.5), rng.uniform(0.25, 0.55)
        for c in np.linspace(0, span, int(rng.integers(1, 4)) + 2)[1:-1] + rng.uniform(-0.3, 0.3):
            lo, hi = (
                ((0, c - bw / 2), (width, c + bw / 2)) if along_x else ((c - bw / 2, 0), (c + bw / 2, depth))
            )
            m.box(
                (lo[0], lo[1], height - bd),
                (hi[0], hi[1], height),
                L["beam"],
                style.ceiling * rng.uniform(0.93, 1.0),
            )
    # light panels flush with the ceiling (ceiling class, as in S3DIS)
    nx, ny = max(1, int(width // 2.2)), max(1, int(depth // 2.2))
    pos = []
    for i in range(nx):
        for j in range(ny):
            cx, cy = (i + 0.5) * width / nx, (j + 0.5) * depth / ny
            m.box(
                (cx - 0.3, cy - 0.3, height - 0.02),
                (cx + 0.3, cy + 0.3, height),
                L["ceiling"],
                [250, 250, 245],
                LIGHT,
            )
            pos.append((cx, cy, height - 0.1))
    lighting = Lighting(np.array(pos), np.full(len(pos), style.lights * rng.uniform(0.8, 1.2)))
    return ops, lighting, plan


# ----------------------------------------------------------------------------------------------- furniture


def place(plan: Floorplan, rng: np.random.Generator, w: float, d: float, *, wall: bool, yaw: float | None = None,
          tries: int = 60, margin: float = 0.08) -> tuple[float, float, float] | None:  # fmt: skip
    """A free position (x, y, yaw) for a w x d footprint: against a wall (facing the room) or anywhere."""
    for _ in range(tries):
        if wall:
            side = int(rng.integers(4))
            a = [0.0, np.pi / 2, np.pi, -np.pi / 2][side]  # furniture +y faces into the room
            length = plan.width if side % 2 == 0 else plan.depth
            s = rng.uniform(w / 2, max(w / 2, length - w / 2))
            off = d / 2 + 0.01
            x, y = [
                (s, off),
                (plan.width - off, s),
                (plan.width - s, plan.depth - off),
                (off, plan.depth - s),
            ][side]
            a = a if yaw is None else yaw
        else:
            x, y = rng.uniform(0, plan.width), rng.uniform(0, plan.depth)
            a = rng.choice([0.0, np.pi / 2, np.pi, -np.pi / 2]) + rng.normal(0, 0.05) if yaw is None else yaw
        rect = _footprint(x, y, w, d, a)
        if plan.free(*rect, margin=margin):
            plan.take(*rect)
            return x, y, a
    return None


def chairs_around(m: RoomMesh, plan: Floorplan, rng: np.random.Generator, x: float, y: float, yaw: float,
                  w: float, d: float, style: AreaStyle, per_side: int, sides: tuple[int, ...]) -> None:  # fmt: skip
    """Chairs along the long sides (and ends) of a table, facing it, pushed partly under the top."""
    kind = rng.choice(["office", "legs"])
    for side in sides:
        count = per_side if side in (0, 1) else 1
        for k in range(count):
            s = (k + 0.5) / count - 0.5
            local = {
                0: (s * w, -d / 2 - 0.05),
                1: (s * w, d / 2 + 0.05),
                2: (-w / 2 - 0.05, 0),
                3: (w / 2 + 0.05, 0),
            }[side]
            face = {0: 0.0, 1: np.pi, 2: -np.pi / 2, 3: np.pi / 2}[side]
            pull = rng.uniform(-0.05, 0.3)  # how far the chair is pulled out from under the table
            lx, ly = local
            dx, dy = -np.sin(face) * -pull, np.cos(face) * -pull
            c, s_ = np.cos(yaw), np.sin(yaw)
            cx, cy = x + c * (lx + dx) - s_ * (ly + dy), y + s_ * (lx + dx) + c * (ly + dy)
            if 0.3 < cx < plan.width - 0.3 and 0.3 < cy < plan.depth - 0.3 and rng.random() < 0.9:
                with m.frame(cx, cy, 0, yaw + face + rng.normal(0, 0.25)):
                    add_chair(m, rng, style, kind)


def furnish(m: RoomMesh, rng: np.random.Generator, kind: str, plan: Floorplan, height: float, style: AreaStyle,
            assets: dict[str, Mesh], ops: list) -> None:  # fmt: skip
    """Fill a room of ``kind``; guarantees: conference rooms have a board, offices a bookcase, lounges a sofa."""
    W, D = plan.width, plan.depth
    clutter_n = {"storage": 10, "copyRoom": 6, "pantry": 6}.get(kind, 3)

    def table_with_chairs(w, d, h, wall, per_side, sides):
        spot = place(plan, rng, w, d + 0.5, wall=wall)
        if spot is None:
            return
        x, y, a = spot
        with m.frame(x, y, 0, a):
            add_table(m, rng, w, d, h, style, assets)
            add_table_clutter(m, rng, w, d, h, assets, int(rng.integers(1, 7)))
        chairs_around(m, plan, rng, x, y, a, w, d, style, per_side, sides)

    if kind == "conferenceRoom":
        w, d = min(W - 1.6, rng.uniform(2.2, 4.0)), rng.uniform(1.0, 1.4)
        table_with_chairs(
            max(w, 1.2), d, rng.uniform(0.72, 0.76), False, int(rng.integers(2, 5)), (0, 1, 2, 3)
        )
        add_wall_items(
            m, plan, rng, height, ops, boards=int(rng.integers(1, 3)), posters=int(rng.integers(0, 3))
        )
    elif kind == "office":
        for _ in range(int(rng.integers(2, 5))):
            table_with_chairs(
                rng.uniform(1.2, 1.8), rng.uniform(0.6, 0.8), rng.uniform(0.7, 0.78), True, 1, (1,)
            )
        for _ in range(int(rng.integers(1, 4))):
            add_floor_item(m, plan, rng, style, assets, "bookcase", height)
        for _ in range(int(rng.integers(0, 3))):  # spare chairs
            spot = place(plan, rng, 0.55, 0.55, wall=rng.random() < 0.5)
            if spot:
                with m.frame(*spot[:2], 0, spot[2] + rng.normal(0, 0.4)):
                    add_chair(m, rng, style)
        if rng.random() < 0.3:
            add_floor_item(m, plan, rng, style, assets, "sofa", height)
        add_wall_items(
            m, plan, rng, height, ops, boards=int(rng.random() < 0.5), posters=int(rng.integers(0, 3))
        )
    elif kind == "lounge":
        for _ in range(int(rng.integers(1, 4))):
            add_floor_item(m, plan, rng, style, assets, "sofa", height)
        for _ in range(int(rng.integers(1, 3))):  # coffee tables: low tables
            spot = place(plan, rng, 1.0, 0.6, wall=False)
            if spot:
                with m.frame(*spot[:2], 0, spot[2]):
                    add_table(
                        m,
                        rng,
                        rng.uniform(0.6, 1.2),
                        rng.uniform(0.45, 0.7),
                        rng.uniform(0.38, 0.5),
                        style,
                        assets,
                    )
        table_with_chairs(0.9, 0.9, 0.74, False, 1, (0, 1, 2, 3))
        if rng.random() < 0.6:
            add_floor_item(m, plan, rng, style, assets, "bookcase", height)
        add_wall_items(
            m, plan, rng, height, ops, boards=int(rng.random() < 0.3), posters=int(rng.integers(1, 4))
        )
    elif kind == "hallway":
        add_wall_items(
            m, plan, rng, height, ops, boards=int(rng.random() < 0.4), posters=int(rng.integers(1, 4))
        )
        for _ in range(int(rng.integers(0, 3))):
            spot = place(plan, rng, 0.5, 0.5, wall=True)
            if spot:
                with m.frame(*spot[:2], 0, spot[2]):
                    add_chair(m, rng, style, "legs")
    elif kind == "storage":
        for _ in range(int(rng.integers(2, 5))):
            add_floor_item(m, plan, rng, style, assets, "bookcase", height)
    else:  # pantry / copyRoom: counters, a small table, machines
        table_with_chairs(rng.uniform(0.8, 1.4), rng.uniform(0.6, 0.9), 0.74, False, 1, (0, 1))
        for _ in range(int(rng.integers(1, 3))):
            add_floor_item(m, plan, rng, style, assets, "cabinet", height)
        add_wall_items(
            m, plan, rng, height, ops, boards=int(rng.random() < 0.3), posters=int(rng.integers(0, 3))
        )
    for _ in range(clutter_n + int(rng.integers(0, 4))):
        add_floor_item(m, plan, rng, style, assets, "clutter", height)
    if rng.random() < 0.5:  # a pipe run under the ceiling
        z = height - rng.uniform(0.15, 0.4)
        if rng.random() < 0.5:
            y0 = rng.uniform(0.2, D - 0.2)
            m.box((0, y0, z), (W, y0 + 0.08, z + 0.08), L["clutter"], jitter(rng, [200, 200, 200], 15), METAL)
        else:
            x0 = rng.uniform(0.2, W - 0.2)
            m.box((x0, 0, z), (x0 + 0.08, D, z + 0.08), L["clutter"], jitter(rng, [200, 200, 200], 15), METAL)


def add_floor_item(m: RoomMesh, plan: Floorplan, rng: np.random.Generator, style: AreaStyle,
                   assets: dict[str, Mesh], what: str, height: float) -> None:  # fmt: skip
    if what == "bookcase":
        w, d, h = rng.uniform(0.7, 1.6), rng.uniform(0.3, 0.45), rng.uniform(1.0, min(2.3, height - 0.2))
        spot = place(plan, rng, w, d, wall=True)
        if spot:
            with m.frame(spot[0], spot[1], 0, spot[2]):
                add_bookcase(m, rng, w, d, h, style, assets)
    elif what == "sofa":
        w = rng.uniform(0.9, 2.4)
        spot = place(plan, rng, w, 0.95, wall=rng.random() < 0.7)
        if spot:
            with m.frame(spot[0], spot[1], 0, spot[2]):
                add_sofa(m, rng, w, style)
    elif what == "cabinet":  # desk-like clutter: counters, cabinets and drawer pedestals in table colours
        w, d, h = rng.uniform(0.8, 2.0), rng.uniform(0.45, 0.65), rng.uniform(0.72, 0.95)
        spot = place(plan, rng, w, d, wall=True)
        if spot:
            with m.frame(spot[0], spot[1], 0, spot[2]):
                top = jitter(rng, [style.wood, *GREYS[:2]][rng.integers(3)], 8)
                m.box((-w / 2, -d / 2, 0.05), (w / 2, d / 2, h - 0.03), L["clutter"], top * 0.95, WOOD)
                m.box((-w / 2, -d / 2, h - 0.03), (w / 2, d / 2 + 0.02, h), L["clutter"], top, WOOD)
                add_table_clutter(m, rng, w, d, h, assets, int(rng.integers(0, 4)))
    else:
        kind = rng.choice(["box", "bin", "pedestal", "random", "teddy", "radiator", "printer"],
                          p=[0.25, 0.15, 0.15, 0.15, 0.08, 0.12, 0.1])  # fmt: skip
        if kind == "radiator":
            w = rng.uniform(0.8, 1.6)
            spot = place(plan, rng, w, 0.12, wall=True)
            if spot:
                with m.frame(spot[0], spot[1], 0, spot[2]):
                    for x in np.arange(-w / 2, w / 2, 0.06):
                        m.box((x, -0.05, 0.15), (x + 0.04, 0.05, 0.75), L["clutter"], style.wall * 0.98)
            return
        size = {"box": (0.3, 0.6), "bin": (0.25, 0.4), "pedestal": (0.4, 0.5), "random": (0.25, 0.7),
                "teddy": (0.3, 0.6), "printer": (0.5, 0.7)}[kind]  # fmt: skip
        s = rng.uniform(*size)
        spot = place(plan, rng, s, s, wall=rng.random() < 0.6, margin=0.02)
        if not spot:
            return
        with m.frame(spot[0], spot[1], 0, spot[2]):
            if kind == "box":
                h = rng.uniform(0.2, 0.6)
                m.box((-s / 2, -s / 2, 0), (s / 2, s / 2, h), L["clutter"], jitter(rng, [170, 130, 85], 15))
                if rng.random() < 0.4:
                    m.box(
                        (-s / 3, -s / 3, h),
                        (s / 3, s / 3, h + rng.uniform(0.1, 0.3)),
                        L["clutter"],
                        jitter(rng, [160, 125, 80], 15),
                    )
            elif kind == "bin":
                m.mesh(
                    assets["mw_bin"],
                    (s, s, rng.uniform(0.3, 0.45)),
                    L["clutter"],
                    jitter(rng, VIVID[rng.integers(10)], 20),
                )
            elif kind == "pedestal":
                asset = assets["mw_drawercase" if rng.random() < 0.6 else "mw_safe"]
                m.mesh(
                    asset,
                    (s, s * 1.1, rng.uniform(0.55, 0.7)),
                    L["clutter"],
                    jitter(rng, [style.wood, *GREYS[:2]][rng.integers(3)], 8),
                )
            elif kind == "random":
                m.mesh(
                    assets[f"random_{rng.integers(100):03d}"],
                    s,
                    L["clutter"],
                    jitter(rng, VIVID[rng.integers(10)], 25),
                )
            elif kind == "teddy":
                m.mesh(assets["teddy"], s, L["clutter"], jitter(rng, [150, 100, 60], 20), FABRIC)
            else:
                m.box(
                    (-s / 2, -s / 2, 0),
                    (s / 2, s / 2, rng.uniform(0.8, 1.2)),
                    L["clutter"],
                    jitter(rng, [215, 215, 210], 10),
                )


def add_wall_items(m: RoomMesh, plan: Floorplan, rng: np.random.Generator, height: float, ops: list,
                   boards: int, posters: int) -> None:  # fmt: skip
    """Boards and posters flat on free stretches of wall (not over openings)."""
    lengths = [plan.width, plan.depth, plan.width, plan.depth]
    taken: list[tuple[int, float, float]] = [(o.wall, o.s0 - 0.1, o.s1 + 0.1) for o in ops]
    for what in ["board"] * boards + ["poster"] * posters:
        for _ in range(30):
            wall = int(rng.integers(4))
            widest = min(3.0, lengths[wall] - 0.8) if what == "board" else 1.0
            if widest < (1.2 if what == "board" else 0.4):
                continue
            w = rng.uniform(1.2 if what == "board" else 0.4, widest)
            if lengths[wall] - w < 0.6:
                continue
            s0 = rng.uniform(0.3, lengths[wall] - w - 0.3)
            if any(t[0] == wall and not (s0 + w < t[1] or s0 > t[2]) for t in taken):
                continue
            taken.append((wall, s0, s0 + w))
            x, y, yaw, _ = wall_frame(wall, plan.width, plan.depth)
            with m.frame(x, y, 0, yaw), m.frame(s0, 0, 0):
                if what == "board":
                    h = rng.uniform(0.9, 1.3)
                    with m.frame(0, 0, rng.uniform(0.8, 1.0)):
                        add_board(m, rng, w, h)
                else:
                    h = rng.uniform(0.5, 1.0)
                    z = rng.uniform(1.1, max(1.2, height - h - 0.3))
                    m.box(
                        (0, 0, z), (w, 0.005, z + h), L["clutter"], jitter(rng, VIVID[rng.integers(10)], 30)
                    )
            break


# -------------------------------------------------------------------------------------------------- rooms


CAP_CELL = 0.04  # the thinning cell: the PT voxel, so a PT test needs at most cell_cap passes
ROOM_SIZES = {
    "conferenceRoom": ((4.5, 8.0), (4.0, 6.5)),
    "office": ((3.0, 6.0), (3.0, 6.5)),
    "lounge": ((4.5, 8.0), (4.5, 7.5)),
    "hallway": ((1.8, 2.6), (6.0, 14.0)),
    "storage": ((2.5, 4.5), (2.5, 4.5)),
    "pantry": ((3.0, 5.0), (3.0, 5.0)),
    "copyRoom": ((3.0, 5.0), (3.0, 5.0)),
}


def generate_room(rng: np.random.Generator, kind: str, style: AreaStyle, assets: dict[str, Mesh],
                  rays: int, cell_cap: int = 3) -> np.ndarray:  # fmt: skip
    """One scanned room, (N, 7) float32: x, y, z, r, g, b, label (its own frame; the caller offsets it).
    ``rays`` scanner rays in all; the merged returns keep at most ``cell_cap`` points per 4 cm cell (0 = all)."""
    (w0, w1), (d0, d1) = ROOM_SIZES[kind]
    width, depth = rng.uniform(w0, w1), rng.uniform(d0, d1)
    if rng.random() < 0.5 and kind != "hallway":
        width, depth = depth, width
    height = rng.uniform(*style.height)
    m = RoomMesh()
    ops, lighting, plan = add_shell(
        m, rng, kind, width, depth, height, style, assets, force_beams=kind == "conferenceRoom"
    )
    furnish(m, rng, kind, plan, height, style, assets, ops)
    n_scanners = 1 if width * depth < 12 else int(rng.integers(2, 4))
    scanners = []
    for _ in range(200):
        if len(scanners) == n_scanners:
            break
        x, y = rng.uniform(0.6, width - 0.6), rng.uniform(0.6, depth - 0.6)
        if plan.free(x - 0.2, y - 0.2, x + 0.2, y + 0.2, margin=0.0):
            scanners.append([x, y, rng.uniform(1.3, 1.7)])
    if not scanners:  # a crowded room: scan from above the furniture
        scanners.append([width / 2, depth / 2, height - 0.4])
    xyz, rgb, label = scan(m, np.array(scanners), rays, lighting, rng)
    keep = thin(xyz, rng, CAP_CELL, cell_cap) if cell_cap else np.arange(len(xyz))
    return np.concatenate([xyz[keep], rgb[keep], label[keep, None]], axis=1).astype(np.float32)


def area_rooms(
    seed: int, area: int, n_rooms: int, rays: tuple[int, int], assets: dict[str, Mesh], cell_cap: int = 3
):
    """Yield (name, (N, 7) array) for the rooms of one area, in a fixed order; deterministic in (seed, area)."""
    style = area_style(np.random.default_rng([seed, area, 0]))
    counts: dict[str, int] = {}
    kinds = [KIND_ORDER[i % len(KIND_ORDER)] for i in range(n_rooms)]
    offset = 0.0
    for r, kind in enumerate(kinds):
        rng = np.random.default_rng([seed, area, r + 1])
        room = generate_room(rng, kind, style, assets, int(rng.integers(rays[0], rays[1] + 1)), cell_cap)
        counts[kind] = counts.get(kind, 0) + 1
        room[:, 0] += offset  # rooms of an area sit side by side in the area's frame, as in S3DIS
        offset += float(room[:, 0].max() - room[:, 0].min()) + 1.0
        yield f"Area_{area}_{kind}_{counts[kind]}", room
