"""Sparse 3-D convolution in plain PyTorch: coordinate manager, kernel maps, gather-GEMM-scatter.

Stands in for MinkowskiEngine (Choy et al., CVPR 2019), which the official ``s3dis_scannet_minkowskinet/``
code vendors; neither ME, torchsparse nor spconv installs on these machines, so the same algorithm is written
out here with the torchsparse / ME names:

- :class:`CoordinateManager` holds the active voxels of one batch at every tensor stride (1, 2, 4, ...;
  coordinates stay in stride-1 voxel units, multiples of the stride, as in ME) and caches one
  :class:`KernelMap` per (kernel size, input stride, output stride): built once, reused by every layer and,
  transposed, by the matching upsampling layer.
- A coordinate hash is dict-free: (segment, x, y, z) is packed into one int64 key by a mixed radix over the
  stride's bounding box; the keys are sorted once and looked up with ``torch.searchsorted``.
- :class:`SparseConv3d` is ``out[u] = sum_o W_o x[u + o * s_in]`` over the kernel offsets o (ME's region:
  -(K//2)..K//2 for odd K, 0..K-1 for even K), one gather-GEMM-``index_add_`` per offset. With ``stride=2``
  the outputs are the active voxels of the next tensor stride; ``transposed=True`` runs the map of the
  matching strided conv backwards (``MinkowskiConvolutionTranspose``: outputs = the finer stride's voxels).
- :class:`SparseBatchNorm` is ``BatchNorm1d`` over the active sites (``MinkowskiBatchNorm``).

It works on CPU and CUDA tensors alike; tests compare it with dense ``conv3d`` / ``conv_transpose3d``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from retrofpn.ops import Hierarchy, Level, batch_to_offset, offset_to_batch
from shared.errors import DataError


def _radix(coords: Tensor, batch: Tensor, num_segments: int) -> tuple[Tensor, Tensor]:
    """Lower corner (3,) and extent (3,) of the mixed radix that packs (segment, x, y, z) into int64 keys."""
    low = coords.min(0).values if len(coords) else coords.new_zeros(3)
    extent = (coords.max(0).values - low + 1) if len(coords) else coords.new_ones(3)
    if math.prod(extent.tolist()) * max(num_segments, 1) >= 2**62:
        raise DataError(
            f"voxel coordinates span {extent.tolist()} voxels: too many for int64 keys; use a "
            f"larger voxel size"
        )
    return low, extent


def _pack(coords: Tensor, batch: Tensor, low: Tensor, extent: Tensor) -> Tensor:
    c = coords - low
    return ((batch * extent[0] + c[:, 0]) * extent[1] + c[:, 1]) * extent[2] + c[:, 2]  # segment slowest


def unique_voxels(coords: Tensor, batch: Tensor, num_segments: int) -> tuple[Tensor, Tensor, Tensor]:
    """Unique (segment, voxel) pairs in segment-major order: coords (V, 3), segments (V,), inverse (N,)."""
    keys = _pack(coords, batch, *_radix(coords, batch, num_segments))
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    first = torch.full((len(unique),), len(keys), dtype=torch.long, device=keys.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(keys), device=keys.device), reduce="amin")
    return coords[first], batch[first], inverse


class CoordinateHash:
    """Sorted int64 keys of a set of unique (segment, voxel) pairs; ``lookup`` gives each query's row or -1."""

    def __init__(self, coords: Tensor, batch: Tensor, num_segments: int) -> None:
        self.low, self.extent = _radix(coords, batch, num_segments)
        self.sorted_keys, self.perm = torch.sort(_pack(coords, batch, self.low, self.extent))

    def lookup(self, coords: Tensor, batch: Tensor) -> Tensor:
        """(Q, 3) coords + (Q,) segments -> (Q,) row in the hashed set, -1 where absent."""
        if len(self.sorted_keys) == 0:
            return torch.full((len(coords),), -1, dtype=torch.long, device=coords.device)
        c = coords - self.low
        inside = ((c >= 0) & (c < self.extent)).all(1)  # outside the box: absent (and would alias)
        keys = _pack(torch.where(inside[:, None], coords, self.low), batch, self.low, self.extent)
        pos = torch.searchsorted(self.sorted_keys, keys).clamp_(max=len(self.sorted_keys) - 1)
        found = inside & (self.sorted_keys[pos] == keys)
        return torch.where(found, self.perm[pos], torch.full_like(pos, -1))


def kernel_offsets(kernel_size: int, device: torch.device | None = None) -> Tensor:
    """(K^3, 3) offsets of ME's hyper-cube region, x slowest (the order of a dense kernel's flattening)."""
    lo = -(kernel_size // 2) if kernel_size % 2 else 0
    r = range(lo, lo + kernel_size)
    return torch.tensor(list(itertools.product(r, r, r)), dtype=torch.long, device=device)


@dataclass
class KernelMap:
    """Input/output row pairs per kernel offset.

    Attributes:
        kernel_size: K; the map has K^3 offsets.
        in_rows: per offset, (P_o,) rows of the input tensor.
        out_rows: per offset, (P_o,) rows of the output tensor they contribute to.
        identity: per offset, True when the pairs are every row onto itself (the centre of a stride-1 map),
            so the gather and scatter can be skipped.
        num_in: rows of the input tensor.
        num_out: rows of the output tensor.
    """

    kernel_size: int
    in_rows: list[Tensor]
    out_rows: list[Tensor]
    identity: list[bool]
    num_in: int
    num_out: int

    def transposed(self) -> KernelMap:
        return KernelMap(
            self.kernel_size, self.out_rows, self.in_rows, self.identity, self.num_out, self.num_in
        )

    def apply(self, fn: Callable[[Tensor], Tensor]) -> KernelMap:
        """The same map with ``fn`` applied to every index tensor (``.to(device)``, ``.pin_memory()``)."""
        return KernelMap(self.kernel_size, [fn(t) for t in self.in_rows], [fn(t) for t in self.out_rows],
                         self.identity, self.num_in, self.num_out)  # fmt: skip


class CoordinateManager:
    """Active voxels of one batch per tensor stride, their hashes and the cached kernel maps.

    ``coords`` are unique integer voxel coordinates (N, 3) at tensor stride 1 with the segment id of each row
    in ``batch`` (sorted: rows of a segment are contiguous).
    """

    def __init__(self, coords: Tensor, batch: Tensor, num_segments: int) -> None:
        self.num_segments = num_segments
        self._coords: dict[int, Tensor] = {1: coords.long()}
        self._batch: dict[int, Tensor] = {1: batch.long()}
        self._parent: dict[int, Tensor] = {}
        self._hash: dict[int, CoordinateHash] = {}
        self._maps: dict[tuple[int, int, int], KernelMap] = {}

    def coords(self, stride: int) -> Tensor:
        self._ensure(stride)
        return self._coords[stride]

    def batch(self, stride: int) -> Tensor:
        self._ensure(stride)
        return self._batch[stride]

    def offset(self, stride: int) -> Tensor:
        return batch_to_offset(self.batch(stride), self.num_segments)

    def parent(self, stride: int) -> Tensor:
        """(n_{stride/2},) row at ``stride`` of the voxel each voxel of the half stride falls into."""
        self._ensure(stride)
        return self._parent[stride]

    def _ensure(self, stride: int) -> None:
        if stride in self._coords:
            return
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"tensor strides are powers of two, got {stride}")
        finer = stride // 2
        self._ensure(finer)
        coarse = torch.div(self._coords[finer], stride, rounding_mode="floor") * stride  # (n_f, 3)
        coords, batch, inverse = unique_voxels(coarse, self._batch[finer], self.num_segments)
        self._coords[stride], self._batch[stride], self._parent[stride] = coords, batch, inverse

    def _hashed(self, stride: int) -> CoordinateHash:
        if stride not in self._hash:
            self._hash[stride] = CoordinateHash(self.coords(stride), self.batch(stride), self.num_segments)
        return self._hash[stride]

    def kernel_map(self, kernel_size: int, in_stride: int, out_stride: int) -> KernelMap:
        """Pairs (input row, output row) per offset for a conv from ``in_stride`` to ``out_stride`` voxels.

        Output voxel u, offset o reads input voxel u + o * in_stride (if active). Cached per key.
        """
        key = (kernel_size, in_stride, out_stride)
        if key in self._maps:
            return self._maps[key]
        out_coords, out_batch = self.coords(out_stride), self.batch(out_stride)
        in_hash = self._hashed(in_stride)
        offsets = kernel_offsets(kernel_size, out_coords.device) * in_stride  # (K^3, 3)
        q = (out_coords[None] + offsets[:, None]).reshape(-1, 3)  # (K^3 * M, 3)
        found = in_hash.lookup(q, out_batch.repeat(len(offsets))).view(len(offsets), -1)  # (K^3, M)
        in_rows, out_rows, identity = [], [], []
        arange = torch.arange(found.shape[1], device=found.device)
        same_set = in_stride == out_stride
        for o in range(len(offsets)):
            hit = found[o] >= 0
            if same_set and bool((offsets[o] == 0).all()):
                in_rows.append(arange)
                out_rows.append(arange)
                identity.append(True)
                continue
            in_rows.append(found[o][hit])
            out_rows.append(arange[hit])
            identity.append(False)
        self._maps[key] = KernelMap(
            kernel_size, in_rows, out_rows, identity, len(self.coords(in_stride)), found.shape[1]
        )
        return self._maps[key]

    def apply(self, fn: Callable[[Tensor], Tensor]) -> CoordinateManager:
        """A manager with ``fn`` applied to every tensor (hashes are rebuilt lazily where they are used)."""
        cm = CoordinateManager(fn(self._coords[1]), fn(self._batch[1]), self.num_segments)
        for name in ("_coords", "_batch", "_parent"):
            setattr(cm, name, {s: fn(t) for s, t in getattr(self, name).items()})
        cm._maps = {k: m.apply(fn) for k, m in self._maps.items()}
        return cm

    def to(self, device: torch.device | str, non_blocking: bool = False) -> CoordinateManager:
        return self.apply(lambda t: t.to(device, non_blocking=non_blocking))


@dataclass
class SparseTensor:
    """Features of the active voxels of one tensor stride of a coordinate manager.

    Attributes:
        feat: (n, C) features, one row per active voxel in the manager's order.
        stride: tensor stride (1, 2, 4, ...).
        cm: the coordinate manager shared by every tensor of the batch.
    """

    feat: Tensor
    stride: int
    cm: CoordinateManager

    def replace(self, feat: Tensor) -> SparseTensor:
        return SparseTensor(feat, self.stride, self.cm)


def sparse_cat(*tensors: SparseTensor) -> SparseTensor:
    """Channel concatenation of tensors on the same voxels (``ME.cat``)."""
    if len({t.stride for t in tensors}) != 1:
        raise ValueError("sparse_cat needs tensors of one tensor stride")
    return tensors[0].replace(torch.cat([t.feat for t in tensors], 1))


class SparseConv3d(nn.Module):
    """Sparse convolution / transposed convolution (``MinkowskiConvolution[Transpose]``), weight (K^3, Cin, Cout).

    ``stride`` 1 keeps the voxels; 2 (strided conv) goes to the next tensor stride; ``transposed=True`` with
    stride 2 goes back to the half stride by the transposed kernel map of the strided conv of the same kernel.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 transposed: bool = False, bias: bool = False) -> None:  # fmt: skip
        super().__init__()
        if stride not in (1, 2) or (transposed and stride != 2):
            raise ValueError("stride must be 1 or 2, and a transposed conv needs stride 2")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.transposed = kernel_size, stride, transposed
        volume = kernel_size**3
        self.weight = nn.Parameter(torch.empty(volume, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # ME's reset_parameters: U(-1/sqrt(n), 1/sqrt(n)), n = fan of the gathered side
        bound = 1.0 / math.sqrt((out_channels if transposed else in_channels) * volume)
        nn.init.uniform_(self.weight, -bound, bound)

    def kernel_map(self, x: SparseTensor) -> KernelMap:
        if self.transposed:
            return x.cm.kernel_map(self.kernel_size, x.stride // 2, x.stride).transposed()
        return x.cm.kernel_map(self.kernel_size, x.stride, x.stride * self.stride)

    def forward(self, x: SparseTensor) -> SparseTensor:
        if self.transposed and x.stride < 2:
            raise ValueError("a transposed conv needs an input at tensor stride >= 2")
        kmap = self.kernel_map(x)
        out_stride = x.stride // 2 if self.transposed else x.stride * self.stride
        out = x.feat.new_zeros(kmap.num_out, self.out_channels)  # (n_out, Cout)
        for o, (rows_in, rows_out, same) in enumerate(zip(kmap.in_rows, kmap.out_rows, kmap.identity)):
            if same:
                out = out + x.feat @ self.weight[o]
            elif len(rows_in):
                # gather, GEMM, scatter; under autocast the GEMM is float16 / bfloat16 and the sum stays in
                # the features' dtype
                out.index_add_(0, rows_out, (x.feat[rows_in] @ self.weight[o]).to(out.dtype))
        if self.bias is not None:
            out = out + self.bias
        return SparseTensor(out, out_stride, x.cm)

    def extra_repr(self) -> str:
        kind = "transposed, " if self.transposed else ""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, {kind}"
            f"stride={self.stride}, bias={self.bias is not None}"
        )


class SparseBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over the active voxels (``MinkowskiBatchNorm``)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feat))


class SparseReLU(nn.Module):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(torch.relu(x.feat))


def voxelize(grid_coord: Tensor, offset: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unique (segment, voxel) pairs of the input points (ME's ``SparseTensor`` quantisation).

    Returns voxel coords (V, 3) long, their segment ids (V,) sorted, and the voxel of every point (N,).
    """
    return unique_voxels(grid_coord.long(), offset_to_batch(offset), len(offset))


def sparse_hierarchy(grid_coord: Tensor, offset: Tensor, num_levels: int, kernel_maps: list[tuple[int, int, int]]
                     ) -> Hierarchy:  # fmt: skip
    """MinkUNet levels: voxels at tensor strides 1, 2, ..., 2^(num_levels-1), each level's coordinates (in
    voxel units, as float for the retro kNN), its parent map, and the listed kernel maps built in advance."""
    coords, batch, point_to_voxel = voxelize(grid_coord, offset)
    cm = CoordinateManager(coords, batch, len(offset))
    for key in kernel_maps:
        cm.kernel_map(*key)
    levels = []
    for li in range(num_levels):
        stride = 2**li
        levels.append(
            Level(cm.coords(stride).float(), cm.offset(stride), cluster=cm.parent(stride) if li else None)
        )
    return Hierarchy(levels, sparse=cm, point_to_voxel=point_to_voxel)
