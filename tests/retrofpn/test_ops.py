"""retrofpn.ops against the slow loops of retrofpn.reference: kNN, FPS, grid pooling, interpolation, labels."""

from __future__ import annotations

import pytest
import torch

from retrofpn import reference as ref
from retrofpn.ops import (
    Hierarchy,
    Level,
    counts_to_labels,
    fps_hierarchy,
    furthest_point_sampling,
    grid_hierarchy,
    interpolate,
    interpolation_weights,
    knn_query,
    majority_vote,
    offset_to_batch,
    random_subset,
    retro_links,
    scatter_max,
    scatter_mean,
    strided_offset,
    voxel_cluster,
)
from shared.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def clouds(sizes: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coord = torch.rand(sum(sizes), 3, generator=g) * scale
    return coord, torch.tensor(sizes).cumsum(0)


def assert_same_neighbours(
    nb, ref_idx: torch.Tensor, ref_dist: torch.Tensor, support_offset: torch.Tensor
) -> None:
    """Distances equal; neighbour sets equal wherever the k-th distance is not tied with the (k+1)-th."""
    k = nb.k
    valid_ref = ref_idx[:, :k] >= 0
    assert torch.equal(nb.valid, valid_ref)
    assert torch.allclose(nb.dist[nb.valid].double(), ref_dist[:, :k][valid_ref], atol=1e-6)
    assert bool(torch.isinf(nb.dist[~nb.valid]).all())
    for i in range(nb.idx.shape[0]):
        m = int(nb.valid[i].sum())
        tie = m < ref_dist.shape[1] and m == k and abs(float(ref_dist[i, k - 1] - ref_dist[i, k])) < 1e-9
        if not tie:
            assert set(nb.idx[i, :m].tolist()) == set(ref_idx[i, :m].tolist())
        # padded slots repeat the nearest neighbour: a valid row of the query's own segment
        assert bool((nb.idx[i, m:] == nb.idx[i, 0]).all())
    support_batch = offset_to_batch(support_offset)
    assert bool((support_batch[nb.idx] == support_batch[nb.idx[:, :1]]).all())


@pytest.mark.parametrize("method", ["kdtree", "cdist"])
def test_knn_between_two_sets_matches_brute_force(method: str) -> None:
    support, s_off = clouds((40, 5, 25), seed=1)  # the middle cloud has fewer than k=8 points
    query, q_off = clouds((13, 9, 0), seed=2)  # and the last has no query points
    nb = knn_query(8, support, s_off, query, q_off, method=method)
    ref_idx, ref_dist = ref.knn_reference(9, support, s_off, query, q_off)
    assert nb.idx.shape == (22, 8)
    assert not bool(nb.valid[13:].all()) and bool(nb.valid[13:, :5].all())
    assert_same_neighbours(nb, ref_idx, ref_dist, s_off)


@pytest.mark.parametrize("method", ["kdtree", "cdist"])
def test_knn_within_one_set_starts_with_the_point_itself(method: str) -> None:
    coord, offset = clouds((30, 3, 17), seed=3)
    nb = knn_query(6, coord, offset, method=method)
    assert torch.equal(nb.idx[:, 0], torch.arange(50))
    ref_idx, ref_dist = ref.knn_reference(7, coord, offset, coord, offset)
    assert_same_neighbours(nb, ref_idx, ref_dist, offset)


def test_knn_cdist_chunks_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    import retrofpn.ops as ops

    coord, offset = clouds((64, 20), seed=4)
    whole = knn_query(5, coord, offset, method="cdist")
    monkeypatch.setattr(ops, "CDIST_CHUNK_ELEMENTS", 100)  # 1 query row per chunk for the 64-point cloud
    chunked = knn_query(5, coord, offset, method="cdist")
    assert torch.equal(whole.idx, chunked.idx) and torch.equal(whole.dist, chunked.dist)


def test_knn_without_support_points_in_a_cloud_is_a_data_error() -> None:
    support, s_off = torch.rand(4, 3), torch.tensor([4, 4])
    query, q_off = torch.rand(3, 3), torch.tensor([1, 3])
    with pytest.raises(DataError, match="cloud 1"):
        knn_query(2, support, s_off, query, q_off)


def test_neighbours_first_columns_are_the_smaller_knn() -> None:
    coord, offset = clouds((50, 30), seed=5)
    assert torch.equal(knn_query(16, coord, offset).first(8).dist, knn_query(8, coord, offset).dist)


def test_strided_offset_counts_n_over_stride_and_keeps_one_point() -> None:
    offset = torch.tensor([10, 13, 13, 30])  # counts 10, 3, 0, 17
    assert strided_offset(offset, 4).tolist() == [2, 3, 3, 7]  # 2, max(1, 0), 0, 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vanilla_fps_equals_the_plain_loop_from_the_first_point(seed: int) -> None:
    coord, offset = clouds((200, 37, 90), seed=seed)
    new_offset = strided_offset(offset, 4)
    fast = furthest_point_sampling(coord, offset, new_offset, "vanilla")
    assert torch.equal(fast, ref.fps_reference(coord, offset, new_offset))
    assert fast[0] == 0 and fast[50] == 200  # each segment starts at its first point (pointops)


def test_bucket_fps_is_exact_fps_from_its_own_start_point() -> None:
    """fpsample's QuickFPS returns the exact FPS sequence, but not from start_idx: it reads start_idx as a
    position in its kd-reordered copy. So it equals the plain loop started at its own first index."""
    coord, offset = clouds((2000, 300), seed=7)
    new_offset = strided_offset(offset, 4)
    fast = furthest_point_sampling(coord, offset, new_offset, "bucket")
    starts = [int(fast[0]), int(fast[500]) - 2000]
    assert torch.equal(fast, ref.fps_reference(coord, offset, new_offset, starts))
    assert torch.equal(torch.sort(fast[:500]).values, torch.unique(fast[:500]))  # no repeats


def test_voxel_cluster_and_scatter_reductions_match_loops() -> None:
    coord, offset = clouds((120, 1, 60), seed=8, scale=2.0)
    cluster, new_offset = voxel_cluster(coord, offset, 0.5)
    ref_cluster, ref_offset = ref.voxel_cluster_reference(coord, offset, 0.5)
    assert torch.equal(cluster, ref_cluster) and torch.equal(new_offset, ref_offset)
    m = int(new_offset[-1])
    feat = torch.randn(len(coord), 4, generator=torch.Generator().manual_seed(0))
    mean, mx = scatter_mean(coord, cluster, m), scatter_max(feat, cluster, m)
    for c in range(m):
        assert torch.allclose(mean[c], coord[cluster == c].mean(0), atol=1e-6)
        assert torch.equal(mx[c], feat[cluster == c].max(0).values)
    # pooled points stay inside their own cloud
    assert torch.equal(offset_to_batch(new_offset), offset_to_batch(offset).new_zeros(m).scatter_(
        0, cluster, offset_to_batch(offset)))  # fmt: skip


def test_three_nn_interpolation_matches_loop_including_tiny_clouds() -> None:
    support, s_off = clouds((20, 2, 9), seed=9)  # the middle cloud has only 2 support points
    query, q_off = clouds((15, 6, 8), seed=10)
    feat = torch.randn(31, 5, generator=torch.Generator().manual_seed(1))
    nb = knn_query(3, support, s_off, query, q_off)
    w = interpolation_weights(nb)
    assert torch.allclose(w.sum(1), torch.ones(29)) and bool((w[~nb.valid] == 0).all())
    fast = interpolate(feat, nb.idx, w)
    assert torch.allclose(
        fast.double(), ref.interpolate_reference(support, s_off, query, q_off, feat), atol=1e-5
    )


def test_majority_vote_ties_and_ignore() -> None:
    ig = 255
    labels = torch.tensor([1, 1, 2, 2, 3, ig, ig, ig, 0, 4, 4, ig])
    cluster = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 3])
    out = majority_vote(labels, cluster, 5, 5, ig)
    # 0: tie 1 vs 2 -> 1 (lowest id); 1: only ignored -> ignore; 2: 0; 3: 4 beats the ignored; 4: empty -> ignore
    assert out.tolist() == [1, ig, 0, 4, ig]
    assert torch.equal(out, ref.majority_vote_reference(labels, cluster, 5, ig))
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (300,), generator=g)
    labels[torch.rand(300, generator=g) < 0.3] = ig
    cluster = torch.randint(0, 40, (300,), generator=g)
    assert torch.equal(
        majority_vote(labels, cluster, 40, 4, ig), ref.majority_vote_reference(labels, cluster, 40, ig)
    )
    assert counts_to_labels(torch.zeros(2, 3), ig).tolist() == [ig, ig]


def test_labels_out_of_range_are_a_data_error() -> None:
    with pytest.raises(DataError, match="num_classes"):
        majority_vote(torch.tensor([0, 7]), torch.tensor([0, 0]), 1, 5, 255)


def test_random_subset_is_seeded_sorted_and_per_segment() -> None:
    offset = torch.tensor([40, 43, 100])
    rows, new_offset = random_subset(offset, 4, torch.Generator().manual_seed(3))
    again, _ = random_subset(offset, 4, torch.Generator().manual_seed(3))
    other, _ = random_subset(offset, 4, torch.Generator().manual_seed(4))
    assert new_offset.tolist() == [10, 11, 25] and torch.equal(rows, again) and not torch.equal(rows, other)
    assert torch.equal(rows, torch.sort(rows).values) and len(torch.unique(rows)) == 25
    batch = offset_to_batch(offset)
    assert torch.bincount(batch[rows], minlength=3).tolist() == [10, 1, 14]
    ident, same = random_subset(offset, 1)
    assert torch.equal(ident, torch.arange(100)) and torch.equal(same, offset)


def test_fps_hierarchy_chains_labels_through_the_sampling_indices() -> None:
    coord, offset = clouds((300, 170), seed=11)
    levels = fps_hierarchy(coord, offset, 4, [8, 16, 16, 16, 16])
    assert [lv.num_points for lv in levels] == [470, 117, 28, 6, 2]  # (300, 170) -> 75+42, 18+10, 4+2, 1+1
    labels = torch.randint(0, 5, (470,), generator=torch.Generator().manual_seed(0))
    per_level = Hierarchy(levels).level_labels(labels, 5, 255)
    chained = labels[levels[1].sample_idx][levels[2].sample_idx][levels[3].sample_idx]
    assert torch.equal(per_level[3], chained)
    assert torch.equal(levels[2].coord, coord[levels[1].sample_idx][levels[2].sample_idx])
    # the coarsest level has 1 point per cloud (< 16): its kNN is padded, valid slots only in the segment
    assert not bool(levels[4].neighbours.valid[:, 1:].any())


def test_grid_hierarchy_label_counts_chain_to_a_vote_over_all_points() -> None:
    coord, offset = clouds((400, 250), seed=12, scale=3.0)
    levels = grid_hierarchy(coord, offset, [0.3, 0.8, 1.5, 3.0], [8, 8, 8, 8, 8])
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (650,), generator=g)
    labels[torch.rand(650, generator=g) < 0.2] = 255
    per_level = Hierarchy(levels).level_labels(labels, 3, 255)
    direct = torch.arange(650)
    for li in range(1, 5):
        direct = levels[li].cluster[direct]  # every original point's cell at level li
        assert torch.equal(
            per_level[li], ref.majority_vote_reference(labels, direct, levels[li].num_points, 255)
        )


def test_retro_links_look_up_the_coarser_kept_rows_of_the_same_cloud() -> None:
    coord, offset = clouds((300, 120), seed=13)
    levels = fps_hierarchy(coord, offset, 4, [8, 8, 8, 8, 8])
    links = retro_links(levels, [4, 4, 6, 4, 4], [1, 4, 1, 1, 1], torch.Generator().manual_seed(0))
    assert len(links[0].rows) == 420 and links[1].offset.tolist() == [18, 25]  # 75 // 4, 30 // 4
    for li in range(4):
        coarse = links[li + 1]
        assert int(links[li].neighbours.idx.max()) < len(coarse.rows)
        q_batch = offset_to_batch(links[li].offset)
        assert bool((offset_to_batch(coarse.offset)[links[li].neighbours.idx] == q_batch[:, None]).all())
    assert torch.equal(links[4].neighbours.idx[:, 0], torch.arange(len(links[4].rows)))  # self-attention


def test_hierarchy_to_moves_every_tensor() -> None:
    coord, offset = clouds((50, 40), seed=14)
    h = Hierarchy(fps_hierarchy(coord, offset, 4, [4] * 5))
    h.retro = retro_links(h.levels, [4] * 5, [1] * 5)
    moved = h.to("cpu")
    assert isinstance(moved.levels[1], Level) and torch.equal(
        moved.levels[1].up_weight, h.levels[1].up_weight
    )
    assert torch.equal(moved.retro[2].neighbours.idx, h.retro[2].neighbours.idx)
    if torch.cuda.is_available():
        assert h.to("cuda").levels[3].neighbours.idx.is_cuda
