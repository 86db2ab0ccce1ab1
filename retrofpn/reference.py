"""Slow, obviously correct versions of every fast path of the package; the tests compare the two.

Nothing here is used by training. Each function is a plain loop or a dense computation:

- :func:`knn_reference`: the full distance matrix of each segment, float64, stable sort.
- :func:`fps_reference`: the textbook furthest-point-sampling loop (start = the segment's first point).
- :func:`voxel_cluster_reference`: a Python dict from (segment, cell) to cluster id, in (segment, z, y, x) order.
- :func:`interpolate_reference`, :func:`majority_vote_reference`: loops over points.
- :func:`dense_sparse_conv`: a sparse convolution evaluated by a dense ``conv3d`` / ``conv_transpose3d`` on a
  zero-filled grid, read at the active output sites.
- :func:`retro_attention_reference`, :func:`pt_attention_reference`, :func:`gva_reference`: the three
  attention operators computed point by point with explicit sums (modules in eval mode, so BatchNorm is
  a fixed per-channel affine map).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import torch
import torch.nn.functional as F
from torch import Tensor

from retrofpn.ops import Neighbours
from retrofpn.sparse import kernel_offsets


def _bounds(offset: Tensor) -> list[tuple[int, int]]:
    b = [0, *offset.tolist()]
    return list(itertools.pairwise(b))


def knn_reference(
    k: int, support: Tensor, support_offset: Tensor, query: Tensor, query_offset: Tensor
) -> tuple[Tensor, Tensor]:
    """(M, k) global support rows and (M, k) distances, nearest first; -1 / inf beyond the segment's size."""
    idx = torch.full((query.shape[0], k), -1, dtype=torch.long)
    dist = torch.full((query.shape[0], k), math.inf, dtype=torch.float64)
    for (s0, s1), (q0, q1) in zip(_bounds(support_offset), _bounds(query_offset)):
        for i in range(q0, q1):
            d = ((support[s0:s1].double() - query[i].double()) ** 2).sum(1).sqrt()  # (n_s,)
            order = torch.sort(d, stable=True).indices[:k]
            idx[i, : len(order)] = order + s0
            dist[i, : len(order)] = d[order]
    return idx, dist


def fps_reference(
    coord: Tensor, offset: Tensor, new_offset: Tensor, starts: list[int] | None = None
) -> Tensor:
    """Furthest point sampling, one point at a time (float64), from each segment's first point or from
    ``starts[b]`` (a row inside segment b, counted from the segment's start)."""
    out = []
    for b, ((s0, s1), (n0, n1)) in enumerate(zip(_bounds(offset), _bounds(new_offset))):
        pts = coord[s0:s1].double()
        min_d = torch.full((s1 - s0,), math.inf, dtype=torch.float64)
        current = 0 if starts is None else starts[b]
        for _ in range(n1 - n0):
            out.append(current + s0)
            min_d = torch.minimum(min_d, ((pts - pts[current]) ** 2).sum(1))
            current = int(torch.argmax(min_d))
    return torch.tensor(out, dtype=torch.long)


def voxel_cluster_reference(coord: Tensor, offset: Tensor, grid_size: float) -> tuple[Tensor, Tensor]:
    """Cluster of every point and the new offset, by a dict over (segment, z, y, x) cells."""
    keys = []
    for b, (s0, s1) in enumerate(_bounds(offset)):
        start = coord[s0:s1].min(0).values
        for i in range(s0, s1):
            cell = [math.floor(float(v)) for v in (coord[i] - start) / grid_size]
            keys.append((b, cell[2], cell[1], cell[0]))
    ids = {key: j for j, key in enumerate(sorted(set(keys)))}
    cluster = torch.tensor([ids[key] for key in keys], dtype=torch.long)
    counts = Counter(key[0] for key in ids)
    return cluster, torch.tensor([counts[b] for b in range(len(offset))]).cumsum(0)


def interpolate_reference(support: Tensor, support_offset: Tensor, query: Tensor, query_offset: Tensor,
                          feat: Tensor, k: int = 3) -> Tensor:  # fmt: skip
    """Inverse-distance (1/(d+1e-8), normalised) interpolation of ``feat`` from the k nearest support points."""
    idx, dist = knn_reference(k, support, support_offset, query, query_offset)
    out = torch.zeros(query.shape[0], feat.shape[1], dtype=torch.float64)
    for i in range(query.shape[0]):
        ws = [(int(j), 1.0 / (float(d) + 1e-8)) for j, d in zip(idx[i], dist[i]) if j >= 0]
        total = sum(w for _, w in ws)
        for j, w in ws:
            out[i] += w / total * feat[j].double()
    return out


def majority_vote_reference(labels: Tensor, cluster: Tensor, size: int, ignore_index: int) -> Tensor:
    """Most frequent non-ignored label per cluster (ties: the smallest label), else the ignore label."""
    votes: list[Counter] = [Counter() for _ in range(size)]
    for lab, c in zip(labels.tolist(), cluster.tolist()):
        if lab != ignore_index:
            votes[c][lab] += 1
    out = []
    for v in votes:
        if not v:
            out.append(ignore_index)
        else:
            best = max(v.values())
            out.append(min(lab for lab, n in v.items() if n == best))
    return torch.tensor(out, dtype=torch.long)


def dense_sparse_conv(
    feat: Tensor, coords: Tensor, batch: Tensor, weight: Tensor, kernel_size: int, in_stride: int, stride: int,
    transposed: bool, out_coords: Tensor, out_batch: Tensor, num_segments: int,
) -> Tensor:  # fmt: skip
    """The sparse conv ``out[u] = Σ_o W_o x[u + o s_in]`` (or its transpose) evaluated densely.

    ``coords`` (n, 3) are non-negative multiples of the input tensor stride s_in; the dense grid has one cell
    per s_in, zeros at inactive cells. A strided conv is ``conv3d(stride 2, padding K//2 for odd K)``, whose
    output cell v is voxel v·2·s_in; a transposed conv (even K) is ``conv_transpose3d(stride 2)``, whose
    output cell is voxel v·s_in/2. The sparse weight (K^3, Cin, Cout) is laid out as the dense kernel.
    Returns the dense result at ``out_coords`` (m, 3) of segments ``out_batch``.
    """
    offsets = kernel_offsets(kernel_size)
    lo = int(offsets.min())
    k_dense = weight.new_zeros(kernel_size, kernel_size, kernel_size, weight.shape[1], weight.shape[2])
    for o, off in enumerate(offsets.tolist()):
        k_dense[off[0] - lo, off[1] - lo, off[2] - lo] = weight[o]  # (K, K, K, Cin, Cout)
    size = int(coords.max()) // in_stride + kernel_size + 2
    grid = feat.new_zeros(num_segments, feat.shape[1], size, size, size)
    c = coords // in_stride
    grid[batch, :, c[:, 0], c[:, 1], c[:, 2]] = feat
    if transposed:
        dense = F.conv_transpose3d(grid, k_dense.permute(3, 4, 0, 1, 2), stride=2)
        o = out_coords // (in_stride // 2)
    else:
        dense = F.conv3d(grid, k_dense.permute(4, 3, 0, 1, 2), stride=stride, padding=-lo)
        o = out_coords // (in_stride * stride)
    return dense[out_batch, :, o[:, 0], o[:, 1], o[:, 2]]


def retro_attention_reference(attn, query: Tensor, key_value: Tensor, query_coord: Tensor, kv_coord: Tensor,
                              nb: Neighbours) -> Tensor:  # fmt: skip
    """``retrofpn.model.RetroCrossAttention`` (eval mode) one point, one group and one neighbour at a time."""
    g, c = attn.groups, attn.dim // attn.groups
    out = torch.zeros(query.shape[0], attn.dim, dtype=query.dtype)
    for i in range(query.shape[0]):
        q = attn.to_q(query[i])
        scores, values = [], []
        for j, ok in zip(nb.idx[i].tolist(), nb.valid[i].tolist()):
            if not ok:
                continue
            pe = attn.pos_enc((kv_coord[j] - query_coord[i])[None])[0]  # (2G,)
            key = attn.to_k(key_value[j])
            scores.append([
                sum((q[gi * c + ci] + pe[gi]) * (key[gi * c + ci] + pe[g + gi]) for ci in range(c)) / math.sqrt(c)
                for gi in range(g)
            ])  # fmt: skip
            values.append(attn.to_v(key_value[j]))
        for gi in range(g):
            col = torch.stack([s[gi] for s in scores])
            w = torch.exp(col - col.max()) / torch.exp(col - col.max()).sum()
            for wj, v in zip(w, values):
                out[i, gi * c : (gi + 1) * c] += wj * v[gi * c : (gi + 1) * c]
    return out


def pt_attention_reference(layer, x: Tensor, coord: Tensor, nb: Neighbours) -> Tensor:
    """``retrofpn.backbones.pt.PointTransformerLayer`` (eval mode), point by point."""
    planes, s = layer.planes, layer.share_planes
    out = torch.zeros(x.shape[0], planes, dtype=x.dtype)
    for i in range(x.shape[0]):
        rows = [j for j, ok in zip(nb.idx[i].tolist(), nb.valid[i].tolist()) if ok]
        q = layer.linear_q(x[i])
        pos = [layer.linear_p((coord[j] - coord[i])[None])[0] for j in rows]  # δ_ij (C,)
        w = torch.stack([layer.linear_w((layer.linear_k(x[j]) - q + p)[None])[0] for j, p in zip(rows, pos)])
        w = torch.softmax(w, 0)  # over neighbours, per weight channel (k, C/s)
        for wj, j, p in zip(w, rows, pos):
            value = layer.linear_v(x[j]) + p
            for ch in range(planes):
                out[i, ch] += wj[ch % (planes // s)] * value[ch]
    return out


def gva_reference(attn, feat: Tensor, coord: Tensor, nb: Neighbours) -> Tensor:
    """``retrofpn.backbones.ptv2.GroupedVectorAttention`` (eval mode), point by point."""
    c, g = attn.channels, attn.groups
    out = torch.zeros(feat.shape[0], c, dtype=feat.dtype)
    for i in range(feat.shape[0]):
        rows = [j for j, ok in zip(nb.idx[i].tolist(), nb.valid[i].tolist()) if ok]
        q = attn.linear_q(feat[i][None])[0]
        pe = [attn.linear_p_bias((coord[j] - coord[i])[None])[0] for j in rows]
        w = torch.stack([attn.weight_encoding((attn.linear_k(feat[j][None])[0] - q + p)[None])[0]
                         for j, p in zip(rows, pe)])  # fmt: skip
        w = torch.softmax(w, 0)  # (k, G)
        for wj, j, p in zip(w, rows, pe):
            value = attn.linear_v(feat[j]) + p
            for ch in range(c):
                out[i, ch] += wj[ch // (c // g)] * value[ch]
    return out
