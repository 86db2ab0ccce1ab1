"""SCAR, the Sparse Cross-Attention Router, and the softmax top-k MoE ablation (our definitions).

The paper (arXiv 2503.22698) says only that SCAR "dynamically allocate[s] computation to a variable number of
computing resources"; the authors' code has a masked self-attention called SCAR that routes nothing. The
definitions here are ours (written out with every equation in the package README, "Definitions (ours)"):

Router probabilities for token t with normalised hidden state h_t (the FFN's input):

- SCAR (``CrossAttentionRouter``): cross-attention from the token (query) to R learned slot vectors m_r
  ("domain/expert vectors", the keys); slot r's value is a distribution over the E paths, v_r = softmax(u_r):
      s_t = (W_q h_t) M^T / sqrt(d_r)          (R logits; the z-loss input)
      a_t = softmax(s_t)                        (attention over slots)
      p_t = sum_r a_{t,r} v_r                   (a convex combination of distributions: sums to 1)
- MoE (``LinearRouter``): z_t = W_r h_t, p_t = softmax(z_t) (Switch / Mixtral).

Path selection (``select_paths``): sort p_t decreasingly, p_(1) >= ... >= p_(E);
      k_t = clip(min{k : p_(1) + ... + p_(k) >= tau}, k_min, k_max)     (SCAR: variable k)
      k_t = k                                                           (MoE: k_min = k_max = k)
and the FFN output is y_t = sum_{j <= k_t} w_{t,j} FFN_{e_(j)}(h_t), w_{t,j} = p_(j) / sum_{i <= k_t} p_(i).

Auxiliary losses (over the real tokens of the batch, mask m_t):
      f_e = sum_t m_t [e in S_t] / sum_t m_t k_t     (share of the active assignments that go to e)
      P_e = sum_t m_t p_{t,e} / sum_t m_t
      L_bal = E * sum_e f_e P_e                       (1 when routing is uniform; Switch eq. 4 for k = 1)
      L_z = sum_t m_t (logsumexp_j s_{t,j})^2 / sum_t m_t     (ST-MoE router z-loss, arXiv 2202.08906)
HF Mixtral's ``load_balancing_loss_func`` normalises f per top-k rank, so for a fixed k its value is k x ours.

Dispatch (``RoutedFFN``): the tokens routed to each expert are gathered, the expert runs on those tokens only,
and the weighted results are scattered back with ``index_add_`` (HF Mixtral's ``MixtralSparseMoeBlock``). Two
forms of the same computation, both tested equal to the dense loop over experts of gem/reference.py:

- eager (``_dispatch_sorted``, megablocks' "sort the assignments by expert" layout): the (token, path)
  assignments are sorted by path once, the routed rows gathered with one ``index_select``, each path runs on
  its contiguous segment (a view), and one ``index_add_`` scatters the weighted results back. About 25 kernel
  launches per layer instead of ~11 per path: at batch 1 the launches, not the FLOPs, are what a small
  layer's dispatch costs.
- export (``_dispatch_per_path``): per path a NonZero of its tokens, a GatherND of their rows, the path's
  MatMuls and a ScatterND-add; no data-dependent Python control flow, so ``torch.onnx.export(dynamo=True)``
  keeps it sparse (gem/export.py), while the sorted form's data-dependent segment sizes do not export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gem.config import ModelConfig
from gem.layers import ExpertBank

FEW_TOKENS = 4  # at most this many rows (a decoding step at batch <= 4): RoutedFFN._dispatch_few


@dataclass
class Routing:
    """What one routed layer decided for its N = B * T tokens (rows follow ``h.reshape(N, C)``).

    Attributes:
        probs: (N, E) router probabilities p_t
        logits: (N, R) SCAR slot logits s_t, or (N, E) MoE logits z_t (the z-loss input)
        experts: (N, k_max) long path ids by decreasing probability
        weights: (N, k_max) renormalised probabilities, 0 beyond rank k_t
        k: (N,) long number of active paths k_t
        token_mask: (N,) bool real (not padding) tokens; None = all

    ``balance_loss()`` and ``z_loss()`` compute this layer's auxiliary losses on demand, so inference and
    generation do not pay for them.
    """

    probs: torch.Tensor
    logits: torch.Tensor
    experts: torch.Tensor
    weights: torch.Tensor
    k: torch.Tensor
    token_mask: torch.Tensor | None

    def active(self) -> torch.Tensor:
        """(N, k_max) bool: which ranks are used."""
        return torch.arange(self.experts.shape[1], device=self.k.device)[None, :] < self.k[:, None]

    def balance_loss(self) -> torch.Tensor:
        """() L_bal of this layer over its real tokens."""
        return load_balancing_loss(self.probs, self.experts, self.k, self.token_mask)

    def z_loss(self) -> torch.Tensor:
        """() L_z of this layer over its real tokens."""
        return router_z_loss(self.logits, self.token_mask)

    def mean_k(self) -> float:
        """Mean number of active paths per real token."""
        k = self.k.double()
        if self.token_mask is None:
            return float(k.mean())
        m = self.token_mask.double()
        return float((k * m).sum() / m.sum().clamp(min=1))


def _routing_precision(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (as HF Mixtral's router softmax): under bf16 autocast the threshold rule would
    otherwise compare sums of 8-bit-mantissa probabilities with tau."""
    if x.dtype in (torch.float32, torch.float64):
        return x  # already: skip the (no-op) cast call, one of many small calls a batch-1 forward pays for
    return x.to(torch.promote_types(x.dtype, torch.float32))


class CrossAttentionRouter(nn.Module):
    """SCAR router: p_t = softmax(W_q h_t M^T / sqrt(d_r)) softmax(U); returns (p (N, E), s (N, R))."""

    def __init__(self, d_model: int, n_slots: int, router_dim: int, n_experts: int):
        super().__init__()
        self.query = nn.Linear(d_model, router_dim, bias=False)  # W_q
        self.slots = nn.Parameter(torch.empty(n_slots, router_dim))  # M: keys, one per domain/expert slot
        self.slot_paths = nn.Parameter(torch.empty(n_slots, n_experts))  # U: value logits, v_r = softmax(u_r)
        self.scale = 1.0 / math.sqrt(router_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Unit-variance queries and keys give attention logits of order 1, so routing is not uniform at
        # initialisation (a uniform p would select k_max paths for every token and give the slots no signal).
        nn.init.normal_(self.query.weight, std=self.query.in_features**-0.5)
        nn.init.normal_(self.slots, std=1.0)
        # Slot r starts by preferring path r mod E (softmax puts e^2 / (e^2 + E - 1) on it); a zero U would
        # make every v_r equal, so p would not depend on the attention and W_q, M would get no gradient.
        with torch.no_grad():
            self.slot_paths.zero_()
            r = torch.arange(self.slot_paths.shape[0])
            self.slot_paths[r, r % self.slot_paths.shape[1]] = 2.0

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = _routing_precision(self.query(h) @ self.slots.T * self.scale)  # (N, R)
        values = _routing_precision(self.slot_paths).softmax(-1)  # (R, E) v_r
        # sum_r a_r v_r as a broadcast product: a matmul would run in half precision under autocast
        probs = (s.softmax(-1)[:, :, None] * values[None]).sum(1)  # (N, R, E) -> (N, E)
        return probs, s


class LinearRouter(nn.Module):
    """Softmax router of the top-k MoE ablation: p_t = softmax(W_r h_t); returns (p (N, E), z (N, E))."""

    def __init__(self, d_model: int, n_experts: int):
        super().__init__()
        self.gate = nn.Linear(d_model, n_experts, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.gate.weight, std=self.gate.in_features**-0.5)  # the SCAR router's logit scale

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = _routing_precision(self.gate(h))  # (N, E)
        return z.softmax(-1), z


def select_paths(
    probs: torch.Tensor, threshold: float, k_min: int, k_max: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Threshold rule: the fewest paths whose probability mass reaches ``threshold``, clipped to [k_min, k_max].

    probs (N, E) -> experts (N, k_max) long by decreasing probability, weights
    (N, k_max) renormalised over the active ranks and 0 elsewhere, k (N,) long. k_min = k_max is top-k
    (the threshold is then irrelevant); one code path for both keeps SCAR and the MoE ablation identical
    apart from the router and k.
    """
    experts, weights, k, _ = _select_paths(probs, threshold, k_min, k_max)
    return experts, weights, k


def _select_paths(
    probs: torch.Tensor, threshold: float, k_min: int, k_max: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``select_paths`` and the (N, k_max) bool mask of the active ranks, which the dispatch needs too."""
    # topk over all E is a full descending sort that exports to ONNX TopK (a stable sort does not export);
    # exact ties between float probabilities are broken by topk's implementation.
    sorted_p, order = probs.topk(probs.shape[-1], dim=-1)  # (N, E)
    mass = sorted_p.cumsum(-1)
    # min{k : mass_k >= tau} = 1 + #{k < E : mass_k < tau}; counting the first E - 1 prefixes keeps k <= E
    # even when rounding leaves the total mass a hair below tau = 1.
    k = (1 + (mass[:, :-1] < threshold).sum(-1)).clamp(k_min, k_max)  # (N,)
    top_p, top_e = sorted_p[:, :k_max], order[:, :k_max]
    active = torch.arange(k_max, device=probs.device)[None, :] < k[:, None]  # (N, k_max)
    top_p = top_p * active  # probabilities are finite: exactly the where(active, p, 0) of the definition
    return top_e, top_p / top_p.sum(-1, keepdim=True), k, active


def load_balancing_loss(
    probs: torch.Tensor, experts: torch.Tensor, k: torch.Tensor, token_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """L_bal = E * sum_e f_e P_e over the active assignments of the real tokens (module docstring)."""
    n, e = probs.shape
    m = (
        torch.ones(n, dtype=probs.dtype, device=probs.device)
        if token_mask is None
        else token_mask.to(probs.dtype)
    )
    active = (torch.arange(experts.shape[1], device=k.device)[None, :] < k[:, None]).to(
        probs.dtype
    )  # (N, k_max)
    assigned = (F.one_hot(experts, e).to(probs.dtype) * active[..., None]).sum(1)  # (N, E) 0/1
    f = (m[:, None] * assigned).sum(0) / (m * k.to(probs.dtype)).sum().clamp(min=1)  # (E,)
    p_mean = (m[:, None] * probs).sum(0) / m.sum().clamp(min=1)  # (E,)
    return e * (f * p_mean).sum()


def router_z_loss(logits: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_z = mean over real tokens of logsumexp(logits)^2 (ST-MoE, arXiv 2202.08906, eq. 5)."""
    z2 = logits.logsumexp(-1).square()  # (N,)
    if token_mask is None:
        return z2.mean()
    m = token_mask.to(z2.dtype)
    return (z2 * m).sum() / m.sum().clamp(min=1)


class RoutedFFN(nn.Module):
    """E expert FFN paths behind a SCAR or linear top-k router; tokens are dispatched sparsely."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_experts = cfg.n_experts
        self.k_min, self.k_max = cfg.k_bounds
        self.threshold = cfg.scar_threshold if cfg.ffn == "scar" else 1.0
        if cfg.ffn == "scar":
            self.router: nn.Module = CrossAttentionRouter(
                cfg.d_model, cfg.router_slots, cfg.router_dim, cfg.n_experts
            )
        else:
            self.router = LinearRouter(cfg.d_model, cfg.n_experts)
        self.experts = ExpertBank(cfg.n_experts, cfg.d_model, cfg.d_ff, cfg.dropout)

    def forward(
        self, h: torch.Tensor, token_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Routing]:
        """h (B, T, C) -> y (B, T, C) and the layer's ``Routing``; ``token_mask`` (B, T) bool marks real tokens."""
        B, T, C = h.shape
        x = h.reshape(B * T, C)  # (N, C)
        mask = None if token_mask is None else token_mask.reshape(B * T)
        probs, logits = self.router(x)  # (N, E), (N, R | E)
        # experts, weights (N, k_max) and k (N,)
        experts, weights, k, active = _select_paths(probs, self.threshold, self.k_min, self.k_max)
        if torch.compiler.is_exporting():
            dispatch = self._dispatch_per_path
        elif x.shape[0] <= FEW_TOKENS:
            dispatch = self._dispatch_few
        else:
            dispatch = self._dispatch_sorted
        y = dispatch(x, experts, weights, active)
        return y.view(B, T, C), Routing(probs, logits, experts, weights, k, mask)

    def _dispatch_sorted(
        self, x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor, active: torch.Tensor
    ) -> torch.Tensor:
        """x (N, C) -> sum over each token's active ranks of weight * FFN_path(x_token), (N, C)."""
        n_exp, k_max = self.n_experts, experts.shape[1]
        # Inactive ranks get the sentinel path E, which sorts last and is dropped.
        flat = torch.where(active, experts, n_exp).view(-1)  # (N * k_max,)
        sorted_path, order = (
            flat.sort()
        )  # the order inside a path's segment does not matter (index_add_ sums)
        counts = torch.bincount(sorted_path, minlength=n_exp + 1).tolist()  # on CPU a cheap host read
        order = order[: flat.numel() - counts[n_exp]]  # (A,) active assignments, grouped by path
        token = order.div(k_max, rounding_mode="floor")  # (A,) row of each assignment
        rows = x.index_select(0, token)  # (A, C): every routed row, gathered once
        segments = rows.split(counts[:n_exp])
        # path e on its rows only; a path that no token chose does not run at all
        outs = [expert(seg) for expert, seg, n in zip(self.experts, segments, counts) if n]
        out = torch.cat(outs) * weights.reshape(-1).index_select(0, order)[:, None]  # (A, C)
        if out.dtype != x.dtype:  # autocast may have run the experts in half precision
            out = out.to(x.dtype)
        return torch.zeros_like(x).index_add_(0, token, out)

    def _dispatch_few(
        self, x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor, active: torch.Tensor
    ) -> torch.Tensor:
        """``_dispatch_sorted`` for a handful of tokens (a decoding step): the chosen paths are read on the host
        and each runs on its token's row, about 5 kernel launches per (token, path) instead of ~25 per layer."""
        rows = []
        for t, row_paths in enumerate(torch.where(active, experts, -1).tolist()):
            acc = None
            for j, e in enumerate(row_paths):
                if e < 0:
                    break  # inactive ranks come last
                out = self.experts[e](x[t : t + 1]) * weights[t, j]  # (1, C); the weight keeps its gradient
                acc = out if acc is None else acc + out
            rows.append(acc.to(x.dtype))
        return torch.cat(rows)

    def _dispatch_per_path(
        self, x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor, active: torch.Tensor
    ) -> torch.Tensor:
        """``_dispatch_sorted`` with one NonZero / gather / scatter per path: the form ONNX export keeps sparse."""
        n, n_exp = x.shape[0], self.n_experts
        # (N, E) weight of path e for token t (0 where unused) and whether t uses e: one scatter each, so a
        # path needs one NonZero and two row gathers (topk's path ids in a row are distinct: no collisions)
        gate = torch.zeros(n, n_exp, dtype=weights.dtype, device=x.device).scatter(1, experts, weights)
        assigned = torch.zeros(n, n_exp, dtype=torch.bool, device=x.device).scatter(1, experts, active)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token = torch.nonzero(assigned[:, e], as_tuple=True)[0]  # the tokens sent to path e
            out = expert(x[token]) * gate[:, e : e + 1][token]  # (n_e, C): path e on its tokens only
            y.index_add_(0, token, out.to(y.dtype))
        return y

    def router_params(self) -> int:
        return sum(p.numel() for p in self.router.parameters())
