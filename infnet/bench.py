"""Throughput benchmark: INFNet vs full self-attention (HSTU-style) vs DIN as the sequence length grows.

    python -m infnet.bench [--quick] [--threads 1] [--batch-size 16]

The paper's claim is a cost linear in the number of tokens. On synthetic batches (random ids, every position
a real item: this measures speed only, nothing about accuracy) of total sequence length L in 64/256/1024/2048
(split over two behaviours), with equal embedding size and depth for all models, it measures

- inference and training throughput (samples/s; median over repeats of one batch's forward, or forward +
  backward + Adam step), and
- peak memory: on CPU the peak resident set size (``ru_maxrss``) of a fresh subprocess per (model, L), minus
  its resident size just before the timed loop (so the torch runtime and the parameters are not counted);
  on CUDA ``torch.cuda.max_memory_allocated``.

Ratios are computed from numbers of this one run and written with the raw numbers to
``results/bench/infnet.json``, the plot to ``results/bench/infnet.png``. Targets (from the issue): INFNet at
least 5x the full self-attention model's inference throughput at L = 1024, and INFNet's time growing at most
linearly (time(2048) / time(256) <= 10).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from infnet.config import ModelConfig
from infnet.data import FeatureSpec, FieldSpec
from infnet.model import build_model, count_parameters, multitask_loss
from shared.report import machine_description, write_metrics_json

LENGTHS = (64, 256, 1024, 2048)
MODELS = ("infnet", "hstu", "din")
N_CATEGORICAL, N_SEQUENCES, N_TASKS, VOCAB = 8, 2, 3, 5000


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


def model_config(name: str, embed_dim: int, n_blocks: int) -> ModelConfig:
    return ModelConfig(
        name=name, embed_dim=embed_dim, n_blocks=n_blocks, n_heads=2, din_target_field="item_id"
    )


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _timed(fn, repeats: int, device: torch.device) -> float:
    for _ in range(2):  # warm-up
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_one(
    name: str, total_len: int, batch_size: int, embed_dim: int, n_blocks: int, repeats: int
) -> dict:
    """Inference then training of one (model, L) in this process; returns times, throughputs, memory."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    spec = synthetic_spec(total_len)
    model = build_model(spec, model_config(name, embed_dim, n_blocks)).to(device)
    batch = synthetic_batch(spec, batch_size, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    base_rss = _rss_mb()

    def infer() -> None:
        with torch.inference_mode():
            model(batch)

    def train_step() -> None:
        loss = multitask_loss(model(batch), batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_inf = _timed(infer, repeats, device)
    mem_inf = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_train = _timed(train_step, repeats, device)
    if device.type == "cuda":
        mem_train = torch.cuda.max_memory_allocated() / 2**20
    else:  # ru_maxrss is in KiB on Linux, the peak of the whole process (training peaks above inference)
        mem_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss
    return {
        "model": name,
        "total_seq_len": total_len,
        "batch_size": batch_size,
        "params": count_parameters(model),
        "infer_s_per_batch": t_inf,
        "train_s_per_batch": t_train,
        "infer_samples_per_s": batch_size / t_inf,
        "train_samples_per_s": batch_size / t_train,
        "peak_mem_mb_infer": mem_inf,
        "peak_mem_mb_train": mem_train,
        "device": device.type,
    }


def run_in_subprocess(args: argparse.Namespace, name: str, total_len: int) -> dict:
    """A fresh process per (model, L) so the peak memory of one does not hide another's."""
    cmd = [sys.executable, "-m", "infnet.bench", "--worker", name, str(total_len)]
    cmd += ["--batch-size", str(args.batch_size), "--embed-dim", str(args.embed_dim)]
    cmd += ["--n-blocks", str(args.n_blocks), "--repeats", str(args.repeats)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"bench worker {name} L={total_len} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(rows: list[dict], lengths: Sequence[int]) -> dict:
    """The ratios the targets are about, from this run's numbers."""
    by = {(r["model"], r["total_seq_len"]): r for r in rows}
    at = 1024 if 1024 in lengths else max(lengths)
    speedup = by[("infnet", at)]["infer_samples_per_s"] / by[("hstu", at)]["infer_samples_per_s"]
    lo, hi = (256, 2048) if {256, 2048} <= set(lengths) else (min(lengths), max(lengths))
    growth = {
        mode: by[("infnet", hi)][f"{mode}_s_per_batch"] / by[("infnet", lo)][f"{mode}_s_per_batch"]
        for mode in ("infer", "train")
    }
    return {
        "infer_speedup_vs_full_attention_at": at,
        "infer_speedup_vs_full_attention": speedup,
        "infer_speedup_vs_full_attention_target": 5.0,
        "infer_speedup_target_met": speedup >= 5.0,
        "time_growth_lengths": [lo, hi],
        "infnet_infer_time_growth": growth["infer"],
        "infnet_train_time_growth": growth["train"],
        "time_growth_target": 10.0,
        "time_growth_target_met": max(growth.values()) <= 10.0,
        "length_ratio": hi / lo,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    keys = [
        ("infer_samples_per_s", "inference samples/s"),
        ("train_samples_per_s", "training samples/s"),
        ("peak_mem_mb_train", "peak training memory (MB)"),
    ]
    for ax, (key, label) in zip(axes, keys):
        for name in MODELS:
            pts = sorted(
                (r["total_seq_len"], r[key]) for r in rows if r["model"] == name and r[key] is not None
            )
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("total sequence length L")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("INFNet vs full self-attention (HSTU-style) vs DIN, synthetic batches")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="INFNet throughput benchmark (synthetic batches)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--embed-dim", type=int, default=32)
    parser.add_argument("--n-blocks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3, quick 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each worker")
    parser.add_argument("--out", default="results/bench/infnet.json")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "L"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 3)
    if args.worker:
        name, total_len = args.worker[0], int(args.worker[1])
        row = measure_one(name, total_len, args.batch_size, args.embed_dim, args.n_blocks, args.repeats)
        print(json.dumps(row))
        return

    t0 = time.perf_counter()
    rows = []
    for total_len in args.lengths:
        for name in MODELS:
            row = run_in_subprocess(args, name, total_len)
            rows.append(row)
            print(
                f"L={total_len:5d} {name:7s} infer {row['infer_samples_per_s']:9.1f}/s  "
                f"train {row['train_samples_per_s']:8.1f}/s  peak train mem {row['peak_mem_mb_train']:8.1f} MB",
                flush=True,
            )
    summary = summarize(rows, args.lengths)
    out = Path(args.out)
    result = {
        "what": "synthetic batches (random ids, all positions real); throughput only, no accuracy",
        "setup": {
            "embed_dim": args.embed_dim,
            "n_blocks": args.n_blocks,
            "n_heads": 2,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "repeats": args.repeats,
            "categorical_fields": N_CATEGORICAL,
            "behaviours": N_SEQUENCES,
            "tasks": N_TASKS,
            "memory": "CPU: peak RSS of a fresh process minus its RSS before the timed loop; CUDA: max allocated",
            "machine": machine_description(),
            "torch": torch.__version__,
            "quick": args.quick,
        },
        "rows": rows,
        "summary": summary,
        "wall_time_s": time.perf_counter() - t0,
    }
    write_metrics_json(result, out)
    plot(rows, out.with_suffix(".png"))
    s = summary
    print(
        f"INFNet / full self-attention inference throughput at L={s['infer_speedup_vs_full_attention_at']}: "
        f"{s['infer_speedup_vs_full_attention']:.1f}x (target >= 5x: "
        f"{'met' if s['infer_speedup_target_met'] else 'NOT met'})"
    )
    print(
        f"INFNet time growth L={s['time_growth_lengths'][0]}->{s['time_growth_lengths'][1]}: inference "
        f"{s['infnet_infer_time_growth']:.2f}x, training {s['infnet_train_time_growth']:.2f}x "
        f"(target <= 10: {'met' if s['time_growth_target_met'] else 'NOT met'}) -> {out}"
    )


if __name__ == "__main__":
    main()
