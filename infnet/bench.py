"""Throughput benchmark: INFNet vs full self-attention (HSTU-style) vs DIN as the sequence length grows.

    python -m infnet.bench [--quick] [--threads 1] [--batch-size 16]
    python -m infnet.bench --replot results/bench/infnet.json     # redraw the PNG from a finished run

The paper's claim (arXiv 2508.11565v1 §3, and its efficiency comparison in §4) is a cost linear in the
number of tokens. On synthetic batches (random ids, every position a real item: this measures speed only,
nothing about accuracy) of total sequence length L in 64/256/1024/2048 (split over two behaviours), with
equal embedding size and depth for all models, it measures

- inference and training throughput (samples/s from the median time of one batch's forward, or forward +
  backward + Adam step), the three models timed in turns in one fresh process per L
  (``shared.bench.interleaved``), so a change of machine load hits all three alike; and
- peak memory of training: the resident-set growth over two training steps in a fresh process per
  (model, L) (``shared.bench.PeakRSS`` in ``in_fresh_process``); on CUDA ``torch.cuda.max_memory_allocated``.

A second part times training at the embedded MovieLens split's shapes (8 categorical fields and 5
sequences of 6/50/30/20/50 positions with their vocabularies, d = 16, batch 1024, the model section of
``configs/movielens100k.yaml``): INFNet, MMoE, SharedBottom and INFNet's previous implementation
(``reference.infnet_forward``, one key-projecting attention per CA, per-tensor Adam) in turns in one fresh
process; target: MMoE's training samples/s at most ``TRAIN_RATIO_TARGET`` times INFNet's. Besides wall
time it records each step's CPU time (``time.process_time``), which other processes on the machine disturb
less.

The ratios the targets are about use the best time of the interleaved repeats (the least disturbed one).
Everything is written with ``shared.bench.machine_info`` (cores, threads, load average before the run,
library versions) to ``results/bench/infnet.json``, the plot to ``results/bench/infnet.png``. Targets:
INFNet at least 5x the full self-attention model's inference throughput at L = 1024, INFNet's time
growing at most linearly (time(2048) / time(256) <= 10 for 8x the tokens), and INFNet's training throughput
at MovieLens shapes within 3x of MMoE's.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from infnet import reference
from infnet.build import build_model
from infnet.config import InfnetConfig, ModelConfig
from infnet.data import FeatureSpec, FieldSpec
from infnet.layers import count_parameters
from infnet.model import multitask_loss
from infnet.train import make_optimizer
from shared.bench import PeakRSS, in_fresh_process, interleaved, machine_info
from shared.config import load_config
from shared.errors import ConfigError, run_cli
from shared.report import write_metrics_json
from shared.run import optimizer_step

MOVIELENS_CONFIG = Path(__file__).resolve().parent / "configs" / "movielens100k.yaml"

LENGTHS = (64, 256, 1024, 2048)
MODELS = ("infnet", "hstu", "din")
NAMES = {"infnet": "INFNet", "hstu": "HSTU-style full attention", "din": "DIN"}
N_CATEGORICAL, N_SEQUENCES, N_TASKS, VOCAB = 8, 2, 3, 5000
SPEEDUP_TARGET, GROWTH_TARGET, TRAIN_RATIO_TARGET = 5.0, 10.0, 3.0
# the prepared MovieLens split (data/infnet/README.md): (name, vocabulary) and (name, vocabulary, length)
MOVIELENS_CATEGORICAL = [("user_id", 752), ("item_id", 1669), ("age", 8), ("gender", 3), ("occupation", 22),
                         ("zip_prefix", 90), ("release_year", 11), ("first_genre", 20)]  # fmt: skip
MOVIELENS_SEQUENCES = [("item_genres", 20, 6), ("hist_watched", 1669, 50), ("hist_liked", 1669, 30),
                       ("hist_disliked", 1669, 20), ("hist_watched_genre", 20, 50)]  # fmt: skip
TRAIN_MODELS = ("infnet", "infnet_compiled", "mmoe", "mmoe_compiled", "sharedbottom", "infnet_previous")
TRAIN_NAMES = {"infnet": "INFNet", "infnet_compiled": "INFNet, torch.compile", "mmoe": "MMoE",
               "mmoe_compiled": "MMoE, torch.compile", "sharedbottom": "SharedBottom",
               "infnet_previous": "INFNet, previous implementation"}  # fmt: skip
PANELS = (
    ("infer_samples_per_s", "inference throughput (samples/s)"),
    ("train_samples_per_s", "training throughput (samples/s)"),
    ("peak_mem_mb_train", "peak training memory (MB)"),
)


def synthetic_spec(total_len: int) -> FeatureSpec:
    """8 categorical fields (the second is the candidate item, DIN's query), 2 behaviours of L/2 each."""
    cat = [FieldSpec("user_id", VOCAB), FieldSpec("item_id", VOCAB)]
    cat += [FieldSpec(f"attr{j}", 50) for j in range(N_CATEGORICAL - 2)]
    seq = [FieldSpec(f"behaviour{a}", VOCAB, total_len // N_SEQUENCES) for a in range(N_SEQUENCES)]
    return FeatureSpec(cat, seq, [f"task{i}" for i in range(N_TASKS)], "user_id")


def synthetic_batch(spec: FeatureSpec, batch_size: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    cat = torch.stack(
        [torch.randint(1, f.vocab_size, (batch_size,), generator=g) for f in spec.categorical], 1
    )
    seq = [torch.randint(1, f.vocab_size, (batch_size, f.max_len), generator=g) for f in spec.sequences]
    labels = torch.randint(0, 2, (batch_size, len(spec.tasks)), generator=g).float()
    return {"cat": cat.to(device), "seq": [s.to(device) for s in seq], "labels": labels.to(device)}


def movielens_spec() -> FeatureSpec:
    """The feature shapes of the embedded MovieLens split (L = 156 sequence positions)."""
    return FeatureSpec(
        [FieldSpec(n, v) for n, v in MOVIELENS_CATEGORICAL],
        [FieldSpec(n, v, length) for n, v, length in MOVIELENS_SEQUENCES],
        ["click", "like", "long_view"],
        "user_id",
    )


def movielens_batch(spec: FeatureSpec, batch_size: int, device: torch.device) -> dict:
    """Random ids; each row's sequences filled to a random length (0 .. n_a), as histories are."""
    g = torch.Generator().manual_seed(0)
    cat = torch.stack(
        [torch.randint(0, f.vocab_size, (batch_size,), generator=g) for f in spec.categorical], 1
    )
    seq = []
    for f in spec.sequences:
        ids = torch.randint(1, f.vocab_size, (batch_size, f.max_len), generator=g)
        length = torch.randint(0, f.max_len + 1, (batch_size,), generator=g)
        seq.append(ids.masked_fill(torch.arange(f.max_len)[None] >= length[:, None], 0))
    labels = torch.randint(0, 2, (batch_size, len(spec.tasks)), generator=g).float()
    return {"cat": cat.to(device), "seq": [s.to(device) for s in seq], "labels": labels.to(device)}


def measure_movielens_training(
    batch_size: int, repeats: int, warmup: int = 2, models: Sequence[str] = TRAIN_MODELS
) -> list[dict[str, Any]]:
    """Training steps of ``TRAIN_MODELS`` at MovieLens shapes, timed in turns (wall and CPU time).

    The ``*_compiled`` models are the same models through ``torch.compile`` (``train.compile``); their first
    step, which compiles, is timed on its own (``compile_s``) before the timed turns."""
    device = _device()
    spec = movielens_spec()
    batch = movielens_batch(spec, batch_size, device)
    cfg = load_config(InfnetConfig, MOVIELENS_CONFIG)
    steps, cpu, params, compile_s = {}, {}, {}, {}
    for name in models:
        torch.manual_seed(0)
        cfg.model.name = name.removesuffix("_previous").removesuffix("_compiled")
        model = build_model(spec, cfg.model).to(device).train()
        params[name] = count_parameters(model)
        if name == "infnet_previous":
            forward = partial(reference.infnet_forward, model)
            opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)  # the per-tensor loop it used
        else:
            forward, opt = model, make_optimizer(model, cfg)
        if name.endswith("_compiled"):
            forward = torch.compile(model)
            t0 = time.perf_counter()
            optimizer_step(multitask_loss(forward(batch), batch["labels"]), opt, 0)
            compile_s[name] = time.perf_counter() - t0
        cpu[name] = []

        def step(forward: Any = forward, opt: torch.optim.Optimizer = opt, times: list = cpu[name]) -> None:
            t0 = time.process_time()
            loss = multitask_loss(forward(batch), batch["labels"])
            optimizer_step(loss, opt, 0)
            times.append(time.process_time() - t0)

        steps[name] = step
    timed = interleaved(steps, warmup=warmup, repeats=repeats, device=device)
    rows = []
    for name in models:
        t, c = timed[name], cpu[name][warmup:]
        rows.append({
            "model": name, "batch_size": batch_size, "params": params[name], "device": device.type,
            "train_s_per_batch": t.median_s, "train_best_s": t.best_s, "train_p95_s": t.p95_s,
            "train_samples_per_s": batch_size / t.median_s, "train_cpu_best_s": min(c),
            "train_cpu_samples_per_s": batch_size / min(c), "compile_s": compile_s.get(name),
        })  # fmt: skip
    return rows


def summarize_training(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """MMoE / INFNet and SharedBottom / INFNet training throughput (best wall and best CPU times), and the
    speed-up of INFNet over its previous implementation. The target is checked on the compiled INFNet (the
    ``train.compile`` option) against eager MMoE, as it is stated; compiled MMoE / compiled INFNet is given
    beside it, as both could be compiled."""
    by = {r["model"]: r for r in rows}

    def ratio(a: str, b: str, key: str) -> float:
        return by[a][key] / by[b][key]  # a time ratio: how many times b's samples/s a's are

    ratio_wall = ratio("infnet_compiled", "mmoe", "train_best_s")
    return {
        "train_ratio_mmoe_over_infnet_compiled": ratio_wall,
        "train_ratio_mmoe_over_infnet_compiled_cpu": ratio("infnet_compiled", "mmoe", "train_cpu_best_s"),
        "train_ratio_both_compiled": ratio("infnet_compiled", "mmoe_compiled", "train_best_s"),
        "train_speedup_compiled_over_eager": ratio("infnet", "infnet_compiled", "train_best_s"),
        "train_ratio_mmoe_over_infnet": ratio("infnet", "mmoe", "train_best_s"),
        "train_ratio_mmoe_over_infnet_cpu": ratio("infnet", "mmoe", "train_cpu_best_s"),
        "train_ratio_sharedbottom_over_infnet": ratio("infnet", "sharedbottom", "train_best_s"),
        "train_speedup_over_previous": ratio("infnet_previous", "infnet", "train_best_s"),
        "train_speedup_over_previous_cpu": ratio("infnet_previous", "infnet", "train_cpu_best_s"),
        "train_ratio_target": TRAIN_RATIO_TARGET,
        "train_ratio_target_met": ratio_wall <= TRAIN_RATIO_TARGET,
    }


def model_config(name: str, embed_dim: int, n_blocks: int) -> ModelConfig:
    return ModelConfig(
        name=name, embed_dim=embed_dim, n_blocks=n_blocks, n_heads=2, din_target_field="item_id"
    )


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _setup(name: str, total_len: int, batch_size: int, embed_dim: int, n_blocks: int) -> tuple[Any, ...]:
    """Model, batch and the two closures timed: inference (forward) and a training step (+ backward, Adam)."""
    device = _device()
    torch.manual_seed(0)
    spec = synthetic_spec(total_len)
    model = build_model(spec, model_config(name, embed_dim, n_blocks)).to(device)
    batch = synthetic_batch(spec, batch_size, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)  # as infnet.train.make_optimizer

    def infer() -> None:
        with torch.inference_mode():
            model(batch)

    def train_step() -> None:
        optimizer_step(multitask_loss(model(batch), batch["labels"]), opt, 0)

    return model, infer, train_step


def measure_timing(
    total_len: int, batch_size: int, embed_dim: int, n_blocks: int, repeats: int, warmup: int = 1
) -> list[dict[str, Any]]:
    """The three models at one L in this process, timed in turns; one row per model (memory added later)."""
    built = {name: _setup(name, total_len, batch_size, embed_dim, n_blocks) for name in MODELS}
    device = _device()
    for model, _, _ in built.values():
        model.eval()
    infer = interleaved({n: b[1] for n, b in built.items()}, warmup=warmup, repeats=repeats, device=device)
    for model, _, _ in built.values():
        model.train()
    train = interleaved({n: b[2] for n, b in built.items()}, warmup=warmup, repeats=repeats, device=device)
    rows = []
    for name, (model, _, _) in built.items():
        i, t = infer[name], train[name]
        rows.append({
            "model": name, "total_seq_len": total_len, "batch_size": batch_size, "params": count_parameters(model),
            "infer_s_per_batch": i.median_s, "infer_p95_s": i.p95_s, "infer_best_s": i.best_s,
            "train_s_per_batch": t.median_s, "train_p95_s": t.p95_s, "train_best_s": t.best_s,
            "infer_samples_per_s": batch_size / i.median_s, "train_samples_per_s": batch_size / t.median_s,
            "device": device.type,
        })  # fmt: skip
    return rows


def measure_memory(name: str, total_len: int, batch_size: int, embed_dim: int, n_blocks: int) -> float:
    """Peak memory (MB) of two training steps of one model: resident-set growth on CPU (call it in a fresh
    process: one that already ran the workload keeps its buffers and shows no growth), allocated on CUDA."""
    _, _, train_step = _setup(name, total_len, batch_size, embed_dim, n_blocks)
    if _device().type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        train_step()
        train_step()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with PeakRSS() as peak:
        train_step()
        train_step()  # the first step allocates Adam's state, the second runs with it
    return peak.growth / 2**20


def summarize(rows: list[dict], lengths: Sequence[int]) -> dict[str, Any]:
    """The ratios the targets are about, from this run's best (least disturbed) interleaved times."""
    by = {(r["model"], r["total_seq_len"]): r for r in rows}
    at = 1024 if 1024 in lengths else max(lengths)
    speedup = by[("hstu", at)]["infer_best_s"] / by[("infnet", at)]["infer_best_s"]
    lo, hi = (256, 2048) if {256, 2048} <= set(lengths) else (min(lengths), max(lengths))
    growth = {mode: by[("infnet", hi)][f"{mode}_best_s"] / by[("infnet", lo)][f"{mode}_best_s"]
              for mode in ("infer", "train")}  # fmt: skip
    return {
        "ratios_from": "best_s of the interleaved repeats",
        "infer_speedup_vs_full_attention_at": at,
        "infer_speedup_vs_full_attention": speedup,
        "infer_speedup_vs_full_attention_target": SPEEDUP_TARGET,
        "infer_speedup_target_met": speedup >= SPEEDUP_TARGET,
        "time_growth_lengths": [lo, hi],
        "infnet_infer_time_growth": growth["infer"],
        "infnet_train_time_growth": growth["train"],
        "time_growth_target": GROWTH_TARGET,
        "time_growth_target_met": max(growth.values()) <= GROWTH_TARGET,
        "length_ratio": hi / lo,
    }


def plot(
    rows: list[dict], path: Path, title: str, training: list[dict] | None = None
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Three log-log panels (inference, training, memory vs L), one line per model, legend outside, and with
    ``training`` (the MovieLens-shape rows) a fourth: training samples/s per model, wall and CPU time.
    Returns the points drawn (``{panel key: {model: [(L or 0, value)]}}``).

    Drawn here rather than with ``shared.report.plot_curves``: it has one axes per figure and linear scales,
    and throughputs that span four decades need log axes side by side.
    """
    n_panels = len(PANELS) + (1 if training else 0)
    fig, axes = plt.subplots(1, n_panels, figsize=(5 * n_panels, 4.4), layout="constrained")
    drawn: dict[str, dict[str, list[tuple[float, float]]]] = {}
    if training:
        ax = axes[-1]
        names = [TRAIN_NAMES[r["model"]].replace(", ", ",\n") for r in training]
        x = range(len(training))
        wall = [r["train_samples_per_s"] for r in training]
        cpu = [r["train_cpu_samples_per_s"] for r in training]
        ax.bar([i - 0.2 for i in x], wall, 0.4, label="wall time (median)")
        ax.bar([i + 0.2 for i in x], cpu, 0.4, label="CPU time (best)")
        ax.set_xticks(list(x), names, fontsize=8, rotation=30, ha="right")
        ax.set_ylabel("training samples/s")
        ax.set_title(f"training at MovieLens shapes, batch {training[0]['batch_size']}")
        ax.legend(frameon=False, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        drawn["movielens_train_samples_per_s"] = {r["model"]: [(0, v)] for r, v in zip(training, wall)}
    for ax, (key, label) in zip(axes, PANELS):
        drawn[key] = {}
        for name in MODELS:
            pts = sorted(
                (r["total_seq_len"], r[key]) for r in rows if r["model"] == name and r[key] is not None
            )
            if pts:
                ax.plot(*zip(*pts), marker="o", label=NAMES[name] if key == PANELS[0][0] else None)
                drawn[key][name] = pts
        ax.set_xscale("log", base=2)
        lengths = sorted({r["total_seq_len"] for r in rows})
        ax.set_xticks(lengths, labels=[str(n) for n in lengths])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_yscale("log")
        ax.set_xlabel("total sequence length L (tokens, log scale)")
        ax.set_ylabel(f"{label}, log scale")
        ax.set_title(label.split(" (")[0])
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()  # the models; the bar panel keeps its own legend
    fig.legend(handles, labels, loc="outside right upper", frameon=False, title="model")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def plot_title(result: dict[str, Any]) -> str:
    s = result["setup"]
    return (f"INFNet vs full self-attention (HSTU-style) vs DIN: synthetic batches of {s['batch_size']}, "
            f"d = {s['embed_dim']}, {s['n_blocks']} blocks, {s['threads']} thread{'s' * (s['threads'] != 1)}")  # fmt: skip


def train_repeats(args: argparse.Namespace) -> int:
    """Timed turns of the MovieLens-shape training steps: 5x the repeats (15 by default). A step takes
    20-250 ms, so they cost seconds beside the minutes of compiling; on a shared 2-core machine single
    steps of one process vary by up to 30 %, and the best of 15 turns varies far less between runs than
    the best of 5."""
    return 5 * args.repeats


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="INFNet throughput benchmark (synthetic batches)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--embed-dim", type=int, default=32)
    parser.add_argument("--n-blocks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3, quick 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each measuring process")
    parser.add_argument(
        "--train-batch-size", type=int, default=1024, help="batch of the MovieLens-shape part"
    )
    parser.add_argument(
        "--out", default=None, help="default results/bench/infnet.json (QUICK: runs/infnet/quick/bench.json)"
    )
    parser.add_argument("--replot", default=None, metavar="JSON", help="only redraw the PNG of this result")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 3)
    # a QUICK run never replaces the committed results (like reproduce's QUICK report)
    args.out = args.out or ("runs/infnet/quick/bench.json" if args.quick else "results/bench/infnet.json")
    for key in ("batch_size", "embed_dim", "n_blocks", "repeats", "threads", "train_batch_size"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if any(n < N_SEQUENCES for n in args.lengths):
        raise ConfigError(
            f"--lengths must be >= {N_SEQUENCES} (one position per behaviour), got {args.lengths}"
        )
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.replot:
        path = Path(args.replot)
        result = json.loads(path.read_text())
        training = (result.get("movielens_training") or {}).get("rows")
        plot(result["rows"], path.with_suffix(".png"), plot_title(result), training)
        print(f"redrew {path.with_suffix('.png')}")
        return
    machine = machine_info()  # before the timed work: the load average it records is the one we ran under
    t0 = time.perf_counter()
    sizes = (args.batch_size, args.embed_dim, args.n_blocks)
    rows = []
    for total_len in args.lengths:
        timed = in_fresh_process(measure_timing, total_len, *sizes, args.repeats, threads=args.threads)
        for row in timed:
            row["peak_mem_mb_train"] = in_fresh_process(
                measure_memory, row["model"], total_len, *sizes, threads=args.threads
            )
            print(
                f"L={total_len:5d} {row['model']:7s} infer {row['infer_samples_per_s']:9.1f}/s  "
                f"train {row['train_samples_per_s']:8.1f}/s  peak train mem {row['peak_mem_mb_train']:8.1f} MB",
                flush=True,
            )
        rows += timed
    training = in_fresh_process(
        measure_movielens_training, args.train_batch_size, train_repeats(args), threads=args.threads
    )
    for row in training:
        print(
            f"MovieLens shapes, batch {args.train_batch_size}: {row['model']:16s} train "
            f"{row['train_samples_per_s']:8.0f}/s (wall, median), {row['train_cpu_samples_per_s']:8.0f}/s (CPU, best)",
            flush=True,
        )
    summary = summarize(rows, args.lengths)
    setup = {
        "embed_dim": args.embed_dim, "n_blocks": args.n_blocks, "n_heads": 2, "batch_size": args.batch_size,
        "threads": args.threads, "repeats": args.repeats, "warmup": 1, "categorical_fields": N_CATEGORICAL,
        "behaviours": N_SEQUENCES, "tasks": N_TASKS, "quick": args.quick,
        "timing": "the three models in turns in one fresh process per L (shared.bench.interleaved)",
        "memory": "CPU: resident-set growth over two training steps, fresh process per point; CUDA: max allocated",
    }  # fmt: skip
    result = {
        "what": "synthetic batches (random ids, all positions real); throughput only, no accuracy",
        "setup": setup,
        "machine": machine,
        "rows": rows,
        "summary": summary,
        "movielens_training": {
            "what": "training steps (forward, backward, optimiser) at the embedded MovieLens split's shapes, "
            "random ids, model section of configs/movielens100k.yaml; the models in turns in one fresh process "
            "(compiled ones after their compiling first step)",
            "batch_size": args.train_batch_size,
            "repeats": train_repeats(args),
            "rows": training,
            "summary": summarize_training(training),
        },
        "wall_time_s": time.perf_counter() - t0,
    }
    out = Path(args.out)
    write_metrics_json(result, out)
    plot(rows, out.with_suffix(".png"), plot_title(result), training)
    s = summary
    print(
        f"INFNet / full self-attention inference throughput at L={s['infer_speedup_vs_full_attention_at']}: "
        f"{s['infer_speedup_vs_full_attention']:.1f}x (target >= {SPEEDUP_TARGET:g}x: "
        f"{'met' if s['infer_speedup_target_met'] else 'NOT met'})"
    )
    print(
        f"INFNet time growth L={s['time_growth_lengths'][0]}->{s['time_growth_lengths'][1]}: inference "
        f"{s['infnet_infer_time_growth']:.2f}x, training {s['infnet_train_time_growth']:.2f}x "
        f"(target <= {GROWTH_TARGET:g}: {'met' if s['time_growth_target_met'] else 'NOT met'})"
    )
    t = result["movielens_training"]["summary"]
    print(
        f"MMoE / INFNet (torch.compile) training samples/s at MovieLens shapes: "
        f"{t['train_ratio_mmoe_over_infnet_compiled']:.2f}x wall, {t['train_ratio_mmoe_over_infnet_compiled_cpu']:.2f}x "
        f"CPU time (target <= {TRAIN_RATIO_TARGET:g}: {'met' if t['train_ratio_target_met'] else 'NOT met'}); "
        f"both eager {t['train_ratio_mmoe_over_infnet']:.2f}x, both compiled {t['train_ratio_both_compiled']:.2f}x; "
        f"INFNet {t['train_speedup_over_previous']:.2f}x its previous implementation -> {out}"
    )


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
