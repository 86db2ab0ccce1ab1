"""The kill-and-resume check every package's training test runs, written once.

``killed_then_resumed`` trains a run uninterrupted, trains the same config again but stops it (as a kill
would) right after epoch ``kill_after``'s checkpoint, resumes it with ``--resume``, and returns both runs'
``metrics.jsonl`` records without their wall-clock fields and both ``test_metrics.json``: a package's test
asserts they are equal (and compares checkpoints where it wants).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from shared.log import read_metrics
from shared.run import TrainRun

TIMED_KEYS = ("train_time_s", "epoch_time_s", "val_time_s", "samples_per_s", "points_per_s")


def untimed(records: Iterable[dict[str, Any]], keys: Iterable[str] = TIMED_KEYS) -> list[dict[str, Any]]:
    drop = set(keys)
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


def killed_then_resumed(
    train: Callable[..., int],
    train_module: ModuleType,
    config: Path,
    root: Path,
    kill_after: int,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[dict], list[dict], dict, dict]:
    """``train(config, *argv) -> exit code`` runs the package's CLI; ``train_module`` is the module whose
    ``TrainRun`` is patched. Runs land in ``root/full`` and ``root/cut``."""
    assert train(config, "--run-dir", str(root / "full")) == 0

    class KilledAfterEpoch(TrainRun):
        def end_epoch(self, record, *args, **kwargs):
            is_best = super().end_epoch(record, *args, **kwargs)
            if record["epoch"] == kill_after:
                raise KeyboardInterrupt  # as if killed right after this epoch's checkpoint
            return is_best

    with monkeypatch.context() as m:
        m.setattr(train_module, "TrainRun", KilledAfterEpoch)
        with pytest.raises(KeyboardInterrupt):
            train(config, "--run-dir", str(root / "cut"))
    assert len(read_metrics(root / "cut" / "metrics.jsonl")) == kill_after
    assert train(config, "--run-dir", str(root / "cut"), "--resume") == 0
    full, cut = (untimed(read_metrics(root / r / "metrics.jsonl")) for r in ("full", "cut"))
    tests = [json.loads((root / r / "test_metrics.json").read_text()) for r in ("full", "cut")]
    return full, cut, tests[0], tests[1]
