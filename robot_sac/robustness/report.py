"""Write a study's ``summary.json`` and ``report.md`` (the figures come from ``figures``).

The markdown holds only what the grid determines (no wall time), so a re-run with the same seed writes
the same report byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from robot_sac.robustness.grid import BASELINE


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def worst_first(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells ordered from the worst condition: lowest success rate, then lowest normalized return, then most
    falls, then lowest return."""
    def key(cell):
        success = cell["success_rate"] if cell["success_rate"] is not None else float("inf")
        normalized = cell["return_normalized"] if cell["return_normalized"] is not None else float("inf")
        return (success, normalized, -cell["fall_rate"], cell["return_mean"])
    return sorted(cells, key=key)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _cell_row(cell: dict[str, Any], falls: bool) -> list[str]:
    row = [
        cell["perturbation"], f"{cell['severity']:g}", cell["backend"], _pct(cell["success_rate"]),
        f"{cell['return_mean']:.1f} ± {cell['return_std']:.1f}", _num(cell["return_normalized"]),
    ]
    return row + [_pct(cell["fall_rate"])] if falls else row


def _cell_header(falls: bool) -> list[str]:
    header = ["perturbation", "severity", "backend", "success", "return (mean ± std)", "return normalized"]
    return header + ["falls"] if falls else header


def _verdict_lines(verdicts: dict[str, dict[str, dict]], backends: list[str]) -> list[str]:
    lines = []
    for name, by_backend in verdicts.items():
        for backend in backends:
            suffix = f" [{backend}]" if len(backends) > 1 else ""
            lines.append(f"- {by_backend[backend]['text']}{suffix}")
    return lines


def markdown(summary: dict[str, Any], figures: dict[str, str]) -> str:
    """The report: verdicts, the worst conditions, one section per perturbation, and the comparison."""
    backends = summary["backends"]
    falls = summary["falls_possible"]
    policies = [summary["policy"]] + [c["policy"] for c in summary["compare"]]
    lines = [
        f"# Robustness of `{summary['policy']}` on {summary['task']}",
        "",
        f"Suite `{summary['suite']}`, seed {summary['seed']}, {summary['episodes']} episodes per cell "
        f"(episode i of every cell starts from the same seed), backend(s) {', '.join(backends)}, "
        f"{'randomized' if summary['randomize_dynamics'] else 'nominal'} dynamics. "
        "Success is the task's own definition; return normalized: 1 = the unperturbed baseline, "
        "0 = an idle policy holding the start pose "
        f"(idle return {', '.join(f'{b} {v:.1f}' for b, v in summary['idle_return'].items())}).",
        "",
        "## Verdicts (first severity where success drops below 50%)",
        "",
        *_verdict_lines(summary["verdicts"], backends),
        "",
        "## Conditions, worst first",
        "",
        *_table(_cell_header(falls), [_cell_row(c, falls) for c in worst_first(summary["cells"])]),
        "",
    ]
    if "overview" in figures:
        lines += [f"![success rate by perturbation and severity]({figures['overview']})", ""]
    for name, info in summary["perturbations"].items():
        cells = [c for c in summary["cells"] if c["perturbation"] in (name, BASELINE)]
        lines += [f"## {name}", "", f"{info['description']}.", "",
                  *_table(_cell_header(falls), [_cell_row(c, falls) for c in cells]), ""]
        if name in figures:
            lines += [f"![{name}]({figures[name]})", ""]
    if summary["compare"]:
        lines += ["## Policies compared", "", *[f"- P{i}: `{p}`" for i, p in enumerate(policies)], ""]
        studies = [summary] + summary["compare"]
        header = ["perturbation", "severity", "backend"]
        header += [f"success P{i}" for i in range(len(studies))] + [f"normalized P{i}" for i in range(len(studies))]
        rows = []
        for i, cell in enumerate(summary["cells"]):
            others = [s["cells"][i] for s in studies]
            rows.append([cell["perturbation"], f"{cell['severity']:g}", cell["backend"]]
                        + [_pct(c["success_rate"]) for c in others] + [_num(c["return_normalized"]) for c in others])
        lines += [*_table(header, rows), ""]
        for i, study in enumerate(studies):
            lines += [f"Verdicts for P{i}:", "", *_verdict_lines(study["verdicts"], backends), ""]
    return "\n".join(lines)


def write_report(out: Path, summary: dict[str, Any], figures: dict[str, str]) -> None:
    """``out/summary.json`` and ``out/report.md``; ``figures`` maps a perturbation (or ``overview``) to a PNG
    file name inside ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({**summary, "figures": figures}, indent=2) + "\n")
    (out / "report.md").write_text(markdown(summary, figures))
