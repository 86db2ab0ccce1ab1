"""Train one RCAR model (one direction, one mode) on a precomp folder, then score its best checkpoint on test.

    python -m rcar.train --config rcar/configs/mnist_scenes.yaml --set model.mode=rcar --set model.direction=t2i
    python -m rcar.train --config rcar/configs/mnist_scenes.yaml --set model.mode=rcar --resume
    torchrun --nproc_per_node 2 -m rcar.train --config rcar/configs/f30k.yaml --set model.direction=i2t

The loop follows ``tests/tiny_train.py``: ``main()`` only parses (``shared.cli.train_main``) and
``train(cfg, run_dir, resume, device)`` runs on ``shared.run.TrainRun``, which keeps the run folder
``runs/rcar/<experiment>_<direction>_<mode>/<timestamp>/``: the resolved ``config.yaml``, ``metrics.jsonl``
(one line per epoch: loss, lr, dev R@K, rsum), atomic ``last.pt`` / ``best.pt`` (best dev rsum, the official
model selection), and at the end ``summary.json`` and ``test_metrics.json`` (the best checkpoint on the test
split). Shuffling, the per-epoch caption subset and the caption augmentation are keyed by (seed, epoch), and
the RNG states are restored on ``--resume``, so a resumed run replays the uninterrupted one exactly.

The official schedule (Paranioar/RCAR ``train.py``, ``lib/loss.py``): AdamW (weight decay 0.01), lr x 0.1
once at ``train.lr_decay_epoch``, hinge triplet loss with all negatives for ``train.warmup_epochs`` epochs
then the hardest negative, gradient clipping at 2.0 (``shared.run.optimizer_step``), the incomplete last
batch dropped. ``train.hardest_negatives`` also offers ``never`` (all negatives: the control) and
``adaptive`` (the hardest from the epoch after the mean held-batch hinge first falls below the margin; a
deviation). After every epoch the diagnostics of a collapse to one score go into ``metrics.jsonl``: the
spread of the dev similarities, the sigmoid head's weight norm, the mean hardest-negative hinge of the held
train batches against the margin and the share of their queries over it; an epoch whose dev score std is
below ``train.collapse_score_std`` is flagged ``collapsed`` (and listed in ``summary.json``). Under torchrun each
rank trains on its shard of the captions with a local B x B loss and DDP averages the gradients (the official
multi-GPU run instead gathers a B x B matrix, see README Deviations); the dev and test matrices are shared out
among the ranks by caption and gathered back (``rcar.evaluate.split_sims``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from rcar.config import RCARConfig
from rcar.data import (
    CAPTIONS_PER_IMAGE,
    PrecompDataset,
    Vocab,
    build_train_dataset,
    collate_train,
    load_eval_split,
)
from rcar.evaluate import chunk_kwargs, evaluate_sims, recall_metrics, sharded_sims, split_sims
from rcar.loss import hardest_negative_hinges, triplet_loss
from rcar.model import RCAR
from shared.cli import train_main
from shared.distributed import DistInfo, all_reduce_mean, make_sampler, unwrap_model, wrap_model
from shared.errors import ConfigError, run_cli
from shared.log import StepProgress
from shared.run import TrainRun, optimizer_step, require_positive
from shared.seeding import make_generator


def epoch_subset(n: int, limit: int | None, seed: int, epoch: int) -> list[int] | None:
    """The captions of this epoch when ``train.max_captions_per_epoch`` caps it (a seeded random subset)."""
    if limit is None or limit >= n:
        return None
    g = make_generator(seed * 1000 + epoch + 7)
    return torch.randperm(n, generator=g)[:limit].tolist()


def check_config(cfg: RCARConfig) -> None:
    """Refuse, before any folder is made, the values no run can use (one line naming the key)."""
    tc = cfg.train
    require_positive(
        tc, "epochs", "batch_size", "max_captions_per_epoch", "threads", "held_batches", "length_groups"
    )
    for key in ("rar_dropout", "text_dropout"):
        p = getattr(cfg.model, key)
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"model.{key} must be in [0, 1), got {p}")
    if tc.collapse_score_std < 0:
        raise ConfigError(f"train.collapse_score_std must be >= 0, got {tc.collapse_score_std}")
    require_positive(
        cfg.eval, "memory_budget_mb", "image_batch", "caption_batch", "fold_images", prefix="eval"
    )
    if tc.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {tc.lr}")
    if tc.log_every < 0:
        raise ConfigError(f"train.log_every must be >= 0 (0: no progress lines), got {tc.log_every}")
    if cfg.data.dev_max_images is not None and cfg.data.dev_max_images < 1:
        raise ConfigError(f"data.dev_max_images must be >= 1 or null, got {cfg.data.dev_max_images}")
    cfg.model.resolved_steps()  # an impossible step count for the mode


def epoch_loader(train_set: PrecompDataset, cfg: RCARConfig, info: DistInfo, epoch: int) -> DataLoader:
    """This epoch's batches: the capped subset, sharded under DDP, shuffled by (seed, epoch), full batches only."""
    tc = cfg.train
    train_set.set_epoch(epoch)
    subset = epoch_subset(len(train_set), tc.max_captions_per_epoch, tc.seed, epoch)
    data = train_set if subset is None else Subset(train_set, subset)
    sampler = make_sampler(data, info, shuffle=True, seed=tc.seed)
    if sampler is not None:
        sampler.set_epoch(epoch)
    return DataLoader(
        data,
        batch_size=tc.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=collate_train,
        num_workers=cfg.data.num_workers,
        generator=make_generator(tc.seed * 1000 + epoch),
        drop_last=True,  # as the official loader: a small last batch would weaken the hinge loss
    )


def held_batches(train_set: PrecompDataset, cfg: RCARConfig) -> list[dict[str, torch.Tensor]]:
    """``train.held_batches`` fixed batches of train captions, without augmentation (a seeded choice).

    Scored in eval mode after every epoch: the hinge each query would pay for its hardest negative, the
    signal of the adaptive switch and of the diagnostics.
    """
    tc = cfg.train
    n = min(len(train_set), tc.held_batches * tc.batch_size)
    picks = torch.randperm(len(train_set), generator=make_generator(tc.seed * 1000 + 999))[:n].tolist()
    items = []
    for index in picks:
        image_index = index // CAPTIONS_PER_IMAGE
        feats = torch.from_numpy(np.array(train_set.features[image_index], dtype=np.float32))
        items.append((feats, torch.tensor(train_set.captions[index], dtype=torch.long), index, image_index))
    return [collate_train(items[lo : lo + tc.batch_size]) for lo in range(0, n, tc.batch_size)]


@torch.no_grad()
def hinge_diagnostics(
    model: RCAR, batches: Sequence[dict[str, torch.Tensor]], margin: float, device: torch.device
) -> dict[str, float]:
    """Mean hardest-negative hinge per query on ``batches`` and the share of queries above the margin.

    A constant score costs exactly the margin per query; while the mean is above it, the hardest-negative
    loss is lowered by collapsing every score to one value (see ``rcar.loss.hardest_negative_hinges``).
    """
    was_training = model.training
    model.eval()
    hinges = torch.cat(
        [
            hardest_negative_hinges(
                model(b["images"].to(device), b["captions"].to(device), b["lengths"].to(device)),
                b["image_index"].to(device),
                margin,
            )
            for b in batches
        ]
    )
    model.train(was_training)
    return {
        "held_hinge_mean": float(hinges.mean()),
        "held_over_margin": float((hinges > margin).float().mean()),
    }


def switch_epoch(cfg: RCARConfig, hinge_below_margin_epoch: int | None) -> int | None:
    """The first epoch (1-based) trained on hardest negatives under ``train.hardest_negatives``, or None.

    adaptive: the epoch after the first one whose mean held-batch hinge fell below the margin. Every schedule
    tracks that epoch, so a run that kept all negatives up to it can be continued as the adaptive one
    (``rcar.reproduce`` branches the official and adaptive runs off the all-negatives control this way).
    """
    tc = cfg.train
    first = {
        "after_warmup": tc.warmup_epochs + 1,
        "never": None,
        "adaptive": None if hinge_below_margin_epoch is None else hinge_below_margin_epoch + 1,
    }[tc.hardest_negatives]
    return first if first is not None and first <= tc.epochs else None


def score_diagnostics(model: RCAR, dev: np.ndarray, collapse_std: float) -> dict[str, Any]:
    """The spread of the dev similarities and the sigmoid head's weight norm (None for the cosine heads)."""
    head = model.sim.out
    std = float(dev.std())
    return {
        "dev_score_std": std,
        "dev_score_mean": float(dev.mean()),
        "head_weight_norm": None if head is None else float(head.weight.detach().norm()),
        "collapsed": std < collapse_std,
    }


def keep_copy(src: Path, dst: Path) -> None:
    """Copy a checkpoint atomically (temporary file, then ``os.replace``)."""
    tmp = dst.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def train(
    cfg: RCARConfig, run_dir: str | Path | None = None, resume: bool = False, device: str = "auto"
) -> dict[str, Any]:
    """Train, keep the best checkpoint by dev rsum, score it on the test split; return the summary."""
    check_config(cfg)
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    with TrainRun("rcar", cfg, run_dir=run_dir, resume=resume, device=device, seed=tc.seed) as run:
        vocab = Vocab.from_json(cfg.data.vocab_path())
        train_set = build_train_dataset(cfg.data, vocab, seed=tc.seed)
        if train_set.feat_dim != cfg.model.img_dim:
            raise ConfigError(
                f"{train_set.features_path} has feature dim {train_set.feat_dim}; set model.img_dim={train_set.feat_dim}"
            )
        per_epoch = min(len(train_set), tc.max_captions_per_epoch or len(train_set))
        if per_epoch // run.info.world_size < tc.batch_size:
            raise ConfigError(
                f"train.batch_size={tc.batch_size} is more than the {per_epoch // run.info.world_size} captions "
                "an epoch gives each process (incomplete batches are dropped); lower train.batch_size"
            )
        dev_feats, dev_caps = load_eval_split(
            cfg.data.root,
            cfg.data.dev_split,
            vocab,
            cfg.data.dev_max_images,
            cfg.data.n_regions,
            cfg.data.feat_dim,
        )

        model = wrap_model(RCAR(cfg.model, len(vocab)), run.info)
        bare = unwrap_model(model)
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[tc.lr_decay_epoch], gamma=0.1)
        held = held_batches(train_set, cfg)
        state = run.start(
            model,
            opt,
            sched,
            extra={
                "best_epoch": 0,
                "train_time_s": 0.0,
                "hinge_below_margin_epoch": None,
                "collapsed_epochs": [],
            },
        )
        n_params = sum(p.numel() for p in model.parameters())
        run.log.info(
            "%s: %d train captions (%.1f%% of their words <unk>), %d params, run folder %s",
            cfg.run_name(),
            len(train_set),
            100 * train_set.unknown_share,
            n_params,
            run.dir,
        )

        step = state.step
        for epoch in range(state.epoch, tc.epochs):
            t0 = time.perf_counter()
            loader = epoch_loader(train_set, cfg, run.info, epoch)
            first_hardest = switch_epoch(cfg, run.state.extra["hinge_below_margin_epoch"])
            hardest = first_hardest is not None and epoch + 1 >= first_hardest
            model.train()
            progress = StepProgress(
                len(loader), f"epoch {epoch + 1}/{tc.epochs}", run.log, run.info.rank, tc.log_every
            )
            for batch in loader:
                sims = model(
                    batch["images"].to(run.device),
                    batch["captions"].to(run.device),
                    batch["lengths"].to(run.device),
                    length_groups=tc.length_groups,
                )  # (B, B)
                loss = triplet_loss(sims, batch["image_index"].to(run.device), tc.margin, hardest)
                value = optimizer_step(loss, opt, step, grad_clip=tc.grad_clip)
                step += 1
                progress.update(value, len(batch["lengths"]))
            progress.close()
            lr = opt.param_groups[0]["lr"]
            sched.step()
            mean_loss = torch.tensor(
                progress.loss_sum / progress.steps, dtype=torch.float64, device=run.device
            )
            record = {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": all_reduce_mean(mean_loss).item(),
                "lr": lr,
            }
            record["hardest_negative"] = hardest
            dev = sharded_sims(bare, dev_feats, dev_caps, run.device, run.info, **chunk_kwargs(cfg.eval))
            record.update({f"dev_{k}": v for k, v in recall_metrics(dev).items()})
            record.update(score_diagnostics(bare, dev, tc.collapse_score_std))
            record.update(hinge_diagnostics(bare, held, tc.margin, run.device))
            if run.state.extra["hinge_below_margin_epoch"] is None and record["held_hinge_mean"] < tc.margin:
                run.state.extra["hinge_below_margin_epoch"] = epoch + 1
                if tc.hardest_negatives == "adaptive" and epoch + 1 < tc.epochs:
                    run.log.info(
                        "epoch %d: held hinge %.3f < margin %g: hardest negatives from epoch %d",
                        epoch + 1,
                        record["held_hinge_mean"],
                        tc.margin,
                        epoch + 2,
                    )
            if record["collapsed"]:
                run.state.extra["collapsed_epochs"].append(epoch + 1)
                run.log.warning(
                    "epoch %d: dev scores collapsed (std %.4f < train.collapse_score_std=%g)",
                    epoch + 1,
                    record["dev_score_std"],
                    tc.collapse_score_std,
                )
            record["epoch_time_s"] = time.perf_counter() - t0
            run.state.extra["train_time_s"] += record["epoch_time_s"]
            if run.is_better(record["dev_rsum"]):
                run.state.extra["best_epoch"] = epoch + 1
            run.end_epoch(record, record["dev_rsum"], model=model, optimizer=opt, scheduler=sched)
            if tc.keep_epoch_checkpoints and run.info.is_main:  # to branch other schedules off this run
                keep_copy(run.dir / "last.pt", run.dir / f"epoch_{epoch + 1}.pt")
            run.log.info(
                "epoch %d: loss %.3f dev rsum %.2f (best %.2f), dev score std %.4f, held hinge %.3f "
                "(margin %g) %.0fs",
                epoch + 1,
                record["train_loss"],
                record["dev_rsum"],
                run.state.best,
                record["dev_score_std"],
                record["held_hinge_mean"],
                tc.margin,
                record["epoch_time_s"],
            )

        run.load_best(bare)
        sims = split_sims(bare, cfg, vocab, cfg.data.test_split, run.device, info=run.info)
        test = evaluate_sims(sims)
        if cfg.eval.save_test_sims and run.info.is_main:
            np.savez_compressed(run.dir / "test_sims.npz", *(sims if isinstance(sims, list) else [sims]))
        n_test = sum(s.shape[0] for s in sims) if isinstance(sims, list) else sims.shape[0]
        summary = {
            "experiment": cfg.run_name(),
            "epochs": tc.epochs,
            "steps": step,
            "best_dev_rsum": run.state.best,
            "best_epoch": run.state.extra["best_epoch"],
            "params": n_params,
            "train_captions": len(train_set),
            "captions_per_epoch": per_epoch,
            "train_unknown_share": train_set.unknown_share,
            "train_time_s": run.state.extra["train_time_s"],
            "hardest_negatives": tc.hardest_negatives,
            "switch_epoch": switch_epoch(cfg, run.state.extra["hinge_below_margin_epoch"]),
            "hinge_below_margin_epoch": run.state.extra["hinge_below_margin_epoch"],
            "collapsed_epochs": run.state.extra["collapsed_epochs"],
            "test_split": cfg.data.test_split,
            "test_protocol": (
                f"mean over {len(sims)} fold{'s' * (len(sims) > 1)} of {cfg.eval.fold_images} images"
                if isinstance(sims, list)
                else f"all {n_test} images"
            ),
        }
        run.log.info("test (%s, %s): rsum %.2f", cfg.data.test_split, summary["test_protocol"], test["rsum"])
        return run.finish(summary, test)


def main(argv: Sequence[str] | None = None) -> None:
    train_main("rcar", RCARConfig, train, "train an RCAR model (one direction and mode)", argv)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
