"""The train / evaluate command lines on random data: run folder, resume (= the uninterrupted run, refused
after a config change), early stop, NaN guard, config errors, failed starts, progress lines, evaluate
(same numbers as training, another paper's or a crafted checkpoint refused), DDP."""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import infnet.evaluate
import infnet.train
from infnet.build import build_model
from infnet.config import InfnetConfig
from infnet.layers import count_parameters
from shared.checkpoint import save_checkpoint
from shared.config import load_config
from shared.errors import run_cli
from shared.log import read_metrics
from tests.infnet.model_helpers import random_load_dataset
from tests.resume import killed_then_resumed

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
    # 5 epochs of 5 steps: from the 1e-4 embedding init (model.embed_init_std) the item ids need a few
    config = write_config(tmp_path, epochs=5)
    assert train(config, "--run-dir", str(tmp_path / "run")) == 0
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "test_metrics.json"):
        assert (run / name).is_file(), name
    records = read_metrics(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert {"val_click_auc", "val_like_gauc", "val_mean_logloss", "train_loss"} <= set(records[0])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["click_auc"] > 0.8  # item parity is learnable
    assert json.loads((run / "test_metrics.json").read_text()) == summary["test"]
    cfg = load_config(InfnetConfig, run / "config.yaml")
    assert summary["params"] == count_parameters(build_model(random_load_dataset(cfg.data)[0], cfg.model))
    assert summary["train_time_s"] == pytest.approx(records[-1]["train_time_s"])
    assert all(a["train_time_s"] < b["train_time_s"] for a, b in itertools.pairwise(records))
    assert summary["epochs_run"] == 5 and summary["paper"] == "infnet"
    best = max(records, key=lambda r: r["val_mean_auc"])
    assert (summary["best_epoch"], summary["val_mean_auc"]) == (best["epoch"], best["val_mean_auc"])


@pytest.mark.parametrize("name", ["mmoe", "din", "hstu"])
def test_baselines_train_through_the_same_cli(tmp_path, name):
    config = write_config(tmp_path, epochs=1)
    assert train(config, "--run-dir", str(tmp_path / name), "--set", f"model.name={name}") == 0
    assert json.loads((tmp_path / name / "summary.json").read_text())["model"] == name


def test_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    config = write_config(tmp_path, epochs=3)
    full, cut, test_full, test_cut = killed_then_resumed(
        train, infnet.train, config, tmp_path, 2, monkeypatch
    )
    assert cut == full and len(full) == 3 and test_full == test_cut


def test_resume_after_a_model_change_is_refused_with_one_line(tmp_path, capsys):
    config, run = write_config(tmp_path, epochs=1), tmp_path / "run"
    assert train(config, "--run-dir", str(run)) == 0
    capsys.readouterr()
    assert train(config, "--run-dir", str(run), "--resume", "--set", "model.embed_dim=16") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.embed_dim = 8" in err and "16 was asked for" in err
    # the run folder's own config.yaml edited by hand: the checkpoint does not fit, one line, folder kept
    saved = run / "config.yaml"
    saved.write_text(saved.read_text().replace("embed_dim: 8", "embed_dim: 16"))
    argv = ["--run-dir", str(run), "--resume", "--device", "cpu"]
    assert run_cli(infnet.train.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not fit the model" in err
    assert (run / "last.pt").is_file()


def test_resume_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert train(write_config(tmp_path), "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_early_stopping(tmp_path):
    config = write_config(tmp_path, epochs=6, patience=1, lr=1e-12)
    assert train(config, "--run-dir", str(tmp_path / "run")) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
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
    base = tmp_path / "runs" / "infnet" / "test"  # a failed start leaves no run folder behind
    assert not base.exists() or list(base.iterdir()) == []


def test_zero_epochs_and_a_failed_first_epoch_leave_no_run_folder(tmp_path, capsys):
    base = tmp_path / "runs" / "infnet" / "test"
    assert train(write_config(tmp_path), "--set", "train.epochs=0") == 2
    assert "train.epochs must be >= 1, got 0" in capsys.readouterr().err
    assert not base.exists()
    assert train(write_config(tmp_path, nan_at_step=0)) == 2  # fails inside the first epoch
    assert "at step 0" in capsys.readouterr().err
    assert list(base.iterdir()) == []


def test_progress_lines_every_log_every_steps(tmp_path):
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("infnet")
    logger.addHandler(handler)
    try:  # not a terminal: one line every 2 steps and one at the end of the epoch (5 steps of 64 rows)
        assert train(write_config(tmp_path, epochs=1, log_every=2), "--run-dir", str(tmp_path / "r")) == 0
    finally:
        logger.removeHandler(handler)
    steps = [ln.split(" loss")[0] for ln in lines if " step " in ln]
    assert steps == ["epoch 1/1 step 2/5", "epoch 1/1 step 4/5", "epoch 1/1 step 5/5"]
    assert all("samples/s ETA" in ln for ln in lines if " step " in ln)


def test_evaluate_cli_matches_the_training_summary(tmp_path, capsys):
    config = write_config(tmp_path)
    assert train(config, "--run-dir", str(tmp_path / "run")) == 0
    capsys.readouterr()
    out = tmp_path / "eval.json"
    argv = ["--config", str(config), "--checkpoint", str(tmp_path / "run" / "best.pt"), "--out", str(out)]
    assert run_cli(infnet.evaluate.main, [*argv, "--device", "cpu"]) == 0
    test = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    evaluated = json.loads(out.read_text())
    for key, value in test.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-6), key
    assert evaluated["split"] == "test" and evaluated["epoch"] == 2


def test_evaluate_refuses_another_papers_and_a_crafted_checkpoint(tmp_path, capsys):
    config = write_config(tmp_path)
    other = tmp_path / "other"
    save_checkpoint(other, model=torch.nn.Linear(2, 2), paper="rcar", epoch=1, step=1, config={"model": {}})
    argv = ["--config", str(config), "--device", "cpu", "--checkpoint"]
    assert run_cli(infnet.evaluate.main, [*argv, str(other / "last.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rcar checkpoint, not a infnet one" in err
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"model": Payload()}, tmp_path / "crafted.pt")
    assert run_cli(infnet.evaluate.main, [*argv, str(tmp_path / "crafted.pt")]) == 2
    assert "safe loading refuses" in capsys.readouterr().err and not marker.exists()


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
    test = json.loads((run / "test_metrics.json").read_text())
    assert len(read_metrics(run / "metrics.jsonl")) == 2
    out = tmp_path / "eval.json"
    cmd = [sys.executable, script, "evaluate", "--config", str(config), "--checkpoint", str(run / "best.pt")]
    proc = subprocess.run(
        [*cmd, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads(out.read_text())
    for key, value in test.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-6), key


def test_compiled_training_step_equals_eager():
    """train.compile: torch.compile's INFNet gives the eager logits and gradients (float32 reassociation)."""
    from infnet.model import multitask_loss
    from tests.infnet.model_helpers import random_batch, tiny_spec

    spec = tiny_spec()
    cfg = load_config(InfnetConfig, None).model
    cfg.embed_dim, cfg.tower_dims, cfg.proxy_hidden, cfg.gate_hidden = 8, [8], 16, 16
    cfg.embed_init_std = 0.1  # spread the scores, so that a wrong graph would show
    torch.manual_seed(0)
    model = build_model(spec, cfg).train()
    batch = random_batch(spec, batch_size=16)
    grads = []
    for forward in (model, torch.compile(model)):
        model.zero_grad()
        logits = forward(batch)
        multitask_loss(logits, batch["labels"]).backward()
        grads.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-6)
    for compiled, eager in zip(grads[1][1], grads[0][1]):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)


def test_train_compile_steps_go_through_the_compiled_module(tmp_path, monkeypatch):
    """The loop trains through torch.compile's module when train.compile is set (here an identity stand-in
    that counts calls, so the run equals the eager one) and keeps checkpoints and evaluation on the model."""
    calls = []

    def fake_compile(model):
        def forward(batch):
            calls.append(model.training)
            return model(batch)

        return forward

    runs = {}
    for flag in ("false", "true"):
        config = write_config(tmp_path, epochs=1)
        if flag == "true":
            monkeypatch.setattr(torch, "compile", fake_compile)
        assert train(config, "--run-dir", str(tmp_path / flag), "--set", f"train.compile={flag}") == 0
        runs[flag] = json.loads((tmp_path / flag / "summary.json").read_text())
    assert calls and all(calls)  # training steps only, in train mode
    assert runs["true"]["test"] == runs["false"]["test"]
