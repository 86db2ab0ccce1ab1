"""The baselines INFNet is compared with (Table 1), on INFNet's feature pipeline (``FeatureEmbedding``).

Every model maps a batch dict to per-task logits (B, T) and ends in per-task towers (``TaskTowers``), so the
loss, training loop and evaluation are shared. The multi-task and DCNv2 models read the flat input
``x = [Flatten(C), masked-mean(S_1), ..., masked-mean(S_F)]`` (B, (M + F) d); DIN replaces the mean by target
attention; the HSTU-style model self-attends over all tokens.

- ``SharedBottom``  one bottom MLP, per-task towers (Caruana 1997).
- ``MMoE``          shared experts, one softmax gate per task (Ma et al., KDD 2018).
- ``PLE``           progressive layered extraction: shared + task-specific experts, ``ple_levels`` CGC layers
                    (Tang et al., RecSys 2020).
- ``DCNv2``         cross network x_{l+1} = x_0 * (W x_l + b) + x_l beside a deep MLP, outputs concatenated,
                    then per-task towers (Wang et al., WWW 2021).
- ``DIN``           target attention over each behaviour with the candidate item (categorical field
                    ``din_target_field``) as query; activation unit MLP([q, k, q - k, q * k]), weights not
                    softmax-normalised, as in DIN (Zhou et al., KDD 2018).
- ``HSTU``          full self-attention over all tokens [C; S; task tokens] (masked, quadratic in M + L + T),
                    with HSTU's pointwise SiLU attention and U-gating (Zhai et al., ICML 2024); no causal mask
                    and no relative bias, since the tokens of one impression are not a time-ordered stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from infnet.config import ModelConfig
from infnet.layers import FeatureEmbedding, TaskTowers, mlp, validate_model_config
from shared.errors import ConfigError

if TYPE_CHECKING:
    from infnet.data import FeatureSpec


def pooled_input(C: torch.Tensor, S: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
    """[Flatten(C), masked mean of each S_a]: (B, (M + F) d)."""
    pools = [S_a.sum(1) / m.sum(1, keepdim=True).clamp(min=1).to(S_a.dtype) for S_a, m in zip(S, masks)]
    return torch.cat([C.flatten(1), *pools], dim=1)


class FlatInputModel(nn.Module):
    """Base of the models on the flat input: ``self.task_inputs(x)`` -> (B, T, d_tower) -> towers."""

    def __init__(self, spec: FeatureSpec, cfg: ModelConfig):
        super().__init__()
        validate_model_config(cfg, spec)
        self.n_tasks = len(spec.tasks)
        self.embedding = FeatureEmbedding(spec, cfg.embed_dim, cfg.embed_init_std)
        self.d_in = (len(spec.categorical) + len(spec.sequences)) * cfg.embed_dim

    def task_inputs(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: dict) -> torch.Tensor:
        x = pooled_input(*self.embedding(batch["cat"], batch["seq"]))  # (B, d_in)
        return self.towers(self.task_inputs(x))  # (B, T)


class SharedBottom(FlatInputModel):
    def __init__(self, spec: FeatureSpec, cfg: ModelConfig):
        super().__init__(spec, cfg)
        self.bottom = mlp([self.d_in, *cfg.bottom_dims], cfg.dropout, norm=cfg.mlp_norm)
        self.towers = TaskTowers(self.n_tasks, cfg.bottom_dims[-1], cfg.tower_dims, cfg.dropout, cfg.mlp_norm)

    def task_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottom(x).unsqueeze(1).expand(-1, self.n_tasks, -1)  # (B, T, h)


class MMoE(FlatInputModel):
    def __init__(self, spec: FeatureSpec, cfg: ModelConfig):
        super().__init__(spec, cfg)
        self.experts = nn.ModuleList(
            mlp([self.d_in, *cfg.expert_dims], cfg.dropout, norm=cfg.mlp_norm) for _ in range(cfg.n_experts)
        )
        self.gates = nn.Linear(self.d_in, self.n_tasks * cfg.n_experts)
        self.towers = TaskTowers(self.n_tasks, cfg.expert_dims[-1], cfg.tower_dims, cfg.dropout, cfg.mlp_norm)

    def task_inputs(self, x: torch.Tensor) -> torch.Tensor:
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # (B, E, h)
        gates = torch.softmax(self.gates(x).view(x.shape[0], self.n_tasks, -1), dim=-1)  # (B, T, E)
        return gates @ experts  # (B, T, h)


class PLE(FlatInputModel):
    def __init__(self, spec: FeatureSpec, cfg: ModelConfig):
        super().__init__(spec, cfg)
        n_t, n_s, h, T = cfg.n_task_experts, cfg.n_experts, cfg.expert_dims[-1], self.n_tasks
        self.levels = nn.ModuleList()
        for level in range(cfg.ple_levels):
            d = self.d_in if level == 0 else h
            last = level == cfg.ple_levels - 1
            self.levels.append(
                nn.ModuleDict(
                    {
                        "task": nn.ModuleList(
                            mlp([d, *cfg.expert_dims], cfg.dropout, norm=cfg.mlp_norm) for _ in range(T * n_t)
                        ),
                        "shared": nn.ModuleList(
                            mlp([d, *cfg.expert_dims], cfg.dropout, norm=cfg.mlp_norm) for _ in range(n_s)
                        ),
                        "task_gates": nn.ModuleList(nn.Linear(d, n_t + n_s) for _ in range(T)),
                        # the shared gate feeds the next level; the last level has none
                        "shared_gate": nn.Identity() if last else nn.Linear(d, T * n_t + n_s),
                    }
                )
            )
        self.n_t = n_t
        self.towers = TaskTowers(T, h, cfg.tower_dims, cfg.dropout, cfg.mlp_norm)

    def task_inputs(self, x: torch.Tensor) -> torch.Tensor:
        task_in, shared_in = [x] * self.n_tasks, x  # inputs of each task's / the shared gate at this level
        for level in self.levels:
            shared = torch.stack([e(shared_in) for e in level["shared"]], dim=1)  # (B, n_s, h)
            own = [
                torch.stack([level["task"][t * self.n_t + i](task_in[t]) for i in range(self.n_t)], dim=1)
                for t in range(self.n_tasks)
            ]  # T x (B, n_t, h)
            outs = []
            for t in range(self.n_tasks):
                g = torch.softmax(level["task_gates"][t](task_in[t]), dim=-1).unsqueeze(
                    1
                )  # (B, 1, n_t + n_s)
                outs.append((g @ torch.cat([own[t], shared], dim=1)).squeeze(1))  # (B, h)
            if not isinstance(level["shared_gate"], nn.Identity):
                g = torch.softmax(level["shared_gate"](shared_in), dim=-1).unsqueeze(1)  # (B, 1, T n_t + n_s)
                shared_in = (g @ torch.cat([*own, shared], dim=1)).squeeze(1)  # (B, h)
            task_in = outs
        return torch.stack(task_in, dim=1)  # (B, T, h)


class DCNv2(FlatInputModel):
    def __init__(self, spec: FeatureSpec, cfg: ModelConfig):
        super().__init__(spec, cfg)
        self.cross = nn.ModuleList(nn.Linear(self.d_in, self.d_in) for _ in range(cfg.n_cross_layers))
        self.deep = mlp([self.d_in, *cfg.bottom_dims], cfg.dropout, norm=cfg.mlp_norm)
        self.towers = TaskTowers(
            self.n_tasks, self.d_in + cfg.bottom_dims[-1], cfg.tower_dims, cfg.dropout, cfg.mlp_norm
        )

    def task_inputs(self, x: torch.Tensor) -> torch.Tensor:
        xl = x
        for layer in self.cross:
            xl = x * layer(xl) + xl  # (B, d_in)
        return torch.cat([xl, self.deep(x)], dim=1).unsqueeze(1).expand(-1, self.n_tasks, -1)


class DIN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: ModelConfig):
        super().__init__()
        validate_model_config(cfg, spec)
        names = [f.name for f in spec.categorical]
        if cfg.din_target_field not in names:
            raise ConfigError(
                f"model.din_target_field '{cfg.din_target_field}' is not a categorical field; "
                f"choose one of {', '.join(names)}"
            )
        d, n_tasks = cfg.embed_dim, len(spec.tasks)
        self.target = names.index(cfg.din_target_field)
        self.n_tasks = n_tasks
        self.embedding = FeatureEmbedding(spec, d, cfg.embed_init_std)
        self.activation_unit = nn.Sequential(
            mlp([4 * d, *cfg.din_attention_hidden]), nn.Linear(cfg.din_attention_hidden[-1], 1)
        )
        d_in = (len(spec.categorical) + len(spec.sequences)) * d
        self.mlp = mlp([d_in, *cfg.bottom_dims], cfg.dropout, norm=cfg.mlp_norm)
        self.towers = TaskTowers(n_tasks, cfg.bottom_dims[-1], cfg.tower_dims, cfg.dropout, cfg.mlp_norm)

    def forward(self, batch: dict) -> torch.Tensor:
        C, S, masks = self.embedding(batch["cat"], batch["seq"])
        q = C[:, self.target]  # (B, d) candidate item
        pools = []
        for S_a, m in zip(S, masks):
            qa = q.unsqueeze(1).expand_as(S_a)  # (B, n_a, d)
            w = self.activation_unit(torch.cat([qa, S_a, qa - S_a, qa * S_a], dim=-1)).squeeze(-1)  # (B, n_a)
            pools.append(((w * m).unsqueeze(-1) * S_a).sum(1))  # (B, d)
        h = self.mlp(torch.cat([C.flatten(1), *pools], dim=1))  # (B, h)
        return self.towers(h.unsqueeze(1).expand(-1, self.n_tasks, -1))


class HSTULayer(nn.Module):
    """X + f2(Norm(A V) * U), A = SiLU(Q K^T / sqrt(d_k)) / n_valid over the real keys; (B, N, d) -> same."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.h = n_heads
        self.norm_in, self.norm_attn = nn.LayerNorm(d), nn.LayerNorm(d)
        self.f1 = nn.Linear(d, 4 * d)
        self.f2 = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, N, d = x.shape
        U, V, Q, K = F.silu(self.f1(self.norm_in(x))).chunk(4, dim=-1)  # 4 x (B, N, d)
        Q, K, V = (t.view(B, N, self.h, -1).transpose(1, 2) for t in (Q, K, V))  # (B, h, N, d_k)
        keys = mask[:, None, None, :].to(x.dtype)  # (B, 1, 1, N)
        weight = keys / keys.sum(-1, keepdim=True).clamp(min=1)  # 1/n on real keys, 0 on padding
        # scale folded into Q and the mask into one multiply: the (B, h, N, N) tensor is touched 3 times
        A = F.silu((Q * Q.shape[-1] ** -0.5) @ K.transpose(-1, -2)) * weight  # (B, h, N, N): quadratic in N
        out = (A @ V).transpose(1, 2).reshape(B, N, d)  # (B, N, d)
        return x + self.dropout(self.f2(self.norm_attn(out) * U))


class HSTU(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: ModelConfig):
        super().__init__()
        validate_model_config(cfg, spec)
        d, n_tasks = cfg.embed_dim, len(spec.tasks)
        self.embedding = FeatureEmbedding(spec, d, cfg.embed_init_std)
        self.task_tokens = nn.Parameter(torch.randn(n_tasks, d) * 0.05)
        self.layers = nn.ModuleList(HSTULayer(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_blocks))
        self.final_norm = nn.LayerNorm(d)
        self.towers = TaskTowers(n_tasks, d, cfg.tower_dims, cfg.dropout, cfg.mlp_norm)

    def forward(self, batch: dict) -> torch.Tensor:
        C, S, masks = self.embedding(batch["cat"], batch["seq"])
        B, M, _ = C.shape
        n_tasks = self.task_tokens.shape[0]
        x = torch.cat([C, *S, self.task_tokens.expand(B, -1, -1)], dim=1)  # (B, M + L + T, d)
        ones = torch.ones(B, M, dtype=torch.bool, device=C.device)
        mask = torch.cat([ones, *masks, ones[:, :1].expand(B, n_tasks)], dim=1)  # (B, M + L + T)
        for layer in self.layers:
            x = layer(x, mask)
        return self.towers(self.final_norm(x[:, -n_tasks:]))  # (B, T)


BASELINES: dict[str, type[nn.Module]] = {
    "sharedbottom": SharedBottom,
    "mmoe": MMoE,
    "ple": PLE,
    "dcnv2": DCNv2,
    "din": DIN,
    "hstu": HSTU,
}
