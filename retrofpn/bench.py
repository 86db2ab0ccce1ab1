"""Performance of Retro-FPN's point operations, sparse convolution and models (issue "Performance").

    python -m retrofpn.bench [--quick] [--threads 1] [--out results/bench/retrofpn.json]
    python -m retrofpn.bench --replot results/bench/retrofpn.json     # redraw the PNG of a finished run

(``make bench-retrofpn [QUICK=1]``; QUICK writes ``runs/bench/retrofpn_quick.json``, never over the committed
figures.) One run measures, on CPU with ``--threads`` threads in every path (torch, pykdtree's and open3d's
OpenMP):

1. kNN (k = 16, a cloud queried against itself, as every level of the models does) at 10k, 40k, 160k points:
   the package's fast path (``retrofpn.ops.knn_query``: a pykdtree KD-tree) against its chunked brute force
   (``knn_query(method="cdist")``: ``torch.cdist`` + ``topk``, the CUDA path). The brute force costs minutes
   at 160k, so it is timed on a random subset of the queries and scaled by the number of queries (its cost is
   linear in them: every query row is an independent distance row and top-k); the JSON says where it is
   extrapolated. Agreement: the two paths' neighbour distances on that subset. Also the exponent of a
   power-law fit of time vs N, against that of N log N over the same sizes.
2. Furthest point sampling N -> N/4 at the same sizes: ``fpsample``'s QuickFPS (``pt_fps: bucket``), the
   package default (``fpsample.fps_sampling``, exact, from each cloud's first point), the textbook loop of
   ``retrofpn.reference`` and open3d's ``farthest_point_down_sample`` (start index 0). QuickFPS starts at
   another point (see ``retrofpn.ops.furthest_point_sampling``), so the methods are compared by the coverage
   radius of the returned set (the largest distance from any point to its nearest sample), and the exact
   ones also by their indices. The plain loop is one O(N) pass per sample, milliseconds each at 160k
   (minutes for 40k samples): there it draws its first 4,000 samples, its time is scaled by the count (stated
   as extrapolated), and those samples must equal the first ones of the package's exact FPS.
3. A 3x3x3 sparse convolution (``retrofpn.sparse.SparseConv3d``, stride 1 and 2) against dense ``conv3d`` on
   the same occupied grid (room-like surfaces at 1% and 5% occupancy), forward: time, and the memory each
   needs (resident-set growth in a fresh process per measurement); the sparse outputs are checked against
   the dense ones at the active sites.
4. The share of a training step spent in point ops: ``compute_hierarchy`` (neighbour search, sampling,
   kernel maps) against the forward + backward of each embedded model (``ModelConfig`` defaults, with and
   without Retro-FPN) on a batch of 2 room crops.
5. One forward of each model at paper scale (``paper_model_config``, Retro-FPN on, no grad) on an 80k-point
   crop of rooms voxelised at the backbone's official voxel size: time and peak memory in a fresh process
   each; parameter counts with and without Retro-FPN.

Points come from the embedded SYNTHETIC rooms (``data/retrofpn/synthetic_rooms``, laid side by side when one
room holds too few points) when they exist, otherwise uniformly from a 10 m x 8 m x 3 m box; the JSON says
which. Timings are ``shared.bench.interleaved`` (paths in turns, so a change of load hits all alike); ratios
use the best of the repeats. ``shared.bench.machine_info`` (with the load average) is read before the run
and the float32 matmul peak is measured in it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from pykdtree.kdtree import KDTree

from retrofpn import reference
from retrofpn.config import ModelConfig, paper_model_config
from retrofpn.data.config import EMBEDDED_ROOT, DataConfig
from retrofpn.data.s3dis import list_rooms, read_room
from retrofpn.data.transforms import nearest, voxelize
from retrofpn.model import Segmentor, compute_hierarchy
from retrofpn.ops import furthest_point_sampling, knn_query, strided_offset
from retrofpn.sparse import CoordinateManager, SparseConv3d, SparseTensor, kernel_offsets
from shared.bench import (
    PeakRSS,
    in_fresh_process,
    interleaved,
    load_note,
    machine_info,
    matmul_peak_gflops,
    time_fn,
)
from shared.errors import ConfigError, DataError, run_cli
from shared.report import write_metrics_json

K = 16
FPS_RATIO = 4  # PT's stride between levels
BOX = (10.0, 8.0, 3.0)  # metres: the fallback cloud when the synthetic rooms are absent
ROOM_GAP = 0.5  # metres between rooms laid side by side
KNN_SPEEDUP_TARGET = 50.0
KNN_EXPONENT_SLACK = 0.2  # "close to N log N": fitted exponent at most this much above N log N's own
FORWARD_MEMORY_TARGET_GB = 4.0
KNN_DIST_TOL = 1e-4  # metres; float32 cdist against float64 KD-tree distances differ by ~1e-6
SPARSE_TOL = 1e-4
COVERAGE_TOL = 0.1  # coverage radius within 10% of the plain loop's (a random subset is ~2x worse)
OFFICIAL_VOXEL = {"pt": 0.04, "ptv2": 0.02, "minkunet": 0.05}  # m: PT S3DIS, PTv2 ScanNet, MinkUNet S3DIS
EMBEDDED_VOXEL = 0.04  # m: the embedded data's voxel size (ModelConfig defaults are sized for it)
BACKBONES = ("pt", "ptv2", "minkunet")
NAMES = {"pt": "PT", "ptv2": "PTv2", "minkunet": "MinkUNet"}
FPS_METHODS = {
    "bucket": "fpsample QuickFPS (pt_fps: bucket)",
    "vanilla": "fpsample exact (package default)",
    "loop": "plain loop (reference.py)",
    "open3d": "open3d farthest_point_down_sample",
}
FPS_SINGLE_RUN_N = 30_000  # at or above this size the slow FPS methods run once (seconds to minutes each)


@dataclass
class Sizes:
    """Problem sizes and repeats of one run (``FULL``, ``QUICK``; the tests use tiny ones)."""

    knn_sizes: tuple[int, ...] = (10_000, 40_000, 160_000)
    brute_queries: int = 2000  # queries of the timed brute-force subset
    fps_sizes: tuple[int, ...] = (10_000, 40_000, 160_000)
    fps_loop_full: int = 10_000  # the plain loop draws every sample up to this many samples ...
    fps_loop_prefix: int = 4_000  # ... beyond, only its first this many (ms each at 160k), time scaled
    grid: int = 96  # sparse conv: a grid^3 grid
    occupancies: tuple[float, ...] = (0.01, 0.05)
    channels: int = 32
    batch_points: int = 8000  # per cloud of the 2-cloud training batch
    forward_points: int = 80_000  # 0 = skip the paper-scale forwards
    forward_warm: bool = True  # time a second forward too (the first includes one-time set-up)
    repeats: int = 3
    warmup: int = 1
    matmul_n: int = 2048  # the float32 matmul peak: n x n by n x n
    name: str = "full"


FULL = Sizes()
QUICK = Sizes(name="quick", knn_sizes=(10_000, 40_000), brute_queries=1000, fps_sizes=(10_000, 40_000), grid=64,
              fps_loop_full=2500, fps_loop_prefix=2500, batch_points=4000, forward_points=20_000, forward_warm=False,
              repeats=1)  # fmt: skip


# ----------------------------------------------------------------------------------------------- the points
class PointSource:
    """Clouds for the benchmark: crops of the synthetic rooms (``root``) or, without them, a uniform box."""

    def __init__(self, root: str | None) -> None:
        self.root = root
        self.paths = list_rooms(DataConfig(root=root), "train") if root else []
        self._rooms: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def describe(self) -> str:
        if self.root:
            return (f"SYNTHETIC rooms of {self.root} (training areas), laid side by side along x "
                    f"{ROOM_GAP} m apart when one room holds too few points")  # fmt: skip
        return (f"uniform random points in a {BOX[0]:g} x {BOX[1]:g} x {BOX[2]:g} m box ({EMBEDDED_ROOT} not "
                f"found; `make data-retrofpn` builds the rooms)")  # fmt: skip

    def _room(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        while len(self._rooms) <= i:
            if len(self._rooms) == len(self.paths):
                raise DataError(f"{self.root}: its {len(self.paths)} training rooms hold too few points for "
                                f"this benchmark; rebuild them with `make data-retrofpn`")  # fmt: skip
            scene = read_room(self.paths[len(self._rooms)], DataConfig(root=self.root))
            coord = scene.coord - scene.coord.min(0)
            self._rooms.append((coord, scene.color.astype(np.float32), scene.segment.astype(np.int64)))
        return self._rooms[i]

    def _box(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, n])
        coord = (rng.random((n, 3)) * BOX).astype(np.float32)
        return coord, rng.integers(0, 256, (n, 3)).astype(np.float32), rng.integers(0, 13, n)

    def _floor(self, rooms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts, x0 = [], 0.0
        for i in range(rooms):
            coord, color, label = self._room(i)
            parts.append((coord + np.array([x0, 0.0, 0.0], np.float32), color, label))
            x0 += float(coord[:, 0].max()) + ROOM_GAP
        return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]

    def cloud(self, n: int, voxel: float | None = None, seed: int = 0, room: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """The n points (one per ``voxel`` cell when given) nearest a centre: of room ``room`` around a random
        point (a training crop), or of as many rooms side by side as needed around their middle."""
        rng = np.random.default_rng(seed)
        rooms = 1
        while True:
            if not self.root:
                coord, color, label = self._box(int(n * 1.1) + 16, seed + (room or 0))
            else:
                coord, color, label = self._room(room) if room is not None else self._floor(rooms)
            keep = voxelize(coord, voxel).nth_point(0) if voxel else np.arange(len(coord))
            if len(keep) >= n or room is not None or not self.root:
                break
            rooms += 1
        coord, color, label = coord[keep], color[keep], label[keep]
        centre = coord[rng.integers(len(coord))] if room is not None else (coord.min(0) + coord.max(0)) / 2
        idx = np.sort(nearest(coord, centre, min(n, len(coord))))
        return coord[idx], color[idx], label[idx]


def batch_of(
    clouds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], voxel: float
) -> tuple[dict, torch.Tensor]:
    """Point dict of concatenated clouds (feat = rgb / 255; grid_coord for the MinkUNet) and the labels."""
    coord = torch.from_numpy(np.concatenate([c[0] for c in clouds]))
    grid = torch.floor(coord / voxel).long()
    batch = {
        "coord": coord,
        "feat": torch.from_numpy(np.concatenate([c[1] for c in clouds]) / 255.0).float(),
        "offset": torch.cumsum(torch.tensor([len(c[0]) for c in clouds]), 0),
        "grid_coord": grid - grid.min(0).values,  # the cells the crop was voxelised in (floor(c / v))
    }
    return batch, torch.from_numpy(np.concatenate([c[2] for c in clouds]))


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _timing(t: Any) -> dict[str, float]:
    return {"best_s": t.best_s, "median_s": t.median_s, "runs": t.runs}


# ------------------------------------------------------------------------------------------------------ kNN
def knn_row(coord: torch.Tensor, brute_queries: int, repeats: int, warmup: int, seed: int = 0) -> dict:
    """Fast path on every point against the brute force on a random subset of the queries, one size."""
    n = len(coord)
    offset = torch.tensor([n])
    q = min(brute_queries, n)
    sub = torch.sort(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:q]).values
    out: dict[str, Any] = {}

    def fast() -> None:
        out["fast"] = knn_query(K, coord, offset)

    def brute() -> None:
        out["brute"] = knn_query(K, coord, offset, coord[sub], torch.tensor([q]), method="cdist")

    t = interleaved({"fast": fast, "brute": brute}, warmup=warmup, repeats=repeats)
    fast_nb, brute_nb = out["fast"].select(sub), out["brute"]
    dist_diff = float((fast_nb.dist.double() - brute_nb.dist.double()).abs().max())
    brute_s = t["brute"].best_s * n / q  # linear in the number of queries
    return {
        "n": n, "fast": _timing(t["fast"]), "brute_subset": _timing(t["brute"]), "brute_queries": q,
        "brute_extrapolated": q < n, "fast_s": t["fast"].best_s, "brute_s": brute_s,
        "speedup": brute_s / t["fast"].best_s,
        "fast_ns_per_n_log2_n": t["fast"].best_s / (n * math.log2(n)) * 1e9,
        "max_abs_dist_diff_m": dist_diff, "idx_match_fraction": float((fast_nb.idx == brute_nb.idx).all(1).double().mean()),
        "agree": dist_diff <= KNN_DIST_TOL,
    }  # fmt: skip


def fit_exponent(ns: Sequence[float], ts: Sequence[float]) -> float:
    """Least-squares slope of log t against log n (t ~ n^slope)."""
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0]) if len(ns) > 1 else float("nan")


# ------------------------------------------------------------------------------------------------------ FPS
def coverage_radius(coord: np.ndarray, samples: np.ndarray) -> float:
    """Largest distance from any point to its nearest sample (what FPS greedily minimises)."""
    d, _ = KDTree(samples.astype(np.float64)).query(coord.astype(np.float64), k=1)
    return float(d.max())


def fps_row(coord_np: np.ndarray, repeats: int, loop_full: int, loop_prefix: int) -> dict:
    """The four FPS methods at one size, N -> N / FPS_RATIO (one cloud).

    The plain loop does the same O(N) work per sample, so where the full run would take minutes (more than
    ``loop_full`` samples) it runs for its first ``loop_prefix`` and its time is scaled by the count;
    those samples must equal the package's exact FPS's first ones (same start, same rule), and that exact
    FPS then stands in for the loop in the coverage comparison.
    """
    import open3d as o3d  # imported here: it is slow to import and only this section needs it

    n = len(coord_np)
    coord, offset = torch.from_numpy(coord_np), torch.tensor([n])
    new_offset = strided_offset(offset, FPS_RATIO)
    m = int(new_offset[-1])
    m_loop = m if m <= loop_full else min(m, loop_prefix)
    out: dict[str, np.ndarray] = {}

    def open3d_fps() -> None:
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(coord_np.astype(np.float64)))
        out["open3d_points"] = np.asarray(pcd.farthest_point_down_sample(m, start_index=0).points)

    fns = {
        "bucket": lambda: out.__setitem__("bucket", furthest_point_sampling(coord, offset, new_offset, "bucket").numpy()),
        "vanilla": lambda: out.__setitem__("vanilla", furthest_point_sampling(coord, offset, new_offset).numpy()),
        "loop": lambda: out.__setitem__("loop", reference.fps_reference(coord, offset, torch.tensor([m_loop])).numpy()),
        "open3d": open3d_fps,
    }  # fmt: skip
    single = n >= FPS_SINGLE_RUN_N
    t = {name: _timing(x) for name, x in interleaved(fns, warmup=0, repeats=1 if single else repeats).items()}
    if single and repeats > 1:  # the fast one can afford the repeats the others cannot
        t["bucket"] = _timing(time_fn(fns["bucket"], warmup=0, repeats=repeats))
    t["loop"]["prefix_best_s"] = t["loop"]["best_s"]
    for key in ("best_s", "median_s"):
        t["loop"][key] *= m / m_loop
    # open3d returns points: find their rows (exact copies of input points) to compare indices
    _, o3d_rows = KDTree(coord_np.astype(np.float64)).query(out["open3d_points"], k=1)
    out["open3d"] = o3d_rows.astype(np.int64)
    loop_full = m_loop == m
    exact = out["loop"] if loop_full else out["vanilla"]
    exact_radius = coverage_radius(coord_np, coord_np[exact])
    methods = {}
    for name in FPS_METHODS:
        if name == "loop" and not loop_full:
            methods[name] = {**t[name], "samples_run": m_loop, "extrapolated": True, "coverage_radius_m": None,
                             "prefix_equals_package_exact": bool(np.array_equal(out["loop"], out["vanilla"][:m_loop]))}  # fmt: skip
            continue
        radius = coverage_radius(coord_np, coord_np[out[name]])
        methods[name] = {
            **t[name], "samples_run": m, "extrapolated": False, "coverage_radius_m": radius,
            "same_order_as_exact": bool(np.array_equal(out[name], exact)),
            "same_set_as_exact": bool(np.array_equal(np.sort(out[name]), np.sort(exact))),
            "common_fraction_with_exact": len(np.intersect1d(out[name], exact)) / m,
            "coverage_agrees": abs(radius - exact_radius) <= COVERAGE_TOL * exact_radius,
        }  # fmt: skip
    checks = [v["coverage_agrees"] for v in methods.values() if "coverage_agrees" in v]
    checks.append(
        methods["vanilla"]["same_set_as_exact"]
        if loop_full
        else methods["loop"]["prefix_equals_package_exact"]
    )
    return {
        "n": n, "m": m, "exact_reference": "plain loop" if loop_full else
        f"package exact FPS (its first {m_loop} samples equal the plain loop's)", "methods": methods,
        "speedup_vs_loop": {k: methods["loop"]["best_s"] / v["best_s"] for k, v in methods.items()},
        "agree": all(checks),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------- sparse convolution
def surface_voxels(grid: int, occupancy: float, seed: int = 0) -> torch.Tensor:
    """(V, 3) distinct voxels of room-like surfaces: the one-voxel-thick shells of random axis-aligned boxes
    (sides 4 to grid/3) added until ``occupancy`` of the grid is reached, the last one cut to the count."""
    rng = np.random.default_rng([seed, grid])
    target = max(1, round(occupancy * grid**3))
    taken = np.zeros((grid,) * 3, dtype=bool)
    chosen: list[np.ndarray] = []
    count = 0
    while count < target:
        size = rng.integers(4, max(5, grid // 3), 3)
        lo = rng.integers(0, grid - size + 1)
        box = np.zeros((grid,) * 3, dtype=bool)
        box[tuple(slice(a, a + s) for a, s in zip(lo, size))] = True
        box[tuple(slice(a + 1, a + s - 1) for a, s in zip(lo, size))] = False  # hollow: the shell only
        new = np.argwhere(box & ~taken)[: target - count]
        taken[tuple(new.T)] = True
        chosen.append(new)
        count += len(new)
    return torch.from_numpy(np.concatenate(chosen)).long()


def _sparse_setup(
    grid: int, occupancy: float, channels: int, stride: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, SparseConv3d, torch.Tensor]:
    """Active voxels, their features and one conv's weights; the same for the sparse and the dense path."""
    torch.manual_seed(seed)
    coords = surface_voxels(grid, occupancy, seed)
    feat = torch.randn(len(coords), channels)  # (V, C)
    conv = SparseConv3d(channels, channels, 3, stride=stride).eval()
    k_dense = torch.zeros(3, 3, 3, channels, channels)
    for o, off in enumerate(kernel_offsets(3).tolist()):
        k_dense[off[0] + 1, off[1] + 1, off[2] + 1] = conv.weight.detach()[o]  # (K, K, K, Cin, Cout)
    return (
        coords,
        feat,
        conv,
        k_dense.permute(4, 3, 0, 1, 2).contiguous(),
    )  # dense weight (Cout, Cin, K, K, K)


def _dense_grid(coords: torch.Tensor, feat: torch.Tensor, grid: int) -> torch.Tensor:
    dense = feat.new_zeros(1, feat.shape[1], grid, grid, grid)
    dense[0, :, coords[:, 0], coords[:, 1], coords[:, 2]] = feat.T
    return dense  # (1, C, G, G, G)


def sparse_row(grid: int, occupancy: float, channels: int, stride: int, repeats: int, warmup: int) -> dict:
    """Sparse vs dense 3x3x3 conv at one stride on one occupied grid: times and the agreement check."""
    coords, feat, conv, w_dense = _sparse_setup(grid, occupancy, channels, stride)
    batch = torch.zeros(len(coords), dtype=torch.long)
    cm = CoordinateManager(coords, batch, 1)
    x = SparseTensor(feat, 1, cm)
    dense_in = _dense_grid(coords, feat, grid)
    out: dict[str, torch.Tensor] = {}

    def kernel_map() -> None:
        CoordinateManager(coords, batch, 1).kernel_map(3, 1, stride)

    def sparse() -> None:
        out["sparse"] = conv(x).feat

    def dense() -> None:
        out["dense"] = F.conv3d(dense_in, w_dense, stride=stride, padding=1)

    with torch.no_grad():
        kmap = conv.kernel_map(x)  # built once (cached in cm), as a network reuses it in every layer
        t = interleaved({"sparse": sparse, "dense": dense, "kernel_map": kernel_map},
                        warmup=warmup, repeats=repeats)  # fmt: skip
    u = cm.coords(stride) // stride  # output voxels in cells of the dense output
    expected = out["dense"][0, :, u[:, 0], u[:, 1], u[:, 2]].T  # (V_out, C)
    diff = float((out["sparse"] - expected).abs().max())
    pairs = sum(len(r) for r in kmap.in_rows)
    s, d, km = t["sparse"].best_s, t["dense"].best_s, t["kernel_map"].best_s
    return {
        "occupancy": occupancy, "stride": stride, "active_in": len(coords), "active_out": len(u),
        "pairs": pairs, "sparse": _timing(t["sparse"]), "dense": _timing(t["dense"]),
        "kernel_map": _timing(t["kernel_map"]), "sparse_s": s, "dense_s": d, "kernel_map_s": km,
        "speedup": d / s, "speedup_incl_kernel_map": d / (s + km),
        "sparse_gflops": 2 * channels**2 * pairs / s / 1e9,
        "dense_gflops": 2 * channels**2 * 27 * out["dense"][0, 0].numel() / d / 1e9,
        "max_abs_diff": diff, "agree": diff <= SPARSE_TOL * max(1.0, float(expected.abs().max())),
    }  # fmt: skip


def sparse_memory_mb(method: str, grid: int, occupancy: float, channels: int, stride: int) -> float:
    """Resident-set growth of one forward conv beyond its sparse input (run it in a fresh process): sparse =
    coordinate hash + kernel map + gather-GEMM-scatter; dense = the zero-filled grid + ``conv3d``."""
    coords, feat, conv, w_dense = _sparse_setup(grid, occupancy, channels, stride)
    batch = torch.zeros(len(coords), dtype=torch.long)
    with torch.no_grad(), PeakRSS() as peak:
        if method == "sparse":
            conv(SparseTensor(feat, 1, CoordinateManager(coords, batch, 1)))
        else:
            F.conv3d(_dense_grid(coords, feat, grid), w_dense, stride=stride, padding=1)
    return peak.growth / 2**20


# ------------------------------------------------------------------------------------- training-step share
def share_row(cfg: ModelConfig, batch: dict, labels: torch.Tensor, repeats: int, warmup: int) -> dict:
    """Hierarchy vs forward + backward of one embedded model on one batch."""
    torch.manual_seed(0)
    model = Segmentor(cfg).train()
    state: dict[str, Any] = {}

    def hierarchy() -> None:
        state["h"] = compute_hierarchy(cfg, batch["coord"], batch["offset"], batch["grid_coord"],
                                       torch.Generator().manual_seed(0))  # fmt: skip

    def step() -> None:
        output = model({**batch, "hierarchy": state["h"]})
        model.zero_grad(set_to_none=True)
        model.loss(output, labels)[0].backward()

    hierarchy()
    t = interleaved({"hierarchy": hierarchy, "step": step}, warmup=warmup, repeats=repeats)
    h, s = t["hierarchy"].best_s, t["step"].best_s
    return {
        "backbone": cfg.backbone, "retro": cfg.retro, "params": count_parameters(model),
        "hierarchy": _timing(t["hierarchy"]), "forward_backward": _timing(t["step"]),
        "hierarchy_s": h, "forward_backward_s": s, "share": h / (h + s),
    }  # fmt: skip


def share_rows(source_root: str | None, points: int, repeats: int, warmup: int) -> dict:
    """The six embedded models (ModelConfig defaults, with and without Retro-FPN) on one 2-cloud batch."""
    source = PointSource(source_root)
    clouds = [source.cloud(points, EMBEDDED_VOXEL, seed=i, room=i) for i in range(2)]
    batch, labels = batch_of(clouds, EMBEDDED_VOXEL)
    rows = [share_row(ModelConfig(backbone=b, retro=r), batch, labels, repeats, warmup)
            for b in BACKBONES for r in (True, False)]  # fmt: skip
    note = ("the training loop builds the hierarchy in data-loader workers (retrofpn.model.HierarchyHook), "
            "so with workers that keep up this share is off the training step's critical path; the forward's "
            "own gathers, scatters and interpolations are counted in forward + backward")  # fmt: skip
    return {"clouds": [len(c[0]) for c in clouds], "voxel_size_m": EMBEDDED_VOXEL, "rows": rows, "note": note}


# --------------------------------------------------------------------------------------- paper-scale forward
def forward_row(backbone: str, source_root: str | None, points: int, warm: bool) -> dict:
    """One no-grad forward of the paper-scale model with Retro-FPN (call it in a fresh process)."""
    voxel = OFFICIAL_VOXEL[backbone]
    batch, _ = batch_of([PointSource(source_root).cloud(points, voxel)], voxel)
    torch.manual_seed(0)
    params_plain = count_parameters(Segmentor(paper_model_config(backbone, retro=False)))
    cfg = paper_model_config(backbone)
    model = Segmentor(cfg).eval()
    state: dict[str, Any] = {}

    def hierarchy() -> None:
        state["h"] = compute_hierarchy(cfg, batch["coord"], batch["offset"], batch["grid_coord"],
                                       torch.Generator().manual_seed(0))  # fmt: skip

    def forward() -> None:
        model({**batch, "hierarchy": state["h"]})

    with torch.no_grad(), PeakRSS() as peak:
        first_h, first_f = time_fn(hierarchy, warmup=0, repeats=1), time_fn(forward, warmup=0, repeats=1)
    row = {
        "backbone": backbone, "retro": True, "params": count_parameters(model), "params_without_retro": params_plain,
        "voxel_size_m": voxel, "points": len(batch["coord"]), "levels": [lv.num_points for lv in state["h"].levels],
        "first_hierarchy_s": first_h.best_s, "first_forward_s": first_f.best_s,
        "peak_rss_mb": peak.peak / 2**20, "rss_growth_mb": peak.growth / 2**20,
    }  # fmt: skip
    if warm:
        with torch.no_grad():
            h, f = time_fn(hierarchy, warmup=0, repeats=1), time_fn(forward, warmup=0, repeats=1)
        row.update(hierarchy_s=h.best_s, forward_s=f.best_s, timed_call="second")
    else:
        row.update(hierarchy_s=first_h.best_s, forward_s=first_f.best_s, timed_call="first")
    row["total_s"] = row["hierarchy_s"] + row["forward_s"]
    row["hierarchy_share"] = row["hierarchy_s"] / row["total_s"]
    return row


# -------------------------------------------------------------------------------------------------- the run
def timed_sections(sizes: Sizes, source_root: str | None) -> dict:
    """Every timing of the run, in one process (memory is measured in processes of its own)."""
    source = PointSource(source_root)
    r, w = sizes.repeats, sizes.warmup
    result: dict[str, Any] = {"matmul_peak_gflops": matmul_peak_gflops(sizes.matmul_n)}
    t0 = time.perf_counter()
    rows = []
    for n in sizes.knn_sizes:
        rows.append(knn_row(torch.from_numpy(source.cloud(n)[0]), sizes.brute_queries, r, w))
        print(f"kNN N={n}: fast {rows[-1]['fast_s']:.3f} s, brute {rows[-1]['brute_s']:.1f} s", flush=True)
    result["knn"] = {"k": K, "rows": rows, "wall_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    rows = []
    for n in sizes.fps_sizes:
        rows.append(fps_row(source.cloud(n)[0], r, sizes.fps_loop_full, sizes.fps_loop_prefix))
        print(f"FPS N={n}: " + ", ".join(f"{k} {v['best_s']:.2f} s" for k, v in rows[-1]["methods"].items()),
              flush=True)  # fmt: skip
    result["fps"] = {"ratio": FPS_RATIO, "rows": rows, "wall_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    rows = [sparse_row(sizes.grid, occ, sizes.channels, stride, r, w)
            for occ in sizes.occupancies for stride in (1, 2)]  # fmt: skip
    print("sparse conv: " + ", ".join(f"{x['occupancy']:.0%}/s{x['stride']} x{x['speedup']:.1f}" for x in rows),
          flush=True)  # fmt: skip
    result["sparse_conv"] = {"rows": rows, "wall_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    result["share"] = share_rows(source_root, sizes.batch_points, r, w)
    result["share"]["wall_s"] = time.perf_counter() - t0
    print("point-op share: " + ", ".join(f"{x['backbone']}{'+retro' if x['retro'] else ''} {x['share']:.0%}"
                                         for x in result["share"]["rows"]), flush=True)  # fmt: skip
    return result


@contextlib.contextmanager
def thread_env(threads: int) -> Iterator[None]:
    """OMP_NUM_THREADS etc. for the processes spawned inside (pykdtree and open3d read it at start-up)."""
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: str(threads) for k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(sizes: Sizes, source_root: str | None, threads: int) -> dict:
    machine = machine_info(("pykdtree", "fpsample", "open3d"))  # before the work: the load we ran under
    t0 = time.perf_counter()
    with thread_env(threads):
        result = in_fresh_process(timed_sections, sizes, source_root, threads=threads)
        for row in result["sparse_conv"]["rows"]:
            for method in ("sparse", "dense"):
                row[f"{method}_memory_mb"] = in_fresh_process(
                    sparse_memory_mb, method, sizes.grid, row["occupancy"], sizes.channels, row["stride"],
                    threads=threads,
                )  # fmt: skip
            sparse_mb = row["sparse_memory_mb"]
            row["memory_ratio"] = row["dense_memory_mb"] / sparse_mb if sparse_mb > 0 else None
        forward = []
        if sizes.forward_points:
            for backbone in BACKBONES:
                forward.append(in_fresh_process(forward_row, backbone, source_root, sizes.forward_points,
                                                sizes.forward_warm, threads=threads))  # fmt: skip
                f = forward[-1]
                print(
                    f"paper-scale {backbone}: {f['total_s']:.1f} s, peak {f['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
    result["forward"] = {"rows": forward}
    result["sparse_conv"].update(grid=sizes.grid, channels=sizes.channels, kernel=3, pattern="surfaces")
    source = PointSource(source_root)
    result.update(
        what="Retro-FPN point ops, sparse convolution and models on CPU (forward/backward speed only, no accuracy)",
        setup={
            **asdict(sizes), "threads": threads, "points": source.describe(), "synthetic_rooms": bool(source_root),
            "timing": "shared.bench.interleaved (paths in turns) in one fresh process; ratios from best_s",
            "memory": "resident-set growth (shared.bench.PeakRSS) in a fresh process per measurement",
            "sparse_conv": "forward, no grad; 3x3x3, Cin = Cout = channels, one cloud; surfaces = shells of "
            "random boxes; dense = F.conv3d on the prebuilt (1, C, G, G, G) grid; sparse = SparseConv3d with "
            "its kernel map cached (as the network reuses it), the map's build timed apart",
            "share": "ModelConfig defaults (embedded scale), 2 room crops at 0.04 m voxels; hierarchy = "
            "retrofpn.model.compute_hierarchy; step = forward + loss + backward (no optimiser)",
            "forward": "paper_model_config(backbone) with Retro-FPN, eval, no grad, one cloud of forward_points "
            "points, one per voxel of the official size (PT 0.04, PTv2 0.02, MinkUNet 0.05 m); PT uses the "
            "default exact FPS",
        },
        machine={**machine, "load_note": load_note(machine)},
        wall_time_s=time.perf_counter() - t0,
    )  # fmt: skip
    result["summary"] = summarize(result)
    return result


def summarize(result: dict) -> dict:
    """Headline ratios and targets, from the rows of this run only."""
    knn = result["knn"]["rows"]
    ns = [r["n"] for r in knn]
    exponent = fit_exponent(ns, [r["fast_s"] for r in knn])
    n_log_n = fit_exponent(ns, [n * math.log(n) for n in ns])
    top = max(knn, key=lambda r: r["n"])
    fps = max(result["fps"]["rows"], key=lambda r: r["n"])
    sparse = result["sparse_conv"]["rows"]
    forward = result["forward"]["rows"]
    share = result["share"]["rows"]
    s = {
        "knn_speedup_at": top["n"], "knn_speedup": top["speedup"], "knn_brute_extrapolated": top["brute_extrapolated"],
        "knn_speedup_target": KNN_SPEEDUP_TARGET, "knn_speedup_target_met": top["speedup"] >= KNN_SPEEDUP_TARGET,
        "knn_time_exponent": exponent, "knn_n_log_n_exponent": n_log_n,
        "knn_exponent_target": n_log_n + KNN_EXPONENT_SLACK,
        "knn_exponent_target_met": exponent <= n_log_n + KNN_EXPONENT_SLACK,
        "knn_agree": all(r["agree"] for r in knn),
        "fps_at": fps["n"], "fps_speedup_vs_loop": fps["speedup_vs_loop"],
        "fps_bucket_vs_open3d": fps["methods"]["open3d"]["best_s"] / fps["methods"]["bucket"]["best_s"],
        "fps_agree": all(r["agree"] for r in result["fps"]["rows"]),
        "sparse_speedup": {f"{r['occupancy']:g}_stride{r['stride']}": r["speedup"] for r in sparse},
        "sparse_memory_ratio": {f"{r['occupancy']:g}_stride{r['stride']}": r.get("memory_ratio") for r in sparse},
        "sparse_agree": all(r["agree"] for r in sparse),
        "sparse_dense_gflops_fraction_of_matmul_peak": max(r["dense_gflops"] for r in sparse) / result["matmul_peak_gflops"],
        "point_op_share": {f"{r['backbone']}{'+retro' if r['retro'] else ''}": r["share"] for r in share},
        "point_op_share_max": max(r["share"] for r in share),
        "forward_peak_gb_max": max((r["peak_rss_mb"] / 1024 for r in forward), default=None),
        "forward_memory_target_gb": FORWARD_MEMORY_TARGET_GB,
        "forward_memory_target_met": all(r["peak_rss_mb"] / 1024 < FORWARD_MEMORY_TARGET_GB for r in forward) if forward else None,
    }  # fmt: skip
    s["all_results_agree"] = s["knn_agree"] and s["fps_agree"] and s["sparse_agree"]
    return s


# ----------------------------------------------------------------------------------------------------- plot
def _legend_below(ax: Any, ncol: int = 2) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, fontsize=8, frameon=False)


def plot(result: dict, path: Path) -> Path:
    """Six panels: kNN vs N (log-log, N log N guide), FPS times, sparse vs dense time and memory, the
    point-op share of a training step, the paper-scale forwards."""
    fig, axes = plt.subplots(2, 3, figsize=(17, 10.5), layout="constrained")
    setup, machine = result["setup"], result["machine"]
    # kNN
    ax = axes[0, 0]
    knn = result["knn"]["rows"]
    ns = np.array([r["n"] for r in knn], dtype=float)
    ax.plot(ns, [r["fast_s"] for r in knn], "o-", label="KD-tree (pykdtree), measured")
    extrap = any(r["brute_extrapolated"] for r in knn)
    ax.plot(ns, [r["brute_s"] for r in knn], "s--", mfc="none",
            label=f"cdist + topk{', extrapolated from a query subset' if extrap else ''}")  # fmt: skip
    guide = knn[0]["fast_s"] * ns * np.log(ns) / (ns[0] * math.log(ns[0]))
    ax.plot(ns, guide, ":", color="0.4", label="∝ N log N through the first point")
    for r in knn:
        ax.annotate(f"×{r['speedup']:.0f}", (r["n"], r["brute_s"]), textcoords="offset points", xytext=(-6, 5),
                    ha="right", fontsize=8)  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="points N (log scale)", ylabel="seconds for all N queries (log scale)",
           title=f"kNN, k = {result['knn']['k']} (fitted exponent {result['summary']['knn_time_exponent']:.2f})")  # fmt: skip
    _legend_below(ax, 1)
    # FPS
    ax = axes[0, 1]
    fps = result["fps"]["rows"]
    for name, label in FPS_METHODS.items():
        pts = [(r["n"], r["methods"][name]["best_s"], r["methods"][name]["extrapolated"]) for r in fps]
        line = ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)[0]
        extrap = [p for p in pts if p[2]]
        if extrap:  # hollow markers: timed on a prefix of the samples, scaled by the count
            ax.plot([p[0] for p in extrap], [p[1] for p in extrap], "o", ms=10, mfc="white", color=line.get_color(),
                    label=f"{label.split(' (')[0]}, extrapolated from its first samples")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="points N (log scale)", ylabel="seconds (log scale)",
           title=f"Furthest point sampling N → N/{result['fps']['ratio']}")  # fmt: skip
    _legend_below(ax)
    # sparse conv time and memory
    sparse = result["sparse_conv"]["rows"]
    groups = [f"{r['occupancy']:.0%}, stride {r['stride']}" for r in sparse]
    x = np.arange(len(sparse))
    sc = result["sparse_conv"]
    grid_title = f"3×3×3 conv {sc['channels']}→{sc['channels']} ch on a {sc['grid']}³ grid"
    ax = axes[0, 2]
    ax.bar(x - 0.27, [r["sparse_s"] for r in sparse], 0.27, label="sparse (kernel map cached)")
    ax.bar(x, [r["sparse_s"] + r["kernel_map_s"] for r in sparse], 0.27, label="sparse + kernel map build")
    ax.bar(x + 0.27, [r["dense_s"] for r in sparse], 0.27, label="dense conv3d")
    ax.set(yscale="log", xticks=x, xticklabels=groups, ylabel="seconds per forward (log scale)",
           xlabel="occupancy, stride", title=f"Sparse vs dense: time\n{grid_title}")  # fmt: skip
    _legend_below(ax, 3)
    ax = axes[1, 0]
    if all("sparse_memory_mb" in r for r in sparse):
        ax.bar(
            x - 0.2, [r["sparse_memory_mb"] for r in sparse], 0.4, label="sparse (hash + kernel map + conv)"
        )
        ax.bar(x + 0.2, [r["dense_memory_mb"] for r in sparse], 0.4, label="dense (grid + conv3d)")
    ax.set(xticks=x, xticklabels=groups, ylabel="resident-set growth (MB)", xlabel="occupancy, stride",
           title=f"Sparse vs dense: memory beyond the sparse input\n{grid_title}")  # fmt: skip
    _legend_below(ax)
    # share of a training step
    ax = axes[1, 1]
    share = result["share"]["rows"]
    labels = [f"{NAMES[r['backbone']]}{' + Retro-FPN' if r['retro'] else ''}" for r in share]
    y = np.arange(len(share))[::-1]
    h = [r["hierarchy_s"] for r in share]
    s = [r["forward_backward_s"] for r in share]
    ax.barh(y, h, label="hierarchy (kNN, FPS / grid pooling, kernel maps)")
    ax.barh(y, s, left=h, label="forward + backward")
    for yi, r, hi, si in zip(y, share, h, s):
        ax.text(hi + si, yi, f" {r['share']:.0%}", va="center", fontsize=8)
    ax.set(
        yticks=y,
        yticklabels=labels,
        xlabel="seconds per training step",
        title=f"Point-op share of a training step\n(2 clouds × {result['share']['clouds'][0]:,} points, embedded models)",
    )
    ax.set_xlim(0, max(hi + si for hi, si in zip(h, s)) * 1.18)
    _legend_below(ax, 1)
    # paper-scale forwards
    ax = axes[1, 2]
    forward = result["forward"]["rows"]
    if forward:
        xb = np.arange(len(forward))
        fh = [r["hierarchy_s"] for r in forward]
        ff = [r["forward_s"] for r in forward]
        ax.bar(xb, fh, 0.5, label="hierarchy")
        ax.bar(xb, ff, 0.5, bottom=fh, label="network forward")
        for xi, r, a, b in zip(xb, forward, fh, ff):
            ax.text(xi, a + b, f"peak {r['peak_rss_mb'] / 1024:.2f} GB\n{r['params'] / 1e6:.1f}M params",
                    ha="center", va="bottom", fontsize=8)  # fmt: skip
        ax.set_ylim(0, max(a + b for a, b in zip(fh, ff)) * 1.3)
        ax.set(xticks=xb, xticklabels=[NAMES[r["backbone"]] + " + Retro-FPN" for r in forward])
        ax.set_title(
            f"Paper-scale forward, {forward[0]['points']:,} points, no grad\n(target: peak memory under 4 GB)"
        )
        _legend_below(ax)
    else:
        ax.set_title("Paper-scale forward: skipped in this run")
    ax.set(ylabel="seconds", xlabel="model (official widths)")
    for a in axes.flat:
        a.grid(alpha=0.3, which="both")
    fig.suptitle(f"Retro-FPN CPU benchmark: {setup['threads']} thread{'s' * (setup['threads'] != 1)}, "
                 f"{'synthetic rooms' if setup['synthetic_rooms'] else 'uniform box points'}, "
                 f"{machine['load_note']}{', QUICK sizes' if setup['name'] == 'quick' else ''}")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------------ CLI
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Retro-FPN benchmark: point ops, sparse conv, models (CPU)")
    p.add_argument(
        "--quick", action="store_true", help="smaller sizes, one repeat (about a minute), under runs/"
    )
    p.add_argument("--threads", type=int, default=1, help="threads of every measured path (default 1)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per path (default 3, quick 1)")
    p.add_argument("--data", default=None, help=f"synthetic rooms folder (default {EMBEDDED_ROOT} if it exists, "
                   "else uniform box points)")  # fmt: skip
    p.add_argument(
        "--out",
        default=None,
        help="default results/bench/retrofpn.json (quick: runs/bench/retrofpn_quick.json)",
    )
    p.add_argument("--replot", default=None, metavar="JSON", help="only redraw the PNG of this result")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = p.parse_args(argv)
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.repeats is not None and args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    if args.data is not None and not Path(args.data).is_dir():
        raise DataError(f"{args.data}: no such folder (--data); give the folder of Area_X_<room>.npy files")
    return args


def main(argv: Sequence[str] | None = None, sizes: Sizes | None = None) -> None:
    args = parse_args(argv)
    if args.replot:
        path = Path(args.replot)
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(
                f"{path}: cannot read a benchmark JSON ({exc}); give the file a run wrote"
            ) from exc
        print(f"redrew {plot(result, path.with_suffix('.png'))}")
        return
    sizes = sizes or (QUICK if args.quick else FULL)
    sizes = replace(sizes, repeats=args.repeats or sizes.repeats)
    root = args.data if args.data is not None else (EMBEDDED_ROOT if Path(EMBEDDED_ROOT).is_dir() else None)
    PointSource(root)  # a folder without rooms fails here, in one line, before any process starts
    out = Path(
        args.out or ("runs/bench/retrofpn_quick.json" if args.quick else "results/bench/retrofpn.json")
    )
    result = run(sizes, root, args.threads)
    write_metrics_json(result, out)
    plot(result, out.with_suffix(".png"))
    s = result["summary"]
    print(result["machine"]["load_note"] + f"; matmul peak {result['matmul_peak_gflops']:.0f} GFLOP/s")
    print(f"kNN at N={s['knn_speedup_at']}: x{s['knn_speedup']:.0f} over cdist+topk (target >= "
          f"{KNN_SPEEDUP_TARGET:g}: {'met' if s['knn_speedup_target_met'] else 'NOT met'}); time ~ N^"
          f"{s['knn_time_exponent']:.2f} (N log N: {s['knn_n_log_n_exponent']:.2f}; "
          f"{'met' if s['knn_exponent_target_met'] else 'NOT met'})")  # fmt: skip
    print(f"FPS at N={s['fps_at']}: speedup over the plain loop " +
          ", ".join(f"{k} x{v:.1f}" for k, v in s["fps_speedup_vs_loop"].items() if k != "loop"))  # fmt: skip
    if s["forward_memory_target_met"] is not None:
        print(f"paper-scale forward peak {s['forward_peak_gb_max']:.2f} GB (target < {FORWARD_MEMORY_TARGET_GB:g} "
              f"GB: {'met' if s['forward_memory_target_met'] else 'NOT met'})")  # fmt: skip
    print(f"results agree: {s['all_results_agree']}; wall {result['wall_time_s']:.0f} s -> {out}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
