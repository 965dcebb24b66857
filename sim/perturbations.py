"""Perturbations for robustness tests, by name, each a pure function of (severity, rng).

A perturbation may change the episode's parameters before the backend resets
(``params``) and/or act on the backend after it (``events``: pushes, motor
faults, dropped sensors). Task files list severities per name under
``perturbations``; ``RobotEnv.reset(options={"perturbation": (name, severity)})``
applies one. A severity that leaves the robot as it is (0 N, scale 1) is the
unperturbed condition, so a sweep can start from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sim.backend import Backend
from sim.randomization import NOISY_SENSORS, DynamicsParams

PUSH_START_S = 1.0
PUSH_DURATION_S = 0.1
VALVE_BODY = "valve"
"""The claw model's valve body: a push on a robot with a valve encoder twists the valve."""
ANGLE_SENSORS = ("joint_pos", "imu", "valve_angle")
"""Sensors whose bias ``obs_bias`` sets, all in radians (the IMU's rates get the same number in rad/s)."""


@dataclass(frozen=True)
class Perturbation:
    doc: str
    params: Callable[[DynamicsParams, float, np.random.Generator], DynamicsParams] | None = None
    events: Callable[[Backend, float, np.random.Generator], None] | None = None


def _push(backend: Backend, severity: float, rng: np.random.Generator) -> None:
    if severity == 0.0:
        return
    if "valve_encoder" in backend.robot_spec.sensors:
        # The valve turns about world z: only a torque moves it; either way round, at random.
        torque = np.array([0.0, 0.0, severity * rng.choice([-1.0, 1.0])])
        backend.apply_force(VALVE_BODY, np.zeros(3), PUSH_START_S, PUSH_DURATION_S, torque=torque)
        return
    heading = rng.uniform(0.0, 2.0 * np.pi)
    force = severity * np.array([np.cos(heading), np.sin(heading), 0.0])
    backend.apply_force(backend.body_names[0], force, PUSH_START_S, PUSH_DURATION_S)


def _push_lateral(backend: Backend, severity: float, rng: np.random.Generator) -> None:
    if severity == 0.0:
        return
    if "imu" not in backend.robot_spec.sensors:
        raise ValueError(f"push_lateral: robot {backend.robot_spec.name} has no free base to push sideways")
    force = np.array([0.0, severity * rng.choice([-1.0, 1.0]), 0.0])
    backend.apply_force(backend.body_names[0], force, PUSH_START_S, PUSH_DURATION_S)


def _random_joint(backend: Backend, rng: np.random.Generator) -> int:
    return int(rng.integers(backend.robot_spec.num_joints))


def _weaken(backend: Backend, severity: float, rng: np.random.Generator) -> None:
    backend.set_motor_strength(_random_joint(backend, rng), severity)


def _fail(backend: Backend, severity: float, rng: np.random.Generator) -> None:
    if severity:
        backend.set_motor_strength(_random_joint(backend, rng), 0.0)


def _stick(backend: Backend, severity: float, rng: np.random.Generator) -> None:
    if severity:
        backend.stick_motor(_random_joint(backend, rng))


def _drop(backend: Backend, severity: float, rng: np.random.Generator) -> None:
    if not severity:
        return
    sensors = backend.robot_spec.sensors
    backend.drop_sensor(
        "valve_encoder" if "valve_encoder" in sensors else "imu" if "imu" in sensors else "joint_encoders"
    )


def _noise(params: DynamicsParams, severity: float, rng: np.random.Generator) -> DynamicsParams:
    return dataclasses.replace(params, obs_noise={sensor: severity for sensor in NOISY_SENSORS})


def _bias(params: DynamicsParams, severity: float, rng: np.random.Generator) -> DynamicsParams:
    num_joints = len(params.motor_strength)
    bias = dict(params.obs_bias)
    for sensor in ANGLE_SENSORS:
        width = NOISY_SENSORS[sensor] or num_joints
        bias[sensor] = severity * rng.choice([-1.0, 1.0], width)
    return dataclasses.replace(params, obs_bias=bias)


def _control_rate(params: DynamicsParams, severity: float, rng: np.random.Generator) -> DynamicsParams:
    if not 0.0 < severity <= 1.0:
        raise ValueError(f"control_rate: severity {severity} must be a rate factor in (0, 1]")
    return dataclasses.replace(params, control_period_scale=params.control_period_scale / severity)


def _scaled(field: str) -> Callable[[DynamicsParams, float, np.random.Generator], DynamicsParams]:
    """Multiply one parameter (scalar or per joint) by the severity, on top of the episode's value."""
    return lambda params, severity, rng: dataclasses.replace(params, **{field: getattr(params, field) * severity})


PERTURBATIONS: dict[str, Perturbation] = {
    "push": Perturbation(
        f"horizontal push of SEVERITY newtons on the base, random heading (claw: SEVERITY N m twisting the valve, "
        f"random way round), at {PUSH_START_S} s for {PUSH_DURATION_S} s",
        events=_push,
    ),
    "push_lateral": Perturbation(
        f"sideways push (world y, random side) of SEVERITY newtons on the base at {PUSH_START_S} s for "
        f"{PUSH_DURATION_S} s",
        events=_push_lateral,
    ),
    "friction": Perturbation("sliding friction of every contact (ground, feet, fingertips, valve) x SEVERITY",
                             params=_scaled("friction_scale")),
    "motor_strength": Perturbation("every motor's torque (and torque limit) x SEVERITY",
                                   params=_scaled("motor_strength")),
    "joint_damping": Perturbation("every actuated joint's viscous damping x SEVERITY", params=_scaled("damping_scale")),
    "control_rate": Perturbation("control rate x SEVERITY (0.5: each action held for two nominal periods)",
                                 params=_control_rate),
    "payload": Perturbation(
        "SEVERITY kg added to the base",
        params=lambda p, s, rng: dataclasses.replace(p, payload_mass=p.payload_mass + s),
    ),
    "motor_weak": Perturbation("one random motor's torque scaled by SEVERITY", events=_weaken),
    "motor_failed": Perturbation("SEVERITY 1: one random motor limp (no torque)", events=_fail),
    "motor_stuck": Perturbation("SEVERITY 1: one random motor jammed where it starts", events=_stick),
    "latency_ticks": Perturbation(
        "action latency of SEVERITY control ticks",
        params=lambda p, s, rng: dataclasses.replace(p, latency_ticks=s),
    ),
    "obs_noise": Perturbation("Gaussian noise of std SEVERITY on every sensor", params=_noise),
    "obs_bias": Perturbation(
        "constant offset of +/-SEVERITY rad (sign random per reading) on joint encoders, IMU and valve angle",
        params=_bias,
    ),
    "obs_dropout": Perturbation(
        "each tick, with probability SEVERITY, the sensor reading is lost and the previous one used again",
        params=lambda p, s, rng: dataclasses.replace(p, obs_dropout=s),
    ),
    "sensor_drop": Perturbation(
        "SEVERITY 1: the valve encoder (else the IMU, else the joint encoders) frozen from the start", events=_drop
    ),
    "valve_damping": Perturbation(
        "valve damping scaled by SEVERITY",
        params=lambda p, s, rng: dataclasses.replace(p, valve_damping_scale=p.valve_damping_scale * s),
    ),
}
