"""shared.log: rank-0 logging, quiet progress bars, run folders, metrics.jsonl and the NaN guard."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import uuid

import pytest

from shared import log as slog
from shared.errors import TrainingError
from shared.log import (
    MetricsLog,
    check_finite,
    get_logger,
    latest_run_dir,
    make_run_dir,
    progress,
    read_metrics,
)


def _fresh_name() -> str:
    return f"test-{uuid.uuid4().hex}"


def test_logger_prints_info_on_rank0_only(capsys):
    log0 = get_logger(_fresh_name(), rank=0)
    log0.info("hello from rank 0")
    log1 = get_logger(_fresh_name(), rank=1)
    log1.info("hidden info")
    log1.warning("visible warning")
    err = capsys.readouterr().err
    assert "hello from rank 0" in err and "visible warning" in err and "hidden info" not in err


def test_logger_does_not_duplicate_handlers_and_updates_level():
    name = _fresh_name()
    a = get_logger(name, rank=1)
    assert a.level == logging.WARNING
    b = get_logger(name, rank=0)
    assert a is b and len(b.handlers) == 1 and b.level == logging.INFO and not b.propagate


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("tty", "rank", "shown"), [(False, 0, False), (True, 1, False), (True, 0, True)])
def test_progress_quiet_off_tty_and_off_rank0(monkeypatch, tty, rank, shown):
    stream = _Stream(tty)
    monkeypatch.setattr(slog.sys, "stderr", stream)
    items = list(progress(range(5), desc="epoch 1", total=5, rank=rank))
    assert items == list(range(5))
    assert ("epoch 1" in stream.getvalue()) == shown
    if not shown:
        assert stream.getvalue() == ""


def test_make_run_dir_layout_and_uniqueness(tmp_path, monkeypatch):
    monkeypatch.setattr(slog.time, "strftime", lambda fmt: "20240101-000000")
    a = make_run_dir(tmp_path / "runs", "rcar", "f30k")
    b = make_run_dir(tmp_path / "runs", "rcar", "f30k")
    c = make_run_dir(tmp_path / "runs", "rcar", "f30k")
    assert a == tmp_path / "runs" / "rcar" / "f30k" / "20240101-000000"
    assert b.name == "20240101-000000-1" and c.name == "20240101-000000-2"
    assert a.is_dir() and b.is_dir() and c.is_dir()


def test_latest_run_dir_picks_newest_with_last_pt(tmp_path):
    base = tmp_path / "p" / "e"
    with pytest.raises(TrainingError, match="nothing to resume"):
        latest_run_dir(tmp_path, "p", "e")
    for name, mtime in (("old", 1000), ("new", 3000), ("mid", 2000)):
        (base / name).mkdir(parents=True)
        (base / name / "last.pt").write_bytes(b"x")
        os.utime(base / name / "last.pt", (mtime, mtime))
    (base / "empty").mkdir()  # newest folder but no checkpoint: not resumable
    assert latest_run_dir(tmp_path, "p", "e") == base / "new"
    with pytest.raises(TrainingError, match="start without --resume"):
        latest_run_dir(tmp_path, "p", "other")


def test_metrics_log_writes_jsonl_on_rank0_only(tmp_path):
    path = tmp_path / "metrics.jsonl"
    m = MetricsLog(path)
    m.log({"step": 1, "loss": 0.5})
    m.log({"step": 2, "loss": float("nan"), "acc": 1})
    MetricsLog(path, rank=1).log({"step": 3, "loss": 9.0})
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0]) == {"step": 1, "loss": 0.5}
    rec = read_metrics(path)
    assert rec[0] == {"step": 1, "loss": 0.5} and math.isnan(rec[1]["loss"]) and rec[1]["acc"] == 1
    assert not (tmp_path / "other.jsonl").exists()
    MetricsLog(tmp_path / "other.jsonl", rank=1).log({"step": 1})
    assert not (tmp_path / "other.jsonl").exists()


def test_metrics_log_truncates_on_resume_and_drops_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    m = MetricsLog(path)
    for step in (10, 20, 30, 40):
        m.log({"epoch": step // 10, "step": step, "loss": step / 100})
    with path.open("a") as fh:
        fh.write('{"epoch": 5, "st')  # a write torn by a kill
    assert [r["step"] for r in read_metrics(path)] == [10, 20, 30, 40]
    MetricsLog(path, rank=1, resume_step=20)  # other ranks never touch the file
    assert len(read_metrics(path)) == 4
    resumed = MetricsLog(path, resume_step=20)
    assert [r["step"] for r in read_metrics(path)] == [10, 20]
    resumed.log({"epoch": 3, "step": 30, "loss": 0.3})
    assert path.read_text().splitlines()[-1] == json.dumps({"epoch": 3, "step": 30, "loss": 0.3})
    assert [r["step"] for r in read_metrics(path)] == [10, 20, 30]
    MetricsLog(tmp_path / "new.jsonl", resume_step=5)  # resuming without a file is fine
    assert not (tmp_path / "new.jsonl").exists()


def test_check_finite_names_the_step():
    check_finite(1.5, step=3)
    check_finite(0.0, step=3)
    with pytest.raises(TrainingError, match=r"loss became nan at step 17"):
        check_finite(float("nan"), step=17)
    with pytest.raises(TrainingError, match=r"grad norm became inf at step 2;"):
        check_finite(float("inf"), step=2, what="grad norm")
    with pytest.raises(TrainingError, match="-inf at step 0"):
        check_finite(float("-inf"), step=0)


def test_resolve_run_dir_explicit_resume_and_fresh(tmp_path):
    from shared.log import resolve_run_dir

    explicit = resolve_run_dir(tmp_path / "mine", False, tmp_path / "runs", "p", "e")
    assert explicit == tmp_path / "mine" and explicit.is_dir()
    fresh = resolve_run_dir(None, False, tmp_path / "runs", "p", "e")
    assert fresh.parent == tmp_path / "runs" / "p" / "e" and fresh.is_dir()
    with pytest.raises(TrainingError, match="nothing to resume"):
        resolve_run_dir(None, True, tmp_path / "runs", "p", "e")
    (fresh / "last.pt").write_bytes(b"x")
    assert resolve_run_dir(None, True, tmp_path / "runs", "p", "e") == fresh


def test_logger_writes_to_the_current_stderr(monkeypatch, capsys):
    import io

    logger = get_logger("swapped-stderr-test")
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    logger.info("one")
    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    first.close()  # what pytest does to an earlier test's stream
    logger.info("two")
    assert "two" in second.getvalue()
