"""The embedded data: synthetic rooms (classes, determinism, the S3DIS layout), prepare (idempotent), the LiDAR
check, and the "bring your own data" examples of the package README run on the fixtures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from retrofpn import prepare as prep
from retrofpn.data import (
    SceneDataset,
    lidar_check_config,
    list_scenes,
    load_scene,
    make_loader,
    meshes,
    rooms,
    vote_scene,
)
from retrofpn.data.config import S3DIS_CLASSES, DataConfig
from retrofpn.data.s3dis import read_room
from shared.config import load_config
from tests.retrofpn.data_helpers import FIXTURES

REPO = Path(__file__).resolve().parents[2]
RAW = REPO / "data" / "retrofpn" / "raw"


def fake_assets() -> dict[str, meshes.Mesh]:
    """Stand-ins for the registry meshes (no download in the fast suite): boxes and spheres."""
    box = o3d.geometry.TriangleMesh.create_box(1, 1, 1).translate((-0.5, -0.5, 0))
    ball = o3d.geometry.TriangleMesh.create_sphere(0.5, resolution=6).translate((0, 0, 0.5))
    names = [*meshes.ASSET_FILES, *(f"random_{i:03d}" for i in range(meshes.N_RANDOM_OBJECTS))]
    out = {}
    for i, name in enumerate(names):
        m = ball if i % 3 == 0 else box
        out[name] = meshes.Mesh(name, np.asarray(m.vertices).copy(), np.asarray(m.triangles).copy())
    return out


ASSETS = fake_assets()


def small_area(seed: int, area: int, n_rooms: int = 3) -> list[tuple[str, np.ndarray]]:
    return list(rooms.area_rooms(seed, area, n_rooms, (2500, 3500), ASSETS))


def test_an_area_of_three_rooms_has_all_13_classes_and_is_deterministic():
    first = small_area(0, 5)
    names = [n for n, _ in first]
    assert names == ["Area_5_conferenceRoom_1", "Area_5_office_1", "Area_5_lounge_1"]
    labels = np.concatenate([r[:, 6] for _, r in first]).astype(int)
    assert set(labels.tolist()) == set(range(13)), sorted(set(range(13)) - set(labels.tolist()))
    for (_, a), (_, b) in zip(first, small_area(0, 5)):
        np.testing.assert_array_equal(a, b)
    other = small_area(1, 5)
    assert not np.array_equal(first[0][1][:100], other[0][1][:100])
    for _, room in first:
        assert room.dtype == np.float32 and room.shape[1] == 7 and 1500 < len(room) < 4000
        rgb = room[:, 3:6]
        assert rgb.min() >= 0 and rgb.max() <= 255 and np.array_equal(rgb, np.round(rgb))
        assert np.isfinite(room).all()


def test_rooms_look_like_scans():
    (_, room), *_ = small_area(3, 1, 1)
    z = room[:, 2]
    floor, ceiling = (
        room[room[:, 6] == S3DIS_CLASSES.index("floor")],
        room[room[:, 6] == S3DIS_CLASSES.index("ceiling")],
    )
    assert abs(np.median(floor[:, 2])) < 0.05 and np.median(ceiling[:, 2]) > 2.4 and z.max() < 4.0
    assert floor[:, 2].std() > 0.0005  # range noise: the floor is not a perfect plane
    walls = room[room[:, 6] == S3DIS_CLASSES.index("wall")]
    assert len(walls) > 0.1 * len(room) and walls[:, 3:6].std(0).max() > 2  # colour noise


def test_thinning_caps_points_per_cell_and_keeps_sparse_cells():
    from retrofpn.data.scanner import thin
    from retrofpn.data.transforms import voxelize

    r = np.random.default_rng(0)
    dense = np.concatenate(
        [r.random((3000, 3)) * 0.2, r.random((500, 3)) * 3 + 1]
    )  # a dense corner, a sparse room
    keep = thin(dense, r, 0.04, 3)
    counts = voxelize(dense[keep] - dense.min(0), 0.04).count
    assert counts.max() == 3 and len(np.unique(keep)) == len(keep)
    full = voxelize(dense - dense.min(0), 0.04)
    assert len(counts) == len(full.count)  # every occupied cell keeps at least one point
    assert np.array_equal(
        thin(dense, np.random.default_rng(5), 0.04, 3), thin(dense, np.random.default_rng(5), 0.04, 3)
    )
    (_, room), *_ = small_area(0, 1, 1)
    assert voxelize(room[:, :3] - room[:, :3].min(0), 0.04).count.max() <= 4  # 3, or 4 by float32 rounding


def test_synthetic_rooms_round_trip_through_the_s3dis_reader(tmp_path):
    for name, room in small_area(0, 2, 2):
        np.save(tmp_path / f"{name}.npy", room)
    for name, room in small_area(0, 5, 1):
        np.save(tmp_path / f"{name}.npy", room)
    cfg = DataConfig(root=str(tmp_path))
    test = list_scenes(cfg, "test")
    assert [r.name for r in test] == ["Area_5_conferenceRoom_1"]
    scene = load_scene(test[0], cfg)
    np.testing.assert_array_equal(scene.segment, small_area(0, 5, 1)[0][1][:, 6])
    assert len(list_scenes(cfg, "train")) == 2


@pytest.fixture
def tiny_prepare(tmp_path, monkeypatch):
    """prepare() with stand-in assets and tiny rooms (no registry access)."""
    monkeypatch.setattr(prep.meshes, "fetch_assets", lambda raw, force=False: {
        "pybullet": {"source": {"package": "pybullet", "version": "3.2.7", "sha256": "p"}, "licence": "zlib"},
        "metaworld": {"source": {"package": "metaworld", "version": "3.1.1", "sha256": "m"}, "licence": "MIT"},
    })  # fmt: skip
    monkeypatch.setattr(prep.meshes, "load_assets", lambda raw: ASSETS)
    cfg = prep.PrepareConfig(root=str(tmp_path / "retrofpn"), areas=5, rooms_per_area=2, quick_rooms_per_area=1,
                             points_min=1500, points_max=2000, lidar=False)  # fmt: skip
    return cfg


def test_prepare_writes_the_archive_layout_and_a_second_run_does_nothing(tiny_prepare):
    cfg = tiny_prepare
    info = prep.prepare(cfg, quick=True)
    folder = Path(cfg.root) / "synthetic_rooms" / "trainval_fullarea"
    files = sorted(p.name for p in folder.iterdir())
    assert files == [f"Area_{a}_conferenceRoom_1.npy" for a in range(1, 6)] and set(info["files"]) == set(
        files
    )
    manifest = json.loads((folder.parent / "manifest.json").read_text())
    assert manifest["synthetic"] is True and "SYNTHETIC" in manifest["name"]
    assert info["areas"]["Area_5"]["rooms"] == ["Area_5_conferenceRoom_1"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = prep.prepare(cfg, quick=True)
    assert again == info and {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    full = prep.prepare(cfg)  # another config (full build): rebuilt, stale rooms removed
    assert len(full["files"]) == 10 and len(list(folder.iterdir())) == 10
    np.save(folder / "Area_1_office_1.npy", np.zeros((3, 7), np.float32))  # a damaged file is rebuilt
    rebuilt = prep.prepare(cfg)
    assert read_room(folder / "Area_1_office_1.npy", DataConfig(root=str(folder))).coord.shape[0] > 1000
    assert rebuilt["files"] == full["files"]  # deterministic: the same bytes again


def test_prepare_cli_rejects_an_impossible_config(tmp_path, capsys):
    from shared.errors import run_cli

    assert run_cli(prep.main, ["--root", str(tmp_path), "--set", "areas=4"]) == 2
    assert "Area_5" in capsys.readouterr().err


def test_every_prepare_config_field_has_an_attributes_line():
    import dataclasses

    doc = prep.PrepareConfig.__doc__.split("Attributes:")[1]
    assert [f.name for f in dataclasses.fields(prep.PrepareConfig)] == re.findall(
        r"^\s{8}(\w+): ", doc, flags=re.M
    )


# ------------------------------------------------------------------------------- bring your own data


def readme_examples() -> dict[str, str]:
    """The YAML blocks of retrofpn/README.md that start with ``# example: <name>``."""
    text = (REPO / "retrofpn" / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(# example: (\w+)\n.*?)```", text, flags=re.S)
    return {name: body for body, name in blocks}


EXAMPLE_ROOTS = {
    "s3dis": FIXTURES / "s3dis" / "trainval_fullarea",
    "pointcept_s3dis": FIXTURES / "pointcept_s3dis",
    "pointcept_scannet": FIXTURES / "pointcept_scannet",
    "scannet": FIXTURES / "scannet",
    "las": FIXTURES / "las",
}


def test_the_readme_has_every_example():
    assert set(readme_examples()) == set(EXAMPLE_ROOTS)


@pytest.mark.parametrize("name", sorted(EXAMPLE_ROOTS))
def test_bring_your_own_data_examples_run_on_the_fixtures(name, tmp_path):
    from dataclasses import dataclass, field

    @dataclass
    class Wrapper:
        data: DataConfig = field(default_factory=DataConfig)

    path = tmp_path / "config.yaml"
    path.write_text(readme_examples()[name])
    cfg = load_config(Wrapper, path, [f"data.root={EXAMPLE_ROOTS[name]}", "data.voxel_size=0.5"]).data
    ds = SceneDataset(cfg, "train", seed=0)
    batch = next(iter(make_loader(ds, batch_size=2, drop_last=False)))
    assert batch["feat"].shape[1] == cfg.in_channels and batch["offset"][-1] == len(batch["coord"])
    labels = batch["segment"]
    assert ((labels == cfg.ignore_index) | ((labels >= 0) & (labels < cfg.num_classes))).all()
    test_scene = load_scene(list_scenes(cfg, "test")[0], cfg)
    result = vote_scene(test_scene, lambda b: np.zeros((len(b["coord"]), cfg.num_classes)), cfg)
    assert result.hits.min() >= 1


# ------------------------------------------------------------------------- real files (after prepare)


@pytest.mark.slow
def test_the_laspy_scan_as_documented():
    path = RAW / "laspy" / "file_with_both_wkt_and_geotiff_vlrs.las"
    if not path.is_file():
        pytest.skip("run `make data-retrofpn` first")
    cfg = lidar_check_config(root=str(RAW / "laspy"))
    train, test = (list_scenes(cfg, s) for s in ("train", "test"))
    scenes = [load_scene(r, cfg) for r in train + test]
    seg = np.concatenate([s.segment for s in scenes])
    assert len(seg) == 25408 and np.bincount(seg[seg >= 0]).tolist() == [9808, 158, 724, 10956, 3737]
    assert (
        (seg == -1).sum() == 25
        and len(test) == 3
        and len(train) == 12
        and {r.name for r in train}.isdisjoint(r.name for r in test)
    )
    extent = np.ptp(np.concatenate([s.coord for s in scenes]), axis=0)
    np.testing.assert_allclose(extent, [18.29, 12.19, 15.62], atol=0.05)  # metres (the file is in US feet)


@pytest.mark.slow
def test_the_registry_assets_load():
    if not (RAW / "pybullet" / "manifest.json").is_file():
        pytest.skip("run `make data-retrofpn` first")
    assets = meshes.load_assets(RAW)
    assert len(assets) == len(meshes.ASSET_FILES) + meshes.N_RANDOM_OBJECTS
    assert assets["kiva_pod"].extent[2] == pytest.approx(2.367, abs=0.01)  # y-up source turned z-up
    assert all(abs(m.vertices[:, 2].min()) < 1e-9 for m in assets.values())
