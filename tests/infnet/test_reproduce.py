"""The reproduction report: tables, claims (held / did not hold), plots, benchmark section, from fake runs."""

from __future__ import annotations

import argparse
import json

from infnet import reproduce
from infnet.config import InfnetConfig

TASKS = ["click", "like"]


def fake_run(key: str, seed: int, base: float) -> dict:
    test = {}
    for i, t in enumerate(TASKS):
        test[f"{t}_auc"] = base + 0.01 * i + 0.001 * seed
        test[f"{t}_gauc"] = base - 0.05
        test[f"{t}_logloss"] = 0.5
    for m in ("auc", "gauc", "logloss"):
        test[f"mean_{m}"] = sum(test[f"{t}_{m}"] for t in TASKS) / len(TASKS)
    curve = [{"epoch": e, "val_mean_auc": base - 0.01 * (2 - e)} for e in (1, 2)]
    return {"model": key, "run_dir": f"runs/{key}", "params": 1000, "best_epoch": 2, "epochs_run": 2,
            "train_time_s": 1.0, "val_mean_auc": base, "test": test, "curve": curve}  # fmt: skip


def test_report_tables_claims_and_plots(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "OUT_DIR", tmp_path / "results")
    bench = tmp_path / "bench.json"
    rows = [
        {"model": m, "total_seq_len": n, "infer_samples_per_s": 10.0, "train_samples_per_s": 5.0,
         "peak_mem_mb_train": 12.0} for m in ("infnet", "hstu") for n in (256, 2048)
    ]  # fmt: skip
    summary = {"infer_speedup_vs_full_attention_at": 1024, "infer_speedup_vs_full_attention": 7.5,
               "infer_speedup_target_met": True, "time_growth_lengths": [256, 2048],
               "infnet_infer_time_growth": 3.0, "infnet_train_time_growth": 4.0, "time_growth_target_met": True}  # fmt: skip
    setup = {"embed_dim": 32, "n_blocks": 2, "batch_size": 16, "threads": 1, "repeats": 3, "memory": "RSS"}
    bench.write_text(json.dumps({"rows": rows, "summary": summary, "setup": setup}))
    monkeypatch.setattr(reproduce, "BENCH_JSON", bench)
    base = {k: 0.70 for k, _, _ in reproduce.MODELS}
    base["infnet"] = 0.75
    base["wo_pgu"] = 0.80  # an ablation that beats the full model must be reported as such
    results = {k: [fake_run(k, s, base[k]) for s in (0, 1, 2)] for k in base}
    args = argparse.Namespace(quick=False, epochs=2, max_rows=100, jobs=2, threads=1)
    sizes = {"train": 80, "val": 10, "test": 10}
    path = reproduce.write_report(args, InfnetConfig(), TASKS, sizes, results, [0, 1, 2], 60.0, tmp_path)
    text = path.read_text()
    assert "| INFNet | 0.7510 ± 0.0010 | 0.7610 ± 0.0010 | 0.7560 ± 0.0010 |" in text
    assert "INFNet w/o PGU lower than the full INFNet" in text
    wo_pgu = next(line for line in text.splitlines() if line.startswith("- INFNet w/o PGU"))
    assert "**did not hold**" in wo_pgu
    wo_t = next(line for line in text.splitlines() if line.startswith("- INFNet w/o task tokens"))
    assert "**held** (beyond 2σ" in wo_t
    assert "KuaiRand" in text and "not MovieLens" in text
    assert "**7.5x** (target >= 5x: met)" in text
    for name in ("auc_bars.png", "training_curves.png", "metrics.json"):
        assert (tmp_path / "results" / name).is_file()
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert metrics["mode"] == "full" and "curve" not in metrics["runs"]["infnet"][0]


def test_verdict_one_seed_is_not_a_significance_test():
    assert reproduce.verdict([0.8], [0.7]) == "**held** (one seed: not a significance test)"
    assert reproduce.verdict([0.70, 0.712], [0.705, 0.706]).startswith("**held** (within seed noise")
    assert reproduce.verdict([0.6], [0.7], higher=False) == "**held** (one seed: not a significance test)"
