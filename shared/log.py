"""Run folders, rank-0 logging, tqdm progress bars and the per-run ``metrics.jsonl``."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from shared.distributed import all_gather_object
from shared.errors import TrainingError

T = TypeVar("T")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (pytest and notebooks swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property ignores that
        pass


def get_logger(name: str, rank: int = 0, level: int = logging.INFO) -> logging.Logger:
    """A logger that prints on rank 0 only (other ranks log warnings and errors)."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level if rank == 0 else logging.WARNING)
    return logger


def progress(
    iterable: Iterable[T], desc: str = "", total: int | None = None, rank: int = 0, leave: bool = False
) -> Iterator[T]:
    """A tqdm bar, shown only on rank 0 and only when stderr is a terminal."""
    disable = rank != 0 or not sys.stderr.isatty()
    return iter(tqdm(iterable, desc=desc, total=total, disable=disable, leave=leave, dynamic_ncols=True))


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class StepProgress:
    """Progress inside one epoch: steps, loss, samples/s and ETA.

    On a terminal (rank 0) a tqdm bar; otherwise one log line every ``log_every`` steps and at the end, so
    a job's log shows it moving. ``update(loss, n)`` after each optimiser step (``n`` samples in it).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        logger: logging.Logger,
        rank: int = 0,
        log_every: int = 50,
        tty: bool | None = None,
    ):
        self.total, self.desc, self.logger, self.log_every = total, desc, logger, log_every
        self.enabled = rank == 0
        self.steps, self.samples, self.loss_sum = 0, 0, 0.0
        self.start = time.perf_counter()
        tty = sys.stderr.isatty() if tty is None else tty
        self.bar = (
            tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True) if self.enabled and tty else None
        )

    def rate(self) -> float:
        return self.samples / max(time.perf_counter() - self.start, 1e-9)

    def update(self, loss: float, n: int) -> None:
        self.steps += 1
        self.samples += n
        self.loss_sum += loss
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{self.rate():.0f}", refresh=False)
        elif self.log_every and (self.steps % self.log_every == 0 or self.steps == self.total):
            elapsed = time.perf_counter() - self.start
            eta = elapsed / self.steps * max(self.total - self.steps, 0)
            self.logger.info(
                "%s step %d/%d loss %.4f (mean %.4f) %.0f samples/s ETA %s",
                self.desc,
                self.steps,
                self.total,
                loss,
                self.loss_sum / self.steps,
                self.rate(),
                _clock(eta),
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RunsProgress:
    """``k of N runs done, ETA`` for the reproduce scripts (ETA from the mean time per finished run)."""

    def __init__(self, total: int, logger: logging.Logger):
        self.total, self.logger = total, logger
        self.done = 0
        self.start = time.perf_counter()

    def finished(self, name: str, seconds: float | None = None) -> str:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        took = f" in {seconds:.0f} s" if seconds is not None else ""
        line = f"{self.done} of {self.total} runs done ({name}{took}), elapsed {_clock(elapsed)}, ETA {_clock(eta)}"
        self.logger.info(line)
        return line


def make_run_dir(root: str | Path, paper: str, experiment: str) -> Path:
    """Create ``<root>/<paper>/<experiment>/<timestamp>/`` (a numeric suffix keeps it unique)."""
    base = Path(root) / paper / experiment
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir, n = base / stamp, 0
    while True:
        try:
            run_dir.mkdir(parents=True)  # no exists() check first: two processes cannot get the same folder
            return run_dir
        except FileExistsError:
            n += 1
            run_dir = base / f"{stamp}-{n}"


def latest_run_dir(root: str | Path, paper: str, experiment: str) -> Path:
    """The newest run folder of an experiment holding ``last.pt`` (what ``--resume`` continues)."""
    base = Path(root) / paper / experiment
    runs = sorted(p for p in base.glob("*") if (p / "last.pt").is_file()) if base.is_dir() else []
    if not runs:
        raise TrainingError(f"nothing to resume: no run with last.pt under {base}; start without --resume")
    return max(runs, key=lambda p: (p / "last.pt").stat().st_mtime)


def resolve_run_dir(
    run_dir: str | Path | None, resume: bool, root: str | Path, paper: str, experiment: str, rank: int = 0
) -> Path:
    """The run folder of a training command, the same on every rank.

    ``--run-dir`` wins; ``--resume`` without it picks the newest run holding ``last.pt``; otherwise rank 0
    creates a fresh timestamped folder and the other ranks use its name (one folder per run, not per rank).
    """
    if run_dir:
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    if resume:
        return latest_run_dir(root, paper, experiment)
    made = make_run_dir(root, paper, experiment) if rank == 0 else None
    return all_gather_object(made)[0]


class MetricsLog:
    """Appends one JSON object per logged step/epoch to ``metrics.jsonl`` (rank 0 only).

    On resume the file is truncated to the records up to the resumed step, so that a killed-and-resumed
    run ends with exactly the lines of an uninterrupted one.
    """

    def __init__(self, path: str | Path, rank: int = 0, resume_step: int | None = None):
        self.path = Path(path)
        self.enabled = rank == 0
        if self.enabled and resume_step is not None and self.path.is_file():
            kept = [r for r in read_metrics(self.path) if r.get("step", -1) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl``; a torn last line (killed mid-write) is dropped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def check_finite(loss: float, step: int, what: str = "loss") -> None:
    """Stop training with a clear message when ``loss`` is NaN or infinite."""
    if not math.isfinite(loss):
        raise TrainingError(
            f"{what} became {loss} at step {step}; lower the learning rate or check the inputs for NaN"
        )
