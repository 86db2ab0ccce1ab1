"""rcar.reproduce: metrics.json from finished runs, the report written from it alone (tables, claim check,
every run's training notes, plots, provenance), regenerated without the run folders, QUICK kept out of results/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rcar import reproduce
from rcar.evaluate import ensemble, evaluate_sims
from rcar.reproduce import DIRECTIONS, METRICS, MODES, claim_check, collect, job_dir, write_report

RSUM = {"baseline": 400.0, "rcr": 420.0, "rar": 380.0, "rcar": 430.0}
PNG = b"\x89PNG\r\n\x1a\n"


def fake_run(root: Path, direction: str, mode: str, seed: int, collapse: bool) -> None:
    """What ``rcar.train.train`` leaves in a reproduction job folder."""
    d = job_dir(root, direction, mode, seed)
    d.mkdir(parents=True)
    test = {m: 50.0 for m in METRICS} | {"rsum": RSUM[mode] + seed}
    (d / "test_metrics.json").write_text(json.dumps(test))
    (d / "summary.json").write_text(json.dumps({"paper": "rcar", "test": test}))
    rng = np.random.default_rng([seed, len(mode), len(direction)])
    np.savez_compressed(d / "test_sims.npz", rng.random((4, 20)), rng.random((4, 20)))  # two folds
    dev = [100.0 + 50 * e for e in range(8)]
    if collapse:  # falls after the switch to hardest negatives (end of epoch 5)
        dev[5:] = [300.0, 250.0, 200.0]
    with (d / "metrics.jsonl").open("w") as fh:
        for epoch, rsum in enumerate(dev, 1):
            fh.write(
                json.dumps({"epoch": epoch, "step": 62 * epoch, "dev_rsum": rsum, "train_loss": 12.8}) + "\n"
            )
    torch.save({"model": {}, "git_commit": "abc123"}, d / "best.pt")


def fake_data(quick: bool) -> None:
    """The ``prepare_info.json`` of the data folder the runs read (relative to the working directory)."""
    root = Path(reproduce.QUICK_DATA if quick else "data/rcar/mnist_scenes_precomp")
    root.mkdir(parents=True)
    sizes = {"train": 2000, "dev": 100, "test": 200} if quick else {"train": 15000, "dev": 1000, "test": 1000}
    info = {"n_images": sizes, "region_encoder": {"digit_acc": 0.957, "colour_acc": 1.0, "size_acc": 0.999}}
    (root / "prepare_info.json").write_text(json.dumps(info))


@pytest.fixture()
def finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two seeds of every variant; the RAR runs of seed 1 collapse after the switch."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(reproduce, "git_commit", lambda: "c0ffee")  # the shared tree's state may change meanwhile
    fake_data(quick=False)
    root = tmp_path / "runs"
    for direction in DIRECTIONS:
        for mode in MODES:
            for seed in (0, 1):
                fake_run(root, direction, mode, seed, collapse=(mode == "rar" and seed == 1))
    return root


def test_report_from_finished_runs(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    metrics = collect(finished, [0, 1], quick=False, wall=60.0)
    text = Path(write_report(metrics, out)).read_text()
    assert "| t2i +RCAR | 50.0 ± 0.0 |" in text and "430.5 ± 0.7" in text  # mean ± std over the 2 seeds
    assert "On this data it **did not fully hold**" in text  # RAR is below the baseline
    assert "+RAR 2 of 4" in text and "+RCR 0 of 4" in text  # the runs that fell after the switch
    assert text.count("| i2t +RAR | 1 |") == 1  # every run has a training-notes row
    # its numbers: dev rsum at epoch 5 and 8, the best and its epoch (an integer), the last loss
    assert "| i2t +RAR | 1 | 300.0 | 200.0 | 300.0 | 5 | 12.8 |" in text
    assert "| t2i +RCR | 0 | 300.0 | 450.0 | 450.0 | 8 | 12.8 |" in text
    assert "trained at commit `abc123`" in text and "Report written at commit**: `c0ffee`" in text
    headings = [ln for ln in text.splitlines() if ln.startswith("## ")]
    assert [h.split(" (")[0] for h in headings] == [
        "## Test results",
        "## Did the paper's claim hold here?",
        "## Official README numbers, for reference only",
        "## Training notes",
        "## Plots",
        "## Provenance",
    ]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "after_switch_i2t.png",
        "after_switch_t2i.png",
        "dev_rsum.png",
        "rsum.png",
        "train_loss.png",
    ]
    for name in pngs:
        assert (out / name).read_bytes()[:8] == PNG and f"]({name})" in text
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["trained_at_commits"] == ["abc123"] and saved["seeds"] == [0, 1]
    assert saved["results"]["t2i_rcar"]["rsum"] == [430.0, 431.0]
    assert saved["runs"]["i2t_rar_s1"]["notes"] == {
        "dev_rsum_end_of_warmup": 300.0,
        "dev_rsum_last": 200.0,
        "best_dev_rsum": 300.0,
        "best_epoch": 5,
        "train_loss_last": 12.8,
    }
    for seed in (0, 1):  # the ensemble: the mean of the two RCAR models' fold matrices
        a = np.load(job_dir(finished, "t2i", "rcar", seed) / "test_sims.npz")
        b = np.load(job_dir(finished, "i2t", "rcar", seed) / "test_sims.npz")
        expected = evaluate_sims(ensemble([a[k] for k in a.files], [b[k] for k in b.files]))
        assert saved["results"]["ensemble"]["rsum"][seed] == pytest.approx(expected["rsum"])


def test_report_regenerates_from_metrics_json_alone(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    first = Path(write_report(collect(finished, [0, 1], quick=False, wall=60.0), out)).read_text()
    shutil.rmtree(finished)  # the run folders are not in git
    (out / "rsum.png").unlink()
    reproduce.main(["--report-only", "--out", str(out)])
    assert (out / "report.md").read_text() == first
    assert (out / "rsum.png").read_bytes()[:8] == PNG


def test_metrics_without_curves_still_give_the_report(finished: Path, tmp_path: Path) -> None:
    """A metrics.json written before the curves were kept: notes table and bar plots, no curve plots."""
    metrics = collect(finished, [0, 1], quick=False, wall=60.0)
    for run in metrics["runs"].values():
        del run["curve"]
    text = Path(write_report(metrics, tmp_path / "old")).read_text()
    pngs = sorted(p.name for p in (tmp_path / "old").glob("*.png"))
    assert pngs == ["after_switch_i2t.png", "after_switch_t2i.png", "rsum.png"]
    assert "| i2t +RAR | 1 | 300.0 | 200.0 | 300.0 | 5 | 12.8 |" in text and "curves" in text


def test_quick_writes_under_runs_and_never_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    prepared, ran = [], []
    monkeypatch.setattr(
        reproduce.prepare, "main", lambda argv: (prepared.append(argv), fake_data(quick=True))
    )

    def fake_run_all(root: Path, jobs: list, quick: bool, workers: int) -> None:
        ran.extend(jobs)
        for direction, mode, seed in jobs:
            fake_run(root, direction, mode, seed, collapse=False)

    monkeypatch.setattr(reproduce, "run_all", fake_run_all)
    reproduce.main(["--quick"])
    assert prepared == [["--quick"]] and sorted(ran) == sorted((d, m, 0) for d in DIRECTIONS for m in MODES)
    assert not (tmp_path / "results").exists()
    report = tmp_path / "runs" / "rcar" / "quick" / "report.md"
    text = report.read_text()
    assert "**QUICK run**" in text
    saved = json.loads((report.parent / "metrics.json").read_text())
    assert saved["quick"] is True and saved["data"]["root"] == reproduce.QUICK_DATA
    assert saved["data"]["n_images"] == {"train": 2000, "dev": 100, "test": 200}
    assert saved["schedule"]["epochs"] == 4 and saved["config"]["data"]["root"] == reproduce.QUICK_DATA
    assert (tmp_path / "runs" / "rcar" / "reproduce_quick" / "wall_time_s.txt").is_file()


def test_bar_axes_start_at_a_round_value_below_every_bar() -> None:
    assert reproduce.bar_floor([311.3, 440.0]) == 250.0  # 311 - 12.5 -> 250
    assert reproduce.bar_floor([402.0]) == 350.0
    assert reproduce.bar_floor([30.0]) == 0.0


def test_reproduce_claim_check_on_hand_made_results() -> None:
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
