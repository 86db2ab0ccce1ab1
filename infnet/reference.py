"""Slow, obviously correct versions of INFNet's fast paths; the tests compare the fast paths with them.

Each function loops over samples (and heads, behaviours, keys) and uses only the real, unpadded items, so
masking, padding and broadcasting cannot be wrong in the same way in both versions. They reuse the weights
of the module they check (``ca.w_q``, ``pgu.gate``, ...), so an equality means the same function.

- ``cross_attention``: CA(Q, K, V) = softmax(Q W_Q (K W_K)^T / sqrt(d_k)) V W_V per sample and head over the
  real keys (arXiv 2508.11565v1 §3, heterogeneous flow); no real key -> zeros. Fast path:
  ``model.fused_cross_attention`` (from the query side, the CAs over one key set together).
- ``cross_attention_sdpa``: the same as one masked ``scaled_dot_product_attention`` on projected keys, and
  ``infnet_block`` / ``infnet_forward``: INFNet's block and forward with one such call per CA and phi_seq
  applied to every sequence token (the implementation before the fused fast path, kept unchanged so the
  tests show the fast path computes the same function).
- ``masked_mean``: the w/o-cross-attention stand-in (Table 3), the mean of the real keys.
- ``sequence_proxies``: S~_a = sum_t phi_seq(s_{a,t}) over behaviour a's real items (or their mean), and
  the k attention-pooled proxies. Fast path: ``model.SequenceProxies``.
- ``proxy_gated_unit``: PGU(X, X~) = X * sigmoid(MLP(Flatten(X~))) token by token (§3, homogeneous flow).
- ``hstu_layer``: an HSTU layer (pointwise SiLU attention / n real keys, U-gating) per sample and head over
  the real keys. Fast path: ``baselines.HSTULayer``.
- ``dcnv2_task_inputs``, ``mmoe_task_inputs``: DCNv2's cross formula x_{l+1} = x_0 * (W x_l + b) + x_l and
  MMoE's gate-weighted expert sum, written out.
- ``history``: a row's behaviour history by scanning every row (same user, strictly earlier time, most
  recent first). Fast path: ``data.HistorySequence`` (pointers into one sorted event array).
- ``list_field``: a multi-valued string column ("12,65") -> padded ids in a vocabulary of sorted tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from infnet.baselines import DCNv2, HSTULayer, MMoE
from infnet.model import (
    CrossAttention,
    INFNet,
    InfnetBlock,
    ProxyGatedUnit,
    SequenceProxies,
)


def cross_attention(
    ca: CrossAttention, q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """(B, n_q, d) queries, (B, n_k, d) keys, (B, n_k) mask -> (B, n_q, d), one sample and head at a time."""
    B, n_q, d = q.shape
    h, dk = ca.h, d // ca.h
    out = torch.zeros(B, n_q, d, dtype=q.dtype)
    for b in range(B):
        keys = kv[b][mask[b]] if mask is not None else kv[b]  # (n_real, d)
        if keys.shape[0] == 0:
            continue
        Q, K, V = ca.w_q(q[b]), ca.w_k(keys), ca.w_v(keys)
        heads = []
        for i in range(h):
            sl = slice(i * dk, (i + 1) * dk)
            att = torch.softmax(Q[:, sl] @ K[:, sl].T / math.sqrt(dk), dim=-1)  # (n_q, n_real)
            heads.append(att @ V[:, sl])
        out[b] = ca.w_o(torch.cat(heads, dim=-1))
    return out


def cross_attention_sdpa(
    ca: CrossAttention, q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """CA(Q, K, V=K): project every key and value, one masked ``scaled_dot_product_attention``."""
    B, n_q, d = q.shape
    n_k = kv.shape[1]
    Q = ca.w_q(q).view(B, n_q, ca.h, -1).transpose(1, 2)  # (B, h, n_q, d_k)
    K = ca.w_k(kv).view(B, n_k, ca.h, -1).transpose(1, 2)  # (B, h, n_k, d_k)
    V = ca.w_v(kv).view(B, n_k, ca.h, -1).transpose(1, 2)  # (B, h, n_k, d_k)
    attn_mask = None
    if mask is not None:
        has_key = mask.any(dim=1)  # (B,)
        attn_mask = (mask | ~has_key.unsqueeze(1))[:, None, None, :]  # (B, 1, 1, n_k)
    out = F.scaled_dot_product_attention(
        Q, K, V, attn_mask=attn_mask, dropout_p=ca.dropout if ca.training else 0.0
    )  # (B, h, n_q, d_k)
    out = ca.w_o(out.transpose(1, 2).reshape(B, n_q, d))  # (B, n_q, d)
    if mask is not None:
        out = out * has_key.view(B, 1, 1).to(out.dtype)
    return out


def infnet_block(
    block: InfnetBlock,
    C: torch.Tensor,
    S: torch.Tensor,
    s_mask: torch.Tensor,
    T: torch.Tensor | None,
    Cp: torch.Tensor | None,
    Sp: torch.Tensor | None,
    Tp: torch.Tensor | None,
) -> tuple[torch.Tensor | None, ...]:
    """``InfnetBlock.forward`` with one ``cross_attention_sdpa`` per CA, in the order of the equations."""
    plan, res, n = block.plan, block.cfg.residual, block._norm
    late = block.cfg.gate_uses == "layer_l_plus_1"

    def ca(pair: str, q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if block.cfg.use_cross_attention:
            return cross_attention_sdpa(block.cross[pair], q, kv, mask)
        return masked_mean(kv, mask, q.shape[1])

    c, s = n("C", C), n("S", S)
    t = n("T", T) if T is not None else None
    Cp1 = Sp1 = Tp1 = T1 = None
    if plan.update_cat_seq_proxies:
        cp, sp = n("Cp", Cp), n("Sp", Sp)
        Cp1 = ca("cp_s", cp, s, s_mask)
        Sp1 = ca("sp_c", sp, c, None)
        if t is not None:
            Cp1 = Cp1 + ca("cp_t", cp, t, None)
            Sp1 = Sp1 + ca("sp_t", sp, t, None)
        Cp1, Sp1 = (Cp + Cp1, Sp + Sp1) if res else (Cp1, Sp1)
    if plan.update_shared:
        tp = n("Tp", Tp)
        Tp1 = ca("tp_c", tp, c, None) + ca("tp_s", tp, s, s_mask)
        Tp1 = Tp + Tp1 if res else Tp1
    if t is not None:
        T1 = ca("t_c", t, c, None) + ca("t_s", t, s, s_mask)
        T1 = T + T1 if res else T1
    C1, S1 = (C, S) if not block.cfg.use_pgu else (None, None)
    if plan.gate_cat_seq:
        C1 = block.pgu_cat(C, Cp1 if late else Cp)
        S1 = block.pgu_seq(S, Sp1 if late else Sp)
    if block.cfg.use_pgu and T1 is not None:
        T1 = block.pgu_task(T1, Tp1 if late else Tp)
    return C1, S1, T1, Cp1, Sp1, Tp1


def _sequence_proxies_per_token(
    sp: SequenceProxies, S: list[torch.Tensor], masks: list[torch.Tensor]
) -> torch.Tensor:
    """``SequenceProxies`` with phi_seq applied to every token before pooling (batched, not per sample)."""
    if sp.mode != "per_behaviour":
        return sp(S, masks)
    proxies = []
    for S_a, mask in zip(S, masks):
        m = mask.unsqueeze(-1).to(S_a.dtype)  # (B, n_a, 1)
        pooled = (sp.phi_seq(S_a) * m).sum(1)  # (B, d)
        proxies.append(pooled / m.sum(1).clamp(min=1) if sp.pool == "mean" else pooled)
    return torch.stack(proxies, dim=1)


def infnet_forward(model: INFNet, batch: dict) -> torch.Tensor:
    """``INFNet.forward`` through ``infnet_block`` and per-token phi_seq: logits (B, N_task)."""
    C, S_list, masks = model.embedding(batch["cat"], batch["seq"])
    B = C.shape[0]
    Cp = Sp = Tp = T = None
    if model.use_cat_seq_proxies:
        Cp = model.cat_proxies(C)
        Sp = _sequence_proxies_per_token(model.seq_proxies, S_list, masks)
    S, s_mask = torch.cat(S_list, dim=1), torch.cat(masks, dim=1)
    if model.use_shared:
        Tp = model.shared_task_tokens.expand(B, -1, -1)
    if model.cfg.use_task_tokens:
        T = model.task_tokens.expand(B, -1, -1)
    for block in model.blocks:
        C, S, T, Cp, Sp, Tp = infnet_block(block, C, S, s_mask, T, Cp, Sp, Tp)
    if T is not None:
        out = model.final_norm(T)
    else:
        out = model.final_norm(Tp).flatten(1).unsqueeze(1).expand(-1, len(model.towers.towers), -1)
    return model.towers(out)


def masked_mean(kv: torch.Tensor, mask: torch.Tensor | None, n_q: int) -> torch.Tensor:
    """(B, n_k, d) -> (B, n_q, d): each query gets the plain mean of its sample's real keys (0 if none)."""
    B, _, d = kv.shape
    out = torch.zeros(B, n_q, d, dtype=kv.dtype)
    for b in range(B):
        keys = kv[b][mask[b]] if mask is not None else kv[b]
        if keys.shape[0]:
            out[b] = sum(keys) / keys.shape[0]
    return out


def sequence_proxies(sp: SequenceProxies, S: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
    """Per-behaviour (B, F, d) or k attention-pooled (B, k, d) proxies, one sample at a time."""
    B = S[0].shape[0]
    rows = []
    for b in range(B):
        real = [S_a[b][m[b]] for S_a, m in zip(S, masks)]  # F x (n_real_a, d)
        if sp.mode == "per_behaviour":
            pooled = []
            for items in real:
                h = sp.phi_seq(items)  # (n_real_a, d)
                total = h.sum(0)
                pooled.append(total / max(len(items), 1) if sp.pool == "mean" else total)
            rows.append(torch.stack(pooled))
        else:
            H = sp.phi_seq(torch.cat(real))  # (n_real, d): all behaviours' real items
            if H.shape[0] == 0:
                rows.append(torch.zeros_like(sp.pool_queries))
                continue
            w = torch.softmax(sp.pool_queries @ H.T, dim=-1)  # (k, n_real)
            rows.append(w @ H)
    return torch.stack(rows)


def proxy_gated_unit(pgu: ProxyGatedUnit, x: torch.Tensor, proxies: torch.Tensor) -> torch.Tensor:
    """(B, n, d) tokens gated by their (B, n~, d) proxies, token by token."""
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        gate = torch.sigmoid(pgu.gate(proxies[b].reshape(-1)))  # (d,)
        for t in range(x.shape[1]):
            out[b, t] = x[b, t] * gate
    return out


def hstu_layer(layer: HSTULayer, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """X + f2(Norm(A V) * U) per sample and head, A = SiLU(Q K^T / sqrt(d_k)) / n over the n real keys."""
    B, _, d = x.shape
    h, dk = layer.h, d // layer.h
    U, V, Q, K = F.silu(layer.f1(layer.norm_in(x))).chunk(4, dim=-1)  # 4 x (B, N, d)
    out = torch.empty_like(x)
    for b in range(B):
        keys = mask[b].nonzero().flatten()
        heads = []
        for i in range(h):
            sl = slice(i * dk, (i + 1) * dk)
            a = F.silu(Q[b, :, sl] @ K[b, keys, sl].T / math.sqrt(dk)) / len(keys)  # (N, n_real)
            heads.append(a @ V[b, keys, sl])
        out[b] = x[b] + layer.f2(layer.norm_attn(torch.cat(heads, -1)) * U[b])
    return out


def dcnv2_task_inputs(model: DCNv2, x: torch.Tensor) -> torch.Tensor:
    """[cross network(x), deep(x)] (B, d_in + h), the cross layers written as x_0 * (W x_l + b) + x_l."""
    xl = x
    for layer in model.cross:
        xl = x * (xl @ layer.weight.T + layer.bias) + xl
    return torch.cat([xl, model.deep(x)], dim=1)


def mmoe_task_inputs(model: MMoE, x: torch.Tensor) -> torch.Tensor:
    """(B, T, h): for each task t, sum_e softmax(gate_t(x))_e * expert_e(x)."""
    experts = [e(x) for e in model.experts]  # E x (B, h)
    logits = model.gates(x).view(x.shape[0], model.n_tasks, -1)  # (B, T, E)
    tasks = []
    for t in range(model.n_tasks):
        g = torch.softmax(logits[:, t], dim=-1)  # (B, E)
        tasks.append(sum(g[:, e : e + 1] * experts[e] for e in range(len(experts))))
    return torch.stack(tasks, dim=1)


def history(
    user: Sequence, time: Sequence, event: Sequence, tokens: Sequence, max_len: int, i: int
) -> list[int]:
    """Row i's history: the tokens of the same user's events strictly before row i's time, most recent
    first (ties: later in the file first), without id 0 (out of vocabulary), padded with 0 to max_len."""
    rows = [
        j for j in range(len(user)) if user[j] == user[i] and time[j] < time[i] and event[j] and tokens[j]
    ]
    rows.sort(key=lambda j: (time[j], j), reverse=True)
    out = [int(tokens[j]) for j in rows[:max_len]]
    return out + [0] * (max_len - len(out))


def list_field(raw: str | None, vocab: Sequence[str], max_len: int, separator: str = ",") -> list[int]:
    """'12,65' -> [1 + position of each token in vocab] in the column's order, unknown tokens dropped,
    padded / truncated to max_len (a missing value -> all padding)."""
    tokens = raw.split(separator) if isinstance(raw, str) else []
    ids = [list(vocab).index(t) + 1 for t in tokens if t in vocab]
    return (ids + [0] * max_len)[:max_len]
