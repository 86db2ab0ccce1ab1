"""Point operations on concatenated clouds with offsets (the pointops of the official code, in PyTorch).

A batch of B clouds is one (N, ...) tensor per attribute plus ``offset`` (B,) int64, the cumulative point counts
(cloud b owns rows ``offset[b-1]:offset[b]``), the convention of the official code and of Pointcept. Every op
here works segment by segment and never mixes points of two clouds.

What the official CUDA ops become (Retro-FPN code: ``s3dis_point-transformer/lib/pointops``,
``scannet_ptv2/.../pointops2``, ``torch_geometric.voxel_grid`` + ``torch_scatter.segment_csr``):

- ``knnquery`` / ``knn_query`` / ``queryandgroup2``  -> :func:`knn_query` (KD-tree per segment on CPU via
  ``pykdtree``; ``torch.cdist`` + ``topk`` per segment on CUDA tensors). A segment with fewer than k support
  points gets padded slots that repeat the query's nearest neighbour (always a row of its own segment) and a
  ``valid`` mask; the official PT op pads with the segment's first point, the PTv2 op with -1 (which indexes
  the last row of the tensor: a bug we do not copy). Consumers: attention masks the padded slots out of its
  softmax; max-pooling needs nothing (a repeat of a real neighbour cannot change a max); interpolation gives
  them weight 0.
- ``furthestsampling`` -> :func:`furthest_point_sampling` (``fpsample``), counts ``n_i // stride`` per segment.
- ``interpolation`` (PT TransitionUp) -> :func:`interpolation_weights` + :func:`interpolate`.
- PTv2 ``GridPool`` (``voxel_grid`` + ``unique`` + ``segment_csr``) -> :func:`voxel_cluster` + ``scatter_*``.
- label pooling (chained FPS indices, or the sum of one-hot labels per cell then argmax) -> :func:`majority_vote`.

The per-level structures all of this produces for one batch are gathered in :class:`Hierarchy` (built by
:func:`fps_hierarchy` for PT, :func:`grid_hierarchy` for PTv2, ``retrofpn.sparse.sparse_hierarchy`` for the
MinkUNet) so that data-loader workers can compute them before the training step.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import fpsample
import numpy as np
import torch
from pykdtree.kdtree import KDTree
from torch import Tensor

from shared.errors import DataError

INTERPOLATION_EPS = 1e-8  # 1 / (d + 1e-8), pointops ``interpolation``
CDIST_CHUNK_ELEMENTS = 1 << 26  # queries x support distances held at once on a GPU (256 MB of float32)


# --- offsets -------------------------------------------------------------------------------------------------


def offset_to_counts(offset: Tensor) -> Tensor:
    """(B,) cumulative counts -> (B,) per-segment counts."""
    return torch.diff(offset, prepend=offset.new_zeros(1))


def offset_to_batch(offset: Tensor) -> Tensor:
    """(B,) offsets -> (N,) segment id of every row."""
    counts = offset_to_counts(offset)
    return torch.repeat_interleave(torch.arange(len(offset), device=offset.device), counts)


def batch_to_offset(batch: Tensor, num_segments: int) -> Tensor:
    """(N,) sorted segment ids -> (B,) offsets (segments without rows get a zero count)."""
    counts = torch.bincount(batch, minlength=num_segments)
    return torch.cumsum(counts, 0)


def check_offset(offset: Tensor, num_rows: int, name: str = "offset") -> None:
    """A user-supplied offset must be 1-D int64, non-decreasing, and end at the number of rows."""
    if offset.dim() != 1 or offset.dtype != torch.long or len(offset) == 0:
        raise DataError(
            f"{name}: expected a non-empty 1-D int64 tensor of cumulative counts, got "
            f"shape {tuple(offset.shape)} dtype {offset.dtype}"
        )
    counts = offset_to_counts(offset)
    if bool((counts < 0).any()):
        raise DataError(f"{name}: cumulative counts must not decrease, got {offset.tolist()}")
    if int(offset[-1]) != num_rows:
        raise DataError(
            f"{name}: the last cumulative count is {int(offset[-1])} but there are {num_rows} "
            f"points; offset[-1] must equal the number of points"
        )


def _segments(offset: Tensor) -> list[tuple[int, int]]:
    bounds = [0, *offset.tolist()]
    return list(itertools.pairwise(bounds))


# --- kNN -----------------------------------------------------------------------------------------------------


@dataclass
class Neighbours:
    """k nearest support points of each query point, within the query's own segment.

    Attributes:
        idx: (M, k) long rows of the support set, nearest first; always rows of the query's own segment.
        valid: (M, k) bool, False for slots padded because the segment had fewer than k support points
            (such a slot repeats the nearest neighbour).
        dist: (M, k) Euclidean distances (inf at padded slots).
    """

    idx: Tensor
    valid: Tensor
    dist: Tensor

    @property
    def k(self) -> int:
        return self.idx.shape[1]

    def first(self, k: int) -> Neighbours:
        """The k nearest of these neighbours (columns are sorted by distance)."""
        if k > self.k:
            raise ValueError(f"asked for {k} neighbours of a {self.k}-NN query")
        return Neighbours(self.idx[:, :k], self.valid[:, :k], self.dist[:, :k])

    def select(self, rows: Tensor) -> Neighbours:
        return Neighbours(self.idx[rows], self.valid[rows], self.dist[rows])


def knn_query(
    k: int,
    support_coord: Tensor,
    support_offset: Tensor,
    query_coord: Tensor | None = None,
    query_offset: Tensor | None = None,
    method: Literal["auto", "kdtree", "cdist"] = "auto",
) -> Neighbours:
    """k nearest neighbours of every query point among the support points of the same segment.

    Without ``query_coord`` the query set is the support set (a point is its own first neighbour, as in
    pointops). ``auto``: CPU tensors use a KD-tree per segment (``pykdtree``, in float64 so the order is
    that of exact distances; about 0.5 s for k=16 on 160k points on one core, against minutes for chunked
    cdist), CUDA tensors ``torch.cdist`` + ``topk`` per segment in query chunks of at most 2^26 distances.
    """
    if query_coord is None:
        query_coord, query_offset = support_coord, support_offset
    if query_offset is None or len(query_offset) != len(support_offset):
        raise ValueError("query and support sets need offsets with one entry per segment each")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    m = query_coord.shape[0]
    device = query_coord.device
    idx = torch.empty(m, k, dtype=torch.long, device=device)
    dist = torch.empty(m, k, dtype=query_coord.dtype, device=device)
    valid = torch.ones(m, k, dtype=torch.bool, device=device)
    use_tree = method == "kdtree" or (method == "auto" and device.type == "cpu")
    if use_tree:
        support_np = support_coord.detach().cpu().to(torch.float64).numpy()
        query_np = query_coord.detach().cpu().to(torch.float64).numpy()
    for b, ((s0, s1), (q0, q1)) in enumerate(zip(_segments(support_offset), _segments(query_offset))):
        if q1 == q0:
            continue
        if s1 == s0:
            raise DataError(
                f"cloud {b} of the batch has {q1 - q0} query points but no support points; "
                f"every cloud needs at least one point at every level (use larger clouds)"
            )
        kk = min(k, s1 - s0)
        if use_tree:
            d, i = KDTree(support_np[s0:s1]).query(query_np[q0:q1], k=kk)
            d, i = d.reshape(q1 - q0, kk), i.reshape(q1 - q0, kk)
            seg_idx = torch.from_numpy(i.astype(np.int64)).to(device) + s0
            seg_dist = torch.from_numpy(d).to(device, dist.dtype)
        else:
            seg_dist, seg_idx = _cdist_topk(query_coord[q0:q1], support_coord[s0:s1], kk)
            seg_idx = seg_idx + s0
        idx[q0:q1, :kk] = seg_idx
        dist[q0:q1, :kk] = seg_dist
        if kk < k:
            idx[q0:q1, kk:] = seg_idx[:, :1]
            dist[q0:q1, kk:] = math.inf
            valid[q0:q1, kk:] = False
    return Neighbours(idx, valid, dist)


def _cdist_topk(query: Tensor, support: Tensor, k: int) -> tuple[Tensor, Tensor]:
    chunk = max(1, CDIST_CHUNK_ELEMENTS // max(1, support.shape[0]))
    dists, idxs = [], []
    for start in range(0, query.shape[0], chunk):
        # the matmul form |q|^2 - 2 q.s + |s|^2 loses ~1e-4 to cancellation in float32: exact differences
        d = torch.cdist(
            query[start : start + chunk].detach(),
            support.detach(),
            compute_mode="donot_use_mm_for_euclid_dist",
        )  # (chunk, S)
        d, i = torch.topk(d, k, dim=1, largest=False, sorted=True)
        dists.append(d)
        idxs.append(i)
    return torch.cat(dists), torch.cat(idxs)


# --- furthest point sampling ---------------------------------------------------------------------------------


def strided_offset(offset: Tensor, stride: int) -> Tensor:
    """Per-segment counts ``n_i // stride`` (pointops ``furthestsampling``), at least 1 per non-empty cloud.

    The official code lets a cloud of fewer than ``stride`` points vanish (count 0), after which its kNN
    queries fail; keeping one point is the only change.
    """
    counts = offset_to_counts(offset)
    new_counts = torch.where(counts > 0, torch.clamp(counts // stride, min=1), counts)
    return torch.cumsum(new_counts, 0)


FPSMethod = Literal["vanilla", "bucket"]


def furthest_point_sampling(
    coord: Tensor, offset: Tensor, new_offset: Tensor, method: FPSMethod = "vanilla"
) -> Tensor:
    """Furthest point sampling per segment; (M,) long rows of ``coord``, in selection order.

    ``vanilla`` (``fpsample.fps_sampling``) starts from each segment's first point like the official pointops
    and is exact, O(n m) (6k -> 1.5k points: 25 ms; 80k -> 20k: about 4 s on one core). ``bucket``
    (``fpsample.bucket_fps_kdline_sampling``, QuickFPS) returns the exact FPS sequence about 30x faster on
    large clouds, but fpsample (0.3.3 and 1.0.2 alike) reads ``start_idx`` as a position in its internally
    kd-reordered copy of the points, so the sequence starts at another (deterministic) point; the tests
    check both statements against the plain loop of ``retrofpn.reference``.
    """
    out = []
    coord_np = coord.detach().cpu().to(torch.float32).numpy()
    for (s0, s1), (n0, n1) in zip(_segments(offset), _segments(new_offset)):
        n, m = s1 - s0, n1 - n0
        if m == 0:
            continue
        if m >= n:
            sel = np.arange(n)
        elif method == "bucket" and n >= 8:
            height = 3 if n < 10_000 else (5 if n < 50_000 else 7)  # QuickFPS paper: bucket 2^h, h 3..9
            sel = fpsample.bucket_fps_kdline_sampling(coord_np[s0:s1], m, height, start_idx=0)
        else:
            sel = fpsample.fps_sampling(coord_np[s0:s1], m, start_idx=0)
        out.append(torch.from_numpy(np.asarray(sel, dtype=np.int64)) + s0)
    if not out:
        return torch.empty(0, dtype=torch.long, device=coord.device)
    return torch.cat(out).to(coord.device)


# --- grid (voxel) pooling and scatter reductions -------------------------------------------------------------


def segment_min(x: Tensor, offset: Tensor) -> Tensor:
    """(N, C) -> (B, C) per-segment minimum (``segment_csr(..., reduce="min")``); empty segments get 0."""
    batch = offset_to_batch(offset)
    out = x.new_zeros(len(offset), x.shape[1])
    index = batch[:, None].expand_as(x)
    return out.scatter_reduce(0, index, x, reduce="amin", include_self=False)


def voxel_cluster(coord: Tensor, offset: Tensor, grid_size: float) -> tuple[Tensor, Tensor]:
    """Cluster id of every point in the grid of ``grid_size`` anchored at each segment's minimum coordinate.

    PTv2 ``GridPool``: ``voxel_grid(coord - start[batch], size, batch, start=0)`` then ``torch.unique``. Keys
    pack (segment, vz, vy, vx) with the segment most significant (torch_cluster's ``grid_cluster`` order), so
    clusters come out grouped by segment. Returns cluster (N,) long in [0, M) and the new offset (B,).
    """
    batch = offset_to_batch(offset)
    start = segment_min(coord, offset)  # (B, 3)
    cell = torch.floor((coord - start[batch]) / grid_size).long()  # (N, 3), >= 0
    keys = pack_keys(cell, batch)
    unique, cluster = torch.unique(keys, sorted=True, return_inverse=True)
    cell_batch = batch.new_zeros(len(unique)).scatter_(0, cluster, batch)
    return cluster, batch_to_offset(cell_batch, len(offset))


def pack_keys(cell: Tensor, batch: Tensor) -> Tensor:
    """Non-negative integer cells (N, 3) + segment ids (N,) -> int64 keys, x fastest, segment slowest."""
    extent = (cell.max(0).values + 1).tolist() if len(cell) else [1, 1, 1]
    if math.prod(extent) * (int(batch.max()) + 1 if len(batch) else 1) >= 2**62:
        raise DataError(f"the grid spans {extent} cells: too many for int64 keys; use a larger grid size")
    return ((batch * extent[2] + cell[:, 2]) * extent[1] + cell[:, 1]) * extent[0] + cell[:, 0]


def scatter_mean(src: Tensor, index: Tensor, size: int) -> Tensor:
    """(N, C) -> (size, C) mean of the rows sharing an index (clusters are never empty here)."""
    out = src.new_zeros(size, src.shape[1])
    return out.scatter_reduce(0, index[:, None].expand_as(src), src, reduce="mean", include_self=False)


def scatter_max(src: Tensor, index: Tensor, size: int) -> Tensor:
    """(N, C) -> (size, C) channel-wise maximum of the rows sharing an index."""
    out = src.new_zeros(size, src.shape[1])
    return out.scatter_reduce(0, index[:, None].expand_as(src), src, reduce="amax", include_self=False)


def scatter_sum(src: Tensor, index: Tensor, size: int) -> Tensor:
    """(N, C) -> (size, C) sum of the rows sharing an index."""
    return src.new_zeros(size, src.shape[1]).index_add_(0, index, src)


# --- interpolation -------------------------------------------------------------------------------------------


def interpolation_weights(neighbours: Neighbours) -> Tensor:
    """(M, k) weights 1/(d + 1e-8), normalised over the valid neighbours (pointops ``interpolation``)."""
    w = torch.where(neighbours.valid, 1.0 / (neighbours.dist + INTERPOLATION_EPS), 0.0)
    return w / w.sum(1, keepdim=True)


def interpolate(feat: Tensor, idx: Tensor, weight: Tensor) -> Tensor:
    """(S, C) support features -> (M, C) at the query points: sum_j weight[:, j] * feat[idx[:, j]]."""
    return (feat[idx] * weight.unsqueeze(-1)).sum(1)  # (M, k, C) -> (M, C)


# --- labels --------------------------------------------------------------------------------------------------


def label_counts(labels: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """(N,) labels -> (N, K) one-hot float counts; ignored labels are all-zero rows (they do not vote)."""
    keep = labels != ignore_index
    if bool(((labels[keep] < 0) | (labels[keep] >= num_classes)).any()):
        bad = labels[keep][(labels[keep] < 0) | (labels[keep] >= num_classes)][0]
        raise DataError(
            f"label {int(bad)} is outside [0, {num_classes}) and is not the ignore label "
            f"{ignore_index}; set model.num_classes / model.ignore_index to match the data"
        )
    counts = torch.zeros(len(labels), num_classes, device=labels.device)
    counts[keep, labels[keep]] = 1.0
    return counts


def counts_to_labels(counts: Tensor, ignore_index: int) -> Tensor:
    """(M, K) class counts -> (M,) argmax (ties: the lowest class id); a cell without votes -> ignore."""
    labels = counts.argmax(1)
    return torch.where(counts.sum(1) > 0, labels, torch.full_like(labels, ignore_index))


def majority_vote(labels: Tensor, cluster: Tensor, size: int, num_classes: int, ignore_index: int) -> Tensor:
    """(N,) point labels -> (size,) label of each cluster by majority of its non-ignored points."""
    return counts_to_labels(
        scatter_sum(label_counts(labels, num_classes, ignore_index), cluster, size), ignore_index
    )


# --- random per-segment subsets (the retro-transformer's level strides) ---------------------------------------


def random_subset(
    offset: Tensor, stride: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """A random ``n_i // stride`` (at least 1) rows of each segment, sorted; returns (rows (M,), offset (B,)).

    Stride 1 returns every row in order without drawing random numbers.
    """
    n = int(offset[-1])
    if stride == 1:
        return torch.arange(n, device=offset.device), offset
    new_offset = strided_offset(offset, stride)
    batch = offset_to_batch(offset)
    key = batch.to(torch.float64) + torch.rand(n, generator=generator, dtype=torch.float64).to(offset.device)
    order = torch.argsort(key)  # rows grouped by segment, shuffled inside each
    starts = offset - offset_to_counts(offset)
    rank = torch.arange(n, device=offset.device) - starts[batch]  # position of order[j] inside its segment
    keep = rank < offset_to_counts(new_offset)[batch]
    rows = order[keep]
    return torch.sort(rows).values, new_offset


# --- the per-level structures of one batch -------------------------------------------------------------------


def _apply(value: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``fn`` on every tensor inside nested dataclasses / lists / objects with an ``apply`` method."""
    if isinstance(value, Tensor):
        return fn(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value, **{f.name: _apply(getattr(value, f.name), fn) for f in dataclasses.fields(value)}
        )
    if isinstance(value, list):
        return [_apply(v, fn) for v in value]
    if hasattr(value, "apply"):  # retrofpn.sparse.CoordinateManager
        return value.apply(fn)
    return value


@dataclass
class Level:
    """One resolution of the backbone (level 1 = full resolution), with its links to the finer level.

    Attributes:
        coord: (n, 3) float positions of this level (PT: FPS-sampled points; PTv2: cluster means; MinkUNet:
            voxel coordinates at the level's tensor stride, in voxel units).
        offset: (B,) long cumulative counts.
        neighbours: within-level kNN used by the attention blocks (None for the MinkUNet).
        sample_idx: (n,) rows of the finer level kept by FPS (PT only; chains the labels).
        down_neighbours: kNN of this level's points among the finer level's points (PT TransitionDown).
        up_idx: (n_finer, 3) nearest points of this level for each finer point (PT TransitionUp).
        up_weight: (n_finer, 3) their normalised inverse-distance weights.
        cluster: (n_finer,) row of this level each finer point pools into (PTv2 grid pooling, MinkUNet stride).
    """

    coord: Tensor
    offset: Tensor
    neighbours: Neighbours | None = None
    sample_idx: Tensor | None = None
    down_neighbours: Neighbours | None = None
    up_idx: Tensor | None = None
    up_weight: Tensor | None = None
    cluster: Tensor | None = None

    @property
    def num_points(self) -> int:
        return self.coord.shape[0]


@dataclass
class RetroLink:
    """Which points of a level the retro-transformer processes and where each looks in the coarser level.

    Attributes:
        rows: (m,) rows of the level kept for the retro-transformer (all rows at stride 1; a random
            ``n_i // stride`` of each segment otherwise).
        offset: (B,) long cumulative counts of those rows.
        neighbours: (m, k) kNN among the coarser level's kept rows (indices into that subset), or among this
            level's own kept rows at the coarsest level (self-attention).
    """

    rows: Tensor
    offset: Tensor
    neighbours: Neighbours


@dataclass
class Hierarchy:
    """Everything about one batch's geometry that does not depend on the network weights.

    Built once per batch (in a data-loader worker, or by the model when absent) by
    ``retrofpn.model.compute_hierarchy``; moved to the training device with :meth:`to`.

    Attributes:
        levels: the five backbone levels, level 1 (full resolution) first.
        retro: one RetroLink per level (level 1 first), or None when the model runs without Retro-FPN.
        sparse: the MinkUNet's ``retrofpn.sparse.CoordinateManager`` (None for the point backbones).
        point_to_voxel: (N,) voxel (level-1 row) of every input point (MinkUNet only; None otherwise).
    """

    levels: list[Level]
    retro: list[RetroLink] | None = None
    sparse: Any = None
    point_to_voxel: Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Hierarchy:
        return _apply(self, lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Hierarchy:
        """Called by ``DataLoader(pin_memory=True)`` on each batch element that has this method."""
        return _apply(self, lambda t: t.pin_memory())

    def level_labels(self, labels: Tensor, num_classes: int, ignore_index: int) -> list[Tensor]:
        """(N,) point labels -> one label tensor per level (level 1 first).

        PT chains the FPS indices (``target[idx2][idx3]...``); grid and voxel levels sum one-hot counts over
        their clusters level by level (the official LabelNet / one-hot grid pooling) and take the argmax,
        ignored points not voting and a cell of ignored points only getting the ignore label.
        """
        out: list[Tensor] = []
        counts: Tensor | None = None
        if self.point_to_voxel is not None:
            counts = scatter_sum(
                label_counts(labels, num_classes, ignore_index),
                self.point_to_voxel,
                self.levels[0].num_points,
            )
            out.append(counts_to_labels(counts, ignore_index))
        else:
            out.append(labels)
        for level in self.levels[1:]:
            if level.sample_idx is not None:
                out.append(out[-1][level.sample_idx])
                continue
            if counts is None:
                counts = label_counts(out[-1], num_classes, ignore_index)
            counts = scatter_sum(counts, level.cluster, level.num_points)
            out.append(counts_to_labels(counts, ignore_index))
        return out

    def retro_labels(self, labels: Tensor, num_classes: int, ignore_index: int) -> list[Tensor]:
        """Labels of the rows each retro-transformer processes (level 1 first)."""
        per_level = self.level_labels(labels, num_classes, ignore_index)
        if self.retro is None:
            return per_level[:1]
        return [lab[link.rows] for lab, link in zip(per_level, self.retro)]


def fps_hierarchy(
    coord: Tensor, offset: Tensor, stride: int, ks: list[int], fps_method: FPSMethod = "vanilla"
) -> list[Level]:
    """Point Transformer levels: FPS by ``stride`` per level, kNN within (k = ks[l]) and down (ks[l]),
    and the 3-NN of every finer point among each coarser level for TransitionUp."""
    levels = [Level(coord, offset, neighbours=knn_query(ks[0], coord, offset))]
    for k in ks[1:]:
        finer = levels[-1]
        new_offset = strided_offset(finer.offset, stride)
        sample_idx = furthest_point_sampling(finer.coord, finer.offset, new_offset, fps_method)
        new_coord = finer.coord[sample_idx]
        up = knn_query(3, new_coord, new_offset, finer.coord, finer.offset)
        levels.append(Level(
            new_coord, new_offset,
            neighbours=knn_query(k, new_coord, new_offset),
            sample_idx=sample_idx,
            down_neighbours=knn_query(k, finer.coord, finer.offset, new_coord, new_offset),
            up_idx=up.idx, up_weight=interpolation_weights(up),
        ))  # fmt: skip
    return levels


def grid_hierarchy(coord: Tensor, offset: Tensor, grid_sizes: list[float], ks: list[int]) -> list[Level]:
    """PTv2 levels: the input points, then one grid pooling per size (cluster mean coordinates), with a
    within-level kNN of ks[l] at every level (blocks that need fewer take the first columns)."""
    levels = [Level(coord, offset, neighbours=knn_query(ks[0], coord, offset))]
    for grid_size, k in zip(grid_sizes, ks[1:]):
        finer = levels[-1]
        cluster, new_offset = voxel_cluster(finer.coord, finer.offset, grid_size)
        new_coord = scatter_mean(finer.coord, cluster, int(new_offset[-1]))
        levels.append(
            Level(new_coord, new_offset, neighbours=knn_query(k, new_coord, new_offset), cluster=cluster)
        )
    return levels


def retro_links(
    levels: list[Level], ks: list[int], strides: list[int], generator: torch.Generator | None = None
) -> list[RetroLink]:
    """The retro-transformer's rows and cross-level kNN per level (level 1 first), built coarsest first.

    Level l keeps a random ``n_i // strides[l]`` of its points per segment (all at stride 1) and looks up
    its ``ks[l]`` nearest kept points of level l+1 in the same segment; the coarsest level looks among its own.
    """
    links: list[RetroLink | None] = [None] * len(levels)
    coarser_coord = coarser_offset = None
    for li in reversed(range(len(levels))):
        level = levels[li]
        rows, offset = random_subset(level.offset, strides[li], generator)
        coord = level.coord[rows]
        if coarser_coord is None:
            neighbours = knn_query(ks[li], coord, offset)
        else:
            neighbours = knn_query(ks[li], coarser_coord, coarser_offset, coord, offset)
        links[li] = RetroLink(rows, offset, neighbours)
        coarser_coord, coarser_offset = coord, offset
    return links  # type: ignore[return-value]
