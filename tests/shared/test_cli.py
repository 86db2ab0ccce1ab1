"""shared.cli and shared.run: config reference in --help, resume with the saved config, failed starts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from shared.cli import config_keys, config_reference, evaluate_parser, field_docs, train_parser
from shared.errors import ConfigError, TrainingError, run_cli
from shared.log import RunsProgress, StepProgress
from tests import tiny_train


@dataclass
class Inner:
    """A section.

    Attributes:
        width: hidden width of the
            two layers (a continuation line)
        act: the non-linearity
    """

    width: int = 8
    act: Literal["relu", "gelu"] = "relu"


@dataclass
class Outer:
    """Top level.

    Attributes:
        name: experiment name
        dims: a list with a factory default
        inner: the inner section
    """

    name: str = "x"
    dims: list[int] = field(default_factory=lambda: [1, 2])
    inner: Inner = field(default_factory=Inner)


def test_field_docs_reads_the_attributes_block_with_continuations():
    assert field_docs(Inner) == {
        "width": "hidden width of the two layers (a continuation line)",
        "act": "the non-linearity",
    }
    assert field_docs(int) == {}


def test_config_keys_and_reference_list_every_leaf_with_type_default_meaning():
    rows = config_keys(Outer)
    assert [r[0] for r in rows] == ["name", "dims", "inner.width", "inner.act"]
    assert rows[1] == ("dims", "list[int]", [1, 2], "a list with a factory default")
    assert rows[3][1] == "'relu' | 'gelu'"
    text = config_reference(Outer)
    assert "  inner.width (int, default 8)\n      hidden width of the two layers" in text


def test_train_and_evaluate_help_list_every_config_key(capsys):
    for parser in (
        train_parser("demo", tiny_train.TinyConfig),
        evaluate_parser("demo", tiny_train.TinyConfig),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        for key, _, _, meaning in config_keys(tiny_train.TinyConfig):
            assert f"  {key} (" in out and meaning in out
    args = evaluate_parser("demo", tiny_train.TinyConfig).parse_args(["--config", "c", "--checkpoint", "p"])
    assert (args.split, args.out, args.device) == ("test", None, "auto")


CONFIG = "experiment: cli\ntrain:\n  epochs: 2\n  num_samples: 32\n  batch_size: 16\n"


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(CONFIG)
    return path


def test_resume_takes_the_saved_config_and_refuses_a_conflicting_set(tmp_path, capsys):
    config, run_dir = _config(tmp_path), tmp_path / "run"
    assert (
        run_cli(
            tiny_train.main, ["--config", str(config), "--run-dir", str(run_dir), "--set", "model.hidden=5"]
        )
        == 0
    )
    # a conflicting --set: one line naming the key and both values
    code = run_cli(
        tiny_train.main,
        ["--config", str(config), "--run-dir", str(run_dir), "--resume", "--set", "model.hidden=7"],
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "model.hidden = 5" in err and "7 was asked for" in err
    # without --config the saved config is used as it is (hidden 5, not the default 16)
    assert run_cli(tiny_train.main, ["--run-dir", str(run_dir), "--resume", "--set", "train.epochs=2"]) == 0
    assert "hidden: 5" in (run_dir / "config.yaml").read_text()
    # the --config file itself conflicting with the saved config is refused the same way
    config.write_text(CONFIG.replace("epochs: 2", "epochs: 3"))
    assert run_cli(tiny_train.main, ["--config", str(config), "--run-dir", str(run_dir), "--resume"]) == 2
    assert "train.epochs = 2" in capsys.readouterr().err


def test_resume_without_a_run_folder_config_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match=r"has no config\.yaml"):
        tiny_train.main(["--run-dir", str(tmp_path / "empty"), "--resume"])
    with pytest.raises(ConfigError, match="--config is required"):
        tiny_train.main([])


def test_a_failed_start_leaves_no_run_folder(tmp_path, capsys):
    config = _config(tmp_path)
    root = tmp_path / "runs"
    # NaN at step 0: the run fails before its first checkpoint; the timestamped folder it made is removed
    assert run_cli(tiny_train.main, ["--config", str(config), "--set", f"train.runs_root={root}",
                                     "--set", "train.nan_at_step=0"]) == 2  # fmt: skip
    assert "loss became nan at step 0" in capsys.readouterr().err
    assert list((root / "tiny" / "cli").iterdir()) == []
    # an explicit --run-dir that did not exist is removed too; one that existed is kept
    assert run_cli(tiny_train.main, ["--config", str(config), "--run-dir", str(tmp_path / "new"),
                                     "--set", "train.nan_at_step=0"]) == 2  # fmt: skip
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    assert run_cli(tiny_train.main, ["--config", str(config), "--run-dir", str(tmp_path / "kept"),
                                     "--set", "train.nan_at_step=0"]) == 2  # fmt: skip
    assert (tmp_path / "kept").is_dir()
    # zero epochs is a config error, before anything is created
    assert run_cli(tiny_train.main, ["--config", str(config), "--set", f"train.runs_root={root}",
                                     "--set", "train.epochs=0"]) == 2  # fmt: skip
    assert "train.epochs must be >= 1, got 0" in capsys.readouterr().err


def test_train_returns_and_writes_its_summary(tmp_path):
    run_dir = tmp_path / "run"
    summary = tiny_train.train(tiny_train.TinyConfig(), run_dir=run_dir, device="cpu")
    assert summary["paper"] == "tiny" and summary["run_dir"] == str(run_dir)
    assert (run_dir / "summary.json").is_file() and (run_dir / "best.pt").is_file()


def test_step_progress_logs_every_n_steps_with_rate_and_eta(caplog):
    logger = logging.getLogger("progress-test")
    logger.propagate = True
    with caplog.at_level(logging.INFO, logger="progress-test"):
        bar = StepProgress(total=5, desc="epoch 1", logger=logger, log_every=2, tty=False)
        for i in range(5):
            bar.update(loss=1.0 / (i + 1), n=10)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert [ln.split(" loss")[0] for ln in lines] == [
        "epoch 1 step 2/5",
        "epoch 1 step 4/5",
        "epoch 1 step 5/5",
    ]
    assert all("samples/s ETA " in ln for ln in lines) and lines[-1].endswith("ETA 0:00:00")
    assert "(mean 0.4567)" in lines[-1]  # (1 + 1/2 + 1/3 + 1/4 + 1/5) / 5
    quiet = StepProgress(total=5, desc="x", logger=logger, rank=1, log_every=1, tty=False)
    with caplog.at_level(logging.INFO, logger="progress-test"):
        caplog.clear()
        quiet.update(0.5, 1)
    assert caplog.records == []


def test_runs_progress_counts_and_estimates(caplog):
    logger = logging.getLogger("runs-progress-test")
    logger.propagate = True
    with caplog.at_level(logging.INFO, logger="runs-progress-test"):
        progress = RunsProgress(4, logger)
        line = progress.finished("infnet seed 0", 12.0)
    assert line.startswith("1 of 4 runs done (infnet seed 0 in 12 s), elapsed ") and "ETA " in line


def test_optimizer_step_guards_nan_clips_and_updates():
    import torch

    from shared.run import optimizer_step

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)  # lr 1: the update is minus the (clipped) gradient
    x = torch.randn(4, 3) * 100
    before = [p.detach().clone() for p in model.parameters()]
    value = optimizer_step(model(x).pow(2).mean(), opt, step=0, grad_clip=0.5)
    update = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert value > 100 and update.norm().item() == pytest.approx(0.5, rel=1e-4)  # a huge gradient, clipped
    with pytest.raises(TrainingError, match="loss became nan at step 7"):
        optimizer_step(model(x).mean(), opt, step=7, nan_at_step=7)
