"""The train command line on tiny rooms: the run folder, resume == the uninterrupted run, the NaN guard, config
errors in one line, the official schedules, SyncBatchNorm conversion, progress lines, and 2-process DDP."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import retrofpn.train
from retrofpn.config import RetrofpnConfig, TrainConfig
from retrofpn.data import load_scenes
from retrofpn.model import HierarchyHook, Segmentor
from retrofpn.train import count_parameters, make_scheduler, sync_batchnorm
from shared.checkpoint import load_checkpoint
from shared.config import config_from_dict, load_config
from shared.errors import run_cli
from shared.log import read_metrics
from tests.resume import TIMED_KEYS, killed_then_resumed
from tests.retrofpn.train_helpers import tiny_config, write_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def train(config: Path, *args: str) -> int:
    return run_cli(retrofpn.train.main, ["--config", str(config), "--device", "cpu", *args])


def test_train_writes_a_complete_run_folder(tmp_path):
    config = write_config(tmp_path, train={"epochs": 2})
    assert train(config, "--run-dir", str(tmp_path / "run")) == 0
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json", "test_metrics.json"):
        assert (run / name).is_file(), name
    records = read_metrics(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    keys = {"loss", "lr", "val_miou", "val_macc", "val_oa", *TIMED_KEYS, *(f"loss_l{i}" for i in range(1, 6))}
    assert keys <= set(records[0])
    for r in records:  # the total is the weighted (here: plain) sum of the five level losses
        assert r["loss"] == pytest.approx(sum(r[f"loss_l{i}"] for i in range(1, 6)), rel=1e-6)
    assert records[-1]["loss"] < records[0]["loss"]
    summary = json.loads((run / "summary.json").read_text())
    best = max(records, key=lambda r: r["val_miou"])
    assert (summary["best_epoch"], summary["val_miou"]) == (best["epoch"], best["val_miou"])
    assert summary["scenes"] == {"train": 8, "val": 2, "test": 2}
    cfg = load_config(RetrofpnConfig, run / "config.yaml")
    assert summary["params"] == count_parameters(Segmentor(cfg.model))
    test = json.loads((run / "test_metrics.json").read_text())
    assert test == summary["test"]
    scenes = load_scenes(cfg.data, "test")
    labelled = sum(int((s.segment >= 0).sum()) for s in scenes)
    assert test["points"] == labelled == sum(test["points_per_class"].values())  # every original point
    assert list(test["iou"]) == cfg.data.class_names
    present = [c for c, n in test["points_per_class"].items() if n]
    assert test["miou"] == pytest.approx(np.nanmean([test["iou"][c] for c in test["iou"]]))
    assert set(present) == {"floor", "wall", "table", "clutter"} and 0 <= test["oa"] <= 1


def test_validation_never_uses_the_test_area(tmp_path):
    from retrofpn.evaluate import split_scenes, val_positions

    cfg = config_from_dict(RetrofpnConfig, tiny_config(tmp_path, eval={"val_scenes": 3}))
    splits = split_scenes(cfg)
    names = {k: [r.name for r in v] for k, v in splits.items()}
    assert all(n.startswith("Area_5_") for n in names["test"])
    assert not any(n.startswith("Area_5_") for n in names["train"] + names["val"])
    assert not set(names["train"]) & set(names["val"]) and len(names["val"]) == 3
    assert val_positions(50, 5) == [0, 11, 22, 33, 44]  # one scene of each area, different room kinds
    assert val_positions(10, 0) == []


@pytest.mark.parametrize("backbone", ["pt", "ptv2"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch, backbone):
    """Killed after epoch 1 and resumed: the same metrics.jsonl, test metrics and bit-identical weights
    (PTv2 steps its OneCycle schedule per iteration; 0 loader workers)."""
    config = write_config(tmp_path, backbone, train={"epochs": 2}, data={"loop": 1})
    full, cut, test_full, test_cut = killed_then_resumed(
        train, retrofpn.train, config, tmp_path, 1, monkeypatch
    )
    assert cut == full and len(full) == 2 and test_full == test_cut
    for name in ("last.pt", "best.pt"):
        a, b = (load_checkpoint(tmp_path / r / name)["model"] for r in ("full", "cut"))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_nan_loss_stops_with_exit_2_naming_the_step(tmp_path, capsys):
    assert train(write_config(tmp_path, train={"nan_at_step": 3})) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "loss became nan at step 3" in errors[0]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=0", "train.epochs must be >= 1, got 0"),
        ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
        ("train.optimizer=adam", "train.optimizer: expected one of ['sgd', 'adamw'], got 'adam'"),
        ("train.scheduler=step", "train.scheduler: expected one of"),
        ("train.lr=0", "train.lr must be > 0"),
        ("train.milestones=[0.8,0.6]", "train.milestones"),
        ("model.in_channels=6", "set model.in_channels=3"),
        ("model.num_classes=5", "model.num_classes is 5 but data.num_classes is 13"),
        ("data.voxel_max=2000", "model.retro_k[3] = 16 but the level 5 it attends to has at most 7 points"),
        ("eval.val_scenes=10", "eval.val_scenes = 10 but the training split"),
        ("train.batch_size=17", "more than the 16 training samples"),
        ("model.bogus=1", "unknown config key 'model.bogus'"),
    ],
)
def test_bad_configs_exit_2_with_one_line_and_leave_no_run_folder(tmp_path, capsys, override, message):
    assert train(write_config(tmp_path), "--set", override) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    base = tmp_path / "runs" / "retrofpn" / "tiny_pt_retro"
    assert not base.exists() or list(base.iterdir()) == []


def test_run_folder_names_backbone_and_variant(tmp_path):
    assert train(write_config(tmp_path, retro=False, train={"epochs": 1})) == 0
    runs = list((tmp_path / "runs" / "retrofpn" / "tiny_pt_base").iterdir())
    assert len(runs) == 1 and (runs[0] / "test_metrics.json").is_file()
    records = read_metrics(runs[0] / "metrics.jsonl")
    assert "loss_l2" not in records[0] and records[0]["loss"] == pytest.approx(records[0]["loss_l1"])


def test_no_validation_keeps_the_last_epoch(tmp_path):
    assert train(write_config(tmp_path, train={"epochs": 2}, eval={"val_scenes": 0}), "--run-dir",
                 str(tmp_path / "r")) == 0  # fmt: skip
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["best_epoch"] == 2 and summary["val_miou"] is None
    assert "val_miou" not in read_metrics(tmp_path / "r" / "metrics.jsonl")[0]


def _lrs(t: TrainConfig, steps: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=t.lr)
    sched, per_step = make_scheduler(opt, t, steps)
    lrs = []
    for _ in range(t.epochs):
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            if per_step:
                sched.step()
        if not per_step:
            sched.step()
    return lrs


def test_official_schedules():
    # PT: MultiStep at int(0.6 E), int(0.8 E), per epoch
    lrs = _lrs(TrainConfig(epochs=10, lr=0.1), steps=2)
    assert lrs[::2] == pytest.approx([0.1] * 6 + [0.01] * 2 + [0.001] * 2)
    # MinkUNet S3DIS: poly 0.9 per iteration
    lrs = _lrs(TrainConfig(epochs=2, lr=0.1, scheduler="poly"), steps=5)
    assert lrs == pytest.approx([0.1 * (1 - i / 10) ** 0.9 for i in range(10)])
    # PTv2: OneCycle, lr / 10 at the start, the peak after 5 % of the iterations, lr / 10 / 1000 at the end
    t = TrainConfig(epochs=4, lr=0.005, optimizer="adamw", scheduler="onecycle")
    lrs = _lrs(t, steps=25)
    assert lrs[0] == pytest.approx(0.0005) and max(lrs) == pytest.approx(0.005)
    assert int(np.argmax(lrs)) == round(0.05 * 100) - 1
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=t.lr)
    sched, _ = make_scheduler(opt, t, 25)
    for _ in range(99):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005 / 10 / 1000, rel=1e-3)


@pytest.mark.parametrize("backbone", ["pt", "ptv2", "minkunet"])
def test_sync_batchnorm_keeps_the_layouts_and_the_function(tmp_path, backbone):
    """Every BatchNorm becomes a SyncBatchNorm that (without a process group, as on one GPU) computes the
    same outputs and gradients, in training mode, on (n, C), (n, k, C) and sparse inputs."""
    cfg = config_from_dict(RetrofpnConfig, tiny_config(tmp_path, backbone))
    torch.manual_seed(0)
    model = Segmentor(cfg.model)
    synced = sync_batchnorm(Segmentor(cfg.model))
    synced.load_state_dict(model.state_dict())
    kinds = {type(m) for m in synced.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert kinds and all(issubclass(k, torch.nn.SyncBatchNorm) for k in kinds)
    from retrofpn.data import SceneDataset, collate

    ds = SceneDataset(cfg.data, "train", seed=0)
    batch = HierarchyHook(cfg.model, 0)(collate([ds[0], ds[1]]))
    outs = []
    for m in (model, synced):
        out = m(batch)
        loss, _ = m.loss(out, batch["segment"])
        loss.backward()
        outs.append((out.logits.detach(), [p.grad.clone() for p in m.parameters()]))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(outs[0][1], outs[1][1]))


@pytest.mark.parametrize("backbone", ["pt", "ptv2", "minkunet"])
def test_every_backbone_trains_under_autocast(tmp_path, backbone):
    """train.amp runs the step under float16 autocast on CUDA; bfloat16 autocast on the CPU applies the same
    op policy (GEMMs in low precision, BatchNorm / softmax / CE in float32), so dtype mismatches show here."""
    cfg = config_from_dict(RetrofpnConfig, tiny_config(tmp_path, backbone))
    from retrofpn.data import SceneDataset, collate

    model = Segmentor(cfg.model)
    ds = SceneDataset(cfg.data, "train", seed=0)
    batch = HierarchyHook(cfg.model, 0)(collate([ds[0], ds[1]]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        loss, levels = model.loss(out, batch["segment"])
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and len(levels) == 5
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_progress_lines_every_log_every_steps(tmp_path):
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("retrofpn")
    logger.addHandler(handler)
    try:  # not a terminal: a line every 3 steps and one at the end of the epoch (8 scenes x loop 2 / 2 = 8 steps)
        assert train(write_config(tmp_path, train={"epochs": 1, "log_every": 3})) == 0
    finally:
        logger.removeHandler(handler)
    steps = [ln.split(" loss")[0] for ln in lines if " step " in ln]
    assert steps == ["epoch 1/1 step 3/8", "epoch 1/1 step 6/8", "epoch 1/1 step 8/8"]
    assert any(ln.startswith("test mIoU") for ln in lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    """2-process DDP on gloo: both ranks finish, one run folder, finite metrics, the loss decreasing, and the
    test metrics of the run equal a single-process evaluation of its best.pt (the ranks' votes are summed)."""
    config = write_config(tmp_path, train={"epochs": 3, "batch_size": 4})
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), "-m", "retrofpn.train", "--config", str(config), "--device", "cpu"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "runs" / "retrofpn" / "tiny_pt_retro").iterdir())
    assert len(runs) == 1
    records = read_metrics(runs[0] / "metrics.jsonl")
    assert len(records) == 3 and records[-1]["step"] == 3 * 4  # 16 samples / (2 per rank) per epoch
    assert all(math.isfinite(r[k]) for r in records for k in ("loss", "val_miou"))
    assert records[-1]["loss"] < records[0]["loss"]
    out = tmp_path / "eval.json"
    cmd = [sys.executable, "-m", "retrofpn.evaluate", "--config", str(config), "--checkpoint",
           str(runs[0] / "best.pt"), "--device", "cpu", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    test, evaluated = (json.loads(p.read_text()) for p in (runs[0] / "test_metrics.json", out))
    for key in ("miou", "macc", "oa", "points"):
        assert evaluated[key] == pytest.approx(test[key], abs=1e-9), key
