"""Typed configuration for INFNet and the baselines: ``data`` / ``model`` / ``train`` sections.

Every ambiguity of the paper (arXiv 2508.11565v1 §3) is a ``ModelConfig`` field whose default is documented
here and in ``infnet/README.md`` ("Deviations"); the search space of §4.1 is in the paper-scale YAMLs'
comments. YAML files in ``infnet/configs/`` are read first, then ``--set section.key=value`` overrides
(``shared.config.load_config``); ``--help`` lists every key with the meaning given in ``Attributes:``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from infnet.data import DataConfig


@dataclass
class ModelConfig:
    """INFNet (arXiv 2508.11565v1 §3), its Table 3 ablations and the Table 1 baselines.

    Attributes:
        name: the model: infnet or a baseline (sharedbottom, mmoe, ple, dcnv2, din, hstu)
        embed_dim: d, the width of every token (the paper searches 8..128)
        embed_init_std: std of the normal init of every embedding table (FuxiCTR's and torch-rechub's 1e-4)
        tower_dims: hidden widths of each per-task tower MLP_i before its logit
        dropout: dropout in towers, MLPs and attention weights (the paper searches 0, 0.1, 0.2)
        mlp_norm: batchnorm (after every hidden Linear of the towers and the baselines' MLPs, as torch-rechub
            and FuxiCTR's MLP blocks) or none
        n_blocks: N, INFNet blocks (not stated in the paper)
        n_heads: heads of every cross-attention (not stated in the paper)
        n_cat_proxies: m, categorical proxies (the paper: 4 best, 8 worse)
        proxy_hidden: hidden width of the one-hidden-layer MLP phi_cat (its depth is not given)
        seq_proxy_mode: per_behaviour (one proxy per behaviour, the equations) or k (n_seq_proxies learned
            attention-pooled proxies over all L tokens, our reading of the 2/4/8 of §4.4)
        n_seq_proxies: k, the number of sequence proxies when seq_proxy_mode is k
        seq_pool: pooling of phi_seq within a behaviour: sum (the equations) or mean
        n_shared_task_tokens: N_s, the shared task tokens T~ (the paper: 2 best, 3 worse)
        residual: add each cross-attention update to its proxies / task tokens (prose: yes; equations: no)
        norm: layernorm (pre-norm of every attention input and the final task tokens) or none (not stated)
        gate_uses: proxies that gate the PGUs: layer_l_plus_1 (the prose) or layer_l (the equations)
        gate_hidden: hidden width of the PGU MLP R^{n~ d} -> R^d
        use_task_tokens: Table 3 w/o task tokens when false: the towers read the shared task tokens
        use_pgu: Table 3 w/o PGU when false: the homogeneous flow is the identity
        use_cross_attention: Table 3 w/o cross-attention when false: every CA becomes a masked mean
        bottom_dims: SharedBottom bottom MLP, DCNv2 deep part and DIN MLP widths
        n_experts: MMoE experts; PLE shared experts
        n_task_experts: PLE task-specific experts per task
        expert_dims: hidden widths of each expert MLP (MMoE, PLE)
        ple_levels: PLE extraction layers (1 = CGC)
        n_cross_layers: DCNv2 cross layers
        din_target_field: categorical field holding the candidate item (the query of DIN's attention)
        din_attention_hidden: hidden widths of DIN's activation unit
    """

    name: Literal["infnet", "sharedbottom", "mmoe", "ple", "dcnv2", "din", "hstu"] = "infnet"
    embed_dim: int = 16
    embed_init_std: float = 1e-4
    tower_dims: list[int] = field(default_factory=lambda: [64, 32])
    dropout: float = 0.0
    mlp_norm: Literal["none", "batchnorm"] = "batchnorm"

    # --- INFNet (paper §3) -------------------------------------------------------------------------------
    n_blocks: int = 2  # Fig. 4, which may show it, is an image we could not read
    n_heads: int = 2
    n_cat_proxies: int = 4
    proxy_hidden: int = 64
    seq_proxy_mode: Literal["per_behaviour", "k"] = "per_behaviour"
    n_seq_proxies: int = 4
    seq_pool: Literal["sum", "mean"] = "sum"
    n_shared_task_tokens: int = 2
    residual: bool = True
    norm: Literal["none", "layernorm"] = "layernorm"
    # with the equations' layer-l proxies the C~/S~ updates of the last two blocks are dead (model.block_plans)
    gate_uses: Literal["layer_l", "layer_l_plus_1"] = "layer_l_plus_1"
    gate_hidden: int = 64
    use_task_tokens: bool = True
    use_pgu: bool = True
    use_cross_attention: bool = True

    # --- baselines (infnet/baselines.py) --------------------------------------------------------------------
    bottom_dims: list[int] = field(default_factory=lambda: [128, 64])
    n_experts: int = 4
    n_task_experts: int = 1
    expert_dims: list[int] = field(default_factory=lambda: [64])
    ple_levels: int = 2
    n_cross_layers: int = 3
    din_target_field: str = "item_id"
    din_attention_hidden: list[int] = field(default_factory=lambda: [36])


@dataclass
class TrainConfig:
    """Optimisation, early stopping and run settings (the paper's protocol: arXiv 2508.11565v1 §4.1).

    Attributes:
        seed: seed of python, numpy and torch (the rank is added under DDP) and of the epoch shuffles
        epochs: maximum number of passes over the training split
        batch_size: samples per optimiser step, per process under DDP (the paper: 4096)
        eval_batch_size: samples per forward pass when scoring validation and test
        lr: learning rate (the paper searches 1e-4, 3e-4, 1e-3)
        weight_decay: L2 on all parameters through the optimiser (the paper searches 0, 1e-7, 1e-6, 1e-5)
        optimizer: adam or adagrad (the paper's two choices)
        patience: early stopping after this many epochs without a better validation mean AUC (the paper: 5)
        loss_weights: lambda_i of the loss sum_i lambda_i BCE_i, one per task; empty = all 1 (the paper)
        max_steps_per_epoch: stop each epoch after this many steps (0 = the whole epoch; quick runs, tests)
        log_every: one progress log line every this many steps when stderr is not a terminal (0 = none)
        nan_at_step: inject a NaN loss at this step, to test the guard (-1: never)
        runs_root: folder holding runs/infnet/<experiment>/<timestamp>/
        deterministic: use torch's deterministic algorithms (slower; for bit-identical CUDA runs)
        compile: compile the training forward and backward with torch.compile (INFNet's step 1.55x faster on CPU
            in make bench-infnet, after about a minute of compilation per run and again for the smaller last
            batch; evaluation stays eager)
    """

    seed: int = 0
    epochs: int = 20
    batch_size: int = 1024
    eval_batch_size: int = 4096
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adagrad"] = "adam"
    patience: int = 5
    loss_weights: list[float] = field(default_factory=list)
    max_steps_per_epoch: int = 0
    log_every: int = 50
    nan_at_step: int = -1
    runs_root: str = "runs"
    deterministic: bool = False
    compile: bool = False


@dataclass
class InfnetConfig:
    """INFNet's config: one YAML file in infnet/configs/ with these sections.

    Attributes:
        experiment: name of the run folder under runs/infnet/
        data: the data section (infnet.data.DataConfig)
        model: the model section
        train: the train section
    """

    experiment: str = "movielens100k"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
