"""The bookkeeping of one training run, shared by every package's ``train()``; the loop itself stays there.

    with TrainRun("infnet", cfg, run_dir=run_dir, resume=resume, device=device, seed=cfg.train.seed) as run:
        ...build data and model...
        state = run.start(model, optimizer, scheduler, extra={"bad_epochs": 0})
        for epoch in range(state.epoch, cfg.train.epochs):
            ...train one epoch, evaluate on validation...
            run.end_epoch(record, score, model=model, optimizer=opt, scheduler=sched)
        run.load_best(model)
        return run.finish(summary, test_metrics)

What it owns: torchrun's process group (``init_distributed``), seeding, the run folder (one per run, the same
on every rank), the resolved ``config.yaml``, restoring ``last.pt`` on ``--resume`` (weights, optimiser,
scheduler, every rank's RNG), ``metrics.jsonl`` truncated to the resumed step, the best metric, atomic
``last.pt`` / ``best.pt`` each epoch, and at the end ``summary.json`` + ``test_metrics.json``. A run that
fails before its first checkpoint removes the folder it created, so a failed start leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from shared.checkpoint import load_checkpoint, restore_checkpoint, rng_state, save_checkpoint
from shared.cli import run_folder_name
from shared.config import config_to_dict, save_config
from shared.distributed import DistInfo, all_gather_object, barrier, cleanup_distributed, init_distributed
from shared.errors import ConfigError
from shared.log import MetricsLog, check_finite, get_logger, resolve_run_dir
from shared.seeding import seed_everything


@dataclass
class RunState:
    """Where a run stands: ``epoch`` completed epochs, ``step`` optimiser steps, the best validation score
    so far and package-specific counters (``extra``: plain values only, they go into the checkpoint)."""

    epoch: int = 0
    step: int = 0
    best: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def require_positive(section: Any, *keys: str, prefix: str = "train") -> None:
    """A ``ConfigError`` naming the first of ``keys`` that is below 1 (epochs, batch sizes...).

    ``prefix`` is the config section the keys live in (``""`` for top-level keys)."""
    for key in keys:
        value = getattr(section, key)
        if value is not None and value < 1:
            name = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{name} must be >= 1, got {value}")


class TrainRun:
    """Run folder, resume, metrics and checkpoints of one training command (see the module docstring).

    ``higher_is_better`` says how ``end_epoch`` compares validation scores (a NaN score is never best).
    """

    def __init__(
        self,
        paper: str,
        cfg: Any,
        *,
        run_dir: str | Path | None,
        resume: bool,
        device: str,
        seed: int,
        deterministic: bool = False,
        higher_is_better: bool = True,
    ):
        self.paper, self.cfg, self.resume = paper, cfg, resume
        self.higher_is_better = higher_is_better
        self.info: DistInfo = init_distributed(device)
        seed_everything(seed, rank=self.info.rank, deterministic=deterministic)
        self.log = get_logger(paper, self.info.rank)
        created = run_dir is None or not Path(run_dir).exists()
        self.dir = resolve_run_dir(
            run_dir, resume, cfg.train.runs_root, paper, run_folder_name(cfg), self.info.rank
        )
        self._remove_on_failure = created and not resume
        self.state = RunState()
        self.metrics: MetricsLog | None = None

    # ---------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> TrainRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None and self._remove_on_failure and self.info.is_main:
            if not (self.dir / "last.pt").exists():
                shutil.rmtree(self.dir, ignore_errors=True)
        cleanup_distributed()

    @property
    def device(self) -> torch.device:
        return self.info.device

    def start(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> RunState:
        """Once data and model are built: write ``config.yaml``, restore ``last.pt`` when resuming, open
        ``metrics.jsonl``; return the state to continue from (epoch 0 for a new run)."""
        self.state.extra = dict(extra or {})
        if self.resume:
            path = self.dir / "last.pt"
            ckpt = load_checkpoint(path, map_location=self.device, paper=self.paper)
            restore_checkpoint(
                ckpt, model=model, optimizer=optimizer, scheduler=scheduler, rank=self.info.rank
            )
            self.state.epoch, self.state.step, self.state.best = (
                ckpt["epoch"],
                ckpt["step"],
                ckpt["best_metric"],
            )
            self.state.extra.update(ckpt.get("extra") or {})
            self.log.info("resumed from %s at epoch %d", path, self.state.epoch)
        if self.info.is_main:
            save_config(self.cfg, self.dir / "config.yaml")
        self.metrics = MetricsLog(
            self.dir / "metrics.jsonl", self.info.rank, resume_step=self.state.step if self.resume else None
        )
        return self.state

    def is_better(self, score: float) -> bool:
        best = self.state.best
        if best is None:
            return True
        if math.isnan(score):
            return False
        return score > best if self.higher_is_better else score < best

    def end_epoch(
        self,
        record: dict[str, Any],
        score: float | None,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
    ) -> bool:
        """Log ``record`` (it must hold ``epoch`` and ``step``), update the best score, write ``last.pt``
        (and ``best.pt`` when this epoch is the best); return whether it was. Call it on every rank."""
        self.state.epoch, self.state.step = record["epoch"], record["step"]
        is_best = score is not None and self.is_better(score)
        if is_best:
            self.state.best = score
        assert self.metrics is not None, "TrainRun.start() must be called before end_epoch()"
        self.metrics.log(record)
        rngs = all_gather_object(rng_state())  # every rank resumes its own RNG stream
        if self.info.is_main:
            save_checkpoint(
                self.dir,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                paper=self.paper,
                epoch=self.state.epoch,
                step=self.state.step,
                best_metric=self.state.best,
                is_best=is_best,
                config=config_to_dict(self.cfg),
                extra=self.state.extra,
                rng_states=rngs,
            )
        barrier()
        return is_best

    def load_best(self, model: torch.nn.Module) -> dict[str, Any]:
        """Load ``best.pt`` into ``model`` (weights only, RNG untouched); return the checkpoint."""
        barrier()
        ckpt = load_checkpoint(self.dir / "best.pt", map_location=self.device, paper=self.paper)
        restore_checkpoint(ckpt, model=model, restore_rng=False)
        return ckpt

    def finish(self, summary: dict[str, Any], test_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``summary.json`` (and ``test_metrics.json``) on rank 0; return the summary."""
        summary = {"paper": self.paper, "run_dir": str(self.dir), **summary}
        if test_metrics is not None:
            summary["test"] = test_metrics
        if self.info.is_main:
            (self.dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
            if test_metrics is not None:
                (self.dir / "test_metrics.json").write_text(
                    json.dumps(test_metrics, indent=2, default=float) + "\n"
                )
        return summary


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    step: int,
    *,
    nan_at_step: int = -1,
    grad_clip: float = 0.0,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One optimiser step on ``loss``: the NaN guard naming ``step``, backward, optional clipping, update.

    Returns ``loss.item()``. ``nan_at_step`` injects a NaN at that step (tests of the guard); ``scaler`` is
    a CUDA AMP ``GradScaler`` (gradients are unscaled before clipping).
    """
    if step == nan_at_step:
        loss = loss * float("nan")
    value = loss.item()
    check_finite(value, step)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip > 0:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return value
