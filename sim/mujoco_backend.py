"""The MuJoCo backend: the robot's MJCF model from ``sim/assets``, the motor boards' PD law run by MuJoCo's
position actuators at the physics rate, and ``mj_step(nstep=n)`` for one control period."""

from __future__ import annotations

import math
from pathlib import Path

import mujoco
import numpy as np

from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import RobotState
from sim.backend import Backend
from sim.randomization import DynamicsParams, nominal

ASSETS = Path(__file__).resolve().parent / "assets"
VALVE_JOINT = "valve"


def _roll_pitch_yaw(quat: np.ndarray) -> tuple[float, float, float]:
    w, x, y, z = quat.tolist()  # math on Python floats: several times faster than numpy scalars
    roll = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = math.asin(min(1.0, max(-1.0, 2.0 * (w * y - z * x))))
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return roll, pitch, yaw


class MujocoBackend(Backend):
    def __init__(self, robot_spec: RobotSpec, model_path: str | Path | None = None) -> None:
        self.robot_spec = robot_spec
        path = Path(model_path) if model_path is not None else ASSETS / f"{robot_spec.name}.xml"
        if not path.is_file():
            raise FileNotFoundError(f"no MuJoCo model for robot {robot_spec.name!r} at {path}")
        self.model = mujoco.MjModel.from_xml_path(str(path))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.physics_dt = float(m.opt.timestep)
        self.physics_steps = 0

        names = robot_spec.joint_names
        missing = [n for n in names if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) < 0]
        missing += [f"actuator {n}" for n in names if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, n) < 0]
        if missing:
            raise ValueError(f"{path}: robot spec {robot_spec.name} names {missing[0]!r}, which the model lacks")
        joint_ids = [m.joint(n).id for n in names]
        # Addresses of the spec's joints in qpos / qvel / ctrl, in spec order (public for tests and benchmarks).
        self.qpos_ids = np.array([m.jnt_qposadr[j] for j in joint_ids])
        self.dof_ids = np.array([m.jnt_dofadr[j] for j in joint_ids])
        self.actuator_ids = np.array([m.actuator(n).id for n in names])
        self._joint_ids = np.array(joint_ids)
        # The robot spec, not the model file, is the source of truth for limits.
        m.jnt_range[self._joint_ids] = np.stack([robot_spec.lower, robot_spec.upper], axis=1)
        m.jnt_limited[self._joint_ids] = 1
        self._range0 = m.jnt_range.copy()

        free = [j for j in range(m.njnt) if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE]
        self._free_qpos = int(m.jnt_qposadr[free[0]]) if free else None
        self._free_dof = int(m.jnt_dofadr[free[0]]) if free else None
        self._base_body = int(m.jnt_bodyid[free[0]]) if free else None
        valve = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, VALVE_JOINT)
        if "valve_encoder" in robot_spec.sensors and valve < 0:
            raise ValueError(
                f"{path}: robot {robot_spec.name} lists a valve_encoder but the model has no joint 'valve'"
            )
        self.valve_qpos_id = int(m.jnt_qposadr[valve]) if valve >= 0 else None
        self.valve_dof_id = int(m.jnt_dofadr[valve]) if valve >= 0 else None
        if "imu" in robot_spec.sensors and self._free_qpos is None:
            raise ValueError(f"{path}: robot {robot_spec.name} lists an imu but the model has no free base")

        self._mass_bodies = np.array([b for b in range(1, m.nbody) if m.body_mass[b] > 0])
        self.body_names = [m.body(int(b)).name for b in self._mass_bodies]
        self.nominal_mass = m.body_mass.copy()
        self._inertia0 = m.body_inertia.copy()  # nominal_*: the model as written, before randomization
        self.nominal_friction = m.geom_friction.copy()
        self._damping0 = m.dof_damping.copy()
        self._armature0 = m.dof_armature.copy()

        n = robot_spec.num_joints
        self.params = nominal(len(self.body_names), n)
        self._forces: list[tuple[int, np.ndarray, float, float]] = []
        self._time0 = 0.0
        self._renderer: mujoco.Renderer | None = None
        self.reset(self.params)

    # Parameters and motor model.

    def _apply_params(self, params: DynamicsParams) -> None:
        m = self.model
        if len(params.mass_scale) != len(self.body_names):
            raise ValueError(f"mass_scale has {len(params.mass_scale)} values for {len(self.body_names)} bodies")
        m.body_mass[:] = self.nominal_mass
        m.body_inertia[:] = self._inertia0
        m.body_mass[self._mass_bodies] *= params.mass_scale
        m.body_inertia[self._mass_bodies] *= params.mass_scale[:, None]
        if params.payload_mass:
            if self._base_body is None:
                raise ValueError(f"payload_mass: robot {self.robot_spec.name} has no free base to carry it")
            m.body_mass[self._base_body] += params.payload_mass
        m.geom_friction[:] = self.nominal_friction
        m.geom_friction[:, 0] *= params.friction_scale
        m.dof_damping[:] = self._damping0
        m.dof_armature[:] = self._armature0
        m.dof_damping[self.dof_ids] *= params.damping_scale
        m.dof_armature[self.dof_ids] *= params.armature_scale
        if self.valve_dof_id is not None:
            m.dof_damping[self.valve_dof_id] *= params.valve_damping_scale
        # Masses and armature feed constants MuJoCo precomputes (e.g. dof_invweight0).
        mujoco.mj_setConst(m, self.data)

    def _motor_model_changed(self) -> None:
        m, a = self.model, self.actuator_ids
        kp, kd, strength = self._motor_gains()
        # MuJoCo position actuator: force = gain * ctrl + bias1 * q + bias2 * qd, clipped to forcerange.
        m.actuator_gainprm[a, 0] = kp
        m.actuator_biasprm[a, 1] = -kp
        m.actuator_biasprm[a, 2] = -kd
        limit = strength * self.robot_spec.max_torque
        m.actuator_forcerange[a] = np.stack([-limit, limit], axis=1)
        m.actuator_forcelimited[a] = 1

    # Backend interface.

    def reset(self, params: DynamicsParams, joint_pos: np.ndarray | None = None) -> RobotState:
        m, d = self.model, self.data
        q = self._begin_reset(params, joint_pos)
        self._apply_params(params)
        self._motor_model_changed()
        mujoco.mj_resetData(m, d)
        d.qpos[self.qpos_ids] = q
        d.ctrl[self.actuator_ids] = q
        if self.valve_qpos_id is not None:
            d.qpos[self.valve_qpos_id] = params.valve_start_angle
        mujoco.mj_forward(m, d)
        self._time0 = d.time
        return self.state()

    def _hold(self, targets: np.ndarray, n: int) -> None:
        self.data.ctrl[self.actuator_ids] = targets
        if not self._forces:
            mujoco.mj_step(self.model, self.data, nstep=n)
        else:
            self._step_with_forces(n)

    def _step_with_forces(self, n: int) -> None:
        m, d = self.model, self.data
        while n > 0:
            now = d.time - self._time0
            d.xfrc_applied[:] = 0.0
            # Step up to the next moment a push starts or ends, so a push lasts exactly its duration.
            horizon = n
            for body, wrench, start, end in self._forces:
                if start <= now + 1e-9 < end:
                    d.xfrc_applied[body] += wrench
                for edge in (start, end):
                    if edge > now + 1e-9:
                        horizon = min(horizon, max(1, int(round((edge - now) / self.physics_dt))))
            mujoco.mj_step(m, d, nstep=horizon)
            n -= horizon
        d.xfrc_applied[:] = 0.0
        self._forces = [f for f in self._forces if f[3] > d.time - self._time0 + 1e-9]

    def state(self) -> RobotState:
        d = self.data
        spec = self.robot_spec
        extras: dict[str, float] = {}
        if self._free_qpos is not None:
            fq, fd = self._free_qpos, self._free_dof
            # Python floats via tolist(): cheaper than numpy scalars here, and plain in JSON.
            x, y, z = d.qpos[fq : fq + 3].tolist()
            vx, vy, vz, wx, wy, wz = d.qvel[fd : fd + 6].tolist()
            # Free-joint angular velocity is in the body frame, as a gyro reads it.
            imu = np.array([*_roll_pitch_yaw(d.qpos[fq + 3 : fq + 7]), wx, wy, wz])
            extras.update(
                base_velocity_x=vx, base_velocity_y=vy, base_velocity_z=vz,
                base_height=z, base_position_x=x, base_position_y=y,
            )
        else:
            imu = np.zeros(6)
        if self.valve_qpos_id is not None:
            extras["valve_angle"] = float(d.qpos[self.valve_qpos_id])
            extras["valve_velocity"] = float(d.qvel[self.valve_dof_id])
        state = RobotState(
            timestamp=float(d.time - self._time0),
            joint_pos=d.qpos[self.qpos_ids],
            joint_vel=d.qvel[self.dof_ids],
            joint_current=d.actuator_force[self.actuator_ids] / spec.torque_constant,
            imu=imu,
            extras=extras,
        )
        return self._frozen.apply(state) if self._frozen else state

    def _body_handle(self, body: str) -> int | None:
        body_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, body)
        return body_id if body_id >= 0 else None

    def _schedule_push(self, handle: int, force: np.ndarray, torque: np.ndarray, start: float, end: float) -> None:
        # xfrc_applied rows are (force, torque) at the body's centre of mass.
        self._forces.append((handle, np.concatenate([force, torque]), start, end))

    def stick_motor(self, joint: int) -> None:
        j = self._joint_ids[self._joint_index(joint)]
        q = self.data.qpos[self.qpos_ids[joint]]
        # A jammed gearbox: the joint's limits close in on where it is now.
        self.model.jnt_range[j] = (q - 1e-3, q + 1e-3)

    def _clear_engine_perturbations(self) -> None:
        self._forces = []
        self.model.jnt_range[:] = self._range0
        self.data.xfrc_applied[:] = 0.0

    @property
    def time(self) -> float:
        return float(self.data.time - self._time0)

    def render(self, width: int = 480, height: int = 360) -> np.ndarray:
        if self._renderer is None or (self._renderer.width, self._renderer.height) != (width, height):
            try:
                self._renderer = mujoco.Renderer(self.model, height, width)
            except Exception as exc:  # no GL context on a headless machine: EGL/OSMesa missing
                raise RuntimeError(f"MuJoCo rendering unavailable: {exc}") from exc
        self._renderer.update_scene(self.data, camera=0)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
