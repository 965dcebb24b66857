"""Reward terms, termination and success: numpy functions of ``RobotState`` (+ action), so the learner
scores real robot transitions with the code that scored simulated ones.

Each task kind has an explicit ``{term name: function}`` table. A term
returns its raw value (documented on the function); the task file weights it
(signs live in the weights). A weight for a term not in the table is an error
when the task loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import RobotState
from sim.task import Criteria


@dataclass(frozen=True)
class Transition:
    """One control tick as the reward sees it."""

    previous_state: RobotState
    state: RobotState
    """The state after the action (true state in simulation, measured on a robot)."""
    action: np.ndarray
    """(n,) policy output in [-1, 1] of this tick."""
    previous_action: np.ndarray
    """(n,) policy output of the tick before (zeros at episode start)."""
    goals: dict[str, float]
    robot: RobotSpec
    criteria: Criteria


def wrap_angle(angle: float) -> float:
    return float((angle + np.pi) % (2.0 * np.pi) - np.pi)


def valve_error(state: RobotState, goals: dict[str, float]) -> float:
    """Goal minus valve angle, the short way round [rad]."""
    return wrap_angle(goals["valve_angle"] - state.extra("valve_angle"))


# Quadruped walk terms.


def forward_velocity(t: Transition) -> float:
    """Base velocity along world +x [m/s]."""
    return float(t.state.extra("base_velocity_x"))


SPEED_TRACKING_WIDTH = 0.5
"""``speed_tracking`` falls to 1/e this far from the goal speed [m/s]."""


def speed_tracking(t: Transition) -> float:
    """exp(-((vx - goal) / SPEED_TRACKING_WIDTH)^2) for the goal ``forward_speed`` [m/s]: 1 at the goal speed, 0.37
    half a metre per second off it. Unlike ``forward_velocity`` it stops paying for speed beyond the goal, where a
    gait buys little progress with more risk of a fall (legged_gym's velocity-tracking reward, for a fixed command)."""
    if "forward_speed" not in t.goals:
        raise ValueError("goals.forward_speed: the speed_tracking term needs a goal speed [m/s]")
    error = (float(t.state.extra("base_velocity_x")) - t.goals["forward_speed"]) / SPEED_TRACKING_WIDTH
    return float(np.exp(-error * error))


def lateral_velocity(t: Transition) -> float:
    """|base velocity along world y| [m/s]."""
    return abs(float(t.state.extra("base_velocity_y")))


def alive(t: Transition) -> float:
    """1 per tick (the tick of a fall included: it ends the episode, so no later tick pays)."""
    return 1.0


def fallen(t: Transition) -> float:
    """1 in a fallen state (tilt or base height past ``criteria``), else 0: in simulation the tick the episode ends
    on; a robot's rows recorded while it lies fallen each count. Weighted negative, it is a fixed cost on top of the
    reward that the rest of the episode would have paid."""
    return float(quadruped_fallen(t.state, t.criteria))


def upright(t: Transition) -> float:
    """cos(roll) cos(pitch): 1 level, 0 on its side."""
    return float(np.cos(t.state.imu[0]) * np.cos(t.state.imu[1]))


def torque(t: Transition) -> float:
    """Sum of squared motor torques [N^2 m^2], from the measured currents."""
    tau = t.state.joint_current * t.robot.torque_constant
    return float(np.dot(tau, tau))


def action_smoothness(t: Transition) -> float:
    """Sum of squared changes of the policy output since the last tick."""
    delta = t.action - t.previous_action
    return float(np.dot(delta, delta))


# Claw turn terms.


def angle_error(t: Transition) -> float:
    """|valve goal error| [rad], in [0, pi]."""
    return abs(valve_error(t.state, t.goals))


def progress(t: Transition) -> float:
    """Decrease of |valve goal error| this tick [rad]: dense shaping that pays for turning the right way."""
    return abs(valve_error(t.previous_state, t.goals)) - abs(valve_error(t.state, t.goals))


def within_tolerance(t: Transition) -> float:
    """1 while the valve is within the success tolerance of its goal."""
    return float(valve_at_goal(t.state, t.goals, t.criteria))


NEAR_GOAL_FACTOR = 3.0
"""``near_goal`` pays within this many success tolerances of the goal (30 degrees at the default 10)."""


def near_goal(t: Transition) -> float:
    """1 while the valve is within ``NEAR_GOAL_FACTOR`` success tolerances of its goal: ROBEL's two-level goal
    bonus (small and wide, large and tight), which pays for reaching the goal region and for holding still there."""
    if t.criteria.success_tolerance_deg is None:
        raise ValueError("criteria.success_tolerance_deg: the claw turn task needs a success tolerance")
    return float(abs(valve_error(t.state, t.goals)) < NEAR_GOAL_FACTOR * np.deg2rad(t.criteria.success_tolerance_deg))


def joint_velocity(t: Transition) -> float:
    """Mean squared joint velocity [rad^2/s^2]."""
    return float(np.mean(t.state.joint_vel**2))


def effort(t: Transition) -> float:
    """Mean squared motor current [A^2]."""
    return float(np.mean(t.state.joint_current**2))


@dataclass(frozen=True)
class TaskKind:
    terms: dict[str, Callable[[Transition], float]]
    terminated: Callable[[RobotState, Criteria], bool]
    """A failure that ends the episode (a fall); not the time limit."""
    success: Callable[[RobotState, dict[str, float], Criteria], bool] | None
    """Whether the episode counts as a success if it ends in this state; None: the task has no success."""


def quadruped_fallen(state: RobotState, criteria: Criteria) -> bool:
    max_tilt = np.deg2rad(criteria.max_tilt_deg) if criteria.max_tilt_deg is not None else np.inf
    if abs(state.imu[0]) > max_tilt or abs(state.imu[1]) > max_tilt:
        return True
    height = state.extras.get("base_height")
    return criteria.min_base_height is not None and height is not None and height < criteria.min_base_height


def walked_far_enough(state: RobotState, goals: dict[str, float], criteria: Criteria) -> bool:
    if criteria.min_distance_m is None:
        raise ValueError("criteria.min_distance_m: the quadruped walk task needs a distance to count a success")
    return not quadruped_fallen(state, criteria) and state.extra("base_position_x") >= criteria.min_distance_m


def never_terminates(state: RobotState, criteria: Criteria) -> bool:
    return False


def valve_at_goal(state: RobotState, goals: dict[str, float], criteria: Criteria) -> bool:
    if criteria.success_tolerance_deg is None:
        raise ValueError("criteria.success_tolerance_deg: the claw turn task needs a success tolerance")
    return abs(valve_error(state, goals)) < np.deg2rad(criteria.success_tolerance_deg)


TASK_KINDS: dict[str, TaskKind] = {
    "quadruped_walk": TaskKind(
        terms={
            "forward_velocity": forward_velocity,
            "speed_tracking": speed_tracking,
            "lateral_velocity": lateral_velocity,
            "alive": alive,
            "fallen": fallen,
            "upright": upright,
            "torque": torque,
            "action_smoothness": action_smoothness,
        },
        terminated=quadruped_fallen,
        success=walked_far_enough,
    ),
    "claw_turn": TaskKind(
        terms={
            "angle_error": angle_error,
            "progress": progress,
            "within_tolerance": within_tolerance,
            "near_goal": near_goal,
            "joint_velocity": joint_velocity,
            "effort": effort,
        },
        terminated=never_terminates,
        success=valve_at_goal,
    ),
}


TERM_GOALS: dict[str, tuple[str, ...]] = {
    "speed_tracking": ("forward_speed",),
    "angle_error": ("valve_angle",),
    "progress": ("valve_angle",),
    "within_tolerance": ("valve_angle",),
    "near_goal": ("valve_angle",),
}
"""The goals each term reads: a task that weights the term must give them a value (checked when it loads, so a
learner does not find out by scoring every real row as unscorable)."""


class Reward:
    """The weighted sum of a task's terms: ``reward(transition) -> (total, {term: weighted value})``."""

    def __init__(self, kind: str, weights: dict[str, float]) -> None:
        table = TASK_KINDS[kind].terms
        unknown = sorted(set(weights) - set(table))
        if unknown:
            raise ValueError(f"reward.{unknown[0]}: unknown reward term for {kind} (known: {', '.join(table)})")
        self._terms = [(name, table[name], weight) for name, weight in weights.items()]

    def __call__(self, transition: Transition) -> tuple[float, dict[str, float]]:
        parts = {name: weight * fn(transition) for name, fn, weight in self._terms}
        return float(sum(parts.values())), parts
