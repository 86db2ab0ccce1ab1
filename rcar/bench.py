"""Benchmark of the RCAR training step and of the fast, exact evaluation, each against its reference.

    python -m rcar.bench [--quick]      (make bench-rcar [QUICK=1]) -> results/bench/rcar.json
                                        (QUICK: runs/bench/rcar_quick.json, never over the committed one)

**Training step at the embedded config** (``rcar/configs/mnist_scenes.yaml``: batch 32, embed 64, sim 32,
12 regions x 256-d, one thread as in the reproduction): one step (forward, hinge loss, backward, gradient
clipping, AdamW) of each of the 8 variants on the same batches, before and after the training speed-up, in
one run: before = ``rcar.reference.reference_batch_sims`` (the batch padded to its longest caption, tanh,
``bernoulli_`` dropout masks, quotient L2 norms), after = ``RCAR.forward(length_groups=train.length_groups)``.
The captions have the embedded set's lengths: they come from its own caption generator
(``rcar.data.scenes``, which needs digit labels only, not the MNIST pixels) with the training augmentation,
so no data build is needed. Best of ``--train-repeats`` interleaved repeats of ``--train-steps`` steps per
path and variant; the headline is the steps/s ratio of one step of every variant (the reproduction's mix),
with each variant's ratio beside it and the eval-mode scores of the two paths compared.

**Evaluation.** At the paper's dimensions (36 regions, 1024-d, sim 256, captions of ~12 words, RCAR K=2, t2i) with random
weights, on a subset of images x captions, in one run:

- the per-caption reference (``rcar.reference.reference_shard_sims``: the official
  ``EncoderSimilarity.forward`` loop structure, called per (100-image shard, 100-caption shard) like the
  official ``shard_attn_scores`` of ``lib/evaluation.py``) against ``rcar.evaluate.sims_from_embeddings``
  (vectorised over images and captions, chunked by a memory budget): max abs difference and time ratio
  (best of 3 interleaved timed runs per path, median and p95 kept too; QUICK: 1), at 100-image shards and at
  10-image shards;
- the FLOPs per image-caption pair counted from the model's shapes, the achieved GFLOP/s of both paths and
  this machine's float32 matmul peak (``torch.mm`` of large square matrices) measured in the same run;
- the peak memory of the fast path (growth of the kernel's resident-set high-water mark over one run in a
  fresh process) and its projection to COCO 5K (5,000 images x 25,000 captions), beside the official
  layout's float64 (N_cap, 36, 1024) image copies.

The headlines are ratios of two paths timed in turns in the same run, which other jobs' load moves much less
than absolute figures: the fraction of the matmul peak fell from 63% to 21% on a loaded machine, so it is
kept as a secondary, load-sensitive figure, with the load average before and after the run beside it.
Timings, peak memory, the matmul peak and the machine description (with its load average) come from
``shared.bench``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rcar.config import ModelConfig, RCARConfig
from rcar.data import Vocab, augment_caption, collate_train
from rcar.data.scenes import captions_for, make_scenes
from rcar.evaluate import pair_workspace_bytes, sims_from_embeddings
from rcar.loss import triplet_loss
from rcar.model import RCAR
from rcar.prepare import build_vocab
from rcar.reference import reference_batch_sims, reference_shard_sims
from shared.bench import PeakRSS, in_fresh_process, interleaved, load_note, machine_info, matmul_peak_gflops
from shared.config import load_config
from shared.errors import ConfigError, run_cli
from shared.report import write_metrics_json
from shared.run import optimizer_step

EMBEDDED = Path(__file__).parent / "configs" / "mnist_scenes.yaml"
VARIANTS = [(d, m) for d in ("t2i", "i2t") for m in ("baseline", "rcr", "rar", "rcar")]


# ------------------------------------------------------------------------------------------ training step
def embedded_batches(
    cfg: RCARConfig, n_batches: int, seed: int = 0
) -> tuple[list[dict[str, torch.Tensor]], int]:
    """Training batches at the embedded config, and the vocabulary size.

    Random region features; captions from the embedded set's generator over scenes of digit labels (the
    pixels only matter to the region features), encoded and augmented as ``PrecompDataset`` does, collated
    like the training loader.
    """
    bank = SimpleNamespace(labels=np.arange(500) % 10)  # all _place reads of a DigitBank
    rng = np.random.default_rng([seed, 11])
    n = n_batches * cfg.train.batch_size
    scenes = make_scenes(bank, np.arange(500), (n + 4) // 5, seed)
    captions = [c for sc in scenes for c in captions_for(sc, rng)][:n]
    v = build_vocab(captions)
    vocab = Vocab(v["word2idx"], {int(k): w for k, w in v["idx2word"].items()}, v["idx"])
    g = torch.Generator().manual_seed(seed)
    items = []
    for i, caption in enumerate(captions):
        ids = augment_caption(vocab.encode(caption), len(vocab), vocab.mask_id, rng)
        feats = torch.randn(cfg.data.n_regions, cfg.model.img_dim, generator=g)
        items.append((feats, torch.tensor(ids), i, i))
    b = cfg.train.batch_size
    return [collate_train(items[lo : lo + b]) for lo in range(0, n, b)], len(vocab)


def training_step_timing(
    mode: str, direction: str, batches: list[dict], vocab_size: int, steps: int, repeats: int, warmup: int
) -> dict[str, Any]:
    """Steps/s of the pre-speed-up training step and the current one, interleaved, on the same batches."""
    cfg = load_config(RCARConfig, EMBEDDED, [f"model.mode={mode}", f"model.direction={direction}"])
    tc = cfg.train
    paths = {}
    for name in ("before", "after"):
        torch.manual_seed(0)  # the same initial weights for both
        model = RCAR(cfg.model, vocab_size).train()
        paths[name] = (model, torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay))
    with torch.no_grad():  # eval mode: the two paths must give the same scores
        b = batches[0]
        before_model, after_model = paths["before"][0].eval(), paths["after"][0].eval()
        gap = (reference_batch_sims(before_model, b["images"], b["captions"], b["lengths"])
               - after_model(b["images"], b["captions"], b["lengths"], length_groups=tc.length_groups)).abs().max()  # fmt: skip
        before_model.train(), after_model.train()

    def run(name: str) -> None:
        model, opt = paths[name]
        for i in range(steps):
            b = batches[i % len(batches)]
            if name == "before":
                sims = reference_batch_sims(model, b["images"], b["captions"], b["lengths"])
            else:
                sims = model(b["images"], b["captions"], b["lengths"], length_groups=tc.length_groups)
            optimizer_step(
                triplet_loss(sims, b["image_index"], tc.margin, False), opt, i, grad_clip=tc.grad_clip
            )

    timings = interleaved({n: (lambda n=n: run(n)) for n in paths}, warmup=warmup, repeats=repeats)
    before, after = timings["before"].best_s / steps, timings["after"].best_s / steps
    return {
        "variant": f"{direction} {mode}",
        "before_step_s": before,
        "after_step_s": after,
        "before_steps_per_s": 1 / before,
        "after_steps_per_s": 1 / after,
        "speedup": before / after,
        "eval_max_abs_diff": float(gap),
        "before_timing": timings["before"].as_dict(),
        "after_timing": timings["after"].as_dict(),
    }


def training_benchmark(steps: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Every variant's training step before and after, one thread; the headline over one step of each."""
    cfg = load_config(RCARConfig, EMBEDDED)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reproduction's jobs are single-threaded
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        batches, vocab_size = embedded_batches(cfg, n_batches=min(steps, 8))
        variants = [
            training_step_timing(m, d, batches, vocab_size, steps, repeats, warmup) for d, m in VARIANTS
        ]
    finally:
        torch.set_num_threads(threads)
    before = sum(v["before_step_s"] for v in variants)
    after = sum(v["after_step_s"] for v in variants)
    lengths = torch.cat([b["lengths"] for b in batches]).float()
    return {
        "batch_size": cfg.train.batch_size,
        "embed_size": cfg.model.embed_size,
        "sim_dim": cfg.model.sim_dim,
        "length_groups": cfg.train.length_groups,
        "threads": 1,
        "steps": steps,
        "repeats": repeats,
        "caption_tokens_mean_max": [float(lengths.mean()), float(lengths.max())],
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "variants": variants,
        "before_steps_per_s": 1 / before,  # one step of each of the 8 variants
        "after_steps_per_s": 1 / after,
        "speedup": before / after,
    }


# ---------------------------------------------------------------------------------------------- evaluation


# --------------------------------------------------------------------------------------------------- counting
def flops_per_pair(cfg: ModelConfig, n_regions: int, n_words: float) -> float:
    """Multiply-add FLOPs (2 per MAC) of one (image, caption) pair in the similarity head, from its shapes.

    Cross-attention: c (q⊙m)ᵀ and softmax·c, 2 x 2·Lq·Lc·d; alignment vector Linear(d, s) per query token;
    RCR: MLP_m s->2s->d and MLP_λ s->s/2->1; RAR: W_k per token, W_q on h, the scoring Linear(s, 1); the
    output Linear(s, 1). Elementwise work (norms, tanh, softmax) is not counted.
    """
    d, s, k = cfg.embed_size, cfg.sim_dim, cfg.resolved_steps()
    lq, lc = (n_words, n_regions) if cfg.direction == "t2i" else (n_regions, n_words)
    attn = 4 * lq * lc * d
    av = 2 * lq * d * s
    rcr = 2 * lq * (s * 2 * s + 2 * s * d) + 2 * lq * (s * (s // 2) + s // 2)
    rar = 2 * lq * s * s + 2 * s * s + 2 * lq * s
    n_attn, n_av, n_rcr, n_rar = {
        "baseline": (1, 0, 0, 0),
        "rcr": (k + 1, k, k, 0),
        "rar": (1, 1, 0, k),
        "rcar": (k, k, k - 1, k),
    }[cfg.mode]
    out = 2 * s if cfg.mode in ("rar", "rcar") else 0
    return float(n_attn * attn + n_av * av + n_rcr * rcr + n_rar * rar + out)


def make_inputs(
    model: RCAR, n_img: int, n_cap: int, n_regions: int, mean_words: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random L2-normalised embeddings in the encoders' output layout; lengths in mean_words ± 4."""
    g = torch.Generator().manual_seed(seed)
    d = model.cfg.embed_size
    img = F.normalize(torch.randn(n_img, n_regions, d, generator=g), dim=-1)
    lengths = torch.randint(mean_words - 4, mean_words + 5, (n_cap,), generator=g)
    cap = F.normalize(torch.randn(n_cap, int(lengths.max()), d, generator=g), dim=-1)
    cap = cap * (torch.arange(cap.shape[1])[None, :, None] < lengths[:, None, None])  # zeros past the length
    return img.to(device), cap.to(device), lengths.to(device)


def compare(
    model: RCAR,
    n_img: int,
    n_cap: int,
    shard: int,
    budget_mb: float,
    device: torch.device,
    flops: float,
    repeats: int = 3,
) -> dict[str, Any]:
    """Reference and fast path on the same inputs, timed in turns ``repeats`` times (``shared.bench.interleaved``).

    The headline times are the best of the repeats (load-robust); median and p95 are kept beside them.
    """
    img, cap, lengths = make_inputs(model, n_img, n_cap, 36, 12, device)
    sims_from_embeddings(model, img[:4], cap[:8], lengths[:8], budget_mb)  # warm-up on a small block
    out: dict[str, torch.Tensor] = {}

    def reference() -> None:
        out["reference"] = reference_shard_sims(model, img, cap, lengths, shard)

    def fast() -> None:
        out["fast"] = sims_from_embeddings(model, img, cap, lengths, budget_mb)

    with torch.no_grad():  # no untimed warm-up of the full reference: one call takes ~20 s on 2 cores
        timings = interleaved(
            {"reference": reference, "fast": fast}, warmup=0, repeats=repeats, device=device
        )
    t_ref, t_fast = timings["reference"].best_s, timings["fast"].best_s
    pairs = n_img * n_cap
    return {
        "images": n_img,
        "captions": n_cap,
        "repeats": repeats,
        "image_shard": shard,
        "max_abs_diff": float((out["reference"] - out["fast"]).abs().max()),
        "reference_s": t_ref,
        "fast_s": t_fast,
        "reference_timing": timings["reference"].as_dict(),
        "fast_timing": timings["fast"].as_dict(),
        "speedup": t_ref / t_fast,
        "reference_gflops": flops * pairs / t_ref / 1e9,
        "fast_gflops": flops * pairs / t_fast / 1e9,
    }


def fast_path_rss_growth_mb(cfg: ModelConfig, state: dict, n_img: int, n_cap: int, budget_mb: float) -> float:
    """Resident-set growth of one fast-path run; called through ``in_fresh_process``.

    In the benchmark's own process the timed runs have already left freed, still-resident buffers in the
    allocator, so a later run reuses them and shows (almost) no growth; a fresh process has to fault in its
    whole workspace.
    """
    model = RCAR(cfg, vocab_size=state["txt_enc.embed.weight"].shape[0]).eval()
    model.load_state_dict(state)
    img, cap, lengths = make_inputs(model, n_img, n_cap, 36, 12, torch.device("cpu"))
    with torch.no_grad(), PeakRSS() as mem:
        sims_from_embeddings(model, img, cap, lengths, budget_mb)
    return mem.growth / 2**20


def coco5k_projection(model: RCAR, workspace_mb: float, caption_batch: int, max_words: int = 60) -> dict:
    """Memory of the fast path and of the official layout for COCO 5K (5,000 images, 25,000 captions)."""
    n_img, n_cap, r, d = 5000, 25000, 36, model.cfg.embed_size
    gb = 1e9  # decimal GB, as the ~7.4 GB of the official layout is quoted
    params = sum(p.numel() for p in model.parameters()) * 4
    ours = {
        "model_gb": params / gb,
        "image_embeddings_gb": n_img * r * d * 4 / gb,  # float32, each image once
        "similarity_matrix_gb": n_img * n_cap * 4 / gb,  # float32
        "caption_batch_gb": caption_batch * max_words * d * 4 / gb,
        "chunk_workspace_gb": workspace_mb * 2**20 / gb,  # measured on the subset; bounded by the budget
    }
    ours["total_gb"] = sum(ours.values())
    official = {
        "image_embeddings_gb": n_cap * r * d * 8 / gb,  # float64, each image stored once per caption
        "caption_embeddings_gb": n_cap * max_words * d * 8 / gb,  # float64, padded to the longest caption
        "similarity_matrix_gb": n_img * n_cap * 8 / gb,
    }
    official["total_gb"] = sum(official.values())
    return {"ours": ours, "official": official, "max_words_assumed": max_words}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="RCAR evaluation benchmark (fast path vs per-caption loop)")
    p.add_argument(
        "--quick", action="store_true", help="a smaller subset (about a minute), written under runs/"
    )
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--captions", type=int, default=None, help="default 500 (quick: 100)")
    p.add_argument("--budget-mb", type=float, default=64.0, help="fast-path chunk workspace budget")
    p.add_argument(
        "--repeats", type=int, default=None, help="timed runs per path, best kept (default 3, quick 1)"
    )
    p.add_argument(
        "--train-steps", type=int, default=None, help="training steps per timed repeat (default 10, quick 1)"
    )
    p.add_argument(
        "--train-repeats", type=int, default=None, help="timed repeats per training path (default 3, quick 1)"
    )
    p.add_argument(
        "--out", default=None, help="default results/bench/rcar.json (quick: runs/bench/rcar_quick.json)"
    )
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    n_cap = args.captions if args.captions is not None else (100 if args.quick else 500)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    train_steps = args.train_steps if args.train_steps is not None else (1 if args.quick else 10)
    train_repeats = args.train_repeats if args.train_repeats is not None else (1 if args.quick else 3)
    checks = [("--images", args.images), ("--captions", n_cap), ("--repeats", repeats)]
    checks += [("--train-steps", train_steps), ("--train-repeats", train_repeats)]
    for flag, value in checks:
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if args.budget_mb <= 0:
        raise ConfigError(f"--budget-mb must be > 0, got {args.budget_mb}")
    out = args.out or ("runs/bench/rcar_quick.json" if args.quick else "results/bench/rcar.json")
    n_cap10 = min(n_cap, 50 if args.quick else 100)
    torch.manual_seed(0)
    cfg = ModelConfig(mode="rcar", direction="t2i", steps=2)  # paper dims: 2048 -> 1024, sim 256
    model = RCAR(cfg, vocab_size=100).eval()
    cpu = torch.device("cpu")
    flops = flops_per_pair(cfg, 36, 12)
    t0 = time.time()
    machine = machine_info(("torchvision",))  # read first: other jobs' load lowers every figure below
    training = training_benchmark(train_steps, train_repeats, warmup=0 if args.quick else 1)
    peak_before = matmul_peak_gflops()
    cpu100 = compare(model, args.images, n_cap, 100, args.budget_mb, cpu, flops, repeats)
    cpu10 = compare(model, args.images, n_cap10, 10, args.budget_mb, cpu, flops, repeats)
    peak = max(peak_before, matmul_peak_gflops())
    state = model.state_dict()
    workspace_mb = in_fresh_process(fast_path_rss_growth_mb, cfg, state, args.images, n_cap, args.budget_mb)
    result = {
        "what": "RCAR similarity matrix: vectorised chunked path vs the official per-caption loop "
        "(paper dims: 36 regions, d=1024, sim 256, ~12-word captions, RCAR K=2, t2i; random weights)",
        "machine": machine,
        "quick": args.quick,
        "training": training,
        "flops_per_pair": flops,
        "matmul_peak_gflops": peak,
        "budget_mb": args.budget_mb,
        "estimated_workspace_mb_per_pair": pair_workspace_bytes(model, 36, 12) / 2**20,
        "fast_rss_growth_mb": workspace_mb,  # one fast-path run in a fresh process, 100-image subset
        "cpu_100_image_shards": cpu100,
        "cpu_10_image_shards": cpu10,
        "coco5k_memory": coco5k_projection(model, workspace_mb, caption_batch=256),
        "gpu": None,
        "wall_s": 0.0,
    }
    result["fast_fraction_of_peak"] = cpu100["fast_gflops"] / peak
    result["reference_fraction_of_peak"] = cpu100["reference_gflops"] / peak
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        model_gpu = RCAR(cfg, vocab_size=100).to(gpu).eval()
        model_gpu.load_state_dict(state)
        result["gpu"] = {
            "device": torch.cuda.get_device_name(0),
            "100_image_shards": compare(model_gpu, args.images, n_cap, 100, 4096, gpu, flops),
            "10_image_shards": compare(model_gpu, args.images, n_cap10, 10, 4096, gpu, flops),
        }
    targets = {
        "training step at least 1.5x (one step of each variant)": training["speedup"] >= 1.5,
        "training paths give the same eval-mode scores (max abs diff <= 1e-5)": max(
            v["eval_max_abs_diff"] for v in training["variants"]
        )
        <= 1e-5,
        "identical_scores (max abs diff <= 1e-5)": max(cpu100["max_abs_diff"], cpu10["max_abs_diff"]) <= 1e-5,
        "never slower than the reference (100-image shards)": cpu100["speedup"] >= 1.0,
        "at least 60% of the matmul peak (idle machine only)": result["fast_fraction_of_peak"] >= 0.6,
        "COCO 5K under 1.5 GB": result["coco5k_memory"]["ours"]["total_gb"] < 1.5,
    }
    if result["gpu"] is not None:
        targets["GPU: at least 5x the per-caption loop"] = result["gpu"]["100_image_shards"]["speedup"] >= 5
    result["targets"] = targets
    result["wall_s"] = time.time() - t0
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    write_metrics_json(result, out)
    print(f"{load_note(machine)}; FLOPs per pair {flops / 1e6:.1f} M; matmul peak {peak:.0f} GFLOP/s")
    print(
        f"training step, 1 thread, best of {train_repeats} x {train_steps} steps (load {training['load_average_before'][0]:.2f}):"
    )
    for v in training["variants"]:
        print(
            f"  {v['variant']}: {v['before_steps_per_s']:.2f} -> {v['after_steps_per_s']:.2f} steps/s, x{v['speedup']:.2f}"
        )
    print(f"  one step of each: x{training['speedup']:.2f}")
    for name, r in (("100-image shards", cpu100), ("10-image shards", cpu10)):
        print(
            f"{name}: {r['images']} x {r['captions']}: reference {r['reference_s']:.2f} s "
            f"({r['reference_gflops']:.0f} GFLOP/s), fast {r['fast_s']:.2f} s ({r['fast_gflops']:.0f} GFLOP/s), "
            f"x{r['speedup']:.2f}, max |diff| {r['max_abs_diff']:.1e}"
        )
    m = result["coco5k_memory"]
    print(
        f"COCO 5K memory: ours {m['ours']['total_gb']:.2f} GB, official layout {m['official']['total_gb']:.1f} GB"
    )
    for name, ok in targets.items():
        print(f"[{'ok' if ok else 'MISSED'}] {name}")
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
