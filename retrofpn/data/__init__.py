"""Retro-FPN data: real-format loaders, the per-backbone pipelines, test-time voting, the embedded rooms.

- ``config.py``: ``DataConfig`` (every field documented; ``official_data_config(pipeline)`` = paper scale).
- ``scene.py``: ``Scene``, the original points of one room/scan, and the checks every reader applies.
- readers in the published formats: ``s3dis.py`` (``Area_X_<room>.npy``), ``pointcept.py`` (scene
  folders), ``scannet.py`` (ScanNet v2 PLYs), ``lidar.py`` (LAS/LAZ; the embedded laspy scan);
  ``catalog.py`` lists the scenes of a split and reads one with the right reader.
- ``transforms.py``: augmentations, voxelisation, crops, features of the PT / Mink / PTv2 pipelines.
- ``dataset.py``: ``SceneDataset``, ``Collate`` (offsets, Mix3D, a batch hook run in the workers), loader.
- ``voting.py``: the test passes of each protocol, ``vote_scene``, ``evaluate_scenes`` (all original points).
- ``meshes.py`` / ``rooms.py``: registry mesh assets and the synthetic S3DIS-layout rooms of ``prepare``.

Layouts, sizes and licences: ``data/retrofpn/README.md``.
"""

from retrofpn.data.catalog import SceneRef, list_scenes, load_scene, load_scenes
from retrofpn.data.config import (
    IGNORE_INDEX,
    S3DIS_CLASSES,
    SCANNET_CLASSES,
    SCANNET_VALID_IDS,
    DataConfig,
    official_data_config,
)
from retrofpn.data.dataset import Collate, EpochShuffle, SceneDataset, collate, make_loader, set_epoch
from retrofpn.data.lidar import lidar_check_config, read_las
from retrofpn.data.scene import Scene
from retrofpn.data.transforms import train_sample
from retrofpn.data.voting import VoteResult, evaluate_scenes, test_passes, vote_scene

__all__ = [
    "IGNORE_INDEX",
    "S3DIS_CLASSES",
    "SCANNET_CLASSES",
    "SCANNET_VALID_IDS",
    "Collate",
    "DataConfig",
    "EpochShuffle",
    "Scene",
    "SceneDataset",
    "SceneRef",
    "VoteResult",
    "collate",
    "evaluate_scenes",
    "lidar_check_config",
    "list_scenes",
    "load_scene",
    "load_scenes",
    "make_loader",
    "official_data_config",
    "read_las",
    "set_epoch",
    "test_passes",
    "train_sample",
    "vote_scene",
]
