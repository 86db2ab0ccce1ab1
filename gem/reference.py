"""Slow, obviously correct versions of GEM's fast paths; the tests check each fast path against them.

- ``reference_select_paths``   the threshold rule token by token in Python (sorted list, running sum).
- ``reference_router_probs``   the SCAR / linear router written out slot by slot.
- ``reference_routed_ffn``     every expert on every token, combined with a dense (N, E) gate matrix: the
                               dense loop over experts that the sparse dispatch (gather / index_add_) must equal.
- ``reference_balance_loss``   L_bal from per-token Python sets.
- ``reference_attention``      causal attention head by head with an explicit -inf mask and RoPE as a
                               complex rotation (an independent form of the "rotate half" code), no cache.
- ``reference_forward``        the whole LM from the pieces above (logits of every position, no cache).
- ``reference_pearson`` / ``reference_spearman`` / ``reference_specialisation_rows``  the metrics by loops.

Everything runs in the dtype of the model (use float64 in tests).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from gem.layers import CausalSelfAttention
from gem.model import GemLM
from gem.router import CrossAttentionRouter, LinearRouter, RoutedFFN

# --------------------------------------------------------------------------------------------- routing


def reference_select_paths(
    probs: torch.Tensor, threshold: float, k_min: int, k_max: int
) -> list[list[tuple[int, float]]]:
    """Per token: [(expert, renormalised weight), ...] by decreasing probability."""
    out = []
    for row in probs.tolist():
        order = sorted(range(len(row)), key=lambda e: (-row[e], e))  # ties: lower id first
        k, mass = 0, 0.0
        while k < len(row):
            mass += row[order[k]]
            k += 1
            if mass >= threshold:
                break
        k = min(max(k, k_min), k_max)
        chosen = order[:k]
        norm = sum(row[e] for e in chosen)
        out.append([(e, row[e] / norm) for e in chosen])
    return out


def reference_router_probs(router: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """h (N, C) -> router probabilities (N, E), written out slot by slot."""
    if isinstance(router, LinearRouter):
        z = h @ router.gate.weight.T  # (N, E)
        return torch.exp(z - z.max(-1, keepdim=True).values) / torch.exp(
            z - z.max(-1, keepdim=True).values
        ).sum(-1, keepdim=True)
    assert isinstance(router, CrossAttentionRouter)
    q = h @ router.query.weight.T  # (N, d_r)
    n_slots, d_r = router.slots.shape
    values = [torch.exp(u) / torch.exp(u).sum() for u in router.slot_paths]  # v_r, each (E,)
    probs = []
    for t in range(h.shape[0]):
        scores = [float(q[t] @ router.slots[r]) / math.sqrt(d_r) for r in range(n_slots)]
        top = max(scores)
        att = [math.exp(s - top) for s in scores]
        total = sum(att)
        probs.append(sum((att[r] / total) * values[r] for r in range(n_slots)))
    return torch.stack(probs)


def reference_routed_ffn(ffn: RoutedFFN, h: torch.Tensor) -> torch.Tensor:
    """h (B, T, C) -> (B, T, C): all experts on all tokens, weighted by a dense gate matrix."""
    B, T, C = h.shape
    x = h.reshape(B * T, C)
    probs = reference_router_probs(ffn.router, x)
    gate = torch.zeros(B * T, ffn.n_experts, dtype=x.dtype)  # (N, E), zero for unused paths
    for t, chosen in enumerate(reference_select_paths(probs, ffn.threshold, ffn.k_min, ffn.k_max)):
        for e, w in chosen:
            gate[t, e] = w
    y = torch.zeros_like(x)
    for e, expert in enumerate(ffn.experts):
        y = y + gate[:, e : e + 1] * expert(x)
    return y.view(B, T, C)


def reference_balance_loss(
    probs: torch.Tensor, chosen: Sequence[Sequence[int]], token_mask: Sequence[bool] | None = None
) -> float:
    """E * sum_e f_e P_e with f_e = (# real assignments to e) / (# real assignments)."""
    n, n_exp = probs.shape
    keep = [True] * n if token_mask is None else list(token_mask)
    assignments = [e for t in range(n) if keep[t] for e in chosen[t]]
    n_real = sum(keep)
    total = 0.0
    for e in range(n_exp):
        f = assignments.count(e) / len(assignments)
        p = sum(float(probs[t, e]) for t in range(n) if keep[t]) / n_real
        total += f * p
    return n_exp * total


# ------------------------------------------------------------------------------------------- attention


def _rope_complex(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """x (T, D): channel pair (i, i + D/2) as the complex number x_i + j x_{i+D/2}, times e^{j p theta_i}."""
    D = x.shape[-1]
    theta = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)  # (D/2,)
    rot = torch.polar(torch.ones_like(theta), positions.double()[:, None] * theta[None, :])  # (T, D/2)
    z = torch.complex(x[:, : D // 2].double(), x[:, D // 2 :].double()) * rot
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


def reference_attention(attn: CausalSelfAttention, x: torch.Tensor, rope_base: float) -> torch.Tensor:
    """x (B, T, C) -> (B, T, C), positions 0..T-1, one head and one sequence at a time."""
    B, T, C = x.shape
    H, D = attn.n_heads, attn.head_dim
    wq, wk, wv = attn.qkv.weight.split(C, dim=0)
    pos = torch.arange(T)
    out = torch.zeros_like(x)
    for b in range(B):
        heads = []
        for h in range(H):
            rows = slice(h * D, (h + 1) * D)
            q = _rope_complex(x[b] @ wq[rows].T, pos, rope_base)  # (T, D)
            k = _rope_complex(x[b] @ wk[rows].T, pos, rope_base)
            v = x[b] @ wv[rows].T
            scores = q @ k.T / math.sqrt(D)  # (T, T)
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            heads.append(scores.softmax(-1) @ v)
        out[b] = torch.cat(heads, dim=-1) @ attn.proj.weight.T
    return out


def reference_forward(model: GemLM, idx: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) of the whole LM from the reference pieces (eval mode, no cache)."""
    x = model.tok_emb.weight[idx]
    for block in model.blocks:
        x = x + reference_attention(block.attn, block.norm1(x), model.cfg.rope_base)
        h = block.norm2(x)
        x = x + (
            reference_routed_ffn(block.ffn, h) if block.routed else block.ffn.proj(F.gelu(block.ffn.fc(h)))
        )
    return model.norm_f(x) @ model.tok_emb.weight.T


# --------------------------------------------------------------------------------------------- metrics


def reference_pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


def _average_ranks(values: Sequence[float]) -> list[float]:
    ranks = []
    for v in values:
        below = sum(1 for w in values if w < v)
        equal = sum(1 for w in values if w == v)
        ranks.append(below + (equal + 1) / 2)  # 1-based, ties share the mean of their positions
    return ranks


def reference_spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return reference_pearson(_average_ranks(x), _average_ranks(y))


def reference_specialisation_rows(
    f1: Mapping[str, Mapping[str, float]], generalist: str, targets: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """DSI (F1), GG, CDTR and forgetting (F1) of every specialist, by explicit loops over domains."""
    gen = f1[generalist]
    rows = {}
    for model, t in targets.items():
        spec = f1[model]
        others = [d for d in spec if d != t]
        d_on = spec[t] - gen[t]
        d_off = [spec[d] - gen[d] for d in others]
        rows[model] = {
            "dsi_f1": d_on / gen[t],
            "gg": spec[t] - sum(spec[d] for d in others) / len(others),
            "cdtr": (sum(d_off) / len(d_off)) / d_on,
            "forgetting_f1": sum(gen[d] - spec[d] for d in others) / len(others),
        }
    return rows
