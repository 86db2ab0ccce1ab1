"""Edge export of a GEM LM: ONNX through ``torch.onnx.export(dynamo=True)``, ONNX Runtime on CPU, int8 with
``onnxruntime.quantization.quantize_dynamic`` (the paper's on-device claim, arXiv 2503.22698 abstract, gives
no runtime or protocol; ONNX Runtime on CPU is our stand-in for a phone or Raspberry Pi runtime).

Two graphs, both with dynamic batch and sequence length:

- ``export_onnx``           idx (B, T) int64 -> logits (B, T, V): the full-sequence forward.
- ``export_onnx_decoder``   idx (B, T), past_keys / past_values (L, B, H, P, D) -> logits (B, T, V),
                            present_keys / present_values (L, B, H, P + T, D): one KV-cache step (P = 0 is the
                            prefill), as HF's ``past_key_values`` decoding; ``OrtLM.generate_greedy`` drives it.

The routed FFN keeps its sparsity in the graph: the dispatch of gem/router.py (per path: NonZero of the tokens
routed to it, GatherND of their rows, the path's MatMuls on those rows only, ScatterND-add back) is exported
as is, so ONNX Runtime runs each expert only on its tokens. int8 turns every MatMul / Gemm with a weight
initializer (attention, FFN, experts, LM head) into DynamicQuantizeLinear + MatMulInteger; ``quant_pre_process``
is not used (it failed on these graphs; plain ``quantize_dynamic`` works).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from gem.model import GemLM
from shared.errors import ConfigError, DataError

OPSET = 18


class LogitsGraph(nn.Module):
    """idx (B, T) -> logits (B, T, V): what ``export_onnx`` traces."""

    def __init__(self, model: GemLM):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        hidden, _, _ = self.model.backbone(idx)
        return self.model.lm_head(hidden)


class DecoderStepGraph(nn.Module):
    """(idx, past_keys, past_values) -> (logits, present_keys, present_values): one KV-cache step."""

    def __init__(self, model: GemLM):
        super().__init__()
        self.model = model

    def forward(
        self, idx: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        past = list(zip(past_keys.unbind(0), past_values.unbind(0)))  # L x ((B, H, P, D), (B, H, P, D))
        hidden, _, presents = self.model.backbone(idx, past_kv=past)
        keys = torch.stack([k for k, _ in presents])  # (L, B, H, P + T, D)
        values = torch.stack([v for _, v in presents])
        return self.model.lm_head(hidden), keys, values


@contextlib.contextmanager
def _quiet():
    """The exporter and the quantiser log progress and shape-inference notes on the root logger / stdout."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), warnings.catch_warnings():
            # the same Dim object on several inputs makes the exporter warn that it reuses the axis name
            warnings.filterwarnings("ignore", message=".*axis name.*")
            yield
    finally:
        root.setLevel(level)


def _export(
    graph: nn.Module, args: tuple, dynamic: tuple, path: Path, inputs: list[str], outputs: list[str]
) -> Path:
    """Trace ``graph`` in eval mode (the wrapped model's train/eval mode is restored afterwards)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = graph.model.training
    try:
        with _quiet():
            torch.onnx.export(
                graph.eval(),
                args,
                str(path),
                dynamo=True,
                dynamic_shapes=dynamic,
                input_names=inputs,
                output_names=outputs,
                opset_version=OPSET,
                external_data=False,
            )
    finally:
        graph.model.train(was_training)
    onnx.checker.check_model(str(path))
    return path


def export_onnx(model: GemLM, path: str | Path) -> Path:
    """Export the full-sequence forward (fp32, traced in eval mode) to ``path``; batch and length stay dynamic."""
    cfg = model.cfg
    batch = torch.export.Dim("batch", min=1, max=1024)
    seq = torch.export.Dim("seq", min=1, max=cfg.context_length)
    example = torch.randint(0, cfg.vocab_size, (2, min(8, cfg.context_length)))
    return _export(LogitsGraph(model), (example,), ({0: batch, 1: seq},), Path(path), ["idx"], ["logits"])


def export_onnx_decoder(model: GemLM, path: str | Path) -> Path:
    """Export one KV-cache step (prefill when P = 0, then one token at a time), traced in eval mode."""
    cfg = model.cfg
    if cfg.context_length < 6:
        raise ConfigError("export_onnx_decoder: needs model.context_length >= 6 to trace the example step")
    batch = torch.export.Dim("batch", min=1, max=1024)
    seq = torch.export.Dim("seq", min=1, max=cfg.context_length)
    past = torch.export.Dim("past", min=0, max=cfg.context_length)
    kv_shape = (cfg.n_layers, 2, cfg.n_heads, 3, cfg.head_dim)
    example = (torch.randint(0, cfg.vocab_size, (2, 2)), torch.randn(kv_shape), torch.randn(kv_shape))
    dynamic = ({0: batch, 1: seq}, {1: batch, 3: past}, {1: batch, 3: past})
    return _export(
        DecoderStepGraph(model),
        example,
        dynamic,
        Path(path),
        ["idx", "past_keys", "past_values"],
        ["logits", "present_keys", "present_values"],
    )


def fold_transposed_matmul_weights(model: onnx.ModelProto) -> int:
    """Give every MatMul that reads ``Transpose(initializer)`` its own transposed initializer; the count.

    The tied LM head exports as MatMul(h, Transpose(W_emb)) beside Gather(W_emb, idx). ``quantize_dynamic``
    only quantises a MatMul whose weight is an initializer, so without this it quantises the shared matrix
    per tensor for the Gather and runs the LM head, the largest matmul of the model, as an fp32 MatMul on a
    DequantizeLinear of it on every call. With its own (C, V) copy the head becomes a per-channel int8
    MatMulInteger; the file holds one more int8 copy of the matrix (V x C bytes).
    """
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    folded, done = 0, {}
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2:
            continue
        src = producers.get(node.input[1])
        if src is None or src.op_type != "Transpose" or src.input[0] not in inits:
            continue
        perm = next((list(a.ints) for a in src.attribute if a.name == "perm"), None)
        weight = onnx.numpy_helper.to_array(inits[src.input[0]])
        if weight.ndim != 2 or perm not in (None, [1, 0]):
            continue
        name = done.get(src.input[0])
        if name is None:
            name = f"{src.input[0]}_transposed"
            graph.initializer.append(onnx.numpy_helper.from_array(np.ascontiguousarray(weight.T), name))
            done[src.input[0]] = name
        node.input[1] = name
        folded += 1
    used = {name for node in graph.node for name in node.input}
    keep = [node for node in graph.node if node.op_type != "Transpose" or any(o in used for o in node.output)]
    del graph.node[:]
    graph.node.extend(keep)  # the Transposes that only fed folded MatMuls are gone
    return folded


def quantize_onnx_int8(src: str | Path, dst: str | Path) -> Path:
    """int8 weights (symmetric, per output channel) and dynamically quantised activations.

    The tied LM head gets its own int8 copy first (``fold_transposed_matmul_weights``), so it runs as an
    int8 MatMul like every other weight matmul.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DataError(f"ONNX model {src} not found; export it first (gem.export.export_onnx)")
    model = onnx.load(str(src))
    fold_transposed_matmul_weights(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp, _quiet():
        folded = Path(tmp) / src.name
        onnx.save(model, str(folded))
        quantize_dynamic(str(folded), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    return dst


def ort_session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU ``InferenceSession`` with ``threads`` intra-op threads, one inter-op thread, all graph optimisations."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ONNX model {path} not found; export it first (gem.export.export_onnx)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_weight_bits(path: str | Path) -> int:
    """Bits of the graph's initializers as stored in the file (dense: ONNX Runtime stores pruned zeros too).

    The int8 graph keeps two int8 copies of the tied embedding / LM head (the Gather's, per tensor, and the
    head's, per channel: ``fold_transposed_matmul_weights``), like the torch int8 model beside its fp32
    embedding in ``storage_bits`` (gem/compress.py, which also counts pruned zeros as free); the RoPE tables
    are initializers here and count too.
    """
    bits = 0
    for init in onnx.load(str(path)).graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        bits += arr.dtype.itemsize * 8 * arr.size
    return bits


_PASS_THROUGH = {"Reshape", "Squeeze", "Unsqueeze", "Cast", "Identity", "DynamicQuantizeLinear"}
_MATMULS = {"MatMul", "Gemm", "MatMulInteger"}
_EXPERT_FC = re.compile(r"blocks\.(\d+)\.ffn\.experts\.(\d+)\.fc\.weight")


def sparse_dispatch_check(path: str | Path) -> dict[str, Any]:
    """Whether an exported routed graph (fp32 or int8) runs each expert path only on its gathered rows.

    For every path (block b, expert e), the MatMul / Gemm / MatMulInteger that reads its first weight
    (``blocks.b.ffn.experts.e.fc.weight``, or its quantised copy) is followed back through shape-only ops and
    the int8 graphs' DynamicQuantizeLinear to the op that produced its rows; the graph is sparse when that is
    a GatherND for every path (the rows routed to the path), never the full (N, C) hidden state. A dense
    graph (no expert weights) reports ``sparse`` False with 0 paths.
    """
    graph = onnx.load(str(path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    paths: dict[tuple[int, int], str] = {}  # (block, expert) -> op type that produced its rows
    for node in graph.node:
        if node.op_type not in _MATMULS:
            continue
        match = next((m for m in map(_EXPERT_FC.search, node.input[1:]) if m), None)
        if match is None:
            continue
        src = producers.get(node.input[0])
        while src is not None and src.op_type in _PASS_THROUGH:
            src = producers.get(src.input[0])
        paths[int(match.group(1)), int(match.group(2))] = "graph input" if src is None else src.op_type
    ops = Counter(node.op_type for node in graph.node)
    fed = sum(op == "GatherND" for op in paths.values())
    return {
        "expert_paths": len(paths),
        "paths_fed_by_gathered_rows": fed,
        "sparse": bool(paths) and fed == len(paths),
        "row_sources": dict(Counter(paths.values())),
        "nodes": len(graph.node),
        "nonzero_nodes": ops["NonZero"],
        "gathernd_nodes": ops["GatherND"],
        "scatternd_nodes": ops["ScatterND"],
    }


class OrtLM:
    """ONNX Runtime runner: full-sequence logits and (with a decoder graph) greedy KV-cache decoding."""

    def __init__(
        self,
        logits_path: str | Path | None = None,
        decoder_path: str | Path | None = None,
        *,
        context_length: int,
        threads: int = 1,
    ):
        if logits_path is None and decoder_path is None:
            raise ConfigError("OrtLM: give logits_path and/or decoder_path")
        self.logits_session = ort_session(logits_path, threads) if logits_path is not None else None
        self.decoder_session = ort_session(decoder_path, threads) if decoder_path is not None else None
        self.context_length = context_length

    def _check(self, n_tokens: int) -> None:
        if n_tokens > self.context_length:
            raise DataError(
                f"{n_tokens} tokens exceed the exported model's context_length={self.context_length}"
            )

    def logits(self, idx: np.ndarray) -> np.ndarray:
        """idx (B, T) int64 -> logits (B, T, V) float32."""
        if self.logits_session is None:
            raise ConfigError("OrtLM.logits needs logits_path (gem.export.export_onnx)")
        self._check(idx.shape[1])
        return self.logits_session.run(["logits"], {"idx": np.ascontiguousarray(idx, dtype=np.int64)})[0]

    def step(
        self, idx: np.ndarray, past_keys: np.ndarray, past_values: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One decoder call: (logits (B, T, V), present_keys, present_values)."""
        if self.decoder_session is None:
            raise ConfigError("OrtLM.step needs decoder_path (gem.export.export_onnx_decoder)")
        self._check(past_keys.shape[3] + idx.shape[1])
        feeds = {
            "idx": np.ascontiguousarray(idx, dtype=np.int64),
            "past_keys": past_keys,
            "past_values": past_values,
        }
        logits, keys, values = self.decoder_session.run(None, feeds)
        return logits, keys, values

    def empty_cache(
        self, batch: int, n_layers: int, n_heads: int, head_dim: int
    ) -> tuple[np.ndarray, np.ndarray]:
        shape = (n_layers, batch, n_heads, 0, head_dim)
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    def generate_greedy(
        self, prompt: np.ndarray, max_new_tokens: int, cache_shape: tuple[int, int, int]
    ) -> np.ndarray:
        """prompt (B, T) -> (B, T + max_new_tokens); ``cache_shape`` = (n_layers, n_heads, head_dim)."""
        self._check(prompt.shape[1] + max_new_tokens)
        keys, values = self.empty_cache(prompt.shape[0], *cache_shape)
        seq, step_input = prompt.astype(np.int64), prompt.astype(np.int64)
        for _ in range(max_new_tokens):
            logits, keys, values = self.step(step_input, keys, values)
            nxt = logits[:, -1].argmax(-1)[:, None]  # (B, 1)
            seq = np.concatenate([seq, nxt], axis=1)
            step_input = nxt
        return seq


def time_ort(
    session: ort.InferenceSession, feeds: dict[str, np.ndarray], repeats: int = 20, warmup: int = 3
) -> float:
    """Median wall time in ms of ``session.run`` on ``feeds``."""
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))
