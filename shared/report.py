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


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        import os

        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.system()} {cpu}, {cores} cores, {gpu}"


def provenance_block(data_source: str, data_size: str, command: str, wall_time_s: float) -> str:
    """The block every report carries: where the data came from, what ran, where and how long."""
    lines = [
        "## Provenance",
        "",
        f"- **Data**: {data_source}",
        f"- **Data size**: {data_size}",
        f"- **Command**: `{command}`",
        f"- **Commit**: `{git_commit()}`",
        f"- **Wall time**: {wall_time_s / 60:.1f} min",
        f"- **Machine**: {machine_description()}",
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


def plot_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> Path:
    """Line plot of named ``(x, y)`` series (training curves)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (x, y) in curves.items():
        ax.plot(list(x), list(y), label=name, linewidth=1.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_grouped_bars(
    groups: Sequence[str],
    series: dict[str, Sequence[float]],
    path: str | Path,
    ylabel: str,
    errors: dict[str, Sequence[float]] | None = None,
    title: str = "",
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Grouped bar chart: one group per entry of ``groups``, one bar per series (e.g. per model)."""
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups) * max(1, len(series)) * 0.5), 4.5))
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(groups))
    for i, (name, vals) in enumerate(series.items()):
        err = errors.get(name) if errors else None
        ax.bar(x + (i - (n - 1) / 2) * width, vals, width, yerr=err, label=name, capsize=2)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(n, 4))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
