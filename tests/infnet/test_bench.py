"""The benchmark on tiny sizes, and the linear-cost claim checked by counting FLOPs (not timing)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from infnet import bench
from infnet.model import build_model


def forward_flops(name: str, total_len: int) -> int:
    spec = bench.synthetic_spec(total_len)
    torch.manual_seed(0)
    model = build_model(spec, bench.model_config(name, 16, 2)).eval()
    batch = bench.synthetic_batch(spec, 2, torch.device("cpu"))
    with FlopCounterMode(display=False) as counter:
        model(batch)
    return counter.get_total_flops()


def test_infnet_flops_grow_linearly_full_attention_quadratically():
    infnet = forward_flops("infnet", 512) / forward_flops("infnet", 128)
    hstu = forward_flops("hstu", 512) / forward_flops("hstu", 128)
    din = forward_flops("din", 512) / forward_flops("din", 128)
    assert infnet < 4.2  # 4x the tokens -> at most ~4x the work
    assert din < 4.2
    assert hstu > 8.0  # the attention matrix grows with the square


def test_measure_summarize_and_plot_on_tiny_sizes(tmp_path):
    rows = [bench.measure_one(name, n, 2, 8, 1, 1) for n in (16, 64) for name in bench.MODELS]
    for row in rows:
        assert row["infer_samples_per_s"] > 0 and row["train_samples_per_s"] > 0
        assert row["peak_mem_mb_train"] is not None
    summary = bench.summarize(rows, [16, 64])
    assert summary["time_growth_lengths"] == [16, 64]
    assert summary["infer_speedup_vs_full_attention_at"] == 64
    expected = rows[3]["infer_samples_per_s"] / rows[4]["infer_samples_per_s"]  # infnet / hstu at 64
    assert summary["infer_speedup_vs_full_attention"] == expected
    bench.plot(rows, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").stat().st_size > 1000


@pytest.mark.slow
def test_worker_subprocess_reports_json(tmp_path):
    out = tmp_path / "bench.json"
    bench.main(
        ["--lengths", "8", "16", "--batch-size", "2", "--embed-dim", "8", "--n-blocks", "1", "--repeats", "1",
         "--out", str(out)]
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert len(result["rows"]) == 6 and "synthetic" in result["what"]
    assert out.with_suffix(".png").is_file()
    assert {"infer_speedup_target_met", "time_growth_target_met"} <= set(result["summary"])
