"""Configuration of GEM (arXiv 2503.22698): ``GemConfig`` with the sections ``data``, ``model``, ``train``,
``distill`` and ``eval``; ``ModelConfig`` is the decoder-only LM with a dense, SCAR or top-k MoE FFN.

The paper gives no architecture, sizes, equations or training recipe (only the abstract survives; the authors'
released code is a BERT-base classifier trained with AdamW 2e-5, 100 warm-up steps, batch 16, 3 epochs), so
every field below is our choice; the definitions are written out in the package README ("Definitions (ours)").
Defaults are the small embedded scale (about 2.9M parameters with SCAR, 1.3M dense) that trains on 2 CPU
cores; ``paper_scale_model_config()`` is a ~25M-parameter edge-sized model (``configs/paper_scale.yaml``).
YAML files in ``gem/configs/`` are read first, then ``--set section.key=value`` overrides
(``shared.config.load_config``); ``--help`` lists every key with the meaning given in ``Attributes:``.

Every dataclass documents its fields in an ``Attributes:`` block (one ``name: meaning`` line per field);
``attribute_docs`` reads it so command-line ``--help`` can be generated from the same text.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Literal

from gem.data.config import DataConfig
from shared.errors import ConfigError

FFNKind = Literal["dense", "scar", "moe"]
NormKind = Literal["rmsnorm", "layernorm"]


@dataclass
class ModelConfig:
    """The language model: pre-norm decoder with RoPE, tied embeddings and a dense / SCAR / MoE FFN.

    Attributes:
        ffn: FFN of the routed layers: dense (one FFN), scar (threshold-routed expert paths) or moe (softmax top-k)
        vocab_size: size of the byte-level BPE vocabulary (must match the tokenizer)
        context_length: longest sequence (prompt plus generated tokens) the model accepts
        n_layers: number of transformer blocks
        n_heads: attention heads per block (d_model / n_heads must be even for RoPE)
        d_model: residual stream width
        d_ff: hidden width of the dense FFN and of each expert path
        norm: normalisation before attention, before the FFN and before the LM head
        norm_eps: epsilon of the normalisation
        rope_base: RoPE base frequency theta
        dropout: dropout on attention weights, block outputs and the classification heads (0 = off)
        init_std: standard deviation of the normal initialisation of linear and embedding weights
        n_experts: number of expert FFN paths E in each routed layer (scar and moe)
        routed_layers: indices of the blocks whose FFN is routed; null = every block (scar and moe)
        router_slots: number R of learned domain/expert vectors the SCAR router attends to
        router_dim: width of the SCAR router's queries and slot keys
        scar_threshold: SCAR keeps the fewest paths whose probabilities sum to at least this tau, in (0, 1]
        scar_k_min: fewest paths a token may use under SCAR
        scar_k_max: most paths a token may use under SCAR
        moe_top_k: fixed number of paths per token of the softmax top-k MoE ablation
        balance_loss_weight: weight of the load-balancing loss in the training loss
        z_loss_weight: weight of the router z-loss in the training loss (0 = off)
        task_labels: classification task name -> number of classes (one linear head per task)
    """

    ffn: FFNKind = "scar"
    vocab_size: int = 4096
    context_length: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    d_ff: int = 512
    norm: NormKind = "rmsnorm"
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    dropout: float = 0.0
    init_std: float = 0.02
    n_experts: int = 8  # Mixtral's 8 paths; with k in [1, 2] a token runs 12-25% of them
    routed_layers: list[int] | None = None
    router_slots: int = 8
    router_dim: int = 32
    scar_threshold: float = 0.5
    scar_k_min: int = 1
    scar_k_max: int = 2
    moe_top_k: int = 2
    balance_loss_weight: float = 0.01
    z_loss_weight: float = 0.001
    task_labels: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "n_layers", "n_heads", "d_model", "d_ff"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}={getattr(self, name)}: must be a positive integer")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ConfigError(
                f"model.d_model={self.d_model}, model.n_heads={self.n_heads}: d_model / n_heads must be an "
                "even integer (RoPE rotates pairs of channels); change one of them"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout}: must be in [0, 1)")
        if self.norm_eps <= 0 or self.init_std <= 0 or self.rope_base <= 1:
            raise ConfigError("model.norm_eps and model.init_std must be > 0 and model.rope_base > 1")
        if self.balance_loss_weight < 0 or self.z_loss_weight < 0:
            raise ConfigError("model.balance_loss_weight and model.z_loss_weight must be >= 0")
        for task, n in self.task_labels.items():
            if not task or "." in task:
                raise ConfigError(
                    f"model.task_labels: task name {task!r} must be non-empty and contain no '.'"
                )
            if n < 2:
                raise ConfigError(f"model.task_labels.{task}={n}: a classification task needs >= 2 classes")
        if self.ffn != "dense":
            self._check_routing()

    def _check_routing(self) -> None:
        e = self.n_experts
        if e < 2:
            raise ConfigError(f"model.n_experts={e}: ffn={self.ffn} needs at least 2 expert paths")
        if self.routed_layers is not None:
            bad = [i for i in self.routed_layers if not 0 <= i < self.n_layers]
            if bad or len(set(self.routed_layers)) != len(self.routed_layers) or not self.routed_layers:
                raise ConfigError(
                    f"model.routed_layers={self.routed_layers}: need distinct block indices in "
                    f"[0, {self.n_layers}) (or null for every block)"
                )
        if self.ffn == "scar":
            if not 0.0 < self.scar_threshold <= 1.0:
                raise ConfigError(f"model.scar_threshold={self.scar_threshold}: must be in (0, 1]")
            if self.router_slots < 1 or self.router_dim < 1:
                raise ConfigError("model.router_slots and model.router_dim must be >= 1")
            if not 1 <= self.scar_k_min <= self.scar_k_max <= e:
                raise ConfigError(
                    f"model.scar_k_min={self.scar_k_min}, model.scar_k_max={self.scar_k_max}: need "
                    f"1 <= scar_k_min <= scar_k_max <= n_experts={e}"
                )
        elif not 1 <= self.moe_top_k <= e:
            raise ConfigError(f"model.moe_top_k={self.moe_top_k}: must be in [1, n_experts={e}]")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def is_routed(self, layer: int) -> bool:
        """Whether block ``layer`` has a routed FFN (always False for ffn=dense)."""
        if self.ffn == "dense":
            return False
        return self.routed_layers is None or layer in self.routed_layers

    @property
    def k_bounds(self) -> tuple[int, int]:
        """(k_min, k_max) of the routed layers: SCAR's clip range, or (k, k) for the top-k MoE."""
        if self.ffn == "scar":
            return self.scar_k_min, self.scar_k_max
        return self.moe_top_k, self.moe_top_k


def paper_scale_model_config(**overrides: object) -> ModelConfig:
    """An edge-sized SCAR model of about 25M parameters (8k vocabulary, 6 blocks of width 384, 8 paths of 512).

    Only "on-device" is known of the paper's model, so this is our choice of a size that still runs in well
    under 100 ms per forward on a phone-class CPU.
    """
    base = dict(
        vocab_size=8192, context_length=512, n_layers=6, n_heads=6, d_model=384, d_ff=512, n_experts=8
    )
    base.update(overrides)
    return ModelConfig(**base)  # type: ignore[arg-type]


@dataclass
class TrainConfig:
    """One training run: a mixture of domains (LM blocks + each domain's classification task), optimiser, run.

    An "epoch" here is ``steps_per_epoch`` optimiser steps, the validation interval; each step draws a batch of
    LM blocks (each row's domain sampled with p_d proportional to n_d ** sampling_alpha, n_d = the domain's
    training LM blocks) and a batch of task examples (each example's task sampled likewise by the tasks'
    training examples).

    Attributes:
        seed: seed of python, numpy and torch (the rank is added under DDP) and of every step's batch draw
        epochs: number of validation intervals ("epochs" of steps_per_epoch steps)
        steps_per_epoch: optimiser steps between validations (0 = one pass over the trained domains' LM blocks)
        lm_batch_size: LM blocks of data.context_len tokens per step, per process under DDP (0 = no LM loss)
        cls_batch_size: task examples per step (mixed over the tasks), per process under DDP (0 = no task loss)
        cls_weight: lambda, the mixing weight of L = L_LM + lambda * L_cls + routing losses
        sampling_alpha: exponent of the domain / task sampling p ~ n ** alpha (0 = uniform, 1 = by size)
        domains: domains to train on; [] = every training domain of the suite (all but data.held_out_domain)
        init_from: checkpoint (best.pt / last.pt of a gem.train run) whose weights start this run ("" = scratch)
        lr: peak AdamW learning rate
        min_lr_ratio: the cosine schedule ends at lr * min_lr_ratio
        warmup_steps: linear warm-up steps from 0 to lr
        weight_decay: AdamW decoupled weight decay on the matrices (not on norms, biases)
        grad_clip: clip the global gradient norm to this value (0 = off)
        select_by: best checkpoint by f1 (mean val macro F1 over the trained domains' tasks) or loss (mean val LM NLL over the trained domains)
        amp: bf16 autocast on CUDA (ignored on CPU, where training runs in float32)
        log_every: one progress log line every this many steps when stderr is not a terminal (0 = none)
        nan_at_step: inject a NaN loss at this step, to test the guard (-1: never)
        runs_root: folder holding runs/gem/<experiment>/<timestamp>/
    """

    seed: int = 0
    epochs: int = 3
    steps_per_epoch: int = 130
    lm_batch_size: int = 8
    cls_batch_size: int = 24
    cls_weight: float = 1.0
    sampling_alpha: float = 0.5
    domains: list[str] = field(default_factory=list)
    init_from: str = ""
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    select_by: Literal["f1", "loss"] = "f1"
    amp: bool = False
    log_every: int = 50
    nan_at_step: int = -1
    runs_root: str = "runs"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.epochs}")
        for name in ("steps_per_epoch", "lm_batch_size", "cls_batch_size", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.lm_batch_size == 0 and self.cls_batch_size == 0:
            raise ConfigError("train.lm_batch_size and train.cls_batch_size are both 0: nothing to train on")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.cls_weight < 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.sampling_alpha < 0:
            raise ConfigError(
                "train.cls_weight, train.weight_decay, train.grad_clip and train.sampling_alpha must be >= 0"
            )


@dataclass
class DistillConfig:
    """Knowledge preservation: distillation from a frozen teacher while fine-tuning (our reading of GEM's
    "weighted distillation framework"; the loss is ``gem.model.knowledge_preservation_loss``).

    L = L_LM + alpha T^2 KL_LM + lambda (L_cls + alpha T^2 KL_cls) + routing losses, with KL(teacher || student)
    on the LM logits of every real token and on the class logits of the tasks the teacher was trained on.

    Attributes:
        alpha: weight of the distillation terms (0 = plain fine-tuning)
        temperature: softmax temperature T of teacher and student
        teacher: checkpoint of the frozen teacher ("" = train.init_from); loaded when alpha > 0 or when set
        targets: which logits are distilled: both, lm (next-token) or cls (class logits)
    """

    alpha: float = 0.0
    temperature: float = 2.0
    teacher: str = ""
    targets: Literal["both", "lm", "cls"] = "both"

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ConfigError(f"distill.alpha must be >= 0, got {self.alpha}")
        if self.temperature <= 0:
            raise ConfigError(f"distill.temperature must be > 0, got {self.temperature}")


@dataclass
class EvalConfig:
    """How validation (each epoch) and the final test scoring read the suite.

    Attributes:
        batch_size: sequences per evaluation forward pass
        max_lm_tokens: test LM tokens scored per domain (a seeded subset of whole blocks, the same for every model; 0 = all)
        max_examples: test examples scored per classification task (a seeded subset; 0 = all)
        multiple_choice: also score the multiple-choice tasks (MMLU) on the test split
        max_mc_examples: test questions scored per multiple-choice task (a seeded subset; 0 = all)
        val_max_lm_tokens: like max_lm_tokens, for each validation
        val_max_examples: like max_examples, for each validation
        val_domains: domains scored at each validation: all (every domain of the suite) or trained (train.domains)
    """

    batch_size: int = 32
    max_lm_tokens: int = 16384
    max_examples: int = 0
    multiple_choice: bool = True
    max_mc_examples: int = 0
    val_max_lm_tokens: int = 8192
    val_max_examples: int = 300
    val_domains: Literal["all", "trained"] = "all"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"eval.batch_size must be >= 1, got {self.batch_size}")
        for name in (
            "max_lm_tokens",
            "max_examples",
            "max_mc_examples",
            "val_max_lm_tokens",
            "val_max_examples",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"eval.{name} must be >= 0 (0 = all), got {getattr(self, name)}")


@dataclass
class GemConfig:
    """GEM's config: one YAML file in gem/configs/ with these sections.

    Attributes:
        experiment: name of the run folder under runs/gem/
        data: the data section (gem.data.DataConfig): suite, splits, tokenizer, extra benchmark tasks
        model: the model section (ModelConfig); model.task_labels is filled from the suite by gem.train
        train: the train section (domains, batches, optimiser, init_from)
        distill: the knowledge-preservation (distillation) section
        eval: the validation / test scoring section
    """

    experiment: str = "suite"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


_ATTR_LINE = re.compile(r"^\s{4,}(\w+):\s*(.+)$")


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: one-line meaning}`` from the ``Attributes:`` block of a dataclass docstring."""
    doc = cls.__doc__ or ""
    _, _, block = doc.partition("Attributes:")
    out: dict[str, str] = {}
    for line in block.splitlines():
        match = _ATTR_LINE.match(line)
        if match:
            out[match.group(1)] = match.group(2).strip()
        elif line.strip() and out:
            break  # the block ends at the first line that is not a field line
    return out


def undocumented_fields(cls: type) -> list[str]:
    """Fields of dataclass ``cls`` (and of nested dataclass fields) without an ``Attributes:`` line."""
    docs = attribute_docs(cls)
    hints = typing.get_type_hints(cls)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in docs]
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            missing += [f"{f.name}.{m}" for m in undocumented_fields(tp)]
    return missing
