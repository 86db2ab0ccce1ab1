"""The reproduction report from fake finished runs: tables (integers as integers), claims (held / did not
hold), plots, benchmark section; the same report rebuilt from metrics.json alone; QUICK writes under runs/."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from infnet import reproduce
from infnet.config import InfnetConfig
from shared.checkpoint import git_commit, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TASKS = ["click", "like"]


def fake_run(key: str, seed: int, base: float, best_epoch: int = 2) -> dict:
    test = {}
    for i, t in enumerate(TASKS):
        test[f"{t}_auc"] = base + 0.01 * i + 0.001 * seed
        test[f"{t}_gauc"] = base - 0.05
        test[f"{t}_logloss"] = 0.5
    for m in ("auc", "gauc", "logloss"):
        test[f"mean_{m}"] = sum(test[f"{t}_{m}"] for t in TASKS) / len(TASKS)
    curve = [{"epoch": e, "train_loss": 0.7 - 0.1 * e, "val_mean_auc": base - 0.01 * (2 - e)} for e in (1, 2)]
    return {"model": key, "run_dir": f"runs/{key}", "params": 1000, "best_epoch": best_epoch, "epochs_run": 2,
            "train_time_s": 1.0 + seed, "val_mean_auc": base, "test": test, "curve": curve}  # fmt: skip


def fake_results(seeds=(0, 1, 2)) -> dict:
    base = {k: 0.70 for k, _, _ in reproduce.MODELS}
    base["infnet"] = 0.75
    base["wo_pgu"] = 0.80  # an ablation that beats the full model must be reported as such
    results = {k: [fake_run(k, s, base[k]) for s in seeds] for k in base}
    results["mmoe"][0]["best_epoch"] = 1  # seeds disagree: the table lists them
    return results


def table_rows(text: str, heading: str) -> dict[str, list[str]]:
    """The rows of the markdown table under ``## heading``, by their first cell."""
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [ln.strip("|").split(" | ") for ln in section.splitlines() if ln.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def write_bench(path: Path) -> Path:
    rows = [
        {"model": m, "total_seq_len": n, "infer_samples_per_s": 10.0, "train_samples_per_s": 5.0,
         "peak_mem_mb_train": 12.0} for m in ("infnet", "hstu") for n in (256, 2048)
    ]  # fmt: skip
    summary = {"infer_speedup_vs_full_attention_at": 1024, "infer_speedup_vs_full_attention": 7.5,
               "infer_speedup_target_met": True, "time_growth_lengths": [256, 2048],
               "infnet_infer_time_growth": 3.0, "infnet_train_time_growth": 4.0, "time_growth_target_met": True}  # fmt: skip
    setup = {"embed_dim": 32, "n_blocks": 2, "batch_size": 16, "threads": 1, "repeats": 3, "memory": "RSS"}
    machine = {"load_average_1_5_15": [0.2, 0.3, 0.4], "cores": 2}
    training = {"batch_size": 1024, "rows": [{"model": "infnet", "train_samples_per_s": 20000.0,
                                              "train_cpu_samples_per_s": 21000.0}],
                "summary": {"train_ratio_mmoe_over_infnet_compiled": 2.5,
                            "train_ratio_mmoe_over_infnet_compiled_cpu": 2.25, "train_ratio_both_compiled": 3.5,
                            "train_speedup_compiled_over_eager": 1.8, "train_ratio_mmoe_over_infnet": 4.5,
                            "train_ratio_mmoe_over_infnet_cpu": 4.25, "train_ratio_target": 3.0,
                            "train_ratio_target_met": True, "train_speedup_over_previous": 2.2}}  # fmt: skip
    path.write_text(json.dumps({"rows": rows, "summary": summary, "setup": setup, "machine": machine,
                                "movielens_training": training}))  # fmt: skip
    return path


def test_report_tables_claims_and_plots(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "BENCH_JSON", write_bench(tmp_path / "bench.json"))
    args = argparse.Namespace(quick=False, epochs=8, max_rows=100, jobs=2, threads=1, seeds=[0, 1, 2],
                              subsets={"hstu": 40})  # fmt: skip
    sizes = {"train": 80, "val": 10, "test": 10}
    metrics = reproduce.collect_metrics(
        args, InfnetConfig(), TASKS, sizes, fake_results(), [0, 1, 2], 60.0, tmp_path
    )
    out = tmp_path / "results"
    seen, block = [], reproduce.provenance_block
    # the commit is read before the report's own files change the tree (else it would always be "-dirty")
    monkeypatch.setattr(reproduce, "provenance_block", lambda *a: (seen.append(out.exists()), block(*a))[1])
    path = reproduce.write_report(metrics, out)
    assert seen == [False]
    text = path.read_text()
    assert "| INFNet | 0.7510 ± 0.0010 | 0.7610 ± 0.0010 | 0.7560 ± 0.0010 |" in text
    assert "INFNet w/o PGU lower than the full INFNet" in text
    wo_pgu = next(line for line in text.splitlines() if line.startswith("- INFNet w/o PGU"))
    assert "**did not hold**" in wo_pgu
    wo_t = next(line for line in text.splitlines() if line.startswith("- INFNet w/o task tokens"))
    assert "**held** (beyond 2σ" in wo_t
    assert "KuaiRand" in text and "not MovieLens" in text
    assert "**7.5x** (target >= 5x: met)" in text
    assert "load average 0.20 on 2 cores" in text and "(../bench.png)" in text
    assert (
        "MMoE / INFNet (`train.compile`) training samples/s: **2.50x** wall, 2.25x CPU time (target <= 3: met)"
        in text
    )
    assert "both eager 4.50x, both compiled 3.50x" in text and "1.80x faster compiled than eager" in text
    assert "| infnet | 20000 | 21000 |" in text
    # the HSTU-style model trained on a subset: said once, its rows marked
    assert "**HSTU-style full attention** trained on the most recent 40 rows of the train split" in text
    assert "| HSTU-style full attention † |" in text and "trained until the validation mean AUC" in text
    cost = table_rows(text, "Cost")
    # parameters and epochs are integers; best epochs per seed where the seeds disagree; time mean ± std
    assert cost["INFNet"] == ["1000", "2.0 ± 1.0", "2", "2"]
    assert cost["MMoE"][3] == "1, 2, 2"
    for name in (
        "auc_bars.png",
        "auc_per_task.png",
        "cost_vs_auc.png",
        "training_curves.png",
        "metrics.json",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["mode"] == "full" and "curve" not in saved["runs"]["infnet"][0]
    assert saved["curves"]["infnet"][2] == fake_run("infnet", 2, 0.75)["curve"]
    assert (saved["sizes"], saved["budget"]["epochs"], saved["setup"]["lr"]) == (
        sizes,
        8,
        InfnetConfig().train.lr,
    )
    assert saved["budget"]["subsets"] == {"hstu": 40} and saved["budget"]["projected_min"] > 0


def test_report_is_rebuilt_from_metrics_json_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "BENCH_JSON", write_bench(tmp_path / "bench.json"))
    args = argparse.Namespace(quick=False, epochs=2, max_rows=100, jobs=2, threads=1, seeds=[0, 1, 2],
                              subsets={"hstu": 40})  # fmt: skip
    metrics = reproduce.collect_metrics(
        args,
        InfnetConfig(),
        TASKS,
        {"train": 8, "val": 1, "test": 1},
        fake_results(),
        [0, 1, 2],
        6.0,
        tmp_path,
    )
    first = reproduce.write_report(metrics, tmp_path / "a")
    assert "trained for 2 epochs (too few for early stopping with patience 5 to act)" in first.read_text()
    copy = tmp_path / "b" / "metrics.json"
    copy.parent.mkdir()
    copy.write_text((tmp_path / "a" / "metrics.json").read_text())
    reproduce.main(["--from-metrics", str(copy)])
    assert (tmp_path / "b" / "report.md").read_text() == first.read_text()
    assert json.loads(copy.read_text()) == json.loads((tmp_path / "a" / "metrics.json").read_text())
    # a metrics.json without per-epoch curves (written before they were stored): no curve plot, a note
    (tmp_path / "b" / "training_curves.png").write_bytes(b"stale")
    legacy = json.loads(copy.read_text())
    del legacy["curves"]
    copy.write_text(json.dumps(legacy))
    reproduce.main(["--from-metrics", str(copy)])
    text = (tmp_path / "b" / "report.md").read_text()
    assert "training_curves.png" in text and "](training_curves.png)" not in text
    assert not (tmp_path / "b" / "training_curves.png").exists()


def test_quick_reproduce_writes_nothing_under_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(reproduce, "ensure_data", lambda cfg: (TASKS, {"train": 8, "val": 1, "test": 1}))
    root = tmp_path / "runs" / "infnet" / "reproduce-quick" / "finished"
    for key, _, _ in reproduce.MODELS:  # finished runs: summary.json and metrics.jsonl, as train writes them
        run = root / f"{key}_seed0"
        run.mkdir(parents=True)
        summary = fake_run(key, 0, 0.7)
        curve = summary.pop("curve")
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "metrics.jsonl").write_text(
            "".join(json.dumps({**r, "step": r["epoch"]}) + "\n" for r in curve)
        )
    save_checkpoint(root / "infnet_seed0", model=torch.nn.Linear(1, 1), paper="infnet", epoch=2, step=2)
    (root / "infnet_seed0" / "best.pt").write_bytes((root / "infnet_seed0" / "last.pt").read_bytes())
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("infnet.reproduce").addHandler(handler)
    try:
        reproduce.main(["--quick", "--config", str(ROOT / reproduce.DEFAULT_CONFIG), "--reuse", str(root)])
    finally:
        logging.getLogger("infnet.reproduce").removeHandler(handler)
    assert not (tmp_path / "results").exists()
    out = tmp_path / "runs" / "infnet" / "quick"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "quick" and metrics["command"] == "make reproduce-infnet QUICK=1"
    assert metrics["trained_at"] == git_commit() and torch.__version__ in metrics["trained_on"]
    assert "| INFNet | 0.7000 | 0.7100 | 0.7050 |" in (out / "report.md").read_text()  # one seed: no ±
    done = [ln for ln in lines if " runs done " in ln]
    assert len(done) == 10 and done[-1].startswith("10 of 10 runs done")


def test_verdict_one_seed_is_not_a_significance_test():
    assert reproduce.verdict([0.8], [0.7]) == "**held** (one seed: not a significance test)"
    assert reproduce.verdict([0.70, 0.712], [0.705, 0.706]).startswith("**held** (within seed noise")
    assert reproduce.verdict([0.6], [0.7], higher=False) == "**held** (one seed: not a significance test)"
