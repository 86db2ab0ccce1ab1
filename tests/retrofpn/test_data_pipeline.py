"""retrofpn.data pipelines: voxelisation, crops, augmentation ranges, determinism, collate, test-time voting."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from retrofpn.data import (
    DataConfig,
    SceneDataset,
    collate,
    make_loader,
    official_data_config,
    set_epoch,
    vote_scene,
)
from retrofpn.data import transforms as T
from retrofpn.data.dataset import Collate, EpochShuffle
from retrofpn.data.voting import PTV2_TEST_AUGMENTATIONS, evaluate_scenes, overlapping_crops, test_passes
from tests.retrofpn.data_helpers import random_scene

SCENE = random_scene(4000, seed=3)


def cfg_for(pipeline: str, **kw) -> DataConfig:
    small = dict(voxel_size=0.1, voxel_max=600, test_voxel_max=500 if pipeline == "pt" else 0, loop=1)
    base = {"pt": {}, "mink": {}, "ptv2": dict(dataset="s3dis", root="unused", num_classes=13,
            class_names=DataConfig().class_names, segment_file="segment.npy", train_dirs=[], test_dirs=[])}[pipeline]  # fmt: skip
    return official_data_config(pipeline, **{**base, **small, **kw})


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------------- voxels


def test_voxels_group_every_point_once_and_passes_cover_all():
    vox = T.voxelize(SCENE.coord, 0.2)
    assert np.array_equal(np.sort(vox.order), np.arange(len(SCENE)))
    cells = np.floor(SCENE.coord / 0.2).astype(np.int64)
    cells -= cells.min(axis=0)
    np.testing.assert_array_equal(vox.grid, cells)
    for v in range(0, len(vox.count), 37):  # every point of voxel v shares its cell
        members = vox.order[vox.start[v] : vox.start[v] + vox.count[v]]
        assert (cells[members] == cells[members[0]]).all() and (vox.inverse[members] == v).all()
    assert len(np.unique(cells, axis=0)) == len(vox.count)
    seen = np.concatenate([vox.nth_point(i) for i in range(vox.passes)])
    assert np.array_equal(np.unique(seen), np.arange(len(SCENE)))
    pick = vox.random_point(rng())
    assert len(pick) == len(vox.count) and np.array_equal(
        np.sort(vox.inverse[pick]), np.arange(len(vox.count))
    )


def test_nearest_crop_is_the_k_closest():
    center = SCENE.coord[10]
    keep = T.nearest(SCENE.coord, center, 300)
    d = np.square(SCENE.coord - center).sum(1)
    assert len(keep) == 300 and d[keep].max() <= np.sort(d)[299] + 1e-12


# ---------------------------------------------------------------------------------------------- pipelines


@pytest.mark.parametrize("pipeline", ["pt", "mink", "ptv2"])
def test_training_sample_contract_and_determinism(pipeline):
    cfg = cfg_for(pipeline)
    a, b = T.train_sample(SCENE, cfg, rng(5)), T.train_sample(SCENE, cfg, rng(5))
    c = T.train_sample(SCENE, cfg, rng(6))
    n = len(a["coord"])
    assert 0 < n <= cfg.voxel_max
    assert (
        a["coord"].dtype == np.float32
        and a["feat"].dtype == np.float32
        and a["feat"].shape == (n, cfg.in_channels)
    )
    assert (
        a["segment"].dtype == np.int64
        and a["grid_coord"].dtype == np.int64
        and a["grid_coord"].shape == (n, 3)
    )
    np.testing.assert_array_equal(a["segment"], SCENE.segment[a["index"]])  # labels follow their points
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["index"], c["index"])
    if pipeline == "pt":
        assert np.allclose(a["coord"].min(axis=0), 0) and 0 <= a["feat"].min() and a["feat"].max() <= 1
        assert len(np.unique(a["grid_coord"], axis=0)) == n  # one point per voxel
    if pipeline == "mink":
        np.testing.assert_array_equal(a["coord"], a["grid_coord"])  # integer voxel coordinates
        assert len(np.unique(a["grid_coord"], axis=0)) == n and -1 <= a["feat"].min() and a["feat"].max() <= 1
    if pipeline == "ptv2":  # feat = coord, normal, colour/127.5-1; centred in x-y
        np.testing.assert_allclose(a["feat"][:, :3], a["coord"])
        np.testing.assert_allclose(np.linalg.norm(a["feat"][:, 3:6], axis=1), 1, atol=1e-4)
        assert -1 <= a["feat"][:, 6:].min() and a["feat"][:, 6:].max() <= 1


def test_pt_crop_is_the_nearest_voxels_of_one_random_point():
    cfg = cfg_for("pt", augment=False, voxel_max=400)
    sample = T.train_sample(SCENE, cfg, rng(2))
    # the same draws by hand: one random point per voxel, a random centre, its 400 nearest voxels
    r = rng(2)
    data = T.min_shift(T.scene_data(SCENE))
    pick = T.voxelize(data["coord"], cfg.voxel_size).random_point(r)
    coord = data["coord"][pick]
    centre = coord[r.integers(len(pick))]
    expected = pick[np.argsort(np.square(coord - centre).sum(1))[:400]]
    assert len(sample["index"]) == 400 and set(sample["index"]) == set(expected)


def test_augmentations_stay_in_their_ranges():
    data = T.scene_data(SCENE)
    extent = np.ptp(data["coord"], axis=0)
    for s in range(20):
        scaled = T.random_scale({k: v.copy() for k, v in data.items()}, rng(s), 0.9, 1.1)
        ratio = np.ptp(scaled["coord"], axis=0) / extent
        assert np.allclose(ratio, ratio[0]) and 0.9 <= ratio[0] <= 1.1
        moved = T.color_translation({k: v.copy() for k, v in data.items()}, rng(s), 1.0, 0.05)
        shift = moved["color"] - data["color"]
        interior = (data["color"] > 20) & (data["color"] < 235)
        assert np.abs(shift[interior]).max() <= 0.05 * 255 + 1e-4
        assert np.allclose(
            shift[interior[:, 0], 0], shift[interior[:, 0], 0][0], atol=1e-4
        )  # one shift a channel
        jittered = T.color_jitter({k: v.copy() for k, v in data.items()}, rng(s), 1.0, 0.005)
        assert 0 <= jittered["color"].min() and jittered["color"].max() <= 255
        assert np.abs(jittered["color"] - data["color"]).std() < 0.005 * 255 * 1.2
        hsv = T.hue_saturation({k: v.copy() for k, v in data.items()}, rng(s), 0.5, 0.2)
        assert 0 <= hsv["color"].min() and hsv["color"].max() <= 255
        # a hue/saturation change keeps the value channel (max of rgb) up to the integer truncation
        assert np.abs(hsv["color"].max(1) - data["color"].max(1)).max() <= 1.0
        contrast = T.auto_contrast({k: v.copy() for k, v in data.items()}, rng(s), 1.0)
        assert -1e-3 <= contrast["color"].min() and contrast["color"].max() <= 255 + 1e-3
        dist = T.elastic_distortion(data["coord"], rng(s), 0.2, 0.4)
        assert np.abs(dist - data["coord"]).max() < 0.4 * 3  # smoothed unit noise times the magnitude
        flipped = T.random_flip({k: v.copy() for k, v in data.items()}, rng(s), 0.5)
        assert np.allclose(np.abs(flipped["coord"]), np.abs(data["coord"]))
    unchanged = T.hue_saturation({k: v.copy() for k, v in data.items()}, rng(0), 0.0, 0.0)
    np.testing.assert_array_equal(unchanged["color"], data["color"])
    identity = T.hue_saturation({k: v.copy() for k, v in data.items()}, rng(0), 1e-12, 1e-12)
    np.testing.assert_array_equal(
        identity["color"], data["color"]
    )  # the rgb-hsv round trip is exact on integers


def test_mink_voxelizer_rotation_and_scale_bounds():
    cfg = cfg_for("mink", voxel_size=0.05)
    flat = T.scene_data(SCENE)["coord"]
    for s in range(10):
        grid, first, inverse = T.mink_voxelize(flat, rng(s), cfg)
        assert grid.min() == 0 and np.array_equal(grid[inverse][first], grid)
        # z extent after a tilt of at most pi/64 and a scale in [0.9, 1.1]
        z_extent = np.ptp(grid[:, 2]) * cfg.voxel_size
        assert 0.9 * 2.5 - 0.3 < z_extent < 1.1 * 2.5 + 0.5


def test_ptv2_dropout_and_centre_shift():
    cfg = cfg_for("ptv2", dropout_p=1.0, voxel_max=0, voxel_size=0.01)
    data = T.random_dropout(T.scene_data(SCENE), rng(1), 0.2, 1.0)
    assert len(data["coord"]) == int(len(SCENE) * 0.8) and len(np.unique(data["index"])) == len(data["coord"])
    shifted = T.center_shift(T.scene_data(SCENE), apply_z=True)
    low, high = shifted["coord"].min(0), shifted["coord"].max(0)
    np.testing.assert_allclose([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]], 0, atol=1e-5)
    assert T.train_sample(SCENE, cfg, rng(0))["feat"].shape[1] == 9


def test_missing_feature_channel_is_a_data_error():
    from shared.errors import DataError

    scene = dataclasses.replace(SCENE, normal=None)
    with pytest.raises(DataError, match=r"asks for 'normal'.*remove it from data\.feat_keys"):
        T.train_sample(scene, cfg_for("ptv2"), rng(0))


# --------------------------------------------------------------------------------------------- dataset


def test_dataset_loop_epochs_and_collate_offsets():
    scenes = [random_scene(1500, seed=s, name=f"r{s}") for s in range(3)]
    ds = SceneDataset(cfg_for("pt"), "train", seed=4, scenes=scenes, loop=2)
    assert len(ds) == 6 and ds.scene(4).name == "r1"
    first = ds[4]
    ds.set_epoch(1)
    assert not np.array_equal(first["index"], ds[4]["index"])
    ds.set_epoch(0)
    np.testing.assert_array_equal(first["index"], ds[4]["index"])
    batch = collate([ds[0], ds[1], ds[2]])
    sizes = [len(ds[i]["coord"]) for i in range(3)]
    assert batch["offset"].tolist() == np.cumsum(sizes).tolist() and batch["offset"].dtype == torch.int64
    assert batch["coord"].shape == (sum(sizes), 3) and batch["segment"].dtype == torch.int64
    assert batch["grid_coord"].dtype == torch.int64 and "key" not in batch


def test_mix3d_merges_pairs_reproducibly_and_hook_sees_the_batch():
    scenes = [random_scene(800, seed=s) for s in range(4)]
    ds = SceneDataset(cfg_for("ptv2", mix_prob=1.0), "train", seed=0, scenes=scenes)
    seen = []

    def hook(batch):
        seen.append(batch["offset"].clone())
        batch["levels"] = len(batch["offset"])
        return batch

    samples = [ds[i] for i in range(4)]
    merged = Collate(1.0, hook)(samples)
    sizes = np.cumsum([len(s["coord"]) for s in samples])
    assert merged["offset"].tolist() == [sizes[1], sizes[3]] and merged["levels"] == 2
    assert seen[0].tolist() == merged["offset"].tolist()
    assert Collate(0.0)(samples)["offset"].tolist() == sizes.tolist()
    odd = Collate(1.0)(samples[:3])["offset"].tolist()
    assert odd == [sizes[1], sizes[2]]
    draws = [Collate(0.5)([ds[i], ds[i + 1]])["offset"].tolist() for i in (0, 1, 2)]
    assert draws == [Collate(0.5)([ds[i], ds[i + 1]])["offset"].tolist() for i in (0, 1, 2)]


def test_loader_is_reproducible_per_epoch_and_shards_ranks():
    scenes = [random_scene(600, seed=s) for s in range(5)]
    ds = SceneDataset(cfg_for("pt"), "train", seed=9, scenes=scenes, loop=2)
    loader = make_loader(ds, batch_size=2, drop_last=True)

    def epoch_indices(e):
        set_epoch(loader, e)
        return [b["index"][:5].tolist() for b in loader]

    assert len(loader) == 5 and epoch_indices(3) == epoch_indices(3) and epoch_indices(3) != epoch_indices(4)
    ranks = [list(EpochShuffle(10, 1, rank=r, world_size=3)) for r in range(3)]
    assert {i for r in ranks for i in r} == set(range(10)) and [len(r) for r in ranks] == [4, 4, 4]
    assert list(EpochShuffle(4, 0, shuffle=False)) == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------------- voting


def oracle(batch):
    """Scores that put all mass on each point's own label (what a perfect model returns)."""
    return torch.nn.functional.one_hot(batch["segment"].clamp(min=0), 13).float() * 5


@pytest.mark.parametrize("pipeline", ["pt", "mink", "ptv2"])
def test_voting_covers_every_point_and_reproduces_a_known_labelling(pipeline):
    scene = random_scene(2500, seed=8)
    cfg = cfg_for(pipeline, test_augmentations={"pt": 1, "mink": 3, "ptv2": 3}[pipeline], voxel_size=0.15)
    result = vote_scene(scene, oracle, cfg)
    assert result.scores.shape == (len(scene), 13) and result.hits.min() >= 1
    if pipeline == "mink":  # a voxel's score goes to all its points: exact only where voxels are pure
        assert result.hits.tolist() == [3] * len(scene)
        assert (result.prediction == scene.segment).mean() > 0.3
        labelled = dataclasses.replace(scene, segment=np.zeros(len(scene), np.int64) + 4)
        assert (vote_scene(labelled, oracle, cfg).prediction == 4).all()
    else:
        np.testing.assert_array_equal(result.prediction, scene.segment)
    if pipeline == "ptv2":  # softmax votes: each hit adds a probability vector summing to 1
        np.testing.assert_allclose(result.scores.sum(1), result.hits, rtol=1e-5)


def test_pt_voting_equals_a_plain_loop_over_the_passes():
    scene = random_scene(2000, seed=1)
    cfg = cfg_for("pt", voxel_size=0.2, test_voxel_max=300, test_batch=3)
    weights = torch.randn(3, 13)

    def linear(batch):
        return batch["feat"] @ weights

    got = vote_scene(scene, linear, cfg)
    want = np.zeros((len(scene), 13))
    hits = np.zeros(len(scene), int)
    for p in test_passes(scene, cfg, np.random.default_rng(2023)):
        np.add.at(want, p.sample["index"], (torch.from_numpy(p.sample["feat"]) @ weights).numpy())
        np.add.at(hits, p.sample["index"], 1)
        assert len(p.sample["coord"]) <= 300 and np.allclose(p.sample["coord"].min(0), 0)
    np.testing.assert_allclose(got.scores, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(got.hits, hits)


def test_overlapping_crops_cover_and_respect_the_budget():
    crops = overlapping_crops(SCENE.coord, 700, rng(0))
    assert all(len(c) == 700 for c in crops) and len(np.unique(np.concatenate(crops))) == len(SCENE)
    assert len(overlapping_crops(SCENE.coord[:100], 700, rng(0))) == 1


def test_ptv2_has_the_13_official_test_augmentations_and_metrics_use_all_points():
    assert len(PTV2_TEST_AUGMENTATIONS) == 13 and PTV2_TEST_AUGMENTATIONS[-1] == (0.0, 1.0, True)
    scenes = [random_scene(900, seed=s) for s in range(2)]
    matrix, preds = evaluate_scenes(scenes, oracle, cfg_for("pt", voxel_size=0.2))
    assert (
        matrix.matrix.sum() == 1800
        and matrix.compute()["miou"] == 1.0
        and [len(p) for p in preds] == [900, 900]
    )
    with pytest.raises(ValueError, match=r"predict returned shape \(\d+, 12\)"):
        vote_scene(scenes[0], lambda b: torch.zeros(len(b["coord"]), 12), cfg_for("pt"))
