"""retrofpn.data readers on fixtures in the exact published formats, their errors, and DataConfig."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from retrofpn.data import DataConfig, list_scenes, load_scene, official_data_config
from retrofpn.data.config import S3DIS_CLASSES, SCANNET_CLASSES, SCANNET_VALID_IDS
from retrofpn.data.lidar import lidar_check_config, read_las, split_tiles
from retrofpn.data.pointcept import read_scene_folder
from retrofpn.data.s3dis import read_room, write_room
from retrofpn.data.scannet import read_ply_vertices, read_scannet_scene
from shared.errors import ConfigError, DataError
from tests.retrofpn.data_helpers import FIXTURES, fixture_writer

MK = fixture_writer()
S3DIS_ROOT = FIXTURES / "s3dis" / "trainval_fullarea"


def s3dis_cfg(root: Path = S3DIS_ROOT, **kw) -> DataConfig:
    return DataConfig(dataset="s3dis", root=str(root), **kw)


def pointcept_scannet_cfg(**kw) -> DataConfig:
    return DataConfig(
        dataset="pointcept", root=str(FIXTURES / "pointcept_scannet"), train_dirs=["train"], test_dirs=["val"],
        segment_file="segment20.npy", num_classes=20, class_names=list(SCANNET_CLASSES), **kw,
    )  # fmt: skip


def scannet_cfg(**kw) -> DataConfig:
    base = dict(dataset="scannet", root=str(FIXTURES / "scannet"), train_dirs=["scans"], test_dirs=["scans"],
                train_list="scannetv2_train.txt", test_list="scannetv2_val.txt", num_classes=20,
                class_names=list(SCANNET_CLASSES))  # fmt: skip
    return DataConfig(**{**base, **kw})


def las_cfg(**kw) -> DataConfig:
    base = dict(dataset="las", root=str(FIXTURES / "las"), train_dirs=["train"], test_dirs=["test"], num_classes=4,
                class_names=["ground", "low_veg", "high_veg", "building"], las_classes=[2, 3, 5, 6],
                las_ignore_classes=[7], feat_keys=["intensity"])  # fmt: skip
    return DataConfig(**{**base, **kw})


# ------------------------------------------------------------------------------------------------ readers


@pytest.mark.parametrize("name", list(MK.S3DIS_ROOMS))
def test_s3dis_room_values_as_written(name):
    room = read_room(S3DIS_ROOT / f"{name}.npy", s3dis_cfg())
    written = MK.s3dis_room(name)
    np.testing.assert_array_equal(room.coord, written[:, :3].astype(np.float32))
    np.testing.assert_array_equal(room.color, written[:, 3:6].astype(np.float32))
    np.testing.assert_array_equal(room.segment, written[:, 6].astype(np.int64))
    assert room.coord.dtype == np.float32 and room.name == name
    assert room.segment.dtype == np.int16 and room.color.dtype == np.uint8  # compact in memory
    arrays = room.arrays()
    assert arrays["segment"].dtype == np.int64 and arrays["color"].dtype == np.float32


def test_s3dis_split_holds_out_the_test_area():
    cfg = s3dis_cfg()
    assert [r.name for r in list_scenes(cfg, "test")] == ["Area_5_WC_1", "Area_5_office_1"]
    assert [r.name for r in list_scenes(cfg, "train")] == ["Area_1_office_1", "Area_2_hallway_1"]
    assert [r.name for r in list_scenes(s3dis_cfg(test_area=2), "test")] == ["Area_2_hallway_1"]


def test_s3dis_write_room_round_trips(tmp_path):
    written = MK.s3dis_room("Area_1_office_1")
    write_room(tmp_path / "Area_3_lobby_1.npy", written[:, :3], written[:, 3:6], written[:, 6])
    room = read_room(tmp_path / "Area_3_lobby_1.npy", s3dis_cfg(tmp_path))
    np.testing.assert_array_equal(room.segment, written[:, 6])
    assert list(tmp_path.iterdir()) == [tmp_path / "Area_3_lobby_1.npy"]  # no temp file left behind


def test_pointcept_s3dis_folders_values_and_area_split():
    cfg = DataConfig(dataset="pointcept", root=str(FIXTURES / "pointcept_s3dis"))
    assert [r.name for r in list_scenes(cfg, "test")] == ["office_2"]
    assert [r.name for r in list_scenes(cfg, "train")] == ["office_1", "conferenceRoom_1"]
    scene = load_scene(list_scenes(cfg, "train")[0], cfg)
    n, seed = MK.POINTCEPT_S3DIS["Area_1/office_1"]
    written = MK.pointcept_scene(n, seed, 13, unlabelled=False)
    np.testing.assert_array_equal(scene.coord, written["coord"])
    np.testing.assert_array_equal(scene.color, written["color"].astype(np.float32))
    np.testing.assert_array_equal(scene.segment, written["segment"])  # stored (N, 1), read as (N,)
    np.testing.assert_allclose(scene.normal, written["normal"])


def test_pointcept_scannet_folders_map_minus_one_to_ignore():
    cfg = pointcept_scannet_cfg()
    train = list_scenes(cfg, "train")
    assert [r.name for r in train] == ["scene0000_00", "scene0002_00"]
    scene = load_scene(train[0], cfg)
    written = MK.pointcept_scene(*MK.POINTCEPT_SCANNET["train/scene0000_00"], 20, unlabelled=True)
    np.testing.assert_array_equal(scene.segment, written["segment"])
    assert (scene.segment == -1).sum() == len(written["segment"][::5])
    shifted = load_scene(train[0], pointcept_scannet_cfg(ignore_index=-100))
    assert (shifted.segment == -100).sum() == (scene.segment == -1).sum()


def test_scannet_ply_values_and_nyu40_mapping():
    cfg = scannet_cfg()
    assert [r.name for r in list_scenes(cfg, "train")] == ["scene0000_00", "scene0002_00"]
    assert [r.name for r in list_scenes(cfg, "test")] == ["scene0001_00"]
    scene = read_scannet_scene(FIXTURES / "scannet" / "scans" / "scene0000_00", cfg)
    xyz, rgba, nyu40, _ = MK.scannet_scene("scene0000_00")
    np.testing.assert_array_equal(scene.coord, xyz)
    np.testing.assert_array_equal(scene.color, rgba[:, :3].astype(np.float32))
    expected = [SCANNET_VALID_IDS.index(i) if i in SCANNET_VALID_IDS else -1 for i in nyu40]
    np.testing.assert_array_equal(scene.segment, expected)
    assert {0, 13, 40} <= set(nyu40.tolist()) and scene.segment[nyu40 == 39].tolist() == [19]


def test_scannet_normals_from_the_mesh_when_asked():
    cfg = scannet_cfg(feat_keys=["coord", "normal", "color"])
    scene = read_scannet_scene(FIXTURES / "scannet" / "scans" / "scene0000_00", cfg)
    np.testing.assert_allclose(np.linalg.norm(scene.normal, axis=1), 1.0, atol=1e-5)
    assert read_scannet_scene(FIXTURES / "scannet" / "scans" / "scene0000_00", scannet_cfg()).normal is None


def test_ply_reader_ascii_equals_binary(tmp_path):
    xyz, rgba, nyu40, _ = MK.scannet_scene("scene0001_00")
    lines = ["ply", "format ascii 1.0", f"element vertex {len(xyz)}", "property float x", "property float y",
             "property float z", "property uchar red", "property uchar green", "property uchar blue",
             "property uchar alpha", "property ushort label", "end_header"]  # fmt: skip
    lines += [" ".join(map(str, [*map(float, p), *c, lab])) for p, c, lab in zip(xyz, rgba, nyu40)]
    (tmp_path / "a.ply").write_text("\n".join(lines) + "\n")
    ascii_v = read_ply_vertices(tmp_path / "a.ply")
    binary_v = read_ply_vertices(
        FIXTURES / "scannet" / "scans" / "scene0001_00" / "scene0001_00_vh_clean_2.labels.ply"
    )
    for name in binary_v.dtype.names:
        np.testing.assert_array_equal(ascii_v[name], binary_v[name])


def test_las_and_laz_values_classes_and_features():
    cfg = las_cfg()
    las, laz = (
        read_las(FIXTURES / "las" / "train" / "tiny.las", cfg),
        read_las(FIXTURES / "las" / "test" / "tiny.laz", cfg),
    )
    pts = MK.las_points()
    np.testing.assert_allclose(las.coord, pts["xyz"].astype(np.float32), atol=1e-6 * 4e6)
    np.testing.assert_array_equal(las.coord, laz.coord)
    lut = {2: 0, 3: 1, 5: 2, 6: 3, 7: -1}
    np.testing.assert_array_equal(las.segment, [lut[c] for c in pts["classification"]])
    np.testing.assert_allclose(las.extra["intensity"][:, 0], pts["intensity"] / 65535.0, rtol=1e-6)
    assert las.color is None and [r.name for r in list_scenes(cfg, "test")] == ["tiny"]
    feet = read_las(FIXTURES / "las" / "train" / "tiny.las", las_cfg(coord_scale=0.5))
    np.testing.assert_allclose(feet.coord, las.coord * 0.5, rtol=1e-6)


def test_las_tiles_partition_the_points():
    cfg = las_cfg(
        las_tile_size=3.0,
        las_test_modulus=3,
        root=str(FIXTURES / "las" / "train"),
        train_dirs=[],
        test_dirs=[],
    )
    scene = read_las(FIXTURES / "las" / "train" / "tiny.las", cfg)
    train, test = split_tiles(scene, cfg, "train"), split_tiles(scene, cfg, "test")
    assert train and test and not {t.name for t in train} & {t.name for t in test}
    assert sum(len(t) for t in train + test) == len(scene)
    refs = list_scenes(cfg, "test")
    assert [r.name for r in refs] == [t.name for t in test]
    np.testing.assert_array_equal(load_scene(refs[0], cfg).coord, test[0].coord)


# ------------------------------------------------------------------------------------------------- errors


def _room(tmp_path: Path, array: np.ndarray, name: str = "Area_5_office_1.npy") -> Path:
    np.save(tmp_path / name, array)
    return tmp_path / name


def _one_line(exc: pytest.ExceptionInfo, path: Path | str) -> str:
    message = str(exc.value)
    assert "\n" not in message and str(path) in message
    return message


GOOD = MK.s3dis_room("Area_5_office_1").astype(np.float64)


@pytest.mark.parametrize(
    ("array", "pattern"),
    [
        (GOOD[:, :6], r"expected an N x 7 array .* got shape \(18, 6\)"),
        (np.concatenate([GOOD[:, :6], np.full((18, 1), 13.0)], axis=1), r"label 13 at point 0 is outside \[0, 13\)"),
        (np.concatenate([GOOD[:, :6], np.full((18, 1), 2.5)], axis=1), r"label 2.5 at point 0 is not an integer"),
        (np.where(np.arange(7) == 1, np.nan, GOOD), r"NaN or infinite coordinate at point 0"),
        (np.zeros((0, 7)), r"the scene has no points"),
        (np.concatenate([GOOD[:, :3], GOOD[:, 3:6] + 300, GOOD[:, 6:]], axis=1), r"colours must be rgb values in \[0, 255\]"),
        (GOOD.astype(np.int64), r"expected a float array"),
    ],
)  # fmt: skip
def test_bad_s3dis_rooms_are_one_line_data_errors(tmp_path, array, pattern):
    path = _room(tmp_path, array)
    with pytest.raises(DataError) as exc:
        read_room(path, s3dis_cfg(tmp_path))
    assert re.search(pattern, _one_line(exc, path))


def test_truncated_npy_and_missing_inputs(tmp_path):
    path = _room(tmp_path, GOOD)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"truncated or not a \.npy") as exc:
        read_room(path, s3dis_cfg(tmp_path))
    _one_line(exc, path)
    (tmp_path / "Area_5_junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"truncated or not a \.npy"):
        read_room(tmp_path / "Area_5_junk.npy", s3dis_cfg(tmp_path))
    with pytest.raises(DataError, match="S3DIS folder not found") as exc:
        list_scenes(s3dis_cfg(tmp_path / "missing"), "train")
    _one_line(exc, tmp_path / "missing")
    only_train = tmp_path / "areas"
    only_train.mkdir()
    _room(only_train, GOOD, "Area_1_office_1.npy")
    with pytest.raises(DataError, match=r"no rooms of the held-out Area_5 \(areas found: \[1\]\)") as exc:
        list_scenes(s3dis_cfg(only_train), "test")
    _one_line(exc, only_train)


def test_empty_folder_names_the_layout(tmp_path):
    with pytest.raises(DataError, match=r"no Area_X_<room>\.npy files"):
        list_scenes(s3dis_cfg(tmp_path), "train")


def _copy_pointcept(tmp_path: Path) -> Path:
    dst = tmp_path / "pc"
    shutil.copytree(FIXTURES / "pointcept_s3dis", dst)
    return dst


def test_pointcept_mismatched_lengths_and_missing_files(tmp_path):
    root = _copy_pointcept(tmp_path)
    scene = root / "Area_1" / "office_1"
    np.save(scene / "color.npy", np.load(scene / "color.npy")[:-3])
    cfg = DataConfig(dataset="pointcept", root=str(root))
    with pytest.raises(DataError, match=r"color.npy has 21 rows but coord.npy has 24") as exc:
        read_scene_folder(scene, cfg)
    _one_line(exc, scene)
    (scene / "segment.npy").unlink()
    with pytest.raises(DataError, match=r"no segment\.npy in the scene folder") as exc:
        read_scene_folder(scene, cfg)
    _one_line(exc, scene)
    with pytest.raises(DataError, match="scene folder not found"):
        read_scene_folder(root / "Area_1" / "nowhere", cfg)
    np.save(root / "Area_5" / "office_2" / "normal.npy", np.zeros((3, 3), np.float32))
    with pytest.raises(DataError, match=r"normal.npy: shape \(3, 3\), expected \(20, 3\)"):
        read_scene_folder(root / "Area_5" / "office_2", cfg)
    with pytest.raises(DataError, match=r"data\.test_dirs"):
        list_scenes(dataclasses.replace(cfg, test_dirs=["Area_9"]), "test")


def test_pointcept_label_outside_the_classes(tmp_path):
    root = _copy_pointcept(tmp_path)
    scene = root / "Area_5" / "office_2"
    seg = np.load(scene / "segment.npy")
    seg[4] = 13
    np.save(scene / "segment.npy", seg)
    with pytest.raises(
        DataError, match=r"label 13 at point 4 is outside \[0, 13\).*raw_ignore_labels"
    ) as exc:
        read_scene_folder(scene, DataConfig(dataset="pointcept", root=str(root)))
    _one_line(exc, scene / "segment.npy")
    fixed = read_scene_folder(scene, DataConfig(dataset="pointcept", root=str(root), raw_ignore_labels=[13]))
    assert fixed.segment[4] == -1


def test_scannet_ply_without_labels_truncated_and_mismatched(tmp_path):
    folder = tmp_path / "scene0000_00"
    shutil.copytree(FIXTURES / "scannet" / "scans" / "scene0000_00", folder)
    mesh, labels = folder / "scene0000_00_vh_clean_2.ply", folder / "scene0000_00_vh_clean_2.labels.ply"
    shutil.copy(mesh, labels)  # a labels file without the label property
    with pytest.raises(DataError, match="no 'label' property") as exc:
        read_scannet_scene(folder, scannet_cfg())
    _one_line(exc, labels)
    xyz, rgba, nyu40, faces = MK.scannet_scene("scene0000_00")
    MK.write_ply(labels, xyz[:-1], rgba[:-1], faces[:-1], nyu40[:-1])
    with pytest.raises(DataError, match=r"14 vertices but scene0000_00_vh_clean_2\.ply has 15"):
        read_scannet_scene(folder, scannet_cfg())
    blob = mesh.read_bytes()
    mesh.write_bytes(blob[: blob.index(b"end_header") + 60])
    with pytest.raises(DataError, match="truncated: the header declares 15 vertices") as exc:
        read_scannet_scene(folder, scannet_cfg())
    _one_line(exc, mesh)
    mesh.write_bytes(b"not a ply")
    with pytest.raises(DataError, match="not a PLY file"):
        read_scannet_scene(folder, scannet_cfg())
    labels.unlink()
    with pytest.raises(DataError, match="file not found"):
        read_scannet_scene(folder, scannet_cfg())


def test_scene_list_naming_missing_scenes(tmp_path):
    (tmp_path / "list.txt").write_text("scene0000_00\nscene0099_00\n")
    cfg = scannet_cfg(train_list=str(tmp_path / "list.txt"))
    with pytest.raises(DataError, match=r"missing, e.g. \['scene0099_00'\]"):
        list_scenes(cfg, "train")
    with pytest.raises(DataError, match="scene list not found"):
        list_scenes(scannet_cfg(train_list="nope.txt"), "train")


def test_las_unknown_class_corrupt_file_and_missing_rgb(tmp_path):
    path = FIXTURES / "las" / "train" / "tiny.las"
    with pytest.raises(DataError, match=r"ASPRS classes \{7: 6\} .* neither data.las_classes") as exc:
        read_las(path, las_cfg(las_ignore_classes=[]))
    _one_line(exc, path)
    with pytest.raises(DataError, match="has no rgb; remove 'color'"):
        read_las(path, las_cfg(feat_keys=["color"]))
    (tmp_path / "broken.las").write_bytes(b"LASF" + bytes(50))
    with pytest.raises(DataError, match="not a readable LAS/LAZ file") as exc:
        read_las(tmp_path / "broken.las", las_cfg())
    _one_line(exc, tmp_path / "broken.las")


# ------------------------------------------------------------------------------------------------- config


def test_every_data_config_field_has_an_attributes_line():
    doc = DataConfig.__doc__.split("Attributes:")[1]
    documented = dict(re.findall(r"^\s{8}(\w+): (.+)$", doc, flags=re.M))
    assert [f.name for f in dataclasses.fields(DataConfig)] == list(documented)
    assert all(len(text) > 10 for text in documented.values())


@pytest.mark.parametrize("pipeline", ["pt", "mink", "ptv2"])
def test_official_configs_build(pipeline):
    cfg = official_data_config(pipeline)
    assert cfg.pipeline == pipeline and cfg.voxel_size == {"pt": 0.04, "mink": 0.05, "ptv2": 0.02}[pipeline]
    assert official_data_config("ptv2").in_channels == 9 and official_data_config("pt").in_channels == 3


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (dict(num_classes=12), r"data.class_names: has 13 names but num_classes is 12"),
        (dict(ignore_index=3), r"data.ignore_index: 3 is a class id"),
        (dict(feat_keys=["colour"]), r"data.feat_keys: unknown"),
        (dict(test_augmentations=3), r"data.test_augmentations: the PT test protocol"),
        (dict(voxel_size=0.0), r"data.voxel_size: must be > 0"),
        (dict(dataset="las"), r"data.las_classes: lists 5 codes but num_classes is 13"),
    ],
)
def test_impossible_data_configs(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        DataConfig(**overrides)


def test_lidar_check_config_matches_the_file_classes():
    cfg = lidar_check_config()
    assert cfg.las_classes == [2, 3, 4, 5, 6] and cfg.las_ignore_classes == [7] and cfg.num_classes == 5
    assert list(S3DIS_CLASSES)[7:9] == ["table", "chair"]  # the label order of the class folders
