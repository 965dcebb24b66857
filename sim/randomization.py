"""Domain randomization as pure functions of (spec, sizes, rng): nothing here touches a global RNG.

``sample`` draws one episode's ``DynamicsParams``; ``nominal`` is the model as
written. The backend applies the physical part, the env the timing part
(latency, jitter) and ``corrupt_state`` the sensor part.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from firmware_bridge.state import IMU_FIELDS, RobotState
from sim.task import RandomizationSpec

# Sensor -> width of its bias vector (None: one per joint).
NOISY_SENSORS: dict[str, int | None] = {
    "joint_pos": None,
    "joint_vel": None,
    "joint_current": None,
    "imu": len(IMU_FIELDS),
    "valve_angle": 1,
}


@dataclass(frozen=True)
class DynamicsParams:
    """One episode's physical, timing and sensor parameters. Arrays: (num_bodies,) or (num_joints,)."""

    mass_scale: np.ndarray
    payload_mass: float
    friction_scale: float
    damping_scale: np.ndarray
    armature_scale: np.ndarray
    motor_strength: np.ndarray
    kp_scale: np.ndarray
    kd_scale: np.ndarray
    latency_ticks: float
    period_jitter: float
    obs_noise: dict[str, float]
    obs_bias: dict[str, np.ndarray]
    valve_damping_scale: float
    valve_start_angle: float
    control_period_scale: float = 1.0
    """Control period relative to the spec's (2.0: the policy runs at half rate); only perturbations set it."""
    obs_dropout: float = 0.0
    """Probability per tick that the sensor reading is lost and the previous one is used again (a missed bus
    read); only perturbations set it."""

    def as_dict(self) -> dict:
        """Plain floats and lists, for ``info`` and JSON reports."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                out[f.name] = {k: np.asarray(v).tolist() for k, v in value.items()}
            else:
                out[f.name] = np.asarray(value).tolist()
        return out


def nominal(num_bodies: int, num_joints: int) -> DynamicsParams:
    """The model exactly as written: unit scales, no payload, latency, jitter, noise or bias."""
    ones_j = np.ones(num_joints)
    return DynamicsParams(
        mass_scale=np.ones(num_bodies),
        payload_mass=0.0,
        friction_scale=1.0,
        damping_scale=ones_j.copy(),
        armature_scale=ones_j.copy(),
        motor_strength=ones_j.copy(),
        kp_scale=ones_j.copy(),
        kd_scale=ones_j.copy(),
        latency_ticks=0.0,
        period_jitter=0.0,
        obs_noise={},
        obs_bias={},
        valve_damping_scale=1.0,
        valve_start_angle=0.0,
    )


def sample(spec: RandomizationSpec, num_bodies: int, num_joints: int, rng: np.random.Generator) -> DynamicsParams:
    """Draw one episode's parameters from ``spec``'s ranges; ``spec.enabled`` False gives ``nominal``."""
    if not spec.enabled:
        return nominal(num_bodies, num_joints)

    def uniform(bounds: tuple[float, float], size: int | None = None):
        value = rng.uniform(bounds[0], bounds[1], size)
        return float(value) if size is None else value

    bias = {}
    for sensor, limit in spec.obs_bias.items():
        width = NOISY_SENSORS[sensor] or num_joints
        bias[sensor] = rng.uniform(-limit, limit, width)
    return DynamicsParams(
        mass_scale=uniform(spec.mass_scale, num_bodies),
        payload_mass=uniform(spec.payload_mass),
        friction_scale=uniform(spec.friction_scale),
        damping_scale=uniform(spec.damping_scale, num_joints),
        armature_scale=uniform(spec.armature_scale, num_joints),
        motor_strength=uniform(spec.motor_strength, num_joints),
        kp_scale=uniform(spec.kp_scale, num_joints),
        kd_scale=uniform(spec.kd_scale, num_joints),
        latency_ticks=uniform(spec.latency_ticks),
        period_jitter=spec.period_jitter,
        obs_noise=dict(spec.obs_noise),
        obs_bias=bias,
        valve_damping_scale=uniform(spec.valve_damping_scale),
        valve_start_angle=uniform(spec.valve_start_angle),
    )


def control_period(nominal_period: float, params: DynamicsParams, rng: np.random.Generator) -> float:
    """This tick's control period: nominal x scale x (1 + U(-jitter, jitter))."""
    period = nominal_period * params.control_period_scale
    if params.period_jitter == 0.0:
        return period
    return period * (1.0 + rng.uniform(-params.period_jitter, params.period_jitter))


def corrupt_state(state: RobotState, params: DynamicsParams, rng: np.random.Generator) -> RobotState:
    """What the sensors report: ``state`` plus the episode's bias plus fresh Gaussian noise (a new object)."""
    noise, bias = params.obs_noise, params.obs_bias
    if not noise and not bias:
        return state
    readings = {
        "joint_pos": state.joint_pos,
        "joint_vel": state.joint_vel,
        "joint_current": state.joint_current,
        "imu": state.imu,
    }
    extras = dict(state.extras)
    if "valve_angle" in extras:
        readings["valve_angle"] = np.array([extras["valve_angle"]])
    noisy = [sensor for sensor in readings if noise.get(sensor)]
    # One draw for every noisy channel of the tick: this runs every control tick.
    draws = rng.standard_normal(sum(readings[s].shape[0] for s in noisy)) if noisy else None
    offset = 0
    for sensor, value in readings.items():
        std, offset_bias = noise.get(sensor, 0.0), bias.get(sensor)
        if std:
            width = value.shape[0]
            value = value + std * draws[offset : offset + width]
            offset += width
        if offset_bias is not None:
            value = value + offset_bias
        readings[sensor] = value
    if "valve_angle" in readings:
        extras["valve_angle"] = float(readings["valve_angle"][0])
    return RobotState(
        timestamp=state.timestamp,
        joint_pos=readings["joint_pos"].copy(),
        joint_vel=readings["joint_vel"].copy(),
        joint_current=readings["joint_current"].copy(),
        imu=readings["imu"].copy(),
        extras=extras,
        faults=state.faults,
    )
