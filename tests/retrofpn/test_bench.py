"""The benchmark at tiny sizes, in this process: every section is written, every ratio is the quotient of the
raw numbers beside it, the agreement checks fail when a fast path is broken, the plot is drawn, bad arguments
are one line. No wall-clock assertions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from retrofpn import bench
from retrofpn.config import ModelConfig, paper_model_config
from retrofpn.data.s3dis import write_room
from retrofpn.model import Segmentor
from retrofpn.ops import Neighbours
from retrofpn.ops import knn_query as real_knn_query
from retrofpn.sparse import KernelMap
from shared.errors import run_cli

TINY = bench.Sizes(knn_sizes=(400, 1600), brute_queries=100, fps_sizes=(400, 800), fps_loop_full=150,
                   fps_loop_prefix=50, grid=12, occupancies=(0.05, 0.2), channels=4, batch_points=400,
                   forward_points=300, forward_warm=False, repeats=1, warmup=0, matmul_n=256, name="tiny")  # fmt: skip


def in_process(fn, *args, threads=1, **kwargs):
    """``in_fresh_process`` without the process: tiny sizes, and monkeypatches reach the measured code."""
    return fn(*args, **kwargs)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    """Four 1,000-point rooms in the archive layout (Area 5 is the held-out one the listing needs)."""
    root = tmp_path_factory.mktemp("rooms")
    for area in (1, 2, 3, 5):
        rng = np.random.default_rng(area)
        coord = rng.random((1000, 3)) * [4.0, 3.0, 2.5]
        write_room(root / f"Area_{area}_office_1.npy", coord, rng.integers(0, 256, (1000, 3)),
                   rng.integers(0, 13, 1000))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def run(rooms, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "in_fresh_process", in_process)
        bench.main(["--data", str(rooms), "--out", str(out)], sizes=TINY)
    return out, json.loads(out.read_text())


def test_every_section_is_written(run):
    _, result = run
    for key in ("knn", "fps", "sparse_conv", "share", "forward", "summary", "machine", "setup"):
        assert key in result
    assert [r["n"] for r in result["knn"]["rows"]] == [400, 1600]
    assert [r["n"] for r in result["fps"]["rows"]] == [400, 800]
    assert [(r["occupancy"], r["stride"]) for r in result["sparse_conv"]["rows"]] == [
        (0.05, 1), (0.05, 2), (0.2, 1), (0.2, 2)]  # fmt: skip
    assert [(r["backbone"], r["retro"]) for r in result["share"]["rows"]] == [
        (b, r) for b in ("pt", "ptv2", "minkunet") for r in (True, False)]  # fmt: skip
    assert [r["backbone"] for r in result["forward"]["rows"]] == ["pt", "ptv2", "minkunet"]
    assert all(r["points"] == 300 for r in result["forward"]["rows"])
    assert result["share"]["clouds"] == [400, 400]
    assert (
        len(result["machine"]["load_average_1_5_15"]) == 3
        and "load average" in result["machine"]["load_note"]
    )
    assert result["matmul_peak_gflops"] > 0
    assert result["setup"]["threads"] == 1 and result["setup"]["synthetic_rooms"]
    assert "SYNTHETIC" in result["setup"]["points"]


def test_ratios_are_computed_from_the_raw_numbers(run):
    _, result = run
    for r in result["knn"]["rows"]:
        assert r["brute_extrapolated"] and r["brute_queries"] == 100
        assert r["fast_s"] == r["fast"]["best_s"]
        assert r["brute_s"] == r["brute_subset"]["best_s"] * r["n"] / r["brute_queries"]
        assert r["speedup"] == r["brute_s"] / r["fast_s"]
        assert r["fast_ns_per_n_log2_n"] == pytest.approx(r["fast_s"] / (r["n"] * math.log2(r["n"])) * 1e9)
    small, large = result["fps"]["rows"]
    assert not small["methods"]["loop"]["extrapolated"] and small["exact_reference"] == "plain loop"
    loop = large["methods"]["loop"]
    assert loop["extrapolated"] and loop["samples_run"] == 50 and large["m"] == 200
    assert loop["best_s"] == pytest.approx(loop["prefix_best_s"] * 200 / 50)
    for row in result["fps"]["rows"]:
        for name, method in row["methods"].items():
            assert row["speedup_vs_loop"][name] == row["methods"]["loop"]["best_s"] / method["best_s"]
    for r in result["sparse_conv"]["rows"]:
        assert r["speedup"] == r["dense_s"] / r["sparse_s"]
        assert r["speedup_incl_kernel_map"] == r["dense_s"] / (r["sparse_s"] + r["kernel_map_s"])
        if r["memory_ratio"] is not None:
            assert r["memory_ratio"] == r["dense_memory_mb"] / r["sparse_memory_mb"]
        assert r["active_in"] == round(r["occupancy"] * 12**3)
    for r in result["share"]["rows"]:
        assert r["share"] == r["hierarchy_s"] / (r["hierarchy_s"] + r["forward_backward_s"])
    for r in result["forward"]["rows"]:
        assert r["total_s"] == r["hierarchy_s"] + r["forward_s"]
        assert r["peak_rss_mb"] >= r["rss_growth_mb"] >= 0
    s = result["summary"]
    assert s == bench.summarize(result)  # the headline numbers come from the rows alone
    assert s["knn_speedup"] == result["knn"]["rows"][-1]["speedup"] and s["knn_speedup_at"] == 1600
    assert s["knn_time_exponent"] == pytest.approx(
        math.log(result["knn"]["rows"][1]["fast_s"] / result["knn"]["rows"][0]["fast_s"]) / math.log(4)
    )
    assert s["forward_memory_target_met"] == (s["forward_peak_gb_max"] < 4.0)


def test_parameter_counts_are_the_models(run):
    _, result = run
    for r in result["share"]["rows"]:
        cfg = ModelConfig(backbone=r["backbone"], retro=r["retro"])
        assert r["params"] == bench.count_parameters(Segmentor(cfg))
    pt = result["forward"]["rows"][0]
    assert pt["params"] == bench.count_parameters(Segmentor(paper_model_config("pt")))
    assert pt["params_without_retro"] == bench.count_parameters(
        Segmentor(paper_model_config("pt", retro=False))
    )
    assert all(r["params"] > r["params_without_retro"] for r in result["forward"]["rows"])


def test_honest_paths_agree(run):
    _, result = run
    assert result["summary"]["all_results_agree"]
    assert all(r["idx_match_fraction"] > 0.99 for r in result["knn"]["rows"])
    small, large = result["fps"]["rows"]
    assert small["methods"]["vanilla"]["same_order_as_exact"]  # the package default is the plain loop
    assert large["methods"]["loop"]["prefix_equals_package_exact"]
    assert all(r["max_abs_diff"] < 1e-5 for r in result["sparse_conv"]["rows"])


def test_a_broken_knn_fast_path_is_caught(monkeypatch):
    def off_by_one(k, support, offset, query=None, query_offset=None, method="auto"):
        nb = real_knn_query(k + 1, support, offset, query, query_offset, method)
        if method == "cdist":
            return nb.first(k)
        return Neighbours(nb.idx[:, 1:], nb.valid[:, 1:], nb.dist[:, 1:])  # skips the nearest neighbour

    coord = torch.from_numpy(bench.PointSource(None).cloud(500)[0])
    assert bench.knn_row(coord, 50, 1, 0)["agree"]
    monkeypatch.setattr(bench, "knn_query", off_by_one)
    row = bench.knn_row(coord, 50, 1, 0)
    assert not row["agree"] and row["idx_match_fraction"] == 0.0


def test_a_broken_fps_is_caught(monkeypatch):
    coord = bench.PointSource(None).cloud(600)[0]
    assert bench.fps_row(coord, 1, 1000, 50)["agree"]

    def random_rows(coord, offset, new_offset, method="vanilla"):
        g = torch.Generator().manual_seed(0)
        return torch.randperm(int(offset[-1]), generator=g)[: int(new_offset[-1])]

    monkeypatch.setattr(bench, "furthest_point_sampling", random_rows)
    row = bench.fps_row(coord, 1, 1000, 50)
    assert not row["agree"]
    assert (
        not row["methods"]["bucket"]["coverage_agrees"] and not row["methods"]["vanilla"]["same_set_as_exact"]
    )
    assert not bench.fps_row(coord, 1, 100, 50)["agree"]  # the loop's prefix no longer matches either


def test_a_broken_sparse_conv_is_caught(monkeypatch):
    assert bench.sparse_row(10, 0.1, 4, 2, 1, 0)["agree"]

    class LastOffsetLost(bench.SparseConv3d):
        def kernel_map(self, x):
            m = super().kernel_map(x)
            empty = m.in_rows[-1][:0]
            return KernelMap(m.kernel_size, [*m.in_rows[:-1], empty], [*m.out_rows[:-1], empty],
                             m.identity, m.num_in, m.num_out)  # fmt: skip

    monkeypatch.setattr(bench, "SparseConv3d", LastOffsetLost)
    for stride in (1, 2):
        row = bench.sparse_row(10, 0.1, 4, stride, 1, 0)
        assert not row["agree"] and row["max_abs_diff"] > 1e-3


def test_the_png_is_written_and_redrawn_from_the_json(run, capsys):
    out, _ = run
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png.unlink()
    bench.main(["--replot", str(out)])
    assert png.read_bytes()[:4] == b"\x89PNG" and "redrew" in capsys.readouterr().out


def test_point_sources():
    box = bench.PointSource(None)
    coord, color, label = box.cloud(700, voxel=0.05, seed=3)
    assert coord.shape == (700, 3) and color.shape == (700, 3) and label.shape == (700,)
    assert (coord >= 0).all() and (coord <= np.array(bench.BOX)).all()
    assert len(np.unique(np.floor(coord / 0.05), axis=0)) == 700  # one point per voxel
    assert np.array_equal(coord, box.cloud(700, voxel=0.05, seed=3)[0])  # seeded
    assert "uniform" in box.describe()


def test_rooms_are_laid_side_by_side(rooms):
    source = bench.PointSource(str(rooms))
    one = source.cloud(900, room=0)[0]
    assert one[:, 0].max() <= 4.0  # a crop of the first room
    many = source.cloud(2500)[0]  # more than one room holds: three rooms along x
    assert len(many) == 2500 and many[:, 0].max() > 8.0
    assert "SYNTHETIC" in source.describe()


def test_surface_voxels_are_distinct_and_exact():
    v = bench.surface_voxels(24, 0.05)
    assert len(v) == round(0.05 * 24**3) and len(torch.unique(v, dim=0)) == len(v)
    assert int(v.min()) >= 0 and int(v.max()) < 24


def test_help_exits_0():
    with pytest.raises(SystemExit) as exc:
        bench.main(["--help"])
    assert exc.value.code == 0


@pytest.mark.parametrize(
    "args, match",
    [
        (["--threads", "0"], "--threads must be >= 1"),
        (["--repeats", "0"], "--repeats must be >= 1"),
        (["--data", "/nonexistent/rooms"], "/nonexistent/rooms: no such folder"),
        (["--replot", "/nonexistent/bench.json"], "cannot read a benchmark JSON"),
    ],
)
def test_bad_arguments_are_one_line(capsys, args, match):
    assert run_cli(bench.main, args) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_a_folder_without_rooms_is_one_line(tmp_path, capsys):
    assert run_cli(bench.main, ["--data", str(tmp_path), "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert "no Area_X_<room>.npy files" in err and err.count("\n") == 1
