"""A tiny GEM suite (built from the data fixtures, no network) and tiny train configs for the CLI tests."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import yaml

from gem.prepare import prepare
from tests.gem.test_data import FIX, write_manifests
from tests.gem.test_data import tiny_config as tiny_data_config

ROOT = Path(__file__).resolve().parents[2]

# 2 blocks of width 32, 4 paths, SCAR with k in [1, 2]: a train step takes milliseconds
TINY_MODEL = dict(
    ffn="scar", vocab_size=320, context_length=32, n_layers=2, n_heads=2, d_model=32, d_ff=48, n_experts=4,
    router_slots=6, router_dim=8, scar_k_min=1, scar_k_max=2,
)  # fmt: skip


def build_tiny_suite(root: Path, quick: bool = False) -> dict[str, Any]:
    """Copy the raw fixtures under ``root`` and build the suite there (``quick``: also the quick suite);
    the ``data`` section to use it."""
    shutil.copytree(FIX, root / "raw")
    write_manifests(root / "raw")
    cfg = tiny_data_config(root)
    prepare(cfg, log=False)
    if quick:
        prepare(dataclasses.replace(cfg, quick=True), log=False)
    keys = ("root", "min_examples_per_label", "max_examples_per_task", "vocab_size", "min_frequency",
            "adaptation_examples", "val_fraction", "test_fraction", "cache_dir")  # fmt: skip
    return {k: getattr(cfg, k) for k in keys} | {"context_len": 32, "max_len": 32}


def tiny_config(data: dict[str, Any], runs_root: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """The nested config dict of a tiny run; ``sections`` update single keys of each section."""
    cfg: dict[str, Any] = {
        "experiment": "tiny",
        "data": dict(data),
        "model": dict(TINY_MODEL),
        "train": {"epochs": 2, "steps_per_epoch": 4, "lm_batch_size": 4, "cls_batch_size": 4, "lr": 3e-3,
                  "warmup_steps": 2, "log_every": 0, "runs_root": str(runs_root)},
        "eval": {"batch_size": 16, "max_lm_tokens": 256, "max_examples": 20, "max_mc_examples": 4,
                 "val_max_lm_tokens": 128, "val_max_examples": 10},
    }  # fmt: skip
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
