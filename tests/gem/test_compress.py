"""Compression: int8 close to fp32, pruning exact and by magnitude, compression intensity on hand counts,
narrower / shallower configs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from gem.compress import (
    architecture_intensity,
    block_sparsity,
    compress,
    compression_intensity,
    magnitude_prune,
    narrower,
    post_training_variants,
    prunable_weights,
    quantize_int8,
    shallower,
    storage_bits,
)
from gem.config import ModelConfig
from gem.model import count_params
from shared.errors import ConfigError
from tests.gem.model_helpers import FFNS, random_tokens, tiny_cfg, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("ffn", FFNS)
def test_int8_model_is_close_to_fp32(ffn: str) -> None:
    model = tiny_model(ffn, d_model=64, d_ff=128).eval()
    q = quantize_int8(model)
    idx = random_tokens(2, 24)
    with torch.no_grad():
        ref, out = model(idx).logits, q(idx).logits
    rel = float((out - ref).norm() / ref.norm())
    agree = float((out.argmax(-1) == ref.argmax(-1)).float().mean())
    assert rel < 0.15 and agree >= 0.9, (rel, agree)
    assert not torch.equal(out, ref)  # it really is quantised
    n_int8 = sum(isinstance(m, DynamicQuantizedLinear) for m in q.modules())
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules()) - len(model.heads)
    n_router = sum(isinstance(m, nn.Linear) for n, m in model.named_modules() if ".router" in n)
    assert n_int8 == n_linear - n_router  # every Linear but the routers'
    assert isinstance(model.lm_head, nn.Linear)  # the input model is untouched


def test_global_pruning_is_exact_and_removes_the_smallest_weights() -> None:
    model = tiny_model("scar")
    original = torch.cat([m.weight.detach().flatten() for m, _ in prunable_weights(model)])
    for sparsity in (0.3, 0.5, 0.9):
        pruned = magnitude_prune(model, sparsity)
        new = torch.cat([m.weight.detach().flatten() for m, _ in prunable_weights(pruned)])
        zeros = new == 0
        assert int(zeros.sum()) == round(sparsity * original.numel())
        assert block_sparsity(pruned) == pytest.approx(int(zeros.sum()) / original.numel())
        assert original[zeros].abs().max() <= original[~zeros].abs().min()  # the smallest magnitudes went
        assert torch.equal(new[~zeros], original[~zeros])  # the rest is unchanged
        assert torch.equal(pruned.tok_emb.weight, model.tok_emb.weight)  # embeddings are not pruned
        assert not any("weight_orig" in n for n, _ in pruned.named_parameters())  # made permanent
    assert block_sparsity(model) == 0.0  # the input model is untouched


def test_layerwise_pruning_is_exact_per_matrix() -> None:
    model = tiny_model("moe")
    pruned = magnitude_prune(model, 0.5, scope="layer")
    for (m, _), (p, _) in zip(prunable_weights(model), prunable_weights(pruned)):
        assert int((p.weight == 0).sum()) == round(0.5 * m.weight.numel())
    router = pruned.blocks[0].ffn.router.gate.weight
    assert int((router == 0).sum()) == 0  # routers are left alone


def test_compression_intensity_on_hand_counts() -> None:
    model = tiny_model("scar")
    n = model.num_params()
    n_block = sum(m.weight.numel() for m, _ in prunable_weights(model))
    assert compression_intensity(model, n) == pytest.approx(0.0)
    pruned = magnitude_prune(model, 0.5)
    assert compression_intensity(pruned, n) == pytest.approx(round(0.5 * n_block) / n)
    # int8: each quantised Linear stores 8 bits per weight and an fp32 scale + zero point per output row;
    # the tied LM head gets its own int8 copy beside the fp32 embedding; routers and norms stay fp32
    q = quantize_int8(model)
    int8_bits = zeros = 0
    for name, m in q.named_modules():
        if isinstance(m, DynamicQuantizedLinear):
            values = m.weight().int_repr()
            zeros += int((values == 0).sum()) if name != "lm_head" else 0  # block weights are stored sparsely
            int8_bits += 8 * values.numel() + 64 * values.shape[0]
    quantised = [m for name, m in model.named_modules() if isinstance(m, nn.Linear) and ".router" not in name]
    fp32 = n - sum(m.weight.numel() for m in quantised if m is not model.lm_head)
    assert zeros < 0.02 * n_block  # weights rounded to 0 are few
    assert storage_bits(q) == int8_bits - 8 * zeros + 32 * fp32
    assert compression_intensity(q, n) == pytest.approx(1 - storage_bits(q) / (32 * n))
    both = compress(model, 0.5, int8=True)
    assert both.name == "int8+prune50" and both.int8 and both.intensity > compression_intensity(q, n)
    with pytest.raises(ConfigError):
        compression_intensity(model, 0)


def test_post_training_variants_run_and_grow_in_intensity() -> None:
    model = tiny_model("scar").eval()
    variants = post_training_variants(model, sparsities=(0.5, 0.9))
    assert [v.name for v in variants] == [
        "fp32",
        "prune50",
        "prune90",
        "int8",
        "int8+prune50",
        "int8+prune90",
    ]
    assert variants[0].intensity == pytest.approx(0.0)
    assert variants[1].intensity < variants[2].intensity and variants[4].intensity < variants[5].intensity
    idx = random_tokens(1, 10)
    with torch.no_grad():
        for v in variants:
            assert torch.isfinite(v.model(idx).logits).all(), v.name
    with pytest.raises(ConfigError, match="sparsity"):
        magnitude_prune(model, 1.0)


def test_narrower_and_shallower_variants() -> None:
    cfg = ModelConfig()
    half = narrower(cfg, 0.5)
    assert (half.d_model, half.d_ff, half.n_heads) == (64, 256, 4)
    assert narrower(cfg, 0.3).d_model % (2 * cfg.n_heads) == 0
    two = shallower(cfg, 2)
    assert two.n_layers == 2 and count_params(two) < count_params(cfg)
    assert architecture_intensity(two, cfg) == pytest.approx(1 - count_params(two) / count_params(cfg))
    assert architecture_intensity(cfg, cfg) == 0.0
    routed = tiny_cfg("scar", n_layers=4, routed_layers=[1, 3])
    assert shallower(routed, 2).routed_layers == [1]
    with pytest.raises(ConfigError, match="routed_layers"):
        shallower(tiny_cfg("scar", n_layers=4, routed_layers=[3]), 2)
    with pytest.raises(ConfigError):
        narrower(cfg, 1.5)
    with pytest.raises(ConfigError):
        shallower(cfg, 5)
