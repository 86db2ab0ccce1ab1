"""Tiny S3DIS-layout rooms and configs for the train / evaluate / reproduce tests (each run: a few seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from retrofpn.data.s3dis import write_room

NUM_CLASSES = 13
TINY_MODELS: dict[str, dict[str, Any]] = {
    "pt": {"pt_planes": [8, 8, 16, 16, 16], "pt_blocks": [1, 1, 1, 1, 1], "pt_share_planes": 4, "pt_fps": "bucket"},
    "ptv2": {
        "ptv2_patch_channels": 8, "ptv2_enc_channels": [8, 16, 16, 16], "ptv2_enc_groups": [2, 4, 4, 4],
        "ptv2_dec_channels": [8, 8, 16, 16], "ptv2_dec_groups": [2, 2, 4, 4],
        "ptv2_grid_sizes": [0.15, 0.3, 0.6, 1.2],
    },
    "minkunet": {"mink_init_dim": 8, "mink_planes": [8, 16, 16, 16, 16, 16, 8, 8]},
}  # fmt: skip
PIPELINES = {"pt": "pt", "ptv2": "ptv2", "minkunet": "mink"}


def room(n: int, seed: int) -> np.ndarray:
    """A 2 x 1.6 x 1.2 m corner, N x 7 (xyz, rgb 0-255, label): floor (1), two walls (2), a table-like box
    (7) and clutter (12), each with its own colour, so a tiny model learns it in a few steps."""
    rng = np.random.default_rng(seed)
    part = rng.integers(0, 4, n)
    coord = rng.random((n, 3)) * [2.0, 1.6, 1.2]
    coord[part == 0, 2] = 0.0
    wall = part == 1
    on_x = wall & (rng.random(n) < 0.5)
    coord[on_x, 0] = 0.0
    coord[wall & ~on_x, 1] = 0.0
    box = part == 2
    coord[box] = [1.0, 0.7, 0.0] + rng.random((int(box.sum()), 3)) * 0.5
    labels = np.array([1, 2, 7, 12])[part]
    palette = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])
    color = np.clip(palette[part] + rng.normal(0, 10, (n, 3)), 0, 255)
    return np.concatenate([coord, color, labels[:, None]], axis=1).astype(np.float32)


def write_rooms(root: Path, areas: int = 6, rooms: int = 2, n: int = 500) -> Path:
    """``root/Area_X_office_Y.npy`` for X in 1..areas (Area 5 is the test area)."""
    root.mkdir(parents=True, exist_ok=True)
    for a in range(1, areas + 1):
        for r in range(1, rooms + 1):
            arr = room(n + 37 * r, seed=100 * a + r)
            write_room(root / f"Area_{a}_office_{r}.npy", arr[:, :3], arr[:, 3:6], arr[:, 6])
    return root


def tiny_config(tmp_path: Path, backbone: str = "pt", retro: bool = True, **sections: dict) -> dict[str, Any]:
    """A config dict for the tiny rooms under ``tmp_path/rooms`` (written when missing)."""
    root = tmp_path / "rooms"
    if not root.is_dir():
        write_rooms(root)
    data: dict[str, Any] = {"root": str(root), "pipeline": PIPELINES[backbone], "voxel_size": 0.04, "voxel_max": 0,
                            "test_voxel_max": 0, "loop": 2, "test_batch": 1}  # fmt: skip
    if backbone == "ptv2":
        data.update({"test_vote": "softmax", "color_norm": "signed"})
    if backbone == "minkunet":
        data.update({"voxel_size": 0.05, "color_norm": "signed", "test_augmentations": 2})
    cfg = {
        "experiment": "tiny",
        "data": data,
        "model": {"backbone": backbone, "retro": retro, "retro_dim": 8, **TINY_MODELS[backbone]},
        "train": {
            "epochs": 2,
            "batch_size": 2,
            "lr": 0.05,
            "runs_root": str(tmp_path / "runs"),
            "threads": 1,
            "log_every": 0,
        },
        "eval": {"val_scenes": 2},
    }
    if backbone == "ptv2":
        cfg["train"].update({"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.02, "scheduler": "onecycle"})
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def write_config(tmp_path: Path, backbone: str = "pt", retro: bool = True, name: str = "cfg.yaml", **sections
                 ) -> Path:  # fmt: skip
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, backbone, retro, **sections)))
    return path
