"""Perturbations for robustness tests, by name, each a pure function of (severity, rng).

A perturbation may change the episode's parameters before the backend resets
(``params``) and/or act on the backend after it (``events``: pushes, motor
faults, dropped sensors). Task files list severities per name under
``perturbations``; ``RobotEnv.reset(options={"perturbation": (name, severity)})``
applies one.
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


@dataclass(frozen=True)
class Perturbation:
    doc: str
    params: Callable[[DynamicsParams, float, np.random.Generator], DynamicsParams] | None = None
    events: Callable[[Backend, float, np.random.Generator], None] | None = None


def _push(backend: Backend, severity: float, rng: np.random.Generator) -> None:
    if severity == 0.0:
        return
    heading = rng.uniform(0.0, 2.0 * np.pi)
    force = severity * np.array([np.cos(heading), np.sin(heading), 0.0])
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
    backend.drop_sensor("valve_encoder" if "valve_encoder" in sensors else "imu" if "imu" in sensors else "joint_encoders")


def _noise(params: DynamicsParams, severity: float, rng: np.random.Generator) -> DynamicsParams:
    return dataclasses.replace(params, obs_noise={sensor: severity for sensor in NOISY_SENSORS})


PERTURBATIONS: dict[str, Perturbation] = {
    "push": Perturbation(
        f"horizontal push of SEVERITY newtons on the base, random heading, at {PUSH_START_S} s for {PUSH_DURATION_S} s",
        events=_push,
    ),
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
    "sensor_drop": Perturbation(
        "SEVERITY 1: the valve encoder (else the IMU, else the joint encoders) frozen from the start", events=_drop
    ),
    "valve_damping": Perturbation(
        "valve damping scaled by SEVERITY",
        params=lambda p, s, rng: dataclasses.replace(p, valve_damping_scale=p.valve_damping_scale * s),
    ),
}
