"""Shared helpers of the retrofpn data tests: the fixture writer module and small synthetic scenes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from retrofpn.data.scene import Scene

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "retrofpn"


def fixture_writer():
    """``tests/fixtures/retrofpn/make_fixtures.py`` as a module (its functions give the values written)."""
    spec = importlib.util.spec_from_file_location("retrofpn_make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_scene(
    n: int = 3000, seed: int = 0, classes: int = 13, normals: bool = True, name: str = "room"
) -> Scene:
    """A box-shaped cloud of n points (4 m x 3 m x 2.5 m) with random colours and labels."""
    rng = np.random.default_rng(seed)
    normal = rng.normal(size=(n, 3)).astype(np.float32)
    return Scene(
        name=name,
        coord=(rng.random((n, 3)) * [4.0, 3.0, 2.5]).astype(np.float32),
        segment=rng.integers(0, classes, n),
        color=rng.integers(0, 256, (n, 3)).astype(np.float32),
        normal=(normal / np.linalg.norm(normal, axis=1, keepdims=True)) if normals else None,
        source=f"{name}.npy",
    )
