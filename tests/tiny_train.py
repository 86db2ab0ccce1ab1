"""A tiny end-to-end trainer on the shared layer, used by the reliability tests.

It is the reference pattern every paper's ``train.py`` follows: ``main()`` only parses the command line
(``shared.cli.train_main``: YAML + ``--set``, ``--resume`` with the run folder's saved config), and
``train(cfg, run_dir, resume, device) -> dict`` holds the loop, with ``shared.run.TrainRun`` doing the
bookkeeping: run folder and resolved config, every rank's RNG state saved and restored, ``metrics.jsonl``
truncated to the resumed step, atomic ``last.pt``/``best.pt`` each epoch, ``summary.json`` at the end.
Per-epoch shuffling is seeded by (seed, epoch) so a resumed run replays the same batches; a NaN check names
the step; DDP when run under ``torchrun``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shared.cli import train_main
from shared.distributed import all_reduce_mean, make_sampler, wrap_model
from shared.errors import run_cli
from shared.run import TrainRun, optimizer_step, require_positive
from shared.seeding import make_generator


@dataclass
class ModelConfig:
    """The two-layer perceptron.

    Attributes:
        hidden: width of the hidden layer
        dropout: dropout probability after the hidden layer
    """

    hidden: int = 16
    dropout: float = 0.1


@dataclass
class TrainConfig:
    """Optimisation and run settings.

    Attributes:
        seed: seed of python, numpy and torch (the rank is added under DDP)
        epochs: passes over the data
        batch_size: samples per optimiser step (per process under DDP)
        lr: SGD learning rate
        num_samples: size of the synthetic data set
        sleep_per_step: seconds to sleep after each step (lets a test kill the process mid-run)
        nan_at_step: inject a NaN loss at this step, to test the guard (-1: never)
        runs_root: folder holding runs/<paper>/<experiment>/<timestamp>/
    """

    seed: int = 0
    epochs: int = 4
    batch_size: int = 16
    lr: float = 0.05
    num_samples: int = 256
    sleep_per_step: float = 0.0  # lets a test kill the process mid-run
    nan_at_step: int = -1  # injects a NaN loss at this step, to test the guard
    runs_root: str = "runs"


@dataclass
class TinyConfig:
    """The tiny trainer's config.

    Attributes:
        experiment: name of the run folder under runs/tiny/
        model: the model section
        train: the train section
    """

    experiment: str = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def make_data(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, :4].sum(1, keepdim=True) > 0).float()
    return TensorDataset(x, y)


def train(
    cfg: TinyConfig, run_dir: str | Path | None = None, resume: bool = False, device: str = "auto"
) -> dict[str, Any]:
    require_positive(cfg.train, "epochs", "batch_size", "num_samples")
    with TrainRun("tiny", cfg, run_dir=run_dir, resume=resume, device=device, seed=cfg.train.seed,
                  higher_is_better=False) as run:  # fmt: skip
        model = nn.Sequential(
            nn.Linear(8, cfg.model.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.model.dropout),
            nn.Linear(cfg.model.hidden, 1),
        )
        model = wrap_model(model, run.info)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        state = run.start(model, opt, sched)

        data = make_data(cfg.train.num_samples)
        sampler = make_sampler(data, run.info, shuffle=True, seed=cfg.train.seed)
        loss_fn = nn.BCEWithLogitsLoss()
        step = state.step
        for epoch in range(state.epoch, cfg.train.epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)
            loader = DataLoader(
                data,
                batch_size=cfg.train.batch_size,
                shuffle=sampler is None,
                sampler=sampler,
                generator=make_generator(cfg.train.seed * 1000 + epoch),
            )
            model.train()
            total = 0.0
            for x, y in loader:
                loss = loss_fn(model(x.to(run.device)), y.to(run.device))
                total += optimizer_step(loss, opt, step, nan_at_step=cfg.train.nan_at_step)
                step += 1
                if cfg.train.sleep_per_step:
                    time.sleep(cfg.train.sleep_per_step)
            sched.step()
            val = all_reduce_mean(torch.tensor(total / len(loader), dtype=torch.float64)).item()  # all ranks
            record = {"epoch": epoch + 1, "step": step, "train_loss": val}
            run.end_epoch(record, val, model=model, optimizer=opt, scheduler=sched)
        return run.finish({"epochs": cfg.train.epochs, "best_train_loss": run.state.best})


def main(argv: Sequence[str] | None = None) -> None:
    train_main("tiny", TinyConfig, train, "tiny trainer", argv)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
