"""One robustness study: plan the grid, run it, and gather every policy's cells into the summary."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from robot_sac.robustness.grid import IDLE_POLICY, conditions, plan
from robot_sac.robustness.metrics import summarize_policy
from robot_sac.robustness.runner import run_jobs
from robot_sac.robustness.suite import Suite
from sim.perturbations import PERTURBATIONS
from sim.rewards import TASK_KINDS, never_terminates
from sim.task import TaskSpec


def run_study(
    policies: list[str | Path], task: str, backends: list[str], suite: Suite, seed: int,
    workers: int = 1, progress: bool = True, suite_name: str = "",
) -> dict[str, Any]:
    """The ``summary.json`` of a study: ``policies[0]`` is the policy under test, the rest are compared with it
    on the same jobs."""
    spec = TaskSpec.load(task)
    grid = suite.grid(spec)
    swept = conditions(grid)
    jobs = plan(grid, backends, len(policies), suite.episodes, seed)
    start = time.perf_counter()
    outcomes = run_jobs(jobs, task, policies, suite.randomize_dynamics, workers, progress)
    wall_s = time.perf_counter() - start

    per_policy: dict[int, dict] = defaultdict(lambda: defaultdict(list))
    idle: dict[str, list] = defaultdict(list)
    for job, outcome in zip(jobs, outcomes):
        if job.policy == IDLE_POLICY:
            idle[job.backend].append(outcome)
        else:
            per_policy[job.policy][(job.backend, job.condition)].append(outcome)
    studies = [summarize_policy(per_policy[i], idle, swept, backends) for i in range(len(policies))]
    return {
        "policy": str(policies[0]),
        "task": spec.name,
        "task_file": str(task),
        "backends": list(backends),
        "suite": suite_name,
        "seed": seed,
        "episodes": suite.episodes,
        "randomize_dynamics": suite.randomize_dynamics,
        "falls_possible": TASK_KINDS[spec.kind].terminated is not never_terminates,
        "perturbations": {name: {"severities": severities, "description": PERTURBATIONS[name].doc}
                          for name, severities in grid.items()},
        "idle_return": {b: float(np.mean([o.episode_return for o in idle[b]])) for b in backends},
        **studies[0],
        "compare": [{"policy": str(p), **s} for p, s in zip(policies[1:], studies[1:])],
        "workers": workers,
        "wall_s": wall_s,
    }
