"""The GEM study's plan (jobs, dependencies, commands), the report from fake finished runs (tables, DSI / GG /
CDTR / forgetting numbers, verdicts, plots), the same report rebuilt from metrics.json alone, and QUICK writing
nothing under results/."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from gem import report, reproduce
from gem.config import GemConfig
from gem.data import load_suite
from gem.model import dense_equal_active_compute
from shared.config import config_from_dict
from shared.errors import run_cli
from tests.gem.train_helpers import build_tiny_suite, tiny_config, write_config

TRAINING = ["healthcare", "law", "finance", "stem", "commonsense", "conversational", "multilingual"]
DOMAINS = [*TRAINING, "domain_adaptive"]
TARGET_DROP = {"int8": 0.02, "prune:0.3": 0.01, "prune:0.5": 0.05, "prune:0.7": 0.15, "prune:0.9": 0.4,
               "int8+prune:0.5": 0.08}  # fmt: skip


@pytest.fixture(scope="module")
def suite_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("suite")
    return root, build_tiny_suite(root, quick=True)


def base_config(data: dict, tmp: Path) -> GemConfig:
    return config_from_dict(GemConfig, tiny_config(data, tmp / "runs"))


def scores(f1: dict[str, float], ppl: dict[str, float], routed: bool = False, mc: bool = False) -> dict:
    test = {"ppl": ppl, "domain_f1": f1, "f1": {}, "active_params": {d: 1000.0 for d in DOMAINS},
            "domain_mc_accuracy": {"healthcare": 0.3} if mc else {}}  # fmt: skip
    if routed:
        test["mean_k"] = {d: 1.5 for d in DOMAINS}
        test["router_utilisation"] = {d: [[0.4, 0.3, 0.2, 0.1]] * 2 for d in DOMAINS}
    return test


def fake_record(study: reproduce.Study, key: str, seed: int) -> dict:
    """Known numbers: the generalist 0.5 F1 / PPL 100 everywhere; a specialist +0.1 F1 and -20 % PPL on its
    target, -0.05 F1 and +10 % PPL elsewhere; with distillation -0.02 F1 elsewhere; SCAR-GEM 0.52 F1; a
    compressed variant loses a known share of its base's F1. A seed adds 0.001 * seed to every F1."""
    info, eps = study.models[key], 0.001 * seed
    f1 = {d: 0.5 + eps for d in DOMAINS}
    ppl = {d: 100.0 for d in DOMAINS}
    group = info["group"]
    if key in ("scar", "moe"):
        f1 = {d: 0.52 + eps for d in DOMAINS}
    elif group in ("specialist", "distilled"):
        t = info["target"]
        f1 = {d: (0.6 if d == t else (0.45 if group == "specialist" else 0.48)) + eps for d in DOMAINS}
        ppl = {d: 80.0 if d == t else 110.0 for d in DOMAINS}
    elif group == "compressed":
        base = 0.52 if info["base"] == "scar" else 0.5
        f1 = {d: (base + eps) * (1 - TARGET_DROP[info["compress"]]) for d in DOMAINS}
    elif group == "architecture":
        f1 = {d: (0.52 + eps) * (1 - info["intensity"] / 2) for d in DOMAINS}
    test = scores(f1, ppl, routed=key in ("scar", "moe", "narrow", "shallow"), mc=group == "generalist")
    record = {"seed": seed, "params": 5000, "active_params": 1000.0, "train_time_s": 10.0 + seed,
              "best_epoch": 2, "steps": 100, "test": test}  # fmt: skip
    if group == "compressed":
        record["compression"] = {"name": info["compress"], "intensity": 0.1 + TARGET_DROP[info["compress"]],
                                 "sparsity": 0.5, "int8": "int8" in info["compress"]}  # fmt: skip
    return record


def fake_metrics(data: dict, tmp: Path, budget: reproduce.Budget = reproduce.FULL) -> dict:
    cfg = base_config(data, tmp)
    study = reproduce.plan_study(budget, cfg, TRAINING, "domain_adaptive")
    results = {(j.key, j.seed): fake_record(study, j.key, j.seed) for j in study.jobs}
    args = argparse.Namespace(jobs=2, threads=1)
    machine = {"load_average_1_5_15": [0.3, 0.3, 0.3], "cores": 2}
    latency = {"source": "test", "what": "eager", "rows": {"dense": 5.0, "scar": 7.0, "c:scar:int8": 4.0}}
    return reproduce.collect_metrics(study, results, args, tmp / "runs", 600.0, machine, latency)


def table_rows(text: str, heading: str) -> dict[str, list[str]]:
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [ln.strip("|").split(" | ") for ln in section.splitlines() if ln.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


# ------------------------------------------------------------------------------------------------ plan
def test_plan_has_every_row_of_the_study_with_its_dependencies(suite_root, tmp_path: Path):
    _, data = suite_root
    study = reproduce.plan_study(reproduce.FULL, base_config(data, tmp_path), TRAINING, "domain_adaptive")
    jobs = {(j.key, j.seed): j for j in study.jobs}
    assert len(jobs) == len(study.jobs)
    groups = {g: sorted({k for k, _ in jobs if study.models[k]["group"] == g}) for g in
              ("generalist", "specialist", "distilled", "adaptation", "architecture", "compressed")}  # fmt: skip
    assert groups["generalist"] == ["dense", "moe", "scar"] and groups["architecture"] == [
        "narrow",
        "shallow",
    ]
    assert len(groups["specialist"]) == len(groups["distilled"]) == 7 and len(groups["compressed"]) == 12
    for s in (0, 1, 2):
        assert jobs[("dense", s)].deps == (("scar", s),) and jobs[("spec:law", s)].deps == (("dense", s),)
        assert jobs[("kd:stem", s)].deps == (("dense", s),) and jobs[("adapt:scar", s)].deps == (("scar", s),)
    assert ("moe", 1) not in jobs and ("c:scar:int8", 0) in jobs and ("c:scar:int8", 1) not in jobs
    assert study.models["narrow"]["overrides"] == ["model.d_model=16", "model.d_ff=24"]  # tiny: 32 -> 16


def test_job_commands_carry_the_study_settings(suite_root, tmp_path: Path):
    _, data = suite_root
    cfg = base_config(data, tmp_path)
    study = reproduce.plan_study(reproduce.FULL, cfg, TRAINING, "domain_adaptive")
    results = {("scar", 1): {"test": {"mean_k": {d: 1.25 + 0.1 * (d == "law") for d in DOMAINS}}}}
    root = tmp_path / "r"

    def argv(key: str) -> str:
        return " ".join(reproduce.job_command(reproduce.Job(key, 1), study, results, root, "c.yaml"))

    k = float(np.mean([1.25 + 0.1 * (d == "law") for d in TRAINING]))
    d_ff = dense_equal_active_compute(dataclasses.replace(cfg.model, ffn="scar"), k).d_ff
    assert f"--set model.ffn=dense --set model.d_ff={d_ff}" in argv("dense") and "train.seed=1" in argv(
        "dense"
    )
    kd = argv("kd:law")
    assert f"train.init_from={root / 'dense_seed1' / 'best.pt'}" in kd and "train.domains=[law]" in kd
    assert "distill.alpha=0.7" in kd and f"model.d_ff={d_ff}" in kd and "eval.val_domains=trained" in kd
    assert "distill.alpha" not in argv("spec:law") and "train.epochs=2 --set train.steps_per_epoch=15" in kd
    c = argv("c:scar:int8+prune:0.5")
    assert "-m gem.evaluate" in c and "--compress int8+prune:0.5" in c and str(root / "scar_seed1") in c
    assert "train.domains=[domain_adaptive]" in argv("adapt:scar") and "model.ffn=scar" in argv("adapt:scar")


# ---------------------------------------------------------------------------------------------- report
def test_specialisation_numbers_and_verdicts(suite_root, tmp_path: Path):
    _, data = suite_root
    metrics = fake_metrics(data, tmp_path)
    rows = report.specialisation_rows(metrics)
    law = {c: v[0] for c, v in rows["spec:law"].items()}  # seed 0: F1 0.5 everywhere for the generalist
    assert law["dsi_f1"] == pytest.approx(0.2) and law["dsi_ppl"] == pytest.approx(0.2)
    assert law["gg"] == pytest.approx(0.15) and law["forgetting_f1"] == pytest.approx(0.05)
    assert law["cdtr"] == pytest.approx(-0.5) and law["f1_cost_pct"] == pytest.approx(10.0)
    assert law["forgetting_ppl"] == pytest.approx(0.1)
    assert rows["kd:law"]["forgetting_f1"][0] == pytest.approx(0.02)
    claims = {c["claim"].split(" (")[0]: c for c in report.claims(metrics)}
    ppl = claims["Specialisation lowers target-domain perplexity"]
    assert (
        ppl["verdict"] == "held"
        and "20.0 ± 0.0 %" in ppl["ours"]
        and "inside the paper's 18-25 %" in ppl["ours"]
    )
    cost = claims["Specialisation costs general-task F1"]
    assert cost["verdict"] == "held" and "below the paper's 12-29 %" in cost["ours"]
    kd = claims["Distillation reduces forgetting"]
    assert kd["verdict"] == "held" and "R = 60.0 ± 0.0 %" in kd["ours"]
    gem_claim = claims[
        "GEM keeps general F1 near the generalist while matching the specialists on their domains"
    ]
    assert gem_claim["verdict"] == "did not hold"  # 0.52 on each target vs the specialists' 0.6
    corr = claims["Compression intensity correlates with brittleness"]
    assert corr["verdict"] == "held" and "n = 14 variants" in corr["ours"]


def test_verdicts_against_the_seed_spread():
    assert report.verdict([0.2, 0.21, 0.19]) == ("held", "beyond 2σ = 0.0200 over 3 seeds")
    assert report.verdict([-0.2, -0.21, -0.19])[0] == "did not hold"
    assert report.verdict([0.01, -0.02, 0.02])[0] == "inconclusive"
    assert report.verdict([0.3]) == ("held", "one seed: not a significance test")
    assert report.verdict([0.0])[0] == "inconclusive" and report.verdict([float("nan")])[0] == "inconclusive"


def test_report_tables_plots_and_rebuild_from_metrics_json(suite_root, tmp_path: Path, monkeypatch):
    _, data = suite_root
    metrics = fake_metrics(data, tmp_path)
    out = tmp_path / "results"
    seen, block = [], report.provenance_block
    # the commit is read before the report's own files change the tree (else it would always be "-dirty")
    monkeypatch.setattr(
        report, "provenance_block", lambda *a, **k: (seen.append(out.exists()), block(*a, **k))[1]
    )
    text = report.write_report(metrics, out).read_text()
    assert seen == [False]
    f1 = table_rows(text, "Test macro F1 per domain")
    assert f1["dense generalist (equal active compute)"][:2] == ["0.501 ± 0.001", "0.501 ± 0.001"]
    assert f1["specialist: law"][1] == "0.601 ± 0.001" and f1["SCAR-GEM"][0] == "0.521 ± 0.001"
    assert f1["softmax top-2 MoE"][0] == "0.520"  # one seed: no ±
    spec = table_rows(text, "Specialisation: DSI, GG, CDTR and forgetting (ours)")
    assert spec["specialist: law"][:2] == ["0.200 ± 0.000", "0.200 ± 0.000"]
    models = table_rows(text, "Models")
    assert models["SCAR-GEM"][3] == "0, 1, 2" and models["softmax top-2 MoE"][3] == "0"
    for name in ("f1_per_domain.png", "compression_brittleness.png", "router_utilisation.png",
                 "latency_vs_f1.png", "metrics.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert "| **held** |" in text and "REAL text" in text and "finance LM text is ~10k tokens" in text
    copy = tmp_path / "b" / "metrics.json"
    copy.parent.mkdir()
    copy.write_text((out / "metrics.json").read_text())
    reproduce.main(["--from-metrics", str(copy)])
    assert (tmp_path / "b" / "report.md").read_text() == text


def test_quick_reproduce_writes_nothing_under_results(suite_root, tmp_path: Path, monkeypatch):
    _, data = suite_root
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(reproduce, "ensure_data", lambda cfg: None)
    cfg_path = write_config(tmp_path / "cfg.yaml", tiny_config(data, tmp_path / "runs"))
    cfg = config_from_dict(GemConfig, tiny_config(data, tmp_path / "runs") | {"data": data | {"quick": True}})
    suite = load_suite(cfg.data)
    study = reproduce.plan_study(reproduce.QUICK, cfg, suite.training_domains, suite.held_out_domain)
    finished = tmp_path / "runs" / "gem" / "reproduce-quick" / "done"
    for job in study.jobs:  # finished runs, as gem.train / gem.evaluate write them
        run = finished / job.name
        run.mkdir(parents=True)
        record = fake_record(study, job.key, job.seed)
        (run / "test_metrics.json").write_text(
            json.dumps({**record["test"], "compression": record.get("compression")})
        )
        summary = {k: record[k] for k in ("params", "active_params", "train_time_s", "best_epoch", "steps")}
        (run / "summary.json").write_text(json.dumps(summary))
    monkeypatch.setattr(
        reproduce, "measure_latency", lambda *a: {"source": "test", "what": "eager", "rows": {}}
    )
    reproduce.main(["--quick", "--seeds", "0", "--config", str(cfg_path), "--reuse", str(finished)])
    assert not (tmp_path / "results").exists()
    out = tmp_path / "runs" / "gem" / "quick"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "quick" and metrics["command"] == "make reproduce-gem QUICK=1"
    assert sorted(k for k in metrics["runs"] if k.startswith("spec:")) == [
        "spec:healthcare", "spec:law", "spec:multilingual"]  # fmt: skip
    assert "QUICK" in (out / "report.md").read_text()
    assert run_cli(reproduce.main, ["--quick", "--seeds", "0,x", "--config", str(cfg_path)]) == 2
