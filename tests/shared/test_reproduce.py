"""shared.reproduce: the command line, processes, parallel jobs and provenance of every reproduce script."""

from __future__ import annotations

import json
import logging
import math
import sys

import pytest

from shared.errors import ConfigError, DataError, TrainingError
from shared.reproduce import (
    check_parallelism,
    nan_mean,
    rebuild_from_metrics,
    reproduce_parser,
    reused_wall_time,
    run_parallel,
    run_process,
    seed_std,
    train_process,
)


def test_parser_flags_and_their_checks():
    args = reproduce_parser("d", "quick help").parse_args(["--quick", "--jobs", "3", "--reuse", "r"])
    assert (args.quick, args.jobs, args.threads, args.reuse, args.from_metrics) == (True, 3, 1, "r", None)
    with pytest.raises(ConfigError, match="--jobs must be >= 1, got 0"):
        check_parallelism(reproduce_parser("d", "q").parse_args(["--jobs", "0"]))


def test_rebuild_from_metrics_writes_beside_it_and_names_bad_files(tmp_path):
    path = tmp_path / "m" / "metrics.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"x": 1}))
    seen = []
    out = rebuild_from_metrics(path, lambda m, d: (seen.append((m, d)), d / "report.md")[1])
    assert seen == [({"x": 1}, path.parent)] and out == path.parent / "report.md"
    with pytest.raises(DataError, match="does not exist"):
        rebuild_from_metrics(tmp_path / "none.json", lambda m, d: d)
    path.write_text("{broken")
    with pytest.raises(DataError, match=r"metrics\.json is not valid JSON \(line 1\)"):
        rebuild_from_metrics(path, lambda m, d: d)


def test_run_process_logs_and_names_the_log_on_failure(tmp_path):
    ok = [sys.executable, "-c", "import os; print('threads', os.environ['OMP_NUM_THREADS'])"]
    run_process(ok, tmp_path / "ok.log", threads=3)
    assert (tmp_path / "ok.log").read_text().strip() == "threads 3"
    bad = [sys.executable, "-c", "import sys; print('first'); print('the reason'); sys.exit(4)"]
    with pytest.raises(TrainingError, match=r"failed \(exit 4\), see .*bad\.log: first \| the reason"):
        run_process(bad, tmp_path / "bad.log", threads=1)


def test_train_process_skips_a_finished_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"best": 0.5}))
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    summary = train_process("nopaper", "c.yaml", [], run, threads=1)  # no process: the run is finished
    assert summary == {"best": 0.5, "curve": [{"epoch": 1}, {"epoch": 2}]}


def test_run_parallel_runs_every_job_and_counts_them(caplog):
    logger = logging.getLogger("run-parallel-test")
    logger.propagate = True
    with caplog.at_level(logging.INFO, logger="run-parallel-test"):
        out = run_parallel(
            [1, 2, 3], lambda j: j * 10, workers=2, logger=logger, describe=lambda j, r: f"job {j}"
        )
    assert out == {1: 10, 2: 20, 3: 30}
    lines = [r.getMessage() for r in caplog.records]
    assert sorted(ln.split(" runs done")[0] for ln in lines) == ["1 of 3", "2 of 3", "3 of 3"]
    with pytest.raises(ZeroDivisionError):
        run_parallel([0], lambda j: 1 / j, workers=1, logger=logger)


def test_reused_wall_time_recorded_or_from_the_files(tmp_path):
    (tmp_path / "wall_time.json").write_text(json.dumps({"wall_time_s": 12.5}))
    assert reused_wall_time(tmp_path) == 12.5
    assert reused_wall_time(tmp_path / "missing") == 0.0


def test_seed_statistics_skip_missing_values():
    assert nan_mean([1.0, float("nan"), 3.0, None]) == 2.0 and math.isnan(nan_mean([None]))
    assert seed_std([1.0, 3.0]) == pytest.approx(math.sqrt(2)) and seed_std([1.0]) == 0.0
    assert math.isnan(seed_std([1.0], single=float("nan")))
