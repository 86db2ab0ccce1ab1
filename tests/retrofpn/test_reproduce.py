"""The reproduction report from fake finished runs: tables (mean ± std in percent), the per-backbone verdicts
(better / worse, within or outside the seed noise), the REAL LiDAR section, the paper's numbers, plots; the
same report rebuilt from metrics.json alone; QUICK writes nothing under results/; the room pictures."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from retrofpn import reproduce
from retrofpn.data import S3DIS_CLASSES
from retrofpn.render import render_room, room_miou
from shared.checkpoint import git_commit, save_checkpoint

LIDAR_CLASSES = ["ground", "low_vegetation", "medium_vegetation", "high_vegetation", "building"]
SIZES = {"rooms": 60, "areas": 6, "points": 2_700_000, "test_rooms": 10, "test_points": 400_000,
         "lidar_train_tiles": 12, "lidar_test_tiles": 3, "lidar_points": 25_408, "lidar_ignored": 25}  # fmt: skip
# test mIoU per (backbone, variant) and seed: PT gains clearly, PTv2 within noise, MinkUNet loses
MIOU = {
    "pt_base": [0.40, 0.41, 0.42], "pt_retro": [0.50, 0.51, 0.52],
    "ptv2_base": [0.40, 0.45, 0.50], "ptv2_retro": [0.42, 0.47, 0.52],
    "minkunet_base": [0.60, 0.61, 0.62], "minkunet_retro": [0.50, 0.51, 0.52],
}  # fmt: skip


def fake_run(key: str, seed: int, miou: float, classes: list[str], group: str = "indoor") -> dict:
    iou = {c: min(1.0, miou + 0.02 * (i - len(classes) / 2)) for i, c in enumerate(classes)}
    test = {"miou": miou, "macc": miou + 0.1, "oa": 0.8 + seed * 0.01, "iou": iou, "points": 1000}
    curve = [
        {"epoch": e, "step": 10 * e, "loss": 3.0 - e, "val_miou": miou - 0.1 / e, "lr": 0.1} for e in (1, 2)
    ]
    backbone, variant = key.split("_")
    return {"backbone": backbone, "retro": variant == "retro", "seed": seed, "params": 1234, "epochs": 2,
            "best_epoch": 2, "val_miou": miou, "train_time_s": 10.0 + seed, "val_time_s": 1.0,
            "test_time_s": 2.0, "test": test, "curve": curve, "run_folder": f"{group}_{key}_seed{seed}"}  # fmt: skip


def fake_results(seeds=(0, 1, 2)) -> dict:
    indoor = {k: [fake_run(k, s, v[s], list(S3DIS_CLASSES)) for s in seeds] for k, v in MIOU.items()}
    lidar = {k: [fake_run(k, 0, v[0] - 0.1, LIDAR_CLASSES, "lidar")] for k, v in MIOU.items()}
    return {"indoor": indoor, "lidar": lidar}


def metrics_of(tmp_path: Path, quick: bool = False, seeds=(0, 1, 2)) -> dict:
    args = argparse.Namespace(quick=quick, jobs=2, threads=1)
    budget = {**(reproduce.QUICK if quick else reproduce.FULL), "seeds": list(seeds)}
    load = {"start": [0.5, 0.4, 0.3], "end": [1.9, 1.5, 1.0]}
    return reproduce.collect_metrics(args, budget, SIZES, fake_results(seeds), 1500.0, tmp_path, load)


def section(text: str, heading: str) -> str:
    return text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


def table_rows(text: str, heading: str) -> dict[str, list[str]]:
    rows = [ln.strip("|").split(" | ") for ln in section(text, heading).splitlines() if ln.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_report_tables_verdicts_and_plots(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "BENCH_JSON", tmp_path / "no_bench.json")
    out = tmp_path / "results"
    path = reproduce.write_report(metrics_of(tmp_path), out)
    text = path.read_text()
    rows = table_rows(text, "Results on the SYNTHETIC test rooms")
    assert rows["PT + Retro-FPN"][:3] == ["51.0 ± 1.0", "61.0 ± 1.0", "81.0 ± 1.0"]
    assert rows["PTv2"][0] == "45.0 ± 5.0" and rows["MinkUNet"][3] == "1234"
    claims = section(text, "Did the paper's claim hold here?")
    pt, ptv2, mink = (next(ln for ln in claims.splitlines() if ln.startswith(f"- **{name}**"))
                      for name in ("Point Transformer", "Point Transformer V2", "MinkUNet18A"))  # fmt: skip
    assert "better by +10.0" in pt and "outside the seed noise" in pt and "**held**" in pt
    assert "better by +2.0" in ptv2 and "within the seed noise" in ptv2 and "**did not hold**" in ptv2
    assert "worse by -10.0" in mink and "**did not hold**" in mink
    assert "Retro-FPN 50.0, 51.0, 52.0; without 40.0, 41.0, 42.0" in pt  # the per-seed values
    per_class = table_rows(text, "Per-class IoU on the SYNTHETIC test rooms")
    assert set(per_class) == set(S3DIS_CLASSES) and len(per_class["chair"]) == 6
    assert "not saturated" in section(text, "Per-class IoU on the SYNTHETIC test rooms")
    lidar = section(text, "REAL LiDAR check")
    assert "laspy==2.7.0" in lidar and "1 seed" in lidar and "one seed: not a significance test" in lidar
    assert "25,408 points" in lidar and "the 25 low-noise points ignored" in lidar
    assert table_rows(text, "REAL LiDAR check")["PT + Retro-FPN"][0] == "40.0"  # one seed: no ±
    paper = table_rows(text, "The paper's numbers")
    assert paper["PT + Retro-FPN (Retro-FPN official code, pretrained model)"][1:] == ["73.0", "79.1", "91.8"]
    assert "74.0" in paper["Retro-FPN, backbone unspecified (third-party table)"]
    assert "was not available" in text and "SYNTHETIC" in text and "not S3DIS" in text
    assert "Load average (1, 5, 15 min)**: start: 0.50, 0.40, 0.30; end: 1.90, 1.50, 1.00" in text
    assert "make bench-retrofpn" in section(text, "Benchmark")
    for name in ("per_class_iou_pt.png", "per_class_iou_ptv2.png", "per_class_iou_minkunet.png",
                 "val_miou.png", "train_loss.png", "metrics.json"):  # fmt: skip
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert "curve" not in saved["runs"]["indoor"]["pt_base"][0]
    assert saved["curves"]["indoor"]["pt_retro"][1][1]["val_miou"] == pytest.approx(0.51 - 0.05)
    assert reproduce.headline(saved)["PT + Retro-FPN"] == "51.0 ± 1.0"


def test_every_model_saturating_is_said_plainly(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "BENCH_JSON", tmp_path / "no_bench.json")
    metrics = metrics_of(tmp_path)
    for runs in metrics["runs"]["indoor"].values():
        for r in runs:
            r["test"]["miou"] = 0.95
    text = reproduce.write_report(metrics, tmp_path / "out").read_text()
    assert "Every model saturates these rooms" in text


def test_report_is_rebuilt_from_metrics_json_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "BENCH_JSON", tmp_path / "no_bench.json")
    first = reproduce.write_report(metrics_of(tmp_path), tmp_path / "a")
    copy = tmp_path / "b" / "metrics.json"
    copy.parent.mkdir()
    copy.write_text((tmp_path / "a" / "metrics.json").read_text())
    reproduce.main(["--from-metrics", str(copy)])
    assert (tmp_path / "b" / "report.md").read_text() == first.read_text()
    assert (tmp_path / "b" / "val_miou.png").is_file()


def test_quick_reproduce_writes_nothing_under_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(reproduce, "ensure_data", lambda: SIZES)
    root = tmp_path / "runs" / "retrofpn" / "reproduce-quick" / "finished"
    results = fake_results(seeds=(0,))
    for runs in results.values():  # finished runs: summary.json and metrics.jsonl, as train writes them
        for (summary,) in runs.values():
            folder = root / summary.pop("run_folder")
            folder.mkdir(parents=True)
            curve = summary.pop("curve")
            (folder / "summary.json").write_text(json.dumps(summary))
            (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve))
    best = root / "indoor_pt_retro_seed0"
    save_checkpoint(best, model=torch.nn.Linear(1, 1), paper="retrofpn", epoch=2, step=2, is_best=True)
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("retrofpn.reproduce").addHandler(handler)
    try:
        reproduce.main(["--quick", "--reuse", str(root)])
    finally:
        logging.getLogger("retrofpn.reproduce").removeHandler(handler)
    assert not (tmp_path / "results").exists()
    out = tmp_path / "runs" / "retrofpn" / "quick"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "quick" and metrics["command"] == "make reproduce-retrofpn QUICK=1"
    assert metrics["trained_at"] == git_commit() and metrics["seeds"] == [0]
    assert (
        metrics["setups"]["indoor_pt"]["epochs"] == 2
        and metrics["setups"]["indoor_pt"]["max_steps_per_epoch"] == 12
    )
    text = (out / "report.md").read_text()
    assert "QUICK" in text and table_rows(text, "Results on the SYNTHETIC test rooms")["PT"][0] == "40.0"
    assert "No pictures" in text  # the fake runs kept no predictions
    done = [ln for ln in lines if " runs done " in ln]
    assert len(done) == 12 and done[-1].startswith("12 of 12 runs done")


def test_room_picture(tmp_path):
    rng = np.random.default_rng(0)
    coord = rng.random((3000, 3)) * [4.0, 3.0, 2.5]
    truth = rng.integers(0, 13, 3000)
    pred = truth.copy()
    pred[:1500] = 1
    png = render_room(
        coord, truth, [("PT", pred), ("PT + Retro-FPN", truth)], list(S3DIS_CLASSES), tmp_path / "r.png"
    )
    assert png.stat().st_size > 10_000
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[1] > 1000  # three panels side by side
    assert room_miou(truth, truth, 13) == 1.0 and room_miou(truth, pred, 13) < 1.0
    with pytest.raises(Exception, match="have 10 labels but the room has 3000 points"):
        render_room(coord, truth, [("PT", pred[:10])], list(S3DIS_CLASSES), tmp_path / "bad.png")
