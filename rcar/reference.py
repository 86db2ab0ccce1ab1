"""Slow, obviously correct versions of rcar's fast paths; the tests and ``rcar/bench.py`` compare against them.

- ``reference_sims``: the similarity of one caption at a time against a shard of images, the loop structure
  of the official ``EncoderSimilarity.forward`` (Paranioar/RCAR ``lib/encoders.py``): each caption cut to its
  true length, no masks, no in-place tricks, tanh computed as tanh; eval mode (no dropout). The fast path is
  ``RCAR.pair_sims`` (a block of images x captions at once, masked, in place without autograd).
- ``reference_shard_sims``: the official ``shard_attn_scores`` of ``lib/evaluation.py`` (100 x 100 blocks,
  each the per-caption loop); the fast path is ``rcar.evaluate.sims_from_embeddings`` / ``compute_sims``.
- ``reference_batch_sims``: the training forward of a batch as this package computed it before the
  training speed-up (issue 11), itself a vectorised form of the official batch: every caption padded to the
  batch's longest and masked, the attention map in the official (Lq, Lc) order, ``torch.tanh``,
  ``nn.Dropout``'s ``bernoulli_`` masks, quotient L2 norms, RAR's products through ``Linear(s, 1)``.
  ``rcar.bench`` times a training step on it against ``RCAR.forward(..., length_groups=k)``.
- ``reference_triplet_loss``: the hinge triplet loss of the official ``lib/loss.py`` written as a loop over
  queries and negatives; the fast path is ``rcar.loss.triplet_loss``.

Only the *parameters* of the similarity head are reused (``F.linear`` on its weights): the attention,
alignment, regulator and pooling arithmetic, every tanh and dropout included, is written out again here, so
the tests check the fast paths against an independent transcription of the official code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rcar.model import RCAR, SimilarityHead

EPS = 1e-8


def _l2norm(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x / (torch.linalg.vector_norm(x, dim=dim, keepdim=True) + EPS)


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, layer.weight, layer.bias)


def _mlp_tanh(first: nn.Linear, second: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Linear, Tanh, Linear (the official RCR MLPs)."""
    return _linear(second, torch.tanh(_linear(first, x)))


# ------------------------------------------------------------------------------------ the per-caption loop
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
    return _l2norm(_linear(head.alignment[k].proj, (query - wcontext).pow(2)))  # (n, Lq, sim_dim)


def _rcr(head: SimilarityHead, k: int, s, matrix, smooth):
    mod = head.rcr[k]
    matrix = (torch.tanh(_mlp_tanh(mod.mlp_m[0], mod.mlp_m[2], s)) + matrix).clamp(min=-1, max=1)
    smooth = torch.relu(_mlp_tanh(mod.mlp_lam[0], mod.mlp_lam[2], s) + smooth)
    return matrix, smooth


def _rar(head: SimilarityHead, k: int, mid: torch.Tensor, hig: torch.Tensor) -> torch.Tensor:
    mod = head.rar[k]
    mid_k = torch.tanh(_linear(mod.key[0], mid))  # (n, Lq, s)
    hig_q = torch.tanh(_linear(mod.query[0], hig)).unsqueeze(1).repeat(1, mid_k.size(1), 1)
    weights = torch.softmax(_linear(mod.score, mid_k * hig_q).squeeze(2), dim=1)
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
            sim_i = torch.sigmoid(_linear(head.out, hig))
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
            sim_i = torch.sigmoid(_linear(head.out, hig))
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


# ------------------------------------------------------------------------------ the training batch, before
def _batch_encode(model: RCAR, images, captions, lengths) -> tuple[torch.Tensor, torch.Tensor]:
    """The two encoders as before: image (B, R, d) and word (B, L, d) embeddings, quotient L2 norms."""
    enc, txt = model.img_enc, model.txt_enc
    b, r, d = images.shape
    mlp = enc.mlp_out(F.relu(enc.mlp_bn(enc.mlp_in(images.reshape(b * r, d)))))
    img = _l2norm(enc.fc(images) + mlp.view(b, r, -1))
    x = F.dropout(txt.embed(captions), txt.dropout.p, txt.training)
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(txt.rnn(packed)[0], batch_first=True, total_length=captions.shape[1])
    fwd, bwd = out.chunk(2, dim=-1)
    return img, _l2norm((fwd + bwd) / 2)


def _batch_cross_attention(query, context, m, lam, query_mask, context_mask) -> torch.Tensor:
    """query (N, Lq, d), context (G, Lc, d) -> the unnormalised ĉ (G, N, Lq, d); map (G, N, Lq, Lc)."""
    n, lq, d = query.shape
    g, lc, _ = context.shape
    if m is None:
        attn = (
            (query.reshape(n * lq, d) @ context.reshape(g * lc, d).T).view(n, lq, g, lc).permute(2, 0, 1, 3)
        )
    else:
        attn = torch.bmm((query.unsqueeze(0) * m).reshape(g, n * lq, d), context.transpose(1, 2))
        attn = attn.view(g, n, lq, lc)
    attn = F.leaky_relu(attn, 0.1)
    if query_mask is not None:
        attn = attn * query_mask[None, :, :, None].to(attn.dtype)
    attn = _l2norm(attn, dim=2) * lam
    if context_mask is not None:
        attn = attn.masked_fill(~context_mask[:, None, None, :], float("-inf"))
    attn = torch.softmax(attn, dim=-1)
    return torch.bmm(attn.reshape(g, n * lq, lc), context).view(g, n, lq, d)


def _batch_mean(x: torch.Tensor, query_mask: torch.Tensor | None) -> torch.Tensor:
    if query_mask is None:
        return x.mean(dim=2)
    w = query_mask.to(x.dtype).view(1, *query_mask.shape, *([1] * (x.dim() - 3)))
    return (x * w).sum(dim=2) / w.sum(dim=2)


def _batch_head(head: SimilarityHead, query, context, query_mask, context_mask) -> torch.Tensor:
    """query (N, Lq, d), context (G, Lc, d) -> (G, N), the four modes as ``SimilarityHead``."""
    m, lam = None, head.lam0

    def align(k: int) -> torch.Tensor:  # (G, N, Lq, sim_dim)
        wctx = _batch_cross_attention(query, context, m, lam, query_mask, context_mask)
        return _l2norm(_linear(head.alignment[k].proj, (query.unsqueeze(0) - _l2norm(wctx)).square()))

    def rcr(k: int, s: torch.Tensor):
        mod = head.rcr[k]
        new_m = (torch.tanh(_mlp_tanh(mod.mlp_m[0], mod.mlp_m[2], s)) + (1.0 if m is None else m)).clamp(
            -1, 1
        )
        return new_m, F.relu(_mlp_tanh(mod.mlp_lam[0], mod.mlp_lam[2], s) + lam)

    def rar(k: int, s: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        mod = head.rar[k]
        keys = F.dropout(torch.tanh(_linear(mod.key[0], s)), mod.key[2].p, mod.training)
        queries = F.dropout(torch.tanh(_linear(mod.query[0], h)), mod.query[2].p, mod.training)
        logits = _linear(mod.score, keys * queries.unsqueeze(-2)).squeeze(-1)  # (G, N, Lq)
        if query_mask is not None:
            logits = logits.masked_fill(~query_mask.unsqueeze(0), float("-inf"))
        return _l2norm((torch.softmax(logits, dim=-1).unsqueeze(-1) * s).sum(dim=-2))

    if head.mode in ("baseline", "rcr"):
        for k in range(len(head.rcr)):
            m, lam = rcr(k, align(k))
        wctx = _batch_cross_attention(query, context, m, lam, query_mask, context_mask)
        cos = (wctx * query).sum(-1) / (
            torch.linalg.vector_norm(wctx, dim=-1) * torch.linalg.vector_norm(query, dim=-1)
        ).clamp(min=EPS)
        return _batch_mean(cos, query_mask)
    if head.mode == "rar":
        s = align(0)
        h = _batch_mean(s, query_mask)
        for k in range(len(head.rar)):
            h = rar(k, s, h)
    else:
        h = None
        for k in range(len(head.rar)):
            s = align(k)
            if k == 0:
                h = _batch_mean(s, query_mask)
            if k < head.steps - 1:
                m, lam = rcr(k, s)
            h = rar(k, s, h)
    return torch.sigmoid(_linear(head.out, h)).squeeze(-1)


def reference_batch_sims(
    model: RCAR, images: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """(B, R, D) regions, (B, L) word ids, (B,) lengths -> (B_img, B_cap), with autograd (training step)."""
    img, cap = _batch_encode(model, images, captions, lengths)
    word_mask = None
    if int(lengths.min()) < cap.shape[1]:
        word_mask = torch.arange(cap.shape[1], device=cap.device)[None, :] < lengths.to(cap.device)[:, None]
    if model.direction == "t2i":
        return _batch_head(model.sim, cap, img, word_mask, None)
    return _batch_head(model.sim, img, cap, None, word_mask).T


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
