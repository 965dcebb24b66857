"""Scoring a robot's transitions with the task's own reward and termination code (``sim.rewards``).

The robot sends what it measured; reward and termination are computed here, by the functions that scored
the simulated transitions the policy was trained on, so the critic sees one reward function. A time-limit
cut and a safety stop both end an episode without terminating it: the state did not end, we stopped
watching (or intervened), so the transition still bootstraps.

A fall terminates the episode, and in simulation nothing follows it; a robot goes on sending rows while it lies
where it fell. A row that starts in a state the task has already ended (``terminated`` holds for its first state)
is no transition of the task: it is marked (``after_termination``), not stored, and adds nothing to the robot's
episode returns. The next row that starts upright starts the next episode.

The policy was trained on steps of one control period. A row that spans another time (a tick that ran on a
stale state merges two periods into one row) is a transition of another decision process: its progress terms
are scaled and its dynamics ran longer. It still counts in the robot's episode return, but is not stored
(unless it terminates the episode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_bridge.learner_wire import TransitionBatch
from firmware_bridge.spec import RobotSpec
from sim.rewards import TASK_KINDS, Reward, Transition
from sim.task import TaskSpec


PERIOD_TOLERANCE = 0.5
"""A row is stored when its ``dt`` is within this fraction of the robot's control period of it."""
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Scored:
    """The rows of a batch that can be stored, as the replay buffer takes them, and every row's reward (stored or
    not; NaN where it could not be scored) and episode end, for the robot's episode returns."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    row_reward: np.ndarray
    """Per row of the batch from ``start``, in order: its reward, NaN where it could not be scored (non-finite
    or unscorable) or is no transition of the task (``after_termination``): the robot's episode returns are
    summed from these."""
    episode_end: np.ndarray
    """Per row from ``start``: the episode ended after it (time limit, safety stop or termination). A row that
    could not be scored still ends its episode by its flags, so the next episode's return starts afresh."""
    after_termination: np.ndarray
    """Per row from ``start``: it starts where the task had already ended the episode (a robot lying where it
    fell). Not stored; it ends an episode still open (one whose terminating row could not be scored) and adds
    nothing to any return."""
    non_finite: int = 0
    """Rows dropped for NaN or infinity anywhere in them, or for a reward too large for float32 (readings so
    large that the reward overflows)."""
    unscorable: int = 0
    """Rows the reward code could not score (a sensor or goal it needs is missing)."""
    off_period: int = 0
    """Rows scored but not stored: their ``dt`` is off the control period by more than ``PERIOD_TOLERANCE``
    (terminations are stored whatever their ``dt``)."""
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
        self.last_off_period: str | None = None

    def score(self, batch: TransitionBatch, start: int = 0) -> Scored:
        """Rows ``start:`` of ``batch`` (the ones before ``start`` are duplicates)."""
        arr = batch.arrays
        n = batch.count
        finite = np.ones(n, dtype=bool)
        for name, values in arr.items():
            if values.dtype.kind == "f":
                finite &= np.isfinite(values.reshape(n, -1)).all(1)
        period = self.robot.control_period
        on_period = np.abs(arr["dt"].astype(np.float64) - period) <= PERIOD_TOLERANCE * period
        goals = {**self.task.goals, **batch.goals}
        rows, terminated = [], []
        row_reward = np.full(n - start, np.nan, dtype=np.float32)
        episode_end = (arr["time_limit"][start:] | arr["safety_stop"][start:]).astype(bool)
        after_termination = np.zeros(n - start, dtype=bool)
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
                # The reward first: its errors name the sensor or goal a row lacks.
                reward, _ = self.reward(transition)
                if not abs(reward) <= _FLOAT32_MAX:  # huge readings (a glitch, a hostile peer) overflow the buffer
                    non_finite += 1
                    continue
                if self.kind.terminated(state, self.task.criteria):
                    after_termination[i - start] = True
                    continue
                done = self.kind.terminated(next_state, self.task.criteria)
            except (KeyError, ValueError) as exc:
                unscorable += 1
                self.last_error = str(exc)
                continue
            rows.append(i)
            terminated.append(float(done))
            row_reward[i - start] = reward
            episode_end[i - start] |= done
        idx = np.asarray(rows, dtype=np.int64)
        # A termination (a fall) is kept whatever its dt: it does not bootstrap, and falls are rare and costly.
        keep = on_period[idx] | np.asarray(terminated, dtype=bool)
        if not keep.all():
            dt = float(arr["dt"][idx[~keep][-1]])
            self.last_off_period = (
                f"a row spanned {dt * 1e3:.1f} ms; the robot's control period is {period * 1e3:.1f} ms "
                f"(rows within {PERIOD_TOLERANCE:.0%} of it are stored)"
            )
        stored = idx[keep]
        return Scored(
            obs=arr["obs"][stored], action=arr["action"][stored], reward=row_reward[stored - start],
            next_obs=arr["next_obs"][stored], terminated=np.asarray(terminated, dtype=np.float32)[keep],
            row_reward=row_reward, episode_end=episode_end, non_finite=non_finite, unscorable=unscorable,
            off_period=int((~keep).sum()), safety_stops=int(arr["safety_stop"][start:].sum()),
            terminations=int(sum(terminated)), after_termination=after_termination,
        )  # fmt: skip
