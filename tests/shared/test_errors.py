"""shared.errors: every entry point turns a ReproError into one stderr line and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.errors import ConfigError, DataError, ReproError, TrainingError, run_cli

REPO = Path(__file__).resolve().parents[2]


def test_hierarchy():
    for cls in (ConfigError, DataError, TrainingError):
        assert issubclass(cls, ReproError) and issubclass(cls, Exception)


def _raiser(exc: BaseException):
    def main(argv):
        raise exc

    return main


@pytest.mark.parametrize("cls", [ConfigError, DataError, TrainingError])
def test_run_cli_one_line_and_exit_2(capsys, cls):
    assert run_cli(_raiser(cls("data/x.tsv row 3: 4 columns, expected 5; re-run prepare")), ["--a"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: data/x.tsv row 3: 4 columns, expected 5; re-run prepare\n"


def test_run_cli_folds_multiline_messages_into_one_line(capsys):
    assert run_cli(_raiser(DataError("bad file\n  line 2:\n\n    ^ here")), []) == 2
    assert capsys.readouterr().err == "error: bad file line 2: ^ here\n"


def test_run_cli_debug_reraises_and_success_returns_0(capsys):
    with pytest.raises(ConfigError, match="boom"):
        run_cli(_raiser(ConfigError("boom")), ["--config", "c.yaml", "--debug"])
    seen = []
    assert run_cli(seen.append, ["--x", "1"]) == 0
    assert seen == [["--x", "1"]]
    with pytest.raises(KeyError):  # a programming error is not hidden behind a one-liner
        run_cli(_raiser(KeyError("k")), [])
    assert capsys.readouterr().err == ""


def test_run_cli_reads_sys_argv_by_default(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["prog", "--debug"])
    with pytest.raises(DataError):
        run_cli(_raiser(DataError("x")))
    monkeypatch.setattr(sys, "argv", ["prog"])
    assert run_cli(_raiser(DataError("x"))) == 2


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "tests.tiny_train", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_real_cli_prints_exactly_one_line_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lrr: 0.1\n")
    proc = _cli("--config", str(bad), "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "bad.yaml" in lines[0] and "train.lrr" in lines[0]
    assert "valid keys" in lines[0] and "lr," in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
    from tests import tiny_train

    # --debug lets the exception escape run_cli, so python prints the traceback (exit status 1)
    with pytest.raises(ConfigError, match=r"train\.lrr"):
        run_cli(tiny_train.main, ["--config", str(bad), "--debug"])


def test_cli_bad_yaml_and_bad_override_in_process(tmp_path, capsys):
    from tests import tiny_train

    bad = tmp_path / "syntax.yaml"
    bad.write_text("train:\n  lr: [1\n")
    assert run_cli(tiny_train.main, ["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "syntax.yaml: not valid YAML at line" in err
    good = tmp_path / "good.yaml"
    good.write_text("train:\n  epochs: 1\n")
    assert run_cli(tiny_train.main, ["--config", str(good), "--set", "train.epochs=two"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.epochs: expected int, got 'two'" in err
    assert run_cli(tiny_train.main, ["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    empty = tmp_path / "runs"
    args = ["--config", str(good), "--resume", "--set", f"train.runs_root={empty}"]
    assert run_cli(tiny_train.main, args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing to resume" in err
