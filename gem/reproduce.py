"""``make reproduce-gem [QUICK=1]``: GEM's specialisation-vs-generalisation study on the embedded suite.

    python -m gem.reproduce [--quick] [--jobs 2] [--threads 1] [--config gem/configs/suite.yaml]
    python -m gem.reproduce --reuse runs/gem/reproduce/<stamp>        # finish / re-report earlier runs
    python -m gem.reproduce --from-metrics results/gem/metrics.json   # report from metrics.json alone

The study (arXiv 2503.22698, abstract; every definition ours, see gem/README.md):

- generalists on the seven training domains: **SCAR-GEM**, the **dense generalist of equal active compute**
  (its d_ff from SCAR-GEM's measured mean k, ``gem.model.dense_equal_active_compute``) and the **softmax top-k
  MoE** (router ablation);
- **specialists**: the dense generalist fine-tuned on one training domain (one per domain), and the same with
  **distillation** from the frozen generalist (``distill.alpha``);
- **domain-adaptive transfer**: the dense generalist and SCAR-GEM adapted to the held-out domain's small budget;
- **compression**: post-training int8 and magnitude pruning at several sparsities of SCAR-GEM and of the dense
  generalist (no retraining, ``python -m gem.evaluate --compress``), and a narrower and a shallower SCAR-GEM
  (trained like the generalists).

Each run is a separate ``python -m gem.train`` (or ``gem.evaluate``) process, ``--jobs`` at a time with
``--threads`` threads each, in dependency order (SCAR-GEM before its equal-compute dense model, the dense
generalist before its specialists); each writes its run folder under ``runs/gem/reproduce[-quick]/<stamp>/``.
``metrics.json`` then holds everything the report shows, and ``gem/report.py`` writes ``report.md`` and the
plots from it alone. The full run writes ``results/gem/``; ``--quick`` (one seed, the quick suite, a few
steps, three specialist domains) writes under ``runs/gem/quick/`` only (``shared.report.report_dir``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gem.compress import architecture_intensity, compress, narrower, shallower
from gem.config import GemConfig, ModelConfig
from gem.data import load_suite
from gem.evaluate import load_trained_model, task_domain
from gem.model import dense_equal_active_compute
from gem.report import write_report
from shared.bench import load_note, machine_info, time_fn
from shared.config import load_config
from shared.errors import ConfigError, TrainingError, run_cli
from shared.log import RunsProgress, get_logger
from shared.report import machine_description, report_dir, write_metrics_json
from shared.reproduce import (
    check_parallelism,
    rebuild_from_metrics,
    reproduce_parser,
    reused_wall_time,
    run_process,
    trained_at,
)

DEFAULT_CONFIG = "gem/configs/suite.yaml"
log = get_logger("gem.reproduce")


@dataclass(frozen=True)
class Budget:
    """How much of the study one reproduction runs (FULL: ~30 min on 2 cores; QUICK: a few minutes).

    Attributes:
        quick: use the quick suite (data.quick) and write the report under runs/
        seeds: seeds of the generalists (SCAR-GEM, dense), the specialists and the adaptation runs
        extra_seeds: seeds of the MoE, the narrower / shallower variants and the post-training compressions
        generalist: (epochs, steps per epoch) of SCAR-GEM, dense, MoE, narrower and shallower
        specialist: (epochs, steps per epoch) of the specialists, plain and distilled
        adaptation: (epochs, steps per epoch) of the held-out-domain adaptation
        specialist_domains: training domains that get specialists (empty = all of them)
        compressions: post-training compressions (gem.evaluate --compress specs)
        specialist_lr: peak learning rate of the fine-tunes (specialists, adaptation)
        alpha: distillation weight of the distilled specialists
        test: (LM tokens per domain, examples per task, MMLU questions per domain) of the test scoring
        val: (LM tokens per domain, examples per task) of each validation
    """

    quick: bool
    seeds: tuple[int, ...]
    extra_seeds: tuple[int, ...]
    generalist: tuple[int, int]
    specialist: tuple[int, int]
    adaptation: tuple[int, int]
    specialist_domains: tuple[str, ...]
    compressions: tuple[str, ...]
    specialist_lr: float
    alpha: float
    test: tuple[int, int, int]
    val: tuple[int, int]


COMPRESSIONS = ("int8", "prune:0.3", "prune:0.5", "prune:0.7", "prune:0.9", "int8+prune:0.5")
# The budget, from CPU times measured on the 2-core machine (one thread, under a load average of 4-5 from
# other jobs, so an idle machine is faster): a training step (8 x 128 LM tokens + 24 task examples) costs
# 0.52 s with SCAR, 0.47 s dense, 0.55 s MoE, 0.28 s narrower, 0.32 s shallower, 0.65 s dense with a
# distillation teacher; a process starts in ~4 s (+4 s to tokenize every training domain); validating all
# domains ~4 s; test scoring ~8 s (+8 s for 30 MMLU questions per domain). FULL: 7 generalist-sized runs x
# 390 steps (~230 s each), 42 specialists x 30 steps (~30 s), 6 adaptations (~30 s), 12 compressed
# evaluations (~14 s): ~3,600 CPU-seconds by these figures; the QUICK run took 12 % more than its estimate
# (526 CPU-seconds), so ~4,000: 30-34 minutes on 2 cores with the data build, less on an idle machine.
FULL = Budget(False, (0, 1, 2), (0,), (3, 130), (2, 15), (2, 15), (), COMPRESSIONS, 1e-3, 0.7,
              (4096, 0, 30), (2048, 150))  # fmt: skip
QUICK = Budget(True, (0,), (0,), (2, 50), (2, 6), (2, 6), ("healthcare", "law", "multilingual"),
               ("int8", "prune:0.5", "prune:0.9"), 1e-3, 0.7, (2048, 150, 20), (1024, 100))  # fmt: skip


# ------------------------------------------------------------------------------------------- the study
@dataclass
class Job:
    """One process of the study.

    Attributes:
        key: model key (dense, scar, moe, narrow, shallow, spec:<d>, kd:<d>, adapt:<base>, c:<base>:<spec>)
        seed: training seed
        deps: (key, seed) of the runs it needs first
        priority: lower starts first among the ready jobs (long chains early, short fill-ins last)
    """

    key: str
    seed: int
    deps: tuple[tuple[str, int], ...] = ()
    priority: int = 0

    @property
    def name(self) -> str:
        return f"{self.key.replace(':', '_')}_seed{self.seed}"


@dataclass
class Study:
    """The models of one reproduction, their labels and the jobs that train / score them.

    Attributes:
        budget: the Budget
        cfg: the base config (suite.yaml with the budget's overrides)
        training_domains: the suite's training domains
        held_out: the held-out domain
        models: key -> label, short label, group, base, target, intensity
        jobs: every job, in submission order
    """

    budget: Budget
    cfg: GemConfig
    training_domains: list[str]
    held_out: str
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)


def compression_label(spec: str) -> tuple[str, str]:
    """("int8 + pruned 50 %", "int8+p50") of a ``--compress`` spec such as ``int8+prune:0.5``."""
    long, short = [], []
    for p in spec.split("+"):
        if p == "int8":
            long.append("int8")
            short.append("int8")
        else:
            pct = round(100 * float(p.split(":")[1]))
            long.append(f"pruned {pct} %")
            short.append(f"p{pct}")
    return " + ".join(long), "+".join(short)


def architecture_overrides(cfg: ModelConfig, variant: ModelConfig) -> list[str]:
    return [f"model.{f.name}={getattr(variant, f.name)}" for f in dataclasses.fields(cfg)
            if getattr(variant, f.name) != getattr(cfg, f.name)]  # fmt: skip


def plan_study(budget: Budget, cfg: GemConfig, training: list[str], held_out: str) -> Study:
    study = Study(budget, cfg, training, held_out)
    m, seeds, extra = study.models, budget.seeds, budget.extra_seeds
    gen = "generalist"
    m["dense"] = {"label": "dense generalist (equal active compute)", "short": "dense", "group": gen}
    m["scar"] = {"label": "SCAR-GEM", "short": "SCAR", "group": gen}
    m["moe"] = {"label": f"softmax top-{cfg.model.moe_top_k} MoE", "short": "MoE", "group": gen}
    scar_cfg = dataclasses.replace(cfg.model, ffn="scar")
    for key, variant, text, short in (
        ("narrow", narrower(scar_cfg, 0.5), "SCAR-GEM x0.5 width", "x0.5 width"),
        ("shallow", shallower(scar_cfg, max(1, scar_cfg.n_layers // 2)), "SCAR-GEM half depth", "half depth"),
    ):  # fmt: skip
        m[key] = {"label": text, "short": short, "group": "architecture", "base": "scar",
                  "intensity": architecture_intensity(variant, scar_cfg),
                  "overrides": architecture_overrides(scar_cfg, variant)}  # fmt: skip
    for d in budget.specialist_domains or training:
        m[f"spec:{d}"] = {
            "label": f"specialist: {d}",
            "short": d,
            "group": "specialist",
            "base": "dense",
            "target": d,
        }
    for d in budget.specialist_domains or training:
        m[f"kd:{d}"] = {"label": f"specialist + distillation: {d}", "short": f"{d} KD", "group": "distilled",
                        "base": "dense", "target": d}  # fmt: skip
    for base in ("dense", "scar"):
        m[f"adapt:{base}"] = {"label": f"{m[base]['label']} adapted to {held_out}", "short": f"{m[base]['short']} adapted",
                              "group": "adaptation", "base": base}  # fmt: skip
    for base in ("scar", "dense"):
        for spec in budget.compressions:
            text, short = compression_label(spec)
            m[f"c:{base}:{spec}"] = {"label": f"{m[base]['label']} {text}", "short": f"{m[base]['short']} {short}",
                                     "group": "compressed", "base": base, "compress": spec}  # fmt: skip
    jobs = study.jobs
    jobs += [Job("scar", s, (), 1) for s in seeds]
    jobs += [Job("dense", s, (("scar", s),), 0) for s in seeds]
    jobs += [Job(k, s, (), 2) for k in ("moe", "narrow", "shallow") for s in extra]
    for key, info in m.items():
        if info["group"] in ("specialist", "distilled"):
            jobs += [Job(key, s, (("dense", s),), 3) for s in seeds]
        elif info["group"] == "adaptation":
            jobs += [Job(key, s, ((info["base"], s),), 4) for s in seeds]
        elif info["group"] == "compressed":
            jobs += [Job(key, s, ((info["base"], s),), 5) for s in extra if s in seeds]
    return study


def common_overrides(budget: Budget, seed: int) -> list[str]:
    (t_lm, t_ex, t_mc), (v_lm, v_ex) = budget.test, budget.val
    return [f"data.quick={str(budget.quick).lower()}", f"train.seed={seed}", f"eval.max_lm_tokens={t_lm}",
            f"eval.max_examples={t_ex}", f"eval.max_mc_examples={t_mc}", f"eval.val_max_lm_tokens={v_lm}",
            f"eval.val_max_examples={v_ex}"]  # fmt: skip


def dense_overrides(results: dict[tuple[str, int], dict], study: Study, seed: int) -> list[str]:
    return ["model.ffn=dense", f"model.d_ff={dense_d_ff(results, study, seed)[0]}"]


def dense_d_ff(results: dict[tuple[str, int], dict], study: Study, seed: int) -> tuple[int, float]:
    """The dense generalist's d_ff from SCAR-GEM's mean k (same seed) over the training domains' test text."""
    scar = results[("scar", seed)]["test"]
    k = float(np.mean([scar["mean_k"][d] for d in study.training_domains]))
    scar_cfg = dataclasses.replace(study.cfg.model, ffn="scar")
    return dense_equal_active_compute(scar_cfg, k).d_ff, k


def model_overrides(key: str, study: Study, results: dict[tuple[str, int], dict], seed: int) -> list[str]:
    if key == "dense":
        return dense_overrides(results, study, seed)
    if key in ("scar", "moe"):
        return [f"model.ffn={key}"]
    if key in ("narrow", "shallow"):
        return ["model.ffn=scar", *study.models[key]["overrides"]]
    return model_overrides(study.models[key]["base"], study, results, seed)


def job_command(
    job: Job, study: Study, results: dict[tuple[str, int], dict], root: Path, config: str
) -> list[str]:
    """The argv of ``job`` (its model settings may depend on finished runs: dense on SCAR-GEM's mean k)."""
    b, info = study.budget, study.models[job.key]
    sets = common_overrides(b, job.seed)
    group = info["group"]
    if group == "compressed":
        base = root / Job(info["base"], job.seed).name
        cmd = ["-m", "gem.evaluate", "--checkpoint", str(base / "best.pt"), "--compress", info["compress"],
               "--out", str(root / job.name / "test_metrics.json")]  # fmt: skip
        sets += ["eval.multiple_choice=false"]
    else:
        cmd = ["-m", "gem.train", "--run-dir", str(root / job.name)]
        sets += model_overrides(job.key, study, results, job.seed)
        if group in ("generalist", "architecture"):
            epochs, steps = b.generalist
            sets += [f"train.warmup_steps={min(study.cfg.train.warmup_steps, epochs * steps // 5)}"]
        else:
            epochs, steps = b.specialist if group in ("specialist", "distilled") else b.adaptation
            base = root / Job(info["base"], job.seed).name
            domain = info.get("target", study.held_out)
            sets += [f"train.init_from={base / 'best.pt'}", f"train.domains=[{domain}]", f"train.lr={b.specialist_lr}",
                     f"train.warmup_steps={max(1, steps // 5)}", "eval.val_domains=trained",
                     "eval.multiple_choice=false"]  # fmt: skip
            if group == "distilled":
                sets += [f"distill.alpha={b.alpha}"]
        sets += [f"train.epochs={epochs}", f"train.steps_per_epoch={steps}"]
    return [sys.executable, *cmd, "--config", config, *(a for s in sets for a in ("--set", s))]


TEST_KEYS = ("ppl", "domain_f1", "f1", "domain_mc_accuracy", "mean_k", "active_params", "router_utilisation",
             "lm_tokens", "examples")  # fmt: skip


def run_job(job: Job, study: Study, results: dict, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one process (skipped when its folder is finished); the record metrics.json keeps of it."""
    out = root / job.name
    group = study.models[job.key]["group"]
    done = out / ("test_metrics.json" if group == "compressed" else "summary.json")
    if not done.is_file():
        out.mkdir(parents=True, exist_ok=True)
        cmd = job_command(job, study, results, root, args.config)
        if group != "compressed":
            cmd += ["--device", args.device]
        run_process(cmd, out / "run.log", args.threads)
    test = json.loads((out / "test_metrics.json").read_text())
    record: dict[str, Any] = {"seed": job.seed, "test": {k: test[k] for k in TEST_KEYS if k in test}}
    if group == "compressed":
        base = results[(study.models[job.key]["base"], job.seed)]
        record |= {"params": base["params"], "compression": test["compression"]}
    else:
        s = json.loads(done.read_text())
        record |= {k: s[k] for k in ("params", "active_params", "train_time_s", "best_epoch", "steps")}
    return record


def run_study(study: Study, root: Path, args: argparse.Namespace) -> dict[tuple[str, int], dict]:
    """Every job, ``--jobs`` at a time, each started once its dependencies have finished."""
    results: dict[tuple[str, int], dict] = {}
    pending = sorted(study.jobs, key=lambda j: j.priority)
    running: dict[Future, Job] = {}
    progress = RunsProgress(len(pending), log)
    started: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        while pending or running:
            for job in list(pending):
                if len(running) >= args.jobs:
                    break
                if all(d in results for d in job.deps):
                    pending.remove(job)
                    started[job.name] = time.perf_counter()
                    running[pool.submit(run_job, job, study, results, root, args)] = job
            if not running:
                raise TrainingError(f"jobs {[j.name for j in pending]} wait for runs that never finished")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                job = running.pop(fut)
                results[(job.key, job.seed)] = fut.result()  # a failed run stops the study here
                f1 = results[(job.key, job.seed)]["test"]["domain_f1"]
                mean_f1 = np.mean([f1[d] for d in study.training_domains if d in f1] or [np.nan])
                progress.finished(
                    f"{job.name}: mean F1 {mean_f1:.3f}", time.perf_counter() - started[job.name]
                )
    return results


# ------------------------------------------------------------------------------------------ latency
def measure_latency(root: Path, keys: Sequence[str], seed: int, context: int) -> dict[str, Any]:
    """A quick eager latency per model (one thread, batch 1, a full ``context``-token forward, median of 20)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    idx = torch.randint(0, 256, (1, context), generator=torch.Generator().manual_seed(0))
    rows: dict[str, float] = {}
    try:
        for key in keys:
            base = key.split(":")[1] if key.startswith("c:") else key
            path = root / Job(base, seed).name / "best.pt"
            if not path.is_file():
                continue
            model, _ = load_trained_model(path, torch.device("cpu"))
            if key.startswith("c:"):
                model = compress(model, sparsity=0.0, int8=True).model
            with torch.no_grad():
                rows[key] = 1000 * time_fn(lambda m=model: m(idx), warmup=3, repeats=20).median_s
    finally:
        torch.set_num_threads(threads)
    return {"source": "measured by gem.reproduce on the study's trained models: eager PyTorch, 1 thread, batch 1, "
                      f"{context} tokens, median of 20 after 3 warm-up runs, on the machine below while nothing "
                      "else of the study ran", "what": f"eager, batch 1 x {context} tokens", "rows": rows}  # fmt: skip


# ------------------------------------------------------------------------------------------ metrics.json
def suite_sizes(cfg: GemConfig) -> dict[str, int]:
    m = load_suite(cfg.data).manifest
    lm = {
        s: sum(d["lm"][s].get("tokens", 0) for d in m["domains"].values()) for s in ("train", "val", "test")
    }
    cls = {s: sum(t["counts"][s] for t in m["tasks"].values() if t["kind"] == "classification")
           for s in ("train", "val", "test")}  # fmt: skip
    mc = sum(t["counts"]["test"] for t in m["tasks"].values() if t["kind"] == "multiple_choice")
    return {"lm_train_tokens": lm["train"], "lm_val_tokens": lm["val"], "lm_test_tokens": lm["test"],
            "task_train": cls["train"], "task_val": cls["val"], "task_test": cls["test"], "mc_test": mc}  # fmt: skip


def collect_metrics(
    study: Study,
    results: dict[tuple[str, int], dict],
    args: argparse.Namespace,
    root: Path,
    wall: float,
    machine: dict[str, Any],
    latency: dict[str, Any],
) -> dict[str, Any]:
    """Everything the report shows, as plain JSON (``metrics.json``): the report is rebuilt from it alone."""
    b, cfg = study.budget, study.cfg
    suite = load_suite(cfg.data)
    held_task = next((t for t in suite.task_names if task_domain(suite.task(t)) == study.held_out
                      and suite.task(t).kind == "classification"), "")  # fmt: skip
    runs = {key: [results[(key, s)] for s in sorted({j.seed for j in study.jobs if j.key == key}) if (key, s) in results]
            for key in study.models}  # fmt: skip
    models = {k: {f: v for f, v in m.items() if f != "overrides"} for k, m in study.models.items()}
    d_ff = {str(s): dense_d_ff(results, study, s)[0] for s in b.seeds if ("scar", s) in results}
    mean_k = {str(s): dense_d_ff(results, study, s)[1] for s in b.seeds if ("scar", s) in results}
    return {
        "mode": "quick" if b.quick else "full",
        "command": "make reproduce-gem" + (" QUICK=1" if b.quick else ""),
        "seeds": list(b.seeds),
        "budget": {
            "jobs": args.jobs,
            "threads": args.threads,
            "generalist_steps": b.generalist[0] * b.generalist[1],
            "specialist_steps": b.specialist[0] * b.specialist[1],
            "adaptation_steps": b.adaptation[0] * b.adaptation[1],
            "lm_batch_size": cfg.train.lm_batch_size,
            "cls_batch_size": cfg.train.cls_batch_size,
            "context_len": cfg.data.context_len,
            "test_lm_tokens": b.test[0],
            "test_examples": b.test[1],
            "test_mc_examples": b.test[2],
            "val_lm_tokens": b.val[0],
            "val_examples": b.val[1],
            "seeds": list(b.seeds),
            "extra_seeds": list(b.extra_seeds),
        },
        "setup": {
            "lr": cfg.train.lr,
            "specialist_lr": b.specialist_lr,
            "warmup_steps": cfg.train.warmup_steps,
            "weight_decay": cfg.train.weight_decay,
            "alpha": b.alpha,
            "temperature": cfg.distill.temperature,
            "d_model": cfg.model.d_model,
            "n_layers": cfg.model.n_layers,
            "n_experts": cfg.model.n_experts,
            "scar_threshold": cfg.model.scar_threshold,
            "k_bounds": [cfg.model.scar_k_min, cfg.model.scar_k_max],
        },
        "domains": list(suite.domains),
        "training_domains": study.training_domains,
        "held_out": study.held_out,
        "held_out_task": held_task,
        "adaptation_examples": cfg.data.adaptation_examples,
        "generalist": "dense",
        "gem": "scar",
        "models": models,
        "runs": runs,
        "dense_d_ff": d_ff,
        "scar_mean_k": mean_k,
        "latency": latency,
        "sizes": suite_sizes(cfg),
        "wall_time_s": wall,
        "trained_at": trained_at(root, "gem"),
        "machine": machine_description(),
        "load_note": load_note(machine),
        "run_root": str(root),
    }


# ------------------------------------------------------------------------------------------------ main
def ensure_data(cfg: GemConfig) -> None:
    """Build the (quick) suite when missing or stale (``gem.prepare``: a no-op when up to date)."""
    from gem.prepare import prepare

    prepare(cfg.data)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = reproduce_parser(
        "reproduce GEM's specialisation-vs-generalisation study",
        "one seed, the quick suite, few steps (~5 minutes)",
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="base config of every run")
    parser.add_argument("--device", default="auto", help="device of the training runs: auto | cpu | cuda")
    parser.add_argument(
        "--seeds", default=None, help="comma-separated seeds of the main rows (default: 0,1,2; QUICK: 0)"
    )
    args = parser.parse_args(argv)
    check_parallelism(args)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.from_metrics:
        log.info("wrote %s", rebuild_from_metrics(args.from_metrics, write_report))
        return
    t0 = time.perf_counter()
    machine = machine_info()
    budget = QUICK if args.quick else FULL
    if args.seeds:
        try:
            seeds = tuple(int(x) for x in args.seeds.split(","))
        except ValueError:
            raise ConfigError(
                f"--seeds {args.seeds}: give comma-separated integers, e.g. --seeds 0,1"
            ) from None
        budget = dataclasses.replace(budget, seeds=seeds, extra_seeds=seeds[:1])
    cfg = load_config(GemConfig, args.config, [f"data.quick={str(budget.quick).lower()}"])
    ensure_data(cfg)
    suite = load_suite(cfg.data)
    study = plan_study(budget, cfg, suite.training_domains, suite.held_out_domain)
    base = Path(cfg.train.runs_root) / "gem" / ("reproduce-quick" if budget.quick else "reproduce")
    root = Path(args.reuse) if args.reuse else base / time.strftime("%Y%m%d-%H%M%S")
    log.info("%d runs (%d seeds of the main rows, %d of the extra ones) in %s", len(study.jobs), len(budget.seeds),
             len(budget.extra_seeds), root)  # fmt: skip
    results = run_study(study, root, args)
    keys = ["dense", "scar", "moe", "narrow", "shallow", "c:scar:int8", "c:dense:int8"]
    # the study's own trained models (make bench-gem times other, briefly trained ones)
    latency = measure_latency(root, keys, budget.extra_seeds[0], cfg.data.context_len)
    wall = time.perf_counter() - t0 + (reused_wall_time(Path(args.reuse)) if args.reuse else 0.0)
    root.mkdir(parents=True, exist_ok=True)
    write_metrics_json({"wall_time_s": wall}, root / "wall_time.json")
    metrics = collect_metrics(study, results, args, root, wall, machine, latency)
    path = write_report(metrics, report_dir("gem", quick=budget.quick))
    log.info("wrote %s (%.1f min)", path, (time.perf_counter() - t0) / 60)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
