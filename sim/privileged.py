"""The privileged observation: what the simulator knows and a robot's sensors do not.

An asymmetric actor-critic (Pinto et al., "Asymmetric Actor Critic for Image-Based Robot Learning", 2018) gives
the critics this vector beside the observation while the actor, and with it the deployed policy, sees the
observation only. Under domain randomization the return depends on the drawn robot (motor strength, friction,
latency) and on quantities no sensor reads (the base's velocity, which the quadruped's reward pays for); a critic
that sees them need not average over what it cannot tell apart.

Layout, in this order: the true (noise-free, unbiased) joint positions, velocities and currents, the true IMU
reading, the state's extras except positions in the world plane (unbounded, and no part of any reward's value),
then the episode's drawn dynamics.
"""

from __future__ import annotations

import numpy as np

from firmware_bridge.state import RobotState
from sim.randomization import DynamicsParams

UNPLACED_EXTRAS = ("base_position_x", "base_position_y")
"""Extras left out: where the robot stands on the floor changes nothing it can do next."""

DYNAMICS_FIELDS = (
    "mass_scale",
    "payload_mass",
    "friction_scale",
    "damping_scale",
    "armature_scale",
    "motor_strength",
    "kp_scale",
    "kd_scale",
    "latency_ticks",
    "valve_damping_scale",
)
"""The ``DynamicsParams`` fields included, per body or per joint where they are arrays."""


def privileged_names(state: RobotState, params: DynamicsParams) -> list[str]:
    """One name per entry of ``privileged_observation(state, params)``."""
    names = []
    for sensor in ("joint_pos", "joint_vel", "joint_current", "imu"):
        names += [f"true_{sensor}[{i}]" for i in range(getattr(state, sensor).shape[0])]
    names += [f"true_{key}" for key in sorted(state.extras) if key not in UNPLACED_EXTRAS]
    for field in DYNAMICS_FIELDS:
        value = np.atleast_1d(getattr(params, field))
        names += [field] if np.ndim(getattr(params, field)) == 0 else [f"{field}[{i}]" for i in range(value.shape[0])]
    return names


def privileged_observation(state: RobotState, params: DynamicsParams) -> np.ndarray:
    """The privileged vector (float32) for the true ``state`` under the episode's ``params``."""
    extras = [state.extras[key] for key in sorted(state.extras) if key not in UNPLACED_EXTRAS]
    dynamics = [np.atleast_1d(getattr(params, field)) for field in DYNAMICS_FIELDS]
    return np.concatenate(
        [state.joint_pos, state.joint_vel, state.joint_current, state.imu, extras, *dynamics]
    ).astype(np.float32)
