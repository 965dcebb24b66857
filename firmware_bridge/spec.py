"""The robot spec: one description of a robot, read by the sim and by the bridge alike.

``configs/robots/<robot>.yaml`` loads strictly into ``RobotSpec``: joint order,
limits, PD gains, motor ids, bus, sensors, control rate, the robot's own
observation features, action scaling and the safe state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from firmware_bridge import typed_yaml
from firmware_bridge.typed_yaml import ConfigError

Sensor = Literal["joint_encoders", "joint_currents", "imu", "valve_encoder", "base_velocity"]


@dataclass(frozen=True)
class JointSpec:
    name: str
    """Joint name, unique within the robot."""
    motor_id: int
    """Motor id on the bus (Dynamixel id, or motor index on the motor board)."""
    lower: float
    """Lower position limit [rad]."""
    upper: float
    """Upper position limit [rad]."""
    max_velocity: float
    """Velocity limit [rad/s]."""
    max_torque: float
    """Torque limit [N m]; the motor board clips its PD output to this."""
    kp: float
    """Position gain of the motor board's PD law [N m/rad]."""
    kd: float
    """Velocity gain of the motor board's PD law [N m s/rad]."""
    start: float
    """Start pose [rad]; the centre of the action for ``action.center: start``."""
    torque_constant: float = 1.0
    """Motor torque per unit current [N m/A]: converts between torque and the current the board reports."""


@dataclass(frozen=True)
class BusSpec:
    kind: Literal["framed_serial", "dynamixel"]
    """The motors' protocol: the framed motor-board messages (over a serial port, or ZMQ with ``--zmq``), or
    Dynamixel Protocol 2.0 (serial only)."""
    baud: int = 1_000_000
    """Serial baud rate (framed_serial, dynamixel)."""
    extra_ids: dict[str, int] = field(default_factory=dict)
    """Devices on the bus that are not actuated joints, e.g. ``{valve_encoder: 10}``."""


@dataclass(frozen=True)
class ActionSpec:
    center: Literal["start", "mid_range"]
    """Action 0 maps to the start pose, or to the middle of each joint's range."""
    scale: float | list[float] | None = None
    """Half-range [rad] that action +/-1 spans around the centre: one value, one per joint, or null for
    half the joint range (so [-1, 1] covers [lower, upper])."""
    max_rate: float | None = None
    """Largest change of a joint target per second [rad/s]; null uses each joint's ``max_velocity``."""


@dataclass(frozen=True)
class SafeStateSpec:
    mode: Literal["damping", "torque_off"]
    """What the motor board does by itself when its watchdog trips: zero-stiffness damping, or no torque
    at all. The bridge's own safe stop is always damping, then torque off."""
    kd: float = 0.0
    """Damping gain [N m s/rad], of the safe stop's damping step and of the ``damping`` mode."""
    damping_s: float = 0.3
    """How long the safe stop damps before it switches the torque off: time for the robot to come to rest
    (a legged robot to sag to the ground) instead of dropping from motion."""

    def __post_init__(self) -> None:
        if self.kd < 0:
            raise ConfigError(f"safe_state.kd: must not be negative, got {self.kd}")
        if self.damping_s < 0:
            raise ConfigError(f"safe_state.damping_s: must not be negative, got {self.damping_s}")


@dataclass(frozen=True)
class RobotSpec:
    name: str
    """Robot name; the policy file records it and the bridge refuses a policy for another robot."""
    joints: list[JointSpec]
    """Actuated joints, in the order of every joint array (state, action, command)."""
    bus: BusSpec
    sensors: list[Sensor]
    """What the robot measures; observation features that need a missing sensor are refused."""
    control_rate_hz: float
    """Policy rate: one observation, one action per tick."""
    observation: list[str]
    """The robot's own observation features, in order (a task appends its features after them)."""
    action: ActionSpec
    safe_state: SafeStateSpec

    def __post_init__(self) -> None:
        names = [j.name for j in self.joints]
        if not names:
            raise ConfigError("joints: a robot needs at least one joint")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"joints: duplicate joint name {duplicates[0]!r}")
        ids = [j.motor_id for j in self.joints] + list(self.bus.extra_ids.values())
        dup_ids = sorted({i for i in ids if ids.count(i) > 1})
        if dup_ids:
            raise ConfigError(f"joints: motor id {dup_ids[0]} used twice")
        for i, j in enumerate(self.joints):
            where = f"joints[{i}] ({j.name})"
            if not j.lower < j.upper:
                raise ConfigError(f"{where}: lower {j.lower} must be below upper {j.upper}")
            if not j.lower <= j.start <= j.upper:
                raise ConfigError(f"{where}: start {j.start} outside [{j.lower}, {j.upper}]")
            for key in ("max_velocity", "max_torque", "torque_constant"):
                if getattr(j, key) <= 0:
                    raise ConfigError(f"{where}.{key}: must be positive, got {getattr(j, key)}")
            if j.kp < 0 or j.kd < 0:
                raise ConfigError(f"{where}: kp and kd must not be negative")
        if self.control_rate_hz <= 0:
            raise ConfigError(f"control_rate_hz: must be positive, got {self.control_rate_hz}")
        scale = self.action.scale
        if isinstance(scale, list) and len(scale) != len(self.joints):
            raise ConfigError(f"action.scale: {len(scale)} values for {len(self.joints)} joints")
        if self.action.max_rate is not None and self.action.max_rate <= 0:
            raise ConfigError(f"action.max_rate: must be positive, got {self.action.max_rate}")

    @classmethod
    def load(cls, path: str | Path) -> RobotSpec:
        """Load ``configs/robots/<robot>.yaml`` strictly; errors name the file and the key."""
        return typed_yaml.load(cls, path)

    @classmethod
    def from_mapping(cls, mapping: dict) -> RobotSpec:
        return typed_yaml.from_mapping(cls, mapping)

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def motor_ids(self) -> list[int]:
        return [j.motor_id for j in self.joints]

    @property
    def control_period(self) -> float:
        """Seconds per policy tick."""
        return 1.0 / self.control_rate_hz

    def _array(self, key: str) -> np.ndarray:
        # Cached per spec (the control loop reads these every tick); read-only so no caller can alter the spec.
        cache = self.__dict__.setdefault("_arrays", {})
        if key not in cache:
            array = np.array([getattr(j, key) for j in self.joints], dtype=np.float64)
            array.flags.writeable = False
            cache[key] = array
        return cache[key]

    @property
    def lower(self) -> np.ndarray:
        return self._array("lower")

    @property
    def upper(self) -> np.ndarray:
        return self._array("upper")

    @property
    def start(self) -> np.ndarray:
        return self._array("start")

    @property
    def max_velocity(self) -> np.ndarray:
        return self._array("max_velocity")

    @property
    def max_torque(self) -> np.ndarray:
        return self._array("max_torque")

    @property
    def kp(self) -> np.ndarray:
        return self._array("kp")

    @property
    def kd(self) -> np.ndarray:
        return self._array("kd")

    @property
    def torque_constant(self) -> np.ndarray:
        return self._array("torque_constant")

    def interface_hash(self, observation: list[str] | None = None) -> str:
        """sha256 (hex) of what a policy depends on: robot name, joints in order with ids and limits,
        the observation layout (``observation``, default the robot's own features) and the action mapping.

        Gains, bus and sensors are left out: retuning a motor board does not invalidate a policy.
        """
        interface = {
            "robot": self.name,
            "joints": [
                [j.name, j.motor_id, j.lower, j.upper, j.max_velocity, j.max_torque, j.start] for j in self.joints
            ],
            "observation": list(self.observation if observation is None else observation),
            "action": typed_yaml.to_mapping(self.action),
            "control_rate_hz": self.control_rate_hz,
        }
        text = json.dumps(interface, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
