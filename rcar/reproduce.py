"""``make reproduce-rcar [QUICK=1]``: baseline, +RCR, +RAR, +RCAR in both directions under three
hardest-negative schedules, on the embedded set.

    python -m rcar.reproduce [--quick] [--jobs 2] [--seeds 0 1 2] [--branch-seeds 0 1 2]
    python -m rcar.reproduce --from-metrics results/rcar/metrics.json   # report.md + PNGs from metrics.json

The schedules (``train.hardest_negatives``):

- ``never``, "all negatives" (the control): the all-negative hinge loss in every epoch;
- ``after_warmup``, "official": all negatives for ``train.warmup_epochs`` epochs, then each query's
  hardest negative (Paranioar/RCAR ``train.py``, ``lib/loss.py``);
- ``adaptive`` (a deviation): hardest negatives from the epoch after the mean hardest-negative hinge on the
  held train batches first falls below the margin (a constant score costs exactly the margin per query, so
  below it the hardest-negative loss no longer pays a model for collapsing; see rcar/README.md).

1. Builds the embedded data with ``rcar.prepare`` (a no-op when it is up to date); QUICK builds its own small
   set (``rcar/configs/data_mnist_scenes_quick.yaml``: 2,000 / 100 / 200 images) instead of the full one.
2. Trains the control runs (8 variants x ``--seeds``; QUICK: 1 seed, a shorter schedule) with
   ``rcar/configs/mnist_scenes.yaml`` through ``rcar.train.train``, ``--jobs`` single-threaded jobs at a
   time, each in ``runs/rcar/reproduce[_quick]/<direction>_<mode>_<schedule>_s<seed>/``, keeping every epoch's
   checkpoint. Until its switch an official or adaptive run *is* its control run (same seed, batches and
   dropout draws; the diagnostics draw nothing), so each is branched off the control at the end of the epoch
   before its switch (that ``epoch_<k>.pt`` as ``last.pt``, the best of the epochs so far as ``best.pt``,
   ``metrics.jsonl``) and resumed under its own schedule: bit-identical to training it from scratch (tested),
   at 3 of 8 epochs' steps or fewer. An adaptive run whose hinge never falls below the margin is its control
   (its files are copied).
   ``train`` scores each best-dev checkpoint on the test split (5 folds of 200 images x 1,000 captions; QUICK:
   its 200 test images) and keeps the similarity matrices for the t2i+i2t ensemble. A job whose
   ``summary.json`` exists is skipped and one with only ``last.pt`` resumes, so an interrupted reproduction
   continues where it stopped. Progress: "k of N runs done, ETA".
3. Collects everything the report needs into ``metrics.json`` (test metrics per seed, every run's per-epoch
   dev rsum, loss and diagnostics, its switch epoch, the config, machine, commits) and writes ``report.md``
   and the plots from it alone (``rcar/report.py``), so ``--from-metrics`` regenerates them from the committed
   ``metrics.json``. The full run writes ``results/rcar/``; QUICK writes ``runs/rcar/quick/``, never
   ``results/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rcar import prepare
from rcar.config import RCARConfig
from rcar.evaluate import ensemble, evaluate_sims
from rcar.report import CONTROL, DIRECTIONS, METRICS, MODES, SCHEDULES, write_report
from rcar.train import switch_epoch
from shared.bench import machine_info
from shared.checkpoint import load_checkpoint
from shared.config import config_to_dict, load_config, save_config
from shared.errors import ConfigError, DataError, run_cli
from shared.log import get_logger, read_metrics
from shared.report import report_dir
from shared.reproduce import (
    check_parallelism,
    rebuild_from_metrics,
    reproduce_parser,
    run_parallel,
    run_process,
)

CONFIG = Path(__file__).parent / "configs" / "mnist_scenes.yaml"
QUICK_DATA = "data/rcar/mnist_scenes_quick_precomp"
QUICK_OVERRIDES = [
    "train.epochs=4",
    "train.warmup_epochs=3",
    "train.lr_decay_epoch=3",
    "train.max_captions_per_epoch=1600",
    f"data.root={QUICK_DATA}",
]
CURVE_KEYS = (  # the per-epoch values of metrics.jsonl that metrics.json keeps
    "epoch",
    "dev_rsum",
    "train_loss",
    "hardest_negative",
    "dev_score_std",
    "head_weight_norm",
    "held_hinge_mean",
    "held_over_margin",
)
log = get_logger("rcar.reproduce")
Job = tuple[str, str, str, int]  # direction, mode, schedule, seed


# ---------------------------------------------------------------------------------------------------- runs
def job_dir(root: Path, direction: str, mode: str, schedule: str, seed: int) -> Path:
    return root / f"{direction}_{mode}_{schedule}_s{seed}"


def run_config(quick: bool, *sets: str) -> RCARConfig:
    """The reproduction's config: ``mnist_scenes.yaml`` (+ the QUICK schedule and data) + ``sets``."""
    return load_config(RCARConfig, CONFIG, [*(QUICK_OVERRIDES if quick else []), *sets])


def job_overrides(direction: str, mode: str, schedule: str, seed: int) -> list[str]:
    sets = [
        f"model.direction={direction}",
        f"model.mode={mode}",
        f"train.hardest_negatives={schedule}",
        f"train.seed={seed}",
        "train.threads=1",
        "eval.save_test_sims=true",  # the t2i+i2t ensemble is scored from the two matrices
    ]
    return sets + (["train.keep_epoch_checkpoints=true"] if schedule == CONTROL else [])


def branch_epoch(control: Path, cfg: RCARConfig) -> int:
    """The epoch after which ``cfg``'s schedule leaves the all-negatives ``control`` run (its last if never)."""
    summary = json.loads((control / "summary.json").read_text())
    first = switch_epoch(cfg, summary["hinge_below_margin_epoch"])
    return cfg.train.epochs if first is None else first - 1


def start_branch(control: Path, run_dir: Path, epoch: int) -> None:
    """Seed ``run_dir`` with the control's state at the end of ``epoch``, for ``train(..., resume=True)``.

    ``last.pt`` is written last: a folder with it holds a complete branch (an interrupted copy is redone).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    best_epoch = load_checkpoint(control / f"epoch_{epoch}.pt", paper="rcar")["extra"]["best_epoch"]
    for src, dst in (
        (f"epoch_{best_epoch}.pt", "best.pt"),
        ("metrics.jsonl", "metrics.jsonl"),  # truncated to the resumed step by the resume
        (f"epoch_{epoch}.pt", "last.pt"),
    ):
        shutil.copyfile(control / src, run_dir / dst)


def copy_run(control: Path, run_dir: Path, cfg: RCARConfig) -> None:
    """A run that never leaves the control *is* the control: its files, with the summary naming the schedule.

    ``summary.json`` is written last (it marks a finished job); the checkpoints keep the control's config.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("best.pt", "last.pt", "metrics.jsonl", "test_metrics.json", "test_sims.npz"):
        if (control / name).is_file():
            shutil.copyfile(control / name, run_dir / name)
    save_config(cfg, run_dir / "config.yaml")
    summary = json.loads((control / "summary.json").read_text())
    summary.update(
        run_dir=str(run_dir), hardest_negatives=cfg.train.hardest_negatives, copied_from=str(control)
    )
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def run_job(root: Path, job: Job, quick: bool) -> None:
    """Train one run (it scores its best checkpoint on test itself); a branch starts off its control."""
    from rcar.train import train  # the workers need it, the report does not

    direction, mode, schedule, seed = job
    run_dir = job_dir(root, *job)
    if (run_dir / "summary.json").is_file():
        return
    cfg = run_config(quick, *job_overrides(*job))
    if schedule != CONTROL and not (run_dir / "last.pt").is_file():
        control = job_dir(root, direction, mode, CONTROL, seed)
        epoch = branch_epoch(control, cfg)
        if epoch == cfg.train.epochs:  # e.g. an adaptive run whose held hinge never fell below the margin
            copy_run(control, run_dir, cfg)
            return
        if epoch > 0:
            start_branch(control, run_dir, epoch)
    train(cfg, run_dir=run_dir, resume=(run_dir / "last.pt").is_file(), device="cpu")


def job_process(root: Path, job: Job, quick: bool, threads: int) -> None:
    """``run_job`` in its own process (``python -m rcar.reproduce --job ...``), its output in ``log.txt``."""
    cmd = [sys.executable, "-m", "rcar.reproduce", "--job", *map(str, job), "--root", str(root)]
    run_process(cmd + (["--quick"] if quick else []), job_dir(root, *job) / "log.txt", threads)


def plan_jobs(plan: dict[str, list[int]]) -> list[Job]:
    """Every run of ``plan`` ({schedule: seeds}), the controls first (the branches start off them)."""
    order = sorted(plan, key=lambda s: s != CONTROL)
    return [(d, m, sch, s) for sch in order for s in plan[sch] for d in DIRECTIONS for m in MODES]


def run_all(root: Path, plan: dict[str, list[int]], quick: bool, workers: int, threads: int = 1) -> None:
    """The control runs, then the branches (a branch needs its control's epoch checkpoints)."""
    jobs = plan_jobs(plan)
    todo = [j for j in jobs if not (job_dir(root, *j) / "summary.json").is_file()]
    log.info("%d of %d jobs to run, %d at a time", len(todo), len(jobs), workers)
    for phase in ([j for j in todo if j[2] == CONTROL], [j for j in todo if j[2] != CONTROL]):
        run_parallel(phase, lambda job: job_process(root, job, quick, threads), workers, log,
                     lambda job, _: "{}_{} {} seed {}".format(*job))  # fmt: skip


# -------------------------------------------------------------------------------------------- metrics.json
def run_notes(curve: dict[str, list], summary: dict[str, Any]) -> dict[str, Any]:
    """What the training-notes table shows of one run, from its per-epoch values and summary."""
    dev, std = curve["dev_rsum"], curve["dev_score_std"]
    switch = summary["switch_epoch"]
    return {
        "switch_epoch": switch,
        "dev_rsum_before_switch": dev[switch - 2] if switch and switch >= 2 else None,
        "dev_rsum_last": dev[-1],
        "best_dev_rsum": max(dev),
        "best_epoch": int(curve["epoch"][int(np.argmax(dev))]),
        "min_dev_score_std": min(std),
        "collapsed_epochs": summary["collapsed_epochs"],
        "train_loss_last": curve["train_loss"][-1],
    }


def load_run(run_dir: Path) -> dict[str, Any]:
    """One finished run: its test metrics, per-epoch curves, notes and the commit it was trained at."""
    for name in ("summary.json", "test_metrics.json", "metrics.jsonl", "best.pt"):
        if not (run_dir / name).is_file():
            raise DataError(f"{run_dir} has no {name}: the run did not finish; run make reproduce-rcar again")
    records = read_metrics(run_dir / "metrics.jsonl")
    curve = {key: [r.get(key) for r in records] for key in CURVE_KEYS}
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "test": json.loads((run_dir / "test_metrics.json").read_text()),
        "curve": curve,
        "notes": run_notes(curve, summary),
        "git_commit": str(load_checkpoint(run_dir / "best.pt", paper="rcar").get("git_commit", "unknown")),
    }


def ensemble_metrics(root: Path, schedule: str, seed: int) -> dict[str, float]:
    """The README's "ALL": the mean of the t2i and i2t RCAR models' test similarity matrices (per fold)."""
    a = np.load(job_dir(root, "t2i", "rcar", schedule, seed) / "test_sims.npz")
    b = np.load(job_dir(root, "i2t", "rcar", schedule, seed) / "test_sims.npz")
    return evaluate_sims(ensemble([a[k] for k in a.files], [b[k] for k in b.files]))


def data_info(cfg: RCARConfig) -> dict[str, Any]:
    """Size and region-encoder accuracy of the data set the runs read (its ``prepare_info.json``)."""
    info = json.loads((Path(cfg.data.root) / "prepare_info.json").read_text())
    return {"root": cfg.data.root, "n_images": info["n_images"], "region_encoder": info["region_encoder"]}


def schedule_settings(cfg: RCARConfig) -> dict[str, Any]:
    """The settings the report's text quotes."""
    keys = (
        "epochs",
        "warmup_epochs",
        "lr",
        "lr_decay_epoch",
        "batch_size",
        "margin",
        "max_captions_per_epoch",
        "held_batches",
        "collapse_score_std",
    )
    model = {k: getattr(cfg.model, k) for k in ("embed_size", "sim_dim", "word_dim")}
    return {**{k: getattr(cfg.train, k) for k in keys}, **model, "dev_max_images": cfg.data.dev_max_images}


def collect(root: Path, plan: dict[str, list[int]], quick: bool, wall: float) -> dict[str, Any]:
    """``metrics.json``: everything the report shows, read from the finished run folders."""
    cfg = run_config(quick)
    runs = {
        f"{d}_{m}_{sch}_s{s}": {"direction": d, "mode": m, "schedule": sch, "seed": s, **load_run(job_dir(root, d, m, sch, s))}
        for d, m, sch, s in plan_jobs(plan)
    }  # fmt: skip
    results: dict[str, dict[str, list[float]]] = {
        f"{d}_{m}_{sch}": {k: [runs[f"{d}_{m}_{sch}_s{s}"]["test"][k] for s in plan[sch]] for k in METRICS}
        for sch in plan
        for d in DIRECTIONS
        for m in MODES
    }
    for sch, seeds in plan.items():
        ens = [ensemble_metrics(root, sch, s) for s in seeds]
        results[f"ensemble_{sch}"] = {k: [e[k] for e in ens] for k in METRICS}
    seeds_note = " ".join(f"{sch}:{','.join(map(str, s))}" for sch, s in plan.items())
    return {
        "quick": quick,
        "plan": {sch: list(seeds) for sch, seeds in plan.items()},
        "schedule": schedule_settings(cfg),
        "data": data_info(cfg),
        "results": results,
        "runs": runs,
        "trained_at_commits": sorted({r["git_commit"] for r in runs.values()}),
        "wall_time_s": wall,
        "machine": machine_info(("torchvision",)),
        "command": f"make reproduce-rcar{' QUICK=1' if quick else ''} (seeds {seeds_note})",
    }


# ------------------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> None:
    p = reproduce_parser(
        "Reproduce the RCAR regulator comparison on the embedded data",
        "1 seed, a short schedule, the small QUICK data set",
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="control seeds; default 0 1 2 (QUICK: 0)"
    )
    p.add_argument(
        "--branch-seeds",
        type=int,
        nargs="+",
        default=None,
        help="seeds of the official and adaptive runs, a subset of --seeds (default: all of them)",
    )
    p.add_argument("--root", help=argparse.SUPPRESS)  # the run folder of a --job worker
    p.add_argument(
        "--job", nargs=4, metavar=("DIRECTION", "MODE", "SCHEDULE", "SEED"), help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    if args.from_metrics:
        log.info("wrote %s", rebuild_from_metrics(args.from_metrics, write_report))
        return
    root = Path(
        args.reuse or args.root or ("runs/rcar/reproduce_quick" if args.quick else "runs/rcar/reproduce")
    )
    if args.job:
        direction, mode, schedule, seed = args.job
        run_job(root, (direction, mode, schedule, int(seed)), args.quick)
        return
    check_parallelism(args)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    branch_seeds = args.branch_seeds or seeds
    if not set(branch_seeds) <= set(seeds):
        raise ConfigError(
            f"--branch-seeds {branch_seeds} must be a subset of --seeds {seeds}: a branch starts off its control"
        )
    plan = {sch: (seeds if sch == CONTROL else branch_seeds) for sch in SCHEDULES}
    t0 = time.time()
    prepare.main(["--quick"] if args.quick else [])  # a no-op when the data is up to date
    run_all(root, plan, args.quick, args.jobs, args.threads)
    wall_file = root / "wall_time_s.txt"  # accumulated over interrupted and resumed invocations
    wall = (float(wall_file.read_text()) if wall_file.is_file() else 0.0) + time.time() - t0
    wall_file.write_text(f"{wall:.1f}\n")
    metrics = collect(root, plan, args.quick, wall)
    metrics["config"] = config_to_dict(run_config(args.quick))
    log.info("wrote %s", write_report(metrics, report_dir("rcar", args.quick)))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
