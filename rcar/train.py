"""Train one RCAR model (one direction, one mode) on a precomp folder.

    python -m rcar.train --config rcar/configs/mnist_scenes.yaml --set model.mode=rcar --set model.direction=t2i
    python -m rcar.train --config rcar/configs/mnist_scenes.yaml --set model.mode=rcar --resume
    torchrun --nproc_per_node 2 -m rcar.train --config rcar/configs/f30k.yaml --set model.direction=i2t

The loop follows ``tests/tiny_train.py``: YAML + ``--set``, a run folder ``runs/rcar/<experiment>_<direction>_
<mode>/<timestamp>/`` with the resolved ``config.yaml``, ``metrics.jsonl`` (one line per epoch: loss, lr, dev
R@K, rsum), atomic ``last.pt`` and ``best.pt`` (best dev rsum, the official model selection), shuffling
and caption augmentation keyed by (seed, epoch) so ``--resume`` replays the uninterrupted run.

Official schedule (facts §1): AdamW (weight decay 0.01), lr x 0.1 once at ``train.lr_decay_epoch``, hinge
triplet loss with all negatives for ``train.warmup_epochs`` epochs then hardest negatives, gradient clipping
at 2.0. Under torchrun each rank trains on its shard of the captions with a local B x B loss; DDP averages
the gradients (the official multi-GPU run instead gathers a B x B matrix, see README Deviations).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch.nn.utils import clip_grad_norm_
from torch.utils.data import DataLoader, Subset

from rcar.config import RCARConfig
from rcar.data import Vocab, build_train_dataset, collate_train, load_eval_split
from rcar.evaluate import compute_sims, recall_metrics
from rcar.loss import triplet_loss
from rcar.model import RCAR
from shared.checkpoint import load_checkpoint, restore_checkpoint, rng_state, save_checkpoint
from shared.cli import add_train_args, common_parser
from shared.config import config_to_dict, load_config, save_config
from shared.distributed import (
    all_gather_object,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    init_distributed,
    make_sampler,
    unwrap_model,
    wrap_model,
)
from shared.errors import ConfigError, run_cli
from shared.log import MetricsLog, check_finite, get_logger, resolve_run_dir
from shared.seeding import make_generator, seed_everything


def epoch_subset(n: int, limit: int | None, seed: int, epoch: int) -> list[int] | None:
    """The captions of this epoch when ``train.max_captions_per_epoch`` caps it (a seeded random subset)."""
    if limit is None or limit >= n:
        return None
    g = make_generator(seed * 1000 + epoch + 7)
    return torch.randperm(n, generator=g)[:limit].tolist()


def main(argv: Sequence[str] | None = None) -> None:
    args = add_train_args(common_parser("train an RCAR model")).parse_args(argv)
    cfg = load_config(RCARConfig, args.config, args.overrides)
    cfg.model.resolved_steps()  # fail early on an impossible step count
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    info = init_distributed(args.device)
    seed_everything(tc.seed, rank=info.rank)
    log = get_logger("rcar.train", info.rank)

    run_dir = resolve_run_dir(args.run_dir, args.resume, tc.runs_root, "rcar", cfg.run_name(), info.rank)
    if info.is_main:
        save_config(cfg, run_dir / "config.yaml")

    vocab = Vocab.from_json(cfg.data.vocab_path())
    train_set = build_train_dataset(cfg.data, vocab, seed=tc.seed)
    if train_set.feat_dim != cfg.model.img_dim:
        raise ConfigError(
            f"{train_set.features_path} has feature dim {train_set.feat_dim}; set model.img_dim={train_set.feat_dim}"
        )
    dev_feats, dev_caps = load_eval_split(cfg.data.root, cfg.data.dev_split, vocab, cfg.data.dev_max_images)

    model = wrap_model(RCAR(cfg.model, len(vocab)), info)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[tc.lr_decay_epoch], gamma=0.1)

    start_epoch, step, best = 0, 0, None
    if args.resume:
        state = load_checkpoint(run_dir / "last.pt")
        restore_checkpoint(state, model=model, optimizer=opt, scheduler=sched, rank=info.rank)
        start_epoch, step, best = state["epoch"], state["step"], state["best_metric"]
        log.info("resumed from %s at epoch %d", run_dir / "last.pt", start_epoch)
    metrics = MetricsLog(run_dir / "metrics.jsonl", info.rank, resume_step=step if args.resume else None)
    log.info(
        "%s: %d train captions, %d params, run folder %s",
        cfg.run_name(),
        len(train_set),
        sum(p.numel() for p in model.parameters()),
        run_dir,
    )

    for epoch in range(start_epoch, tc.epochs):
        t0 = time.time()
        train_set.set_epoch(epoch)
        subset = epoch_subset(len(train_set), tc.max_captions_per_epoch, tc.seed, epoch)
        data = train_set if subset is None else Subset(train_set, subset)
        sampler = make_sampler(data, info, shuffle=True, seed=tc.seed)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(
            data,
            batch_size=tc.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            collate_fn=collate_train,
            num_workers=cfg.data.num_workers,
            generator=make_generator(tc.seed * 1000 + epoch),
        )
        hardest = epoch >= tc.warmup_epochs
        model.train()
        total, n_batches = 0.0, 0
        for batch in loader:
            sims = model(
                batch["images"].to(info.device),
                batch["captions"].to(info.device),
                batch["lengths"].to(info.device),
            )
            loss = triplet_loss(sims, batch["image_index"].to(info.device), tc.margin, hardest)
            check_finite(loss.item(), step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            step += 1
            total += loss.item()
            n_batches += 1
            if tc.log_every and step % tc.log_every == 0:
                log.info("epoch %d step %d loss %.3f", epoch + 1, step, loss.item())
        lr = opt.param_groups[0]["lr"]
        sched.step()
        train_loss = all_reduce_mean(torch.tensor(total / max(1, n_batches), dtype=torch.float64)).item()
        record = {"epoch": epoch + 1, "step": step, "train_loss": train_loss, "lr": lr}
        record["hardest_negative"] = hardest
        rngs = all_gather_object(rng_state())  # every rank resumes its own dropout / augmentation stream
        if info.is_main:
            sims = compute_sims(
                unwrap_model(model),
                dev_feats,
                dev_caps,
                info.device,
                cfg.eval.memory_budget_mb,
                cfg.eval.image_batch,
                cfg.eval.caption_batch,
            )
            record.update({f"dev_{k}": v for k, v in recall_metrics(sims).items()})
            record["epoch_time_s"] = time.time() - t0
            is_best = best is None or record["dev_rsum"] > best
            best = record["dev_rsum"] if is_best else best
            metrics.log(record)
            log.info(
                "epoch %d: loss %.3f dev rsum %.2f (best %.2f) %.0fs",
                epoch + 1,
                record["train_loss"],
                record["dev_rsum"],
                best,
                record["epoch_time_s"],
            )
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
        barrier()
    if info.is_main:
        (run_dir / "DONE").write_text(f"{tc.epochs} epochs, best dev rsum {best}\n")
    cleanup_distributed()


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
