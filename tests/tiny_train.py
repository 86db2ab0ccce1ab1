"""A tiny end-to-end trainer on the shared layer, used by the reliability tests.

It is the reference pattern every paper's ``train.py`` follows: YAML config + ``--set`` overrides, a run
folder with the resolved config, per-epoch shuffling seeded by (seed, epoch) so a resumed run replays the same
batches, every rank's RNG state saved and restored (``rng_states=`` / ``rank=``), ``metrics.jsonl`` truncated
to the resumed step, an atomic ``last.pt``/``best.pt`` each epoch, a NaN check naming the step, and DDP when
run under ``torchrun``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shared.checkpoint import load_checkpoint, restore_checkpoint, rng_state, save_checkpoint
from shared.cli import add_train_args, common_parser
from shared.config import config_to_dict, load_config, save_config
from shared.distributed import (
    all_gather_object,
    all_reduce_mean,
    cleanup_distributed,
    init_distributed,
    make_sampler,
    wrap_model,
)
from shared.errors import run_cli
from shared.log import MetricsLog, check_finite, get_logger, resolve_run_dir
from shared.seeding import make_generator, seed_everything


@dataclass
class ModelConfig:
    hidden: int = 16
    dropout: float = 0.1


@dataclass
class TrainConfig:
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
    experiment: str = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def make_data(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, :4].sum(1, keepdim=True) > 0).float()
    return TensorDataset(x, y)


def main(argv: Sequence[str] | None = None) -> None:
    args = add_train_args(common_parser("tiny trainer")).parse_args(argv)
    cfg = load_config(TinyConfig, args.config, args.overrides)
    info = init_distributed(args.device)
    seed_everything(cfg.train.seed, rank=info.rank)
    log = get_logger("tiny", info.rank)

    run_dir = resolve_run_dir(
        args.run_dir, args.resume, cfg.train.runs_root, "tiny", cfg.experiment, info.rank
    )
    if info.is_main:
        save_config(cfg, run_dir / "config.yaml")

    model = nn.Sequential(
        nn.Linear(8, cfg.model.hidden),
        nn.ReLU(),
        nn.Dropout(cfg.model.dropout),
        nn.Linear(cfg.model.hidden, 1),
    )
    model = wrap_model(model, info)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    start_epoch, step, best = 0, 0, None
    if args.resume:
        state = load_checkpoint(run_dir / "last.pt")
        restore_checkpoint(state, model=model, optimizer=opt, scheduler=sched, rank=info.rank)
        start_epoch, step, best = state["epoch"], state["step"], state["best_metric"]
        log.info("resumed from %s at epoch %d", run_dir / "last.pt", start_epoch)
    metrics = MetricsLog(run_dir / "metrics.jsonl", info.rank, resume_step=step if args.resume else None)

    data = make_data(cfg.train.num_samples)
    sampler = make_sampler(data, info, shuffle=True, seed=cfg.train.seed)
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(start_epoch, cfg.train.epochs):
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
            loss = loss_fn(model(x.to(info.device)), y.to(info.device))
            if step == cfg.train.nan_at_step:
                loss = loss * float("nan")
            check_finite(loss.item(), step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total += loss.item()
            if cfg.train.sleep_per_step:
                time.sleep(cfg.train.sleep_per_step)
        sched.step()
        val = all_reduce_mean(torch.tensor(total / len(loader), dtype=torch.float64)).item()  # all ranks
        is_best = best is None or val < best
        best = val if is_best else best
        metrics.log({"epoch": epoch + 1, "step": step, "train_loss": val})
        rngs = all_gather_object(rng_state())  # every rank's RNG: each resumes its own dropout stream
        if info.is_main:
            save_checkpoint(
                run_dir,
                model=model,
                optimizer=opt,
                scheduler=sched,
                epoch=epoch + 1,
                step=step,
                best_metric=best,
                is_best=is_best,
                config=config_to_dict(cfg),
                rng_states=rngs,
            )
    cleanup_distributed()


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
