"""The physics backend interface: one robot in one engine, stepped one control period at a time.

The gym env, the virtual robot and the robustness tool drive a robot only
through this class, so engines (MuJoCo now, PyBullet later) stay out of tasks
and envs. Joint arrays follow the robot spec's joint order; shapes: n = number
of actuated joints.

The motor model is the motor board's PD law, run by the engine at the physics
rate: torque = strength * clip(kp * (target - q) - kd * qd, +/-max_torque),
with kp, kd the commanded gains times the episode's ``kp_scale``/``kd_scale``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import RobotState
from sim.frozen_sensors import FrozenSensors
from sim.randomization import DynamicsParams


class Backend(ABC):
    robot_spec: RobotSpec
    physics_dt: float
    """Seconds per physics step."""
    body_names: list[str]
    """Bodies whose masses ``DynamicsParams.mass_scale`` scales, in order; the first is the base."""
    physics_steps: int
    """Physics steps taken since construction (benchmarks compare env time to raw engine time)."""
    _frozen: FrozenSensors

    @abstractmethod
    def reset(self, params: DynamicsParams, joint_pos: np.ndarray | None = None) -> RobotState:
        """Apply ``params``, clear perturbations, put the robot at ``joint_pos`` (n,) (default: the spec's start
        pose) at rest, the valve (if any) at ``params.valve_start_angle``; gains back to the spec's; targets at
        the pose. Returns the state there."""

    def _init_motors(self) -> None:
        """The motor state a fresh robot has, and every reset restores: the spec's gains, full strength, not in a
        safe mode, every sensor reporting."""
        self._kp, self._kd = self.robot_spec.kp, self.robot_spec.kd
        self._strength_factor = np.ones(self.robot_spec.num_joints)
        self._safe_mode: str | None = None
        self._safe_kd = 0.0
        self._frozen = FrozenSensors(self.robot_spec)

    def _motor_gains(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n,) each: the stiffness and damping the motors apply now (commanded gains, episode scales, strength;
        or the safe mode's), and the torque scale (episode strength x perturbation factor)."""
        p = self.params
        strength = p.motor_strength * self._strength_factor
        if self._safe_mode is None:
            return strength * self._kp * p.kp_scale, strength * self._kd * p.kd_scale, strength
        kd = np.full_like(strength, self._safe_kd if self._safe_mode == "damping" else 0.0)
        return np.zeros_like(strength), kd, strength

    @abstractmethod
    def _motor_model_changed(self) -> None:
        """Gains, safe mode or strength have changed: bring the engine's motors in line with ``_motor_gains``."""

    def _begin_reset(self, params: DynamicsParams, joint_pos: np.ndarray | None) -> np.ndarray:
        """What every ``reset`` does first: the spec's gains, no safe mode, no perturbations; returns the
        (n,) pose to start in, checked."""
        self.params = params
        self._init_motors()
        self.clear_perturbations()
        q = self.robot_spec.start if joint_pos is None else np.asarray(joint_pos, dtype=np.float64)
        if q.shape != (self.robot_spec.num_joints,):
            raise ValueError(f"joint_pos: expected shape ({self.robot_spec.num_joints},), got {q.shape}")
        return q

    def _joint_index(self, joint: int) -> int:
        """``joint``, checked against the spec's joint count (the perturbation hooks take spec indices)."""
        if not 0 <= joint < self.robot_spec.num_joints:
            raise ValueError(f"joint index {joint} out of range for {self.robot_spec.num_joints} joints")
        return joint

    def step(
        self,
        targets: np.ndarray,
        duration: float,
        previous_targets: np.ndarray | None = None,
        switch_after: float = 0.0,
    ) -> RobotState:
        """Hold position targets (n,) [rad] for ``duration`` seconds, rounded to whole physics steps (at least
        one), and return the state at the end. With ``previous_targets`` (n,), those are held for the first
        ``switch_after`` seconds of the period instead (a command arriving late within the tick), but never the
        whole period: the new targets always get its last physics step."""
        n = max(1, int(round(duration / self.physics_dt)))
        n_previous = 0 if previous_targets is None else min(max(0, int(round(switch_after / self.physics_dt))), n - 1)
        if n_previous > 0:
            self._hold(previous_targets, n_previous)
        self._hold(targets, n - n_previous)
        self.physics_steps += n
        return self.state()

    @abstractmethod
    def _hold(self, targets: np.ndarray, n: int) -> None:
        """Run ``n`` (>= 1) physics steps with the motors tracking ``targets`` (n,), pushes included."""

    @abstractmethod
    def state(self) -> RobotState:
        """The current sensor readings (dropped sensors frozen at their last value)."""

    def set_gains(self, kp: np.ndarray, kd: np.ndarray) -> None:
        """Commanded PD gains (n,) each, as a motor command would set them (episode scales still apply)."""
        n = self.robot_spec.num_joints
        kp, kd = np.asarray(kp, dtype=np.float64), np.asarray(kd, dtype=np.float64)
        if kp.shape != (n,) or kd.shape != (n,):
            raise ValueError(f"set_gains: expected kp and kd of shape ({n},), got {kp.shape} and {kd.shape}")
        self._kp, self._kd = kp, kd
        self._motor_model_changed()

    def set_safe_state(self, mode: str | None, kd: float = 0.0) -> None:
        """``"damping"``: no stiffness, torque = -kd * qd; ``"torque_off"``: no torque; None: back to PD control."""
        if mode not in (None, "damping", "torque_off"):
            raise ValueError(f"safe state mode {mode!r}: expected 'damping', 'torque_off' or None")
        self._safe_mode, self._safe_kd = mode, kd
        self._motor_model_changed()

    # Perturbation hooks.

    def apply_force(
        self, body: str, force: np.ndarray, start: float, duration: float, torque: np.ndarray | None = None
    ) -> None:
        """Push ``body`` with ``force`` (3,) [N, world frame] from sim time ``start`` for ``duration`` seconds
        (a short duration is an impulse of force x duration); ``torque`` (3,) [N m, world frame], if given,
        twists it over the same interval (a hinged body such as the valve turns only under a torque)."""
        handle = self._body_handle(body)
        if handle is None:
            raise ValueError(f"apply_force: no body {body!r} (bodies: {', '.join(self.body_names)})")
        force = np.asarray(force, dtype=np.float64)
        torque = np.zeros(3) if torque is None else np.asarray(torque, dtype=np.float64)
        if force.shape != (3,) or torque.shape != (3,):
            raise ValueError(f"apply_force: force and torque must have shape (3,), got {force.shape}, {torque.shape}")
        self._schedule_push(handle, force, torque, float(start), float(start + duration))

    @abstractmethod
    def _body_handle(self, body: str):
        """The engine's handle of the body named ``body``, or None where the engine has no such body to push."""

    @abstractmethod
    def _schedule_push(self, handle, force: np.ndarray, torque: np.ndarray, start: float, end: float) -> None:
        """Apply ``force`` and ``torque`` (checked, (3,) each) to the body ``handle`` from sim time ``start`` to
        ``end``."""

    def set_motor_strength(self, joint: int, factor: float) -> None:
        """Scale motor ``joint``'s torque (on top of the episode's strength): 0.5 weak, 0 failed limp."""
        self._strength_factor[self._joint_index(joint)] = factor
        self._motor_model_changed()

    @abstractmethod
    def stick_motor(self, joint: int) -> None:
        """Motor ``joint`` holds its current position whatever it is commanded (a jammed gearbox)."""

    def drop_sensor(self, sensor: str) -> None:
        """Freeze a sensor at its current reading: one of ``sim.frozen_sensors.DROPPABLE_SENSORS`` or
        ``joint:<joint name>``."""
        self._frozen.drop(sensor, self.state())

    def check_sensor(self, sensor: str) -> None:
        """Raise ``ValueError``, naming what this robot has, unless ``drop_sensor`` can freeze ``sensor``."""
        self._frozen.check(sensor)

    def sensor_dropped_at(self, sensor: str) -> float | None:
        """The simulated time (``time``) at which ``drop_sensor`` froze ``sensor``; None while it reports."""
        return self._frozen.since(sensor)

    def clear_perturbations(self) -> None:
        """Remove pushes, motor faults and sensor drops (the episode's randomized parameters stay)."""
        self._frozen.clear()
        self._strength_factor = np.ones(self.robot_spec.num_joints)
        self._clear_engine_perturbations()
        self._motor_model_changed()

    @abstractmethod
    def _clear_engine_perturbations(self) -> None:
        """Remove what the engine itself holds of pushes and jammed motors."""

    @property
    @abstractmethod
    def time(self) -> float:
        """Simulated seconds since the last reset."""

    @abstractmethod
    def render(self, width: int = 480, height: int = 360) -> np.ndarray:
        """(height, width, 3) uint8 image; raises RuntimeError where no renderer is available."""

    def close(self) -> None:
        """Release renderer and engine resources."""
