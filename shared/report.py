"""Writers for ``results/<paper>/report.md``, ``metrics.json`` and PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import math
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from shared.checkpoint import git_commit


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats with fixed digits, NaN/None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, float | np.floating):
        return "—" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def mean_std(values: Sequence[float], digits: int = 4) -> str:
    """``mean ± std`` (sample std, ddof=1) of per-seed values; a single value has no std."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return "—"
    if arr.size == 1:
        return f"{arr[0]:.{digits}f}"
    return f"{arr.mean():.{digits}f} ± {arr.std(ddof=1):.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells; the table has {len(headers)} columns")
        lines.append("| " + " | ".join(fmt(c, digits) for c in row) + " |")
    return "\n".join(lines)


def paper_vs_ours_table(
    rows: Sequence[tuple[str, float | None, float | str | None]], paper_label: str = "paper", digits: int = 4
) -> str:
    """``(metric, paper value, ours)`` rows -> a three-column table; ``ours`` may be a ``mean ± std`` string."""
    return markdown_table(["metric", paper_label, "ours"], [list(r) for r in rows], digits)


def report_dir(paper: str, quick: bool, root: str | Path = ".") -> Path:
    """Where ``<paper>.reproduce`` writes: ``results/<paper>/`` (committed) for the full run, and
    ``runs/<paper>/quick/`` (gitignored) for ``QUICK=1``, so a quick run never overwrites committed results."""
    return Path(root) / ("runs" if quick else "results") / paper / ("quick" if quick else "")


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        import os

        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.system()} {cpu}, {cores} cores, {gpu}"


def provenance_block(
    data_source: str,
    data_size: str,
    command: str,
    wall_time_s: float,
    commit: str | None = None,
    machine: str | None = None,
) -> str:
    """The block every report carries: where the data came from, what ran, where and how long.

    ``commit`` and ``machine`` default to this checkout and this machine; a report rebuilt from stored
    results passes the ones its runs were made at.
    """
    lines = [
        "## Provenance",
        "",
        f"- **Data**: {data_source}",
        f"- **Data size**: {data_size}",
        f"- **Command**: `{command}`",
        f"- **Commit**: `{commit or git_commit()}`",
        f"- **Wall time**: {wall_time_s / 60:.1f} min",
        f"- **Machine**: {machine or machine_description()}",
        f"- **Software**: Python {sys.version.split()[0]}, torch {torch.__version__}",
    ]
    return "\n".join(lines)


class Report:
    """Builds a markdown report section by section and writes it with its metrics and plots."""

    def __init__(self, title: str):
        self.parts: list[str] = [f"# {title}"]

    def heading(self, text: str, level: int = 2) -> Report:
        self.parts.append(f"{'#' * level} {text}")
        return self

    def text(self, text: str) -> Report:
        self.parts.append(text.strip())
        return self

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> Report:
        self.parts.append(markdown_table(headers, rows, digits))
        return self

    def image(self, path: str | Path, alt: str) -> Report:
        self.parts.append(f"![{alt}]({Path(path).name})")
        return self

    def render(self) -> str:
        return "\n\n".join(self.parts) + "\n"

    def write(self, out_dir: str | Path, metrics: dict[str, Any] | None = None) -> Path:
        """Write ``report.md`` (and ``metrics.json`` when given) into ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "report.md"
        path.write_text(self.render())
        if metrics is not None:
            write_metrics_json(metrics, out_dir / "metrics.json")
        return path


def write_metrics_json(metrics: dict[str, Any], path: str | Path) -> None:
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray | torch.Tensor):
            return o.tolist()
        return str(o)

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(metrics, indent=2, default=default, allow_nan=True) + "\n")


def _save(fig: Any, path: str | Path) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _legend_outside(fig: Any, n: int) -> None:
    """Legend to the right of the axes, so it never covers data (constrained layout makes room for it)."""
    if n:
        fig.legend(loc="outside right upper", fontsize=7, frameon=False)


def plot_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str = "",
    vlines: Sequence[tuple[float, str]] = (),
    integer_x: bool = True,
    xscale: str = "linear",
    yscale: str = "linear",
) -> Path:
    """Line plot of named ``(x, y)`` series (training curves), legend outside the axes.

    ``vlines`` marks where the regime changes (e.g. ``[(5.5, "hardest negatives from epoch 6")]``);
    ``integer_x`` puts ticks on whole numbers only (epochs).
    """
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for name, (x, y) in curves.items():
        xs = list(x)
        ax.plot(xs, list(y), label=name, linewidth=1.5, marker="o" if len(xs) <= 12 else None, markersize=3)
    for i, (x, label) in enumerate(vlines):  # labels of neighbouring lines stacked, not overprinted
        ax.axvline(x, color="0.3", linestyle="--", linewidth=1)
        note = ax.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12 - 10 * i),
                           textcoords="offset points", fontsize=7, color="0.3")  # fmt: skip
        note.set_in_layout(False)  # a long label may run past the axes; it must not shrink them
    ax.set_xscale(xscale)
    ax.set_yscale(yscale)
    if integer_x and xscale == "linear":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or ylabel)
    ax.grid(alpha=0.3)
    _legend_outside(fig, len(curves))
    return _save(fig, path)


def error_bar_extents(values: Sequence[float], errors: Sequence[float]) -> np.ndarray:
    """(2, n) lower and upper whisker lengths of ``values`` +/- ``errors``. When no value is negative (an IoU,
    F1 or AUC), the lower whisker stops at 0: mean - std below 0 is not a value the metric can take and would
    only push the axis below its stated baseline."""
    vals, err = np.asarray(values, dtype=float), np.asarray(errors, dtype=float)
    lower = np.minimum(err, vals) if np.all(vals[np.isfinite(vals)] >= 0) else err
    return np.stack([lower, err])


def plot_grouped_bars(
    groups: Sequence[str],
    series: dict[str, Sequence[float]],
    path: str | Path,
    ylabel: str,
    errors: dict[str, Sequence[float]] | None = None,
    title: str = "",
    ylim: tuple[float, float | None] | None = None,
    rotation: float = 20,
) -> Path:
    """Grouped bar chart: one group per entry of ``groups``, one bar per series (e.g. per model).

    ``errors`` draws error bars (e.g. the std over seeds; see ``error_bar_extents`` for values that cannot be
    negative). A ``ylim`` whose lower end is not 0 is stated in the axis label ("axis from 0.6"), so
    shortened bars are never read as ratios.
    """
    n = max(1, len(series))
    fig_width = min(16.0, max(6.0, 0.6 * len(groups) * n)) + 2  # capped: many bars get thinner, not wider
    fig, ax = plt.subplots(figsize=(fig_width, 4.5), layout="constrained")
    width = 0.8 / n
    x = np.arange(len(groups))
    for i, (name, vals) in enumerate(series.items()):
        err = errors.get(name) if errors else None
        yerr = error_bar_extents(vals, err) if err is not None else None
        ax.bar(x + (i - (n - 1) / 2) * width, vals, width, yerr=yerr, label=name, capsize=2)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=rotation, ha="right" if rotation else "center")
    if ylim:
        ax.set_ylim(*ylim)
        if ylim[0]:
            ylabel = f"{ylabel} (axis from {ylim[0]:g})"
    ax.set_ylabel(ylabel)
    ax.set_title(title or ylabel)
    ax.grid(axis="y", alpha=0.3)
    _legend_outside(fig, len(series))
    return _save(fig, path)


def plot_scatter(
    points: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str,
    labels: dict[str, Sequence[str]] | None = None,
    fit: bool = False,
) -> Path:
    """Scatter of named point sets (e.g. latency vs F1 per model); ``labels`` annotates points, ``fit`` adds
    a least-squares line over all points (for a correlation plot)."""
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    all_x, all_y = [], []
    for name, (xs, ys) in points.items():
        ax.scatter(list(xs), list(ys), label=name, s=18)
        all_x += list(xs)
        all_y += list(ys)
        for xi, yi, text in zip(xs, ys, (labels or {}).get(name, [])):
            ax.annotate(text, (xi, yi), xytext=(3, 3), textcoords="offset points", fontsize=6)
    if fit and len(all_x) >= 2 and np.ptp(all_x) > 0:
        slope, intercept = np.polyfit(all_x, all_y, 1)
        grid = np.linspace(min(all_x), max(all_x), 50)
        ax.plot(
            grid, slope * grid + intercept, color="0.3", linestyle="--", linewidth=1, label="least squares"
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend_outside(fig, len(points) + int(fit))
    return _save(fig, path)


def plot_heatmap(
    matrix: np.ndarray,
    rows: Sequence[str],
    cols: Sequence[str],
    path: str | Path,
    title: str,
    colorbar_label: str,
    fmt_cell: str = "{:.2f}",
) -> Path:
    """A (rows x cols) matrix with its values written in the cells (e.g. router use per domain and path)."""
    matrix = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(
        figsize=(max(5, 0.6 * len(cols) + 3), max(3, 0.4 * len(rows) + 1.5)), layout="constrained"
    )
    im = ax.imshow(matrix, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(cols)), labels=list(cols), rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), labels=list(rows))
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix[i, j]
            ax.text(j, i, fmt_cell.format(value), ha="center", va="center", fontsize=7,
                    color="white" if value < np.nanmean(matrix) else "black")  # fmt: skip
    fig.colorbar(im, ax=ax, label=colorbar_label)
    ax.set_title(title)
    return _save(fig, path)
