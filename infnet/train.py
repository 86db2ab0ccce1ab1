"""Train INFNet or a baseline on a multi-task recommendation data set.

    python -m infnet.train --config infnet/configs/movielens100k.yaml [--set model.name=mmoe] [--resume]
    torchrun --nproc_per_node 2 -m infnet.train --config infnet/configs/movielens100k.yaml

The loop follows ``tests/tiny_train.py``: YAML + ``--set``, a run folder with the resolved ``config.yaml``,
per-epoch shuffling seeded by (seed, epoch), RNG states restored on resume, ``metrics.jsonl`` truncated to the
resumed step, atomic ``last.pt`` / ``best.pt`` (best = highest validation mean AUC over the tasks, the
paper's early-stopping monitor), early stopping after ``train.patience`` epochs without improvement, a NaN
check naming the step, DDP under torchrun. At the end the best checkpoint is scored on the test split and
written to ``test_metrics.json`` in the run folder.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from infnet.config import InfnetConfig
from infnet.data import load_dataset, make_loader
from infnet.evaluate import evaluate_model, to_device
from infnet.model import build_model, count_parameters, multitask_loss
from shared.checkpoint import load_checkpoint, restore_checkpoint, rng_state, save_checkpoint
from shared.cli import add_train_args, common_parser
from shared.config import config_to_dict, load_config, save_config
from shared.distributed import (
    all_gather_object,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    init_distributed,
    unwrap_model,
    wrap_model,
)
from shared.errors import ConfigError, run_cli
from shared.log import MetricsLog, check_finite, get_logger, resolve_run_dir
from shared.seeding import seed_everything


def make_optimizer(model: torch.nn.Module, cfg: InfnetConfig) -> torch.optim.Optimizer:
    t = cfg.train
    if t.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    if t.optimizer == "adagrad":
        return torch.optim.Adagrad(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def train(
    cfg: InfnetConfig, run_dir: str | Path | None = None, resume: bool = False, device: str = "auto"
) -> dict[str, Any]:
    """Train, keep the best checkpoint by validation mean AUC, score it on test; return a summary."""
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {getattr(cfg.train, key)}")
    info = init_distributed(device)
    seed_everything(cfg.train.seed, rank=info.rank, deterministic=cfg.train.deterministic)
    log = get_logger("infnet", info.rank)

    run_dir = resolve_run_dir(run_dir, resume, cfg.train.runs_root, "infnet", cfg.experiment, info.rank)
    if info.is_main:
        save_config(cfg, run_dir / "config.yaml")

    spec, train_ds, val_ds, test_ds = load_dataset(cfg.data)
    model = build_model(spec, cfg.model)
    n_params = count_parameters(model)
    model = wrap_model(model, info)
    opt = make_optimizer(model, cfg)

    start_epoch, step, best = 0, 0, None
    extra = {"bad_epochs": 0, "train_time_s": 0.0, "stopped": False}
    if resume:
        state = load_checkpoint(Path(run_dir) / "last.pt", map_location=info.device)
        restore_checkpoint(state, model=model, optimizer=opt, rank=info.rank)
        start_epoch, step, best = state["epoch"], state["step"], state["best_metric"]
        extra.update(state.get("extra") or {})
        log.info("resumed from %s at epoch %d", Path(run_dir) / "last.pt", start_epoch)
    metrics = MetricsLog(Path(run_dir) / "metrics.jsonl", info.rank, resume_step=step if resume else None)
    log.info(
        "%s: %d parameters, %d train / %d val rows", cfg.model.name, n_params, len(train_ds), len(val_ds)
    )

    last_epoch = start_epoch
    for epoch in range(start_epoch, cfg.train.epochs):
        if extra["stopped"]:
            break
        last_epoch = epoch + 1
        model.train()
        t0, total, n_batches = time.perf_counter(), 0.0, 0
        loader = make_loader(
            train_ds, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed, epoch=epoch, info=info
        )
        for batch in loader:
            if cfg.train.max_steps_per_epoch and n_batches >= cfg.train.max_steps_per_epoch:
                break
            batch = to_device(batch, info.device)
            loss = multitask_loss(model(batch), batch["labels"], cfg.train.loss_weights)
            if step == cfg.train.nan_at_step:
                loss = loss * float("nan")
            check_finite(loss.item(), step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            n_batches += 1
            total += loss.item()
        extra["train_time_s"] += time.perf_counter() - t0
        val = evaluate_model(model, val_ds, spec.tasks, info, cfg.train.eval_batch_size)
        score = val["mean_auc"]
        is_best = best is None or (not math.isnan(score) and score > best)
        if is_best:
            best, extra["bad_epochs"] = score, 0
        else:
            extra["bad_epochs"] += 1
        extra["stopped"] = extra["bad_epochs"] >= cfg.train.patience
        train_loss = all_reduce_mean(torch.tensor(total / max(n_batches, 1), dtype=torch.float64)).item()
        record = {"epoch": epoch + 1, "step": step, "train_loss": train_loss}
        record.update({f"val_{k}": v for k, v in val.items()})
        record["train_time_s"] = extra["train_time_s"]
        metrics.log(record)
        log.info(
            "epoch %d: loss %.4f, val mean AUC %.4f (best %.4f)", epoch + 1, record["train_loss"], score, best
        )
        rngs = all_gather_object(rng_state())  # every rank resumes its own dropout stream
        if info.is_main:
            save_checkpoint(
                run_dir,
                model=model,
                optimizer=opt,
                epoch=epoch + 1,
                step=step,
                best_metric=best,
                is_best=is_best,
                config=config_to_dict(cfg),
                extra=extra,
                rng_states=rngs,
            )
        if extra["stopped"]:
            log.info("early stop: no val improvement for %d epochs", cfg.train.patience)

    barrier()
    best_state = load_checkpoint(Path(run_dir) / "best.pt", map_location=info.device)
    restore_checkpoint(best_state, model=unwrap_model(model), restore_rng=False)
    test = evaluate_model(unwrap_model(model), test_ds, spec.tasks, info, cfg.train.eval_batch_size)
    summary = {
        "model": cfg.model.name,
        "run_dir": str(run_dir),
        "params": n_params,
        "best_epoch": best_state["epoch"],
        "epochs_run": last_epoch,
        "train_time_s": extra["train_time_s"],
        "val_mean_auc": best,
        "test": test,
    }
    if info.is_main:
        (Path(run_dir) / "test_metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        log.info("test mean AUC %.4f (best epoch %d) -> %s", test["mean_auc"], summary["best_epoch"], run_dir)
    cleanup_distributed()
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    args = add_train_args(common_parser("train INFNet or a baseline (model.name)")).parse_args(argv)
    cfg = load_config(InfnetConfig, args.config, args.overrides)
    train(cfg, run_dir=args.run_dir, resume=args.resume, device=args.device)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
