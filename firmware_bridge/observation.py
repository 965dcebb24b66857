"""Observation building: the one piece of code that turns a ``RobotState`` into the policy's input,
on the robot and in the simulator alike.

A feature is a name in ``FEATURES``: its width, the sensor and goal it needs,
and a function ``(state, history, spec) -> array``. The robot spec lists its
features, the task appends its own; an unknown name is an error at
construction, not a silently missing input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import RobotState
from firmware_bridge.typed_yaml import ConfigError


@dataclass
class History:
    """What the observation needs beyond the current state: the last two policy outputs, the joint positions the
    last one was computed from, and the goal."""

    last_action: np.ndarray
    """(n,) the policy output of the previous tick, in [-1, 1]; zeros at the start of an episode."""
    previous_joint_pos: np.ndarray
    """(n,) the joint positions of the state the previous tick's observation was built from (as read, noise and
    all); the start pose at the start of an episode."""
    action_before_last: np.ndarray
    """(n,) the policy output two ticks back; zeros at the start of an episode."""
    goals: dict[str, float] = field(default_factory=dict)
    """Goal values by name, e.g. ``valve_angle`` [rad]."""
    ticks: int = 0
    """Policy ticks taken in this episode."""
    start_yaw: float | None = None
    """The base's yaw [rad] (as read) at the episode's first tick; None before it."""

    def record(self, action: np.ndarray, state: RobotState) -> None:
        """Remember this tick's policy output and the state its observation was built from, for the next one."""
        if self.ticks == 0:
            self.start_yaw = float(state.imu[2])
        self.ticks += 1
        self.action_before_last = self.last_action
        self.last_action = np.array(action, dtype=np.float64)
        self.previous_joint_pos = np.array(state.joint_pos, dtype=np.float64)


class TaskObservation(Protocol):
    """What the builder reads from a task: ``firmware_bridge.task.TaskInterface`` or ``sim``'s task spec."""

    name: str
    observation: list[str]
    goals: dict[str, float]


def _wrap_angle(angle: float) -> float:
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def _valve_error(state: RobotState, history: History) -> float:
    return _wrap_angle(history.goals["valve_angle"] - state.extra("valve_angle"))


def _gait_clock(history: History, spec: RobotSpec) -> list[float]:
    # Counted in the spec's control periods, the rate the policy was trained at, so the clock runs in policy
    # ticks on the robot as in the simulator whatever the wall clock does.
    phase = 2.0 * np.pi * history.goals["gait_frequency"] * history.ticks / spec.control_rate_hz
    return [np.sin(phase), np.cos(phase)]


def _heading(state: RobotState, history: History) -> list[float]:
    # Before the first tick is recorded, the state being read is the start.
    turned = 0.0 if history.start_yaw is None else state.imu[2] - history.start_yaw
    return [np.sin(turned), np.cos(turned)]


@dataclass(frozen=True)
class Feature:
    width: Callable[[RobotSpec], int]
    compute: Callable[[RobotState, History, RobotSpec], np.ndarray | list[float]]
    sensor: str | None = None
    goal: str | None = None


def _per_joint(spec: RobotSpec) -> int:
    return spec.num_joints


def _fixed(n: int) -> Callable[[RobotSpec], int]:
    return lambda spec: n


FEATURES: dict[str, Feature] = {
    "joint_pos": Feature(_per_joint, lambda s, h, spec: s.joint_pos, "joint_encoders"),
    "joint_pos_from_start": Feature(_per_joint, lambda s, h, spec: s.joint_pos - spec.start, "joint_encoders"),
    "joint_vel": Feature(_per_joint, lambda s, h, spec: s.joint_vel, "joint_encoders"),
    "joint_current": Feature(_per_joint, lambda s, h, spec: s.joint_current, "joint_currents"),
    "last_action": Feature(_per_joint, lambda s, h, spec: h.last_action),
    # One tick of history: under randomized dynamics (motor strength, gains, damping, latency) how the joints
    # answered the last command says which dynamics the robot has, which the current state alone does not.
    "joint_pos_from_start_prev": Feature(
        _per_joint, lambda s, h, spec: h.previous_joint_pos - spec.start, "joint_encoders"
    ),
    "last_action_prev": Feature(_per_joint, lambda s, h, spec: h.action_before_last),
    # A periodic phase (sin, cos) at the goal's frequency [Hz], from the start of the episode: a rhythm for a gait
    # to lock to, as legged-locomotion policies are often given.
    "gait_clock": Feature(_fixed(2), lambda s, h, spec: _gait_clock(h, spec), goal="gait_frequency"),
    "base_roll_pitch": Feature(_fixed(2), lambda s, h, spec: s.imu[0:2], "imu"),
    "base_angular_velocity": Feature(_fixed(3), lambda s, h, spec: s.imu[3:6], "imu"),
    # How far the base has turned since the episode's first tick (sin, cos): forward is the way the robot faced
    # at the start. Without it a walking policy cannot see its heading drift and walks in arcs.
    "base_heading": Feature(_fixed(2), lambda s, h, spec: _heading(s, h), "imu"),
    "valve_angle_cos_sin": Feature(
        _fixed(2), lambda s, h, spec: [np.cos(s.extra("valve_angle")), np.sin(s.extra("valve_angle"))], "valve_encoder"
    ),
    # The valve looks the same every 120 degrees (three spokes): 3x its angle says where the spokes are relative to
    # the fingers, which is what pushing depends on.
    "valve_spokes_cos_sin": Feature(
        _fixed(2),
        lambda s, h, spec: [np.cos(3.0 * s.extra("valve_angle")), np.sin(3.0 * s.extra("valve_angle"))],
        "valve_encoder",
    ),
    "valve_velocity": Feature(_fixed(1), lambda s, h, spec: [s.extra("valve_velocity")], "valve_encoder"),
    # Wrapped to [-pi, pi]: the shortest way round, the quantity the turn reward is about.
    "valve_target_error": Feature(
        _fixed(1), lambda s, h, spec: [_valve_error(s, h)], "valve_encoder", goal="valve_angle"
    ),
    "valve_target_error_cos_sin": Feature(
        _fixed(2),
        lambda s, h, spec: [np.cos(_valve_error(s, h)), np.sin(_valve_error(s, h))],
        "valve_encoder",
        goal="valve_angle",
    ),
}


class ObservationBuilder:
    """``build(state, history)`` -> float32 observation laid out as ``layout``."""

    def __init__(self, robot_spec: RobotSpec, task: TaskObservation | None = None) -> None:
        self.robot_spec = robot_spec
        self.task = task
        names = list(robot_spec.observation) + (list(task.observation) if task is not None else [])
        where = f"task {task.name}" if task is not None else f"robot {robot_spec.name}"
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"{where}: observation feature {duplicates[0]!r} listed twice")
        self._features: list[tuple[str, Feature]] = []
        for name in names:
            feature = FEATURES.get(name)
            if feature is None:
                raise ConfigError(
                    f"{where}: unknown observation feature {name!r} (known: {', '.join(sorted(FEATURES))})"
                )
            if feature.sensor is not None and feature.sensor not in robot_spec.sensors:
                raise ConfigError(
                    f"{where}: observation feature {name!r} needs sensor {feature.sensor!r}, "
                    f"which robot {robot_spec.name} does not list"
                )
            self._features.append((name, feature))
        self.layout: list[tuple[str, int]] = [(name, f.width(robot_spec)) for name, f in self._features]
        self.dim = sum(width for _, width in self.layout)
        self.required_goals = sorted({f.goal for _, f in self._features if f.goal is not None})

    @property
    def feature_names(self) -> list[str]:
        return [name for name, _ in self.layout]

    def interface_hash(self) -> str:
        """The robot spec's interface hash over this full observation layout (what a policy file records)."""
        return self.robot_spec.interface_hash(self.feature_names)

    def new_history(self, goals: dict[str, float] | None = None) -> History:
        """A history for a new episode: zero actions, the start pose as the previous joint positions, the task's
        goals updated with ``goals``."""
        merged = dict(self.task.goals) if self.task is not None else {}
        merged.update(goals or {})
        missing = [g for g in self.required_goals if g not in merged]
        if missing:
            raise ConfigError(f"observation needs goal {missing[0]!r}, which neither the task nor the caller gives")
        n = self.robot_spec.num_joints
        return History(
            last_action=np.zeros(n),
            previous_joint_pos=np.array(self.robot_spec.start, dtype=np.float64),
            action_before_last=np.zeros(n),
            goals=merged,
        )

    def build(self, state: RobotState, history: History) -> np.ndarray:
        if state.num_joints != self.robot_spec.num_joints:
            raise ValueError(
                f"RobotState has {state.num_joints} joints, robot {self.robot_spec.name} has "
                f"{self.robot_spec.num_joints}"
            )
        out = np.empty(self.dim, dtype=np.float32)
        offset = 0
        for (name, width), (_, feature) in zip(self.layout, self._features):
            value = feature.compute(state, history, self.robot_spec)
            out[offset : offset + width] = value
            offset += width
        return out

    def slices(self) -> dict[str, slice]:
        """Where each feature lies in the observation vector."""
        result, offset = {}, 0
        for name, width in self.layout:
            result[name] = slice(offset, offset + width)
            offset += width
        return result
