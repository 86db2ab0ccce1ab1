"""retrofpn.sparse against dense conv3d / conv_transpose3d on zero-filled grids, several clouds, partial occupancy."""

from __future__ import annotations

import pytest
import torch

from retrofpn.reference import dense_sparse_conv
from retrofpn.sparse import (
    CoordinateHash,
    CoordinateManager,
    SparseConv3d,
    SparseTensor,
    kernel_offsets,
    sparse_hierarchy,
    voxelize,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def occupied_voxels(seed: int = 0, size: int = 9, fill: float = 0.3, segments: int = 2, low: int = 0):
    """Unique voxels of ``segments`` clouds in a size^3 box (a fraction ``fill`` occupied), segment-major."""
    g = torch.Generator().manual_seed(seed)
    coords, batch = [], []
    for b in range(segments):
        grid = torch.stack(torch.meshgrid(*[torch.arange(size)] * 3, indexing="ij"), -1).reshape(-1, 3)
        keep = torch.rand(len(grid), generator=g) < fill * (1 + 0.5 * b)  # different sizes per cloud
        coords.append(grid[keep] + low)
        batch.append(torch.full((int(keep.sum()),), b))
    return torch.cat(coords), torch.cat(batch)


def manager(seed: int = 0, **kw) -> CoordinateManager:
    coords, batch = occupied_voxels(seed, **kw)
    return CoordinateManager(coords, batch, int(batch.max()) + 1)


def conv_vs_dense(cm: CoordinateManager, in_stride: int, conv: SparseConv3d, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    coords, batch = cm.coords(in_stride), cm.batch(in_stride)
    feat = torch.randn(len(coords), conv.in_channels, generator=g, dtype=torch.float64)
    out = conv(SparseTensor(feat, in_stride, cm))
    shift = 16  # dense grids need non-negative coordinates; a multiple of every stride keeps the alignment
    dense = dense_sparse_conv(
        feat, coords + shift, batch, conv.weight.detach(), conv.kernel_size, in_stride, conv.stride,
        conv.transposed, cm.coords(out.stride) + shift, cm.batch(out.stride), cm.num_segments,
    )  # fmt: skip
    assert out.feat.shape == (len(cm.coords(out.stride)), conv.out_channels)
    assert torch.allclose(out.feat, dense, atol=1e-10)


@pytest.mark.parametrize("kernel", [3, 5, 2])
def test_stride_one_conv_equals_dense_conv3d(kernel: int) -> None:
    conv = SparseConv3d(3, 4, kernel).double()
    conv_vs_dense(manager(0), 1, conv)


@pytest.mark.parametrize("kernel", [2, 3])
@pytest.mark.parametrize("in_stride", [1, 2])
def test_strided_conv_equals_dense_conv3d(kernel: int, in_stride: int) -> None:
    conv = SparseConv3d(3, 5, kernel, stride=2).double()
    conv_vs_dense(manager(1), in_stride, conv)


@pytest.mark.parametrize("in_stride", [2, 4])
def test_transposed_conv_equals_dense_conv_transpose3d(in_stride: int) -> None:
    conv = SparseConv3d(4, 3, 2, stride=2, transposed=True).double()
    conv_vs_dense(manager(2), in_stride, conv)


def test_negative_coordinates_and_three_clouds() -> None:
    cm = manager(3, low=-5, segments=3)
    for conv, stride in ((SparseConv3d(2, 3, 3).double(), 1), (SparseConv3d(2, 3, 2, stride=2).double(), 2),
                         (SparseConv3d(2, 3, 2, stride=2, transposed=True).double(), 4)):  # fmt: skip
        conv_vs_dense(cm, stride, conv)


def test_gradients_equal_the_dense_path() -> None:
    cm = manager(4, size=6, fill=0.4)
    conv = SparseConv3d(2, 3, 3, stride=2).double()
    feat = torch.randn(len(cm.coords(1)), 2, dtype=torch.float64, requires_grad=True)
    conv(SparseTensor(feat, 1, cm)).feat.pow(2).sum().backward()
    w = conv.weight.detach().clone().requires_grad_(True)
    feat2 = feat.detach().clone().requires_grad_(True)
    dense = dense_sparse_conv(feat2, cm.coords(1) + 8, cm.batch(1), w, 3, 1, 2, False, cm.coords(2) + 8,
                              cm.batch(2), 2)  # fmt: skip
    dense.pow(2).sum().backward()
    assert torch.allclose(feat.grad, feat2.grad, atol=1e-10)
    assert torch.allclose(conv.weight.grad, w.grad, atol=1e-10)


def test_coarser_strides_and_parent_maps() -> None:
    cm = manager(5, low=-3)
    fine, coarse, parent = cm.coords(2), cm.coords(4), cm.parent(4)
    assert torch.equal(coarse[parent], torch.div(fine, 4, rounding_mode="floor") * 4)
    assert torch.equal(cm.batch(4)[parent], cm.batch(2))
    assert len(torch.unique(parent)) == len(coarse)  # every coarse voxel has a child
    assert torch.equal(cm.offset(4), torch.bincount(cm.batch(4)).cumsum(0))


def test_kernel_maps_are_built_once_and_reused_transposed() -> None:
    cm = manager(6)
    assert cm.kernel_map(3, 1, 1) is cm.kernel_map(3, 1, 1)
    down = SparseConv3d(2, 2, 2, stride=2)
    up = SparseConv3d(2, 2, 2, stride=2, transposed=True)
    x = SparseTensor(torch.randn(len(cm.coords(1)), 2), 1, cm)
    y = down(x)
    up_map = up.kernel_map(y)
    assert up_map.in_rows[3] is cm.kernel_map(2, 1, 2).out_rows[3]  # the strided conv's map, read backwards
    assert up(y).feat.shape[0] == len(cm.coords(1))
    # a k2 stride-2 map pairs every fine voxel with exactly one coarse voxel
    assert sum(len(r) for r in cm.kernel_map(2, 1, 2).in_rows) == len(cm.coords(1))


def test_hash_lookup_misses_and_out_of_box_queries() -> None:
    coords = torch.tensor([[0, 0, 0], [2, 1, 0], [0, 0, 0]])
    batch = torch.tensor([0, 0, 1])
    h = CoordinateHash(coords, batch, 2)
    queries = torch.tensor([[2, 1, 0], [0, 0, 0], [1, 1, 0], [-1, 0, 0], [3, 0, 0], [2, 1, 0]])
    assert h.lookup(queries, torch.tensor([0, 1, 0, 0, 0, 1])).tolist() == [1, 2, -1, -1, -1, -1]


def test_kernel_offsets_follow_minkowski_regions() -> None:
    assert kernel_offsets(3).min() == -1 and kernel_offsets(3).max() == 1 and len(kernel_offsets(3)) == 27
    assert kernel_offsets(2).min() == 0 and kernel_offsets(2).max() == 1 and len(kernel_offsets(2)) == 8


def test_voxelize_and_sparse_hierarchy_levels() -> None:
    grid = torch.tensor([[0, 0, 0], [0, 0, 0], [3, 1, 2], [1, 1, 1], [1, 1, 1]])  # duplicates in cloud 0
    offset = torch.tensor([3, 5])
    coords, batch, p2v = voxelize(grid, offset)
    assert len(coords) == 3 and batch.tolist() == [0, 0, 1] and p2v.tolist() == [0, 0, 1, 2, 2]
    h = sparse_hierarchy(grid, offset, 5, [(3, 1, 1)])
    assert [lv.num_points for lv in h.levels] == [3, 3, 2, 2, 2] and h.levels[1].cluster.tolist() == [0, 1, 2]
    assert h.levels[2].offset.tolist() == [1, 2] and h.levels[0].coord.dtype == torch.float32
