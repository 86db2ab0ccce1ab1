"""GEM language model (arXiv 2503.22698): a small decoder-only LM whose FFNs are dense, SCAR-routed or top-k MoE.

Only the paper's abstract is available: it names SCAR (compute on "a variable number of computing
resources"), a weighted distillation framework against forgetting, and on-device deployment. The authors'
code (github.com/Firojpaudel/GEM, ``gem_trainer.py``) is a BERT-base classifier whose quantisation and routing
have no effect. Everything here is therefore our definition, labelled so and written out in the README.

- ``GemLM``            nanoGPT-style pre-norm decoder: token embedding -> n_layers x [x + Attn(Norm(x));
                       x + FFN(Norm(x))] -> Norm -> LM head tied to the embedding. RoPE positions, KV cache.
                       ``ModelConfig.ffn`` picks the FFN of the routed layers: ``dense`` (FeedForward),
                       ``scar`` (threshold-routed expert paths, gem/router.py) or ``moe`` (softmax top-k).
- ``GemLM.forward``    causal LM: per-token NLL, loss = mean NLL + w_bal * L_bal + w_z * L_z (the routed
                       layers' auxiliary losses averaged over layers, as HF Mixtral's ``router_aux_loss_coef``).
- ``GemLM.classify``   domain tasks: one linear head per task on the final hidden state of the last real token
                       (HF ``GPT2ForSequenceClassification`` pooling; the authors' code uses BERT's [CLS]).
- ``distillation_kl``  T^2 KL(teacher || student) at temperature T (Hinton et al., arXiv 1503.02531);
  ``knowledge_preservation_loss`` = task loss + alpha * that, the "weighted distillation" of the abstract.
- ``dense_equal_active_compute`` / ``dense_equal_total_params``  the two dense baselines of a routed model.

Deviations (see the README's "Deviations"): the architecture, sizes, router, selection rule, losses and
classification head are ours; the paper's "Dynamic Token Router" and "Hybrid Quantization" are not modelled
separately (SCAR is the router; quantisation is post-training, gem/compress.py and gem/export.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gem.config import ModelConfig
from gem.layers import CausalSelfAttention, FeedForward, KVCache, RotaryEmbedding, make_norm
from gem.router import CrossAttentionRouter, LinearRouter, RoutedFFN, Routing
from shared.errors import ConfigError, DataError

IGNORE_INDEX = -100  # target id that carries no loss (padding), as in F.cross_entropy


@dataclass
class LMOutput:
    """What ``GemLM.forward`` returns.

    Attributes:
        logits: (B, T, V) next-token logits, or (B, 1, V) with last_only
        hidden: (B, T, C) final normalised hidden states
        loss: lm_loss + w_bal * balance_loss + w_z * z_loss (None without targets)
        lm_loss: mean NLL over the target tokens (None without targets)
        nll: (B, T) per-token NLL in nats, 0 where the target is IGNORE_INDEX (None without targets)
        balance_loss: () L_bal averaged over the routed layers (0 if none; None without targets)
        z_loss: () L_z averaged over the routed layers (0 if none; None without targets)
        routing: one Routing per routed layer, in block order
        past_kv: with use_cache, per block (keys, values), each (B, H, P + T, D); else None
    """

    logits: torch.Tensor | None
    hidden: torch.Tensor
    loss: torch.Tensor | None
    lm_loss: torch.Tensor | None
    nll: torch.Tensor | None
    balance_loss: torch.Tensor | None
    z_loss: torch.Tensor | None
    routing: list[Routing]
    past_kv: KVCache | None


@dataclass
class ClassifierOutput:
    """What ``GemLM.classify`` returns.

    Attributes:
        logits: (B, n_labels) class logits of the task
        loss: ce_loss + w_bal * balance_loss + w_z * z_loss (None without labels)
        ce_loss: mean cross-entropy over the examples (None without labels)
        balance_loss: () load-balancing loss averaged over the routed layers (None without labels)
        z_loss: () router z-loss averaged over the routed layers (None without labels)
        routing: one Routing per routed layer, in block order
    """

    logits: torch.Tensor
    loss: torch.Tensor | None
    ce_loss: torch.Tensor | None
    balance_loss: torch.Tensor | None
    z_loss: torch.Tensor | None
    routing: list[Routing]


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.norm1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.norm2 = make_norm(cfg)
        self.routed = cfg.is_routed(layer)
        self.ffn: nn.Module = (
            RoutedFFN(cfg) if self.routed else FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout)
        )

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        token_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], Routing | None]:
        a, present = self.attn(self.norm1(x), cos, sin, past)
        x = x + a
        if self.routed:
            y, routing = self.ffn(self.norm2(x), token_mask)
        else:
            y, routing = self.ffn(self.norm2(x)), None
        return x + y, present, routing


def lengths_to_mask(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool mask of the real (left-aligned, right-padded) tokens."""
    return torch.arange(seq_len, device=lengths.device)[None, :] < lengths[:, None]


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token NLL (B, T) in nats of ``targets`` (B, T) under ``logits`` (B, T, V); 0 at IGNORE_INDEX."""
    B, T, V = logits.shape
    nll = F.cross_entropy(logits.reshape(B * T, V).float(), targets.reshape(B * T), reduction="none")
    return nll.view(B, T)  # cross_entropy already writes 0 for ignore_index


def distillation_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 2.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 * mean over rows of KL(softmax(t / T) || softmax(s / T)).

    Logits are (..., V); a row is one token (LM logits) or one example (class logits); ``mask`` (...) bool
    keeps the real rows. The T^2 factor keeps the gradient scale independent of T (Hinton et al. 2015).
    The authors' ``gem_trainer.py`` computes ``kl_div(log_softmax(s), softmax(t), reduction="batchmean")``,
    i.e. the same KL(teacher || student) at T = 1 (their weight is 0.7, against a teacher whose classification
    head is untrained).
    """
    if temperature <= 0:
        raise ConfigError(f"distillation temperature={temperature}: must be > 0")
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)  # (...) per row
    if mask is None:
        return temperature**2 * kl.mean()
    m = mask.to(kl.dtype)
    return temperature**2 * (kl * m).sum() / m.sum().clamp(min=1)


def knowledge_preservation_loss(
    task_loss: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    alpha: float = 0.7,
    temperature: float = 2.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """L = L_task + alpha * T^2 * KL(teacher || student): fine-tuning on one domain while a frozen generalist
    teacher anchors the output distribution (alpha = 0 is plain fine-tuning)."""
    return task_loss + alpha * distillation_kl(student_logits, teacher_logits.detach(), temperature, mask)


class GemLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.context_length, cfg.rope_base)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied (GPT-2 / nanoGPT)
        self.heads = nn.ModuleDict({task: nn.Linear(cfg.d_model, n) for task, n in cfg.task_labels.items()})
        self.apply(self._init_weights)
        for m in self.modules():
            if isinstance(m, CrossAttentionRouter | LinearRouter):
                m.reset_parameters()  # routers have their own logit-scale initialisation
        # nanoGPT / GPT-2: residual-branch outputs scaled by 1/sqrt(2 * n_layers).
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, std=cfg.init_std / (2 * cfg.n_layers) ** 0.5)

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=self.cfg.init_std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------------------------------ backbone

    def backbone(
        self,
        idx: torch.Tensor,
        token_mask: torch.Tensor | None = None,
        past_kv: KVCache | None = None,
    ) -> tuple[torch.Tensor, list[Routing], KVCache]:
        """idx (B, T) -> final normalised hidden (B, T, C), routing per routed layer, updated cache."""
        T = idx.shape[1]
        n_past = 0 if past_kv is None else past_kv[0][0].shape[2]
        if not torch.compiler.is_exporting():
            if n_past + T > self.cfg.context_length:
                raise DataError(
                    f"{n_past + T} tokens exceed model.context_length={self.cfg.context_length}; "
                    "shorten the input (or the number of generated tokens)"
                )
            if T and (int(idx.min()) < 0 or int(idx.max()) >= self.cfg.vocab_size):
                raise DataError(
                    f"token ids must be in [0, {self.cfg.vocab_size}) (model.vocab_size); got "
                    f"[{int(idx.min())}, {int(idx.max())}]: the tokenizer does not match the model"
                )
        cos, sin = self.rope(n_past, T)  # (T, D) each
        x = self.drop(self.tok_emb(idx))  # (B, T, C)
        routing: list[Routing] = []
        presents: KVCache = []
        for i, block in enumerate(self.blocks):
            x, present, r = block(x, cos, sin, None if past_kv is None else past_kv[i], token_mask)
            presents.append(present)
            if r is not None:
                routing.append(r)
        return self.norm_f(x), routing, presents

    def aux_losses(self, routing: list[Routing]) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_bal, L_z) averaged over the routed layers; zeros for a dense model."""
        if not routing:
            zero = self.tok_emb.weight.new_zeros(())
            return zero, zero
        bal = torch.stack([r.balance_loss() for r in routing]).mean()
        z = torch.stack([r.z_loss() for r in routing]).mean()
        return bal, z

    def _total(self, main: torch.Tensor, bal: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return main + self.cfg.balance_loss_weight * bal + self.cfg.z_loss_weight * z

    # -------------------------------------------------------------------------------------------- heads

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        token_mask: torch.Tensor | None = None,
        past_kv: KVCache | None = None,
        use_cache: bool = False,
        last_only: bool = False,
    ) -> LMOutput:
        """Causal LM on idx (B, T).

        ``targets`` (B, T) are the next tokens (idx shifted by one, IGNORE_INDEX at padding); ``token_mask``
        (B, T) bool marks real tokens so padding does not count in the routing losses; ``past_kv`` and
        ``use_cache`` continue from / return the KV cache; ``last_only`` computes logits for the last position
        only (decoding). Losses are computed only with ``targets``; ``aux_losses(out.routing)`` gives the
        routing losses of any forward.
        """
        hidden, routing, presents = self.backbone(idx, token_mask, past_kv)
        logits = self.lm_head(hidden[:, -1:] if last_only else hidden)
        loss = lm = nll = bal = z = None
        if targets is not None:
            bal, z = self.aux_losses(routing)
            if last_only:
                raise ConfigError(
                    "GemLM.forward: targets need the logits of every position (last_only=False)"
                )
            nll = token_nll(logits, targets)
            n_tokens = (targets != IGNORE_INDEX).sum().clamp(min=1)
            lm = nll.sum() / n_tokens
            loss = self._total(lm, bal, z)
        return LMOutput(logits, hidden, loss, lm, nll, bal, z, routing, presents if use_cache else None)

    def classify(
        self, idx: torch.Tensor, lengths: torch.Tensor, task: str, labels: torch.Tensor | None = None
    ) -> ClassifierOutput:
        """Class logits of ``task`` from the hidden state of each sequence's last real token.

        idx (B, T) right-padded, lengths (B,) real lengths >= 1, labels (B,) class ids.
        """
        if task not in self.heads:
            raise ConfigError(
                f"task '{task}' has no classification head; model.task_labels has: {sorted(self.heads) or 'none'}"
            )
        B, T = idx.shape
        if int(lengths.min()) < 1 or int(lengths.max()) > T:
            raise DataError(
                f"classify: lengths must be in [1, {T}] (the padded width); got {lengths.tolist()}"
            )
        hidden, routing, _ = self.backbone(idx, lengths_to_mask(lengths, T))
        pooled = hidden[torch.arange(B, device=idx.device), lengths - 1]  # (B, C)
        logits = self.heads[task](self.drop(pooled))  # (B, n_labels)
        loss = ce = bal = z = None
        if labels is not None:
            bal, z = self.aux_losses(routing)
            ce = F.cross_entropy(logits.float(), labels)
            loss = self._total(ce, bal, z)
        return ClassifierOutput(logits, loss, ce, bal, z, routing)

    # --------------------------------------------------------------------------------------------- cost

    def num_params(self, include_heads: bool = False) -> int:
        """Unique parameters (the tied embedding / LM head once); task heads only if asked."""
        heads = {id(p) for p in self.heads.parameters()}
        return sum(p.numel() for p in self.parameters() if include_heads or id(p) not in heads)

    def active_params_per_token(self, routing: list[Routing]) -> dict[str, float]:
        """Mean parameters one real token uses, given the routing decisions of a forward pass.

        ``ffn_active``: sum over blocks of the FFN weights the token runs (dense FFN, or its router plus k_t
        expert paths); ``active``: that plus every other weight on its path (embedding / tied LM head once,
        attention, norms), excluding task heads; ``ffn_total`` / ``total``: the same with every expert;
        ``mean_k``: mean k_t per routed layer.
        """
        total = float(self.num_params())
        ffn_total = ffn_active = 0.0
        mean_k: list[float] = []
        routed = [b.ffn for b in self.blocks if b.routed]
        if len(routing) != len(routed):
            raise ConfigError(
                f"got routing for {len(routing)} layers; this model has {len(routed)} routed layers"
            )
        for ffn, r in zip(routed, routing):
            per_expert = ffn.experts.params_per_expert()
            k = r.mean_k()
            mean_k.append(k)
            ffn_total += ffn.router_params() + ffn.n_experts * per_expert
            ffn_active += ffn.router_params() + k * per_expert
        for b in self.blocks:
            if not b.routed:
                n = sum(p.numel() for p in b.ffn.parameters())
                ffn_total += n
                ffn_active += n
        return {
            "ffn_active": ffn_active,
            "ffn_total": ffn_total,
            "active": total - ffn_total + ffn_active,
            "total": total,
            "mean_k": mean_k,  # type: ignore[dict-item]
        }


def continuation_logprob(model: GemLM, input_ids: torch.Tensor, score_mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probability (N,) of the tokens ``input_ids[:, t + 1]`` where ``score_mask[:, t]`` is True.

    The label-scoring formulation of multiple-choice tasks (lm-evaluation-harness ``multiple_choice``): one row
    per (prompt, choice), the choice with the highest sum wins. ``score_mask`` (N, L) as gem.data's
    ``collate_multiple_choice`` builds it.
    """
    logits = model(input_ids).logits[:, :-1]  # (N, L - 1, V)
    nll = token_nll(logits, input_ids[:, 1:])  # (N, L - 1)
    return -(nll * score_mask[:, :-1].to(nll.dtype)).sum(-1)


# ------------------------------------------------------------------------------------- dense baselines


def count_params(cfg: ModelConfig) -> int:
    """Parameters of ``GemLM(cfg)`` without task heads (built on the meta device: no memory, no init cost)."""
    with torch.device("meta"):
        return GemLM(dataclasses.replace(cfg, task_labels={})).num_params()


def expected_active_params(cfg: ModelConfig, mean_k: float) -> float:
    """Active parameters per token of a routed ``cfg`` whose routed layers use ``mean_k`` paths on average."""
    total = count_params(cfg)
    n_routed = sum(cfg.is_routed(i) for i in range(cfg.n_layers))
    per_expert = 2 * cfg.d_model * cfg.d_ff
    return total - n_routed * (cfg.n_experts - mean_k) * per_expert


def _dense_with_params(cfg: ModelConfig, target: float) -> ModelConfig:
    """The dense config, otherwise equal to ``cfg``, whose FFN width gives the parameter count closest to
    ``target`` (the count is affine in d_ff, so two meta-device counts solve it)."""
    dense = dataclasses.replace(cfg, ffn="dense", routed_layers=None)
    p1 = count_params(dataclasses.replace(dense, d_ff=1))
    p2 = count_params(dataclasses.replace(dense, d_ff=2))
    d_ff = max(1, round((target - p1) / (p2 - p1)) + 1)
    return dataclasses.replace(dense, d_ff=d_ff)


def dense_equal_active_compute(cfg: ModelConfig, mean_k: float) -> ModelConfig:
    """Dense generalist with as many parameters as a routed ``cfg`` runs per token at mean k = ``mean_k``.

    Pass the mean k measured on data (``active_params_per_token(...)["mean_k"]`` averaged over layers); for
    the top-k MoE it is ``moe_top_k``. Routers count as active compute (they run on every token).
    """
    if cfg.ffn == "dense":
        return cfg
    lo, hi = cfg.k_bounds
    if not lo <= mean_k <= hi:
        raise ConfigError(f"mean_k={mean_k}: a token of this model uses between {lo} and {hi} paths")
    return _dense_with_params(cfg, expected_active_params(cfg, mean_k))


def dense_equal_total_params(cfg: ModelConfig) -> ModelConfig:
    """Dense model with (to the nearest FFN width) the total parameter count of routed ``cfg``."""
    return cfg if cfg.ffn == "dense" else _dense_with_params(cfg, count_params(cfg))
