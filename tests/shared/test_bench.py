"""shared.bench: timing summaries, interleaved timing, peak memory in a fresh process, machine info."""

from __future__ import annotations

import numpy as np

from shared.bench import PeakRSS, in_fresh_process, interleaved, load_note, machine_info, time_fn


def test_time_fn_counts_warmup_and_repeats_and_orders_its_summary():
    calls = []
    timing = time_fn(lambda: calls.append(1), warmup=3, repeats=7)
    assert len(calls) == 10 and timing.runs == 7
    assert 0 <= timing.best_s <= timing.median_s <= timing.p95_s


def test_interleaved_runs_each_function_in_turns():
    order = []
    out = interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=1, repeats=3)
    assert order == ["a", "b"] + ["a", "b"] * 3
    assert set(out) == {"a", "b"} and out["a"].runs == 3


def _allocate_and_touch(mb: int) -> int:
    with PeakRSS() as mem:
        buf = np.ones(mb * 2**20 // 8)  # touched pages, really resident
        buf.sum()
    return mem.growth


def test_peak_rss_in_a_fresh_process_sees_the_allocation():
    growth = in_fresh_process(_allocate_and_touch, 64)
    assert 60 * 2**20 <= growth <= 200 * 2**20


def test_machine_info_names_load_cores_and_versions():
    info = machine_info(["scikit-learn"])
    assert info["cores"] >= 1 and len(info["load_average_1_5_15"]) == 3
    assert info["libraries"]["torch"] and info["libraries"]["scikit-learn"]
    assert "cores before the run" in load_note(info)


def test_load_note_grades_the_load_against_the_cores():
    def note(load: float) -> str:
        return load_note({"load_average_1_5_15": [load, load, load], "cores": 2})

    assert "(idle)" in note(0.2) and "(lightly loaded)" in note(1.2) and "figures are noisy" in note(1.6)
