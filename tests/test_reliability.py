"""Reliability of the training pattern, driven through ``tests/tiny_train.py``.

Runs that must be SIGKILLed are real subprocesses (``python -m tests.tiny_train``); the uninterrupted
reference runs call ``tiny_train.main`` in this process (single-threaded, like the subprocesses) to save
the cost of importing torch again.

- kill-and-resume: a run SIGKILLed mid-training and resumed with ``--resume`` ends bit-identical (weights,
  optimizer, scheduler, RNG, metrics.jsonl) to an uninterrupted run with the same seed;
- atomic save: a process killed while writing a checkpoint leaves the previous checkpoint loadable;
- the same seed twice gives identical metrics, a different seed does not;
- a NaN loss stops training with exit status 2 and one stderr line naming the step.

No assertion depends on wall-clock time: the kill is triggered by files appearing, not by sleeping.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from shared.checkpoint import load_checkpoint
from shared.errors import TrainingError, run_cli
from shared.log import read_metrics
from tests import tiny_train

REPO = Path(__file__).resolve().parents[1]
EPOCHS, SAMPLES, BATCH = 4, 128, 16  # 8 steps per epoch, 32 in all
CONFIG = f"experiment: rel\ntrain:\n  epochs: {EPOCHS}\n  num_samples: {SAMPLES}\n  batch_size: {BATCH}\n"
DEADLINE_S = 240  # generous: only a hung process gets anywhere near it


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    return env


def _start(config: Path, *args: str) -> subprocess.Popen:
    """``python -m tests.tiny_train`` as a real process (so it can be SIGKILLed)."""
    cmd = [sys.executable, "-m", "tests.tiny_train", "--config", str(config), *args]
    return subprocess.Popen(
        cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} hung; stderr:\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run_args(tmp: Path, name: str, *sets: str) -> list[str]:
    args = ["--run-dir", str(tmp / name), "--set", f"train.runs_root={tmp / 'runs'}"]
    for s in sets:
        args += ["--set", s]
    return args


def _train_in_process(config: Path, *args: str) -> int:
    """``tiny_train`` in this process (no torch import to pay for), single-threaded like the subprocesses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_cli(tiny_train.main, ["--config", str(config), *args])
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted runs: seed 0 twice and seed 1 (the second seed-0 run starts from a dirty RNG state)."""
    tmp = tmp_path_factory.mktemp("reliability")
    config = tmp / "tiny.yaml"
    config.write_text(CONFIG)
    for name, seed in (("a", 0), ("seed1", 1), ("b", 0)):
        assert _train_in_process(config, *_run_args(tmp, name, f"train.seed={seed}")) == 0
    return {"tmp": tmp, "config": config}


def _assert_same_checkpoint(a: dict, b: dict) -> None:
    assert (a["epoch"], a["step"], a["best_metric"]) == (b["epoch"], b["step"], b["best_metric"])
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys()
    for k in opt_a:
        assert torch.equal(opt_a[k]["momentum_buffer"], opt_b[k]["momentum_buffer"])
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["scheduler"] == b["scheduler"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    per_rank_a, per_rank_b = a.get("rng_per_rank", []), b.get("rng_per_rank", [])
    assert len(per_rank_a) == len(per_rank_b)
    for ra, rb in zip(per_rank_a, per_rank_b):
        assert torch.equal(ra["torch"], rb["torch"])


def test_kill_and_resume_matches_uninterrupted_run(runs):
    tmp, config = runs["tmp"], runs["config"]
    root = tmp / "runs_kill"
    # no --run-dir: the first run creates runs_kill/tiny/rel/<timestamp>/ and --resume must find it again
    sets = ["--set", f"train.runs_root={root}"]
    proc = _start(config, *sets, "--set", "train.sleep_per_step=0.15")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not list(root.glob("tiny/rel/*/last.pt")):
            assert proc.poll() is None, f"run exited before its first checkpoint: {proc.communicate()[1]}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        still_running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert still_running, "the run finished before it could be killed (machine extremely slow?)"
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = {p.parent for p in root.glob("tiny/rel/*/last.pt")}
    killed_at = load_checkpoint(run_dir / "last.pt")["epoch"]
    assert 1 <= killed_at < EPOCHS, "the kill must land mid-training"
    assert len(read_metrics(run_dir / "metrics.jsonl")) < EPOCHS

    resumed = _finish(_start(config, *sets, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {run_dir / 'last.pt'} at epoch {killed_at}" in resumed.stderr

    _assert_same_checkpoint(load_checkpoint(run_dir / "last.pt"), load_checkpoint(tmp / "a" / "last.pt"))
    _assert_same_checkpoint(load_checkpoint(run_dir / "best.pt"), load_checkpoint(tmp / "a" / "best.pt"))
    assert (run_dir / "metrics.jsonl").read_text() == (tmp / "a" / "metrics.jsonl").read_text()
    assert [r["epoch"] for r in read_metrics(run_dir / "metrics.jsonl")] == list(range(1, EPOCHS + 1))


def test_same_seed_twice_gives_identical_metrics_and_a_different_seed_does_not(runs):
    tmp = runs["tmp"]
    a, b, c = (read_metrics(tmp / name / "metrics.jsonl") for name in ("a", "b", "seed1"))
    assert len(a) == EPOCHS and a == b
    assert (tmp / "a" / "metrics.jsonl").read_bytes() == (tmp / "b" / "metrics.jsonl").read_bytes()
    _assert_same_checkpoint(load_checkpoint(tmp / "a" / "last.pt"), load_checkpoint(tmp / "b" / "last.pt"))
    assert [r["train_loss"] for r in a] != [r["train_loss"] for r in c]
    assert len({r["train_loss"] for r in a}) == EPOCHS  # training moves the loss
    # the resolved config is written into the run folder
    assert "seed: 1" in (tmp / "seed1" / "config.yaml").read_text()


def test_nan_loss_stops_with_one_line_naming_the_step(runs, capsys):
    tmp = runs["tmp"]
    assert _train_in_process(runs["config"], *_run_args(tmp, "nan", "train.nan_at_step=5")) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: loss became nan at step 5;")
    assert not (tmp / "nan" / "last.pt").exists()  # step 5 is inside epoch 1: nothing was saved
    # a NaN in a later epoch is caught just the same, after the earlier checkpoints
    assert _train_in_process(runs["config"], *_run_args(tmp, "nan2", "train.nan_at_step=19")) == 2
    assert "at step 19;" in capsys.readouterr().err
    assert load_checkpoint(tmp / "nan2" / "last.pt")["step"] == 16


ATOMIC_WRITER = textwrap.dedent(
    """
    import io, sys, time
    from pathlib import Path
    import torch
    from torch import nn
    from shared.checkpoint import save_checkpoint

    run_dir = Path(sys.argv[1])
    torch.manual_seed(0)
    model = nn.Linear(64, 64)
    save_checkpoint(run_dir, model=model, epoch=1, step=10)
    with torch.no_grad():
        model.weight.add_(1.0)
    real_save = torch.save

    def slow_save(obj, fh):
        # write the first half of the real bytes, make them durable, then hang until killed
        buf = io.BytesIO()
        real_save(obj, buf)
        data = buf.getvalue()
        fh.write(data[: len(data) // 2])
        fh.flush()
        (run_dir / "half_written").touch()
        time.sleep(600)

    torch.save = slow_save
    save_checkpoint(run_dir, model=model, epoch=2, step=20)
    """
)


def test_kill_during_checkpoint_write_leaves_previous_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    script = tmp_path / "writer.py"
    script.write_text(ATOMIC_WRITER)
    env = {**_env(), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run_dir)], cwd=REPO, env=env, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not (run_dir / "half_written").exists():
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "the writer never started its second checkpoint"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    (tmp,) = run_dir.glob(".last.pt.*.tmp")  # the half-written second checkpoint, never renamed
    assert tmp.stat().st_size > 0
    with pytest.raises(TrainingError, match="unreadable"):
        load_checkpoint(tmp)
    state = load_checkpoint(run_dir / "last.pt")
    assert (state["epoch"], state["step"]) == (1, 10)
    torch.manual_seed(0)
    first = torch.nn.Linear(64, 64).state_dict()
    assert all(torch.equal(state["model"][k], first[k]) for k in first)


# ------------------------------------------------------------------------------------- the same under DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ranks(config: Path, *args: str, world: int = 2) -> list[subprocess.Popen]:
    """``world`` CPU ranks of tiny_train with the environment torchrun gives its workers."""
    port = str(_free_port())
    procs = []
    for rank in range(world):
        env = _env()
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        cmd = [sys.executable, "-m", "tests.tiny_train", "--config", str(config), "--device", "cpu", *args]
        procs.append(
            subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    return procs


def _finish_all(procs: list[subprocess.Popen]) -> None:
    try:
        results = [_finish(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for r in results:
        assert r.returncode == 0, r.stderr


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_kill_and_resume_matches_uninterrupted_ddp_run(tmp_path):
    """Each rank draws its own dropout masks, so each rank must get its own RNG state back on resume."""
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    _finish_all(_start_ranks(config, "--run-dir", str(tmp_path / "ref")))
    # no --run-dir: rank 0 makes the one run folder, and --resume must find it again
    root = ["--set", f"train.runs_root={tmp_path / 'runs'}"]
    procs = _start_ranks(config, *root, "--set", "train.sleep_per_step=0.3")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not list((tmp_path / "runs").glob("tiny/rel/*/last.pt")):
            assert all(p.poll() is None for p in procs), "a rank exited before the first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        still_running = all(p.poll() is None for p in procs)
        for p in procs:  # rank 0 first: the others then block in the next all-reduce and write nothing
            p.send_signal(signal.SIGKILL)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert still_running and all(p.returncode == -signal.SIGKILL for p in procs)
    (killed_dir,) = (tmp_path / "runs").glob("tiny/rel/*")  # one folder for both ranks
    state = load_checkpoint(killed_dir / "last.pt")
    assert 1 <= state["epoch"] < EPOCHS and len(state["rng_per_rank"]) == 2
    _finish_all(_start_ranks(config, *root, "--resume"))
    assert len(list((tmp_path / "runs").glob("tiny/rel/*"))) == 1

    _assert_same_checkpoint(
        load_checkpoint(killed_dir / "last.pt"), load_checkpoint(tmp_path / "ref" / "last.pt")
    )
    assert (killed_dir / "metrics.jsonl").read_text() == (tmp_path / "ref" / "metrics.jsonl").read_text()
