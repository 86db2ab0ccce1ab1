"""Evaluation of INFNet and the baselines: per-task AUC, gAUC (by user) and log loss, plus their means.

    python -m infnet.evaluate --config C --checkpoint P [--split test] [--out metrics.json] [--device auto]

The metrics are the paper's (arXiv 2508.11565v1 §4.1: AUC and user-level gAUC per task; the mean over the
tasks is the early-stopping monitor) plus log loss. The command rebuilds the model from the checkpoint's
own ``model`` section (a checkpoint of another paper's package is refused, naming it), reads the split named
by ``--split`` with the data section of ``--config`` and prints the metrics as JSON. Works under
``torchrun``: each rank scores its ``DistributedSampler`` shard and ``gather_in_order`` puts the
predictions of every rank back in dataset order on every rank.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from infnet.build import build_model
from infnet.config import InfnetConfig, ModelConfig
from infnet.data import RecDataset, load_dataset, make_loader
from shared.checkpoint import load_checkpoint, restore_checkpoint
from shared.cli import evaluate_parser, write_json_out
from shared.config import config_from_dict, load_config
from shared.distributed import DistInfo, cleanup_distributed, gather_in_order, init_distributed
from shared.errors import ConfigError, run_cli
from shared.metrics import auc, binary_log_loss, group_auc


def to_device(batch: dict, device: torch.device) -> dict:
    out = dict(batch)
    out["seq"] = [s.to(device, non_blocking=True) for s in batch["seq"]]
    for key in ("cat", "labels", "group", "index"):
        if key in batch:
            out[key] = batch[key].to(device, non_blocking=True)
    return out


@torch.no_grad()
def predict(
    model: nn.Module, dataset: RecDataset, info: DistInfo, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities (N, T), labels (N, T) and groups (N,) in dataset order, gathered over all ranks."""
    was_training = model.training
    model.eval()
    probs, labels, groups, index = [], [], [], []
    for batch in make_loader(dataset, batch_size, shuffle=False, seed=0, epoch=0, info=info):
        batch = to_device(batch, info.device)
        probs.append(torch.sigmoid(model(batch)).float())
        labels.append(batch["labels"].float())
        groups.append(batch["group"].long())
        index.append(batch["index"].long())
    model.train(was_training)
    p, y, g, idx = (torch.cat(x) for x in (probs, labels, groups, index))
    if info.distributed:
        n = len(dataset)
        p, y, g = (gather_in_order(x, idx, n) for x in (p, y, g))
    return p.cpu().numpy(), y.cpu().numpy(), g.cpu().numpy()


def compute_metrics(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray, tasks: Sequence[str]) -> dict:
    """``{task}_auc``, ``{task}_gauc``, ``{task}_logloss`` per task and ``mean_auc`` / ``mean_gauc`` /
    ``mean_logloss`` over the tasks (NaN-skipping: a task with one class in a split has AUC NaN)."""
    out: dict[str, float] = {}
    for i, task in enumerate(tasks):
        out[f"{task}_auc"] = auc(labels[:, i], probs[:, i])
        out[f"{task}_gauc"] = group_auc(labels[:, i], probs[:, i], groups)
        out[f"{task}_logloss"] = binary_log_loss(labels[:, i], probs[:, i])
    for metric in ("auc", "gauc", "logloss"):
        vals = np.array([out[f"{t}_{metric}"] for t in tasks], dtype=np.float64)
        out[f"mean_{metric}"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return out


def evaluate_model(
    model: nn.Module, dataset: RecDataset, tasks: Sequence[str], info: DistInfo, batch_size: int
) -> dict[str, float]:
    return compute_metrics(*predict(model, dataset, info, batch_size), tasks)


def load_trained_model(checkpoint: str | Path, spec: Any, device: torch.device) -> tuple[nn.Module, dict]:
    """Rebuild the model described by a checkpoint's config and load its weights."""
    state = load_checkpoint(checkpoint, map_location=device, paper="infnet")
    if not state.get("config") or "model" not in state["config"]:
        raise ConfigError(f"{checkpoint} carries no model config; it was not written by infnet.train")
    model_cfg = config_from_dict(ModelConfig, state["config"]["model"])
    model = build_model(spec, model_cfg).to(device)
    restore_checkpoint(state, model=model, restore_rng=False)
    return model, state


def main(argv: Sequence[str] | None = None) -> None:
    args = evaluate_parser("evaluate a trained INFNet / baseline checkpoint", InfnetConfig).parse_args(argv)
    cfg = load_config(InfnetConfig, args.config, args.overrides)
    info = init_distributed(args.device)
    try:
        spec, _, val_ds, test_ds = load_dataset(cfg.data)
        model, state = load_trained_model(args.checkpoint, spec, info.device)
        dataset = test_ds if args.split == "test" else val_ds
        metrics = evaluate_model(model, dataset, spec.tasks, info, cfg.train.eval_batch_size)
        if info.is_main:
            record = {"checkpoint": str(args.checkpoint), "epoch": state.get("epoch"), "split": args.split}
            write_json_out(json.dumps({**record, **metrics}, indent=2), args.out)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
