"""RCAR benchmark smoke test: tiny subset at the paper's dims, identical scores, a complete JSON report."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import torch

from rcar import bench
from rcar.config import ModelConfig
from rcar.model import RCAR


def test_bench_smoke(tmp_path: Path, capsys) -> None:
    out = tmp_path / "rcar.json"
    bench.main(["--images", "4", "--captions", "6", "--out", str(out)])
    res = json.loads(out.read_text())
    for key in ("cpu_100_image_shards", "cpu_10_image_shards"):
        r = res[key]
        assert r["max_abs_diff"] <= 1e-5 and r["reference_s"] > 0 and r["fast_s"] > 0
        assert (r["images"], r["captions"]) == (4, 6)
    assert res["matmul_peak_gflops"] > 0 and 30e6 < res["flops_per_pair"] < 40e6
    assert res["fast_rss_growth_mb"] > 0  # measured in a fresh process: the workspace has to be faulted in
    mem = res["coco5k_memory"]
    assert mem["official"]["image_embeddings_gb"] > 7.0  # 25,000 x 36 x 1024 float64
    assert abs(mem["ours"]["image_embeddings_gb"] - 0.737) < 0.001  # 5,000 x 36 x 1024 float32
    assert set(res["targets"]) >= {"identical_scores (max abs diff <= 1e-5)", "COCO 5K under 1.5 GB"}
    assert "COCO 5K memory" in capsys.readouterr().out


def test_reference_shards_cover_every_pair() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(mode="rcar", direction="i2t", img_dim=8, embed_size=8, word_dim=4, sim_dim=4)
    model = RCAR(cfg, 20).eval()
    img, cap, lengths = bench.make_inputs(model, 5, 7, 3, 6, torch.device("cpu"))
    whole = bench.reference_sims(model, img, cap, lengths)
    sharded = bench.reference_shard_sims(model, img, cap, lengths, shard=2)
    assert torch.allclose(whole, sharded, atol=1e-6)


def test_peak_rss_sees_a_freed_allocation() -> None:
    """The high-water mark catches memory that was already freed when the block ends."""
    gc.collect()  # else garbage of earlier tests, collected inside the block, can offset the allocation
    gc.disable()
    try:
        with bench.PeakRSS() as mem:
            x = torch.ones(128 * 2**20 // 4)  # 128 MiB, touched
            del x
    finally:
        gc.enable()
    assert mem.growth >= 96 * 2**20
