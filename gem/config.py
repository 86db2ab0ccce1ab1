"""Model configuration for GEM (arXiv 2503.22698): the decoder-only LM with a dense, SCAR or top-k MoE FFN.

The paper gives no architecture, sizes or equations (only the abstract survives; the authors' released code is a
BERT-base classifier), so every field below is our choice; the definitions are written out in the package
README ("Definitions (ours)"). Defaults are the small embedded scale (about 2.9M parameters with SCAR, 1.3M
dense) that trains on 2 CPU cores; ``paper_scale_model_config()`` is a ~25M-parameter edge-sized model.

Every dataclass documents its fields in an ``Attributes:`` block (one ``name: meaning`` line per field);
``attribute_docs`` reads it so command-line ``--help`` can be generated from the same text.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Literal

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
    n_experts: int = 4
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
    """An edge-sized SCAR model of about 25M parameters (8k vocabulary, 6 blocks of width 384, 4 paths).

    Only "on-device" is known of the paper's model, so this is our choice of a size that still runs in well
    under 100 ms per forward on a phone-class CPU.
    """
    base = dict(
        vocab_size=8192, context_length=512, n_layers=6, n_heads=6, d_model=384, d_ff=1024, n_experts=4
    )
    base.update(overrides)
    return ModelConfig(**base)  # type: ignore[arg-type]


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
