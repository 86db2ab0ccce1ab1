"""Atomic checkpoints with everything needed for a bit-identical resume.

A checkpoint holds model, optimizer, scheduler, RNG states (python, numpy, torch CPU and CUDA), epoch,
step, best metric, the resolved config and the git commit. It is written to a temp file in the same folder,
fsynced, then ``os.replace``d over the target, so a kill during the write leaves the previous file intact.
Everything in it is a tensor or a plain Python value, so ``load_checkpoint`` reads it with
``torch.load(weights_only=True)``: loading a downloaded checkpoint never runs code from it.
"""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.distributed import unwrap_model
from shared.errors import TrainingError

CHECKPOINT_FORMAT = 2  # 2: loads with weights_only=True (RNG states as tensors); 1: pickled numpy state


def git_commit(cwd: str | Path | None = None) -> str:
    """The current commit hash (with ``-dirty`` if the tree has changes), or ``unknown`` outside git."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file beside ``path``, fsync, then atomically replace ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain numbers, which ``torch.load(weights_only=True)`` reads."""
    version, internal, gauss_next = random.getstate()
    _, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss_next,
        },
        "numpy": {
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    key = npy["key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: str | Path,
    *,
    model: torch.nn.Module,
    paper: str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    epoch: int,
    step: int,
    best_metric: float | None = None,
    is_best: bool = False,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    rng_states: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``last.pt`` (and ``best.pt`` when ``is_best``) atomically; return the path of ``last.pt``.

    ``epoch`` is the number of completed epochs: a resumed run starts at epoch ``epoch``. Under DDP pass
    ``rng_states=all_gather_object(rng_state())`` (called on every rank) so that each rank resumes its own
    RNG stream (dropout differs per rank); otherwise only this process's RNG state is kept. ``paper`` names
    the package that wrote it, so another package's ``evaluate`` can say whose checkpoint it was given.
    Everything stored is a tensor or a plain Python value: ``load_checkpoint`` reads it with
    ``weights_only=True``.
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "paper": paper,
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
        "epoch": epoch,
        "step": step,
        "best_metric": best_metric,
        "config": config,
        "git_commit": git_commit(),
        "extra": extra or {},
    }
    if rng_states is not None:
        state["rng_per_rank"] = rng_states
    run_dir = Path(run_dir)
    last = run_dir / "last.pt"
    # best.pt first: last.pt is what --resume reads, so once it exists the best.pt of that epoch does too
    # (a kill in between leaves the old last.pt, and the resumed epoch writes both again).
    if is_best:
        atomic_save(state, run_dir / "best.pt")
    atomic_save(state, last)
    return last


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", paper: str | None = None
) -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` without running any code it may carry.

    ``torch.load(weights_only=True)`` accepts tensors and plain Python values only, so a crafted pickle is
    refused before anything in it runs. A missing, corrupt or foreign file, a checkpoint of an older format,
    or (with ``paper``) one written by another paper's package is a ``TrainingError`` of one line.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path}; train first or drop --resume")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if "Unsupported" in ln), "")
        raise TrainingError(
            f"{path} holds Python objects that safe loading refuses ({detail or 'not plain tensors'}); "
            "it is not a checkpoint of this project, or one written before checkpoints were made safe to load: "
            "retrain it (nothing in the file was run)"
        ) from exc
    except Exception as exc:
        raise TrainingError(
            f"checkpoint {path} is unreadable ({type(exc).__name__}); delete it and retrain"
        ) from exc
    if not isinstance(state, dict) or "model" not in state:
        raise TrainingError(f"{path} is not a checkpoint written by this project")
    if paper is not None and state.get("paper") not in (None, paper):
        raise TrainingError(
            f"{path} is a {state['paper']} checkpoint, not a {paper} one: "
            f"pass a checkpoint written by `python -m {paper}.train`"
        )
    return state


def restore_checkpoint(
    state: dict[str, Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    restore_rng: bool = True,
    rank: int = 0,
) -> None:
    """Load model/optimizer/scheduler states and (by default) the RNG states saved with them.

    ``rank`` picks this process's entry of ``rng_per_rank`` when the checkpoint has one.
    """
    try:
        unwrap_model(model).load_state_dict(state["model"])
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
        raise TrainingError(
            f"the checkpoint does not fit the model built from this config ({first.rstrip('.')}); "
            "use the config it was trained with (its run folder's config.yaml)"
        ) from exc
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if not restore_rng:
        return
    per_rank = state.get("rng_per_rank")
    if per_rank and rank < len(per_rank):
        set_rng_state(per_rank[rank])
    elif state.get("rng") is not None:
        set_rng_state(state["rng"])
