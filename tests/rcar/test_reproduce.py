"""rcar.reproduce and rcar.report: metrics.json from finished runs of three schedules, the report written from
it alone (tables, the claim per schedule, every run's training notes with collapse flags, diagnostics plots,
provenance), regenerated without the run folders, the legacy one-schedule metrics.json, QUICK kept out of
results/, and the run plan (controls first, branches a subset of their seeds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rcar import report, reproduce
from rcar.evaluate import ensemble, evaluate_sims
from rcar.report import DIRECTIONS, METRICS, MODES, SCHEDULES, claim_check, write_report
from rcar.reproduce import collect, job_dir
from shared.errors import ConfigError, run_cli

RSUM = {"baseline": 400.0, "rcr": 420.0, "rar": 380.0, "rcar": 430.0}
PNG = b"\x89PNG\r\n\x1a\n"
PLAN = {"never": [0, 1], "after_warmup": [0, 1], "adaptive": [0]}


def fake_run(root: Path, direction: str, mode: str, schedule: str, seed: int, collapse: bool) -> None:
    """What ``rcar.train.train`` leaves in a reproduction job folder."""
    d = job_dir(root, direction, mode, schedule, seed)
    d.mkdir(parents=True)
    test = {m: 50.0 for m in METRICS} | {"rsum": RSUM[mode] + seed + (10.0 if schedule == "never" else 0.0)}
    (d / "test_metrics.json").write_text(json.dumps(test))
    switch = {"after_warmup": 6, "never": None, "adaptive": 7}[schedule]
    dev = [100.0 + 50 * e for e in range(8)]
    std = [0.2] * 8
    if collapse:  # falls after the switch to hardest negatives
        dev[5:], std[5:] = [300.0, 250.0, 200.0], [0.02, 0.004, 0.001]
    collapsed = [e + 1 for e, v in enumerate(std) if v < 0.01]
    summary = {"paper": "rcar", "test": test, "switch_epoch": switch, "collapsed_epochs": collapsed}
    (d / "summary.json").write_text(json.dumps(summary | {"hinge_below_margin_epoch": 6}))
    rng = np.random.default_rng([seed, len(mode), len(direction), len(schedule)])
    np.savez_compressed(d / "test_sims.npz", rng.random((4, 20)), rng.random((4, 20)))  # two folds
    with (d / "metrics.jsonl").open("w") as fh:
        for epoch, (rsum, spread) in enumerate(zip(dev, std), 1):
            rec = {"epoch": epoch, "step": 62 * epoch, "dev_rsum": rsum, "train_loss": 12.8, "dev_score_std": spread,
                   "hardest_negative": switch is not None and epoch >= switch, "held_hinge_mean": 0.3 - 0.02 * epoch,
                   "held_over_margin": 0.5, "head_weight_norm": 1.0 + epoch if mode in ("rar", "rcar") else None}  # fmt: skip
            fh.write(json.dumps(rec) + "\n")
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
    """The runs of PLAN; the official RAR runs of seed 1 collapse after the switch."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        report, "git_commit", lambda: "c0ffee"
    )  # the shared tree's state may change meanwhile
    fake_data(quick=False)
    root = tmp_path / "runs"
    for schedule, seeds in PLAN.items():
        for seed in seeds:
            for direction in DIRECTIONS:
                for mode in MODES:
                    collapse = schedule == "after_warmup" and mode == "rar" and seed == 1
                    fake_run(root, direction, mode, schedule, seed, collapse)
    return root


def test_report_from_finished_runs(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    metrics = collect(finished, PLAN, quick=False, wall=60.0)
    text = Path(write_report(metrics, out)).read_text()
    assert "| official | t2i +RCAR | 50.0 ± 0.0 |" in text and "430.5 ± 0.7" in text  # mean ± std, 2 seeds
    assert "| all negatives | t2i +RCAR |" in text and "440.5 ± 0.7" in text
    assert "| adaptive | t2i +RCAR | 50.0 |" in text  # one seed: no std
    # the claim per schedule: RAR is below the baseline everywhere
    assert text.count("the claim **did not fully hold**") == 3
    assert "| t2i | +RAR > baseline | -20.0 | 0.7 | did not hold (outside seed noise) |" in text
    assert "| t2i | +RCR > baseline | +20.0 | — | held (one seed: not tested against seed noise) |" in text
    # training notes: every run, the collapsed ones flagged with their epochs
    assert "official: 4 of 16 collapsed" not in text and "official: 2 of 16 collapsed" in text
    assert "all negatives: 0 of 16 collapsed" in text and "adaptive: 0 of 8 collapsed" in text
    assert (
        "| official | i2t +RAR | 1 | 6 | 300.0 | 200.0 | 300.0 | 5 | 0.0010 | **collapsed** (epochs 7, 8) |"
        in text
    )
    assert "| all negatives | t2i +RCR | 0 | none | — | 450.0 | 450.0 | 8 | 0.2000 | no |" in text
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
    stems = ("dev_rsum", "score_std", "hinge", "over_margin", "head_norm")
    assert pngs == sorted(
        ["rsum_t2i.png", "rsum_i2t.png", *(f"{s}_{sch}.png" for s in stems for sch in SCHEDULES)]
    )
    for name in pngs:
        assert (out / name).read_bytes()[:8] == PNG and f"]({name})" in text
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["trained_at_commits"] == ["abc123"] and saved["plan"] == PLAN
    assert saved["results"]["t2i_rcar_after_warmup"]["rsum"] == [430.0, 431.0]
    assert saved["runs"]["i2t_rar_after_warmup_s1"]["notes"] == {
        "switch_epoch": 6,
        "dev_rsum_before_switch": 300.0,
        "dev_rsum_last": 200.0,
        "best_dev_rsum": 300.0,
        "best_epoch": 5,
        "min_dev_score_std": 0.001,
        "collapsed_epochs": [7, 8],
        "train_loss_last": 12.8,
    }
    assert saved["runs"]["t2i_rar_never_s0"]["curve"]["head_weight_norm"][0] == 2.0
    for schedule, seeds in PLAN.items():  # the ensemble: the mean of the two RCAR models' fold matrices
        for i, seed in enumerate(seeds):
            a = np.load(job_dir(finished, "t2i", "rcar", schedule, seed) / "test_sims.npz")
            b = np.load(job_dir(finished, "i2t", "rcar", schedule, seed) / "test_sims.npz")
            expected = evaluate_sims(ensemble([a[k] for k in a.files], [b[k] for k in b.files]))
            assert saved["results"][f"ensemble_{schedule}"]["rsum"][i] == pytest.approx(expected["rsum"])


def test_switch_lines_count_the_runs_unless_all_share_the_epoch() -> None:
    runs = {"a": {"notes": {"switch_epoch": 6}}, "b": {"notes": {"switch_epoch": 6}}}
    assert report.switch_lines({}, "after_warmup", runs) == [(5.5, "hardest negatives from epoch 6")]
    runs["b"]["notes"]["switch_epoch"], runs["c"] = 4, {"notes": {"switch_epoch": None}}
    assert report.switch_lines({}, "adaptive", runs) == [
        (3.5, "hardest negatives: 1/3 runs from epoch 4"),
        (5.5, "1/3 runs from epoch 6"),
    ]


def test_report_regenerates_from_metrics_json_alone(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    first = Path(write_report(collect(finished, PLAN, quick=False, wall=60.0), out)).read_text()
    shutil.rmtree(finished)  # the run folders are not in git
    (out / "rsum_t2i.png").unlink()
    reproduce.main(["--from-metrics", str(out / "metrics.json")])
    assert (out / "report.md").read_text() == first
    assert (out / "rsum_t2i.png").read_bytes()[:8] == PNG


def test_a_one_schedule_metrics_json_still_gives_the_report(finished: Path, tmp_path: Path) -> None:
    """The layout written before the schedules (runs ``<d>_<m>_s<seed>``, no diagnostics): the official rows."""
    m = collect(finished, {"after_warmup": [0, 1]}, quick=False, wall=60.0)
    legacy = {**m, "seeds": [0, 1], "results": {}, "runs": {}}
    del legacy["plan"]
    for key, run in m["runs"].items():
        (d, mode, *_), seed = key.split("_"), key.rsplit("_", 1)[1]
        n = run["notes"]
        legacy["runs"][f"{d}_{mode}_{seed}"] = {
            "direction": d, "mode": mode, "seed": int(seed[1:]), "test": run["test"], "git_commit": "abc123",
            "notes": {"dev_rsum_end_of_warmup": n["dev_rsum_before_switch"], "dev_rsum_last": n["dev_rsum_last"],
                      "best_dev_rsum": n["best_dev_rsum"], "best_epoch": n["best_epoch"], "train_loss_last": 12.8},
        }  # fmt: skip
    for key, value in m["results"].items():
        legacy["results"][key.removesuffix("_after_warmup").replace("ensemble_after_warmup", "ensemble")] = (
            value
        )
    text = Path(write_report(legacy, tmp_path / "old")).read_text()
    assert "| official | i2t +RAR | 1 | 6 | 300.0 | 200.0 | 300.0 | 5 | — | ? |" in text
    assert "the next `make reproduce-rcar` draws them" in text
    assert sorted(p.name for p in (tmp_path / "old").glob("*.png")) == ["rsum_i2t.png", "rsum_t2i.png"]


def test_quick_writes_under_runs_and_never_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    prepared, ran = [], []
    monkeypatch.setattr(
        reproduce.prepare, "main", lambda argv: (prepared.append(argv), fake_data(quick=True))
    )

    def fake_run_all(root: Path, plan: dict, quick: bool, workers: int, threads: int = 1) -> None:
        for direction, mode, schedule, seed in reproduce.plan_jobs(plan):
            ran.append((direction, mode, schedule, seed))
            fake_run(root, direction, mode, schedule, seed, collapse=False)

    monkeypatch.setattr(reproduce, "run_all", fake_run_all)
    reproduce.main(["--quick"])
    assert prepared == [["--quick"]]
    assert sorted(ran) == sorted((d, m, s, 0) for d in DIRECTIONS for m in MODES for s in SCHEDULES)
    assert [r[2] for r in ran[:8]] == ["never"] * 8  # the controls first: the branches start off them
    assert not (tmp_path / "results").exists()
    out = tmp_path / "runs" / "rcar" / "quick" / "report.md"
    assert "**QUICK run**" in out.read_text()
    saved = json.loads((out.parent / "metrics.json").read_text())
    assert saved["quick"] is True and saved["data"]["root"] == reproduce.QUICK_DATA
    assert saved["data"]["n_images"] == {"train": 2000, "dev": 100, "test": 200}
    assert saved["schedule"]["epochs"] == 4 and saved["config"]["data"]["root"] == reproduce.QUICK_DATA
    assert (tmp_path / "runs" / "rcar" / "reproduce_quick" / "wall_time_s.txt").is_file()


def test_branch_seeds_must_be_control_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli(reproduce.main, ["--seeds", "0", "1", "--branch-seeds", "2"]) == 2
    assert "--branch-seeds [2] must be a subset of --seeds [0, 1]" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        reproduce.main(["--jobs", "0"])


def test_bar_axes_start_at_a_round_value_below_every_bar() -> None:
    assert report.bar_floor([311.3, 440.0]) == 250.0  # 311 - 12.5 -> 250
    assert report.bar_floor([402.0]) == 350.0
    assert report.bar_floor([30.0]) == 0.0


def test_claim_check_per_schedule_on_hand_made_results() -> None:
    def metrics(t2i: dict[str, list[float]], i2t: dict[str, list[float]]) -> dict:
        results = {f"t2i_{m}_never": {"rsum": v} for m, v in t2i.items()}
        results |= {f"i2t_{m}_never": {"rsum": v} for m, v in i2t.items()}
        return {"plan": {"never": list(range(len(t2i["baseline"])))}, "results": results}

    good = {"baseline": [300.0, 302.0], "rcr": [310.0, 312.0], "rar": [305.0, 309.0], "rcar": [320.0, 322.0]}
    rows, summary = claim_check(metrics(good, good), "never")
    assert summary == "held in both directions" and all("held (outside seed noise)" == r[4] for r in rows)
    bad = dict(good, rar=[290.0, 292.0])  # RAR below the baseline in i2t
    rows, summary = claim_check(metrics(good, bad), "never")
    assert summary == "did not fully hold"
    assert ["i2t", "+RAR > baseline", "-10.0", "1.4", "did not hold (outside seed noise)"] in rows
    assert ["t2i", "+RAR > baseline", "+6.0", "2.8", "held (outside seed noise)"] in rows  # std of [305, 309]
    close = dict(good, rcr=[299.0, 305.0])  # mean 302 vs 301: above the baseline by less than a std
    rows, summary = claim_check(metrics(close, good), "never")
    assert summary.startswith("held on the means")
    assert ["t2i", "+RCR > baseline", "+1.0", "4.2", "held (within seed noise)"] in rows
    one_seed = {m: v[:1] for m, v in good.items()}
    rows, _ = claim_check(metrics(one_seed, one_seed), "never")
    assert all("one seed: not tested against seed noise" in r[4] for r in rows)


def test_the_report_commit_is_read_before_its_files_change_the_tree(
    finished: Path, tmp_path: Path, monkeypatch
) -> None:
    out, seen = tmp_path / "results", []
    monkeypatch.setattr(report, "git_commit", lambda: (seen.append(out.exists()), "abc123")[1])
    text = Path(write_report(collect(finished, PLAN, quick=False, wall=60.0), out)).read_text()
    assert seen == [False] and "**Report written at commit**: `abc123`" in text
