"""Exact, fast, memory-bounded RCAR evaluation: the similarity matrix, Recall@K and rsum.

The official ``evaluation.py`` encodes every caption's image once per caption (float64, (N_cap, 36, 1024):
~7.4 GB for COCO 5K) and scores shards of 100 images against one caption at a time in a Python loop
(1.25M iterations for COCO 5K). Here:

1. every image is encoded once, in float32: ``img_embs`` (N_img, R, d) (COCO 5K: 5000 x 36 x 1024 x 4 B = 737 MB);
2. captions are taken in batches of ``eval.caption_batch``, sorted by length so a batch is padded to nearly
   its own length, encoded once and scored against all images, then dropped;
3. each (caption batch x all images) product is cut into chunks of pairs whose workspace fits
   ``eval.memory_budget_mb`` (``pairs_per_chunk``); a chunk holds captions of one length only (no padded
   pairs, no masks) and is one call of ``RCAR.pair_sims``, vectorised over both images and captions.

Peak memory = model + image embeddings + the float32 (N_img, N_cap) matrix + one caption batch + one chunk's
workspace; ``rcar/bench.py`` measures it and projects it to COCO 5K. Since similarity is strictly per pair,
the result equals the per-caption loop (tests and bench check it to <= 1e-5).

Protocols of the official ``lib/evaluation.py``: F30K 1K test; COCO 5K (``testall``); COCO 1K = mean over
five 1,000-image folds (``--fold5``); the ensemble ("ALL", ``eval_ensemble.py``) averages the similarity
matrices of a t2i and an i2t model. Under torchrun each rank scores its share of the captions and
``gather_in_order`` puts the columns back, so every rank holds the whole matrix (``split_sims(info=...)``).

    python -m rcar.evaluate --config C --checkpoint P [--split test] [--out metrics.json] [--device auto]
                            [--checkpoint2 P2] [--fold5] [--max-images N]

The ``--config`` gives the data and evaluation sections; the model is rebuilt from the checkpoint's own config.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from rcar.config import EvalConfig, RCARConfig
from rcar.data import CAPTIONS_PER_IMAGE, DataConfig, Vocab, load_eval_split
from rcar.model import RCAR
from shared.checkpoint import load_checkpoint, restore_checkpoint
from shared.cli import evaluate_parser, write_json_out
from shared.config import config_from_dict, load_config
from shared.distributed import DistInfo, cleanup_distributed, gather_in_order, init_distributed
from shared.errors import ConfigError, TrainingError, run_cli
from shared.metrics import recall_at_k

FLOAT_BYTES = 4
FOLD_IMAGES = 1000  # COCO 1K folds


def pair_workspace_bytes(model: RCAR, n_regions: int, n_words: int) -> int:
    """Upper estimate of the live float32 workspace of ONE (image, caption) pair inside ``pair_sims``.

    Per query token: the modulation vector m and its update, the modulated query, ĉ and (q - ĉ)² (~5 x d),
    the RCR hidden layer and alignment / RAR vectors (~6 x sim_dim) and the attention map with its
    leaky-ReLU / norm / softmax copies (~4 x Lc). Checked against the measured peak in ``rcar/bench.py``.
    """
    cfg = model.cfg
    lq, lc = (n_words, n_regions) if cfg.direction == "t2i" else (n_regions, n_words)
    return FLOAT_BYTES * lq * (5 * cfg.embed_size + 6 * cfg.sim_dim + 4 * lc)


def pairs_per_chunk(model: RCAR, n_regions: int, n_words: int, budget_mb: float) -> int:
    return max(1, int(budget_mb * 2**20) // pair_workspace_bytes(model, n_regions, n_words))


@torch.no_grad()
def encode_images(model: RCAR, feats: np.ndarray, batch: int, device: torch.device) -> torch.Tensor:
    """(N, R, D) features (a memmap is fine) -> (N, R, d) float32 embeddings, each image encoded once."""
    out = []
    for lo in range(0, feats.shape[0], batch):
        x = torch.from_numpy(np.array(feats[lo : lo + batch], dtype=np.float32)).to(
            device
        )  # copy off the memmap
        out.append(model.img_enc(x))
    return torch.cat(out)


def pad_captions(captions: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids -> (n, L_max) long padded with 0 and lengths (n,)."""
    lengths = torch.tensor([len(c) for c in captions], dtype=torch.long)
    out = torch.zeros(len(captions), int(lengths.max()), dtype=torch.long)
    for i, c in enumerate(captions):
        out[i, : len(c)] = torch.as_tensor(c, dtype=torch.long)
    return out, lengths


@torch.no_grad()
def encode_captions(
    model: RCAR, captions: Sequence[Sequence[int]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids -> word embeddings (n, L_max, d) (zeros past each length) and lengths (n,)."""
    ids, lengths = pad_captions(captions)
    return model.txt_enc(ids.to(device), lengths), lengths.to(device)


@torch.no_grad()
def sims_from_embeddings(
    model: RCAR, img_embs: torch.Tensor, cap_embs: torch.Tensor, lengths: torch.Tensor, budget_mb: float
) -> torch.Tensor:
    """(n_img, R, d) x (n_cap, L, d) -> (n_img, n_cap), in chunks of pairs that fit ``budget_mb``.

    Captions are grouped by length and a block never mixes lengths: no pair pays for padded words (the
    per-caption loop runs every caption at its true length too) and no mask is needed. Within that, the
    query owners (captions for t2i, images for i2t) fill a chunk first, so the per-pair products are a few
    large GEMMs per context owner.
    """
    n_img, n_reg, _ = img_embs.shape
    n_cap = cap_embs.shape[0]
    order = torch.argsort(lengths.cpu(), stable=True)
    sorted_lengths = lengths.cpu()[order]
    order = order.to(cap_embs.device)
    out = torch.empty(n_img, n_cap, dtype=torch.float32, device=img_embs.device)
    c0 = 0
    while c0 < n_cap:
        length = int(sorted_lengths[c0])
        same = int(torch.searchsorted(sorted_lengths, length, right=True)) - c0  # captions of this length
        per_chunk = pairs_per_chunk(model, n_reg, length, budget_mb)
        if model.direction == "t2i":
            cap_blk = min(same, per_chunk)
            img_blk = max(1, min(n_img, per_chunk // cap_blk))
        else:
            img_blk = min(n_img, per_chunk)
            cap_blk = max(1, min(same, per_chunk // img_blk))
        idx = order[c0 : c0 + cap_blk]
        caps, lens = cap_embs[idx, :length], lengths[idx]
        for i0 in range(0, n_img, img_blk):
            i1 = min(i0 + img_blk, n_img)
            out[i0:i1, c0 : c0 + cap_blk] = model.pair_sims(img_embs[i0:i1], caps, lens)
        c0 += cap_blk
    result = torch.empty_like(out)
    result[:, order] = out
    return result


@torch.no_grad()
def compute_sims(
    model: RCAR,
    feats: np.ndarray,
    captions: Sequence[Sequence[int]],
    device: torch.device | str = "cpu",
    budget_mb: float = 64,
    image_batch: int = 128,
    caption_batch: int = 256,
) -> np.ndarray:
    """The (N_img, N_cap) float32 similarity matrix of a split; exact, each image and caption encoded once."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    img_embs = encode_images(model, feats, image_batch, device)
    order = sorted(range(len(captions)), key=lambda j: len(captions[j]))  # similar lengths share a batch
    sims = torch.empty(img_embs.shape[0], len(captions), dtype=torch.float32, device=device)
    for lo in range(0, len(order), caption_batch):
        idx = order[lo : lo + caption_batch]
        cap_embs, lengths = encode_captions(model, [captions[j] for j in idx], device)
        sims[:, torch.as_tensor(idx, device=device)] = sims_from_embeddings(
            model, img_embs, cap_embs, lengths, budget_mb
        )
        del cap_embs
    model.train(was_training)
    return sims.cpu().numpy()


def fold_sims(
    model: RCAR,
    feats: np.ndarray,
    captions: Sequence[Sequence[int]],
    fold_images: int = FOLD_IMAGES,
    device: torch.device | str = "cpu",
    info: DistInfo | None = None,
    **kwargs,
) -> list[np.ndarray]:
    """Only the diagonal (fold x its captions) blocks, for the fold protocol: 5x fewer pairs for COCO 1K."""
    return [
        sharded_sims(model, feats[a], captions[b], device, info, **kwargs)
        for a, b in fold_slices(len(feats), fold_images)
    ]


def recall_metrics(sims: np.ndarray) -> dict[str, float]:
    """R@1/5/10 in both directions and rsum (percent) of an (N, 5N) similarity matrix."""
    return recall_at_k(np.asarray(sims), captions_per_image=CAPTIONS_PER_IMAGE)


def fold_slices(n_images: int, fold_images: int = FOLD_IMAGES) -> list[tuple[slice, slice]]:
    """(image slice, caption slice) of each COCO 1K fold."""
    if n_images % fold_images:
        raise ConfigError(f"--fold5 needs a multiple of {fold_images} images, the split has {n_images}")
    k = CAPTIONS_PER_IMAGE
    return [
        (slice(i, i + fold_images), slice(k * i, k * (i + fold_images)))
        for i in range(0, n_images, fold_images)
    ]


def fold_mean(per_fold: Sequence[dict[str, float]]) -> dict[str, float]:
    """Metric-wise mean over folds (the COCO 1K protocol)."""
    return {key: float(np.mean([m[key] for m in per_fold])) for key in per_fold[0]}


def evaluate_sims(sims: np.ndarray | list[np.ndarray]) -> dict[str, float]:
    """Recall metrics of a full matrix, or the fold mean of a list of fold blocks (from ``fold_sims``)."""
    if isinstance(sims, list):
        return fold_mean([recall_metrics(s) for s in sims])
    return recall_metrics(sims)


def ensemble(sims_a: np.ndarray | list[np.ndarray], sims_b: np.ndarray | list[np.ndarray]):
    """The README's "ALL" row: the mean of the t2i and i2t models' similarity matrices (or fold blocks)."""
    if isinstance(sims_a, list):
        return [ensemble(a, b) for a, b in zip(sims_a, sims_b, strict=True)]
    if sims_a.shape != sims_b.shape:
        raise ConfigError(f"cannot ensemble similarity matrices of shapes {sims_a.shape} and {sims_b.shape}")
    return (sims_a + sims_b) / 2


def sync_buffers_from_rank0(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running stats) before a sharded evaluation.

    DDP broadcasts buffers at the start of each forward, so after the last training step every rank has
    updated them with its own batch; rank 0's are the ones its checkpoint holds.
    """
    if dist.is_available() and dist.is_initialized():
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


def chunk_kwargs(e: EvalConfig) -> dict[str, float]:
    """The ``compute_sims`` keyword arguments of an ``eval`` config section."""
    return {"budget_mb": e.memory_budget_mb, "image_batch": e.image_batch, "caption_batch": e.caption_batch}


def sharded_sims(
    model: RCAR,
    feats: np.ndarray,
    captions: Sequence[Sequence[int]],
    device: torch.device | str,
    info: DistInfo | None = None,
    **kwargs,
) -> np.ndarray:
    """``compute_sims``; under DDP each rank scores captions rank, rank + world, ... and every rank gets all.

    Each image is encoded on every rank (cheap next to the pairs); the (N_img, n_local) blocks are gathered
    by caption index with ``gather_in_order``, so the result is the single-process matrix.
    """
    if info is None or not info.distributed:
        return compute_sims(model, feats, captions, device, **kwargs)
    sync_buffers_from_rank0(model)
    mine = list(range(info.rank, len(captions), info.world_size))
    local = compute_sims(model, feats, [captions[j] for j in mine], device, **kwargs)  # (N_img, n_local)
    values = torch.from_numpy(np.ascontiguousarray(local.T)).to(info.device)  # (n_local, N_img)
    index = torch.tensor(mine, dtype=torch.long, device=info.device)
    return gather_in_order(values, index, len(captions)).T.cpu().numpy()  # (N_img, N_cap)


# ------------------------------------------------------------------------------------------------- checkpoints
def load_model(
    path: str | Path, data: DataConfig | None = None, device: torch.device | str = "cpu"
) -> tuple[RCAR, RCARConfig, Vocab]:
    """Rebuild the model of a checkpoint written by ``rcar.train`` (its own model config).

    ``data`` (the ``--config``'s data section) replaces the checkpoint's, for evaluating on another folder;
    the vocabulary is read from it and must be the one the model was trained with.
    """
    state = load_checkpoint(path, map_location="cpu", paper="rcar")
    if not state.get("config"):
        raise TrainingError(f"{path}: checkpoint has no config; it was not written by rcar.train")
    cfg = config_from_dict(RCARConfig, state["config"])
    if data is not None:
        cfg.data = data
    vocab = Vocab.from_json(cfg.data.vocab_path())
    model = RCAR(cfg.model, len(vocab))
    restore_checkpoint(state, model=model, restore_rng=False)
    return model.to(device).eval(), cfg, vocab


def split_sims(
    model: RCAR,
    cfg: RCARConfig,
    vocab: Vocab,
    split: str,
    device: torch.device | str,
    max_images: int | None = None,
    fold5: bool | None = None,
    info: DistInfo | None = None,
) -> np.ndarray | list[np.ndarray]:
    """The split's similarity matrix, or its fold blocks when ``fold5`` (default: ``eval.fold5``).

    With ``info`` of a DDP run, the captions are shared out among the ranks (``sharded_sims``).
    """
    feats, captions = load_eval_split(
        cfg.data.root, split, vocab, max_images, n_regions=cfg.data.n_regions, feat_dim=cfg.data.feat_dim
    )
    if feats.shape[2] != cfg.model.img_dim:
        raise ConfigError(
            f"{cfg.data.root}/{split}_ims.npy has feature dim {feats.shape[2]} but the model expects "
            f"model.img_dim={cfg.model.img_dim}"
        )
    kwargs = chunk_kwargs(cfg.eval)
    if fold5 is None:
        fold5 = cfg.eval.fold5
    if fold5:
        return fold_sims(model, feats, captions, cfg.eval.fold_images, device, info, **kwargs)
    return sharded_sims(model, feats, captions, device, info, **kwargs)


def format_metrics(name: str, m: dict[str, float]) -> str:
    return (
        f"{name}: i2t R@1/5/10 {m['i2t_r1']:.1f} {m['i2t_r5']:.1f} {m['i2t_r10']:.1f} | "
        f"t2i R@1/5/10 {m['t2i_r1']:.1f} {m['t2i_r5']:.1f} {m['t2i_r10']:.1f} | rsum {m['rsum']:.1f}"
    )


def main(argv: Sequence[str] | None = None) -> dict:
    p = evaluate_parser(
        "Evaluate RCAR checkpoints (R@1/5/10 both ways, rsum)", RCARConfig, splits=("dev", "test")
    )
    p.add_argument("--checkpoint2", default=None, help="a second model; adds the ensemble (mean of the sims)")
    p.add_argument("--fold5", action="store_true", help="COCO 1K: mean over folds of eval.fold_images images")
    p.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="evaluate on the first N images only (default: all; --split dev: data.dev_max_images, as in training)",
    )
    args = p.parse_args(argv)
    if args.max_images is not None and args.max_images < 1:
        raise ConfigError(f"--max-images must be >= 1, got {args.max_images}")
    cfg = load_config(RCARConfig, args.config, args.overrides)
    info = init_distributed(args.device)
    try:
        results: dict[str, dict[str, float]] = {}
        all_sims = []
        for name, path in (("model", args.checkpoint), ("model2", args.checkpoint2)):
            if path is None:
                continue
            model, model_cfg, vocab = load_model(path, cfg.data, info.device)
            model_cfg.eval = cfg.eval
            split = cfg.data.dev_split if args.split == "dev" else cfg.data.test_split
            max_images = args.max_images
            if max_images is None and args.split == "dev":
                max_images = cfg.data.dev_max_images  # the dev check of training, so the numbers match
            fold5 = args.fold5 or (cfg.eval.fold5 and args.split == "test")  # eval.fold5 is the test protocol
            sims = split_sims(model, model_cfg, vocab, split, info.device, max_images, fold5, info)
            all_sims.append(sims)
            results[f"{name} ({model_cfg.model.direction}, {model_cfg.model.mode})"] = evaluate_sims(sims)
        if len(all_sims) == 2:
            results["ensemble"] = evaluate_sims(ensemble(*all_sims))
    finally:
        cleanup_distributed()
    if info.is_main:
        for name, m in results.items():
            print(format_metrics(name, m))
        # one checkpoint: the keys of its run's test_metrics.json; two: one entry per model and the ensemble
        out = next(iter(results.values())) if len(results) == 1 else results
        if args.out:
            write_json_out(json.dumps(out, indent=2), args.out)
    return results


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
