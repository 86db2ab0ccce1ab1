"""INFNet: A Task-aware Information Flow Network for large-scale recommendation (arXiv 2508.11565, v1).

Modules and the equations of arXiv 2508.11565v1 §3 they implement, in the paper's symbols (the paper has no
official code). The feature tokenization (``FeatureEmbedding``: C in R^{M x d}, S in R^{L x d}) and the
per-task towers live in ``infnet/layers.py``, shared with the baselines; the ablation switches are Table 3's.

- ``CategoricalProxies``    C~ = Reshape(phi_cat(Flatten(C))) in R^{m x d}.
- ``SequenceProxies``       S~_a = sum_t phi_seq(s_{a,t}) (one per behaviour), or k learned pooled proxies.
- ``CrossAttention``        CA(Q, K, V) = softmax(Q W_Q (K W_K)^T / sqrt(d_k)) V W_V, multi-head, key masks.
- ``ProxyGatedUnit``        PGU(X, X~) = X * sigmoid(MLP(Flatten(X~))), the gate broadcast over the n tokens.
- ``InfnetBlock``           one block: heterogeneous flow (the eight CAs) then homogeneous flow (three PGUs):
                              C~' = CA(C~, S) + CA(C~, T)      S~' = CA(S~, C) + CA(S~, T)
                              T~' = CA(T~, C) + CA(T~, S)      T^  = CA(T, C)  + CA(T, S)
                              C'  = PGU(C, C~)   S' = PGU(S, S~)   T' = PGU(T^, T~)
- ``INFNet``                tokens -> N blocks -> y_i = sigmoid(MLP_i(T_i^(N))); loss = sum_i lambda_i BCE_i.

Cost is linear in L: the queries of every attention are the few proxies / task tokens, never the L sequence
tokens, and the PGU gate is one vector per sample broadcast over the tokens. ``cross_attention_sums``
computes the eight CAs of a block from the query side (the keys are never projected), the CAs over one key
set as one ``MaskedAttention``; ``reference.infnet_forward`` is the key-projecting version it equals.

Deviations (each is a ``ModelConfig`` option; defaults in brackets; see infnet/README.md):

- residual [on]: the prose mentions residual connections, the equations have none. When on, the
  heterogeneous update is added to the proxies / task tokens (X' = X + sum of CAs); PGU is never residual.
- norm [layernorm]: LayerNorm on the queries and keys/values entering each CA (pre-norm) and on the final
  task tokens; not stated in the paper.
- gate_uses [layer_l_plus_1]: the prose gates with the freshly updated (layer l+1) proxies, the equations
  with the layer-l ones; with the latter, block l's proxy updates reach the task tokens only two blocks
  later, so at N = 2 the C~/S~ cross-attentions would have no effect (see ``block_plans``).
- n_heads [2], n_blocks [2]: not stated. Each of the eight CAs has its own weights (sharing not stated) and,
  as usual for multi-head attention, an output projection W_O that the paper's CA formula does not show.
- Parts whose output cannot reach the towers are not built (``block_plans``): exact parameter counts, and
  DDP needs no ``find_unused_parameters``.
- seq_proxy_mode [per_behaviour]: the equations give one proxy per behaviour (sum pooling); section 4.4
  tests 2/4/8 "sequential proxies", which we read as k learned attention-pooled proxies ("k").
- phi_cat is a one-hidden-layer MLP, phi_seq a linear map (depths not given); side attributes of sequence
  positions are not merged (not stated); sequences carry no positional embedding (not mentioned).
- w/o cross-attention: without CA the task tokens would never see the features, so each CA(Q, K, K) is
  replaced by the parameter-free masked mean of K (uniform attention, no projections).
- w/o task tokens: no task tokens and no CA/PGU involving them; each tower reads the flattened final shared
  task tokens T~^(N).
- A CA whose keys are all padding (an empty history) outputs zeros rather than NaN.
- W_K has no bias: Q_h b_K,h is the same for every key and cancels in the softmax, so it could not learn.
- mlp_norm [batchnorm], embed_init_std [1e-4] (``layers.py``): BatchNorm in the towers' hidden layers and a
  N(0, 1e-4) embedding init, as torch-rechub and FuxiCTR (the paper's framework) do; see the README's
  "Parity with torch-rechub".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from infnet.config import ModelConfig
from infnet.layers import FeatureEmbedding, TaskTowers, validate_model_config
from shared.errors import ConfigError

if TYPE_CHECKING:
    from infnet.data import FeatureSpec


class CategoricalProxies(nn.Module):
    """C~ = Reshape(phi_cat(Flatten(C))): (B, M, d) -> (B, m, d)."""

    def __init__(self, n_fields: int, d: int, m: int, hidden: int):
        super().__init__()
        self.m, self.d = m, d
        self.phi_cat = nn.Sequential(nn.Linear(n_fields * d, hidden), nn.ReLU(), nn.Linear(hidden, m * d))

    def forward(self, C: torch.Tensor) -> torch.Tensor:
        return self.phi_cat(C.flatten(1)).view(-1, self.m, self.d)  # (B, m, d)


class SequenceProxies(nn.Module):
    """Sequence proxies from a shared projection phi_seq of every sequence token.

    ``per_behaviour``: S~_a = pool_t phi_seq(s_{a,t}) over the real positions of behaviour a -> (B, F, d).
    ``k``: k learned queries attention-pool phi_seq(S) over all L real tokens -> (B, k, d).
    """

    def __init__(self, d: int, mode: str, n_proxies: int, pool: str):
        super().__init__()
        self.mode, self.pool = mode, pool
        self.phi_seq = nn.Linear(d, d)
        if mode == "k":
            self.pool_queries = nn.Parameter(torch.randn(n_proxies, d) * d**-0.5)

    def forward(self, S: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        if self.mode == "per_behaviour":
            # phi_seq is linear: sum_t (W s_t + b) = W (sum_t s_t) + n_a b, pooled before projecting (the
            # padded rows of S_a are zero, see FeatureEmbedding), so the cost is O(F d^2), not O(L d^2)
            sums = torch.stack([S_a.sum(1) for S_a in S], dim=1)  # (B, F, d)
            counts = torch.stack([m.sum(1) for m in masks], dim=1).unsqueeze(-1).to(sums.dtype)  # (B, F, 1)
            pooled = F.linear(sums, self.phi_seq.weight) + counts * self.phi_seq.bias
            return pooled / counts.clamp(min=1) if self.pool == "mean" else pooled  # (B, F, d)
        H = self.phi_seq(torch.cat(S, dim=1))  # (B, L, d)
        mask = torch.cat(masks, dim=1)  # (B, L)
        has_item = mask.any(dim=1, keepdim=True)  # (B, 1); an empty history gives zero proxies, not NaN
        logits = torch.einsum("kd,bld->bkl", self.pool_queries, H)  # (B, k, L)
        logits = logits.masked_fill(~(mask | ~has_item).unsqueeze(1), float("-inf"))
        w = torch.softmax(logits, dim=-1) * has_item.unsqueeze(-1).to(H.dtype)
        return torch.einsum("bkl,bld->bkd", w, H)  # (B, k, d)


class CrossAttention(nn.Module):
    """Multi-head CA(Q, K, V=K) with a key mask; a query whose keys are all masked gets zeros.

    Holds W_Q, W_K, W_V, W_O; computed from the query side by ``cross_attention_sums`` (every CA of a block
    in a few batched calls). ``reference.cross_attention_sdpa`` is the usual key-projecting formulation.
    """

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.h = n_heads
        # no key bias: Q_h b_K,h is the same for every key and cancels in the softmax (it could never learn)
        self.w_q, self.w_k, self.w_v = nn.Linear(d, d), nn.Linear(d, d, bias=False), nn.Linear(d, d)
        self.w_o = nn.Linear(d, d)
        self.dropout = dropout

    def forward(self, q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return cross_attention_sums({"q_k": self}, {"q": q}, {"k": (kv, mask)})["q"]

    def folded(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The maps of the query-side formulation, per head h (W_X,h: the head's d_k rows of W_X):

        A_h = W_K,h^T W_Q,h / sqrt(d_k) (d, d) and a_h = W_K,h^T b_Q,h / sqrt(d_k) (d,): q A_h^T + a_h is the
        head's query in the key-input space; O_h = W_O[:, h] W_V,h (d, d) and o = W_O b_V + b_O (d,): the output
        is sum_h ctx_h O_h^T + o for the attention-weighted raw keys ctx_h.
        """
        d = self.w_q.weight.shape[0]
        h, dk = self.h, d // self.h
        Wq, Wk, Wv = (w.weight.view(h, dk, d) for w in (self.w_q, self.w_k, self.w_v))  # (h, d_k, d)
        A = torch.einsum("hke,hkf->hef", Wk, Wq) * dk**-0.5  # (h, d, d)
        a = torch.einsum("hke,hk->he", Wk, self.w_q.bias.view(h, dk)) * dk**-0.5  # (h, d)
        Ov = torch.einsum("dhk,hke->hde", self.w_o.weight.view(d, h, dk), Wv)  # (h, d, d)
        return A, a, Ov, self.w_o(self.w_v.bias)


class KeyMask(NamedTuple):
    """A (B, n_k) key mask in the form the attention reads, built once per forward by ``key_mask``.

    ``bias`` (B, 1, n_k) is added to the scores: 0 for a real key, -inf for padding, and 0 for every key of a
    sample without any (its softmax stays finite and ``has_key`` (B, 1, 1), 0 for such a sample and 1
    otherwise, zeroes it). ``mask`` is the boolean mask itself (True = real key)."""

    mask: torch.Tensor
    bias: torch.Tensor
    has_key: torch.Tensor


@torch.library.custom_op("infnet::key_bias", mutates_args=())
def _key_bias(mask: torch.Tensor, has_key: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, n_k) mask and its (B, 1) row-has-a-key -> (B, n_k) additive bias: 0 for a real key, -inf for
    padding, 0 for every key of a row without any."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill_(~(mask | ~has_key), float("-inf"))


@_key_bias.register_fake
def _(mask: torch.Tensor, has_key: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return mask.new_empty(mask.shape, dtype=dtype)


def key_mask(mask: torch.Tensor, dtype: torch.dtype) -> KeyMask:
    """The ``KeyMask`` of a (B, n_k) boolean mask, for scores of ``dtype``.

    An additive float bias rather than the boolean mask in the softmax: torch.compile's CPU code converts a
    boolean mask at every (query, key) element, which made the masked softmax of a (1024, 9, 156) score
    tensor 4x slower (4.4 ms) than the same softmax adding this (B, 1, n_k) row (1.1 ms). The bias is a
    custom op so that torch.compile writes it once to memory instead of inlining its boolean arithmetic
    into every softmax that reads it."""
    has_key = mask.any(dim=1, keepdim=True)  # (B, 1)
    return KeyMask(mask, _key_bias(mask, has_key, dtype).unsqueeze(1), has_key.unsqueeze(-1).to(dtype))


class MaskedAttention(torch.autograd.Function):
    """ctx = softmax(Q K^T + bias) K for (B, R, d) queries over (B, n_k, d) keys with a key bias (B, 1, n_k)
    and has-key factor (B, 1, 1) (``KeyMask``); a sample without any key gets ctx = 0. The backward is written
    out so that the gradient of the keys is one contiguous (B, n_k, d) tensor from two accumulated matmuls
    (autograd's makes a transposed one per matmul and adds them: the largest cost of INFNet's step on CPU).
    ``attend`` below is the plain version."""

    @staticmethod
    def forward(
        ctx, Q: torch.Tensor, K: torch.Tensor, bias: torch.Tensor | None, has_key: torch.Tensor | None
    ) -> torch.Tensor:
        attn = _attention_weights(torch.bmm(Q, K.transpose(1, 2)), bias, has_key)  # (B, R, n_k)
        ctx.save_for_backward(Q, K, attn)
        return torch.bmm(attn, K)  # (B, R, d)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        Q, K, attn = ctx.saved_tensors
        grad = grad.contiguous()
        d_attn = torch.bmm(grad, K.transpose(1, 2))  # (B, R, n_k)
        d_scores = attn * (d_attn - (d_attn * attn).sum(-1, keepdim=True))  # softmax backward; 0 where masked
        d_K = torch.bmm(attn.transpose(1, 2), grad).baddbmm_(d_scores.transpose(1, 2), Q)  # (B, n_k, d)
        return torch.bmm(d_scores, K), d_K, None, None


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim. Over a handful of keys (the M categorical or N_task task tokens) torch's CPU
    kernel, vectorised along that dim, is ~5x slower than these elementwise ops, which run over all of them."""
    if scores.shape[-1] > 32:
        return torch.softmax(scores, dim=-1)
    e = (scores - scores.amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)


def _attention_weights(
    scores: torch.Tensor, bias: torch.Tensor | None, has_key: torch.Tensor | None
) -> torch.Tensor:
    """Softmax over the real keys (``KeyMask``): rows of samples without keys attend to everything (finite,
    no NaN), then are zeroed."""
    if bias is None:
        return _softmax(scores)
    return _softmax(scores + bias) * has_key


def attend(
    Q: torch.Tensor, K: torch.Tensor, mask: KeyMask | None, dropout: float, training: bool
) -> torch.Tensor:
    """softmax(Q K^T) K with a key mask (B, R, d); attention dropout when training."""
    bias, has_key = (mask.bias, mask.has_key) if mask is not None else (None, None)
    if training and dropout > 0:
        weights = _attention_weights(torch.bmm(Q, K.transpose(1, 2)), bias, has_key)
        return torch.bmm(F.dropout(weights, dropout), K)
    return MaskedAttention.apply(Q, K, bias, has_key)


def cross_attention_sums(
    cas: dict[str, CrossAttention],
    queries: dict[str, torch.Tensor],
    keys: dict[str, tuple[torch.Tensor, torch.Tensor | KeyMask | None]],
) -> dict[str, torch.Tensor]:
    """Every CA of a block, named "x_k" (query type x, key type k): {x: sum of the outputs of the CAs with
    query x}, e.g. C~' - C~ = CA(C~, S) + CA(C~, T). ``queries[x]`` is (B, n_x, d), ``keys[k]`` = (tokens
    (B, n_k, d), mask (B, n_k) or its ``KeyMask`` or None).

    The keys are never projected. Per head, Q_h K_h^T = (Q_h W_K,h) kv^T (W_K has no bias, see
    ``CrossAttention``), and A (kv W_V,h^T + b_V,h) = (A kv) W_V,h^T + b_V,h since the rows of A sum to 1
    (``CrossAttention.folded``). With few queries (proxies, task tokens) and many keys (the L sequence
    tokens), that costs O(n_q L d) instead of the O(L d^2) of projecting every key; all the CAs over one key
    type share one attention call (its queries: the heads of every such CA stacked), and the query and output
    maps of all the CAs with the same query are one Linear each.
    """
    folded = {p: ca.folded() for p, ca in cas.items()}
    by_query: dict[str, list[str]] = {}
    for p in cas:
        by_query.setdefault(p.split("_")[0], []).append(p)
    qk = {}  # pair -> (B, n_x, h, d): its heads' queries in the key-input space
    for x, pairs in by_query.items():
        # one Linear for every head of every CA with query x: rows of A_h stacked, (H_x d, d)
        A = torch.cat([folded[p][0].flatten(0, 1) for p in pairs])
        a = torch.cat([folded[p][1].flatten() for p in pairs])
        B, n_x, d = queries[x].shape
        Qk = F.linear(queries[x], A, a).view(B, n_x, -1, d)  # (B, n_x, H_x, d)
        qk.update(zip(pairs, Qk.split([cas[p].h for p in pairs], dim=2)))
    ctx, has_key = {}, {}
    for k, (kv, mask) in keys.items():
        pairs = [p for p in cas if p.split("_")[1] == k]
        if not pairs:
            continue
        if isinstance(mask, torch.Tensor):
            mask = key_mask(mask, kv.dtype)
        rows = torch.cat([qk[p].flatten(1, 2) for p in pairs], dim=1)  # (B, R, d), R = sum n_x h
        first = cas[pairs[0]]
        out = attend(rows, kv, mask, first.dropout, first.training)  # (B, R, d)
        sizes = [qk[p].shape[1] * qk[p].shape[2] for p in pairs]
        ctx.update((p, c.view(qk[p].shape)) for p, c in zip(pairs, out.split(sizes, dim=1)))
        if mask is not None:
            has_key[k] = mask.has_key  # (B, 1, 1)
    sums = {}
    for x, pairs in by_query.items():
        # one Linear over every head of every CA with query x: the O_h side by side, (d, H_x d)
        Ov = torch.cat([folded[p][2].transpose(0, 1).flatten(1) for p in pairs], dim=1)
        out = F.linear(torch.cat([ctx[p] for p in pairs], dim=2).flatten(2), Ov)  # (B, n_x, d)
        for p in pairs:  # the output bias o of each CA; zero, like its output, for a sample without keys
            k = p.split("_")[1]
            out = out + (folded[p][3] * has_key[k] if k in has_key else folded[p][3])
        sums[x] = out
    return sums


def masked_mean(kv: torch.Tensor, mask: torch.Tensor | None, n_q: int) -> torch.Tensor:
    """The w/o-cross-attention stand-in for CA(Q, K, K): the mean of the real keys, for each of n_q queries."""
    if mask is None:
        pooled = kv.mean(1)
    else:
        m = mask.unsqueeze(-1).to(kv.dtype)  # (B, n_k, 1)
        pooled = (kv * m).sum(1) / m.sum(1).clamp(min=1)
    return pooled.unsqueeze(1).expand(-1, n_q, -1)  # (B, n_q, d)


class ProxyGatedUnit(nn.Module):
    """PGU(X, X~) = X * sigmoid(MLP(Flatten(X~))): the gate (B, 1, d) is broadcast over X's n tokens."""

    def __init__(self, n_proxies: int, d: int, hidden: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(n_proxies * d, hidden), nn.ReLU(), nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor, proxies: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.gate(proxies.flatten(1))).unsqueeze(1)  # (B, n, d)


class InfnetBlock(nn.Module):
    """One INFNet block: the heterogeneous flow (cross-attentions, proxies as queries), then the
    homogeneous flow (type-specific PGUs). Switches: task tokens, PGU, cross-attention (Table 3).

    A block builds only the parts whose output reaches the towers (``BlockPlan``): e.g. the categorical and
    sequence tokens updated by the last block would be discarded, so the last block has no PGU for them.
    """

    def __init__(self, cfg: ModelConfig, plan: BlockPlan, n_cat_proxies: int, n_seq_proxies: int):
        super().__init__()
        d, has_t = cfg.embed_dim, cfg.use_task_tokens
        self.cfg, self.plan = cfg, plan
        # (query type, key type) of the CAs: C~<-S, C~<-T, S~<-C, S~<-T, T~<-C, T~<-S, T<-C, T<-S
        pairs = []
        if plan.update_cat_seq_proxies:
            pairs += ["cp_s", "sp_c"] + (["cp_t", "sp_t"] if has_t else [])
        if plan.update_shared:
            pairs += ["tp_c", "tp_s"]
        if has_t:
            pairs += ["t_c", "t_s"]
        self.pairs = pairs
        if cfg.use_cross_attention:
            self.cross = nn.ModuleDict({p: CrossAttention(d, cfg.n_heads, cfg.dropout) for p in pairs})
        if cfg.norm == "layernorm":
            # pre-norm of every CA input; the mean stand-in of w/o cross-attention ignores its queries
            names = {"cp": "Cp", "sp": "Sp", "tp": "Tp", "t": "T", "c": "C", "s": "S"}
            parts = [
                part
                for p in pairs
                for part in (p.split("_") if cfg.use_cross_attention else p.split("_")[1:])
            ]
            self.norms = nn.ModuleDict({names[t]: nn.LayerNorm(d) for t in sorted(set(parts))})
        if plan.gate_cat_seq:
            self.pgu_cat = ProxyGatedUnit(n_cat_proxies, d, cfg.gate_hidden)
            self.pgu_seq = ProxyGatedUnit(n_seq_proxies, d, cfg.gate_hidden)
        if cfg.use_pgu and has_t:
            self.pgu_task = ProxyGatedUnit(cfg.n_shared_task_tokens, d, cfg.gate_hidden)

    def _norm(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.norms[name](x) if self.cfg.norm == "layernorm" and name in self.norms else x

    def forward(
        self,
        C: torch.Tensor,  # (B, M, d) categorical tokens
        S: torch.Tensor,  # (B, L, d) sequence tokens
        s_mask: KeyMask,  # of the (B, L) mask, True = real item
        T: torch.Tensor | None,  # (B, N_task, d) task tokens, None without task tokens
        Cp: torch.Tensor | None,  # (B, m, d) categorical proxies C~
        Sp: torch.Tensor | None,  # (B, F or k, d) sequence proxies S~
        Tp: torch.Tensor | None,  # (B, N_s, d) shared task tokens T~
        S_keys: torch.Tensor | None = None,  # (B, L, d) LN(S) when the caller has it
    ) -> tuple[torch.Tensor | None, ...]:
        """Returns the layer-(l+1) (C, S, T, C~, S~, T~); a part this block does not build is None."""
        plan, res, n = self.plan, self.cfg.residual, self._norm
        late = self.cfg.gate_uses == "layer_l_plus_1"
        # heterogeneous flow: every right-hand side uses layer-l tokens; all eight CAs in one fused call
        query = {"t": n("T", T) if T is not None else None}
        if plan.update_cat_seq_proxies:
            query["cp"], query["sp"] = n("Cp", Cp), n("Sp", Sp)
        if plan.update_shared:
            query["tp"] = n("Tp", Tp)
        keys = {
            "s": (S_keys if S_keys is not None else n("S", S), s_mask),
            "c": (n("C", C), None),
            "t": (query["t"], None),
        }
        if self.cfg.use_cross_attention:
            upd = cross_attention_sums({p: self.cross[p] for p in self.pairs}, query, keys)
        else:  # each CA(Q, K, K) is the mean of K; the sums per query type as above
            upd = {}
            for p in self.pairs:
                x, k = p.split("_")
                kv, mask = keys[k]
                mean = masked_mean(kv, mask.mask if mask is not None else None, query[x].shape[1])
                upd[x] = upd[x] + mean if x in upd else mean
        Cp1 = Sp1 = Tp1 = T1 = None
        if plan.update_cat_seq_proxies:
            Cp1, Sp1 = (Cp + upd["cp"], Sp + upd["sp"]) if res else (upd["cp"], upd["sp"])
        if plan.update_shared:
            Tp1 = Tp + upd["tp"] if res else upd["tp"]
        if T is not None:
            T1 = T + upd["t"] if res else upd["t"]  # T^ (B, N_task, d)
        # homogeneous flow: one gate per token type from that type's proxies, broadcast over its tokens
        C1, S1 = (C, S) if not self.cfg.use_pgu else (None, None)
        if plan.gate_cat_seq:
            C1 = self.pgu_cat(C, Cp1 if late else Cp)
            S1 = self.pgu_seq(S, Sp1 if late else Sp)  # padded rows of S are zero and stay zero
        if self.cfg.use_pgu and T1 is not None:
            T1 = self.pgu_task(T1, Tp1 if late else Tp)
        return C1, S1, T1, Cp1, Sp1, Tp1


@dataclass(frozen=True)
class BlockPlan:
    """Which outputs of block l reach the towers (everything else would get no gradient)."""

    update_cat_seq_proxies: bool  # compute C~', S~'
    gate_cat_seq: bool  # compute C' = PGU(C, .), S' = PGU(S, .)
    update_shared: bool  # compute T~'


def block_plans(cfg: ModelConfig) -> list[BlockPlan]:
    """Trace the data flow backwards from the towers.

    C, S of layer l+1 are read by block l+1 only, so the last block does not gate them. C~, S~ only gate C, S:
    with ``gate_uses=layer_l_plus_1`` block l's updated proxies gate block l's tokens; with the equations'
    ``layer_l`` they gate block l+1's, so the proxies updated in the last two blocks are never used (at
    N = 2 the whole C~/S~ update is dead). T~ gates T (or is read by the towers without task tokens).
    """
    n, late, has_t = cfg.n_blocks, cfg.gate_uses == "layer_l_plus_1", cfg.use_task_tokens
    plans = []
    for layer in range(n):
        gate = cfg.use_pgu and layer < n - 1
        update = gate if late else cfg.use_pgu and layer < n - 2
        if not has_t:
            shared = True
        else:
            shared = cfg.use_pgu and (late or layer < n - 1)
        plans.append(BlockPlan(update, gate, shared))
    return plans


class INFNet(nn.Module):
    """Tokens and proxies -> N blocks -> per-task towers on the final task tokens -> logits (B, N_task)."""

    def __init__(self, spec: FeatureSpec, cfg: ModelConfig):
        super().__init__()
        validate_model_config(cfg, spec)
        d, n_tasks = cfg.embed_dim, len(spec.tasks)
        self.cfg = cfg
        self.plans = block_plans(cfg)
        self.embedding = FeatureEmbedding(spec, d, cfg.embed_init_std)
        n_seq_proxies = len(spec.sequences) if cfg.seq_proxy_mode == "per_behaviour" else cfg.n_seq_proxies
        # C~, S~ exist only when some block gates C, S (without PGU they could not reach the task tokens)
        self.use_cat_seq_proxies = any(p.gate_cat_seq for p in self.plans)
        if self.use_cat_seq_proxies:
            self.cat_proxies = CategoricalProxies(
                len(spec.categorical), d, cfg.n_cat_proxies, cfg.proxy_hidden
            )
            self.seq_proxies = SequenceProxies(d, cfg.seq_proxy_mode, cfg.n_seq_proxies, cfg.seq_pool)
        self.use_shared = cfg.use_pgu or not cfg.use_task_tokens
        if self.use_shared:
            self.shared_task_tokens = nn.Parameter(torch.randn(cfg.n_shared_task_tokens, d) * 0.05)  # T~
        if cfg.use_task_tokens:
            self.task_tokens = nn.Parameter(torch.randn(n_tasks, d) * 0.05)  # T
        self.blocks = nn.ModuleList(InfnetBlock(cfg, p, cfg.n_cat_proxies, n_seq_proxies) for p in self.plans)
        self.final_norm = nn.LayerNorm(d) if cfg.norm == "layernorm" else nn.Identity()
        d_tower = d if cfg.use_task_tokens else cfg.n_shared_task_tokens * d
        self.towers = TaskTowers(n_tasks, d_tower, cfg.tower_dims, cfg.dropout, cfg.mlp_norm)

    def _first_sequence_keys(self, seq: list[torch.Tensor]) -> torch.Tensor | None:
        """The first block's pre-normed sequence keys LN(S) (B, L, d), from the normed embedding tables.

        LayerNorm acts on each row, and the first block's S is rows of the tables (padding aside), so
        LN(E[ids]) = LN(E)[ids]: normalising the V rows of each table instead of the B x L tokens gives the
        same keys without LayerNorm's forward and backward over every token (its backward becomes the
        tables' embedding backward). Padded positions get LN of the padding row instead of LN(0); the
        attention gives them weight exactly 0, so nothing changes (``test_padding_positions_...``).
        None when the first block norms no S (norm "none", or no CA over S)."""
        first = self.blocks[0]
        if self.cfg.norm != "layernorm" or "S" not in first.norms:
            return None
        norm = first.norms["S"]
        tables = self.embedding.seq_tables
        return torch.cat([F.embedding(ids, norm(table.weight)) for table, ids in zip(tables, seq)], dim=1)

    def forward(self, batch: dict) -> torch.Tensor:
        C, S_list, masks = self.embedding(batch["cat"], batch["seq"])
        B = C.shape[0]
        Cp = Sp = Tp = T = None
        if self.use_cat_seq_proxies:
            Cp = self.cat_proxies(C)  # (B, m, d)
            Sp = self.seq_proxies(S_list, masks)  # (B, F or k, d)
        S = torch.cat(S_list, dim=1)  # (B, L, d)
        s_mask = key_mask(torch.cat(masks, dim=1), S.dtype)  # of the (B, L) mask, once for every block
        if self.use_shared:
            Tp = self.shared_task_tokens.expand(B, -1, -1)  # (B, N_s, d)
        if self.cfg.use_task_tokens:
            T = self.task_tokens.expand(B, -1, -1)  # (B, N_task, d)
        S_keys = self._first_sequence_keys(batch["seq"])
        for block in self.blocks:
            C, S, T, Cp, Sp, Tp = block(C, S, s_mask, T, Cp, Sp, Tp, S_keys)
            S_keys = None  # later blocks norm their gated S themselves
        if T is not None:
            out = self.final_norm(T)  # (B, N_task, d): tower i reads task token i
        else:
            n_tasks = len(self.towers.towers)
            out = self.final_norm(Tp).flatten(1).unsqueeze(1).expand(-1, n_tasks, -1)  # (B, N_task, N_s d)
        return self.towers(out)  # (B, N_task) logits


def multitask_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: list[float] | None = None
) -> torch.Tensor:
    """sum_i lambda_i BCE_i(logits[:, i], labels[:, i]), lambda_i = 1 by default (paper)."""
    per_task = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(0)  # (T,)
    if weights:
        if len(weights) != per_task.numel():
            raise ConfigError(
                f"train.loss_weights has {len(weights)} values; the data has {per_task.numel()} tasks"
            )
        per_task = per_task * torch.tensor(weights, dtype=per_task.dtype, device=per_task.device)
    return per_task.sum()
