"""shared.checkpoint: atomic last/best saves and a complete restore (model, optimizer, scheduler, RNG)."""

# ruff: noqa: NPY002  (the global numpy RNG is what seeding and checkpoints must cover)

from __future__ import annotations

import os
import random
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from shared import checkpoint as ckpt
from shared.checkpoint import (
    atomic_save,
    git_commit,
    load_checkpoint,
    restore_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from shared.errors import TrainingError


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    return model, opt, sched


def _train_steps(model, opt, sched, n: int) -> None:
    for _ in range(n):
        loss = model(torch.randn(5, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_save_writes_everything_and_best_only_when_best(tmp_path):
    model, opt, sched = _setup()
    _train_steps(model, opt, sched, 2)
    last = save_checkpoint(
        tmp_path,
        model=model,
        optimizer=opt,
        scheduler=sched,
        epoch=3,
        step=42,
        best_metric=0.5,
        config={"a": 1},
        extra={"note": "x"},
    )
    assert last == tmp_path / "last.pt" and last.is_file()
    assert not (tmp_path / "best.pt").exists()
    state = load_checkpoint(last)
    assert set(state) >= {"model", "optimizer", "scheduler", "rng", "epoch", "step", "best_metric", "config"}
    assert (state["epoch"], state["step"], state["best_metric"]) == (3, 42, 0.5)
    assert state["config"] == {"a": 1} and state["extra"] == {"note": "x"}
    assert state["git_commit"] == git_commit()
    assert _states_equal(state["model"], model.state_dict())
    assert state["scheduler"]["last_epoch"] == 2
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    save_checkpoint(tmp_path, model=model, epoch=4, step=50, is_best=True)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 4 and best["optimizer"] is None and best["scheduler"] is None
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 4
    assert not list(tmp_path.glob("*.tmp"))


def test_best_is_written_before_last(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(ckpt, "atomic_save", lambda obj, path: written.append(Path(path).name))
    save_checkpoint(tmp_path, model=nn.Linear(1, 1), epoch=1, step=1, is_best=True)
    assert written == ["best.pt", "last.pt"]  # last.pt, read by --resume, is the commit point


def test_restore_continues_exactly_like_an_uninterrupted_run(tmp_path):
    model, opt, sched = _setup()
    _train_steps(model, opt, sched, 2)
    save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, epoch=1, step=2)
    _train_steps(model, opt, sched, 2)  # the "uninterrupted" continuation
    expected = model.state_dict()
    py_next, np_next = random.random(), np.random.rand()

    model2, opt2, sched2 = _setup(seed=1)  # different init and RNG: everything must come from the file
    random.seed(5)
    np.random.seed(5)
    restore_checkpoint(load_checkpoint(tmp_path / "last.pt"), model=model2, optimizer=opt2, scheduler=sched2)
    assert sched2.last_epoch == 2 and opt2.param_groups[0]["lr"] == pytest.approx(0.0025)
    _train_steps(model2, opt2, sched2, 2)
    assert _states_equal(model2.state_dict(), expected)
    assert random.random() == py_next and np.random.rand() == np_next


def test_restore_without_rng_and_without_optimizer(tmp_path):
    model, _, _ = _setup()
    save_checkpoint(tmp_path, model=model, epoch=0, step=0)
    torch.manual_seed(77)
    before = torch.get_rng_state()
    other, opt, _ = _setup(seed=3)
    torch.set_rng_state(before)
    restore_checkpoint(load_checkpoint(tmp_path / "last.pt"), model=other, optimizer=opt, restore_rng=False)
    assert torch.equal(torch.get_rng_state(), before)
    assert _states_equal(other.state_dict(), model.state_dict())
    assert opt.state_dict()["state"] == {}  # the saved optimizer was None, nothing loaded


def test_per_rank_rng_states_restore_the_right_rank(tmp_path):
    model = nn.Linear(2, 2)
    states = []
    for rank in range(3):
        torch.manual_seed(100 + rank)
        random.seed(100 + rank)
        np.random.seed(100 + rank)
        states.append(rng_state())
    save_checkpoint(tmp_path, model=model, epoch=1, step=1, rng_states=states)
    ckpt_state = load_checkpoint(tmp_path / "last.pt")
    for rank in range(3):
        restore_checkpoint(ckpt_state, model=model, rank=rank)
        assert torch.equal(torch.rand(2), torch.rand(2, generator=torch.Generator().manual_seed(100 + rank)))
        assert random.random() == random.Random(100 + rank).random()
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    save_checkpoint(tmp_path, model=model, epoch=1, step=1)  # no per-rank states: this process's RNG
    torch.manual_seed(8)
    restore_checkpoint(load_checkpoint(tmp_path / "last.pt"), model=model, rank=2)
    assert torch.equal(torch.rand(2), expected)


def test_rng_state_round_trip():
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(2))
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


class _Wrapper(nn.Module):
    """Stands in for DistributedDataParallel: the real model lives in ``.module``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def test_wrapped_model_is_saved_and_restored_unwrapped(tmp_path):
    inner = nn.Linear(3, 2)
    save_checkpoint(tmp_path, model=_Wrapper(inner), epoch=0, step=0)
    state = load_checkpoint(tmp_path / "last.pt")
    assert set(state["model"]) == {"weight", "bias"}
    target = _Wrapper(nn.Linear(3, 2))
    restore_checkpoint(state, model=target)
    assert _states_equal(target.module.state_dict(), inner.state_dict())


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(TrainingError, match=r"no checkpoint at .*drop --resume"):
        load_checkpoint(tmp_path / "last.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(TrainingError, match=r"corrupt\.pt is unreadable"):
        load_checkpoint(tmp_path / "corrupt.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(TrainingError, match="not a checkpoint written by this project"):
        load_checkpoint(tmp_path / "other.pt")


def test_atomic_save_temp_file_in_same_folder_fsynced_then_replaced(tmp_path, monkeypatch):
    calls: list[tuple] = []
    real_replace, real_fsync = os.replace, os.fsync

    def spy_replace(src, dst):
        calls.append(("replace", Path(src), Path(dst), Path(src).is_file()))
        return real_replace(src, dst)

    def spy_fsync(fd):
        calls.append(("fsync",))
        return real_fsync(fd)

    monkeypatch.setattr(ckpt.os, "replace", spy_replace)
    monkeypatch.setattr(ckpt.os, "fsync", spy_fsync)
    target = tmp_path / "sub" / "last.pt"
    atomic_save({"x": torch.arange(3)}, target)
    kinds = [c[0] for c in calls]
    assert kinds == ["fsync", "replace", "fsync"]  # data fsynced before the rename, then the folder
    _, src, dst, existed = calls[1]
    assert src.parent == target.parent and src != target and existed and dst == target
    assert torch.equal(torch.load(target)["x"], torch.arange(3))
    assert not src.exists()


def test_atomic_save_failure_keeps_previous_file_and_removes_temp(tmp_path):
    target = tmp_path / "last.pt"
    atomic_save({"v": 1}, target)
    before = target.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - a lambda cannot be pickled; the exact type is torch's
        atomic_save({"v": 2, "f": lambda: 0}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_git_commit_clean_dirty_and_outside_git(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "f.txt").write_text("a")
    _git(repo, "add", "f.txt")
    _git(repo, "commit", "-q", "-m", "init")
    sha = _git(repo, "rev-parse", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    assert git_commit(repo) == sha
    (repo / "untracked.txt").write_text("u")
    assert git_commit(repo) == sha  # untracked files do not make a tree dirty
    (repo / "f.txt").write_text("b")
    assert git_commit(repo) == f"{sha}-dirty"
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_commit(outside) == "unknown"
    assert re.fullmatch(r"([0-9a-f]{40}(-dirty)?|unknown)", git_commit())


_MARKER = "crafted-pickle-ran"


class _RunsCode:
    """Unpickling this object calls ``Path.touch`` on a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_pickle_is_refused_and_nothing_in_it_runs(tmp_path):
    marker = tmp_path / _MARKER
    torch.save({"model": {}, "payload": _RunsCode(marker)}, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(
        TrainingError, match=r"evil\.pt holds Python objects that safe loading refuses"
    ) as err:
        load_checkpoint(tmp_path / "evil.pt")
    assert "\n" not in str(err.value)
    assert not marker.exists()  # the reduce call never ran


def test_every_saved_value_loads_with_weights_only(tmp_path):
    model, opt, sched = _setup()
    _train_steps(model, opt, sched, 2)
    config = {"train": {"lr": 0.01, "dims": [4, 6], "name": "x", "flag": True, "none": None}}
    extra = {"bad_epochs": 1, "train_time_s": 1.5, "stopped": False}
    save_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched, epoch=2, step=4, config=config,
                    extra=extra, rng_states=[rng_state(), rng_state()], paper="tiny")  # fmt: skip
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # raises if anything is not plain
    assert state["config"] == config and state["extra"] == extra and state["paper"] == "tiny"
    assert state["format"] == ckpt.CHECKPOINT_FORMAT


def test_checkpoint_of_another_paper_is_named(tmp_path):
    model, _, _ = _setup()
    save_checkpoint(tmp_path, model=model, epoch=1, step=1, paper="rcar")
    assert load_checkpoint(tmp_path / "last.pt", paper="rcar")["paper"] == "rcar"
    with pytest.raises(
        TrainingError, match=r"last\.pt is a rcar checkpoint, not a infnet one.*infnet\.train"
    ):
        load_checkpoint(tmp_path / "last.pt", paper="infnet")


def test_checkpoint_that_does_not_fit_the_model_is_one_line(tmp_path):
    model, _, _ = _setup()
    save_checkpoint(tmp_path, model=model, epoch=1, step=1)
    wider = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(
        TrainingError, match=r"does not fit the model built from this config.*config\.yaml"
    ) as err:
        restore_checkpoint(load_checkpoint(tmp_path / "last.pt"), model=wider)
    assert "\n" not in str(err.value) and "size mismatch" in str(err.value)


def test_checkpoint_of_the_old_pickled_format_gets_one_line(tmp_path):
    model, _, _ = _setup()
    old = {"model": model.state_dict(), "rng": {"numpy": np.random.get_state()}, "epoch": 1}
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(TrainingError, match=r"old\.pt holds Python objects.*retrain it") as err:
        load_checkpoint(tmp_path / "old.pt")
    assert "\n" not in str(err.value)
