"""The full task spec: ``configs/tasks/<task>.yaml`` read strictly, including the parts the robot ignores
(reward weights, randomization ranges, episode length, perturbation grid)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from firmware_bridge import typed_yaml
from firmware_bridge.config_paths import resolve_robot, resolve_task
from firmware_bridge.spec import RobotSpec
from firmware_bridge.typed_yaml import ConfigError

Range = tuple[float, float]


@dataclass(frozen=True)
class RandomizationSpec:
    """Per-episode ranges ``[low, high]``, sampled uniformly. Scales multiply the model's nominal values."""

    enabled: bool = True
    """False: every episode runs the nominal model, whatever the ranges say."""
    mass_scale: Range = (1.0, 1.0)
    """Each body's mass (and inertia), independently."""
    payload_mass: Range = (0.0, 0.0)
    """Mass added to the robot's base body [kg]."""
    friction_scale: Range = (1.0, 1.0)
    """Sliding friction of every contact geom (ground, feet, fingertips, valve)."""
    damping_scale: Range = (1.0, 1.0)
    """Each actuated joint's viscous damping."""
    armature_scale: Range = (1.0, 1.0)
    """Each actuated joint's rotor inertia."""
    motor_strength: Range = (1.0, 1.0)
    """Each motor's torque output (and torque limit)."""
    kp_scale: Range = (1.0, 1.0)
    """Each motor's effective position gain relative to the commanded one."""
    kd_scale: Range = (1.0, 1.0)
    """Each motor's effective velocity gain relative to the commanded one."""
    latency_ticks: Range = (0.0, 0.0)
    """Action latency in control ticks; the fraction delays the switch to the new target within a tick."""
    period_jitter: float = 0.0
    """Each control period is nominal x (1 + U(-j, j))."""
    obs_noise: dict[str, float] = field(default_factory=dict)
    """Per-tick Gaussian noise std by sensor: joint_pos, joint_vel, joint_current, imu, valve_angle."""
    obs_bias: dict[str, float] = field(default_factory=dict)
    """Per-episode bias, uniform in +/- this, by sensor (same keys as ``obs_noise``)."""
    valve_damping_scale: Range = (1.0, 1.0)
    valve_start_angle: Range = (0.0, 0.0)
    """Valve angle at reset [rad] (the valve's nominal start is 0)."""

    def __post_init__(self) -> None:
        from sim.randomization import NOISY_SENSORS

        for name in ("obs_noise", "obs_bias"):
            unknown = sorted(set(getattr(self, name)) - set(NOISY_SENSORS))
            if unknown:
                raise ConfigError(
                    f"randomization.{name}.{unknown[0]}: unknown sensor (known: {', '.join(NOISY_SENSORS)})"
                )
        for f in self.__dataclass_fields__:
            value = getattr(self, f)
            if isinstance(value, tuple) and value[0] > value[1]:
                raise ConfigError(f"randomization.{f}: low {value[0]} above high {value[1]}")


@dataclass(frozen=True)
class Criteria:
    """Termination and success thresholds (each task kind reads the ones it needs)."""

    max_tilt_deg: float | None = None
    """Fall: roll or pitch beyond this."""
    min_base_height: float | None = None
    """Fall: base below this height [m], where the state reports it."""
    success_tolerance_deg: float | None = None
    """Success: goal error within this at the end of the episode."""
    min_distance_m: float | None = None
    """Success: base at least this far along +x from the origin it starts at, and not fallen, at the end."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    robot: str
    """Robot name (configs/robots) or path to its spec."""
    kind: Literal["quadruped_walk", "claw_turn"]
    """Which reward table, termination and success rule (``sim.rewards.TASK_KINDS``)."""
    episode_steps: int
    """Control ticks per episode; the registration's time limit."""
    reward: dict[str, float]
    """Weight per reward term; the term must exist in the kind's table."""
    observation: list[str] = field(default_factory=list)
    goals: dict[str, float] = field(default_factory=dict)
    """Fixed goal values (the robot's default and the fixed-goal variant)."""
    goal_sampling: dict[str, Range] = field(default_factory=dict)
    """Goals drawn per episode, uniform in [low, high]; a fixed-goal env ignores this."""
    criteria: Criteria = field(default_factory=Criteria)
    randomization: RandomizationSpec = field(default_factory=RandomizationSpec)
    perturbations: dict[str, list[float]] = field(default_factory=dict)
    """Severities per perturbation, swept by the robustness tool (``sim.perturbations.PERTURBATIONS``)."""

    def __post_init__(self) -> None:
        if self.episode_steps <= 0:
            raise ConfigError(f"episode_steps: must be positive, got {self.episode_steps}")
        unsampled = sorted(set(self.goal_sampling) - set(self.goals))
        if unsampled:
            raise ConfigError(f"goal_sampling.{unsampled[0]}: no fixed value for this goal under goals")
        from sim.perturbations import PERTURBATIONS
        from sim.rewards import TASK_KINDS, TERM_GOALS

        terms = TASK_KINDS[self.kind].terms
        unknown = sorted(set(self.reward) - set(terms))
        if unknown:
            raise ConfigError(f"reward.{unknown[0]}: unknown reward term for {self.kind} (known: {', '.join(terms)})")
        for term in sorted(self.reward):
            missing = [goal for goal in TERM_GOALS.get(term, ()) if goal not in self.goals]
            if missing:
                raise ConfigError(f"reward.{term}: needs goals.{missing[0]} (a value under goals)")
        unknown = sorted(set(self.perturbations) - set(PERTURBATIONS))
        if unknown:
            raise ConfigError(f"perturbations.{unknown[0]}: unknown perturbation (known: {', '.join(PERTURBATIONS)})")

    @classmethod
    def load(cls, name_or_path: str | os.PathLike) -> TaskSpec:
        """Load a task by name (``claw_turn``) or path, strictly; errors name the file and the key."""
        return typed_yaml.load(cls, resolve_task(name_or_path))

    def load_robot(self) -> RobotSpec:
        return RobotSpec.load(resolve_robot(self.robot))
