"""The benchmark: the linear-cost claim checked by counting FLOPs (not timing), the measured rows and the
ratios computed from them, the plot showing the rows' numbers, bad arguments; the full command is slow."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from infnet import bench
from infnet.build import build_model
from infnet.layers import count_parameters
from shared.errors import run_cli


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


def test_synthetic_inputs_have_the_requested_length():
    spec = bench.synthetic_spec(64)
    assert sum(f.max_len for f in spec.sequences) == 64 and spec.categorical[1].name == "item_id"
    batch = bench.synthetic_batch(spec, 3, torch.device("cpu"))
    assert [s.shape for s in batch["seq"]] == [(3, 32), (3, 32)]
    assert all(bool((s > 0).all()) for s in batch["seq"])  # every position a real item: no padding to skip


def test_measured_rows_match_the_models_they_time():
    rows = bench.measure_timing(32, 2, 8, 1, repeats=3)
    assert [r["model"] for r in rows] == list(bench.MODELS)
    for row in rows:
        model = build_model(bench.synthetic_spec(32), bench.model_config(row["model"], 8, 1))
        assert row["params"] == count_parameters(model) and row["total_seq_len"] == 32
        assert row["infer_samples_per_s"] == 2 / row["infer_s_per_batch"]
        assert row["train_samples_per_s"] == 2 / row["train_s_per_batch"]
        assert row["infer_best_s"] <= row["infer_s_per_batch"] <= row["infer_p95_s"]
        assert row["train_best_s"] <= row["train_s_per_batch"] <= row["train_p95_s"]
        # (no comparison of two timings: one load spike on a shared machine reverses any of them)


def test_summarize_takes_its_ratios_from_the_rows():
    times = {("infnet", 256): 1.0, ("infnet", 1024): 2.0, ("infnet", 2048): 3.0, ("hstu", 1024): 14.0,
             ("hstu", 256): 2.0, ("hstu", 2048): 50.0}  # fmt: skip
    rows = [
        {"model": m, "total_seq_len": n, "infer_best_s": t, "train_best_s": 4 * t}
        for (m, n), t in times.items()
    ]
    s = bench.summarize(rows, [256, 1024, 2048])
    assert s["infer_speedup_vs_full_attention_at"] == 1024 and s["infer_speedup_vs_full_attention"] == 7.0
    assert s["time_growth_lengths"] == [256, 2048] and s["length_ratio"] == 8.0
    assert s["infnet_infer_time_growth"] == 3.0 and s["infnet_train_time_growth"] == 3.0
    assert s["infer_speedup_target_met"] and s["time_growth_target_met"]
    times[("infnet", 2048)] = 11.0  # superlinear: the growth target fails
    rows = [
        {"model": m, "total_seq_len": n, "infer_best_s": t, "train_best_s": t} for (m, n), t in times.items()
    ]
    assert not bench.summarize(rows, [256, 1024, 2048])["time_growth_target_met"]
    short = bench.summarize(rows[:2] + rows[3:5], [256, 1024])  # no 2048: the largest length pair is used
    assert short["time_growth_lengths"] == [256, 1024] and short["infnet_infer_time_growth"] == 2.0


def test_movielens_training_rows_time_the_models():
    """The MovieLens-shape part: the models of TRAIN_MODELS at the split's shapes, both clocks recorded (the
    compiled ones in test_train.py's compile test: compilation takes a minute each)."""
    spec = bench.movielens_spec()
    assert sum(f.max_len for f in spec.sequences) == 156 and len(spec.categorical) == 8
    batch = bench.movielens_batch(spec, 6, torch.device("cpu"))
    assert [s.shape[1] for s in batch["seq"]] == [6, 50, 30, 20, 50]
    eager = [m for m in bench.TRAIN_MODELS if not m.endswith("_compiled")]
    rows = bench.measure_movielens_training(6, repeats=2, warmup=1, models=eager)
    assert [r["model"] for r in rows] == eager and all(r["compile_s"] is None for r in rows)
    by = {r["model"]: r for r in rows}
    assert by["infnet"]["params"] == by["infnet_previous"]["params"]  # the same model, two implementations
    for r in rows:
        assert r["train_samples_per_s"] == 6 / r["train_s_per_batch"] and r["train_cpu_best_s"] > 0
        assert r["train_cpu_samples_per_s"] == 6 / r["train_cpu_best_s"]


def test_summarize_training_ratios():
    rows = [{"model": m, "train_best_s": t, "train_cpu_best_s": c} for m, t, c in
            [("infnet", 4.0, 1.0), ("infnet_compiled", 2.0, 0.5), ("mmoe", 1.0, 0.25), ("mmoe_compiled", 0.5, 0.2),
             ("sharedbottom", 0.5, 0.2), ("infnet_previous", 10.0, 3.0)]]  # fmt: skip
    s = bench.summarize_training(rows)
    assert (
        s["train_ratio_mmoe_over_infnet_compiled"] == 2.0
        and s["train_ratio_mmoe_over_infnet_compiled_cpu"] == 2.0
    )
    assert s["train_ratio_both_compiled"] == 4.0 and s["train_speedup_compiled_over_eager"] == 2.0
    assert s["train_ratio_mmoe_over_infnet"] == 4.0 and s["train_ratio_mmoe_over_infnet_cpu"] == 4.0
    assert s["train_ratio_sharedbottom_over_infnet"] == 8.0 and s["train_speedup_over_previous"] == 2.5
    assert s["train_speedup_over_previous_cpu"] == 3.0 and s["train_ratio_target_met"]
    rows[1]["train_best_s"] = 3.5  # the target is the compiled INFNet against eager MMoE
    assert not bench.summarize_training(rows)["train_ratio_target_met"]


def test_plot_draws_the_rows_numbers(tmp_path):
    rows = [{"model": m, "total_seq_len": n, "infer_samples_per_s": 1000 / n / (i + 1), "train_samples_per_s": 5.0,
             "peak_mem_mb_train": None if m == "din" else float(n)}
            for i, m in enumerate(bench.MODELS) for n in (64, 256)]  # fmt: skip
    training = [{"model": m, "batch_size": 4, "train_samples_per_s": 10.0 * (i + 1), "train_cpu_samples_per_s": 1.0}
                for i, m in enumerate(bench.TRAIN_MODELS)]  # fmt: skip
    drawn = bench.plot(rows, tmp_path / "b.png", "title", training)
    assert drawn["movielens_train_samples_per_s"]["mmoe"] == [
        (0, 10.0 * (bench.TRAIN_MODELS.index("mmoe") + 1))
    ]
    assert drawn["infer_samples_per_s"]["hstu"] == [(64, 1000 / 64 / 2), (256, 1000 / 256 / 2)]
    assert drawn["peak_mem_mb_train"] == {
        "infnet": [(64, 64.0), (256, 256.0)],
        "hstu": [(64, 64.0), (256, 256.0)],
    }
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, match", [(["--batch-size", "0"], "--batch-size must be >= 1"),
                                         (["--lengths", "1"], "--lengths must be >= 2")])  # fmt: skip
def test_bad_arguments_are_one_line(capsys, args, match):
    assert run_cli(bench.main, args) == 2
    assert match in capsys.readouterr().err


@pytest.mark.slow
def test_bench_command_in_fresh_processes(tmp_path):
    out = tmp_path / "bench.json"
    argv = [
        "--lengths",
        "16",
        "512",
        "--batch-size",
        "4",
        "--embed-dim",
        "8",
        "--n-blocks",
        "1",
        "--repeats",
        "2",
        "--train-batch-size",
        "8",
    ]
    bench.main([*argv, "--out", str(out)])
    result = json.loads(out.read_text())
    assert len(result["rows"]) == 6 and "synthetic" in result["what"]
    assert len(result["machine"]["load_average_1_5_15"]) == 3 and result["machine"]["torch_threads"] >= 1
    assert result["summary"] == bench.summarize(result["rows"], [16, 512])
    mem = {(r["model"], r["total_seq_len"]): r["peak_mem_mb_train"] for r in result["rows"]}
    assert mem[("hstu", 512)] > mem[("infnet", 512)] + 10  # the (B, h, N, N) attention scores of HSTU
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    training = result["movielens_training"]
    assert [r["model"] for r in training["rows"]] == list(bench.TRAIN_MODELS)
    assert training["summary"] == bench.summarize_training(training["rows"])
