"""RCAR training: the loss on hand-made matrices, the train CLI (1 epoch, resume, evaluate), DDP smoke."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rcar import evaluate, train
from rcar.loss import triplet_loss
from shared.errors import ConfigError, run_cli
from shared.log import read_metrics

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rcar" / "tiny_precomp"
ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# --------------------------------------------------------------------------------------------------- loss
def test_all_negative_loss_on_a_hand_made_matrix() -> None:
    sims = torch.tensor([[0.9, 0.8], [0.1, 0.5]])  # rows: images of captions 0, 1; cols: captions
    idx = torch.tensor([0, 1])
    # image 0: caption 1 vs caption 0: [0.2 + 0.8 - 0.9]_+ = 0.1; image 1: [0.2 + 0.1 - 0.5]_+ = 0
    # caption 0: image 1 vs image 0: [0.2 + 0.1 - 0.9]_+ = 0; caption 1: [0.2 + 0.8 - 0.5]_+ = 0.5
    assert triplet_loss(sims, idx, 0.2, hardest=False).item() == pytest.approx(0.6)
    assert triplet_loss(sims, idx, 0.2, hardest=True).item() == pytest.approx(0.6)  # one negative each


def test_hardest_negative_keeps_only_the_worst_violation() -> None:
    sims = torch.tensor([[1.0, 0.9, 0.7], [0.0, 1.0, 0.0], [0.0, 0.95, 1.0]])
    idx = torch.arange(3)
    margin = 0.2
    # image-query violations per row: row 0: 0.1 (col 1), 0 (col 2 -> 0.2+0.7-1=-0.1); row 2: 0.15 (col 1)
    # caption-query per column: col 1: [0.2+0.9-1]=0.1, [0.2+0.95-1]=0.15 -> hardest 0.15; col 2: -0.1 -> 0
    assert triplet_loss(sims, idx, margin, hardest=True).item() == pytest.approx(0.1 + 0.15 + 0.15)
    assert triplet_loss(sims, idx, margin, hardest=False).item() == pytest.approx(0.1 + 0.15 + 0.1 + 0.15)


def test_captions_of_the_same_image_are_not_negatives() -> None:
    sims = torch.tensor([[0.5, 0.9], [0.5, 0.9]])  # both captions describe image 7
    assert triplet_loss(sims, torch.tensor([7, 7]), 0.2, hardest=False).item() == 0.0


# ----------------------------------------------------------------------------------------------- train CLI
@pytest.fixture()
def precomp(tmp_path: Path) -> Path:
    """The committed tiny captions + vocab with random 6 x 32 features (2 images per split)."""
    root = tmp_path / "precomp"
    shutil.copytree(FIXTURE, root)
    rng = np.random.default_rng(0)
    for split in ("train", "dev", "test"):
        np.save(root / f"{split}_ims.npy", rng.standard_normal((2, 6, 32)).astype(np.float32))
    return root


def write_config(tmp_path: Path, precomp: Path) -> Path:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        f"""
experiment: tiny
data: {{root: {precomp}, dev_max_images: null, n_regions: 6, feat_dim: 32}}
model: {{mode: rcar, direction: t2i, img_dim: 32, embed_size: 16, word_dim: 8, sim_dim: 8}}
train: {{epochs: 2, batch_size: 4, warmup_epochs: 1, lr_decay_epoch: 1, log_every: 0, runs_root: {tmp_path / "runs"}}}
eval: {{memory_budget_mb: 1}}
"""
    )
    return cfg


def test_train_one_epoch_resume_and_evaluate(tmp_path: Path, precomp: Path, capsys) -> None:
    cfg = write_config(tmp_path, precomp)
    run_dir = tmp_path / "run"
    train.main(["--config", str(cfg), "--run-dir", str(run_dir), "--set", "train.epochs=1"])
    recs = read_metrics(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in recs] == [1] and np.isfinite(recs[0]["train_loss"])
    assert recs[0]["hardest_negative"] is False and 0 <= recs[0]["dev_rsum"] <= 600
    assert (run_dir / "best.pt").is_file() and (run_dir / "config.yaml").is_file()

    train.main(["--config", str(cfg), "--run-dir", str(run_dir), "--resume"])  # epochs: 2 in the yaml
    recs = read_metrics(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in recs] == [1, 2] and recs[1]["hardest_negative"] is True
    assert recs[1]["lr"] == pytest.approx(5e-5)  # x0.1 from lr_decay_epoch=1

    out = tmp_path / "m.json"
    evaluate.main(
        [
            "--checkpoint",
            str(run_dir / "best.pt"),
            "--checkpoint2",
            str(run_dir / "last.pt"),
            "--json",
            str(out),
        ]
    )
    res = json.loads(out.read_text())
    assert set(res) == {"model (t2i, rcar)", "model2 (t2i, rcar)", "ensemble"}
    assert "rsum" in capsys.readouterr().out


def test_train_errors_are_one_line(tmp_path: Path, precomp: Path, capsys) -> None:
    cfg = write_config(tmp_path, precomp)
    assert run_cli(train.main, ["--config", str(cfg), "--set", "model.mode=fancy"]) == 2
    assert "model.mode" in capsys.readouterr().err
    assert run_cli(train.main, ["--config", str(cfg), "--set", "model.img_dim=31"]) == 2
    assert "img_dim" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="at least 1"):
        train.main(["--config", str(cfg), "--set", "model.steps=0"])


@pytest.mark.distributed
@pytest.mark.slow
def test_two_process_gloo_training(tmp_path: Path, precomp: Path) -> None:
    cfg = write_config(tmp_path, precomp)
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "rcar.train"]
    cmd += ["--config", str(cfg), "--run-dir", str(run_dir), "--device", "cpu", "--set", "train.epochs=1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = read_metrics(run_dir / "metrics.jsonl")
    assert len(recs) == 1 and np.isfinite(recs[0]["train_loss"])
    assert (run_dir / "last.pt").is_file()


def test_reproduce_claim_check_on_hand_made_results() -> None:
    from rcar.reproduce import claim_check

    def res(t2i: dict[str, list[float]], i2t: dict[str, list[float]]) -> dict:
        return {("t2i", m): {"rsum": v} for m, v in t2i.items()} | {
            ("i2t", m): {"rsum": v} for m, v in i2t.items()
        }

    good = {"baseline": [300.0, 302.0], "rcr": [310.0, 312.0], "rar": [305.0, 309.0], "rcar": [320.0, 322.0]}
    rows, summary = claim_check(res(good, good))
    assert summary == "held in both directions" and all(r[2] in ("held", "") for r in rows)
    bad = dict(good, rar=[290.0, 292.0])  # RAR below the baseline in i2t
    rows, summary = claim_check(res(good, bad))
    assert summary == "did not fully hold"
    assert ["i2t", "+RAR > baseline", "did not hold"] in rows
    assert any("largest seed std 2.8" in r[1] for r in rows)  # std of [305, 309]
    close = dict(good, rcr=[299.0, 305.0])  # mean 302 vs 301: above the baseline by less than a std
    rows, summary = claim_check(res(close, good))
    assert summary.startswith("held on the means")
    assert ["t2i", "+RCR > baseline", "held (within seed noise)"] in rows
    one_seed = {m: v[:1] for m, v in good.items()}
    rows, _ = claim_check(res(one_seed, one_seed))
    assert any("one seed: no std" in r[1] for r in rows) and not any("seed std" in r[1] for r in rows)
