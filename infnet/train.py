"""Train INFNet or a baseline on a multi-task recommendation data set (arXiv 2508.11565v1 §4.1 protocol).

    python -m infnet.train --config infnet/configs/movielens100k.yaml [--set model.name=mmoe] [--resume]
    torchrun --nproc_per_node 2 -m infnet.train --config infnet/configs/movielens100k.yaml

``main()`` only parses the command line (``shared.cli.train_main``: YAML + ``--set``; ``--resume`` continues
the run folder with its saved ``config.yaml``). ``train()`` holds the loop; ``shared.run.TrainRun`` does the
bookkeeping (run folder, seeding, RNG states restored on resume, ``metrics.jsonl`` truncated to the resumed
step, atomic ``last.pt`` / ``best.pt``). Best = highest validation mean AUC over the tasks, the paper's
early-stopping monitor; training stops after ``train.patience`` epochs without improvement. Per-epoch
shuffling is seeded by (seed, epoch); a NaN check names the step; DDP under torchrun. At the end the best
checkpoint is scored on the test split (``test_metrics.json``; the run's summary is ``summary.json``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from infnet.build import build_model
from infnet.config import InfnetConfig, ModelConfig
from infnet.data import FeatureSpec, load_dataset, make_loader
from infnet.evaluate import evaluate_model, to_device
from infnet.layers import count_parameters
from infnet.model import multitask_loss
from shared.cli import train_main
from shared.distributed import all_reduce_mean, unwrap_model, wrap_model
from shared.errors import ConfigError, run_cli
from shared.log import StepProgress
from shared.run import TrainRun, optimizer_step, require_positive


def make_optimizer(model: torch.nn.Module, cfg: InfnetConfig) -> torch.optim.Optimizer:
    t = cfg.train
    if t.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    # the fused (single-kernel) update: several times faster than the per-tensor loop over INFNet's ~170
    # small parameter tensors; torch has it on CPU and CUDA for Adam, on CPU only for Adagrad
    devices = {p.device.type for p in model.parameters()}
    fused = devices <= ({"cpu"} if t.optimizer == "adagrad" else {"cpu", "cuda"})
    if t.optimizer == "adagrad":
        return torch.optim.Adagrad(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=fused)
    return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=fused)


def train_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    loader: Any,
    cfg: InfnetConfig,
    run: TrainRun,
    step: int,
    desc: str,
) -> tuple[float, int, int]:
    """One pass over ``loader`` (at most ``train.max_steps_per_epoch`` steps); (loss sum, batches, step)."""
    cap = cfg.train.max_steps_per_epoch
    steps = min(len(loader), cap) if cap else len(loader)
    progress = StepProgress(steps, desc, run.log, run.info.rank, log_every=cfg.train.log_every)
    total, n_batches = 0.0, 0
    try:
        for batch in loader:
            if n_batches >= steps:
                break
            batch = to_device(batch, run.device)
            loss = multitask_loss(model(batch), batch["labels"], cfg.train.loss_weights)
            value = optimizer_step(loss, opt, step, nan_at_step=cfg.train.nan_at_step)
            step += 1
            n_batches += 1
            total += value
            progress.update(value, batch["labels"].shape[0])
    finally:
        progress.close()
    return total, n_batches, step


ModelBuilder = Callable[[FeatureSpec, ModelConfig], torch.nn.Module]


def train(
    cfg: InfnetConfig, run_dir: str | Path | None = None, resume: bool = False, device: str = "auto"
) -> dict[str, Any]:
    """Train, keep the best checkpoint by validation mean AUC, score it on test; return the summary."""
    return train_with(cfg, build_model, run_dir=run_dir, resume=resume, device=device)


def train_with(
    cfg: InfnetConfig,
    build: ModelBuilder,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    device: str = "auto",
) -> dict[str, Any]:
    """``train`` with the model made by ``build(spec, cfg.model)``: the parity run (``infnet/parity.py``)
    trains torch-rechub's models through this very loop, so both implementations share data order,
    optimiser, loss, early stopping and evaluation."""
    require_positive(cfg.train, "epochs", "batch_size", "eval_batch_size")
    with TrainRun("infnet", cfg, run_dir=run_dir, resume=resume, device=device, seed=cfg.train.seed,
                  deterministic=cfg.train.deterministic) as run:  # fmt: skip
        spec, train_ds, val_ds, test_ds = load_dataset(cfg.data)
        if cfg.train.loss_weights and len(cfg.train.loss_weights) != len(spec.tasks):
            raise ConfigError(  # checked before anything is logged: a bad config is one line
                f"train.loss_weights has {len(cfg.train.loss_weights)} values; the data has {len(spec.tasks)} tasks"
            )
        model = build(spec, cfg.model)
        n_params = count_parameters(model)
        model = wrap_model(model, run.info)
        opt = make_optimizer(model, cfg)
        # the compiled module shares the parameters; checkpoints, evaluation and the optimiser use `model`
        forward = torch.compile(model) if cfg.train.compile else model
        state = run.start(model, opt, extra={"bad_epochs": 0, "train_time_s": 0.0, "stopped": False})
        extra = state.extra  # saved in every checkpoint: a resumed run continues the early-stopping count
        run.log.info(
            "%s: %d parameters, %d train / %d val rows", cfg.model.name, n_params, len(train_ds), len(val_ds)
        )
        step, last_epoch = state.step, state.epoch
        # BatchNorm (model.mlp_norm) cannot normalise a batch of one row: drop the last batch only then
        rows_per_rank = math.ceil(len(train_ds) / run.info.world_size)
        drop_last = rows_per_rank % cfg.train.batch_size == 1 and rows_per_rank > 1
        for epoch in range(state.epoch, cfg.train.epochs):
            if extra["stopped"]:
                break
            last_epoch = epoch + 1
            model.train()
            loader = make_loader(
                train_ds, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed, epoch=epoch, info=run.info,
                drop_last=drop_last,
            )  # fmt: skip
            t0 = time.perf_counter()
            total, n_batches, step = train_epoch(
                forward, opt, loader, cfg, run, step, f"epoch {epoch + 1}/{cfg.train.epochs}"
            )
            extra["train_time_s"] += time.perf_counter() - t0
            val = evaluate_model(model, val_ds, spec.tasks, run.info, cfg.train.eval_batch_size)
            score = val["mean_auc"]
            extra["bad_epochs"] = 0 if run.is_better(score) else extra["bad_epochs"] + 1
            extra["stopped"] = extra["bad_epochs"] >= cfg.train.patience
            train_loss = all_reduce_mean(torch.tensor(total / max(n_batches, 1), dtype=torch.float64)).item()
            record = {"epoch": epoch + 1, "step": step, "train_loss": train_loss}
            record.update({f"val_{k}": v for k, v in val.items()})
            record["train_time_s"] = extra["train_time_s"]
            run.end_epoch(record, score, model=model, optimizer=opt)
            run.log.info(
                "epoch %d: loss %.4f, val mean AUC %.4f (best %.4f)", epoch + 1, train_loss, score, state.best
            )
            if extra["stopped"]:
                run.log.info("early stop: no val improvement for %d epochs", cfg.train.patience)

        best = run.load_best(model)
        test = evaluate_model(unwrap_model(model), test_ds, spec.tasks, run.info, cfg.train.eval_batch_size)
        summary = {
            "model": cfg.model.name,
            "params": n_params,
            "best_epoch": best["epoch"],
            "epochs_run": last_epoch,
            "train_time_s": extra["train_time_s"],
            "val_mean_auc": state.best,
        }
        run.log.info("test mean AUC %.4f (best epoch %d) -> %s", test["mean_auc"], best["epoch"], run.dir)
        return run.finish(summary, test)


def main(argv: Sequence[str] | None = None) -> None:
    train_main("infnet", InfnetConfig, train, "train INFNet or a baseline (model.name)", argv)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
