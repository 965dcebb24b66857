"""Per-cell metrics and per-perturbation verdicts, from episode outcomes (pure functions).

``return_normalized`` puts a cell's mean return on the scale of its policy's
unperturbed baseline: 1 = as good as unperturbed, 0 = as good as the idle
reference (a policy that holds the start pose), below 0 = worse than idling.
A ratio to the baseline alone would flip sign with the task's reward offsets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_sac.robustness.grid import BASELINE, Condition
from robot_sac.robustness.runner import EpisodeOutcome

SUCCESS_THRESHOLD = 0.5
"""A perturbation breaks a policy at the first severity where its success rate falls below this."""


def normalized_return(value: float, baseline: float, idle: float) -> float | None:
    """``(value - idle) / (baseline - idle)``; None when the policy's baseline does no better than idling."""
    span = baseline - idle
    if not span > 1e-9:
        return None
    return float((value - idle) / span)


def cell_metrics(
    condition: Condition, backend: str, outcomes: list[EpisodeOutcome], baseline_return: float, idle_return: float
) -> dict[str, Any]:
    """One cell of ``summary.json``: the condition, its episodes and their metrics."""
    returns = np.array([o.episode_return for o in outcomes], dtype=np.float64)
    successes = [o.success for o in outcomes if o.success is not None]
    return_mean = float(returns.mean())
    return {
        "perturbation": condition.perturbation,
        "severity": condition.severity,
        "backend": backend,
        "episodes": len(outcomes),
        "success_rate": float(np.mean(successes)) if successes else None,
        "return_mean": return_mean,
        "return_std": float(returns.std()),
        "return_normalized": normalized_return(return_mean, baseline_return, idle_return),
        "fall_rate": float(np.mean([o.fell for o in outcomes])),
        "length_mean": float(np.mean([o.length for o in outcomes])),
        "returns": returns.tolist(),
    }


def verdict(baseline: dict[str, Any], cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Where one perturbation breaks a policy on one backend. ``cells``: its cells in the suite's severity
    order (mildest first), ``baseline`` the unperturbed cell. ``breaks_at`` is the first severity with
    success below ``SUCCESS_THRESHOLD`` (None: it held at every severity, or never held at all);
    ``holds_up_to`` the last severity before that."""
    if not cells:
        raise ValueError("verdict: no cells")
    name = cells[0]["perturbation"]
    if any(c["success_rate"] is None for c in [baseline, *cells]):
        return {"breaks_at": None, "holds_up_to": None, "text": f"{name}: the task defines no success"}
    if baseline["success_rate"] < SUCCESS_THRESHOLD:
        text = (f"{name}: no verdict, success is below {SUCCESS_THRESHOLD:.0%} already without perturbation "
                f"({baseline['success_rate']:.0%})")
        return {"breaks_at": None, "holds_up_to": None, "text": text}
    holds = None
    for cell in cells:
        if cell["success_rate"] < SUCCESS_THRESHOLD:
            before = "" if holds is None else f", holds at {holds:g}"
            text = (f"{name}: success drops below {SUCCESS_THRESHOLD:.0%} at severity {cell['severity']:g} "
                    f"({cell['success_rate']:.0%}){before}")
            return {"breaks_at": cell["severity"], "holds_up_to": holds, "text": text}
        holds = cell["severity"]
    text = (f"{name}: success stays at or above {SUCCESS_THRESHOLD:.0%} up to the harshest severity tested, "
            f"{holds:g} ({cells[-1]['success_rate']:.0%})")
    return {"breaks_at": None, "holds_up_to": holds, "text": text}


def summarize_policy(
    outcomes: dict[tuple[str, Condition], list[EpisodeOutcome]], idle: dict[str, list[EpisodeOutcome]],
    conditions: list[Condition], backends: list[str],
) -> dict[str, Any]:
    """One policy's ``cells`` (every backend x condition, baseline first) and ``verdicts``
    (perturbation -> backend -> verdict). ``outcomes`` maps (backend, condition) to its episodes, ``idle``
    maps a backend to the idle reference's baseline episodes."""
    cells, verdicts = [], {}
    for backend in backends:
        baseline = Condition(BASELINE, 0.0)
        baseline_return = float(np.mean([o.episode_return for o in outcomes[(backend, baseline)]]))
        idle_return = float(np.mean([o.episode_return for o in idle[backend]]))
        backend_cells = [cell_metrics(c, backend, outcomes[(backend, c)], baseline_return, idle_return)
                         for c in conditions]
        cells += backend_cells
        for name in dict.fromkeys(c.perturbation for c in conditions if c.perturbation != BASELINE):
            swept = [cell for cell in backend_cells if cell["perturbation"] == name]
            verdicts.setdefault(name, {})[backend] = verdict(backend_cells[0], swept)
    return {"cells": cells, "verdicts": verdicts}
