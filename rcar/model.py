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
queries (N, Lq, d) are shared by all G, the context is (G, Lc, d), and everything per pair is (G, N, ...)
(the attention map (G, Lc, N, Lq)). The first attention (m = 1) is then a single (G·Lc, d) x (d, N·Lq) GEMM
and later ones one bmm per context owner, instead of thousands of tiny per-caption products. Padded words
carry a mask: padded queries (t2i) are zeroed, so they stay out of the L2 norm over queries; padded context
words (i2t) get a -inf bias before the softmax over context; every mean / RAR softmax over queries skips them.
A training batch is scored in groups of similar caption length (``group_by_length``), each padded to its
own longest. Without autograd (evaluation) the big intermediates are overwritten in place; under autograd
the hottest chains have hand-written backwards (``_L2Norm``, ``_SquaredResidual``).

Deviations from the official code:
- Sims are computed for all (image, caption) pairs of a block with masks instead of a Python loop over
  captions truncated to their length; the result is the same up to rounding (tests compare against that
  loop and against the batch as computed before the training speed-up, in float64 to 1e-12).
- tanh is computed as 2σ(2x) - 1 with its affine folded into the neighbouring layers, and dropout masks
  are drawn as ``rand >= p`` (``nn.Dropout``'s distribution from a cheaper draw).
- The image MLP drops GPO's unused BatchNorm of the output layer (it is created there but never applied).
- The baseline / RCR-only heads do not create the unused final ``Linear(sim_dim, 1)``.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rcar.config import ModelConfig

EPS = 1e-8


class _L2Norm(torch.autograd.Function):
    """y = x / (|x| + eps) along ``dim`` with a hand-written backward (the autograd path of ``l2norm``).

    dy/dx = r (I - y yᵀ (|x| + eps) / |x|) with r = 1 / (|x| + eps), so the input gradient is
    r (g - y (y · g) (|x| + eps) / |x|): three passes over x, where autograd's chain of norm, reciprocal and
    product takes about eight (norm backward alone is a division, a masked fill, a product and a sum), and
    the norms were a sixth of a training step. Checked against autograd by ``torch.autograd.gradcheck``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
        r = (norm + eps).reciprocal_()
        y = x * r
        ctx.save_for_backward(y, norm, r)
        ctx.dim, ctx.eps = dim, eps
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        y, norm, r = ctx.saved_tensors
        # (|x| + eps) / |x|; at x = 0, y = 0 and the term vanishes, the clamp only avoids 0 / 0
        scale = (norm + ctx.eps).div_(norm.clamp_min(ctx.eps))
        coef = (y * g).sum(ctx.dim, keepdim=True).mul_(scale)
        return torch.addcmul(g, y, coef, value=-1.0).mul_(r), None, None


def l2norm(x: torch.Tensor, dim: int = -1, eps: float = EPS, inplace: bool = False) -> torch.Tensor:
    """x / (||x||_2 + eps), the official normalisation (eps outside the square root), in one norm pass.

    In place when ``inplace`` (evaluation); under autograd ``_L2Norm`` with its cheaper backward.
    """
    if inplace:
        return x.div_(torch.linalg.vector_norm(x, dim=dim, keepdim=True).add_(eps))
    if torch.is_grad_enabled() and x.requires_grad:
        return _L2Norm.apply(x, dim, eps)
    return x / (torch.linalg.vector_norm(x, dim=dim, keepdim=True) + eps)


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

    A CPU computes ``sigmoid`` about 5x faster than ``tanh`` (0.46 vs 2.3 ms for a (32, 32, 14, 32) tensor,
    torch 2.14, one thread), and tanh was the largest cost outside the GEMMs in evaluation and 7% of a
    training step; the affine ``2 σ - 1`` is folded into whatever reads the result. Doubling W and b is exact
    in floating point.
    """
    return sigmoid(F.linear(x, linear.weight * 2, linear.bias * 2))


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """σ(x), in place without autograd. Under autograd an in-place op on the (view) output of a Linear
    makes the backward clone and copy the whole tensor (``CopySlices``), so it is out of place there."""
    return x.sigmoid_() if no_grad_inplace() else torch.sigmoid(x)


def dropout_keep(like: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout's factors for a tensor shaped like ``like``: 1 / (1 - p) with probability 1 - p, else 0.

    Drawn as ``rand >= p`` instead of the ``bernoulli_`` of ``nn.Dropout``: the same distribution (every
    element kept independently with probability 1 - p, kept values scaled by 1 / (1 - p)), about 4x cheaper on
    a CPU (2.6 + 0.8 vs 10.5 ms for a (32, 32, 14, 32) tensor, torch 2.14, one thread); dropout masks had
    been 12-16% of a training step.
    """
    if p >= 1.0:
        return torch.zeros_like(like)
    return (torch.rand_like(like) >= p).to(like.dtype).mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose mask comes from ``dropout_keep`` (the same distribution, a cheaper draw)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * dropout_keep(x, self.p)


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

    The attention map is held as (G, Lc, N, Lq), the official (Lc, Lq) order per pair with the query owners
    inside: the m = 1 map is one GEMM straight into that layout, the softmax runs over an outer axis (torch's
    CPU softmax over a short last axis of 12 regions is ~4x slower, 1.0 vs 0.23 ms for 58k entries), and ĉ
    is one bmm per context owner with the map as its transposed operand.
    """
    n, lq, d = query.shape
    g, lc, _ = context.shape
    inplace = no_grad_inplace()
    if query_mask is not None:  # zero padded query words: their logits are then 0 and stay out of the norm
        query = query * query_mask.unsqueeze(-1).to(query.dtype)
    if m is None:  # one GEMM for every pair: (G·Lc, d) x (d, N·Lq)
        attn = (context.reshape(g * lc, d) @ query.reshape(n * lq, d).T).view(g, lc, n, lq)
    else:  # one bmm per context owner: (Lc, d) x (d, N·Lq)
        qm = (query.unsqueeze(0) * m).reshape(g, n * lq, d)
        attn = torch.bmm(context, qm.transpose(1, 2)).view(g, lc, n, lq)
        del qm
    attn = F.leaky_relu(attn, 0.1, inplace=inplace)  # (G, Lc, N, Lq)
    attn = l2norm(attn, dim=-1, inplace=inplace)  # over the queries Lq
    if torch.is_tensor(lam):
        lam = lam.reshape(g, 1, n, lq)
    if context_mask is None:
        attn = attn.mul_(lam) if inplace else attn * lam
    else:  # λ·A + bias in one pass, the bias -inf on padded context words: they get zero attention
        bias = torch.zeros(g, lc, 1, 1, dtype=attn.dtype, device=attn.device)
        bias = bias.masked_fill_(~context_mask[:, :, None, None], float("-inf"))
        if inplace:
            attn = attn.mul_(lam).add_(bias)
        else:
            attn = (
                torch.addcmul(bias, attn, lam) if torch.is_tensor(lam) else torch.add(bias, attn, alpha=lam)
            )
    attn = torch.softmax(attn, dim=1)  # over the context Lc
    wctx = torch.bmm(attn.view(g, lc, n * lq).transpose(1, 2), context).view(g, n, lq, d)
    return l2norm(wctx, inplace=inplace) if normalize else wctx


class _SquaredResidual(torch.autograd.Function):
    """(q - ĉ / (|ĉ| + eps))² for the queries q (N, Lq, d) and every pair's unnormalised ĉ (G, N, Lq, d).

    The autograd path of ``AlignmentVector``. With u = q - ĉ r, r = 1 / (|ĉ| + eps), the gradients are
    2 Σ_G g ⊙ u for q and -2 r (g ⊙ u - ĉ (ĉ · (g ⊙ u)) r / |ĉ|) for ĉ: five passes over the pair tensor,
    where autograd's square, addcmul and norm backwards (and the sum of ĉ's two gradients) take about eleven.
    Checked against autograd by ``torch.autograd.gradcheck``.
    """

    @staticmethod
    def forward(ctx, query: torch.Tensor, wctx: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(wctx, dim=-1, keepdim=True)  # (G, N, Lq, 1)
        r = (norm + EPS).reciprocal_()
        u = torch.addcmul(query.unsqueeze(0), wctx, r, value=-1.0)  # (G, N, Lq, d)
        ctx.save_for_backward(wctx, norm, r, u)
        return u.square()

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        wctx, norm, r, u = ctx.saved_tensors
        gu = g * u  # half the gradient of u
        grad_query = gu.sum(0).mul_(2.0) if ctx.needs_input_grad[0] else None
        grad_wctx = None
        if ctx.needs_input_grad[1]:  # the clamp only avoids 0 / 0 where ĉ = 0 (its term vanishes there)
            coef = (gu * wctx).sum(-1, keepdim=True).mul_(r).div_(norm.clamp_min(EPS))
            grad_wctx = torch.addcmul(gu, wctx, coef, value=-1.0).mul_(r * -2.0)
        return grad_query, grad_wctx


class AlignmentVector(nn.Module):
    """s = l2norm(W (q - ĉ)²): (G, N, Lq, d) -> (G, N, Lq, sim_dim); q is the unmodulated query.

    Takes the attended context *before* its L2 norm (``cross_attention(..., normalize=False)``): without
    autograd, q - ĉ is then formed in one pass (``addcdiv``) in that buffer and squared in place, instead of
    three passes and a new (G, N, Lq, d) tensor; under autograd ``_SquaredResidual`` has a fused backward.
    """

    def __init__(self, embed_size: int, sim_dim: int):
        super().__init__()
        self.proj = nn.Linear(embed_size, sim_dim)

    def forward(self, query: torch.Tensor, wctx: torch.Tensor) -> torch.Tensor:
        if no_grad_inplace():
            norm = torch.linalg.vector_norm(wctx, dim=-1, keepdim=True)
            diff = torch.addcdiv(query.unsqueeze(0), wctx, norm.add_(EPS), value=-1.0, out=wctx).square_()
        else:
            diff = _SquaredResidual.apply(query, wctx)
        return l2norm(self.proj(diff))


class CorrespondenceRegulator(nn.Module):
    """RCR: refines the modulation vector m (G, N, Lq, d) and temperature λ (G, N, Lq, 1) from s.

    Both MLPs run with every tanh as 2 σ(2 x) - 1 (``tanh_as_sigmoid``): W2 tanh(z) + b2 = 2 W2 σ(2 z) +
    (b2 - W2 1), so the hidden layer's affine goes into the second Linear, and the output's 2 σ - 1 into the
    update of m (for m = 1 it is min(2 σ, 1)). Without autograd the big tensors are updated in place.
    """

    def __init__(self, embed_size: int, sim_dim: int):
        super().__init__()
        self.mlp_m = nn.Sequential(
            nn.Linear(sim_dim, sim_dim * 2), nn.Tanh(), nn.Linear(sim_dim * 2, embed_size)
        )
        self.mlp_lam = nn.Sequential(nn.Linear(sim_dim, sim_dim // 2), nn.Tanh(), nn.Linear(sim_dim // 2, 1))

    def forward(
        self, s: torch.Tensor, m: torch.Tensor | None, lam: torch.Tensor | float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inplace = no_grad_inplace()
        lin1, lin2 = self.mlp_m[0], self.mlp_m[2]
        hidden = tanh_as_sigmoid(lin1, s)  # σ(2 z1), (G, N, Lq, 2 sim_dim)
        out = sigmoid(F.linear(hidden, lin2.weight * 4, (lin2.bias - lin2.weight.sum(dim=1)) * 2))  # σ(2 z2)
        if m is None:  # tanh(z2) + 1 = 2 σ(2 z2) lies in (0, 2): only the upper clamp can bite
            m = out.mul_(2.0).clamp_(max=1.0) if inplace else (out * 2.0).clamp(max=1.0)
        elif inplace:
            m = torch.add(m, out, alpha=2.0, out=out).sub_(1.0).clamp_(-1.0, 1.0)
        else:
            m = (torch.add(m, out, alpha=2.0) - 1.0).clamp(-1.0, 1.0)
        lin1, lin2 = self.mlp_lam[0], self.mlp_lam[2]
        z = F.linear(tanh_as_sigmoid(lin1, s), lin2.weight * 2, lin2.bias - lin2.weight.sum(dim=1))
        return m, F.relu(z + lam)  # λ <- ReLU(MLP_λ(s) + λ), (G, N, Lq, 1)


class AggregationRegulator(nn.Module):
    """RAR: one step of attention pooling of s (G, N, Lq, s) guided by the holistic vector h (G, N, s).

    The logits w · (Drop(tanh(z_k)) ⊙ q) + b, with z_k = W_k s + b_k and q = Drop(tanh(W_q h + b_q)), are one
    batched product over the sim axis instead of an elementwise product and a Linear(s, 1), with tanh(z_k) =
    2 σ(2 z_k) - 1 (``tanh_as_sigmoid``): without dropout the affine goes into the product,
    w · (tanh(z_k) ⊙ q) = 2 (w ⊙ q) · σ(2 z_k) - w · q; with it, Drop(tanh(z_k)) = keep ⊙ (2 σ - 1) is one
    ``addcmul``. ``key`` keeps the official Linear, Tanh, Dropout layout; its Tanh and Dropout are applied
    in that fused form.
    """

    def __init__(self, sim_dim: int, dropout: float = 0.4):
        super().__init__()
        self.key = nn.Sequential(nn.Linear(sim_dim, sim_dim), nn.Tanh(), Dropout(dropout))
        self.query = nn.Sequential(nn.Linear(sim_dim, sim_dim), nn.Tanh(), Dropout(dropout))
        self.score = nn.Linear(sim_dim, 1)

    def forward(self, s: torch.Tensor, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # products over the sim axis as multiply-and-sum: per pair they are (Lq, s) x (s,) products, and
        # 1,000s of such tiny matrices in a bmm cost ~3x more (forward and backward) on a CPU
        wq = (self.query(h) * self.score.weight[0]).unsqueeze(-2)  # (G, N, 1, s): w ⊙ q
        keys = tanh_as_sigmoid(self.key[0], s)  # (G, N, Lq, s): σ(2 z_k)
        p = self.key[2].p
        if self.training and p > 0:
            keep = dropout_keep(keys, p)
            keys = torch.addcmul(keep.neg(), keys, keep, value=2.0)  # Drop(tanh(z_k))
            logits = (keys * wq).sum(-1)  # (G, N, Lq)
        else:
            logits = (keys * wq).sum(-1).mul_(2.0).sub_(wq.sum(-1))
        logits = logits.add_(self.score.bias)
        if mask is not None:
            logits = logits.masked_fill(~mask.unsqueeze(0), float("-inf"))
        w = torch.softmax(logits, dim=-1)  # over the query tokens
        return l2norm((w.unsqueeze(-1) * s).sum(dim=-2))  # Σ_t w_t s_t, (G, N, s)


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
def group_by_length(lengths: torch.Tensor, max_groups: int) -> list[tuple[torch.Tensor, int]]:
    """Captions in at most ``max_groups`` groups of similar length: [(indices, padded width)], together all.

    The groups are runs of the length-sorted batch whose split points minimise the padded tokens
    Σ_g n_g · L_g (a dynamic programme over the distinct lengths), since the per-pair work of a block grows
    with its padded width. On the embedded set a batch of 32 captions of 7-27 tokens pads to ~22 tokens as
    one group and to ~15 as four.
    """
    lengths = lengths.cpu()
    order = torch.argsort(lengths, stable=True)
    values, counts = torch.unique_consecutive(lengths[order], return_counts=True)
    widths = values.tolist()
    starts = [0, *counts.cumsum(0).tolist()]  # distinct length i occupies order[starts[i] : starts[i + 1]]
    m, k = len(widths), max(1, min(max_groups, len(widths)))
    # best[g][i]: fewest padded tokens for the first i distinct lengths in g groups; cut[g][i]: where the
    # last of those groups starts
    best = [[0.0] + [float("inf")] * m] + [[float("inf")] * (m + 1) for _ in range(k)]
    cut = [[0] * (m + 1) for _ in range(k + 1)]
    for g in range(1, k + 1):
        for i in range(g, m + 1):
            for a in range(g - 1, i):  # the last group: distinct lengths a .. i-1, padded to widths[i - 1]
                cost = best[g - 1][a] + (starts[i] - starts[a]) * widths[i - 1]
                if cost < best[g][i]:
                    best[g][i], cut[g][i] = cost, a
    g = min(range(1, k + 1), key=lambda n: best[n][m])
    bounds = [m]
    while g > 0:
        bounds.append(cut[g][bounds[-1]])
        g -= 1
    bounds.reverse()  # [0, ..., m]
    return [(order[starts[a] : starts[b]], widths[b - 1]) for a, b in itertools.pairwise(bounds)]


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

    def forward(
        self, images: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor, length_groups: int = 1
    ) -> torch.Tensor:
        """A training batch: similarity (B_img, B_cap) between every image and every caption of the batch.

        With ``length_groups`` > 1 the captions are scored in that many groups of similar length
        (``group_by_length``), each padded only to its own longest caption; scores are per pair, so only
        the padded work changes.
        """
        img_embs, cap_embs = self.forward_emb(images, captions, lengths)
        groups = group_by_length(lengths, length_groups)
        if len(groups) == 1:
            return self.pair_sims(img_embs, cap_embs, lengths)
        parts = [self.pair_sims(img_embs, cap_embs[idx, :width], lengths[idx]) for idx, width in groups]
        order = torch.cat([idx for idx, _ in groups])  # column j of the parts is caption order[j]
        return torch.cat(parts, dim=1)[:, torch.argsort(order)]  # (B_img, B_cap)
