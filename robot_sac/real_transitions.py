"""Scoring a robot's transitions with the task's own reward and termination code (``sim.rewards``).

The robot sends what it measured; reward and termination are computed here, by the functions that scored
the simulated transitions the policy was trained on, so the critic sees one reward function. A time-limit
cut and a safety stop both end an episode without terminating it: the state did not end, we stopped
watching (or intervened), so the transition still bootstraps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_bridge.learner_wire import TransitionBatch
from firmware_bridge.spec import RobotSpec
from sim.rewards import TASK_KINDS, Reward, Transition
from sim.task import TaskSpec


@dataclass
class Scored:
    """The rows of a batch that can be stored, as the replay buffer takes them."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    episode_end: np.ndarray
    """Per stored row: the episode ended after it (time limit, safety stop or termination)."""
    non_finite: int = 0
    """Rows dropped for NaN or infinity anywhere in them."""
    unscorable: int = 0
    """Rows the reward code could not score (a sensor or goal it needs is missing)."""
    safety_stops: int = 0
    terminations: int = 0

    def __len__(self) -> int:
        return int(self.reward.shape[0])


class TransitionScorer:
    def __init__(self, task: TaskSpec, robot: RobotSpec):
        self.task = task
        self.robot = robot
        self.reward = Reward(task.kind, task.reward)
        self.kind = TASK_KINDS[task.kind]
        self.last_error: str | None = None

    def score(self, batch: TransitionBatch, start: int = 0) -> Scored:
        """Rows ``start:`` of ``batch`` (the ones before ``start`` are duplicates)."""
        arr = batch.arrays
        n = batch.count
        finite = np.ones(n, dtype=bool)
        for name, values in arr.items():
            if values.dtype.kind == "f":
                finite &= np.isfinite(values.reshape(n, -1)).all(1)
        goals = {**self.task.goals, **batch.goals}
        rows, rewards, terminated = [], [], []
        non_finite = unscorable = 0
        for i in range(start, n):
            if not finite[i]:
                non_finite += 1
                continue
            state, next_state = batch.state("state", i), batch.state("next_state", i)
            transition = Transition(
                previous_state=state, state=next_state,
                action=np.clip(arr["action"][i].astype(np.float64), -1.0, 1.0),
                previous_action=arr["prev_action"][i].astype(np.float64),
                goals=goals, robot=self.robot, criteria=self.task.criteria,
            )  # fmt: skip
            try:
                reward, _ = self.reward(transition)
                done = self.kind.terminated(next_state, self.task.criteria)
            except (KeyError, ValueError) as exc:
                unscorable += 1
                self.last_error = str(exc)
                continue
            rows.append(i)
            rewards.append(reward)
            terminated.append(float(done))
        idx = np.asarray(rows, dtype=np.int64)
        ends = (arr["time_limit"][idx] | arr["safety_stop"][idx]).astype(bool) | np.asarray(terminated, dtype=bool)
        return Scored(
            obs=arr["obs"][idx], action=arr["action"][idx], reward=np.asarray(rewards, dtype=np.float32),
            next_obs=arr["next_obs"][idx], terminated=np.asarray(terminated, dtype=np.float32),
            episode_end=ends, non_finite=non_finite, unscorable=unscorable,
            safety_stops=int(arr["safety_stop"][start:].sum()), terminations=int(sum(terminated)),
        )  # fmt: skip
