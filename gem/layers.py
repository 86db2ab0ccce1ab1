"""Building blocks of the GEM language model (arXiv 2503.22698 gives no architecture; these are ours).

- ``make_norm``             RMSNorm (default) or LayerNorm, applied before each sub-layer (pre-norm).
- ``RotaryEmbedding``       RoPE (Su et al., arXiv 2104.09864) in the GPT-NeoX / HF Llama "rotate half" form:
                            channel i is paired with channel i + D/2 and rotated by angle p * theta^(-2i/D).
                            Positions start at the KV cache's length, so decoding one token at a time sees
                            the same rotations as a full forward; the tables are sliced by sequence length, so
                            an ONNX graph keeps a dynamic length.
- ``CausalSelfAttention``   multi-head causal attention with a KV cache (the HF ``past_key_values`` pattern):
                            softmax(Q K^T / sqrt(D) + causal mask) V, through ``scaled_dot_product_attention``.
- ``FeedForward``           the dense FFN, W2 GELU(W1 x) (nanoGPT's MLP); also one expert path of SCAR / MoE.
- ``ExpertBank``            E independent ``FeedForward`` paths (a ``ModuleList`` as in HF Mixtral, so int8
                            dynamic quantisation and magnitude pruning treat every expert like any Linear).

Shapes: B batch, T new tokens, P cached tokens, H heads, D head width, C = d_model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gem.config import ModelConfig

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per block: keys, values, each (B, H, P, D)


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)


class RotaryEmbedding(nn.Module):
    """cos / sin tables for positions [0, context_length); ``forward(start, length)`` slices them."""

    def __init__(self, head_dim: int, context_length: int, base: float):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (D/2,)
        angles = torch.arange(context_length, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (L, D/2)
        angles = torch.cat([angles, angles], dim=-1)  # (L, D): channel i and i + D/2 share an angle
        # Non-persistent: recomputed from the config, so checkpoints hold only learned weights.
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(
        self, start: int | torch.SymInt, length: int | torch.SymInt
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[start : start + length], self.sin[start : start + length]  # (T, D) each


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D) rotated by the (T, D) tables."""
    if cos.dtype != x.dtype:  # half precision under autocast; skip the no-op cast calls otherwise
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, T, C) -> (B, T, C) and the updated cache (keys, values), each (B, H, P + T, D)."""
        B, T, C = x.shape
        H = self.n_heads
        qkv = self.qkv(x).view(B, T, 3 * H, self.head_dim).transpose(1, 2)  # (B, 3H, T, D): q, k, v heads
        # q and k rotated in one pass (the same elementwise ops as one call each, half the calls)
        q, k = apply_rope(qkv[:, : 2 * H], cos, sin).split(H, dim=1)  # (B, H, T, D) each
        v = qkv[:, 2 * H :]
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, H, P + T, D)
            v = torch.cat([past[1], v], dim=2)
        p_drop = self.dropout if self.training else 0.0
        if past is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p_drop, is_causal=True)
        else:
            # With a cache, query i sits at position P + i: SDPA's is_causal aligns the mask top-left, which
            # is wrong when T < P + T, so the mask is built explicitly (T = 1 needs none but is covered too).
            n_past = k.shape[2] - T
            q_pos = torch.arange(T, device=x.device)[:, None] + n_past
            mask = torch.arange(k.shape[2], device=x.device)[None, :] <= q_pos  # (T, P + T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop)
        y = y.transpose(1, 2).reshape(B, T, C)
        return F.dropout(self.proj(y), p_drop, self.training), (k, v)


class FeedForward(nn.Module):
    """W2 GELU(W1 x): the dense FFN and one expert path."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=False)
        self.proj = nn.Linear(d_ff, d_model, bias=False)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(F.gelu(self.fc(x)))
        # at inference dropout is the identity: not calling it saves a call per path per routed layer
        return F.dropout(y, self.dropout, True) if self.training and self.dropout > 0 else y


class ExpertBank(nn.ModuleList):
    """E expert ``FeedForward`` paths of equal width."""

    def __init__(self, n_experts: int, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__(FeedForward(d_model, d_ff, dropout) for _ in range(n_experts))

    def params_per_expert(self) -> int:
        """Weights of one path, from the layer shapes (so it also holds after int8 quantisation)."""
        fc, proj = self[0].fc, self[0].proj
        return fc.in_features * fc.out_features + proj.in_features * proj.out_features
