"""``RobotState``: what the sensors report at one control tick."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import IntFlag

import numpy as np

IMU_FIELDS = ("roll", "pitch", "yaw", "roll_rate", "pitch_rate", "yaw_rate")


class Fault(IntFlag):
    """Fault bits a motor board or the bridge can raise."""

    OVERCURRENT = 1
    OVERTEMPERATURE = 2
    ENCODER = 4
    WATCHDOG = 8
    SENSOR_TIMEOUT = 16
    UNDERVOLTAGE = 32
    MOTOR_FAILED = 64
    """A motor's driver stopped it, or the board reports a motor fault without saying which kind."""
    BAD_COMMAND = 128
    """The board refused a command (for the wrong number of motors)."""
    UNKNOWN = 256
    """Fault bits the board set that this bridge has no name for (a newer firmware's): treated as faults."""
    DISARMED = 512
    """The motors stopped following commands while the bridge had them armed: the board left ARMED (an
    emergency stop, another client's DISARM, a reset), or a motor no longer reports itself enabled."""


@dataclass
class RobotState:
    """One tick of sensor readings. Joint arrays follow the robot spec's joint order.

    ``extras`` holds sensors beyond joints and IMU, by name: ``valve_angle`` [rad] and
    ``valve_velocity`` [rad/s] (claw valve encoder); ``base_velocity_x/y/z`` [m/s, world frame] and
    ``base_height`` [m] where a state estimator or the simulator provides them.
    """

    timestamp: float
    """Seconds, on the clock of whoever measured (motor board or simulator)."""
    joint_pos: np.ndarray
    """(n,) float64 joint positions [rad]."""
    joint_vel: np.ndarray
    """(n,) float64 joint velocities [rad/s]."""
    joint_current: np.ndarray
    """(n,) float64 motor currents [A]."""
    imu: np.ndarray = field(default_factory=lambda: np.zeros(len(IMU_FIELDS)))
    """(6,) float64: roll, pitch, yaw [rad], then body angular rates [rad/s]; zeros without an IMU."""
    extras: dict[str, float] = field(default_factory=dict)
    faults: int = 0
    """``Fault`` bits."""
    fault_detail: str = ""
    """Where the faults come from, when the bus can tell: ``front_left_knee: OVERCURRENT``."""

    def __post_init__(self) -> None:
        self.joint_pos = np.asarray(self.joint_pos, dtype=np.float64)
        n = self.joint_pos.shape
        if len(n) != 1:
            raise ValueError(f"RobotState.joint_pos: expected a 1-d array, got shape {n}")
        for name in ("joint_vel", "joint_current"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != n:
                raise ValueError(f"RobotState.{name}: shape {value.shape}, expected {n} like joint_pos")
            setattr(self, name, value)
        self.imu = np.asarray(self.imu, dtype=np.float64)
        if self.imu.shape != (len(IMU_FIELDS),):
            raise ValueError(f"RobotState.imu: shape {self.imu.shape}, expected ({len(IMU_FIELDS)},)")

    @property
    def num_joints(self) -> int:
        return self.joint_pos.shape[0]

    def extra(self, name: str) -> float:
        """An extra sensor reading by name; a missing one raises naming it and what is there."""
        try:
            return self.extras[name]
        except KeyError:
            raise KeyError(f"RobotState has no extra sensor {name!r} (has: {sorted(self.extras)})") from None

    def copy(self) -> RobotState:
        return dataclasses.replace(
            self,
            joint_pos=self.joint_pos.copy(),
            joint_vel=self.joint_vel.copy(),
            joint_current=self.joint_current.copy(),
            imu=self.imu.copy(),
            extras=dict(self.extras),
        )

    @classmethod
    def zeros(cls, num_joints: int, timestamp: float = 0.0) -> RobotState:
        z = np.zeros(num_joints)
        return cls(timestamp=timestamp, joint_pos=z, joint_vel=z.copy(), joint_current=z.copy())
