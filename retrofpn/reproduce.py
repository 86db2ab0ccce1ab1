"""``make reproduce-retrofpn [QUICK=1]``: each backbone with and without Retro-FPN, 3 seeds, plus the real LiDAR check.

    python -m retrofpn.reproduce [--quick] [--jobs 2] [--threads 1]
    python -m retrofpn.reproduce --reuse runs/retrofpn/reproduce/<stamp>        # report from finished runs
    python -m retrofpn.reproduce --from-metrics results/retrofpn/metrics.json    # report from metrics.json alone

1. ``python -m retrofpn.prepare`` (a no-op when the embedded data are up to date).
2. Point Transformer, Point Transformer V2 and MinkUNet18A, each without (``model.retro=false``) and with
   Retro-FPN, on the embedded SYNTHETIC rooms (``configs/synthetic_<backbone>.yaml``), seeds 0, 1, 2; then
   the same six models once each on the REAL LiDAR scan (``configs/lidar_<backbone>.yaml``, one seed: the
   budget). Each is one ``python -m retrofpn.train`` process (single-threaded, ``--jobs`` at a time, the
   longest first) with its own run folder under ``runs/retrofpn/reproduce[-quick]/<timestamp>/``; each writes
   ``summary.json`` with its best-validation checkpoint scored on the test rooms (Area 5) by the full voting
   protocol. The first seed's runs also keep their test predictions for the room pictures.
3. ``metrics.json`` holds everything the report shows (per-run summaries and test metrics with per-class IoU,
   per-epoch curves, budget, data sizes, wall time, machine and load, the commit the models were trained at),
   so ``--from-metrics`` rebuilds ``report.md`` and the plots without the run folders (the room pictures, drawn
   from the runs' predictions, are kept as they are).

The full run writes ``results/retrofpn/`` (committed; about 30 minutes on 2 cores with the data build);
``--quick`` (one seed, 2 short epochs, a few minutes) writes under ``runs/retrofpn/quick/``
(``shared.report.report_dir``), never over the committed results.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrofpn.config import RetrofpnConfig
from shared.config import load_config
from shared.errors import run_cli
from shared.log import get_logger
from shared.report import (
    Report,
    machine_description,
    mean_std,
    plot_curves,
    plot_grouped_bars,
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

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {b: f"retrofpn/configs/synthetic_{b}.yaml" for b in ("pt", "ptv2", "minkunet")}
LIDAR_CONFIGS = {b: f"retrofpn/configs/lidar_{b}.yaml" for b in ("pt", "ptv2", "minkunet")}
BACKBONES = {"pt": "Point Transformer", "ptv2": "Point Transformer V2", "minkunet": "MinkUNet18A"}
SHORT = {"pt": "PT", "ptv2": "PTv2", "minkunet": "MinkUNet"}
VARIANTS = {"base": False, "retro": True}
BENCH_JSON = Path("results/bench/retrofpn.json")
# The most expensive runs first, so the two workers finish together (measured CPU seconds of one run with the
# embedded configs, one thread: PTv2 + Retro-FPN ~280, PTv2 ~170, MinkUNet + Retro-FPN ~190, MinkUNet ~125,
# PT + Retro-FPN ~120, PT ~75; the LiDAR runs 20-70).
ORDER = [("ptv2", "retro"), ("minkunet", "retro"), ("ptv2", "base"), ("minkunet", "base"), ("pt", "retro"),
         ("pt", "base")]  # fmt: skip
FULL = {"seeds": [0, 1, 2], "lidar_seeds": [0], "epochs": None, "lidar_epochs": None, "max_steps": 0}
QUICK = {"seeds": [0], "lidar_seeds": [0], "epochs": 2, "lidar_epochs": 3, "max_steps": 12}

# Reported numbers (their data, not ours). Retro-FPN: s3dis_point-transformer/README.md of the official code
# (pretrained PT + Retro-FPN, S3DIS Area 5). Context: the Point Transformer paper (Zhao et al., ICCV 2021) and
# its official code's reproduction (POSTECH point-transformer issue #17). ScanNet: the DeepLA-Net paper's table.
PAPER_ROWS = [
    ("PT + Retro-FPN (Retro-FPN official code, pretrained model)", "S3DIS Area 5", 73.0, 79.1, 91.8),
    ("PT (Point Transformer paper)", "S3DIS Area 5", 70.4, 76.5, 90.8),
    ("PT (its official code, reproduction)", "S3DIS Area 5", 70.0, 76.8, 90.4),
    ("Retro-FPN, backbone unspecified (third-party table)", "ScanNet v2 val", 74.0, None, None),
]
DATA_SOURCE = (
    "SYNTHETIC S3DIS-layout rooms (`python -m retrofpn.prepare`: 6 areas of scanned rooms built from "
    "pybullet==3.2.7 / metaworld==3.1.1 meshes and procedural furniture; Area 5 held out), not S3DIS; and "
    "REAL airborne LiDAR (the labelled test scan of the laspy==2.7.0 source archive)"
)
PREPARE_INFO = Path("data/retrofpn/synthetic_rooms/prepare_info.json")

log = get_logger("retrofpn.reproduce")


# ------------------------------------------------------------------------------------------------ the runs
def ensure_data() -> dict[str, Any]:
    """Run ``retrofpn.prepare`` (a no-op when up to date); the sizes the report names."""
    from retrofpn.prepare import PrepareConfig, prepare

    info = prepare(PrepareConfig())
    return data_sizes(info)


def data_sizes(info: dict[str, Any]) -> dict[str, Any]:
    areas = info.get("areas", {})
    lidar = info.get("lidar") or {}
    return {
        "rooms": sum(len(a["rooms"]) for a in areas.values()),
        "areas": len(areas),
        "points": info.get("total_points"),
        "test_rooms": len(areas.get("Area_5", {}).get("rooms", [])),
        "test_points": areas.get("Area_5", {}).get("points"),
        "lidar_train_tiles": len(lidar.get("train", {}).get("tiles", [])),
        "lidar_test_tiles": len(lidar.get("test", {}).get("tiles", [])),
        "lidar_points": sum(lidar.get(s, {}).get("points", 0) for s in ("train", "test")),
        "lidar_ignored": sum(lidar.get(s, {}).get("ignored", 0) for s in ("train", "test")),
    }


def jobs(budget: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    """(group, backbone, variant, seed) of every run, longest first (the LiDAR runs are the short ones)."""
    out = [("indoor", b, v, s) for b, v in ORDER for s in budget["seeds"]]
    return out + [("lidar", b, v, s) for b, v in ORDER for s in budget["lidar_seeds"]]


def overrides_of(group: str, variant: str, seed: int, budget: dict[str, Any], threads: int) -> list[str]:
    out = [f"model.retro={str(VARIANTS[variant]).lower()}", f"train.seed={seed}", f"train.threads={threads}"]
    epochs = budget["epochs"] if group == "indoor" else budget["lidar_epochs"]
    if epochs:
        out.append(f"train.epochs={epochs}")
    if budget["max_steps"] and group == "indoor":
        out.append(f"train.max_steps_per_epoch={budget['max_steps']}")
    if group == "indoor" and seed == budget["seeds"][0]:
        out.append("eval.save_predictions=true")  # the room pictures
    return out


def run_all(args: argparse.Namespace, budget: dict[str, Any], root: Path) -> dict[str, dict[str, list[dict]]]:
    """Every run, ``--jobs`` at a time; ``{group: {"<backbone>_<variant>": [summary per seed]}}``."""

    def job(j: tuple[str, str, str, int]) -> dict[str, Any]:
        group, b, v, seed = j
        config = str(REPO / (CONFIGS if group == "indoor" else LIDAR_CONFIGS)[b])
        folder = f"{group}_{b}_{v}_seed{seed}"
        res = train_process("retrofpn", config, overrides_of(group, v, seed, budget, args.threads), root / folder,
                            args.threads)  # fmt: skip
        return {**res, "run_folder": folder}

    todo = jobs(budget)
    done = run_parallel(todo, job, args.jobs, log,
                        lambda j, res: f"{j[0]} {label(j[1], j[2])} seed {j[3]}: test mIoU {res['test']['miou']:.4f}")  # fmt: skip
    results: dict[str, dict[str, list[dict]]] = {"indoor": {}, "lidar": {}}
    for group, b, v, seed in todo:  # in seed order per model
        results[group].setdefault(f"{b}_{v}", []).append(done[(group, b, v, seed)])
    return results


def pictures(results: dict[str, dict[str, list[dict]]], root: Path, out_dir: Path) -> dict[str, Any]:
    """One test room per backbone, coloured by ground truth, the backbone and backbone + Retro-FPN (first
    seed's predictions); the room with the most ground-truth classes in view. ``{backbone: {room, png, miou}}``."""
    from retrofpn.data import list_scenes, load_scene
    from retrofpn.render import render_room, room_miou

    out: dict[str, Any] = {}
    for b in BACKBONES:
        runs = {v: results["indoor"].get(f"{b}_{v}", [{}])[0] for v in VARIANTS}
        folders = {v: root / r["run_folder"] / "predictions" for v, r in runs.items() if r.get("run_folder")}
        if len(folders) < 2 or not all(f.is_dir() for f in folders.values()):
            continue
        cfg = load_config(RetrofpnConfig, REPO / CONFIGS[b])
        scenes = [load_scene(r, cfg.data) for r in list_scenes(cfg.data, "test")]
        hidden = [cfg.data.class_names.index(c) for c in ("ceiling", "beam")]
        scene = max(scenes, key=lambda s: (len(set(np.unique(s.segment)) - {-1, *hidden}), s.name))
        preds = {v: np.load(f / f"{scene.name}.npy").astype(np.int64) for v, f in folders.items()}
        truth = scene.segment.astype(np.int64)
        png = f"room_{b}.png"
        panels = [(label(b, "base"), preds["base"]), (label(b, "retro"), preds["retro"])]
        render_room(scene.coord, truth, panels, cfg.data.class_names, out_dir / png,
                    title=f"{scene.name}, SYNTHETIC test room, seed {runs['base']['seed']}")  # fmt: skip
        k = cfg.data.num_classes
        out[b] = {
            "room": scene.name,
            "png": png,
            "miou": {v: room_miou(truth, p, k) for v, p in preds.items()},
        }
    return out


def collect_metrics(
    args: argparse.Namespace,
    budget: dict[str, Any],
    sizes: dict[str, Any],
    results: dict[str, dict[str, list[dict]]],
    wall: float,
    root: Path,
    load: dict[str, list[float]],
) -> dict[str, Any]:
    """Everything the report shows, as plain JSON (``metrics.json``): the report can be rebuilt from it."""
    setups = {}
    for group, configs in (("indoor", CONFIGS), ("lidar", LIDAR_CONFIGS)):
        for b, path in configs.items():
            cfg = load_config(RetrofpnConfig, REPO / path)
            epochs = (budget["epochs"] if group == "indoor" else budget["lidar_epochs"]) or cfg.train.epochs
            setups[f"{group}_{b}"] = {
                "config": path, "epochs": epochs, "max_steps_per_epoch": budget["max_steps"] if group == "indoor" else 0,
                "batch_size": cfg.train.batch_size, "voxel_size": cfg.data.voxel_size, "voxel_max": cfg.data.voxel_max,
                "loop": cfg.data.loop, "optimizer": cfg.train.optimizer, "lr": cfg.train.lr,
                "scheduler": cfg.train.scheduler, "pipeline": cfg.data.pipeline,
                "test_augmentations": cfg.data.test_augmentations, "val_scenes": cfg.eval.val_scenes,
                "class_names": cfg.data.class_names,
            }  # fmt: skip
    curve_keys = ("epoch", "loss", "val_miou", "lr")
    return {
        "mode": "quick" if args.quick else "full",
        "seeds": budget["seeds"],
        "lidar_seeds": budget["lidar_seeds"],
        "jobs": args.jobs,
        "threads": args.threads,
        "setups": setups,
        "sizes": sizes,
        "wall_time_s": wall,
        "load_average": load,
        "command": "make reproduce-retrofpn" + (" QUICK=1" if args.quick else ""),
        "trained_at": trained_at(root, "retrofpn"),
        "trained_on": f"{machine_description()}; Python {sys.version.split()[0]}, torch {torch.__version__}",
        "run_root": str(root),
        "runs": {
            group: {
                k: [{kk: vv for kk, vv in r.items() if kk != "curve"} for r in runs]
                for k, runs in res.items()
            }
            for group, res in results.items()
        },
        "curves": {
            group: {
                k: [[{c: rec.get(c) for c in curve_keys} for rec in r["curve"]] for r in runs]
                for k, runs in res.items()
            }
            for group, res in results.items()
        },
    }


# ------------------------------------------------------------------------------------------ the numbers
def label(backbone: str, variant: str) -> str:
    return SHORT[backbone] + (" + Retro-FPN" if VARIANTS[variant] else "")


def values(runs: list[dict], metric: str) -> list[float]:
    return [float(r["test"][metric]) for r in runs]


def class_values(runs: list[dict], name: str) -> list[float]:
    return [float(r["test"]["iou"][name]) for r in runs]


mean, std = nan_mean, seed_std  # over seeds (std 0 for one seed)


def pct(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def pct_ms(xs: Sequence[float]) -> str:
    """``mean ± std`` in percent over seeds (one value: no ±)."""
    return mean_std([100 * x for x in xs], digits=1)


def verdict(retro: list[float], base: list[float]) -> dict[str, Any]:
    """Δ = mean(retro) - mean(base) and whether it is outside the seed noise (2 x the pooled std)."""
    diff = mean(retro) - mean(base)
    out: dict[str, Any] = {"diff": diff, "better": diff > 0}
    if len(retro) > 1 and len(base) > 1:
        out["noise"] = 2 * math.sqrt((std(retro) ** 2 + std(base) ** 2) / 2)
        out["outside_noise"] = abs(diff) > out["noise"]
    return out


def verdict_line(name: str, retro: list[float], base: list[float], metric: str = "mIoU") -> str:
    v = verdict(retro, base)
    word = "better" if v["better"] else "worse"
    seeds = (
        f"per seed: Retro-FPN {', '.join(pct(x) for x in retro)}; without {', '.join(pct(x) for x in base)}"
    )
    if "noise" not in v:
        where = "one seed: not a significance test"
    elif v["outside_noise"]:
        where = f"outside the seed noise (2σ = {100 * v['noise']:.1f})"
    else:
        where = f"within the seed noise (2σ = {100 * v['noise']:.1f})"
    held = "held" if v["better"] and v.get("outside_noise", True) else "did not hold"
    return (f"- **{name}**: with Retro-FPN {word} by {100 * v['diff']:+.1f} {metric} points, {where}: the claim "
            f"**{held}** here ({seeds}).")  # fmt: skip


def headline(metrics: dict[str, Any]) -> dict[str, str]:
    """Test mIoU (%) per model on the embedded rooms, for the top-level README."""
    runs = metrics["runs"]["indoor"]
    return {label(*k.split("_")): pct_ms(values(r, "miou")) for k, r in runs.items()}


# ------------------------------------------------------------------------------------- report sections
def intro_section(rep: Report, metrics: dict[str, Any]) -> None:
    quick = metrics["mode"] == "quick"
    seeds = metrics["seeds"]
    mode = ("QUICK (1 seed, 2 short epochs: shows the pipeline runs; the numbers are not a result)" if quick
            else f"full ({len(seeds)} seeds per model)")  # fmt: skip
    n = metrics["sizes"]
    rep.text(
        f"Run mode: **{mode}**. Every number is a test metric of the best-validation checkpoint (validation: "
        "rooms held out of the training areas, never the test area), scored by the full voting protocol over "
        f"every original point of the {n.get('test_rooms', '?')} test rooms of Area 5, mean ± std over seeds "
        f"{seeds}, in percent. **The data are SYNTHETIC rooms** in the S3DIS layout ({n.get('rooms', '?')} rooms "
        f"in {n.get('areas', '?')} areas, {n.get('points') or 0:,} points; see `data/retrofpn/README.md`), **not "
        "S3DIS**; the LiDAR check is **REAL** airborne LiDAR, also not the paper's data. The paper's numbers "
        "are listed for reference only."
    )
    rows = []
    for b in BACKBONES:
        s = metrics["setups"][f"indoor_{b}"]
        steps = f", at most {s['max_steps_per_epoch']} steps" if s["max_steps_per_epoch"] else ""
        rows.append([BACKBONES[b], s["pipeline"], f"{s['voxel_size']} m / {s['voxel_max']}",
                     f"{s['epochs']} x loop {s['loop']}{steps}", s["batch_size"],
                     f"{s['optimizer']} lr {s['lr']:g}, {s['scheduler']}", s["test_augmentations"]])  # fmt: skip
    rep.text(
        "Setup (`retrofpn/configs/synthetic_<backbone>.yaml`; the official values are in the comments there and "
        "in the paper-scale configs): each backbone at a CPU scale with its own official pipeline, optimiser "
        "and schedule, trained on crops of a few thousand points for a few epochs to fit about 30 minutes on 2 "
        "CPU cores (see the training curves). Retro-FPN's own D, G and k are the official ones."
    )
    rep.table(
        ["backbone", "pipeline", "voxel / crop", "epochs", "batch", "optimiser", "test augmentations"], rows
    )


def results_section(rep: Report, metrics: dict[str, Any]) -> None:
    runs = metrics["runs"]["indoor"]
    rep.heading("Results on the SYNTHETIC test rooms (Area 5)")
    rows = []
    for b in BACKBONES:
        for v in VARIANTS:
            r = runs.get(f"{b}_{v}")
            if r:
                rows.append([label(b, v), *(pct_ms(values(r, m)) for m in ("miou", "macc", "oa")),
                             r[0]["params"]])  # fmt: skip
    rep.table(["model", "mIoU", "mAcc", "OA", "parameters"], rows)


def claims_section(rep: Report, metrics: dict[str, Any]) -> None:
    """Per backbone: does Retro-FPN improve it, by how much against the seed std?"""
    runs = metrics["runs"]["indoor"]
    rep.heading("Did the paper's claim hold here? (Retro-FPN improves each backbone)")
    lines = [verdict_line(BACKBONES[b], values(runs[f"{b}_retro"], "miou"), values(runs[f"{b}_base"], "miou"))
             for b in BACKBONES if f"{b}_retro" in runs and f"{b}_base" in runs]  # fmt: skip
    rep.text("\n".join(lines))
    rep.text(
        "The claim is counted as held when the mean test mIoU with Retro-FPN is higher and, with several seeds, "
        "the gap is larger than twice the pooled seed standard deviation. The paper's per-backbone with/without "
        "table could not be read (only the introduction was reachable), so the size of the paper's gains is not "
        "known here."
    )


def per_class_section(rep: Report, metrics: dict[str, Any], out_dir: Path) -> None:
    runs = metrics["runs"]["indoor"]
    names = metrics["setups"]["indoor_pt"]["class_names"]
    rep.heading("Per-class IoU on the SYNTHETIC test rooms")
    keys = [f"{b}_{v}" for b in BACKBONES for v in VARIANTS if f"{b}_{v}" in runs]
    rows = [[c, *(pct_ms(class_values(runs[k], c)) for k in keys)] for c in names]
    rep.table(["class", *(label(*k.split("_")) for k in keys)], rows)
    spread = []
    for k in keys:
        ious = np.array([mean(class_values(runs[k], c)) for c in names])
        ok = ~np.isnan(ious)
        lo, hi = names[int(np.nanargmin(ious))], names[int(np.nanargmax(ious))]
        spread.append(f"{label(*k.split('_'))} {pct(np.nanmin(ious))} ({lo}) to {pct(np.nanmax(ious))} ({hi}), "
                      f"{int((ious[ok] < 0.1).sum())} classes under 10")  # fmt: skip
    best = max(mean(values(runs[k], "miou")) for k in keys)
    by_class = {c: mean([mean(class_values(runs[k], c)) for k in keys]) for c in names}
    ranked = sorted((c for c in names if not math.isnan(by_class[c])), key=lambda c: by_class[c])
    hardest = ", ".join(f"{c} {pct(by_class[c])}" for c in ranked[:3])
    easiest = ", ".join(f"{c} {pct(by_class[c])}" for c in ranked[-3:][::-1])
    if best > 0.9:
        verdict_text = "**Every model saturates these rooms** (best mIoU above 90): they are too easy to separate the models."
    else:
        verdict_text = f"The rooms are not saturated: the best model reaches {pct(best)} mIoU."
    rep.text(
        "Spread of the per-class IoU (mean over seeds): "
        + "; ".join(spread)
        + f". {verdict_text} Averaged over "
        f"the six models, the hardest classes are {hardest} and the easiest {easiest}."
    )
    for b in BACKBONES:
        if f"{b}_base" not in runs or f"{b}_retro" not in runs:
            continue
        series = {
            label(b, v): [100 * mean(class_values(runs[f"{b}_{v}"], c)) for c in names] for v in VARIANTS
        }
        errors = {
            label(b, v): [100 * std(class_values(runs[f"{b}_{v}"], c)) for c in names] for v in VARIANTS
        }
        seeds = metrics["seeds"]
        png = plot_grouped_bars(
            names, series, out_dir / f"per_class_iou_{b}.png", "test IoU (%)", errors=errors,
            title=f"{BACKBONES[b]}: per-class IoU, SYNTHETIC test rooms "
                  f"({'mean ± std over seeds ' + ', '.join(map(str, seeds)) if len(seeds) > 1 else 'one seed'})",
        )  # fmt: skip
        rep.image(png, f"per-class IoU of {BACKBONES[b]} with and without Retro-FPN")


def lidar_section(rep: Report, metrics: dict[str, Any]) -> None:
    runs = metrics["runs"].get("lidar") or {}
    rep.heading("REAL LiDAR check (laspy's labelled test scan)")
    if not runs:
        rep.text("Not run.")
        return
    n = metrics["sizes"]
    names = metrics["setups"]["lidar_pt"]["class_names"]
    seeds = metrics["lidar_seeds"]
    noise = f"the {n['lidar_ignored']} low-noise points ignored" if "lidar_ignored" in n else "noise ignored"
    rep.text(
        "Real airborne LiDAR: `file_with_both_wkt_and_geotiff_vlrs.las` from the laspy==2.7.0 source archive, "
        f"{n.get('lidar_points') or 0:,} points (ASPRS ground, low / medium / high vegetation, building; "
        f"{noise}), intensity as the only feature, cut into tiles of about 4 m: {n.get('lidar_train_tiles')} "
        f"training tiles (2 of them for validation) and {n.get('lidar_test_tiles')} test tiles. An outdoor check "
        f"the paper does not make; {len(seeds)} seed{'s' * (len(seeds) != 1)} ({', '.join(map(str, seeds))}) to "
        "fit the budget, so no gap below is a significance test. The test set is small (a few thousand points), "
        "and the rare classes have very few test points."
    )
    keys = [f"{b}_{v}" for b in BACKBONES for v in VARIANTS if f"{b}_{v}" in runs]
    rows = [[label(*k.split("_")), *(pct_ms(values(runs[k], m)) for m in ("miou", "macc", "oa")),
             *(pct_ms(class_values(runs[k], c)) for c in names)] for k in keys]  # fmt: skip
    rep.table(["model", "mIoU", "mAcc", "OA", *names], rows)
    lines = [verdict_line(BACKBONES[b], values(runs[f"{b}_retro"], "miou"), values(runs[f"{b}_base"], "miou"))
             for b in BACKBONES if f"{b}_retro" in runs and f"{b}_base" in runs]  # fmt: skip
    rep.text("\n".join(lines))


def paper_section(rep: Report) -> None:
    rep.heading("The paper's numbers, for reference (their data: S3DIS / ScanNet, not ours)")
    rep.table(["model", "data", "mIoU", "mAcc", "OA"], [list(r) for r in PAPER_ROWS], digits=1)
    rep.text(
        "Only the PT + Retro-FPN S3DIS result could be read from the official code's README; the paper's "
        "with/without table for each backbone (S3DIS Area 5, ScanNet val) was not available, so no per-backbone "
        "gain of the paper is listed. The embedded rooms are synthetic and the models small and briefly trained: "
        "the absolute numbers above are not comparable with these."
    )


def cost_section(rep: Report, metrics: dict[str, Any]) -> None:
    rep.heading("Training time per run")
    rows = []
    for group in ("indoor", "lidar"):
        for k, runs in (metrics["runs"].get(group) or {}).items():
            rows.append([f"{'SYNTHETIC' if group == 'indoor' else 'LiDAR'}: {label(*k.split('_'))}", runs[0]["params"],
                         mean_std([r["train_time_s"] for r in runs], digits=1),
                         mean_std([r["val_time_s"] for r in runs], digits=1),
                         mean_std([r.get("test_time_s", float("nan")) for r in runs], digits=1),
                         ", ".join(str(r["best_epoch"]) for r in runs)])  # fmt: skip
    rep.table(
        ["run", "parameters", "train (s)", "validation (s)", "test voting (s)", "best epoch per seed"], rows
    )
    rep.text(
        f"Seconds of wall time of each run's training loop, validation passes and final test voting, one CPU "
        f"thread per run, {metrics['jobs']} runs at a time on a shared machine: compare within this table only."
    )


def curves_section(rep: Report, metrics: dict[str, Any], out_dir: Path) -> None:
    found = metrics["curves"]["indoor"]
    curves = {f"{b}_{v}": found[f"{b}_{v}"] for b in BACKBONES for v in VARIANTS if f"{b}_{v}" in found}
    seed = metrics["seeds"][0]
    rep.heading("Training curves")
    val = {label(*k.split("_")): ([r["epoch"] for r in c[0]], [100 * (r["val_miou"] or float("nan")) for r in c[0]])
           for k, c in curves.items() if c and c[0]}  # fmt: skip
    loss = {label(*k.split("_")): ([r["epoch"] for r in c[0]], [r["loss"] for r in c[0]])
            for k, c in curves.items() if c and c[0]}  # fmt: skip
    rep.image(plot_curves(val, out_dir / "val_miou.png", "epoch", "validation mIoU (%)",
                          title=f"Validation mIoU per epoch (held-out training rooms, seed {seed})"),
              "validation mIoU per epoch")  # fmt: skip
    rep.image(plot_curves(loss, out_dir / "train_loss.png", "epoch", "training loss",
                          title=f"Training loss per epoch (Retro-FPN: sum over 5 levels; seed {seed})"),
              "training loss per epoch")  # fmt: skip


def pictures_section(rep: Report, metrics: dict[str, Any], out_dir: Path) -> None:
    rep.heading("A test room: ground truth, backbone, backbone + Retro-FPN")
    pics = metrics.get("pictures") or {}
    if not pics:
        rep.text("No pictures: the runs' test predictions were not available.")
        return
    for b, p in pics.items():
        if not (out_dir / p["png"]).is_file():
            rep.text(
                f"`{p['png']}` ({BACKBONES[b]}, {p['room']}) is not beside this report; rerun the reproduction."
            )
            continue
        rep.image(out_dir / p["png"], f"{p['room']}: ground truth, {label(b, 'base')}, {label(b, 'retro')}")
    rep.text(
        "Top-down views of one SYNTHETIC test room per backbone (the test room with the most classes in view), "
        "6 cm pixels showing the class of the highest point, ceiling and beams left out so the room is visible; "
        "the titles give each model's mIoU on that room (first seed)."
    )


def bench_section(rep: Report, out_dir: Path, path: Path | None = None) -> None:
    path = path or BENCH_JSON
    rep.heading("Benchmark")
    if not path.is_file():
        rep.text(
            f"`{path}` does not exist yet: run `make bench-retrofpn` (kNN, FPS, sparse convolution, forwards)."
        )
        return
    png = Path(os.path.relpath(path.with_suffix(".png").resolve(), out_dir.resolve()))
    rep.text(f"`make bench-retrofpn` wrote `{path}` (speed of the point operations and forwards); "
             f"see `retrofpn/README.md`, Benchmark. ![benchmark]({png.as_posix()})")  # fmt: skip


def provenance_text(metrics: dict[str, Any]) -> str:
    n = metrics["sizes"]
    block = provenance_block(
        DATA_SOURCE,
        f"{n.get('rooms')} SYNTHETIC rooms ({n.get('points') or 0:,} points; test: {n.get('test_rooms')} rooms, "
        f"{n.get('test_points') or 0:,} points); LiDAR {n.get('lidar_points') or 0:,} points in "
        f"{(n.get('lidar_train_tiles') or 0) + (n.get('lidar_test_tiles') or 0)} tiles",
        metrics["command"],
        metrics["wall_time_s"],
    )
    load = metrics.get("load_average") or {}
    loads = "; ".join(f"{k}: {', '.join(f'{x:.2f}' for x in v)}" for k, v in load.items())
    return (
        f"{block}\n- **Load average (1, 5, 15 min)**: {loads or 'not recorded'}\n"
        f"- **Models trained at**: {metrics['trained_at']}\n- **Models trained on**: {metrics['trained_on']}\n"
        f"- **Run folders**: `{metrics['run_root']}` (not committed; `metrics.json` holds what this report shows)"
    )


def write_report(metrics: dict[str, Any], out_dir: Path) -> Path:
    """``report.md``, ``metrics.json`` and the plots in ``out_dir``, from ``metrics`` alone (the room pictures
    named in ``metrics["pictures"]`` are referenced when their PNGs are in ``out_dir``)."""
    provenance = provenance_text(metrics)  # the commit, read before this report's own files change the tree
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = Report("Retro-FPN (ICCV 2023): reproduction on SYNTHETIC rooms and a REAL LiDAR scan")
    intro_section(rep, metrics)
    results_section(rep, metrics)
    claims_section(rep, metrics)
    per_class_section(rep, metrics, out_dir)
    pictures_section(rep, metrics, out_dir)
    curves_section(rep, metrics, out_dir)
    lidar_section(rep, metrics)
    paper_section(rep)
    cost_section(rep, metrics)
    bench_section(rep, out_dir)
    rep.text(provenance)
    return rep.write(out_dir, metrics)


# ------------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = reproduce_parser(
        "reproduce Retro-FPN's comparison on the embedded data", "one seed, 2 short epochs (a few minutes)"
    )
    args = parser.parse_args(argv)
    check_parallelism(args)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.from_metrics:
        log.info("wrote %s", rebuild_from_metrics(args.from_metrics, write_report))
        return
    t0 = time.perf_counter()
    load = {"start": list(os.getloadavg())}
    budget = QUICK if args.quick else FULL
    sizes = ensure_data()
    base = (
        Path(RetrofpnConfig().train.runs_root)
        / "retrofpn"
        / ("reproduce-quick" if args.quick else "reproduce")
    )
    root = Path(args.reuse) if args.reuse else base / time.strftime("%Y%m%d-%H%M%S")
    log.info("%d runs (indoor seeds %s, LiDAR seeds %s) in %s", len(jobs(budget)), budget["seeds"],
             budget["lidar_seeds"], root)  # fmt: skip
    results = run_all(args, budget, root)
    wall = time.perf_counter() - t0 + (reused_wall_time(root) if args.reuse else 0.0)
    load["end"] = list(os.getloadavg())
    root.mkdir(parents=True, exist_ok=True)
    write_metrics_json({"wall_time_s": wall}, root / "wall_time.json")
    out_dir = report_dir("retrofpn", quick=args.quick)
    metrics = collect_metrics(args, budget, sizes, results, wall, root, load)
    metrics["pictures"] = pictures(results, root, out_dir)
    path = write_report(metrics, out_dir)
    log.info("wrote %s (%.1f min); test mIoU %s", path, (time.perf_counter() - t0) / 60, headline(metrics))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
