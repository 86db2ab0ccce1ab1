"""Typed configuration for INFNet and the baselines: ``data`` / ``model`` / ``train`` sections.

Every ambiguity of the paper (arXiv 2508.11565) is a ``ModelConfig`` field whose default is documented here
and in ``infnet/README.md`` ("Deviations"). YAML files in ``infnet/configs/`` are read first, then
``--set section.key=value`` overrides (``shared.config.load_config``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from infnet.data import DataConfig

MODEL_NAMES = ("infnet", "sharedbottom", "mmoe", "ple", "dcnv2", "din", "hstu")


@dataclass
class ModelConfig:
    name: Literal["infnet", "sharedbottom", "mmoe", "ple", "dcnv2", "din", "hstu"] = "infnet"
    embed_dim: int = 16  # d, the width of every token (paper searches {8..128})
    tower_dims: list[int] = field(default_factory=lambda: [64, 32])  # per-task MLP_i before the logit
    dropout: float = 0.0  # in towers, MLPs and attention outputs (paper searches {0, .1, .2})

    # --- INFNet (paper §3) -------------------------------------------------------------------------------
    n_blocks: int = 2  # N, not stated in the text (Fig. 4 unreadable)
    n_heads: int = 2  # heads of every cross-attention; not stated in the paper
    n_cat_proxies: int = 4  # m, categorical proxies (paper: 4 best, 8 worse)
    proxy_hidden: int = 64  # hidden width of the shared MLP phi_cat (depth not given: one hidden layer)
    # "per_behaviour": one proxy per behaviour sequence, sum of a shared projection (the equations);
    # "k": n_seq_proxies learned attention-pooled proxies over all L tokens (the 2/4/8 of §4.4)
    seq_proxy_mode: Literal["per_behaviour", "k"] = "per_behaviour"
    n_seq_proxies: int = 4  # only used when seq_proxy_mode == "k"
    seq_pool: Literal["sum", "mean"] = "sum"  # pooling of phi_seq within a behaviour (equations: sum)
    n_shared_task_tokens: int = 2  # N_s, the task proxies (paper: 2 best, 3 worse)
    residual: bool = True  # prose mentions residuals, equations have none
    norm: Literal["none", "layernorm"] = "layernorm"  # pre-norm of attention inputs; not stated in the paper
    # equations: layer-l proxies (then the C~/S~ updates of the last two blocks are dead); prose: layer l+1
    gate_uses: Literal["layer_l", "layer_l_plus_1"] = "layer_l_plus_1"
    gate_hidden: int = 64  # hidden width of the PGU MLP R^{n~ d} -> R^d
    # ablations of Table 3
    use_task_tokens: bool = True  # w/o1: towers read the shared task tokens instead
    use_pgu: bool = True  # w/o2: the homogeneous flow is the identity
    use_cross_attention: bool = True  # w/o3: every CA replaced by a parameter-free masked mean of its keys

    # --- baselines (infnet/baselines.py) --------------------------------------------------------------------
    bottom_dims: list[int] = field(default_factory=lambda: [128, 64])  # SharedBottom / DCNv2 deep / DIN MLP
    n_experts: int = 4  # MMoE experts; PLE: shared experts
    n_task_experts: int = 1  # PLE task-specific experts per task
    expert_dims: list[int] = field(default_factory=lambda: [64])  # each expert MLP
    ple_levels: int = 2  # PLE extraction layers (CGC = 1)
    n_cross_layers: int = 3  # DCNv2 cross layers
    din_target_field: str = "item_id"  # categorical field holding the candidate item (DIN query)
    din_attention_hidden: list[int] = field(default_factory=lambda: [36])  # DIN activation unit


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 20
    batch_size: int = 1024
    eval_batch_size: int = 4096
    lr: float = 1e-3
    weight_decay: float = 0.0  # L2 on all parameters via Adam's weight_decay (paper: {0, 1e-7, 1e-6, 1e-5})
    optimizer: Literal["adam", "adagrad"] = "adam"
    patience: int = 5  # early stopping on validation mean AUC (paper: 5)
    loss_weights: list[float] = field(default_factory=list)  # lambda_i; empty = all 1
    max_steps_per_epoch: int = 0  # 0 = the whole epoch (used by quick runs and tests)
    nan_at_step: int = -1  # injects a NaN loss at this step, to test the guard
    runs_root: str = "runs"
    deterministic: bool = False


@dataclass
class InfnetConfig:
    experiment: str = "movielens100k"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
