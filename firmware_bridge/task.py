"""The part of a task file the robot needs: which robot, which extra observation features, which goal.

``configs/tasks/<task>.yaml`` also holds reward weights, randomization ranges,
episode length and the perturbation grid; those are read (strictly) by
``sim.task``. The bridge reads only the keys below, type-checked strictly, so
it can build a task's observation without importing the simulator.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge import typed_yaml
from firmware_bridge.config_paths import resolve_robot, resolve_task
from firmware_bridge.spec import RobotSpec
from firmware_bridge.typed_yaml import ConfigError

INTERFACE_KEYS = ("name", "robot", "observation", "goals")


@dataclass(frozen=True)
class TaskInterface:
    name: str
    """Task name (``claw_turn``)."""
    robot: str
    """Robot name (looked up in configs/robots) or path to its spec."""
    observation: list[str] = field(default_factory=list)
    """Features appended after the robot's own observation features, in order."""
    goals: dict[str, float] = field(default_factory=dict)
    """Goal values the observation reads (e.g. ``valve_angle``); a task with random goals samples new ones
    per episode in the sim, and the robot uses these unless told otherwise."""

    @classmethod
    def from_mapping(cls, mapping: dict) -> TaskInterface:
        if "name" not in mapping or "robot" not in mapping:
            missing = "name" if "name" not in mapping else "robot"
            raise ConfigError(f"{missing}: required key missing for a task")
        return typed_yaml.from_mapping(cls, {k: mapping[k] for k in INTERFACE_KEYS if k in mapping})

    @classmethod
    def load(cls, name_or_path: str | os.PathLike) -> TaskInterface:
        """Load by task name (``claw_turn``) or path; errors name the file and the key."""
        path = resolve_task(name_or_path)
        try:
            return cls.from_mapping(typed_yaml.load_yaml(path))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def robot_path(self) -> Path:
        return resolve_robot(self.robot)

    def load_robot(self) -> RobotSpec:
        return RobotSpec.load(self.robot_path())
