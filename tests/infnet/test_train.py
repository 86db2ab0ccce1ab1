"""The train / evaluate command lines on random data: run folder, resume, early stop, NaN guard, DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import infnet.evaluate
import infnet.train
from shared.errors import run_cli
from shared.log import read_metrics
from tests.infnet.model_helpers import random_load_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def random_data(monkeypatch):
    monkeypatch.setattr(infnet.train, "load_dataset", random_load_dataset)
    monkeypatch.setattr(infnet.evaluate, "load_dataset", random_load_dataset)


def write_config(tmp_path: Path, **train) -> Path:
    cfg = {
        "experiment": "test",
        "data": {"max_rows": 300},
        "model": {"embed_dim": 8, "n_heads": 2, "tower_dims": [8], "proxy_hidden": 16, "gate_hidden": 16},
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.01, "runs_root": str(tmp_path / "runs"), **train},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train(config: Path, *args: str) -> int:
    return run_cli(infnet.train.main, ["--config", str(config), "--device", "cpu", *args])


def test_train_writes_a_complete_run_folder_and_learns(tmp_path):
    config = write_config(tmp_path, epochs=3)
    assert train(config, "--run-dir", str(tmp_path / "run")) == 0
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "test_metrics.json"):
        assert (run / name).is_file(), name
    records = read_metrics(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert {"val_click_auc", "val_like_gauc", "val_mean_logloss", "train_loss"} <= set(records[0])
    summary = json.loads((run / "test_metrics.json").read_text())
    assert summary["test"]["click_auc"] > 0.8  # item parity is learnable
    assert summary["params"] > 0 and summary["train_time_s"] > 0


@pytest.mark.parametrize("name", ["mmoe", "din", "hstu"])
def test_baselines_train_through_the_same_cli(tmp_path, name):
    config = write_config(tmp_path, epochs=1)
    assert train(config, "--run-dir", str(tmp_path / name), "--set", f"model.name={name}") == 0
    assert json.loads((tmp_path / name / "test_metrics.json").read_text())["model"] == name


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    config = write_config(tmp_path, epochs=3)
    assert train(config, "--run-dir", str(tmp_path / "full")) == 0
    assert train(config, "--run-dir", str(tmp_path / "cut"), "--set", "train.epochs=2") == 0
    assert train(config, "--run-dir", str(tmp_path / "cut"), "--resume") == 0
    full, cut = (
        read_metrics(tmp_path / "full" / "metrics.jsonl"),
        read_metrics(tmp_path / "cut" / "metrics.jsonl"),
    )
    strip = [{k: v for k, v in r.items() if k != "train_time_s"} for r in full]
    assert [{k: v for k, v in r.items() if k != "train_time_s"} for r in cut] == strip


def test_resume_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert train(write_config(tmp_path), "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_early_stopping(tmp_path):
    config = write_config(tmp_path, epochs=6, patience=1, lr=1e-12)
    assert train(config, "--run-dir", str(tmp_path / "run")) == 0
    summary = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert summary["epochs_run"] == 2 and summary["best_epoch"] == 1


def test_nan_guard_names_the_step(tmp_path, capsys):
    assert train(write_config(tmp_path, nan_at_step=3)) == 2
    assert "at step 3" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.bogus=1", "unknown config key 'model.bogus'"),
        ("train.lr=-1", "train.lr must be > 0"),
        ("model.n_heads=3", "divisible"),
        ("train.loss_weights=[1.0]", "loss_weights"),
    ],
)
def test_bad_configs_exit_2_with_one_line(tmp_path, capsys, override, message):
    assert train(write_config(tmp_path), "--set", override) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_evaluate_cli_matches_the_training_summary(tmp_path, capsys):
    config = write_config(tmp_path)
    assert train(config, "--run-dir", str(tmp_path / "run")) == 0
    capsys.readouterr()
    out = tmp_path / "eval.json"
    argv = ["--config", str(config), "--checkpoint", str(tmp_path / "run" / "best.pt"), "--out", str(out)]
    assert run_cli(infnet.evaluate.main, [*argv, "--device", "cpu"]) == 0
    summary = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    evaluated = json.loads(out.read_text())
    for key, value in summary["test"].items():
        assert evaluated[key] == pytest.approx(value, abs=1e-6), key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    """2-process DDP training; its gathered test metrics equal a single-process evaluation of best.pt."""
    config = write_config(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    torchrun += ["--master_port", str(free_port())]
    script = str(ROOT / "tests" / "infnet" / "train_random_data.py")
    run = tmp_path / "ddp"
    cmd = [*torchrun, script, "train", "--config", str(config), "--run-dir", str(run), "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "test_metrics.json").read_text())
    assert len(read_metrics(run / "metrics.jsonl")) == 2
    out = tmp_path / "eval.json"
    cmd = [sys.executable, script, "evaluate", "--config", str(config), "--checkpoint", str(run / "best.pt")]
    proc = subprocess.run(
        [*cmd, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads(out.read_text())
    for key, value in summary["test"].items():
        assert evaluated[key] == pytest.approx(value, abs=1e-6), key
