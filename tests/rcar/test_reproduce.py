"""rcar.reproduce's report from finished runs: tables, claim check, every run's training notes, provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from rcar.reproduce import DIRECTIONS, METRICS, MODES, job_dir, write_report

RSUM = {"baseline": 400.0, "rcr": 420.0, "rar": 380.0, "rcar": 430.0}


def fake_run(root: Path, direction: str, mode: str, seed: int, collapse: bool) -> None:
    """What ``run_job`` leaves behind: result.json, test_sims.npz, metrics.jsonl and best.pt."""
    d = job_dir(root, direction, mode, seed)
    d.mkdir(parents=True)
    test = {m: 50.0 for m in METRICS} | {"rsum": RSUM[mode] + seed}
    (d / "result.json").write_text(
        json.dumps({"direction": direction, "mode": mode, "seed": seed, "test": test})
    )
    rng = np.random.default_rng(seed)
    np.savez_compressed(d / "test_sims.npz", rng.random((4, 20)), rng.random((4, 20)))
    dev = [100.0 + 50 * e for e in range(8)]
    if collapse:  # falls after the switch to hardest negatives (end of epoch 5)
        dev[5:] = [300.0, 250.0, 200.0]
    with (d / "metrics.jsonl").open("w") as fh:
        for epoch, rsum in enumerate(dev, 1):
            fh.write(json.dumps({"epoch": epoch, "dev_rsum": rsum, "train_loss": 12.8}) + "\n")
    torch.save({"model": {}, "git_commit": "abc123"}, d / "best.pt")


def test_report_from_finished_runs(tmp_path: Path) -> None:
    root, out = tmp_path / "runs", tmp_path / "results"
    for direction in DIRECTIONS:
        for mode in MODES:
            for seed in (0, 1):
                fake_run(root, direction, mode, seed, collapse=(mode == "rar" and seed == 1))
    path = write_report(root, [0, 1], quick=False, wall=60.0, out_dir=out)
    text = Path(path).read_text()
    assert "| t2i +RCAR | 50.0 ± 0.0 |" in text and "430.5 ± 0.7" in text  # mean ± std over the 2 seeds
    assert "On this data it **did not fully hold**" in text  # RAR is below the baseline
    assert "+RAR 2 of 4" in text and "+RCR 0 of 4" in text  # the runs that fell after the switch
    assert text.count("| i2t +RAR | 1 |") == 1  # every run has a training-notes row
    assert "trained at commit `abc123`" in text
    for png in ("rsum.png", "dev_rsum.png", "train_loss.png"):
        assert (out / png).stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trained_at_commits"] == ["abc123"] and metrics["seeds"] == [0, 1]
