"""Train a GEM LM on a mixture of the suite's domains: generalist, specialist, distilled specialist, adaptation.

    python -m gem.train --config gem/configs/suite.yaml [--set model.ffn=dense] [--resume]
    python -m gem.train --config gem/configs/suite.yaml --set train.init_from=runs/gem/.../best.pt \
        --set "train.domains=[law]" --set distill.alpha=0.7         # a law specialist with distillation
    torchrun --nproc_per_node 2 -m gem.train --config gem/configs/suite.yaml

GEM (arXiv 2503.22698) gives no training recipe (the authors' ``gem_trainer.py`` fine-tunes a BERT classifier
with AdamW 2e-5, 100 warm-up steps, batch 16, 3 epochs), so the objective and schedule are ours:

- every step draws a batch of LM blocks (each row's domain sampled with p_d ~ n_d ** ``train.sampling_alpha``,
  n_d the domain's training blocks) and a batch of task examples (each example's task sampled likewise by
  the tasks' training examples; one classification pass per task present), and
  minimises  L = L_LM + lambda L_cls + w_bal L_bal + w_z L_z  (``train.cls_weight`` = lambda; the routing
  losses of gem/router.py averaged over the two forwards);
- with a teacher (``distill``): L_LM and L_cls each get + alpha T^2 KL(teacher || student)
  (``gem.model.knowledge_preservation_loss``): the LM logits of every token, and the class logits of the tasks
  the teacher was trained on (a head it never trained would be a random target, the authors' bug);
- AdamW (betas 0.9 / 0.95, decoupled weight decay on matrices only), linear warm-up then cosine decay to
  ``lr * min_lr_ratio``, gradient clipping, the NaN guard of ``shared.run.optimizer_step``.

Modes are config only: a generalist from scratch (``train.domains: []`` = every training domain, ``model.ffn``
dense / scar / moe); a specialist (``train.init_from`` a generalist checkpoint, ``train.domains: [law]``), with
distillation (``distill.alpha > 0``, teacher = ``distill.teacher`` or ``init_from``, frozen); adaptation to
the held-out domain (``train.domains: [domain_adaptive]``: its 64 training examples and its LM text).

An "epoch" is ``train.steps_per_epoch`` steps, then validation (``gem.evaluate``); the best checkpoint is the
one with the highest mean val macro F1 over the trained domains (``select_by: f1``) or the lowest mean val
LM NLL (``select_by: loss``). At the end the best checkpoint is scored on the test split of every domain
(``test_metrics.json``). ``shared.run.TrainRun`` does the bookkeeping (run folder, RNG states, resume,
``last.pt`` / ``best.pt``); every checkpoint carries the tokenizer (``extra.tokenizer``), so
``python -m gem.generate --checkpoint <run>/best.pt`` works on it. Each epoch's batches are drawn from
(seed, epoch) alone, so a resumed run replays the uninterrupted one; under torchrun each rank takes its slice
of the same global batch (DDP with ``find_unused_parameters``: a path no token chose gets no gradient).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gem.config import GemConfig
from gem.data import ClassificationDataset, GemTokenizer, LMBlockDataset, Suite, collate_classification
from gem.evaluate import (
    EvalSets,
    autocast,
    build_eval_sets,
    evaluate_model,
    load_data,
    load_trained_model,
    model_config_of,
    task_domain,
)
from gem.model import IGNORE_INDEX, GemLM, knowledge_preservation_loss
from shared.checkpoint import load_checkpoint, restore_checkpoint
from shared.cli import train_main
from shared.config import config_to_dict
from shared.distributed import DistInfo, all_reduce_mean, unwrap_model, wrap_model
from shared.errors import ConfigError, run_cli
from shared.log import StepProgress
from shared.run import TrainRun, optimizer_step

BETAS = (0.9, 0.95)  # nanoGPT / GPT-3's AdamW betas for small LMs


# ----------------------------------------------------------------------------------------- the mixture
def trained_domains(cfg: GemConfig, suite: Suite) -> list[str]:
    """``train.domains`` checked against the suite; [] = the training domains (all but the held-out one) and
    the benchmark tasks of ``data.extra_tasks`` that name no domain (each is its own domain)."""
    extra = sorted({task_domain(suite.task(t)) for t in suite.task_names} - set(suite.domains))
    valid = [*suite.domains, *extra]
    for d in cfg.train.domains:
        if d not in valid:
            raise ConfigError(f"train.domains: unknown domain '{d}'; the suite has {', '.join(valid)}")
    return list(cfg.train.domains) or [*suite.training_domains, *extra]


def trained_tasks(suite: Suite, domains: Sequence[str]) -> list[str]:
    """Classification tasks of ``domains`` that have training examples."""
    return [
        t
        for t in suite.task_names
        if suite.task(t).kind == "classification"
        and task_domain(suite.task(t)) in domains
        and suite.task(t).split("train")
    ]


def sampling_probs(sizes: Sequence[int], alpha: float) -> np.ndarray:
    """p_i ~ n_i ** alpha over the non-empty items (alpha = 0: uniform; 1: proportional to size)."""
    w = np.asarray(sizes, dtype=np.float64) ** alpha
    return w / w.sum()


@dataclass
class TrainData:
    """The tokenized training side of one run.

    Attributes:
        lm_domains: domains with LM training blocks, in suite order
        lm_streams: per domain the packed token stream (documents shuffled by data.seed, <eos> between)
        lm_blocks: per domain the number of whole blocks of context_len + 1 tokens
        tasks: trained classification tasks
        cls: per task its training ClassificationDataset
        p_lm: sampling probability of each LM domain
        p_task: sampling probability of each task
    """

    lm_domains: list[str]
    lm_streams: list[torch.Tensor]
    lm_blocks: list[int]
    tasks: list[str]
    cls: list[ClassificationDataset]
    p_lm: np.ndarray
    p_task: np.ndarray


def build_train_data(cfg: GemConfig, suite: Suite, tok: GemTokenizer, domains: Sequence[str]) -> TrainData:
    T, t = cfg.data.context_len, cfg.train
    lm_domains, streams, blocks = [], [], []
    if t.lm_batch_size:
        for i, d in enumerate(domains):
            if d not in suite.domains:
                continue  # a benchmark-only domain has no LM text
            ds = LMBlockDataset(tok.encode_batch(suite.lm_texts(d, "train")), T, tok.eos_id, i, cfg.data.seed)
            if len(ds):
                lm_domains.append(d)
                streams.append(ds.stream)
                blocks.append(len(ds))
    tasks = trained_tasks(suite, domains) if t.cls_batch_size and t.cls_weight > 0 else []
    cls = [ClassificationDataset(suite.task(n).split("train"), tok, cfg.data.max_len) for n in tasks]
    if not lm_domains and not tasks:
        raise ConfigError(
            f"train.domains={list(domains)} have neither LM training text nor a classification task with "
            "training examples; pick other domains"
        )
    return TrainData(
        lm_domains, streams, blocks, tasks, cls,
        sampling_probs(blocks, t.sampling_alpha) if blocks else np.zeros(0),
        sampling_probs([len(c) for c in cls], t.sampling_alpha) if cls else np.zeros(0),
    )  # fmt: skip


def steps_per_epoch(cfg: GemConfig, data: TrainData, world: int) -> int:
    t = cfg.train
    if t.steps_per_epoch:
        return t.steps_per_epoch
    if data.lm_domains:
        return max(1, math.ceil(sum(data.lm_blocks) / (t.lm_batch_size * world)))
    return max(1, math.ceil(sum(len(c) for c in data.cls) / (t.cls_batch_size * world)))


@dataclass
class EpochPlan:
    """Every step's draw of one epoch, for the global batch (all ranks): rank r takes its slice.

    Attributes:
        lm_domain: (steps, B_lm * world) index into TrainData.lm_domains
        lm_block: (steps, B_lm * world) block index within that domain
        cls_task: (steps, B_cls * world) index into TrainData.tasks, one per example
        cls_example: (steps, B_cls * world) example index within that task
    """

    lm_domain: np.ndarray
    lm_block: np.ndarray
    cls_task: np.ndarray
    cls_example: np.ndarray

    @property
    def steps(self) -> int:
        return self.lm_domain.shape[0]


def draw_epoch(cfg: GemConfig, data: TrainData, epoch: int, steps: int, world: int) -> EpochPlan:
    """The epoch's batches from (seed, epoch) alone: a resumed run draws the same ones.

    Each LM row picks its domain and each task example its task independently, so every step updates
    (almost) every task head instead of one task every len(tasks) steps."""
    rng = np.random.default_rng([cfg.train.seed, epoch])
    n_lm, n_cls = cfg.train.lm_batch_size * world, cfg.train.cls_batch_size * world
    empty = np.zeros((steps, 0), dtype=np.int64)
    lm_domain, lm_block, cls_task, cls_example = empty, empty, empty, empty
    if data.lm_domains:
        lm_domain = rng.choice(len(data.lm_domains), size=(steps, n_lm), p=data.p_lm)
        lm_block = (rng.random((steps, n_lm)) * np.asarray(data.lm_blocks)[lm_domain]).astype(np.int64)
    if data.tasks:
        cls_task = rng.choice(len(data.tasks), size=(steps, n_cls), p=data.p_task)
        sizes = np.asarray([len(c) for c in data.cls])[cls_task]
        cls_example = (rng.random((steps, n_cls)) * sizes).astype(np.int64)
    return EpochPlan(lm_domain, lm_block, cls_task, cls_example)


def step_batch(
    cfg: GemConfig, data: TrainData, plan: EpochPlan, i: int, info: DistInfo, pad_id: int
) -> dict[str, Any]:
    """This rank's LM blocks (B, T + 1) and its task examples of step ``i``, grouped by task (one head each)."""
    T, t = cfg.data.context_len, cfg.train
    batch: dict[str, Any] = {"lm": None, "cls": []}
    if data.lm_domains:
        cols = slice(info.rank * t.lm_batch_size, (info.rank + 1) * t.lm_batch_size)
        rows = [
            data.lm_streams[d][b * T : b * T + T + 1]
            for d, b in zip(plan.lm_domain[i, cols], plan.lm_block[i, cols])
        ]
        batch["lm"] = torch.stack(rows)  # (B, T + 1)
    if data.tasks:
        cols = slice(info.rank * t.cls_batch_size, (info.rank + 1) * t.cls_batch_size)
        tasks, examples = plan.cls_task[i, cols], plan.cls_example[i, cols]
        for k in sorted(set(tasks.tolist())):
            items = [data.cls[k][int(j)] for j in examples[tasks == k]]
            batch["cls"].append((data.tasks[k], collate_classification(items, pad_id)))
    return batch


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    lm = batch["lm"].to(device) if batch["lm"] is not None else None
    cls = [(task, {k: v.to(device) for k, v in c.items()}) for task, c in batch["cls"]]
    return {"lm": lm, "cls": cls}


# ------------------------------------------------------------------------------------------ objective
class MixtureObjective(nn.Module):
    """L = L_LM (+ alpha T^2 KL) + lambda (L_cls (+ alpha T^2 KL)) + w_bal L_bal + w_z L_z in ONE forward.

    One module call per step, so DistributedDataParallel sees one forward per backward even though the LM
    batch and each task's examples are separate passes through the model. L_cls is the mean over the step's
    task examples (each task's mean weighted by its share); the routing losses are averaged over the passes.
    Teacher logits come in precomputed (None: no distillation of that batch).
    """

    def __init__(self, model: GemLM, cfg: GemConfig):
        super().__init__()
        self.model = model
        self.cls_weight = cfg.train.cls_weight
        self.alpha, self.temperature = cfg.distill.alpha, cfg.distill.temperature

    def forward(
        self,
        lm: torch.Tensor | None,
        cls: list[tuple[str, dict[str, torch.Tensor]]],
        teacher_lm: torch.Tensor | None = None,
        teacher_cls: list[torch.Tensor | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        m, terms = self.model, {}
        total, bal, z = 0.0, [], []
        if lm is not None:
            targets = lm[:, 1:]
            out = m(lm[:, :-1], targets)
            terms["lm"] = out.lm_loss
            loss = out.lm_loss
            if teacher_lm is not None:
                loss = knowledge_preservation_loss(
                    loss, out.logits, teacher_lm, self.alpha, self.temperature, targets != IGNORE_INDEX
                )
            total = total + loss
            bal.append(out.balance_loss)
            z.append(out.z_loss)
        if cls:
            n = sum(c["labels"].shape[0] for _, c in cls)
            ce_sum, obj_sum = 0.0, 0.0
            for g, (task, c) in enumerate(cls):
                out_c = m.classify(c["input_ids"], c["lengths"], task, c["labels"])
                share = c["labels"].shape[0] / n
                loss = out_c.ce_loss
                if teacher_cls is not None and teacher_cls[g] is not None:
                    loss = knowledge_preservation_loss(
                        loss, out_c.logits, teacher_cls[g], self.alpha, self.temperature
                    )
                ce_sum = ce_sum + share * out_c.ce_loss
                obj_sum = obj_sum + share * loss
                bal.append(out_c.balance_loss)
                z.append(out_c.z_loss)
            terms["ce"] = ce_sum
            total = total + self.cls_weight * obj_sum
        aux_bal, aux_z = torch.stack(bal).mean(), torch.stack(z).mean()
        terms["loss"] = total + m.cfg.balance_loss_weight * aux_bal + m.cfg.z_loss_weight * aux_z
        return terms


@dataclass
class Teacher:
    """The frozen teacher of a distillation run.

    Attributes:
        model: the teacher LM (eval mode, requires_grad off)
        tasks: tasks whose heads the teacher was trained on (their class logits are distilled)
        targets: both, lm or cls (DistillConfig.targets)
    """

    model: GemLM
    tasks: set[str]
    targets: str

    @torch.no_grad()
    def logits(self, batch: dict[str, Any], device: torch.device, amp: bool) -> tuple[Any, list[Any]]:
        """Teacher LM logits (B, T, V) of the LM batch and class logits per task group (None: not distilled)."""
        lm, cls = None, []
        with autocast(device, amp):
            if batch["lm"] is not None and self.targets in ("both", "lm"):
                lm = self.model(batch["lm"][:, :-1]).logits
            for task, c in batch["cls"]:
                use = self.targets in ("both", "cls") and task in self.tasks
                cls.append(self.model.classify(c["input_ids"], c["lengths"], task).logits if use else None)
        return lm, cls


def load_teacher(cfg: GemConfig, device: torch.device, suite: Suite) -> Teacher | None:
    """The frozen teacher (``distill.teacher`` or ``train.init_from``), or None for plain training."""
    d = cfg.distill
    path = d.teacher or cfg.train.init_from
    if d.alpha == 0 and not d.teacher:
        return None
    if not path:
        raise ConfigError("distill.alpha > 0 needs a teacher: set distill.teacher or train.init_from")
    model, state = load_trained_model(path, device)
    model.requires_grad_(False)
    tasks = (state.get("extra") or {}).get("trained_tasks")
    if tasks is None:  # a checkpoint without the record: the tasks of the domains its config trained on
        domains = (state.get("config") or {}).get("train", {}).get("domains") or suite.training_domains
        tasks = trained_tasks(suite, domains)
    return Teacher(model, set(tasks), d.targets)


# -------------------------------------------------------------------------------------- optimisation
def make_optimizer(model: nn.Module, cfg: GemConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices (embeddings, Linears, router slots), not on norms and biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.train.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=BETAS)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------- the config
def resolve_config(
    cfg: GemConfig, suite: Suite, tok: GemTokenizer
) -> tuple[GemConfig, dict[str, Any] | None]:
    """``cfg`` with ``model.task_labels`` from the suite, checked against the tokenizer and ``init_from``;
    and the ``init_from`` checkpoint (None when training from scratch)."""
    labels = {
        n: len(suite.task(n).labels) for n in suite.task_names if suite.task(n).kind == "classification"
    }
    m = cfg.model
    if m.task_labels and m.task_labels != labels:
        raise ConfigError(
            f"model.task_labels={m.task_labels} differ from the suite's classification tasks {labels}; "
            "leave model.task_labels empty (gem.train fills it from the suite)"
        )
    if m.vocab_size < tok.vocab_size:
        raise ConfigError(
            f"model.vocab_size={m.vocab_size} is smaller than the tokenizer's {tok.vocab_size} tokens "
            f"({suite.dir / 'tokenizer.json'}); set model.vocab_size={tok.vocab_size}"
        )
    longest = max(cfg.data.context_len, cfg.data.max_len)
    if m.context_length < longest:
        raise ConfigError(
            f"model.context_length={m.context_length} is shorter than data.context_len / data.max_len "
            f"({longest}); raise model.context_length or lower the data lengths"
        )
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(m, task_labels=labels))
    init = None
    if cfg.train.init_from:
        init = load_checkpoint(cfg.train.init_from, paper="gem")
        mine, theirs = config_to_dict(cfg.model), config_to_dict(model_config_of(init, cfg.train.init_from))
        for key in mine:
            if mine[key] != theirs.get(key):
                raise ConfigError(
                    f"train.init_from={cfg.train.init_from} was trained with model.{key}={theirs.get(key)!r}, "
                    f"this config has {mine[key]!r}; use the generalist's model settings"
                )
    return cfg, init


# ----------------------------------------------------------------------------------------------- train
def train_epoch(
    objective: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    cfg: GemConfig,
    data: TrainData,
    plan: EpochPlan,
    run: TrainRun,
    teacher: Teacher | None,
    step: int,
    pad_id: int,
    desc: str,
) -> tuple[dict[str, float], int]:
    """One epoch of ``plan.steps`` steps; the mean loss terms and the step counter after it."""
    steps = plan.steps
    progress = StepProgress(steps, desc, run.log, run.info.rank, log_every=cfg.train.log_every)
    sums: dict[str, float] = {}
    device = run.device
    try:
        for i in range(steps):
            batch = to_device(step_batch(cfg, data, plan, i, run.info, pad_id), device)
            t_lm, t_cls = teacher.logits(batch, device, cfg.train.amp) if teacher else (None, None)
            with autocast(device, cfg.train.amp):
                terms = objective(batch["lm"], batch["cls"], t_lm, t_cls)
            loss = optimizer_step(
                terms["loss"], opt, step, nan_at_step=cfg.train.nan_at_step, grad_clip=cfg.train.grad_clip
            )
            sched.step()
            step += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + (loss if k == "loss" else float(v.detach()))
            n_lm = 0 if batch["lm"] is None else batch["lm"].shape[0]
            progress.update(loss, n_lm + sum(c["labels"].shape[0] for _, c in batch["cls"]))
    finally:
        progress.close()
    means = {k: all_reduce_mean(torch.tensor(v / steps, dtype=torch.float64)).item() for k, v in sums.items()}
    return means, step


def selection_score(val: dict[str, Any], cfg: GemConfig, domains: Sequence[str]) -> float:
    """The best-checkpoint scalar: mean val macro F1 over the trained domains, or mean val LM NLL."""
    if cfg.train.select_by == "f1":
        return float(np.mean([val["domain_f1"][d] for d in domains if d in val["domain_f1"]]))
    return float(np.mean([math.log(val["ppl"][d]) for d in domains if d in val["ppl"]]))


def check_selection(cfg: GemConfig, suite: Suite, domains: Sequence[str], data: TrainData) -> None:
    if cfg.train.select_by == "f1" and not trained_tasks(suite, domains):
        raise ConfigError(
            f"train.select_by=f1, but the trained domains {list(domains)} have no classification task; "
            "use train.select_by=loss"
        )
    if cfg.train.select_by == "loss" and not data.lm_domains:
        raise ConfigError("train.select_by=loss needs LM training text (train.lm_batch_size > 0); use f1")


def train(
    cfg: GemConfig, run_dir: str | Path | None = None, resume: bool = False, device: str = "auto"
) -> dict[str, Any]:
    """Train one model, keep the best checkpoint by ``train.select_by``, score it on test; the summary."""
    suite, tok = load_data(cfg)
    domains = trained_domains(cfg, suite)
    cfg, init = resolve_config(cfg, suite, tok)
    higher = cfg.train.select_by == "f1"
    with TrainRun("gem", cfg, run_dir=run_dir, resume=resume, device=device, seed=cfg.train.seed,
                  higher_is_better=higher) as run:  # fmt: skip
        data = build_train_data(cfg, suite, tok, domains)
        check_selection(cfg, suite, domains, data)
        model = GemLM(cfg.model)
        if init is not None:
            restore_checkpoint(init, model=model, restore_rng=False)
        objective = wrap_model(MixtureObjective(model, cfg), run.info, find_unused_parameters=True)
        teacher = load_teacher(cfg, run.device, suite)
        opt = make_optimizer(model, cfg)
        n_steps = steps_per_epoch(cfg, data, run.info.world_size)
        total = n_steps * cfg.train.epochs
        t = cfg.train
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, t.warmup_steps, total, t.min_lr_ratio)
        )
        extra = {"tokenizer": tok.tk.to_str(), "train_time_s": 0.0, "trained_domains": domains,
                 "trained_tasks": data.tasks}  # fmt: skip
        state = run.start(model, opt, sched, extra=extra)
        val_sets: EvalSets = build_eval_sets(
            suite, tok, cfg, "val", domains if cfg.eval.val_domains == "trained" else None
        )
        run.log.info(
            "%s: %d parameters; domains %s; tasks %s; %d steps x %d epochs%s",
            cfg.model.ffn, model.num_params(), ", ".join(domains), ", ".join(data.tasks) or "none", n_steps,
            t.epochs, f"; teacher {cfg.distill.teacher or t.init_from} (alpha {cfg.distill.alpha})" if teacher else "",
        )  # fmt: skip
        step = state.step
        for epoch in range(state.epoch, t.epochs):
            plan = draw_epoch(cfg, data, epoch, n_steps, run.info.world_size)
            objective.train()
            t0 = time.perf_counter()
            means, step = train_epoch(
                objective, opt, sched, cfg, data, plan, run, teacher, step, tok.pad_id,
                f"epoch {epoch + 1}/{t.epochs}",
            )  # fmt: skip
            state.extra["train_time_s"] += time.perf_counter() - t0
            val = evaluate_model(model, val_sets, cfg.eval, tok.pad_id, run.device, run.info, t.amp)
            score = selection_score(val, cfg, domains)
            record = {"epoch": epoch + 1, "step": step, "lr": sched.get_last_lr()[0],
                      **{f"train_{k}": v for k, v in means.items()}, "val_score": score,
                      "val_mean_f1": val["mean_f1"], "val_ppl": val["ppl"], "val_f1": val["domain_f1"],
                      "train_time_s": state.extra["train_time_s"]}  # fmt: skip
            run.end_epoch(record, score, model=model, optimizer=opt, scheduler=sched)
            run.log.info(
                "epoch %d: loss %.4f, val %s %.4f (best %.4f)", epoch + 1, means["loss"],
                "mean F1" if higher else "mean NLL", score, state.best,
            )  # fmt: skip

        best = run.load_best(model)
        test = evaluate_model(
            unwrap_model(model), build_eval_sets(suite, tok, cfg, "test"), cfg.eval, tok.pad_id, run.device,
            run.info, t.amp,
        )  # fmt: skip
        active = [v for d, v in test["active_params"].items() if d in domains]
        summary = {
            "experiment": cfg.experiment,
            "ffn": cfg.model.ffn,
            "params": model.num_params(),
            "active_params": float(np.mean(active)) if active else float(model.num_params()),
            "domains": domains,
            "tasks": data.tasks,
            "init_from": t.init_from,
            "distill_alpha": cfg.distill.alpha if teacher else 0.0,
            "select_by": t.select_by,
            "best_epoch": best["epoch"],
            "epochs": t.epochs,
            "steps": step,
            "train_time_s": state.extra["train_time_s"],
            "val_score": state.best,
        }
        run.log.info(
            "test mean F1 %.4f, mean PPL over the trained domains %.1f (best epoch %d) -> %s",
            test["mean_f1"], float(np.mean([test["ppl"][d] for d in domains if d in test["ppl"]] or [np.nan])),
            best["epoch"], run.dir,
        )  # fmt: skip
        return run.finish(summary, test)


def main(argv: Sequence[str] | None = None) -> None:
    train_main(
        "gem", GemConfig, train, "train a GEM LM (generalist, specialist, distilled, adaptation)", argv
    )


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
