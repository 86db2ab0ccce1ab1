"""Paths and the tiny random precomp folder shared by the rcar training, evaluation and report tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "rcar" / "tiny_precomp"


def random_precomp(root: Path, n_images: int = 2, regions: int = 6, dim: int = 32) -> Path:
    """The committed tiny captions + vocab with random (n_images, regions, dim) features per split."""
    shutil.copytree(FIXTURE, root)
    rng = np.random.default_rng(0)
    for split in ("train", "dev", "test"):
        np.save(root / f"{split}_ims.npy", rng.standard_normal((n_images, regions, dim)).astype(np.float32))
    return root
