"""The grid of a robustness run: every (policy, backend, condition, episode) as one seeded job.

The grid is a pure function of its inputs: the same suite, task, backends and
seed give the same jobs in the same order, and each job's outcome depends only
on the job, so a re-run (with any number of workers) gives the same report.
"""

from __future__ import annotations

from dataclasses import dataclass

BASELINE = "none"
"""The condition without perturbation; every other cell's return is normalized against it."""
IDLE_POLICY = -1
"""Policy index of the idle reference (holds the start pose), the zero of the normalized return."""


@dataclass(frozen=True)
class Condition:
    perturbation: str
    """A name in ``sim.perturbations.PERTURBATIONS``, or ``BASELINE``."""
    severity: float

    def reset_options(self) -> dict | None:
        return None if self.perturbation == BASELINE else {"perturbation": (self.perturbation, self.severity)}


@dataclass(frozen=True)
class Job:
    policy: int
    """Index into the run's policy files (0 = the policy under test, then ``--compare`` ones), or ``IDLE_POLICY``."""
    backend: str
    condition: Condition
    episode: int
    seed: int
    """The env's reset seed: the run's seed + episode, the same in every cell."""


def conditions(grid: dict[str, list[float]]) -> list[Condition]:
    """The baseline, then every perturbation's severities in the order the suite lists them."""
    out = [Condition(BASELINE, 0.0)]
    for name, severities in grid.items():
        out.extend(Condition(name, float(s)) for s in severities)
    return out


def plan(grid: dict[str, list[float]], backends: list[str], policies: int, episodes: int, seed: int) -> list[Job]:
    """All jobs: for each backend, the idle reference's baseline episodes, then each policy in every condition."""
    if policies < 1 or episodes < 1:
        raise ValueError(f"plan: need at least one policy and one episode, got {policies} and {episodes}")
    jobs = []
    for backend in backends:
        baseline = Condition(BASELINE, 0.0)
        jobs += [Job(IDLE_POLICY, backend, baseline, i, seed + i) for i in range(episodes)]
        for policy in range(policies):
            for condition in conditions(grid):
                jobs += [Job(policy, backend, condition, i, seed + i) for i in range(episodes)]
    return jobs
