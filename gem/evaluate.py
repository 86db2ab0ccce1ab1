"""Scoring of a GEM LM on the suite: per-domain perplexity, macro F1, MMLU accuracy, routing cost and use.

    python -m gem.evaluate --config C --checkpoint P [--split test] [--out metrics.json] [--device auto]
                           [--compress int8 | prune:0.5 | int8+prune:0.5]

GEM (arXiv 2503.22698) reports cross-domain F1 and perplexity; the paper gives no protocol, so this one is
ours (package README, "Definitions (ours)"):

- perplexity of domain d: exp(sum NLL / tokens) over LM blocks of ``data.context_len`` tokens of d's split
  (``eval.max_lm_tokens`` caps it: a seeded subset of whole blocks, the same for every model);
- macro F1 of each classification task (class logits of the task's head, argmax), and per domain the mean
  over its tasks; the examples are a seeded subset when ``eval.max_examples`` caps them;
- multiple-choice accuracy (MMLU, test split only): the choice with the highest summed log-probability of
  its continuation tokens (lm-evaluation-harness ``multiple_choice``, ``gem.model.continuation_logprob``);
- cost and routing on d's LM blocks: mean paths per token k per routed layer, active parameters per token
  (``gem.model.expected_active_params``, exact for the measured mean k since the count is affine in k) and
  the router's use of each path (share of the token-path assignments, per routed layer).

The command rebuilds the model from the checkpoint's own ``model`` section (another paper's checkpoint is
refused, naming it) and reads the data with ``--config``'s ``data`` and ``eval`` sections; ``--compress``
scores a post-training compressed copy (``gem.compress``, int8 runs on the CPU) and adds its compression
intensity. Under ``torchrun`` every rank scores a shard and the results are gathered, so the numbers equal a
single-process run.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gem.compress import Variant, compress
from gem.config import EvalConfig, GemConfig, ModelConfig
from gem.data import (
    ClassificationDataset,
    GemTokenizer,
    LMBlockDataset,
    MultipleChoiceDataset,
    Suite,
    collate_classification,
    collate_multiple_choice,
    load_suite,
    load_tokenizer,
)
from gem.model import GemLM, continuation_logprob, count_params, expected_active_params
from shared.checkpoint import load_checkpoint, restore_checkpoint
from shared.cli import evaluate_parser, write_json_out
from shared.config import config_from_dict, load_config
from shared.distributed import DistInfo, all_gather_object, cleanup_distributed, init_distributed
from shared.errors import ConfigError, DataError, run_cli
from shared.metrics import f1_scores, perplexity

TOKENIZER_FILE = "tokenizer.json"


def task_domain(task: Any) -> str:
    """The domain a task is reported under (a benchmark without a ``domain`` field: its own name)."""
    return task.domain or task.name


def load_data(cfg: GemConfig) -> tuple[Suite, GemTokenizer]:
    """The built suite and its tokenizer (``DataError`` naming ``make data-gem`` when missing)."""
    suite = load_suite(cfg.data)
    return suite, load_tokenizer(suite.dir / TOKENIZER_FILE)


def _subset(n: int, cap: int, name: str) -> list[int]:
    """Indices of a seeded subset of ``cap`` of ``n`` items in their order (all when cap is 0 or >= n).

    Seeded by the name alone, so every model and every run is scored on the same items."""
    if cap <= 0 or n <= cap:
        return list(range(n))
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return sorted(rng.choice(n, size=cap, replace=False).tolist())


@dataclass
class EvalSets:
    """Tokenized evaluation data of one split.

    Attributes:
        split: val or test
        lm: domain -> (n_blocks, T + 1) long token blocks (inputs = [:, :-1], targets = [:, 1:])
        classification: task -> its ClassificationDataset (seeded subset)
        multiple_choice: task -> its MultipleChoiceDataset (seeded subset)
        task_domains: task -> the domain it is reported under
    """

    split: str
    lm: dict[str, torch.Tensor] = field(default_factory=dict)
    classification: dict[str, ClassificationDataset] = field(default_factory=dict)
    multiple_choice: dict[str, MultipleChoiceDataset] = field(default_factory=dict)
    task_domains: dict[str, str] = field(default_factory=dict)


def build_eval_sets(
    suite: Suite, tok: GemTokenizer, cfg: GemConfig, split: str, domains: Sequence[str] | None = None
) -> EvalSets:
    """LM blocks, classification and multiple-choice examples of ``split`` for ``domains`` (None = all)."""
    e, T = cfg.eval, cfg.data.context_len
    max_tokens = e.val_max_lm_tokens if split == "val" else e.max_lm_tokens
    max_examples = e.val_max_examples if split == "val" else e.max_examples
    wanted = set(suite.domains if domains is None else domains)
    sets = EvalSets(split)
    for d in suite.domains:
        if d not in wanted:
            continue
        docs = tok.encode_batch(suite.lm_texts(d, split))
        blocks = LMBlockDataset(docs, T, tok.eos_id, seed=None)
        if len(blocks) == 0:
            continue
        keep = _subset(len(blocks), max(1, max_tokens // T) if max_tokens else 0, f"lm/{d}/{split}")
        stream = blocks.stream
        sets.lm[d] = torch.stack([stream[i * T : i * T + T + 1] for i in keep])  # (n, T + 1)
    for name in suite.task_names:
        task = suite.task(name)
        dom = task_domain(task)
        examples = task.split(split)
        if (domains is not None and dom not in wanted) or not examples:
            continue
        if task.kind == "classification":
            keep = _subset(len(examples), max_examples, f"task/{name}/{split}")
            sets.classification[name] = ClassificationDataset(
                [examples[i] for i in keep], tok, cfg.data.max_len
            )
        elif task.kind == "multiple_choice" and e.multiple_choice and split == "test":
            keep = _subset(len(examples), e.max_mc_examples, f"mc/{name}/{split}")
            sets.multiple_choice[name] = MultipleChoiceDataset(
                [examples[i] for i in keep], tok, cfg.data.max_len
            )
        else:
            continue
        sets.task_domains[name] = dom
    return sets


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled`` (``train.amp``); float32 everywhere else."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _shard(items: Sequence[Any], info: DistInfo | None) -> Sequence[Any]:
    return items if info is None or not info.distributed else items[info.rank :: info.world_size]


def _batches(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _gather(obj: Any, info: DistInfo | None) -> list[Any]:
    return [obj] if info is None or not info.distributed else all_gather_object(obj)


@torch.no_grad()
def _lm_scores(
    model: GemLM, blocks: torch.Tensor, e: EvalConfig, device: torch.device, info: DistInfo | None, amp: bool
) -> dict[str, Any]:
    """NLL sum, token count and per-layer routing counts over the (rank's share of the) blocks."""
    n_routed = sum(b.routed for b in model.blocks)
    k_sum = np.zeros(n_routed)
    paths = np.zeros((n_routed, model.cfg.n_experts))
    nll, tokens = 0.0, 0
    rows = _shard(list(range(blocks.shape[0])), info)
    for idx in _batches(rows, e.batch_size):
        chunk = blocks[list(idx)].to(device)  # (b, T + 1)
        with autocast(device, amp):
            out = model(chunk[:, :-1], chunk[:, 1:])
        nll += float(out.nll.double().sum())
        tokens += chunk[:, 1:].numel()
        for layer, r in enumerate(out.routing):
            k_sum[layer] += float(r.k.double().sum())
            paths[layer] += torch.bincount(r.experts[r.active()], minlength=paths.shape[1]).cpu().numpy()
    return {"nll": nll, "tokens": tokens, "k_sum": k_sum, "paths": paths}


@torch.no_grad()
def _classify(
    model: GemLM,
    task: str,
    ds: ClassificationDataset,
    e: EvalConfig,
    device: torch.device,
    info: DistInfo | None,
    pad_id: int,
    amp: bool,
) -> tuple[list[int], list[int]]:
    """(labels, predictions) of the rank's share, batched by length (less padding; order does not matter)."""
    rows = sorted(_shard(list(range(len(ds))), info), key=lambda i: len(ds.ids[i]))
    labels, preds = [], []
    for idx in _batches(rows, e.batch_size):
        batch = collate_classification([ds[i] for i in idx], pad_id)
        with autocast(device, amp):
            logits = model.classify(batch["input_ids"].to(device), batch["lengths"].to(device), task).logits
        labels += batch["labels"].tolist()
        preds += logits.argmax(-1).cpu().tolist()
    return labels, preds


@torch.no_grad()
def _multiple_choice(
    model: GemLM,
    ds: MultipleChoiceDataset,
    e: EvalConfig,
    device: torch.device,
    info: DistInfo | None,
    pad_id: int,
    amp: bool,
) -> tuple[int, int]:
    """(correct, questions) of the rank's share: the choice with the highest continuation log-probability."""
    rows = _shard(list(range(len(ds))), info)
    n_choices = max((len(ds[i]["choices"]) for i in rows), default=1)
    correct = 0
    for idx in _batches(rows, max(1, e.batch_size // n_choices)):
        batch = collate_multiple_choice([ds[i] for i in idx], pad_id)
        with autocast(device, amp):
            score = continuation_logprob(
                model, batch["input_ids"].to(device), batch["score_mask"].to(device)
            ).float()  # (N,)
        score_np, owner = score.cpu().numpy(), batch["example_index"].numpy()
        for i, label in enumerate(batch["labels"].tolist()):
            correct += int(np.argmax(score_np[owner == i]) == label)  # ties: the first choice wins
    return correct, len(rows)


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v == v]  # drop NaN
    return float(np.mean(vals)) if vals else float("nan")


@torch.no_grad()
def evaluate_model(
    model: GemLM,
    sets: EvalSets,
    e: EvalConfig,
    pad_id: int,
    device: torch.device,
    info: DistInfo | None = None,
    amp: bool = False,
) -> dict[str, Any]:
    """Every metric of the module docstring on ``sets``; the same numbers on 1 or N ranks.

    Keys: split, ppl / lm_tokens / mean_k / active_params / router_utilisation (per domain), f1 / accuracy /
    examples (per classification task), domain_f1 (per domain: mean over its tasks), mc_accuracy /
    mc_examples (per multiple-choice task), domain_mc_accuracy, mean_f1 (over domain_f1), params, skipped.
    """
    was_training = model.training
    model.eval()
    cfg: ModelConfig = model.cfg
    quantized = any("quantized" in type(m).__module__ for m in model.modules())
    total = count_params(cfg)
    out: dict[str, Any] = {"split": sets.split, "params": total}
    out |= {k: {} for k in ("ppl", "lm_tokens", "mean_k", "active_params", "router_utilisation")}
    for d, blocks in sets.lm.items():
        parts = _gather(_lm_scores(model, blocks, e, device, info, amp), info)
        nll, tokens = sum(p["nll"] for p in parts), sum(p["tokens"] for p in parts)
        k_sum, paths = sum(p["k_sum"] for p in parts), sum(p["paths"] for p in parts)
        out["ppl"][d] = perplexity(nll, tokens)
        out["lm_tokens"][d] = tokens
        if paths.size:
            k_layer = k_sum / tokens  # (n_routed,) mean k per routed layer
            out["mean_k"][d] = float(k_layer.mean())
            out["active_params"][d] = expected_active_params(cfg, float(k_layer.mean()))
            share = paths / paths.sum(1, keepdims=True).clip(min=1)
            out["router_utilisation"][d] = share.tolist()  # (n_routed, E)
        else:
            out["active_params"][d] = float(total)
    out |= {k: {} for k in ("f1", "accuracy", "examples", "mc_accuracy", "mc_examples")}
    out["skipped"] = []
    heads = set(model.heads)
    for name, ds in sets.classification.items():
        if name not in heads:
            out["skipped"].append(f"{name}: the model has no head for it")
            continue
        parts = _gather(_classify(model, name, ds, e, device, info, pad_id, amp), info)
        labels = [y for p in parts for y in p[0]]
        preds = [y for p in parts for y in p[1]]
        out["f1"][name] = f1_scores(np.asarray(labels), np.asarray(preds))["macro_f1"]
        out["accuracy"][name] = float(np.mean(np.asarray(labels) == np.asarray(preds)))
        out["examples"][name] = len(labels)
    for name, ds in sets.multiple_choice.items():
        parts = _gather(_multiple_choice(model, ds, e, device, info, pad_id, amp), info)
        n = sum(p[1] for p in parts)
        out["mc_accuracy"][name] = sum(p[0] for p in parts) / max(n, 1)
        out["mc_examples"][name] = n
    by_domain: dict[str, list[str]] = {}
    for name, d in sets.task_domains.items():
        by_domain.setdefault(d, []).append(name)
    out["domain_f1"] = {
        d: _mean([out["f1"][t] for t in ts if t in out["f1"]])
        for d, ts in by_domain.items()
        if any(t in out["f1"] for t in ts)
    }
    out["domain_mc_accuracy"] = {
        d: _mean([out["mc_accuracy"][t] for t in ts if t in out["mc_accuracy"]])
        for d, ts in by_domain.items()
        if any(t in out["mc_accuracy"] for t in ts)
    }
    out["mean_f1"] = _mean(list(out["domain_f1"].values()))
    if quantized:
        out["note"] = "int8 model: active parameters counted from the fp32 architecture"
    model.train(was_training)
    return out


# ------------------------------------------------------------------------------------------ checkpoints


def model_config_of(state: dict[str, Any], checkpoint: str | Path) -> ModelConfig:
    config = state.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ConfigError(f"{checkpoint} carries no model config; it was not written by gem.train")
    try:
        return config_from_dict(ModelConfig, config["model"])
    except ConfigError as exc:
        raise ConfigError(f"{checkpoint}: {exc}") from None


def load_trained_model(checkpoint: str | Path, device: torch.device) -> tuple[GemLM, dict[str, Any]]:
    """The model a gem checkpoint describes, with its weights (eval mode), and the checkpoint."""
    state = load_checkpoint(checkpoint, map_location=device, paper="gem")
    model = GemLM(model_config_of(state, checkpoint)).to(device)
    restore_checkpoint(state, model=model, restore_rng=False)
    return model.eval(), state


def parse_compression(spec: str) -> tuple[float, bool]:
    """``int8`` | ``prune:S`` | ``int8+prune:S`` -> (sparsity, int8)."""
    sparsity, int8 = 0.0, False
    for part in spec.split("+"):
        if part == "int8":
            int8 = True
        elif part.startswith("prune:"):
            try:
                sparsity = float(part.split(":", 1)[1])
            except ValueError:
                sparsity = -1.0
            if not 0.0 < sparsity < 1.0:
                raise ConfigError(f"--compress {spec}: prune:S needs a sparsity S in (0, 1), e.g. prune:0.5")
        else:
            raise ConfigError(f"--compress {spec}: use int8, prune:S or int8+prune:S (e.g. int8+prune:0.5)")
    return sparsity, int8


def main(argv: Sequence[str] | None = None) -> None:
    parser = evaluate_parser(
        "score a trained GEM checkpoint on the suite (per-domain PPL, F1, MMLU)", GemConfig
    )
    parser.add_argument(
        "--compress",
        default=None,
        help="score a post-training compressed copy: int8, prune:S (magnitude pruning to sparsity S) or both",
    )
    args = parser.parse_args(argv)
    cfg = load_config(GemConfig, args.config, args.overrides)
    compression = parse_compression(args.compress) if args.compress else None
    info = init_distributed("cpu" if compression and compression[1] else args.device)
    try:
        model, state = load_trained_model(args.checkpoint, info.device)
        suite, tok = load_data(cfg)
        if tok.vocab_size > model.cfg.vocab_size:
            raise DataError(
                f"{suite.dir / TOKENIZER_FILE} has {tok.vocab_size} tokens but the checkpoint's model.vocab_size "
                f"is {model.cfg.vocab_size}: evaluate with the data the model was trained on"
            )
        variant: Variant | None = None
        if compression is not None:
            variant = compress(model, sparsity=compression[0], int8=compression[1])
            model = variant.model.to(info.device)
        sets = build_eval_sets(suite, tok, cfg, args.split)
        metrics = evaluate_model(model, sets, cfg.eval, tok.pad_id, info.device, info, cfg.train.amp)
        record: dict[str, Any] = {"checkpoint": str(args.checkpoint), "epoch": state.get("epoch")}
        if variant is not None:
            record["compression"] = {
                "name": variant.name,
                "intensity": variant.intensity,
                "sparsity": variant.sparsity,
                "int8": variant.int8,
            }
        if info.is_main:
            write_json_out(json.dumps({**record, **metrics}, indent=2, default=float), args.out)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
