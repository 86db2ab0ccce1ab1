"""The mechanics every ``<paper>/reproduce.py`` shares; what is trained and what the report says stay there.

- ``reproduce_parser``: ``--quick --jobs --threads --reuse --from-metrics --debug``, the same in every package;
- ``rebuild_from_metrics``: a report rebuilt from its ``metrics.json`` alone (no run folders needed);
- ``run_process`` / ``train_process``: one training (or evaluation) command as its own process, single- or
  few-threaded, its output in a log file beside the run, skipped when the run folder has finished, one
  ``TrainingError`` naming the log when it fails;
- ``run_parallel``: jobs ``--jobs`` at a time with ``RunsProgress`` ("k of N runs done, ETA");
- ``trained_at`` / ``reused_wall_time``: provenance read back from finished run folders;
- ``nan_mean`` / ``seed_std``: the mean over seeds skipping NaN, the sample standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from shared.checkpoint import load_checkpoint
from shared.errors import ConfigError, DataError, TrainingError
from shared.log import RunsProgress, read_metrics

J = TypeVar("J", bound=Hashable)
R = TypeVar("R")


def reproduce_parser(description: str, quick_help: str) -> argparse.ArgumentParser:
    """The flags every reproduce command has; a package adds its own (``--config``, ``--seeds``...)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--jobs", type=int, default=2, help="training processes at a time (default 2)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per training process (default 1)"
    )
    parser.add_argument("--reuse", default=None, help="take finished runs from this earlier reproduce folder")
    parser.add_argument(
        "--from-metrics", default=None, help="rebuild report.md and the plots beside this metrics.json only"
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    return parser


def check_parallelism(args: argparse.Namespace) -> None:
    for key in ("jobs", "threads"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key} must be >= 1, got {getattr(args, key)}")


def rebuild_from_metrics(path: str | Path, write_report: Callable[[dict[str, Any], Path], Path]) -> Path:
    """``write_report(metrics, folder)`` from a stored ``metrics.json``; the report lands beside it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass the metrics.json of a finished reproduction")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON (line {exc.lineno}); restore it from git") from exc
    return write_report(metrics, path.parent)


def run_process(cmd: Sequence[str], log_path: Path, threads: int) -> None:
    """Run ``cmd`` with ``threads`` intra-op threads, stdout and stderr into ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t = str(threads)
    env = dict(
        os.environ, OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, RAYON_NUM_THREADS=t, TOKENIZERS_PARALLELISM="false"
    )
    with open(log_path, "w") as fh:
        rc = subprocess.run(list(cmd), env=env, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        tail = " | ".join(log_path.read_text().strip().splitlines()[-3:])
        raise TrainingError(f"`{' '.join(cmd)}` failed (exit {rc}), see {log_path}: {tail}")


def train_process(
    paper: str, config: str, overrides: Sequence[str], run_dir: Path, threads: int
) -> dict[str, Any]:
    """``python -m <paper>.train`` into ``run_dir`` (skipped when it holds ``summary.json``); its summary with
    the per-epoch ``metrics.jsonl`` as ``curve``."""
    done = run_dir / "summary.json"
    if not done.is_file():
        cmd = [sys.executable, "-m", f"{paper}.train", "--config", config, "--run-dir", str(run_dir)]
        cmd += [a for o in overrides for a in ("--set", o)]
        run_process(cmd, run_dir / "train.log", threads)
    summary = json.loads(done.read_text())
    summary["curve"] = read_metrics(run_dir / "metrics.jsonl")
    return summary


def run_parallel(
    jobs: Sequence[J],
    run: Callable[[J], R],
    workers: int,
    logger: Any,
    describe: Callable[[J, R], str] = lambda job, _: str(job),
) -> dict[J, R]:
    """``run(job)`` for every job, ``workers`` at a time in the given order (put the longest first);
    ``{job: result}``. Each finished job logs ``k of N runs done (describe(job, result) in S s), ETA``."""
    progress = RunsProgress(len(jobs), logger)
    results: dict[J, R] = {}

    def timed(job: J) -> tuple[R, float]:
        t0 = time.perf_counter()
        return run(job), time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(timed, job): job for job in jobs}
        for fut in as_completed(futures):
            job = futures[fut]
            result, seconds = fut.result()  # a failed run stops the reproduction here
            results[job] = result
            progress.finished(describe(job, result), seconds)
    return results


def trained_at(root: Path, paper: str) -> str:
    """The commit(s) recorded in the ``best.pt`` of the run folders under ``root``."""
    commits = set()
    for path in sorted(root.glob("*/best.pt")):
        try:
            commits.add(str(load_checkpoint(path, paper=paper).get("git_commit")))
        except TrainingError:
            commits.add("unreadable checkpoint")
    return ", ".join(sorted(commits)) or "unknown (no best.pt in the run folders)"


def reused_wall_time(folder: Path) -> float:
    """Wall time of an earlier reproduce folder: recorded, or from its files (first config to last summary)."""
    if (folder / "wall_time.json").is_file():
        return float(json.loads((folder / "wall_time.json").read_text())["wall_time_s"])
    starts = [p.stat().st_mtime for p in folder.glob("*/config.yaml")]
    ends = [p.stat().st_mtime for p in folder.glob("*/summary.json")]
    return max(ends) - min(starts) if starts and ends else 0.0


def nan_mean(xs: Sequence[float | None]) -> float:
    """Mean of the values that are not None/NaN (NaN when none is)."""
    vals = [float(x) for x in xs if x is not None and not math.isnan(float(x))]
    return float(np.mean(vals)) if vals else float("nan")


def seed_std(xs: Sequence[float | None], single: float = 0.0) -> float:
    """Sample standard deviation (ddof 1) over seeds, skipping None/NaN; ``single`` when fewer than two."""
    vals = [float(x) for x in xs if x is not None and not math.isnan(float(x))]
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else single
