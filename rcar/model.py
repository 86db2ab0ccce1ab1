"""RCAR: Plug-and-Play Regulators for Image-Text Matching (Diao et al., IEEE TIP 2023, arXiv 2303.13371).

The SCAN-style model of the official code (Paranioar/RCAR ``lib/encoders.py``, built on SCAN and SGRAF):

- ``ImageEncoder``: precomputed regions (R, D) -> ``fc(x) + MLP(x)``, L2-normalised (GPO-style MLP).
- ``TextEncoder``: word embedding (U(±0.1)), dropout 0.4, bi-GRU whose two directions are averaged, L2 norm.
- ``cross_attention``: A = LeakyReLU_0.1(c · (q ⊙ m)ᵀ), L2-normalised over the queries, softmax over the
  context of λ·A, ĉ = l2norm(Σ softmax · c). m (modulation vector) and λ (temperature) are the paper's
  "attention factors", per image-caption pair and per query token.
- ``AlignmentVector``: s = l2norm(W (q - ĉ)²) (the SGR alignment vector of SGRAF).
- ``CorrespondenceRegulator`` (RCR): m <- clamp(tanh(MLP_m(s)) + m, -1, 1), λ <- ReLU(MLP_λ(s) + λ).
- ``AggregationRegulator`` (RAR): recurrent attention pooling of the alignment vectors,
  h <- l2norm(Σ softmax_Lq(w · (tanh(W_k s) ⊙ tanh(W_q h))) s), starting from h = mean(s).
- ``SimilarityHead``: the four modes (``baseline`` = only_rcr with K=0, ``rcr``, ``rar``, ``rcar``); cosine-mean
  output for baseline/RCR (SCAN AVG) and σ(W h) for RAR/RCAR.

Directions: t2i uses the words as queries and the regions as context; i2t the reverse.

Layout. The official code loops over captions and scores one caption against a shard of images. Here a
block of G "context owners" (images for t2i, captions for i2t) is scored against N "query owners" at once:
queries (N, Lq, d) are shared by all G, the context is (G, Lc, d), and everything per pair is (G, N, ...). The
first attention (m = 1) is then a single (G·Lc, d) x (d, N·Lq) GEMM and later ones one bmm per context
owner, instead of thousands of tiny per-caption products. Padded words carry a mask: they are kept out of
the L2 norm over queries (t2i), the softmax over context (i2t), and every mean / RAR softmax over queries.

Deviations from the official code:
- Sims are computed for all (image, caption) pairs of a block with masks instead of a Python loop over
  captions truncated to their length; the result is the same (tests compare against that loop, <= 1e-5).
- The image MLP drops GPO's unused BatchNorm of the output layer (it is created there but never applied).
- The baseline / RCR-only heads do not create the unused final ``Linear(sim_dim, 1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rcar.config import ModelConfig

EPS = 1e-8


def l2norm(x: torch.Tensor, dim: int = -1, eps: float = EPS, inplace: bool = False) -> torch.Tensor:
    """x / (||x||_2 + eps), the official normalisation (eps outside the square root), in one norm pass."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    return x.div_(norm.add_(eps)) if inplace else x / (norm + eps)


def no_grad_inplace() -> bool:
    """Whether big intermediates may be overwritten in place: only without autograd (evaluation).

    The per-pair tensors are (G, N, Lq, d); on a CPU every extra pass over them costs about as much as the
    GEMMs, so evaluation reuses buffers while training keeps the out-of-place ops autograd needs.
    """
    return not torch.is_grad_enabled()


def mean_over_queries(x: torch.Tensor, query_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the query axis (dim 2) of x (G, N, Lq, ...) counting only real tokens of query_mask (N, Lq)."""
    if query_mask is None:
        return x.mean(dim=2)
    w = query_mask.to(x.dtype).view(1, *query_mask.shape, *([1] * (x.dim() - 3)))
    return (x * w).sum(dim=2) / w.sum(dim=2)


def tanh_as_sigmoid(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """σ(2 (W x + b)), in place on the Linear's output: tanh(W x + b) = 2 σ(2 (W x + b)) - 1.

    Evaluation only. A CPU computes ``sigmoid_`` about 3.5x faster than ``tanh_`` (measured with torch 2.14 on
    the 2-core build machine), and tanh is the largest cost outside the GEMMs; the affine ``2 σ - 1`` is folded
    into whatever reads the result. Doubling W and b is exact in floating point.
    """
    return F.linear(x, linear.weight * 2, linear.bias * 2).sigmoid_()


def xavier_(linear: nn.Linear) -> None:
    """Xavier-uniform weight, zero bias (the official ``init_weights``)."""
    r = (6.0 / (linear.in_features + linear.out_features)) ** 0.5
    nn.init.uniform_(linear.weight, -r, r)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


# ------------------------------------------------------------------------------------------------ encoders
class ImageEncoder(nn.Module):
    """Regions (B, R, D) -> l2norm(fc(x) + MLP(x)) (B, R, d); MLP = Linear(D, d/2), BN, ReLU, Linear(d/2, d)."""

    def __init__(self, img_dim: int, embed_size: int):
        super().__init__()
        self.fc = nn.Linear(img_dim, embed_size)
        self.mlp_in = nn.Linear(img_dim, embed_size // 2)
        self.mlp_bn = nn.BatchNorm1d(embed_size // 2)
        self.mlp_out = nn.Linear(embed_size // 2, embed_size)
        xavier_(self.fc)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, r, d = images.shape
        flat = images.reshape(b * r, d)  # BatchNorm1d over all regions of the batch, as GPO's MLP
        mlp = self.mlp_out(F.relu(self.mlp_bn(self.mlp_in(flat))))
        return l2norm(self.fc(images) + mlp.view(b, r, -1))


class TextEncoder(nn.Module):
    """Word ids (B, L) + lengths -> bi-GRU states averaged over the two directions, L2-normalised (B, L, d).

    Padded positions come out as zero vectors.
    """

    def __init__(
        self, vocab_size: int, word_dim: int, embed_size: int, num_layers: int = 1, dropout: float = 0.4
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(word_dim, embed_size, num_layers, batch_first=True, bidirectional=True)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    def forward(self, captions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.embed(captions))  # (B, L, word_dim)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=captions.shape[1])  # (B, L, 2d)
        fwd, bwd = out.chunk(2, dim=-1)
        return l2norm((fwd + bwd) / 2)


# ------------------------------------------------------------------------------------ attention and regulators
def cross_attention(
    query: torch.Tensor,
    context: torch.Tensor,
    m: torch.Tensor | None,
    lam: torch.Tensor | float,
    query_mask: torch.Tensor | None = None,
    context_mask: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Attended context ĉ for every (context owner g, query owner n) pair.

    query (N, Lq, d); context (G, Lc, d); m None (= all ones) or (G, N, Lq, d); lam a float or (G, N, Lq, 1);
    query_mask (N, Lq) / context_mask (G, Lc) are True on real tokens. Returns (G, N, Lq, d), L2-normalised
    unless ``normalize=False`` (callers that normalise it themselves save a pass over the biggest tensor).
    """
    n, lq, d = query.shape
    g, lc, _ = context.shape
    inplace = no_grad_inplace()
    if m is None:  # one GEMM for every pair: (N·Lq, d) x (d, G·Lc); Lc stays the contiguous axis
        attn = (
            (query.reshape(n * lq, d) @ context.reshape(g * lc, d).T).view(n, lq, g, lc).permute(2, 0, 1, 3)
        )
    else:  # one bmm per context owner: (N·Lq, d) x (d, Lc)
        qm = (query.unsqueeze(0) * m).reshape(g, n * lq, d)
        attn = torch.bmm(qm, context.transpose(1, 2)).view(g, n, lq, lc)
        del qm
    attn = F.leaky_relu(attn, 0.1, inplace=inplace)  # (G, N, Lq, Lc)
    if query_mask is not None:  # padded query words must not enter the norm over Lq
        attn = attn * query_mask[None, :, :, None].to(attn.dtype)
    attn = l2norm(attn, dim=2, inplace=inplace) * lam
    if context_mask is not None:  # padded context words get zero attention
        attn = attn.masked_fill(~context_mask[:, None, None, :], float("-inf"))
    attn = torch.softmax(attn, dim=-1)
    wctx = torch.bmm(attn.reshape(g, n * lq, lc), context).view(g, n, lq, d)
    return l2norm(wctx, inplace=inplace) if normalize else wctx


class AlignmentVector(nn.Module):
    """s = l2norm(W (q - ĉ)²): (G, N, Lq, d) -> (G, N, Lq, sim_dim); q is the unmodulated query.

    Takes the attended context *before* its L2 norm (``cross_attention(..., normalize=False)``): without
    autograd, q - ĉ is then formed in one pass (``addcdiv``) in that buffer and squared in place, instead of
    three passes and a new (G, N, Lq, d) tensor.
    """

    def __init__(self, embed_size: int, sim_dim: int):
        super().__init__()
        self.proj = nn.Linear(embed_size, sim_dim)

    def forward(self, query: torch.Tensor, wctx: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(wctx, dim=-1, keepdim=True)
        if no_grad_inplace():
            diff = torch.addcdiv(query.unsqueeze(0), wctx, norm.add_(EPS), value=-1.0, out=wctx).square_()
        else:
            diff = (query.unsqueeze(0) - wctx / (norm + EPS)).square()
        return l2norm(self.proj(diff))


class CorrespondenceRegulator(nn.Module):
    """RCR: refines the modulation vector m (G, N, Lq, d) and temperature λ (G, N, Lq, 1) from s."""

    def __init__(self, embed_size: int, sim_dim: int):
        super().__init__()
        self.mlp_m = nn.Sequential(
            nn.Linear(sim_dim, sim_dim * 2), nn.Tanh(), nn.Linear(sim_dim * 2, embed_size)
        )
        self.mlp_lam = nn.Sequential(nn.Linear(sim_dim, sim_dim // 2), nn.Tanh(), nn.Linear(sim_dim // 2, 1))

    def forward(
        self, s: torch.Tensor, m: torch.Tensor | None, lam: torch.Tensor | float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if no_grad_inplace():
            m = self._modulation_inplace(s, m)
        else:
            m = (torch.tanh(self.mlp_m(s)) + (1.0 if m is None else m)).clamp(-1.0, 1.0)
        lam = F.relu(self.mlp_lam(s) + lam)
        return m, lam

    def _modulation_inplace(self, s: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        """clamp(tanh(W2 tanh(W1 s + b1) + b2) + m, -1, 1) with every tanh as 2 σ(2 x) - 1 (evaluation).

        W2 tanh(z) + b2 = 2 W2 σ(2 z) + (b2 - W2 1), so the hidden layer's affine goes into the second
        Linear; the output's 2 σ - 1 is applied in place (for m = 1 it is just min(2 σ, 1)).
        """
        lin1, lin2 = self.mlp_m[0], self.mlp_m[2]
        hidden = tanh_as_sigmoid(lin1, s)  # σ(2 z1)
        out = F.linear(hidden, lin2.weight * 4, (lin2.bias - lin2.weight.sum(dim=1)) * 2).sigmoid_()
        if m is None:  # 2 σ - 1 + 1 lies in (0, 2): only the upper clamp can bite
            return out.mul_(2.0).clamp_(max=1.0)
        return torch.add(m, out, alpha=2.0, out=out).sub_(1.0).clamp_(-1.0, 1.0)


class AggregationRegulator(nn.Module):
    """RAR: one step of attention pooling of s (G, N, Lq, s) guided by the holistic vector h (G, N, s)."""

    def __init__(self, sim_dim: int, dropout: float = 0.4):
        super().__init__()
        self.key = nn.Sequential(nn.Linear(sim_dim, sim_dim), nn.Tanh(), nn.Dropout(dropout))
        self.query = nn.Sequential(nn.Linear(sim_dim, sim_dim), nn.Tanh(), nn.Dropout(dropout))
        self.score = nn.Linear(sim_dim, 1)

    def forward(self, s: torch.Tensor, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if no_grad_inplace() and not self.training:  # dropout is off: the cheaper, equal form below
            wq = self.query(h) * self.score.weight[0]  # (G, N, s): w ⊙ tanh(W_q h + b_q)
            # w · (tanh(z_k) ⊙ q) = 2 (w ⊙ q) · σ(2 z_k) - w · q, one batched product over the tokens
            keys = tanh_as_sigmoid(self.key[0], s)  # (G, N, Lq, s)
            logits = (keys @ wq.unsqueeze(-1)).squeeze(-1).mul_(2.0)
            logits = logits.sub_(wq.sum(-1, keepdim=True)).add_(self.score.bias)
        else:
            logits = self.score(self.key(s) * self.query(h).unsqueeze(-2)).squeeze(-1)  # (G, N, Lq)
        if mask is not None:
            logits = logits.masked_fill(~mask.unsqueeze(0), float("-inf"))
        w = torch.softmax(logits, dim=-1)
        return l2norm((w.unsqueeze(-1) * s).sum(dim=-2))


class SimilarityHead(nn.Module):
    """The four modes of the official ``EncoderSimilarity`` on a block of pairs -> similarity (G, N).

    - baseline / rcr (``only_rcr``, K steps): K x [s = AV_k(q, c; m, λ); (m, λ) = RCR_k(s)], then a final
      attention and the mean over query tokens of cos(q, ĉ).
    - rar (``only_rar``): one AV with m = 1, h = mean(s), K RAR steps, σ(W h).
    - rcar (``coop_rcar``): step j computes s_j with the current (m, λ); h = mean(s_0) at j = 0; RCR for
      j < K-1 (so K-1 RCR updates); h = RAR_j(s_j, h); σ(W h).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.mode, self.steps, self.lam0 = cfg.mode, cfg.resolved_steps(), cfg.resolved_lambda()
        d, s, k = cfg.embed_size, cfg.sim_dim, self.steps
        n_rar, n_rcr, n_av = {
            "baseline": (0, 0, 0),
            "rcr": (0, k, k),
            "rar": (k, 0, 1),
            "rcar": (k, k - 1, k),
        }[cfg.mode]
        self.alignment = nn.ModuleList(AlignmentVector(d, s) for _ in range(n_av))
        self.rcr = nn.ModuleList(CorrespondenceRegulator(d, s) for _ in range(n_rcr))
        self.rar = nn.ModuleList(AggregationRegulator(s, cfg.rar_dropout) for _ in range(n_rar))
        self.out = nn.Linear(s, 1) if cfg.mode in ("rar", "rcar") else None
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                xavier_(mod)

    def forward(
        self,
        query: torch.Tensor,
        context: torch.Tensor,
        query_mask: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """query (N, Lq, d), context (G, Lc, d) -> similarity (G, N)."""
        m, lam = None, self.lam0

        def align(k: int) -> torch.Tensor:  # (G, N, Lq, sim_dim)
            wctx = cross_attention(query, context, m, lam, query_mask, context_mask, normalize=False)
            return self.alignment[k](query, wctx)

        if self.mode in ("baseline", "rcr"):
            for k, rcr in enumerate(self.rcr):
                m, lam = rcr(align(k), m, lam)
            # cos(q, ĉ) does not depend on the scale of ĉ, so the final attention skips its L2 norm
            wctx = cross_attention(query, context, m, lam, query_mask, context_mask, normalize=False)
            norms = torch.linalg.vector_norm(wctx, dim=-1) * torch.linalg.vector_norm(query, dim=-1)
            dots = wctx.mul_(query) if no_grad_inplace() else wctx * query
            cos = dots.sum(-1) / norms.clamp(min=EPS)
            return mean_over_queries(cos, query_mask)  # SCAN AVG over the query tokens, (G, N)
        if self.mode == "rar":
            s = align(0)
            h = mean_over_queries(s, query_mask)  # (G, N, sim_dim), not normalised
            for rar in self.rar:
                h = rar(s, h, query_mask)
        else:  # rcar
            h = None
            for k, rar in enumerate(self.rar):
                s = align(k)
                if k == 0:
                    h = mean_over_queries(s, query_mask)
                if k < self.steps - 1:
                    m, lam = self.rcr[k](s, m, lam)
                h = rar(s, h, query_mask)
        return torch.sigmoid(self.out(h)).squeeze(-1)


# ------------------------------------------------------------------------------------------------- the model
class RCAR(nn.Module):
    """Image encoder + text encoder + similarity head of one direction and mode."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.direction = cfg.direction
        self.img_enc = ImageEncoder(cfg.img_dim, cfg.embed_size)
        self.txt_enc = TextEncoder(vocab_size, cfg.word_dim, cfg.embed_size, cfg.num_layers, cfg.text_dropout)
        self.sim = SimilarityHead(cfg)

    def forward_emb(
        self, images: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, R, D), (B, L), (B,) -> image embeddings (B, R, d), word embeddings (B, L, d)."""
        return self.img_enc(images), self.txt_enc(captions, lengths)

    def pair_sims(
        self, img_embs: torch.Tensor, cap_embs: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Similarity of every image with every caption in one block: (n_img, R, d), (n_cap, L, d) -> (n_img, n_cap).

        Padded words are masked; a block whose captions all have length L needs no mask and gets none.
        """
        lengths = lengths.to(cap_embs.device)
        word_mask = None
        if int(lengths.min()) < cap_embs.shape[1]:
            word_mask = torch.arange(cap_embs.shape[1], device=cap_embs.device)[None, :] < lengths[:, None]
        if self.direction == "t2i":  # queries: words of each caption; context: regions of each image
            return self.sim(cap_embs, img_embs, query_mask=word_mask)
        return self.sim(img_embs, cap_embs, context_mask=word_mask).T  # sim gives (n_cap, n_img)

    def forward(self, images: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """A training batch: similarity (B_img, B_cap) between every image and every caption of the batch."""
        img_embs, cap_embs = self.forward_emb(images, captions, lengths)
        return self.pair_sims(img_embs, cap_embs, lengths)
