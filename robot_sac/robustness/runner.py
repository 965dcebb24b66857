"""Run a grid's jobs: in this process or in worker processes, with a progress bar.

Every worker builds its envs and ``PolicyRuntime`` sessions once and keeps them; a job is one episode
through ``robot_sac.evaluation.run_episodes``. Policy files run through ``PolicyRuntime`` checked
against the task's robot, exactly as the robot loads them.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from firmware_bridge.action import ActionMapper
from firmware_bridge.policy_runtime import PolicyRuntime
from firmware_bridge.spec import RobotSpec
from robot_sac.child_processes import without_main_module
from robot_sac.evaluation import make_task_env, run_episodes
from robot_sac.robustness.grid import IDLE_POLICY, Job


@dataclass(frozen=True)
class EpisodeOutcome:
    episode_return: float
    success: bool | None
    """The task's own success flag at the end; None where the task defines none."""
    fell: bool
    """The episode ended before its time limit (the task's failure termination, e.g. a fall)."""
    length: int


class HoldStart:
    """The idle reference policy: the action that commands the start pose, every tick."""

    def __init__(self, robot_spec: RobotSpec):
        mapper = ActionMapper(robot_spec)
        self.action = np.clip((robot_spec.start - mapper.center) / mapper.scale, -1.0, 1.0).astype(np.float32)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.action


class EpisodeWorker:
    """One process's envs (one per backend) and policies (one runtime per file and backend's robot)."""

    def __init__(self, task: str, policies: list[str], randomize: bool):
        self.task, self.policies, self.randomize = task, policies, randomize
        self._envs: dict[str, object] = {}
        self._policies: dict[tuple[int, str], Callable[[np.ndarray], np.ndarray]] = {}

    def _env(self, backend: str):
        if backend not in self._envs:
            self._envs[backend] = make_task_env(self.task, backend, randomize=self.randomize)
        return self._envs[backend]

    def _policy(self, index: int, backend: str):
        key = (index, backend)
        if key not in self._policies:
            base = self._env(backend).unwrapped
            if index == IDLE_POLICY:
                self._policies[key] = HoldStart(base.robot_spec)
            else:
                self._policies[key] = PolicyRuntime(self.policies[index], base.robot_spec, base.task)
        return self._policies[key]

    def run(self, job: Job) -> EpisodeOutcome:
        env = self._env(job.backend)
        results = run_episodes(env, self._policy(job.policy, job.backend), 1, job.seed, job.condition.reset_options())
        length = results.lengths[0]
        return EpisodeOutcome(
            episode_return=results.returns[0],
            success=results.successes[0] if results.successes else None,
            fell=length < env.unwrapped.task.episode_steps,
            length=length,
        )

    def close(self) -> None:
        for env in self._envs.values():
            env.close()


_worker: EpisodeWorker | None = None


def _start_worker(task: str, policies: list[str], randomize: bool) -> None:
    global _worker
    _worker = EpisodeWorker(task, policies, randomize)


def _run_in_worker(index: int, job: Job) -> tuple[int, EpisodeOutcome]:
    return index, _worker.run(job)


def run_jobs(
    jobs: list[Job], task: str, policies: list[str | Path], randomize: bool, workers: int = 1, progress: bool = True
) -> list[EpisodeOutcome]:
    """Every job's outcome, in job order. ``workers`` > 1 spreads the jobs over that many processes."""
    if workers < 1:
        raise ValueError(f"workers: need at least 1, got {workers}")
    policies = [str(p) for p in policies]
    outcomes: list[EpisodeOutcome | None] = [None] * len(jobs)
    columns = (TextColumn("[bold]robustness[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        tracker = bar.add_task("episodes", total=len(jobs))
        if workers == 1:
            worker = EpisodeWorker(task, policies, randomize)
            try:
                for i, job in enumerate(jobs):
                    outcomes[i] = worker.run(job)
                    bar.advance(tracker)
            finally:
                worker.close()
        else:
            # spawn, not fork: the parent may already hold onnxruntime and MuJoCo state that must not be copied.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, context, _start_worker, (task, policies, randomize)) as pool:
                with without_main_module():  # the workers are started by the first submits
                    futures = [pool.submit(_run_in_worker, i, job) for i, job in enumerate(jobs)]
                for future in as_completed(futures):
                    i, outcome = future.result()
                    outcomes[i] = outcome
                    bar.advance(tracker)
    return outcomes
