"""Dropped sensors, engine-independent: a sensor frozen at its last reading overrides the live value.

A backend records a drop with ``drop(sensor, state)`` and passes every state it reports through ``apply``.
"""

from __future__ import annotations

import numpy as np

from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import RobotState

# Sensors ``drop`` accepts besides ``joint:<joint name>``.
DROPPABLE_SENSORS = ("imu", "valve_encoder", "joint_encoders")
VALVE_FIELDS = ("valve_angle", "valve_velocity")


class FrozenSensors:
    def __init__(self, spec: RobotSpec) -> None:
        self._joint_names = list(spec.joint_names)
        self._sensors = tuple(spec.sensors)
        self._robot_name = spec.name
        self._frozen: dict[str, object] = {}
        self._since: dict[str, float] = {}

    def __bool__(self) -> bool:
        return bool(self._frozen)

    def clear(self) -> None:
        self._frozen = {}
        self._since = {}

    def since(self, sensor: str) -> float | None:
        """The timestamp of the state ``sensor`` froze in, None while it reports."""
        return self._since.get(sensor)

    def check(self, sensor: str) -> None:
        """Raise ``ValueError`` unless ``sensor`` is one this robot has that ``drop`` can freeze."""
        if sensor.startswith("joint:"):
            if sensor[6:] not in self._joint_names:
                raise ValueError(f"drop_sensor: robot {self._robot_name} has no joint {sensor[6:]!r} (its joints: "
                                 f"{', '.join(self._joint_names)})")  # fmt: skip
        elif sensor not in DROPPABLE_SENSORS:
            raise ValueError(
                f"drop_sensor: unknown sensor {sensor!r} (known: {', '.join(DROPPABLE_SENSORS)}, joint:<name>)"
            )
        elif sensor not in self._sensors:
            raise ValueError(f"drop_sensor: robot {self._robot_name} has no {sensor} (its sensors: "
                             f"{', '.join(self._sensors)})")  # fmt: skip

    def drop(self, sensor: str, state: RobotState) -> None:
        """Freeze ``sensor`` (one of ``DROPPABLE_SENSORS`` or ``joint:<name>``) at its reading in ``state``."""
        self.check(sensor)
        if sensor == "imu":
            self._frozen[sensor] = state.imu.copy()
        elif sensor == "valve_encoder":
            self._frozen[sensor] = {k: state.extras[k] for k in VALVE_FIELDS}
        elif sensor == "joint_encoders":
            self._frozen[sensor] = (state.joint_pos.copy(), state.joint_vel.copy())
        else:
            index = self._joint_names.index(sensor[6:])
            self._frozen[sensor] = (state.joint_pos[index], state.joint_vel[index])
        self._since.setdefault(sensor, state.timestamp)

    def apply(self, state: RobotState) -> RobotState:
        """``state`` with every dropped sensor's frozen reading written over the live one (in place)."""
        for sensor, value in self._frozen.items():
            if sensor == "imu":
                state.imu = np.array(value)
            elif sensor == "valve_encoder":
                state.extras.update(value)
            elif sensor == "joint_encoders":
                state.joint_pos, state.joint_vel = value[0].copy(), value[1].copy()
            else:
                index = self._joint_names.index(sensor.split(":", 1)[1])
                state.joint_pos[index], state.joint_vel[index] = value
        return state
