"""RCAR training: the loss (hand-made matrices and the loop reference), the train API and CLI (run folder,
summary, test metrics, resume == uninterrupted, one-line errors), overfitting one batch, and DDP."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rcar import evaluate, reproduce, train
from rcar.config import ModelConfig, RCARConfig
from rcar.data import Vocab, build_train_dataset
from rcar.loss import hardest_negative_hinges, triplet_loss
from rcar.model import RCAR
from rcar.reference import reference_triplet_loss
from shared.checkpoint import load_checkpoint, save_checkpoint
from shared.config import load_config
from shared.errors import ConfigError, run_cli
from shared.log import get_logger, read_metrics
from tests.rcar.helpers import FIXTURE, ROOT, random_precomp

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
RECALLS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")


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


@pytest.mark.parametrize("hardest", [False, True])
def test_vectorised_loss_equals_the_loop_reference(hardest: bool) -> None:
    """Random batches with repeated images (several captions of one image are never negatives)."""
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        sims = torch.rand(12, 12, generator=g, dtype=torch.float64)
        image_index = torch.randint(0, 6, (12,), generator=g)
        fast = triplet_loss(sims, image_index, 0.2, hardest)
        assert fast.item() > 0
        assert fast.item() == pytest.approx(
            reference_triplet_loss(sims, image_index, 0.2, hardest).item(), rel=1e-12
        )


def test_hardest_negative_hinges_on_a_hand_made_matrix() -> None:
    sims = torch.tensor([[1.0, 0.9, 0.7], [0.0, 1.0, 0.0], [0.0, 0.95, 1.0]])
    # image queries (rows): 0.2 + 0.9 - 1 = 0.1; none; 0.2 + 0.95 - 1 = 0.15; caption queries (columns):
    # none; max(0.2 + 0.9 - 1, 0.2 + 0.95 - 1) = 0.15; 0.2 + 0.7 - 1 < 0
    hinges = hardest_negative_hinges(sims, torch.arange(3), 0.2)
    assert hinges.tolist() == pytest.approx([0.1, 0.0, 0.15, 0.0, 0.15, 0.0])
    assert triplet_loss(sims, torch.arange(3), 0.2, hardest=True).item() == pytest.approx(0.4)
    # a constant score costs every query exactly the margin: the state a collapsed model sits in
    constant = hardest_negative_hinges(torch.full((4, 4), 0.7), torch.tensor([0, 0, 1, 2]), 0.2)
    assert constant.tolist() == pytest.approx([0.2] * 8)


# ----------------------------------------------------------------------------------------------- train CLI
@pytest.fixture()
def precomp(tmp_path: Path) -> Path:
    """The committed tiny captions + vocab with random 6 x 32 features (2 images per split)."""
    return random_precomp(tmp_path / "precomp")


def write_config(tmp_path: Path, precomp: Path, **train_kw) -> Path:
    cfg = tmp_path / "tiny.yaml"
    extra = "".join(f", {k}: {v}" for k, v in train_kw.items())
    cfg.write_text(
        f"""
experiment: tiny
data: {{root: {precomp}, dev_max_images: null, n_regions: 6, feat_dim: 32}}
model: {{mode: rcar, direction: t2i, img_dim: 32, embed_size: 16, word_dim: 8, sim_dim: 8}}
train: {{epochs: 2, batch_size: 4, warmup_epochs: 1, lr_decay_epoch: 1, log_every: 0, runs_root: {tmp_path / "runs"}{extra}}}
eval: {{memory_budget_mb: 1}}
"""
    )
    return cfg


def records_without_time(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "epoch_time_s"} for r in read_metrics(run_dir / "metrics.jsonl")
    ]


def test_train_one_epoch_resume_and_evaluate(tmp_path: Path, precomp: Path, capsys) -> None:
    cfg = write_config(tmp_path, precomp)
    run_dir = tmp_path / "run"
    train.main(["--config", str(cfg), "--run-dir", str(run_dir), "--set", "train.epochs=1"])
    recs = read_metrics(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in recs] == [1] and np.isfinite(recs[0]["train_loss"])
    assert (
        recs[0]["hardest_negative"] is False and recs[0]["step"] == 2
    )  # 10 captions, batches of 4, drop_last
    # 2 dev images: every caption's image is within the top 2, so R@5 = R@10 = 100 both ways
    assert [recs[0][f"dev_{k}"] for k in ("i2t_r5", "i2t_r10", "t2i_r5", "t2i_r10")] == [100.0] * 4
    assert recs[0]["dev_i2t_r1"] in (0.0, 50.0, 100.0) and recs[0]["dev_t2i_r1"] % 10 == 0  # 2 / 10 queries
    assert recs[0]["dev_rsum"] == pytest.approx(sum(recs[0][f"dev_{k}"] for k in RECALLS))
    for name in ("best.pt", "last.pt", "config.yaml", "summary.json", "test_metrics.json"):
        assert (run_dir / name).is_file(), name

    # the dev rsum logged in training is what evaluate computes from best.pt on the dev split
    out = tmp_path / "dev.json"
    evaluate.main(
        ["--config", str(cfg), "--checkpoint", str(run_dir / "best.pt"), "--split", "dev", "--out", str(out)]
    )
    assert json.loads(out.read_text())["rsum"] == pytest.approx(recs[0]["dev_rsum"], abs=1e-9)

    # continue the same run for a second epoch (the API: the command line refuses to change epochs)
    more = load_config(RCARConfig, cfg)  # epochs: 2 in the yaml
    train.train(more, run_dir=run_dir, resume=True, device="cpu")
    recs = read_metrics(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in recs] == [1, 2] and recs[1]["hardest_negative"] is True
    assert recs[1]["lr"] == pytest.approx(5e-5)  # x0.1 from lr_decay_epoch=1

    out = tmp_path / "m.json"
    evaluate.main(
        [
            "--config",
            str(cfg),
            "--checkpoint",
            str(run_dir / "best.pt"),
            "--checkpoint2",
            str(run_dir / "last.pt"),
            "--out",
            str(out),
        ]
    )
    res = json.loads(out.read_text())
    assert set(res) == {"model (t2i, rcar)", "model2 (t2i, rcar)", "ensemble"}
    assert "rsum" in capsys.readouterr().out


def test_summary_and_test_metrics_come_from_the_best_checkpoint(tmp_path: Path, precomp: Path) -> None:
    cfg = load_config(RCARConfig, write_config(tmp_path, precomp, epochs=3))
    summary = train.train(cfg, run_dir=tmp_path / "run", device="cpu")
    recs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    dev = [r["dev_rsum"] for r in recs]
    assert summary["steps"] == 6 and summary["epochs"] == 3 and summary["captions_per_epoch"] == 10
    assert summary["best_dev_rsum"] == max(dev) and summary["best_epoch"] == int(np.argmax(dev)) + 1
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == summary["best_epoch"]
    vocab_size = len(Vocab.from_json(precomp / "vocab.json"))
    assert summary["params"] == sum(p.numel() for p in RCAR(cfg.model, vocab_size).parameters())
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == json.loads(json.dumps(summary))
    test = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert summary["test"] == test and test["rsum"] == pytest.approx(sum(test[k] for k in RECALLS))
    out = tmp_path / "test.json"  # evaluate's default split is test: the same numbers as the run's
    assert run_cli(evaluate.main, ["--config", str(write_config(tmp_path, precomp)), "--checkpoint",
                                   str(tmp_path / "run" / "best.pt"), "--out", str(out)]) == 0  # fmt: skip
    assert json.loads(out.read_text()) == pytest.approx(test, abs=1e-9)


def test_evaluate_defaults_follow_the_training_protocol(tmp_path: Path, precomp: Path) -> None:
    """--split dev reads data.dev_max_images and no folds (the dev check); --split test eval.fold5's folds."""
    cfg = write_config(tmp_path, precomp, epochs=1)
    cfg.write_text(cfg.read_text().replace("dev_max_images: null", "dev_max_images: 1")
                   .replace("eval: {memory_budget_mb: 1}", "eval: {memory_budget_mb: 1, fold5: true, fold_images: 1}"))  # fmt: skip
    run = tmp_path / "run"
    assert run_cli(train.main, ["--config", str(cfg), "--run-dir", str(run), "--device", "cpu"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_protocol"] == "mean over 2 folds of 1 images"
    for split, expected in (
        ("dev", read_metrics(run / "metrics.jsonl")[0]["dev_rsum"]),
        ("test", summary["test"]["rsum"]),
    ):
        out = tmp_path / f"{split}.json"
        argv = [
            "--config",
            str(cfg),
            "--checkpoint",
            str(run / "best.pt"),
            "--split",
            split,
            "--out",
            str(out),
        ]
        assert run_cli(evaluate.main, argv) == 0
        assert json.loads(out.read_text())["rsum"] == pytest.approx(expected, abs=1e-9)


def test_switch_epoch_of_each_schedule() -> None:
    cfg = load_config(RCARConfig, None, ["train.epochs=8", "train.warmup_epochs=5"])
    assert train.switch_epoch(cfg, None) == 6 and train.switch_epoch(cfg, 2) == 6  # official: after warm-up
    cfg.train.hardest_negatives = "never"
    assert train.switch_epoch(cfg, 2) is None
    cfg.train.hardest_negatives = "adaptive"  # the epoch after the held hinge first fell below the margin
    assert train.switch_epoch(cfg, None) is None and train.switch_epoch(cfg, 3) == 4
    assert train.switch_epoch(cfg, 8) is None  # fell below in the last epoch: no epoch left to switch


def test_epochs_record_the_diagnostics(tmp_path: Path, precomp: Path) -> None:
    """Dev score spread, head weight norm and held-batch hinges per epoch, as recomputed from last.pt."""
    cfg = load_config(RCARConfig, write_config(tmp_path, precomp))
    summary = train.train(cfg, run_dir=tmp_path / "run", device="cpu")
    recs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["hardest_negative"] for r in recs] == [False, True] and summary["switch_epoch"] == 2
    assert summary["hardest_negatives"] == "after_warmup" and summary["collapsed_epochs"] == []
    model, _, vocab = evaluate.load_model(tmp_path / "run" / "last.pt")
    dev = evaluate.split_sims(model, cfg, vocab, "dev", "cpu")
    last = recs[-1]
    assert last["dev_score_std"] == pytest.approx(float(dev.std()), abs=1e-7) and last["dev_score_std"] > 0
    assert last["dev_score_mean"] == pytest.approx(float(dev.mean()), abs=1e-7)
    assert last["head_weight_norm"] == pytest.approx(float(model.sim.out.weight.detach().norm()), rel=1e-6)
    held = train.held_batches(build_train_dataset(cfg.data, vocab, seed=cfg.train.seed), cfg)
    assert [len(b["lengths"]) for b in held] == [4, 4, 2]  # 10 train captions, batches of 4
    hinges = train.hinge_diagnostics(model, held, cfg.train.margin, torch.device("cpu"))
    assert last["held_hinge_mean"] == pytest.approx(hinges["held_hinge_mean"], abs=1e-6)
    assert (
        last["held_over_margin"] == pytest.approx(hinges["held_over_margin"])
        and 0 <= last["held_over_margin"] <= 1
    )
    assert last["collapsed"] is False


def test_a_run_whose_scores_stop_spreading_is_flagged_collapsed(tmp_path: Path, precomp: Path) -> None:
    cfg = load_config(RCARConfig, write_config(tmp_path, precomp), ["train.collapse_score_std=10.0"])
    summary = train.train(cfg, run_dir=tmp_path / "run", device="cpu")  # every spread is below 10
    assert summary["collapsed_epochs"] == [1, 2]
    assert [r["collapsed"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [True, True]


ADAPTIVE = ["train.epochs=5", "train.lr=0.01", "train.lr_decay_epoch=10"]  # the held hinge falls below 0.2


def test_the_adaptive_switch_follows_the_held_hinge(tmp_path: Path, precomp: Path) -> None:
    cfg = load_config(
        RCARConfig, write_config(tmp_path, precomp), [*ADAPTIVE, "train.hardest_negatives=adaptive"]
    )
    summary = train.train(cfg, run_dir=tmp_path / "run", device="cpu")
    recs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    below = next(r["epoch"] for r in recs if r["held_hinge_mean"] < cfg.train.margin)
    assert summary["hinge_below_margin_epoch"] == below < 5 and summary["switch_epoch"] == below + 1
    assert [r["hardest_negative"] for r in recs] == [r["epoch"] > below for r in recs]


def test_a_run_that_never_leaves_the_control_is_copied_from_it(tmp_path: Path, precomp: Path) -> None:
    """An adaptive run whose held hinge never falls below the margin (margin 0: never) is its control."""
    path = write_config(tmp_path, precomp)
    sets = [*ADAPTIVE, "train.margin=0.0"]
    control = train.train(load_config(RCARConfig, path, [*sets, "train.hardest_negatives=never",
                                                          "train.keep_epoch_checkpoints=true"]),
                          run_dir=tmp_path / "control", device="cpu")  # fmt: skip
    cfg = load_config(RCARConfig, path, [*sets, "train.hardest_negatives=adaptive"])
    scratch = train.train(cfg, run_dir=tmp_path / "scratch", device="cpu")
    assert scratch["switch_epoch"] is None and reproduce.branch_epoch(tmp_path / "control", cfg) == 5
    reproduce.copy_run(tmp_path / "control", tmp_path / "copy", cfg)
    copied = json.loads((tmp_path / "copy" / "summary.json").read_text())
    assert records_without_time(tmp_path / "copy") == records_without_time(tmp_path / "scratch")
    assert copied["test"] == scratch["test"] and copied["hardest_negatives"] == "adaptive"
    ignore = {"run_dir", "train_time_s", "hardest_negatives", "copied_from"}
    assert {k: v for k, v in copied.items() if k not in ignore} == {
        k: v for k, v in scratch.items() if k not in ignore
    } and control["best_epoch"] == copied["best_epoch"]
    _same_checkpoint(
        load_checkpoint(tmp_path / "copy" / "best.pt"), load_checkpoint(tmp_path / "scratch" / "best.pt")
    )
    assert load_config(RCARConfig, tmp_path / "copy" / "config.yaml").train.hardest_negatives == "adaptive"


@pytest.mark.parametrize("schedule", ["after_warmup", "adaptive"])
def test_a_run_branched_off_the_control_equals_one_trained_from_scratch(
    schedule: str, tmp_path: Path, precomp: Path
) -> None:
    """rcar.reproduce starts the official and adaptive runs from the all-negatives control's epoch checkpoint."""
    path = write_config(tmp_path, precomp)
    control_cfg = load_config(RCARConfig, path, [*ADAPTIVE, "train.hardest_negatives=never",
                                                 "train.keep_epoch_checkpoints=true"])  # fmt: skip
    train.train(control_cfg, run_dir=tmp_path / "control", device="cpu")
    assert sorted(p.name for p in (tmp_path / "control").glob("epoch_*.pt")) == [
        f"epoch_{k}.pt" for k in range(1, 6)
    ]
    cfg = load_config(RCARConfig, path, [*ADAPTIVE, f"train.hardest_negatives={schedule}"])
    scratch = train.train(cfg, run_dir=tmp_path / "scratch", device="cpu")
    epoch = reproduce.branch_epoch(tmp_path / "control", cfg)
    assert (
        epoch == (1 if schedule == "after_warmup" else scratch["hinge_below_margin_epoch"]) and 0 < epoch < 5
    )
    reproduce.start_branch(tmp_path / "control", tmp_path / "branch", epoch)
    branch = train.train(cfg, run_dir=tmp_path / "branch", resume=True, device="cpu")
    assert records_without_time(tmp_path / "branch") == records_without_time(tmp_path / "scratch")
    assert any(r["hardest_negative"] for r in read_metrics(tmp_path / "branch" / "metrics.jsonl"))
    for name in ("last.pt", "best.pt"):
        _same_checkpoint(
            load_checkpoint(tmp_path / "branch" / name), load_checkpoint(tmp_path / "scratch" / name)
        )
    assert branch["test"] == scratch["test"] and branch["switch_epoch"] == scratch["switch_epoch"]


def test_epochs_show_progress_lines(tmp_path: Path, precomp: Path) -> None:
    """Off a terminal: one line every train.log_every steps inside each epoch, with loss, rate and ETA."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = get_logger("rcar")
    logger.addHandler(handler)
    try:
        train.train(
            load_config(RCARConfig, write_config(tmp_path, precomp, log_every=1)),
            tmp_path / "run",
            device="cpu",
        )
    finally:
        logger.removeHandler(handler)
    steps = [ln for ln in lines if " step " in ln]
    assert [ln.split(" loss")[0] for ln in steps] == [
        "epoch 1/2 step 1/2",
        "epoch 1/2 step 2/2",
        "epoch 2/2 step 1/2",
        "epoch 2/2 step 2/2",
    ]
    assert all("samples/s ETA" in ln for ln in steps)


def _same_checkpoint(a: dict, b: dict) -> None:
    assert (a["epoch"], a["step"], a["best_metric"], a["extra"]["best_epoch"]) == (
        b["epoch"],
        b["step"],
        b["best_metric"],
        b["extra"]["best_epoch"],
    )
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, state in a["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state[name], b["optimizer"]["state"][k][name]), (k, name)
    assert a["scheduler"] == b["scheduler"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert torch.equal(a["rng"]["numpy"]["key"], b["rng"]["numpy"]["key"])


def test_resume_after_stopping_at_an_epoch_equals_the_uninterrupted_run(
    tmp_path: Path, precomp: Path
) -> None:
    cfg = load_config(RCARConfig, write_config(tmp_path, precomp, epochs=3))
    full = train.train(cfg, run_dir=tmp_path / "full", device="cpu")
    cut_cfg = load_config(RCARConfig, write_config(tmp_path, precomp, epochs=3), ["train.epochs=2"])
    train.train(cut_cfg, run_dir=tmp_path / "cut", device="cpu")
    torch.manual_seed(123)  # a dirty global RNG: the resume must restore the saved states
    np.random.seed(123)  # noqa: NPY002 (the legacy global state is what a resume restores)
    resumed = train.train(cfg, run_dir=tmp_path / "cut", resume=True, device="cpu")
    assert records_without_time(tmp_path / "cut") == records_without_time(tmp_path / "full")
    for name in ("last.pt", "best.pt"):
        _same_checkpoint(load_checkpoint(tmp_path / "cut" / name), load_checkpoint(tmp_path / "full" / name))
    assert resumed["test"] == full["test"] and resumed["best_epoch"] == full["best_epoch"]


def test_train_errors_are_one_line(tmp_path: Path, precomp: Path, capsys) -> None:
    cfg = write_config(tmp_path, precomp)
    assert run_cli(train.main, ["--config", str(cfg), "--set", "model.mode=fancy"]) == 2
    assert "model.mode" in capsys.readouterr().err
    assert run_cli(train.main, ["--config", str(cfg), "--set", "model.img_dim=31"]) == 2
    assert "img_dim" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="at least 1"):
        train.main(["--config", str(cfg), "--set", "model.steps=0"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=-1", "train.batch_size must be >= 1, got -1"),
        ("train.epochs=0", "train.epochs must be >= 1, got 0"),
        ("train.lr=0.0", "train.lr must be > 0"),
        ("train.max_captions_per_epoch=0", "train.max_captions_per_epoch must be >= 1"),
        ("train.batch_size=11", "train.batch_size=11 is more than the 10 captions"),
        ("eval.memory_budget_mb=0", "eval.memory_budget_mb must be >= 1"),
        ("train.length_groups=0", "train.length_groups must be >= 1, got 0"),
        ("train.held_batches=0", "train.held_batches must be >= 1, got 0"),
        ("model.rar_dropout=1.0", "model.rar_dropout must be in [0, 1), got 1.0"),
        ("train.collapse_score_std=-1.0", "train.collapse_score_std must be >= 0"),
        ("train.hardest_negatives=sometimes", "train.hardest_negatives"),
    ],
)
def test_bad_train_settings_exit_2_and_leave_no_run_folder(
    tmp_path, precomp, capsys, override, message
) -> None:
    cfg = write_config(tmp_path, precomp)
    assert run_cli(train.main, ["--config", str(cfg), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    # no run folder (epochs=0 used to print DONE and leave a folder without a model)
    assert not [p for p in (tmp_path / "runs").glob("rcar/*/*")]


def test_a_vocabulary_that_knows_no_word_stops_training_and_leaves_nothing(tmp_path, precomp, capsys) -> None:
    """A data error after the run folder was made: one line naming both files, and the folder is removed."""
    vocab = tmp_path / "other_vocab.json"
    vocab.write_text(json.dumps({"word2idx": {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3, "zebra": 4},
                                 "idx2word": {"0": "<pad>", "1": "<start>", "2": "<end>", "3": "<unk>", "4": "zebra"},
                                 "idx": 5}))  # fmt: skip
    cfg = write_config(tmp_path, precomp)
    assert run_cli(train.main, ["--config", str(cfg), "--set", f"data.vocab={vocab}"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "other_vocab.json knows none of the" in err and "train_caps.txt" in err and len(err.splitlines()) == 1
    )
    assert not [p for p in (tmp_path / "runs").glob("rcar/*/*")]  # the failed start left no run folder


def test_resume_refuses_a_changed_model_dimension(tmp_path: Path, precomp: Path, capsys) -> None:
    cfg = write_config(tmp_path, precomp, epochs=1)
    run_dir = tmp_path / "run"
    assert run_cli(train.main, ["--config", str(cfg), "--run-dir", str(run_dir)]) == 0
    before = (run_dir / "last.pt").stat().st_mtime_ns
    capsys.readouterr()
    argv = ["--config", str(cfg), "--run-dir", str(run_dir), "--resume", "--set", "model.embed_size=32"]
    assert run_cli(train.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert "model.embed_size = 16" in err and "32" in err and len(err.splitlines()) == 1
    assert (run_dir / "last.pt").stat().st_mtime_ns == before
    # without the conflicting --set, the resume takes the saved config (1 epoch: already complete)
    assert run_cli(train.main, ["--run-dir", str(run_dir), "--resume", "--device", "cpu"]) == 0


def test_evaluate_errors_are_one_line(tmp_path: Path, precomp: Path, capsys) -> None:
    cfg = write_config(tmp_path, precomp, epochs=1)
    assert run_cli(train.main, ["--config", str(cfg), "--run-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    best = str(tmp_path / "run" / "best.pt")
    assert run_cli(evaluate.main, ["--config", str(cfg), "--checkpoint", best, "--max-images", "-3"]) == 2
    assert "--max-images must be >= 1, got -3" in capsys.readouterr().err
    other = tmp_path / "infnet_run"
    save_checkpoint(other, model=torch.nn.Linear(2, 2), paper="infnet", epoch=1, step=1, config={"data": {}})
    assert run_cli(evaluate.main, ["--config", str(cfg), "--checkpoint", str(other / "last.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a infnet checkpoint, not a rcar one" in err and len(err.splitlines()) == 1
    # a data folder whose vocabulary does not fit the checkpoint's embedding
    small = random_precomp(tmp_path / "small")
    (small / "vocab.json").write_text((FIXTURE / "vocab.json").read_text().replace('"idx": 52', '"idx": 53'))
    assert (
        run_cli(evaluate.main, ["--config", str(cfg), "--checkpoint", best, "--set", f"data.root={small}"])
        == 2
    )
    assert "does not fit the model" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- overfitting
@pytest.mark.parametrize(
    "mode, direction", [("baseline", "t2i"), ("rcr", "t2i"), ("rar", "t2i"), ("rcar", "t2i"), ("rcar", "i2t")]
)
def test_overfits_one_batch(mode: str, direction: str) -> None:
    """A batch of 6 images x 1 caption each: the hinge loss goes to 0 and every caption finds its image."""
    torch.manual_seed(0)
    cfg = ModelConfig(mode=mode, direction=direction, img_dim=12, embed_size=16, word_dim=8, sim_dim=8)
    cfg.text_dropout = cfg.rar_dropout = 0.0
    model = RCAR(cfg, vocab_size=30).train()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(6, 5, 12, generator=g)
    lengths = torch.tensor([7, 6, 6, 5, 5, 4])
    captions = torch.randint(4, 30, (6, 7), generator=g) * (torch.arange(7)[None] < lengths[:, None])
    index = torch.arange(6)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
    first = None
    for step in range(60):  # all negatives, then the hardest, as in training; switching after 20 steps
        # leaves t2i RAR stuck at a hinge of 0.45 (the early-switch trap rcar/README.md describes)
        loss = triplet_loss(model(images, captions, lengths), index, 0.2, hardest=step >= 40)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        sims = model(images, captions, lengths)  # (6 images, 6 captions)
        final = triplet_loss(sims, index, 0.2, hardest=True).item()
    assert first > 1.0 and final < 0.05 * first
    assert sims.argmax(dim=0).tolist() == list(range(6)) and sims.argmax(dim=1).tolist() == list(range(6))


# ---------------------------------------------------------------------------------------- kill and DDP
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    return env


@pytest.mark.slow
def test_kill_and_resume_equals_the_uninterrupted_run(tmp_path: Path, precomp: Path) -> None:
    """SIGKILL a real training process after its first checkpoint; ``--resume`` ends bit-identical."""
    epochs = 40  # ~25 ms an epoch: long enough to land the kill mid-run
    cfg_path = write_config(tmp_path, precomp, epochs=epochs)
    train.train(load_config(RCARConfig, cfg_path), run_dir=tmp_path / "full", device="cpu")
    run_dir = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "rcar.train",
        "--config",
        str(cfg_path),
        "--run-dir",
        str(run_dir),
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "last.pt").is_file():
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    killed_at = load_checkpoint(run_dir / "last.pt")["epoch"]
    assert 1 <= killed_at < epochs, "the kill must land mid-training"
    resumed = subprocess.run([*cmd[:3], "--run-dir", str(run_dir), "--resume", "--device", "cpu"], cwd=ROOT,
                             env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {run_dir / 'last.pt'} at epoch {killed_at}" in resumed.stderr
    assert records_without_time(run_dir) == records_without_time(tmp_path / "full")
    for name in ("last.pt", "best.pt"):
        _same_checkpoint(load_checkpoint(run_dir / name), load_checkpoint(tmp_path / "full" / name))
    full = json.loads((tmp_path / "full" / "test_metrics.json").read_text())
    assert json.loads((run_dir / "test_metrics.json").read_text()) == full


@pytest.mark.distributed
@pytest.mark.slow
def test_two_process_gloo_training(tmp_path: Path, precomp: Path) -> None:
    """2-process DDP: each rank its shard of captions; the dev and test matrices are gathered on every rank,
    so the logged dev rsum and test metrics equal a single-process evaluation of the saved checkpoints."""
    cfg = write_config(tmp_path, precomp)
    run_dir = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
    ]
    cmd += ["-m", "rcar.train", "--config", str(cfg), "--run-dir", str(run_dir), "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = read_metrics(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in recs] == [1, 2] and [r["step"] for r in recs] == [1, 2]  # 5 captions a rank
    summary = json.loads((run_dir / "summary.json").read_text())
    best_epoch = summary["best_epoch"]
    assert summary["best_dev_rsum"] == max(r["dev_rsum"] for r in recs) == recs[best_epoch - 1]["dev_rsum"]
    for split, expected in (("dev", recs[best_epoch - 1]["dev_rsum"]), ("test", summary["test"]["rsum"])):
        out = tmp_path / f"{split}.json"
        argv = [
            "--config",
            str(cfg),
            "--checkpoint",
            str(run_dir / "best.pt"),
            "--split",
            split,
            "--out",
            str(out),
        ]
        assert run_cli(evaluate.main, [*argv, "--device", "cpu"]) == 0
        assert json.loads(out.read_text())["rsum"] == pytest.approx(expected, abs=1e-9), split
