"""Slow, obviously correct versions of rcar's fast paths; the tests and ``rcar/bench.py`` compare against them.

- ``reference_sims``: the similarity of one caption at a time against a shard of images, the loop structure
  of the official ``EncoderSimilarity.forward`` (Paranioar/RCAR ``lib/encoders.py``): each caption cut to its
  true length, no masks, no in-place tricks, tanh computed as tanh. The fast path is ``RCAR.pair_sims``
  (a block of images x captions at once, masked, in place without autograd).
- ``reference_shard_sims``: the official ``shard_attn_scores`` of ``lib/evaluation.py`` (100 x 100 blocks,
  each the per-caption loop); the fast path is ``rcar.evaluate.sims_from_embeddings`` / ``compute_sims``.
- ``reference_triplet_loss``: the hinge triplet loss of the official ``lib/loss.py`` written as a loop over
  queries and negatives; the fast path is ``rcar.loss.triplet_loss``.

Only the *parameters* of a ``SimilarityHead`` are reused: the attention, alignment, regulator and pooling
arithmetic is written out again here, so the tests check the vectorised path against an independent
transcription of the official loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rcar.model import RCAR, SimilarityHead

EPS = 1e-8


def _l2norm(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=dim, keepdim=True).sqrt() + EPS)


def _cross_attention(
    query: torch.Tensor, context: torch.Tensor, matrix: torch.Tensor, smooth: torch.Tensor | float
) -> torch.Tensor:
    """query (n, Lq, d), context (n, Lc, d) -> (n, Lq, d), as the official ``cross_attention``."""
    attn = torch.bmm(context, (query * matrix).transpose(1, 2))  # (n, Lc, Lq)
    attn = _l2norm(F.leaky_relu(attn, 0.1), dim=-1)  # over Lq
    attn = torch.softmax(attn.transpose(1, 2) * smooth, dim=2)  # (n, Lq, Lc), over Lc
    wcontext = torch.bmm(attn, context)  # (n, Lq, d)
    return _l2norm(wcontext)


def _alignment(head: SimilarityHead, k: int, query, context, matrix, smooth) -> torch.Tensor:
    wcontext = _cross_attention(query, context, matrix, smooth)
    return _l2norm(head.alignment[k].proj((query - wcontext).pow(2)))  # (n, Lq, sim_dim)


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
def reference_sims(
    model: RCAR, img_embs: torch.Tensor, cap_embs: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
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


def reference_triplet_loss(
    sims: torch.Tensor, image_index: torch.Tensor, margin: float, hardest: bool
) -> torch.Tensor:
    """The hinge triplet loss, one query and one negative at a time.

    sims (B, B): row = image of caption i, column = caption j. For the positive pair of caption j (image of
    row j), every caption j' of another image is a negative for the image query and every row i' of another
    image a negative for the caption query; ``hardest`` keeps the largest violation of each query.
    """
    b = sims.shape[0]
    total = sims.new_zeros(())
    for q in range(b):
        positive = sims[q, q]
        image_costs = [
            (margin + sims[q, j] - positive).clamp(min=0)
            for j in range(b)
            if image_index[j] != image_index[q]
        ]
        caption_costs = [
            (margin + sims[i, q] - positive).clamp(min=0)
            for i in range(b)
            if image_index[i] != image_index[q]
        ]
        for costs in (image_costs, caption_costs):
            if costs:
                total = total + (torch.stack(costs).max() if hardest else torch.stack(costs).sum())
    return total
