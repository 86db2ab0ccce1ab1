"""Train one segmentor (a backbone with or without Retro-FPN), keep the best validation checkpoint, score it on test.

    python -m retrofpn.train --config retrofpn/configs/synthetic_pt.yaml [--set model.retro=false] [--resume]
    torchrun --nproc_per_node 4 -m retrofpn.train --config retrofpn/configs/s3dis_minkunet.yaml

The loop follows ``tests/tiny_train.py``: ``main()`` only parses (``shared.cli.train_main``) and
``train(cfg, run_dir, resume, device)`` runs on ``shared.run.TrainRun`` (run folder
``runs/retrofpn/<experiment>_<backbone>_<retro|base>/<timestamp>/``, resolved ``config.yaml``, RNG states,
``metrics.jsonl`` truncated to the resumed step, atomic ``last.pt`` / ``best.pt``, ``summary.json``).

What one epoch is, as in the official ``train.py`` of each sub-project (github.com/AllenXiangX/Retro-FPN):
every training scene ``data.loop`` times, one random crop each (``retrofpn.data.SceneDataset``; sample i of
epoch e drawn from (seed, e, i), so a resumed run replays the same samples), ``train.batch_size`` scenes per
step, the incomplete last batch dropped. The sampling and neighbour structures of each batch are built by
``HierarchyHook`` inside the loader's collate, i.e. in its worker processes when ``train.workers > 0``. The
loss is the deep-supervision CE over the five levels (``Segmentor.loss``; one CE without Retro-FPN). The
optimiser and schedule are the config's: SGD + MultiStep per epoch (PT S3DIS, MinkUNet ScanNet), SGD + poly
per iteration (MinkUNet S3DIS), AdamW + OneCycle per iteration (PTv2 ScanNet); no gradient clipping is in
the official configs (``train.grad_clip`` adds it). AMP only on CUDA; DDP under torchrun, with BatchNorm ->
SyncBatchNorm on CUDA.

Model selection (a deviation, see README): after each epoch the model is scored on validation scenes held
out of the training split (``eval.val_scenes``; one voxelised pass per scene, the official PT validation),
and ``best.pt`` is the epoch with the highest validation mIoU. The official code validates on Area 5, the
test area itself. At the end ``best.pt`` is scored on the test split with the full voting protocol over all
original points (``retrofpn.evaluate.score_scenes``) -> ``test_metrics.json``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import clip_grad_norm_

from retrofpn.config import RetrofpnConfig, TrainConfig, check_config
from retrofpn.data import SceneDataset, load_scene, make_loader, set_epoch
from retrofpn.evaluate import (
    autocast,
    save_predictions,
    score_scenes,
    split_scenes,
    to_device,
    validate,
    validation_dataset,
)
from retrofpn.layers import PointBatchNorm
from retrofpn.model import HierarchyHook, Segmentor
from retrofpn.sparse import SparseBatchNorm
from shared.cli import train_main
from shared.distributed import DistInfo, all_reduce_mean, unwrap_model, wrap_model
from shared.errors import ConfigError, run_cli
from shared.log import StepProgress, check_finite
from shared.run import TrainRun

# ---------------------------------------------------------------------------------------- optimisation


def make_optimizer(model: nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay on every parameter: PT / MinkUNet) or AdamW (PTv2)."""
    if t.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def make_scheduler(
    opt: torch.optim.Optimizer, t: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """The schedule and whether it steps per iteration (True) or per epoch (False), as officially:

    - multistep, per epoch: lr x gamma at ``int(epochs * f)`` for each milestone fraction f (PT
      ``milestones=[int(epochs*0.6), int(epochs*0.8)]``);
    - poly, per iteration: ``lr * (1 - it / total)^power`` (BPNet/MinkUNet ``poly_learning_rate``);
    - onecycle, per iteration: torch's OneCycleLR with the config's pct / div / final div, cosine annealing
      (Pointcept's ``OneCycleLR``; its default momentum cycling is kept);
    - cosine, per iteration, to 0; constant.
    """
    total = t.epochs * steps_per_epoch
    if t.scheduler == "multistep":
        milestones = [int(t.epochs * f) for f in t.milestones]  # a repeated milestone applies gamma twice
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=t.gamma), False
    if t.scheduler == "poly":
        power = t.poly_power
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda it: max(0.0, 1 - it / total) ** power), True
    if t.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=t.lr, total_steps=total, pct_start=t.onecycle_pct, anneal_strategy="cos",
            div_factor=t.onecycle_div, final_div_factor=t.onecycle_final_div,
        ), True  # fmt: skip
    if t.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total), True
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0), True


class SyncPointBatchNorm(nn.SyncBatchNorm):
    """SyncBatchNorm over the channels of (n, C) or (n, k, C) point features (``PointBatchNorm``'s layout)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if x.dim() == 3:
            n, k, c = x.shape
            return super().forward(x.reshape(n * k, c)).view(n, k, c)
        return super().forward(x)


class SyncSparseBatchNorm(nn.SyncBatchNorm):
    """SyncBatchNorm over the active voxels of a ``SparseTensor`` (``SparseBatchNorm``'s layout)."""

    def forward(self, x):  # type: ignore[override]
        return x.replace(super().forward(x.feat))


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm of the model as a SyncBatchNorm of the same layout, statistics and parameters.

    ``nn.SyncBatchNorm.convert_sync_batchnorm`` would replace ``PointBatchNorm`` / ``SparseBatchNorm`` by a
    plain SyncBatchNorm, losing their (n, k, C) reshape and the SparseTensor unwrapping.
    """
    kinds = ((SparseBatchNorm, SyncSparseBatchNorm), (PointBatchNorm, SyncPointBatchNorm),
             (nn.BatchNorm1d, nn.SyncBatchNorm))  # fmt: skip
    for name, child in module.named_children():
        new = next((sync for kind, sync in kinds if isinstance(child, kind)), None)
        if new is None:
            sync_batchnorm(child)
            continue
        bn = new(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
        bn.load_state_dict(child.state_dict())
        bn.train(child.training)
        setattr(module, name, bn)
    return module


# ------------------------------------------------------------------------------------------------ the loop


def per_rank_batch(cfg: RetrofpnConfig, info: DistInfo) -> int:
    """``train.batch_size`` is the total over the processes, as in both official codes."""
    b, w = cfg.train.batch_size, info.world_size
    if b % w:
        raise ConfigError(
            f"train.batch_size = {b} is the total over {w} processes; make it a multiple of {w}"
        )
    return b // w


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    per_step: bool,
    scaler: torch.amp.GradScaler | None,
    loader: Any,
    steps: int,
    cfg: RetrofpnConfig,
    run: TrainRun,
    step: int,
    desc: str,
) -> dict[str, Any]:
    """One epoch of at most ``steps`` steps; the loss sums (total and per level), counts and the last lr."""
    segmentor = unwrap_model(model)
    t = cfg.train
    progress = StepProgress(steps, desc, run.log, run.info.rank, log_every=t.log_every)
    total, levels, n_steps, clouds, points, lr = 0.0, None, 0, 0, 0, opt.param_groups[0]["lr"]
    try:
        for batch in loader:
            if n_steps >= steps:
                break
            batch = to_device(batch, run.device)
            with autocast(run.device, t.amp):
                out = model(batch)
                loss, per_level = segmentor.loss(out, batch["segment"])
            if step == t.nan_at_step:
                loss = loss * float("nan")
            check_finite(loss.item(), step)
            opt.zero_grad(set_to_none=True)
            lr = opt.param_groups[0]["lr"]
            if scaler is not None:
                scaler.scale(loss).backward()
                if t.grad_clip:
                    scaler.unscale_(opt)
                    clip_grad_norm_(model.parameters(), t.grad_clip)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                if t.grad_clip:
                    clip_grad_norm_(model.parameters(), t.grad_clip)
                opt.step()
            if per_step:
                sched.step()
            step += 1
            n_steps += 1
            total += loss.item()
            values = torch.stack(per_level).double().cpu()
            levels = values if levels is None else levels + values
            clouds += len(batch["offset"])
            points += len(batch["coord"])
            progress.update(loss.item(), len(batch["offset"]))
    finally:
        progress.close()
    return {"loss": total, "levels": levels, "steps": n_steps, "step": step, "clouds": clouds,
            "points": points, "lr": lr}  # fmt: skip


def epoch_record(
    epoch: int,
    stats: dict[str, Any],
    val: dict[str, Any] | None,
    seconds: float,
    val_seconds: float,
    extra: dict,
    device: torch.device,
) -> dict[str, Any]:
    """One ``metrics.jsonl`` line: losses averaged over the steps (and the ranks), lr, validation, speed."""
    n = max(stats["steps"], 1)
    losses = torch.tensor([stats["loss"], *(stats["levels"].tolist() if stats["levels"] is not None else [])],
                          dtype=torch.float64) / n  # fmt: skip
    losses = all_reduce_mean(losses.to(device)).cpu()  # NCCL reduces CUDA tensors only
    record: dict[str, Any] = {
        "epoch": epoch,
        "step": stats["step"],
        "lr": stats["lr"],
        "loss": losses[0].item(),
    }
    record.update({f"loss_l{i + 1}": v for i, v in enumerate(losses[1:].tolist())})
    if val is not None:
        record.update({"val_miou": val["miou"], "val_macc": val["macc"], "val_oa": val["oa"]})
    record.update({
        "epoch_time_s": seconds, "val_time_s": val_seconds, "train_time_s": extra["train_time_s"],
        "samples_per_s": stats["clouds"] / max(seconds, 1e-9), "points_per_s": stats["points"] / max(seconds, 1e-9),
    })  # fmt: skip
    return record


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train(
    cfg: RetrofpnConfig, run_dir: str | Path | None = None, resume: bool = False, device: str = "auto"
) -> dict[str, Any]:
    """Train, keep the best checkpoint by validation mIoU, score it on test; return the summary."""
    check_config(cfg)
    t, e = cfg.train, cfg.eval
    if t.threads:
        torch.set_num_threads(t.threads)
    with TrainRun("retrofpn", cfg, run_dir=run_dir, resume=resume, device=device, seed=t.seed,
                  deterministic=t.deterministic) as run:  # fmt: skip
        info = run.info
        batch = per_rank_batch(cfg, info)
        splits = split_scenes(cfg)
        train_ds = SceneDataset(
            cfg.data, "train", seed=t.seed, scenes=[load_scene(r, cfg.data) for r in splits["train"]]
        )
        val_ds = (
            validation_dataset(cfg, [load_scene(r, cfg.data) for r in splits["val"]])
            if splits["val"]
            else None
        )
        loader = make_loader(
            train_ds, batch, shuffle=True, workers=t.workers, drop_last=True,
            batch_hook=HierarchyHook(cfg.model, t.seed), rank=info.rank, world_size=info.world_size,
        )  # fmt: skip
        steps = min(len(loader), t.max_steps_per_epoch) if t.max_steps_per_epoch else len(loader)
        if steps == 0:
            raise ConfigError(
                f"train.batch_size = {t.batch_size} is more than the {len(train_ds)} training samples of an "
                "epoch (scenes x data.loop); lower it or raise data.loop"
            )
        model = Segmentor(cfg.model)
        n_params = count_parameters(model)
        if info.distributed and info.device.type == "cuda" and t.sync_bn:
            model = sync_batchnorm(model)
        model = wrap_model(model, info)
        opt = make_optimizer(model, t)
        sched, per_step = make_scheduler(opt, t, steps)
        use_amp = t.amp and info.device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda") if use_amp else None
        state = run.start(
            model, opt, sched, extra={"train_time_s": 0.0, "val_time_s": 0.0, "grad_scaler": {}}
        )
        extra = state.extra
        if scaler is not None and extra["grad_scaler"]:
            scaler.load_state_dict(extra["grad_scaler"])
        run.log.info(
            "%s%s: %d parameters; %d train scenes x loop %d, %d val, %d test scenes; %d steps of %d per epoch",
            cfg.model.backbone, " + Retro-FPN" if cfg.model.retro else "", n_params, len(splits["train"]),
            cfg.data.loop, len(splits["val"]), len(splits["test"]), steps, batch,
        )  # fmt: skip
        step = state.step
        for epoch in range(state.epoch, t.epochs):
            set_epoch(loader, epoch)
            model.train()
            t0 = time.perf_counter()
            stats = train_epoch(
                model, opt, sched, per_step, scaler, loader, steps, cfg, run, step, f"epoch {epoch + 1}/{t.epochs}"
            )  # fmt: skip
            step = stats["step"]
            if not per_step:
                sched.step()
            seconds = time.perf_counter() - t0
            extra["train_time_s"] += seconds
            val, val_seconds = None, 0.0
            if val_ds is not None and ((epoch + 1) % e.val_every == 0 or epoch + 1 == t.epochs):
                t1 = time.perf_counter()
                val = validate(unwrap_model(model), val_ds, cfg, info, use_amp)
                val_seconds = time.perf_counter() - t1
                extra["val_time_s"] += val_seconds
            if scaler is not None:
                extra["grad_scaler"] = scaler.state_dict()
            record = epoch_record(epoch + 1, stats, val, seconds, val_seconds, extra, info.device)
            # without validation scenes the latest epoch is the best
            score = val["miou"] if val is not None else (float(epoch + 1) if val_ds is None else None)
            run.end_epoch(record, score, model=model, optimizer=opt, scheduler=sched)
            run.log.info(
                "epoch %d: loss %.4f, lr %.3g, val mIoU %s, %.0f s, %.0f points/s", epoch + 1, record["loss"],
                record["lr"], f"{val['miou']:.4f}" if val else "-", seconds, record["points_per_s"],
            )  # fmt: skip

        best = run.load_best(model)
        summary = {
            "backbone": cfg.model.backbone,
            "retro": cfg.model.retro,
            "seed": t.seed,
            "params": n_params,
            "epochs": t.epochs,
            "steps": step,
            "best_epoch": best["epoch"],
            "val_miou": state.best if val_ds is not None else None,
            "train_time_s": extra["train_time_s"],
            "val_time_s": extra["val_time_s"],
            "scenes": {k: len(v) for k, v in splits.items()},
        }
        test = None
        if e.test:
            t2 = time.perf_counter()
            scenes = [load_scene(r, cfg.data) for r in splits["test"]]
            test, predictions = score_scenes(unwrap_model(model), scenes, cfg, info, use_amp)
            if e.save_predictions:
                save_predictions(run.dir / "predictions", scenes[info.rank :: info.world_size], predictions)
            summary["test_time_s"] = time.perf_counter() - t2
            run.log.info(
                "test mIoU %.4f mAcc %.4f OA %.4f over %d points (best epoch %d) -> %s",
                test["miou"], test["macc"], test["oa"], test["points"], best["epoch"], run.dir,
            )  # fmt: skip
        if test is not None and not all(math.isfinite(test[k]) for k in ("miou", "macc", "oa")):
            run.log.warning("the test split has no labelled points: its metrics are NaN")
        return run.finish(summary, test)


def main(argv: Sequence[str] | None = None) -> None:
    train_main("retrofpn", RetrofpnConfig, train, "train a backbone with or without Retro-FPN", argv)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
