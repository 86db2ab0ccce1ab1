"""ONNX export: ONNX Runtime == eager for dense and SCAR at two sequence lengths through one graph (fp32 within
1e-4; int8 within 15 % relative error and >= 90 % top-1 agreement), the SCAR graph keeps its sparse dispatch,
and the KV-cache step graph decodes like ``generate``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from gem.export import (
    OrtLM,
    export_onnx,
    export_onnx_decoder,
    onnx_weight_bits,
    ort_session,
    quantize_onnx_int8,
    time_ort,
)
from gem.generate import generate
from gem.model import GemLM
from shared.errors import DataError
from tests.gem.model_helpers import random_tokens, tiny_model

# Every test here exports a graph (about 5 s for the first, 3-5 s more per graph on 2 busy cores), so the
# module runs with the slow tests (`make test-all`).
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

FP32_ATOL = 1e-4
INT8_REL, INT8_TOP1 = 0.15, 0.9
LENGTHS = (5, 19)  # two sequence lengths through the same graph


def small(ffn: str) -> GemLM:
    """One block (export time grows with the graph), 3 paths; SCAR may use 1..3 of them."""
    model = tiny_model(ffn, n_layers=1, n_experts=3, d_model=48, d_ff=96).eval()
    if ffn == "scar":
        with torch.no_grad():
            model.blocks[0].ffn.router.query.weight.mul_(3.0)  # sharper routing: k varies over tokens
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Callable[[str], tuple[GemLM, Path, Path]]:
    """ffn -> (model, fp32 graph, int8 graph), exported once per module, when a test first asks."""
    cache: dict[str, tuple[GemLM, Path, Path]] = {}
    folder = tmp_path_factory.mktemp("onnx")

    def get(ffn: str) -> tuple[GemLM, Path, Path]:
        if ffn not in cache:
            model = small(ffn)
            fp32 = export_onnx(model, folder / f"{ffn}.onnx")
            cache[ffn] = (model, fp32, quantize_onnx_int8(fp32, folder / f"{ffn}.int8.onnx"))
        return cache[ffn]

    return get


FFN_PARAMS = ["scar", "dense"]


def eager_logits(model: GemLM, idx: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(idx)).logits.numpy()


@pytest.mark.parametrize("ffn", FFN_PARAMS)
def test_ort_fp32_equals_eager_at_two_lengths(exported, ffn: str) -> None:
    model, fp32, _ = exported(ffn)
    runner = OrtLM(fp32, context_length=model.cfg.context_length)
    for i, length in enumerate(LENGTHS):
        idx = random_tokens(1 + i, length, seed=i).numpy()
        got = runner.logits(idx)
        assert got.shape == (1 + i, length, model.cfg.vocab_size)
        assert np.abs(got - eager_logits(model, idx)).max() < FP32_ATOL
    if ffn == "scar":  # the lengths above really route tokens to a varying number of paths
        with torch.no_grad():
            k = model(random_tokens(1, LENGTHS[1], seed=0)).routing[0].k
        assert len(set(k.tolist())) > 1


@pytest.mark.parametrize("ffn", FFN_PARAMS)
def test_ort_int8_is_close_to_eager(exported, ffn: str) -> None:
    model, fp32, int8 = exported(ffn)
    runner = OrtLM(int8, context_length=model.cfg.context_length)
    for i, length in enumerate(LENGTHS):
        idx = random_tokens(2, length, seed=10 + i).numpy()
        got, want = runner.logits(idx), eager_logits(model, idx)
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        top1 = (got.argmax(-1) == want.argmax(-1)).mean()
        assert 0 < rel < INT8_REL and top1 >= INT8_TOP1, (rel, top1)
    ops = Counter(n.op_type for n in onnx.load(str(int8)).graph.node)
    assert ops["MatMulInteger"] >= (4 if ffn == "dense" else 2 + 2 * 3)  # attention, FFN or experts, LM head
    assert onnx_weight_bits(int8) < 0.4 * onnx_weight_bits(fp32)
    assert time_ort(ort_session(int8), {"idx": random_tokens(1, 8).numpy()}, repeats=2, warmup=1) > 0


def test_scar_graph_dispatches_sparsely(exported) -> None:
    _, fp32, _ = exported("scar")
    graph = onnx.load(str(fp32)).graph
    ops = Counter(n.op_type for n in graph.node)
    # per path: NonZero of its tokens, GatherND of their rows, its MatMuls, ScatterND-add of the results
    assert ops["NonZero"] >= 3 and ops["GatherND"] >= 3 and ops["ScatterND"] >= 3
    producers = {out: node for node in graph.node for out in node.output}
    experts_fed_by_gather = 0
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm") and any(
            "experts" in name and "fc" in name for name in node.input
        ):
            src = producers.get(node.input[0])
            while src is not None and src.op_type in ("Reshape", "Squeeze", "Unsqueeze", "Cast", "Identity"):
                src = producers.get(src.input[0])
            experts_fed_by_gather += src is not None and src.op_type == "GatherND"
    assert experts_fed_by_gather == 3  # each path's first matmul sees only the gathered (routed) rows


def test_ort_runner_input_errors(exported, tmp_path) -> None:
    model, fp32, _ = exported("scar")
    runner = OrtLM(fp32, context_length=model.cfg.context_length)
    with pytest.raises(DataError, match="context_length"):
        runner.logits(random_tokens(1, model.cfg.context_length + 1).numpy())
    with pytest.raises(DataError, match="not found"):
        ort_session(tmp_path / "missing.onnx")


@pytest.mark.parametrize("ffn", ["dense", "scar"])
def test_kv_cache_step_graph_decodes_like_generate(tmp_path, ffn: str) -> None:
    model = small(ffn)
    path = export_onnx_decoder(model, tmp_path / "step.onnx")
    runner = OrtLM(decoder_path=path, context_length=model.cfg.context_length)
    prompt = random_tokens(2, 6)
    got = runner.generate_greedy(
        prompt.numpy(), 10, (model.cfg.n_layers, model.cfg.n_heads, model.cfg.head_dim)
    )
    assert np.array_equal(got, generate(model, prompt, 10, temperature=0.0).numpy())
    keys, values = runner.empty_cache(2, model.cfg.n_layers, model.cfg.n_heads, model.cfg.head_dim)
    logits, keys, values = runner.step(prompt.numpy(), keys, values)  # prefill with an empty cache
    nxt = random_tokens(2, 1, seed=4).numpy()
    step_logits, keys, _ = runner.step(nxt, keys, values)
    full = eager_logits(model, np.concatenate([prompt.numpy(), nxt], axis=1))
    assert keys.shape[3] == 7
    assert (
        np.abs(logits - full[:, :6]).max() < FP32_ATOL and np.abs(step_logits - full[:, 6:]).max() < FP32_ATOL
    )
