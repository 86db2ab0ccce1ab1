"""Tiny GEM configs and fixtures shared by the model, router, generation, compression and export tests."""

from __future__ import annotations

import torch

from gem.config import ModelConfig
from gem.model import GemLM

VOCAB = 64
FFNS = ("dense", "scar", "moe")


def tiny_cfg(ffn: str = "scar", **kw) -> ModelConfig:
    """2 blocks of width 32, 4 paths; SCAR may use 1..3 of them so that k can vary."""
    base = dict(
        ffn=ffn,
        vocab_size=VOCAB,
        context_length=32,
        n_layers=2,
        n_heads=2,
        d_model=32,
        d_ff=48,
        n_experts=4,
        router_slots=6,
        router_dim=8,
        scar_threshold=0.6,
        scar_k_min=1,
        scar_k_max=3,
        moe_top_k=2,
    )
    base.update(kw)
    return ModelConfig(**base)


def tiny_model(ffn: str = "scar", seed: int = 0, **kw) -> GemLM:
    torch.manual_seed(seed)
    return GemLM(tiny_cfg(ffn, **kw))


def random_tokens(batch: int, length: int, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
