"""Compression of a trained GEM LM and its "compression intensity" (our definition; arXiv 2503.22698 only says
that its metrics "show strong correlation between model compression intensity and brittleness").

- ``quantize_int8``       post-training dynamic int8 quantisation of every Linear (weights int8 per output
                          channel, activations quantised on the fly) with ``torch.ao.quantization.quantize_dynamic``.
                          On torch 2.14.1 it still works (with a deprecation warning pointing to torchao, which is
                          not needed here). Routers stay fp32: they are tiny and a flipped routing decision
                          changes a whole path, not one weight.
- ``magnitude_prune``     unstructured L1-magnitude pruning of the block weights (attention, FFN and expert
                          Linears) with ``torch.nn.utils.prune``, global or per layer, made permanent (real zeros).
                          The tied embedding / LM head, the norms and the routers are not pruned (a zeroed
                          embedding entry would delete that token from the input as well as the output).
- ``narrower`` / ``shallower``  smaller architectures (they need training; the config transform is here).
- ``compression_intensity``    CI = 1 - sum_w bits(w) * nnz(w) / (32 * N_ref): the fraction of the fp32
                          dense reference's weight storage the variant no longer needs. bits = 8 for int8 weights
                          (plus their fp32 scales and zero points), 32 otherwise; nnz counts the nonzeros of the
                          block weights (the prunable set, as a sparse format would store them, index overhead
                          ignored; int8 values rounded to 0 count as pruned) and every entry of the other
                          tensors; N_ref = parameters of the uncompressed model. fp32 reference: 0; 50 %
                          pruning of the block weights: about 0.4 (embeddings stay); int8 of everything: about 0.6 (the int8 copy of the tied LM head counts on top
                          of the fp32 embedding); narrower / shallower: 1 - N_variant / N_ref.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from torch.nn.utils import prune

from gem.config import ModelConfig
from gem.model import GemLM, count_params
from gem.router import CrossAttentionRouter, LinearRouter
from shared.errors import ConfigError


def _router_module_names(model: nn.Module) -> set[str]:
    names = set()
    for name, m in model.named_modules():
        if isinstance(m, CrossAttentionRouter | LinearRouter):
            names |= {f"{name}.{sub}" if sub else name for sub, _ in m.named_modules()}
    return names


def quantize_int8(model: GemLM) -> GemLM:
    """An int8 dynamically quantised copy (eval mode, CPU); the input model is unchanged."""
    qmodel = copy.deepcopy(model).cpu().eval()
    routers = _router_module_names(qmodel)
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    spec = {
        name: qconfig
        for name, m in qmodel.named_modules()
        if isinstance(m, nn.Linear) and name not in routers
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices; the API works on torch 2.14.1
        return torch.ao.quantization.quantize_dynamic(qmodel, spec, dtype=torch.qint8, inplace=True)


def prunable_weights(model: GemLM) -> list[tuple[nn.Linear, str]]:
    """(module, "weight") of every block Linear except the routers' (attention, dense FFN, experts)."""
    routers = _router_module_names(model)
    return [
        (m, "weight")
        for name, m in model.blocks.named_modules(prefix="blocks")
        if isinstance(m, nn.Linear) and name not in routers
    ]


def magnitude_prune(model: GemLM, sparsity: float, scope: Literal["global", "layer"] = "global") -> GemLM:
    """A copy whose block weights have exactly round(sparsity * n) zeros (over all of them for ``global``,
    per weight matrix for ``layer``), the smallest magnitudes removed; the input model is unchanged."""
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"sparsity={sparsity}: must be in [0, 1)")
    if scope not in ("global", "layer"):
        raise ConfigError(f"pruning scope={scope!r}: use 'global' or 'layer'")
    pruned = copy.deepcopy(model)
    params = prunable_weights(pruned)
    if scope == "global":
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    else:
        for module, name in params:
            prune.l1_unstructured(module, name, amount=sparsity)
    for module, name in params:
        prune.remove(module, name)  # weight = weight_orig * mask, made permanent
    return pruned


def block_sparsity(model: GemLM) -> float:
    """Fraction of zeros among the prunable block weights (int8 weights: zeros of the integer values)."""
    routers = _router_module_names(model)
    zeros = total = 0
    for name, m in model.blocks.named_modules(prefix="blocks"):
        if name in routers:
            continue
        if isinstance(m, DynamicQuantizedLinear):
            w = m.weight().int_repr()
        elif isinstance(m, nn.Linear):
            w = m.weight
        else:
            continue
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(total, 1)


def storage_bits(model: GemLM) -> int:
    """Bits to store the weights (task heads and recomputed buffers excluded). Block weights (the prunable set)
    are counted as stored sparsely, nonzeros only; every other tensor densely (module docstring)."""
    routers = _router_module_names(model)
    sparse = {id(m) for name, m in model.blocks.named_modules(prefix="blocks") if name not in routers}
    bits = 0
    for m in model.modules():
        if isinstance(m, DynamicQuantizedLinear):
            w = m.weight()
            values = w.int_repr()
            bits += 8 * (int(torch.count_nonzero(values)) if id(m) in sparse else values.numel())
            n_scales = w.q_per_channel_scales().numel() if w.qscheme() == torch.per_channel_affine else 1
            bits += 64 * n_scales  # an fp32 scale and a zero point per channel (or per tensor)
            if m.bias() is not None:
                bits += 32 * m.bias().numel()
    sparse_params = {id(m.weight) for m, _ in prunable_weights(model)}
    heads = {id(p) for p in model.heads.parameters()}
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) in seen or id(p) in heads:
            continue
        seen.add(id(p))
        bits += 32 * (int(torch.count_nonzero(p)) if id(p) in sparse_params else p.numel())
    return bits


def compression_intensity(variant: GemLM, reference_params: int) -> float:
    """CI = 1 - storage_bits(variant) / (32 * reference_params); ``reference_params`` = ``count_params`` of
    the uncompressed model (``GemLM.num_params()``)."""
    if reference_params <= 0:
        raise ConfigError(f"reference_params={reference_params}: must be the positive size of the fp32 model")
    return 1.0 - storage_bits(variant) / (32.0 * reference_params)


@dataclass
class Variant:
    """A compressed copy of a trained model.

    Attributes:
        name: short label, e.g. "int8", "prune50", "int8+prune50"
        model: the compressed model (eval mode)
        intensity: compression intensity CI in [0, 1)
        sparsity: fraction of zeros among the prunable block weights
        int8: whether the Linears are int8
    """

    name: str
    model: GemLM
    intensity: float
    sparsity: float
    int8: bool


def compress(
    model: GemLM, sparsity: float = 0.0, int8: bool = False, scope: Literal["global", "layer"] = "global"
) -> Variant:
    """Prune to ``sparsity`` (if > 0), then quantise (if ``int8``); CI is relative to ``model``."""
    n_ref = model.num_params()
    out = magnitude_prune(model, sparsity, scope) if sparsity > 0 else copy.deepcopy(model)
    if int8:
        out = quantize_int8(out)
    parts = (["int8"] if int8 else []) + ([f"prune{round(100 * sparsity)}"] if sparsity > 0 else [])
    return Variant(
        name="+".join(parts) or "fp32",
        model=out.eval(),
        intensity=compression_intensity(out, n_ref),
        sparsity=block_sparsity(out),
        int8=int8,
    )


def post_training_variants(
    model: GemLM, sparsities: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9), int8: bool = True
) -> list[Variant]:
    """fp32, each pruning level, int8, and int8 on top of each pruning level (when ``int8``)."""
    variants = [compress(model)] + [compress(model, s) for s in sparsities]
    if int8:
        variants += [compress(model, 0.0, True)] + [compress(model, s, True) for s in sparsities]
    return variants


# ----------------------------------------------------------------------------- architecture variants


def narrower(cfg: ModelConfig, width: float) -> ModelConfig:
    """d_model and d_ff times ``width`` (d_model rounded to a multiple of 2 * n_heads, for RoPE)."""
    if not 0.0 < width <= 1.0:
        raise ConfigError(f"width={width}: a narrower variant needs a factor in (0, 1]")
    step = 2 * cfg.n_heads
    d_model = max(step, round(cfg.d_model * width / step) * step)
    return dataclasses.replace(cfg, d_model=d_model, d_ff=max(1, round(cfg.d_ff * width)))


def shallower(cfg: ModelConfig, n_layers: int) -> ModelConfig:
    """The first ``n_layers`` blocks' worth of architecture (routed layers beyond it are dropped)."""
    if not 1 <= n_layers <= cfg.n_layers:
        raise ConfigError(f"n_layers={n_layers}: a shallower variant needs 1..{cfg.n_layers} blocks")
    routed = cfg.routed_layers
    if routed is not None:
        routed = [i for i in routed if i < n_layers]
        if not routed and cfg.ffn != "dense":
            raise ConfigError(
                f"model.routed_layers={cfg.routed_layers}: none is below n_layers={n_layers}; "
                "set routed_layers for the shallower model"
            )
    return dataclasses.replace(cfg, n_layers=n_layers, routed_layers=routed)


def architecture_intensity(variant: ModelConfig, reference: ModelConfig) -> float:
    """CI of an fp32 architecture variant: 1 - N_variant / N_ref."""
    return 1.0 - count_params(variant) / count_params(reference)
