"""Blocks that INFNet (``model.py``) and the baselines (``baselines.py``) share, on one feature pipeline.

- ``FeatureEmbedding``: the feature tokenization of arXiv 2508.11565v1 §3: categorical tokens
  C = [E_j x_j] in R^{M x d} (one table per field) and sequence tokens S in R^{L x d}, L = sum_a n_a (one
  table per behaviour, id 0 = padding), with key masks; every table N(0, ``model.embed_init_std``). Every
  model of Table 1 reads its input through it.
- ``TaskTowers``: the per-task readout MLP_i of y_i = sigmoid(MLP_i(.)) (§3, output layer).
- ``mlp``: the Linear(-BatchNorm)-ReLU(-Dropout) stack of the towers and the baselines (``model.mlp_norm``:
  torch-rechub's and FuxiCTR's block order; phi_cat and the PGU MLP have no BatchNorm).
- ``RowBatchNorm``: BatchNorm over the last dim of (..., C) inputs.
- ``validate_model_config``: one-line ``ConfigError`` for impossible ``model.*`` settings, for every model.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import torch
from torch import nn

from infnet.config import ModelConfig
from shared.errors import ConfigError, DataError

if TYPE_CHECKING:
    from infnet.data import FeatureSpec


class RowBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the last dimension of a (..., C) input: every leading index is one row of the batch.

    ``nn.BatchNorm1d`` reads a 3-D input as (N, C, L); DIN's activation unit runs its MLP on (B, n_a, 4d).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


def mlp(
    dims: list[int], dropout: float = 0.0, last_activation: bool = True, norm: str = "none"
) -> nn.Sequential:
    """Linear(-BatchNorm)-ReLU(-Dropout) stack through ``dims`` (``dims[0]`` is the input width).

    ``norm="batchnorm"`` puts a BatchNorm between every hidden Linear and its ReLU (the order of
    torch-rechub's and FuxiCTR's MLP blocks); a last Linear without activation gets none.
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2 or last_activation:
            if norm == "batchnorm":
                layers.append(RowBatchNorm(b))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class TaskTowers(nn.Module):
    """One MLP per task on its own input: (B, T, d_in) -> logits (B, T)."""

    def __init__(self, n_tasks: int, d_in: int, dims: list[int], dropout: float, norm: str = "none"):
        super().__init__()
        self.towers = nn.ModuleList(
            nn.Sequential(mlp([d_in, *dims], dropout, norm=norm), nn.Linear(dims[-1] if dims else d_in, 1))
            for _ in range(n_tasks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d_in)
        return torch.cat([tower(x[:, i]) for i, tower in enumerate(self.towers)], dim=-1)  # (B, T)


class FeatureEmbedding(nn.Module):
    """Categorical tokens (one table per field) and sequence tokens (one table per behaviour).

    Returns ``C`` (B, M, d), the list of per-behaviour tokens ``S_a`` (B, n_a, d) with their masks
    (B, n_a) (True = a real item), padding positions zeroed so no pooling can see them.
    """

    def __init__(self, spec: FeatureSpec, d: int, init_std: float = 0.05):
        super().__init__()
        self.cat_tables = nn.ModuleList(nn.Embedding(f.vocab_size, d) for f in spec.categorical)
        self.seq_tables = nn.ModuleList(nn.Embedding(f.vocab_size, d, padding_idx=0) for f in spec.sequences)
        self.cat_vocab = [f.vocab_size for f in spec.categorical]
        self.seq_vocab = [f.vocab_size for f in spec.sequences]
        self.cat_names = [f.name for f in spec.categorical]
        self.seq_names = [f.name for f in spec.sequences]
        for table in [*self.cat_tables, *self.seq_tables]:
            nn.init.normal_(table.weight, std=init_std)

    def check_ids(self, cat: torch.Tensor, seq: list[torch.Tensor]) -> None:
        """A batch that does not match the feature spec -> DataError naming the field."""
        if cat.dim() != 2 or cat.shape[1] != len(self.cat_tables):
            raise DataError(
                f"batch['cat'] has shape {tuple(cat.shape)}; the feature spec has {len(self.cat_tables)} "
                "categorical fields (B, M): re-run the data preparation or fix the feature config"
            )
        if len(seq) != len(self.seq_tables):
            raise DataError(
                f"batch['seq'] has {len(seq)} sequences; the feature spec has {len(self.seq_tables)}"
            )
        for ids, name in zip(seq, self.seq_names):
            if ids.dim() != 2 or ids.shape[0] != cat.shape[0]:
                raise DataError(f"sequence '{name}' has shape {tuple(ids.shape)}; expected (B, n_a)")
        if cat.shape[0] == 0:
            return
        # per-field (min, max) ids with one device sync
        lo = [cat.amin(0)] + [s.amin().view(1) if s.numel() else s.new_zeros(1) for s in seq]
        hi = [cat.amax(0)] + [s.amax().view(1) if s.numel() else s.new_zeros(1) for s in seq]
        lo, hi = torch.cat(lo).tolist(), torch.cat(hi).tolist()
        names, vocabs = self.cat_names + self.seq_names, self.cat_vocab + self.seq_vocab
        for name, vocab, a, b in zip(names, vocabs, lo, hi):
            if a < 0 or b >= vocab:
                raise DataError(
                    f"field '{name}': ids must be in [0, {vocab}) (the vocabulary of the prepared data), "
                    f"got [{a}, {b}]; re-run the data preparation"
                )

    def forward(
        self, cat: torch.Tensor, seq: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        self.check_ids(cat, seq)
        C = torch.stack([table(cat[:, j]) for j, table in enumerate(self.cat_tables)], dim=1)  # (B, M, d)
        S, masks = [], []
        for table, ids in zip(self.seq_tables, seq):
            mask = ids != 0  # (B, n_a)
            S.append(table(ids) * mask.unsqueeze(-1))  # (B, n_a, d)
            masks.append(mask)
        return C, S, masks


def validate_model_config(cfg: ModelConfig, spec: FeatureSpec) -> None:
    """Impossible settings -> ConfigError naming the key (shared by INFNet and the baselines)."""
    positive = ["embed_dim", "n_blocks", "n_heads", "n_cat_proxies", "n_seq_proxies", "n_shared_task_tokens"]
    positive += ["proxy_hidden", "gate_hidden", "n_experts", "n_task_experts", "ple_levels"]
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"model.{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.embed_dim % cfg.n_heads:
        raise ConfigError(
            f"model.embed_dim ({cfg.embed_dim}) must be divisible by model.n_heads ({cfg.n_heads})"
        )
    if not cfg.embed_init_std > 0:
        raise ConfigError(f"model.embed_init_std must be > 0, got {cfg.embed_init_std}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {cfg.dropout}")
    if not spec.categorical or not spec.tasks:
        raise ConfigError("the feature spec needs at least one categorical field and one task")
    if cfg.name == "infnet" and not spec.sequences:
        raise ConfigError("INFNet needs at least one behaviour sequence in the feature config")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
