"""RCAR benchmark smoke test: the training step of every variant before and after at the embedded config, a
tiny evaluation subset at the paper's dims, identical scores, a complete JSON report."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
import torch

from rcar import bench
from rcar.config import ModelConfig
from rcar.model import RCAR
from rcar.reference import reference_shard_sims, reference_sims
from shared.errors import run_cli


def test_bench_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # --quick without --out writes runs/bench/rcar_quick.json, never results/
    monkeypatch.setattr(bench, "VARIANTS", [("t2i", "rcar"), ("i2t", "rar")])  # 2 of the 8: a short test
    bench.main(["--quick", "--images", "4", "--captions", "6"])
    assert not (tmp_path / "results").exists()
    res = json.loads((tmp_path / "runs" / "bench" / "rcar_quick.json").read_text())
    flops = res["flops_per_pair"]
    for key in ("cpu_100_image_shards", "cpu_10_image_shards"):
        r = res[key]
        assert r["max_abs_diff"] <= 1e-5 and (r["images"], r["captions"], r["repeats"]) == (4, 6, 1)
        for path in ("reference", "fast"):
            t = r[f"{path}_timing"]
            assert t["runs"] == 1 and t["best_s"] == t["median_s"] == t["p95_s"] == r[f"{path}_s"]
            assert r[f"{path}_gflops"] == pytest.approx(flops * 24 / r[f"{path}_s"] / 1e9)
        assert r["speedup"] == pytest.approx(r["reference_s"] / r["fast_s"])
    assert res["fast_fraction_of_peak"] == pytest.approx(
        res["cpu_100_image_shards"]["fast_gflops"] / res["matmul_peak_gflops"]
    )
    assert 1 < res["matmul_peak_gflops"] < 1e5 and flops == bench.flops_per_pair(ModelConfig(steps=2), 36, 12)
    # the 24 pairs' workspace (~0.31 MB each) has to be faulted in by the fresh process
    assert 0.5 * 24 * res["estimated_workspace_mb_per_pair"] <= res["fast_rss_growth_mb"] <= 64 + 32
    machine = res["machine"]
    assert machine["cores"] >= 1 and len(machine["load_average_1_5_15"]) == 3
    assert machine["libraries"]["torch"] == importlib.metadata.version("torch")
    mem = res["coco5k_memory"]
    assert mem["official"]["image_embeddings_gb"] == pytest.approx(25000 * 36 * 1024 * 8 / 1e9)  # float64
    assert abs(mem["ours"]["image_embeddings_gb"] - 0.737) < 0.001  # 5,000 x 36 x 1024 float32
    for side in ("ours", "official"):
        parts = {k: v for k, v in mem[side].items() if k != "total_gb"}
        assert mem[side]["total_gb"] == pytest.approx(sum(parts.values()))
    assert res["targets"]["identical_scores (max abs diff <= 1e-5)"] is True
    assert res["targets"]["COCO 5K under 1.5 GB"] == (mem["ours"]["total_gb"] < 1.5)
    train = res["training"]
    assert [v["variant"] for v in train["variants"]] == [f"{d} {m}" for d, m in bench.VARIANTS]
    assert (train["batch_size"], train["embed_size"], train["sim_dim"], train["threads"]) == (32, 64, 32, 1)
    for v in train["variants"]:
        assert v["eval_max_abs_diff"] <= 1e-5 and v["before_timing"]["runs"] == 1
        assert v["speedup"] == pytest.approx(v["before_step_s"] / v["after_step_s"])
    total = sum(v["before_step_s"] for v in train["variants"]) / sum(
        v["after_step_s"] for v in train["variants"]
    )
    assert train["speedup"] == pytest.approx(total)
    assert len(train["load_average_before"]) == 3 and len(res["load_average_after"]) == 3
    out = capsys.readouterr().out
    assert "COCO 5K memory" in out and "one step of each: x" in out


def test_embedded_batches_have_the_embedded_caption_lengths() -> None:
    """The generator's captions: 5-25 words + <start>/<end>, minus augmentation deletions; padded per batch."""
    cfg = bench.load_config(bench.RCARConfig, bench.EMBEDDED)
    batches, vocab_size = bench.embedded_batches(cfg, n_batches=3)
    lengths = torch.cat([b["lengths"] for b in batches])
    assert len(batches) == 3 and all(b["images"].shape == (32, 12, 256) for b in batches)
    assert 5 <= int(lengths.min()) and int(lengths.max()) <= 27 and 11 < float(lengths.float().mean()) < 17
    assert all(b["captions"].shape[1] == int(b["lengths"].max()) for b in batches)
    assert 30 < vocab_size < 200


@pytest.mark.parametrize("flag", ["--images", "--captions", "--repeats", "--train-steps", "--train-repeats"])
def test_bench_refuses_sizes_below_one(
    flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)  # were the check missing, the benchmark would run and write here
    assert run_cli(bench.main, [flag, "0"]) == 2
    assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err


def test_reference_shards_cover_every_pair() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(mode="rcar", direction="i2t", img_dim=8, embed_size=8, word_dim=4, sim_dim=4)
    model = RCAR(cfg, 20).eval()
    img, cap, lengths = bench.make_inputs(model, 5, 7, 3, 6, torch.device("cpu"))
    whole = reference_sims(model, img, cap, lengths)
    sharded = reference_shard_sims(model, img, cap, lengths, shard=2)
    assert whole.shape == (5, 7) and torch.allclose(whole, sharded, atol=1e-6)
