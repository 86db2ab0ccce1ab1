"""shared.report: markdown tables, mean ± std, provenance, metrics.json and PNG plots."""

from __future__ import annotations

import json
import math

import matplotlib
import matplotlib.image
import numpy as np
import pytest
import torch

from shared.checkpoint import git_commit
from shared.report import (
    Report,
    fmt,
    machine_description,
    markdown_table,
    mean_std,
    paper_vs_ours_table,
    plot_curves,
    plot_grouped_bars,
    plot_heatmap,
    plot_scatter,
    provenance_block,
    write_metrics_json,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_fmt_cells():
    assert fmt(0.123456) == "0.1235"
    assert fmt(np.float32(2.5), digits=1) == "2.5"
    assert fmt(float("nan")) == "—" and fmt(None) == "—"
    assert fmt(3) == "3" and fmt("R@1") == "R@1" and fmt("81.2 ± 0.3") == "81.2 ± 0.3"


def test_mean_std_uses_sample_std_and_skips_missing():
    vals = [80.0, 81.0, 83.0]
    assert mean_std(vals, digits=2) == f"{np.mean(vals):.2f} ± {np.std(vals, ddof=1):.2f}"
    assert mean_std([1.0, 3.0]) == "2.0000 ± 1.4142"
    assert mean_std([5.0, float("nan"), None], digits=1) == "5.0"
    assert mean_std([]) == "—" and mean_std([float("nan")]) == "—"


def test_markdown_table_exact_and_row_check():
    table = markdown_table(["model", "R@1", "n"], [["RCAR", 0.5, 3], ["VSE", None, 4]], digits=2)
    assert table == "| model | R@1 | n |\n|---|---|---|\n| RCAR | 0.50 | 3 |\n| VSE | — | 4 |"
    with pytest.raises(ValueError, match="has 2 cells; the table has 3 columns"):
        markdown_table(["a", "b", "c"], [[1, 2]])


def test_paper_vs_ours_table():
    table = paper_vs_ours_table([("rsum", 520.1, "505.3 ± 1.2"), ("i2t_r1", 80.0, None)], digits=1)
    lines = table.splitlines()
    assert lines[0] == "| metric | paper | ours |"
    assert lines[2] == "| rsum | 520.1 | 505.3 ± 1.2 |" and lines[3] == "| i2t_r1 | 80.0 | — |"
    assert paper_vs_ours_table([("a", 1.0, 2.0)], paper_label="paper (Tab. 2)").startswith(
        "| metric | paper (Tab. 2) | ours |"
    )


def test_provenance_block():
    block = provenance_block("Flickr30K precomp features", "1,000 images", "make rcar-small", 150.0)
    assert block.startswith("## Provenance")
    for needle in (
        "Flickr30K precomp features",
        "1,000 images",
        "`make rcar-small`",
        f"`{git_commit()}`",
        "2.5 min",
        machine_description(),
        f"torch {torch.__version__}",
    ):
        assert needle in block
    assert "cores" in machine_description()


def test_report_render_and_write(tmp_path):
    plot = plot_curves(
        {"train": ([1, 2, 3], [1.0, 0.5, 0.25])}, tmp_path / "out" / "loss.png", "epoch", "loss"
    )
    report = (
        Report("RCAR on Flickr30K")
        .heading("Results")
        .text("  Small run.  \n")
        .table(["metric", "value"], [["rsum", 500.123456]], digits=1)
        .heading("Details", level=3)
        .image(plot, "training loss")
    )
    expected = (
        "# RCAR on Flickr30K\n\n## Results\n\nSmall run.\n\n| metric | value |\n|---|---|\n| rsum | 500.1 |"
        "\n\n### Details\n\n![training loss](loss.png)\n"
    )
    assert report.render() == expected
    path = report.write(tmp_path / "out", metrics={"rsum": 500.123456})
    assert path == tmp_path / "out" / "report.md" and path.read_text() == expected
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == {"rsum": 500.123456}
    report.write(tmp_path / "nometrics")
    assert not (tmp_path / "nometrics" / "metrics.json").exists()


def test_metrics_json_round_trip(tmp_path):
    metrics = {
        "rsum": 501.5,
        "per_seed": [1.0, 2.0],
        "np_scalar": np.float32(0.5),
        "np_int": np.int64(7),
        "array": np.arange(3),
        "tensor": torch.tensor([[1.0, 2.0]]),
        "nested": {"miou": float("nan"), "path": "x"},
        "other": object,
    }
    path = tmp_path / "deep" / "metrics.json"
    write_metrics_json(metrics, path)
    back = json.loads(path.read_text())
    assert back["rsum"] == 501.5 and back["per_seed"] == [1.0, 2.0]
    assert back["np_scalar"] == 0.5 and back["np_int"] == 7 and isinstance(back["np_int"], int)
    assert back["array"] == [0, 1, 2] and back["tensor"] == [[1.0, 2.0]]
    assert math.isnan(back["nested"]["miou"]) and back["nested"]["path"] == "x"
    assert back["other"] == str(object)


def _assert_png(path, min_w: int = 100, min_h: int = 100) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] >= min_h and img.shape[1] >= min_w
    assert img[..., :3].std() > 0  # something was drawn
    return img


def test_plots_use_the_agg_backend():
    assert matplotlib.get_backend().lower() == "agg"  # headless: no display needed


def test_plot_curves_png(tmp_path):
    path = plot_curves(
        {"train": ([1, 2, 3], [3.0, 2.0, 1.5]), "val": (range(1, 4), np.array([3.2, 2.5, 2.4]))},
        tmp_path / "plots" / "curves.png",
        xlabel="epoch",
        ylabel="loss",
        title="loss",
    )
    img = _assert_png(path)
    assert img.shape[:2] == (540, 840)  # 7 x 4.5 in at 120 dpi
    _assert_png(plot_curves({}, tmp_path / "empty.png", "x", "y"))


def test_plot_grouped_bars_png_with_and_without_errors(tmp_path):
    groups = ["R@1", "R@5", "R@10"]
    series = {"paper": [80.0, 95.0, 98.0], "ours": [78.0, 94.0, 97.5]}
    a = plot_grouped_bars(groups, series, tmp_path / "bars.png", "recall (%)", title="t", ylim=(0, 100))
    b = plot_grouped_bars(
        groups, series, tmp_path / "bars_err.png", "recall (%)", errors={"ours": [1.0, 0.5, 0.2]}
    )
    img_a, img_b = _assert_png(a), _assert_png(b)
    assert img_a.shape == img_b.shape and not np.array_equal(img_a, img_b)  # error bars change the picture


def test_plot_curves_with_a_regime_line_and_bars_from_a_stated_baseline(tmp_path):
    curves = {
        "t2i RAR": ([1, 2, 3, 4], [300.0, 420.0, 410.0, 300.0]),
        "t2i RCR": ([1, 2, 3, 4], [310, 400, 430, 450]),
    }
    plain = _assert_png(plot_curves(curves, tmp_path / "plain.png", "epoch", "dev rsum"))
    marked = _assert_png(
        plot_curves(curves, tmp_path / "marked.png", "epoch", "dev rsum", vlines=[(2.5, "switch")])
    )
    assert plain.shape == marked.shape and not np.array_equal(plain, marked)  # the line is drawn
    bars = plot_grouped_bars(["a", "b"], {"x": [0.71, 0.72]}, tmp_path / "b.png", "AUC", ylim=(0.6, None))
    _assert_png(bars)


def test_plot_scatter_with_fit_and_heatmap(tmp_path):
    pts = {"fp32": ([1.0, 2.0, 3.0], [0.5, 0.6, 0.8]), "int8": ([0.5], [0.45])}
    a = _assert_png(
        plot_scatter(pts, tmp_path / "s.png", "latency (ms)", "macro F1", "t", labels={"int8": ["q"]})
    )
    b = _assert_png(plot_scatter(pts, tmp_path / "f.png", "latency (ms)", "macro F1", "t", fit=True))
    assert a.shape == b.shape and not np.array_equal(a, b)
    _assert_png(plot_heatmap(np.arange(6).reshape(2, 3), ["d1", "d2"], ["e1", "e2", "e3"], tmp_path / "h.png",
                             "router use", "share of tokens"))  # fmt: skip


def test_quick_reports_never_go_under_results(tmp_path):
    from shared.report import report_dir

    assert report_dir("rcar", quick=False, root=tmp_path) == tmp_path / "results" / "rcar"
    quick = report_dir("rcar", quick=True, root=tmp_path)
    assert quick == tmp_path / "runs" / "rcar" / "quick" and "results" not in quick.parts


def test_error_bars_of_a_non_negative_metric_stop_at_zero():
    from shared.report import error_bar_extents

    ext = error_bar_extents([0.0, 2.0, 10.0], [1.5, 3.0, 1.0])
    assert ext.tolist() == [[0.0, 2.0, 1.0], [1.5, 3.0, 1.0]]
    # a metric that can be negative (a gap, a correlation) keeps symmetric whiskers
    assert error_bar_extents([-1.0, 2.0], [1.5, 3.0]).tolist() == [[1.5, 3.0], [1.5, 3.0]]
