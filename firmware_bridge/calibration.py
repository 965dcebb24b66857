"""Per-joint calibration: where each motor reads zero and which way it turns.

``joint = direction * (motor - offset)``. Written by ``firmware-bridge check
--calibrate`` as YAML, loaded strictly, applied by every ``MotorBus``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import yaml

from firmware_bridge import typed_yaml
from firmware_bridge.spec import RobotSpec
from firmware_bridge.typed_yaml import ConfigError


@dataclasses.dataclass(frozen=True)
class JointCalibration:
    offset: float = 0.0
    """Motor angle [rad] when the joint is at its zero."""
    direction: int = 1
    """+1 when the motor and the joint turn the same way, -1 when mounted reversed."""

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise ConfigError(f"direction: must be 1 or -1, got {self.direction}")


@dataclasses.dataclass(frozen=True)
class Calibration:
    robot: str
    """The robot spec's name: a calibration for another robot is refused."""
    joints: dict[str, JointCalibration]
    """By joint name; every joint of the spec, no others."""

    @classmethod
    def identity(cls, spec: RobotSpec) -> Calibration:
        return cls(spec.name, {name: JointCalibration() for name in spec.joint_names})

    @classmethod
    def load(cls, path: str | Path, spec: RobotSpec | None = None) -> Calibration:
        """The calibration file at ``path``; with ``spec``, also checked against that robot, naming the file."""
        calibration = typed_yaml.load(cls, path)
        if spec is not None:
            try:
                calibration.arrays(spec)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
        return calibration

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(typed_yaml.to_mapping(self), sort_keys=False))

    def arrays(self, spec: RobotSpec) -> tuple[np.ndarray, np.ndarray]:
        """(offset, direction), each (n,) in spec order; raises ``ConfigError`` naming any mismatch."""
        if self.robot != spec.name:
            raise ConfigError(f"robot: calibration is for {self.robot!r}, the robot spec is {spec.name!r}")
        missing = [n for n in spec.joint_names if n not in self.joints]
        unknown = sorted(set(self.joints) - set(spec.joint_names))
        if missing or unknown:
            raise ConfigError(f"joints: missing {missing}, not in the robot spec {unknown}")
        offset = np.array([self.joints[n].offset for n in spec.joint_names], dtype=np.float64)
        direction = np.array([self.joints[n].direction for n in spec.joint_names], dtype=np.float64)
        return offset, direction
