"""Heatmaps of a study: one per perturbation (metrics x severity) and an overview (perturbation x severity),
policies side by side. Green is good in every row, whichever way the metric points."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from robot_sac.robustness.grid import BASELINE

# metric key, row label, colour map (green = good), colour range.
METRICS = (
    ("success_rate", "success rate", "RdYlGn", (0.0, 1.0)),
    ("return_normalized", "return, normalized", "RdYlGn", (0.0, 1.0)),
    ("fall_rate", "fall rate", "RdYlGn_r", (0.0, 1.0)),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _format(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if key == "return_normalized" else f"{value:.0%}"


def _draw_rows(ax, rows: list[tuple[str, list[float | None], str, tuple[float, float]]], labels: list[str]) -> None:
    """One coloured band per row, each with its own colour map, every cell annotated with its value."""
    plt = _pyplot()
    for r, (key, values, cmap, (vmin, vmax)) in enumerate(rows):
        data = np.array([[np.nan if v is None else v for v in values]], dtype=float)
        ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
                  extent=(-0.5, len(values) - 0.5, r + 0.5, r - 0.5), interpolation="nearest")
        colormap = plt.get_cmap(cmap)
        for c, value in enumerate(values):
            shade = colormap((np.clip(value, vmin, vmax) - vmin) / (vmax - vmin)) if value is not None else (1, 1, 1, 1)
            dark = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.5
            ax.text(c, r, _format(key, value), ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xticks(np.arange(len(labels) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(rows) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    ax.set_facecolor("0.9")


def _studies(summary: dict[str, Any]) -> list[tuple[str, list[dict]]]:
    studies = [(summary["policy"], summary["cells"])] + [(c["policy"], c["cells"]) for c in summary["compare"]]
    return [
        (f"P{i}: {Path(p).name}" if len(studies) > 1 else Path(p).name, cells) for i, (p, cells) in enumerate(studies)
    ]


def perturbation_heatmap(summary: dict[str, Any], name: str, path: Path) -> None:
    """Rows: metric (x backend); columns: the baseline, then the perturbation's severities; a panel per policy."""
    plt = _pyplot()
    severities = summary["perturbations"][name]["severities"]
    backends = summary["backends"]
    labels = ["baseline"] + [f"{s:g}" for s in severities]
    studies = _studies(summary)
    metrics = [m for m in METRICS if m[0] != "fall_rate" or summary["falls_possible"]]
    nrows = len(metrics) * len(backends)
    width = 2.4 + 1.0 * len(labels) * len(studies) + 0.8 * (len(studies) - 1)
    fig, axes = plt.subplots(1, len(studies), figsize=(width, 1.7 + 0.55 * nrows), dpi=120, squeeze=False,
                             sharey=True, layout="constrained")
    for ax, (title, cells) in zip(axes[0], studies):
        rows, row_labels = [], []
        for backend in backends:
            mine = [c for c in cells if c["backend"] == backend]
            base = next(c for c in mine if c["perturbation"] == BASELINE)
            swept = [c for c in mine if c["perturbation"] == name]
            for key, label, cmap, limits in metrics:
                rows.append((key, [base[key]] + [c[key] for c in swept], cmap, limits))
                row_labels.append(label if len(backends) == 1 else f"{label} [{backend}]")
        _draw_rows(ax, rows, labels)
        ax.set_yticks(range(len(rows)), row_labels)
        ax.set_xlabel("severity")
        ax.set_title(title, fontsize=10)
    # About 10 characters of 10-point text per inch of figure, with a margin.
    description = textwrap.fill(f"{name}: {summary['perturbations'][name]['description']}", int(width * 9.5))
    fig.suptitle(description, fontsize=10)
    fig.savefig(path)
    plt.close(fig)


def overview_heatmap(summary: dict[str, Any], path: Path) -> None:
    """Success rate of every perturbation (rows) at each of its severities (columns, mildest first), the
    baseline in the first column; a panel per policy and backend."""
    plt = _pyplot()
    names = list(summary["perturbations"])
    width = 1 + max(len(summary["perturbations"][n]["severities"]) for n in names)
    panels = [(f"{title} [{b}]" if len(summary["backends"]) > 1 else title, [c for c in cells if c["backend"] == b])
              for title, cells in _studies(summary) for b in summary["backends"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 + 1.05 * width * len(panels), 1.6 + 0.45 * len(names)),
                             dpi=120, squeeze=False, sharey=True, layout="constrained")
    cmap = plt.get_cmap("RdYlGn")
    for ax, (title, cells) in zip(axes[0], panels):
        base = next(c for c in cells if c["perturbation"] == BASELINE)
        grid = np.full((len(names), width), np.nan)
        for r, name in enumerate(names):
            row = [base] + [c for c in cells if c["perturbation"] == name]
            for col, cell in enumerate(row):
                rate = cell["success_rate"]
                grid[r, col] = np.nan if rate is None else rate
                shade = cmap(rate) if rate is not None else (1, 1, 1, 1)
                dark = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.5
                severity = "none" if cell["perturbation"] == BASELINE else f"{cell['severity']:g}"
                ax.text(col, r, f"{severity}\n{_format('success_rate', rate)}", ha="center", va="center",
                        fontsize=8, color="white" if dark else "black")
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto",
                          interpolation="nearest")
        ax.set_xticks(range(width), ["baseline"] + [f"level {i}" for i in range(1, width)])
        ax.set_yticks(range(len(names)), names)
        ax.set_xticks(np.arange(width + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(len(names) + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=2)
        ax.tick_params(which="minor", length=0)
        ax.set_facecolor("0.9")
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=axes[0].tolist(), label="success rate", fraction=0.03, pad=0.02)
    fig.suptitle(f"{summary['task']}: success rate per perturbation (cell: severity, success)", fontsize=11)
    fig.savefig(path)
    plt.close(fig)


def write_figures(out: Path, summary: dict[str, Any]) -> dict[str, str]:
    """Every figure into ``out``; returns perturbation (and ``overview``) -> file name."""
    out.mkdir(parents=True, exist_ok=True)
    figures = {"overview": "overview.png"}
    overview_heatmap(summary, out / figures["overview"])
    for name in summary["perturbations"]:
        figures[name] = f"heatmap_{name}.png"
        perturbation_heatmap(summary, name, out / figures[name])
    return figures
