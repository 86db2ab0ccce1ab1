"""Benchmark of the fast, exact RCAR evaluation against the official per-caption loop.

    python -m rcar.bench [--quick]      (make bench-rcar [QUICK=1]) -> results/bench/rcar.json

At the paper's dimensions (36 regions, 1024-d, sim 256, captions of ~12 words, RCAR K=2, t2i) with random
weights, on a subset of images x captions, in one run:

- the per-caption reference (``reference_sims`` below: the official ``EncoderSimilarity.forward`` loop
  structure, called per (100-image shard, 100-caption shard) like the official ``shard_attn_scores``)
  against ``rcar.evaluate.sims_from_embeddings`` (vectorised over images and captions, chunked by a memory
  budget): max abs difference and time ratio (best of 2 alternating timed runs per path; QUICK: 1), at
  100-image shards and at 10-image shards;
- the FLOPs per image-caption pair counted from the model's shapes, the achieved GFLOP/s of both paths and
  this machine's float32 matmul peak (``torch.mm`` of large square matrices) measured in the same run;
- the peak memory of the fast path (growth of the kernel's resident-set high-water mark over one run in a
  fresh process) and its projection to COCO 5K (5,000 images x 25,000 captions), beside the official
  layout's float64 (N_cap, 36, 1024) image copies.

The reference below reuses only the *parameters* of a ``SimilarityHead``; its attention, alignment,
regulator and pooling arithmetic is written out again, so that the tests (``tests/rcar``) check the masked,
vectorised path against an independent transcription of the official loop.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from rcar.config import ModelConfig
from rcar.evaluate import pair_workspace_bytes, sims_from_embeddings
from rcar.model import RCAR, SimilarityHead
from shared.errors import run_cli
from shared.report import machine_description, write_metrics_json

EPS = 1e-8


def _l2norm(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=dim, keepdim=True).sqrt() + EPS)


def _cross_attention(
    query: torch.Tensor, context: torch.Tensor, matrix: torch.Tensor, smooth
) -> torch.Tensor:
    """query (n, Lq, d), context (n, Lc, d) -> (n, Lq, d), as the official ``cross_attention``."""
    attn = torch.bmm(context, (query * matrix).transpose(1, 2))  # (n, Lc, Lq)
    attn = _l2norm(F.leaky_relu(attn, 0.1), dim=-1)  # over Lq
    attn = torch.softmax(attn.transpose(1, 2) * smooth, dim=2)  # (n, Lq, Lc), over Lc
    wcontext = torch.bmm(attn, context)  # (n, Lq, d)
    return _l2norm(wcontext)


def _alignment(head: SimilarityHead, k: int, query, context, matrix, smooth) -> torch.Tensor:
    wcontext = _cross_attention(query, context, matrix, smooth)
    return _l2norm(head.alignment[k].proj((query - wcontext).pow(2)))


def _rcr(head: SimilarityHead, k: int, s, matrix, smooth):
    mod = head.rcr[k]
    matrix = (torch.tanh(mod.mlp_m(s)) + matrix).clamp(min=-1, max=1)
    smooth = torch.relu(mod.mlp_lam(s) + smooth)
    return matrix, smooth


def _rar(head: SimilarityHead, k: int, mid: torch.Tensor, hig: torch.Tensor) -> torch.Tensor:
    mod = head.rar[k]
    mid_k = mod.key(mid)  # (n, Lq, s)
    hig_q = mod.query(hig).unsqueeze(1).repeat(1, mid_k.size(1), 1)
    weights = torch.softmax(mod.score(mid_k * hig_q).squeeze(2), dim=1)
    return _l2norm((weights.unsqueeze(2) * mid).sum(dim=1))


def _cosine(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    return (x1 * x2).sum(-1) / (torch.norm(x1, 2, -1) * torch.norm(x2, 2, -1)).clamp(min=EPS)


@torch.no_grad()
def reference_sims(model: RCAR, img_embs: torch.Tensor, cap_embs: torch.Tensor, lengths) -> torch.Tensor:
    """(n_img, R, d) x (n_cap, L, d) -> (n_img, n_cap), one caption per Python iteration (official loop)."""
    head = model.sim
    n_image, embed = img_embs.shape[0], img_embs.shape[2]
    sims = []
    for i in range(cap_embs.shape[0]):
        n_word = int(lengths[i])
        cap_i = cap_embs[i, :n_word, :].unsqueeze(0).repeat(n_image, 1, 1)
        query, context = (cap_i, img_embs) if model.direction == "t2i" else (img_embs, cap_i)
        matrix = torch.ones(embed, device=img_embs.device)
        smooth = head.lam0
        if head.mode == "rar":
            mid = _alignment(head, 0, query, context, matrix, smooth)
            hig = mid.mean(1)
            for k in range(len(head.rar)):
                hig = _rar(head, k, mid, hig)
            sim_i = torch.sigmoid(head.out(hig))
        elif head.mode in ("baseline", "rcr"):
            for k in range(len(head.rcr)):
                mid = _alignment(head, k, query, context, matrix, smooth)
                matrix, smooth = _rcr(head, k, mid, matrix, smooth)
            wcontext = _cross_attention(query, context, matrix, smooth)
            sim_i = _cosine(query, wcontext).mean(dim=1, keepdim=True)
        else:  # rcar
            hig = None
            for k in range(len(head.rar)):
                mid = _alignment(head, k, query, context, matrix, smooth)
                if k == 0:
                    hig = mid.mean(1)
                if k < head.steps - 1:
                    matrix, smooth = _rcr(head, k, mid, matrix, smooth)
                hig = _rar(head, k, mid, hig)
            sim_i = torch.sigmoid(head.out(hig))
        sims.append(sim_i)
    return torch.cat(sims, 1)  # (n_img, n_cap)


def reference_shard_sims(
    model: RCAR, img_embs: torch.Tensor, cap_embs: torch.Tensor, lengths: torch.Tensor, shard: int = 100
) -> torch.Tensor:
    """The official ``shard_attn_scores``: (image shard x caption shard) blocks, each a per-caption loop."""
    n_img, n_cap = img_embs.shape[0], cap_embs.shape[0]
    sims = torch.empty(n_img, n_cap, device=img_embs.device)
    for i in range(0, n_img, shard):
        for j in range(0, n_cap, shard):
            sims[i : i + shard, j : j + shard] = reference_sims(
                model, img_embs[i : i + shard], cap_embs[j : j + shard], lengths[j : j + shard]
            )
    return sims


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


def matmul_peak_gflops(n: int = 2048, reps: int = 5) -> float:
    """Best-of-``reps`` float32 ``torch.mm`` throughput of two n x n matrices on this machine, now."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return _rss_bytes()


class PeakRSS:
    """Resident-set growth over a block: the kernel's high-water mark, reset at the start.

    Where the mark cannot be reset, a thread samples the RSS every millisecond instead. The timed runs never
    use this: on 2 cores a sampling thread preempts the compute threads and slows every parallel op.
    """

    def __enter__(self) -> PeakRSS:
        self.start = _rss_bytes()
        self._hwm = _reset_peak_rss()
        self.peak = self.start
        if not self._hwm:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self._hwm:
            self.peak = max(self.peak, _peak_rss_bytes())
        else:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def _timed(fn, device: torch.device) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


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
    repeats: int = 2,
) -> dict:
    """Reference and fast path on the same inputs, each timed ``repeats`` times alternately (best time kept)."""
    img, cap, lengths = make_inputs(model, n_img, n_cap, 36, 12, device)
    sims_from_embeddings(model, img[:4], cap[:8], lengths[:8], budget_mb)  # warm-up
    t_ref = t_fast = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            ref, t = _timed(lambda: reference_shard_sims(model, img, cap, lengths, shard), device)
            t_ref = min(t_ref, t)
            fast, t = _timed(lambda: sims_from_embeddings(model, img, cap, lengths, budget_mb), device)
            t_fast = min(t_fast, t)
    pairs = n_img * n_cap
    return {
        "images": n_img,
        "captions": n_cap,
        "repeats": repeats,
        "image_shard": shard,
        "max_abs_diff": float((ref - fast).abs().max()),
        "reference_s": t_ref,
        "fast_s": t_fast,
        "speedup": t_ref / t_fast,
        "reference_gflops": flops * pairs / t_ref / 1e9,
        "fast_gflops": flops * pairs / t_fast / 1e9,
    }


def _fast_path_rss_growth_mb(
    cfg: ModelConfig, state: dict, n_img: int, n_cap: int, budget_mb: float
) -> float:
    """RSS growth of one fast-path run (a worker of ``fresh_process_rss_growth_mb``)."""
    torch.set_num_threads(1)
    model = RCAR(cfg, vocab_size=state["txt_enc.embed.weight"].shape[0]).eval()
    model.load_state_dict(state)
    img, cap, lengths = make_inputs(model, n_img, n_cap, 36, 12, torch.device("cpu"))
    with torch.no_grad(), PeakRSS() as mem:
        sims_from_embeddings(model, img, cap, lengths, budget_mb)
    return mem.growth / 2**20


def fresh_process_rss_growth_mb(model: RCAR, n_img: int, n_cap: int, budget_mb: float) -> float:
    """Peak resident-set growth of the fast path, measured in a new process.

    In this process the timed runs have already left freed, still-resident buffers in the allocator, so a
    later run reuses them and shows (almost) no growth; a fresh process has to fault in its whole workspace.
    """
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_fast_path_rss_growth_mb, (model.cfg, model.state_dict(), n_img, n_cap, budget_mb))


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
    p.add_argument("--quick", action="store_true", help="a smaller subset (about a minute)")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--captions", type=int, default=None, help="default 500 (quick: 100)")
    p.add_argument("--budget-mb", type=float, default=64.0, help="fast-path chunk workspace budget")
    p.add_argument(
        "--repeats", type=int, default=None, help="timed runs per path, best kept (default 2, quick 1)"
    )
    p.add_argument("--out", default="results/bench/rcar.json")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    n_cap = args.captions or (100 if args.quick else 500)
    n_cap10 = min(n_cap, 50 if args.quick else 100)
    torch.manual_seed(0)
    cfg = ModelConfig(mode="rcar", direction="t2i", steps=2)  # paper dims: 2048 -> 1024, sim 256
    model = RCAR(cfg, vocab_size=100).eval()
    cpu = torch.device("cpu")
    flops = flops_per_pair(cfg, 36, 12)
    t0 = time.time()
    load_average = os.getloadavg()[0]  # other jobs on the machine lower every figure below
    peak_before = matmul_peak_gflops()
    repeats = args.repeats or (1 if args.quick else 2)
    cpu100 = compare(model, args.images, n_cap, 100, args.budget_mb, cpu, flops, repeats)
    cpu10 = compare(model, args.images, n_cap10, 10, args.budget_mb, cpu, flops, repeats)
    peak = max(peak_before, matmul_peak_gflops())
    workspace_mb = fresh_process_rss_growth_mb(model, args.images, n_cap, args.budget_mb)
    result = {
        "what": "RCAR similarity matrix: vectorised chunked path vs the official per-caption loop "
        "(paper dims: 36 regions, d=1024, sim 256, ~12-word captions, RCAR K=2, t2i; random weights)",
        "machine": machine_description(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average,
        "quick": args.quick,
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
        model_gpu.load_state_dict(model.state_dict())
        result["gpu"] = {
            "device": torch.cuda.get_device_name(0),
            "100_image_shards": compare(model_gpu, args.images, n_cap, 100, 4096, gpu, flops),
            "10_image_shards": compare(model_gpu, args.images, n_cap10, 10, 4096, gpu, flops),
        }
    targets = {
        "identical_scores (max abs diff <= 1e-5)": max(cpu100["max_abs_diff"], cpu10["max_abs_diff"]) <= 1e-5,
        "never slower than the reference (100-image shards)": cpu100["speedup"] >= 1.0,
        "at least 60% of the matmul peak": result["fast_fraction_of_peak"] >= 0.6,
        "COCO 5K under 1.5 GB": result["coco5k_memory"]["ours"]["total_gb"] < 1.5,
    }
    if result["gpu"] is not None:
        targets["GPU: at least 5x the per-caption loop"] = result["gpu"]["100_image_shards"]["speedup"] >= 5
    result["targets"] = targets
    result["wall_s"] = time.time() - t0
    write_metrics_json(result, args.out)
    print(f"FLOPs per pair {flops / 1e6:.1f} M; matmul peak {peak:.0f} GFLOP/s")
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
    print(f"wrote {args.out}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
