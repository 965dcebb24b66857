"""The PyBullet backend: the same robot (the MJCF in ``sim/assets``, turned into URDF by ``sim.urdf_from_mjcf``),
the same motor boards' PD law, run by us in torque mode at every physics step, and the same parameters and
perturbation hooks as ``MujocoBackend``.

What Bullet lacks, and how MuJoCo's behaviour is kept:

- Joint armature (reflected rotor inertia; on these robots it outweighs the links): per joint, a rotor on a
  world-fixed hinge whose speed a gear constraint ties to the joint's, so its kinetic energy is MuJoCo's
  1/2 armature qd^2 and Bullet's solver meets it together with limits and contacts.
- Joint friction loss: Bullet's velocity motor with target 0 and its force capped at the friction loss (the
  way PyBullet's Minitaur models it), a constraint like MuJoCo's. A stuck motor is the same motor uncapped.
- Joint damping and the PD law: explicit torques each physics step (MuJoCo integrates them implicitly; at
  these time steps the difference is far below the agreement tests' tolerances).
- Friction: MuJoCo takes the larger of two geoms' frictions, Bullet their product. Robot links carry
  MuJoCo's friction, the rest of the world (ground, valve) the episode's friction scale; every contact pair
  is checked at construction to give MuJoCo's max(f1, f2).
"""

from __future__ import annotations

import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
import pybullet as p

from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import RobotState
from sim.backend import Backend
from sim.randomization import DynamicsParams, nominal
from sim.urdf_from_mjcf import WORLD, collides, urdf_trees

ASSETS = Path(__file__).resolve().parent / "assets"
VALVE_JOINT = "valve"
MAX_JOINT_VELOCITY = 1e4
"""rad/s: Bullet's joint speed clamp, lifted out of the way."""
STUCK_TORQUE = 1e6
"""N m: the brake of a jammed motor, far above any torque the robot can make."""
GEAR_TORQUE = 1e6
"""N m: what a rotor's gear constraint may transmit; unbounded in effect."""


def _xyzw(quat_wxyz: np.ndarray) -> list[float]:
    w, x, y, z = (float(v) for v in quat_wxyz)
    return [x, y, z, w]


def _rotation(quat_xyzw) -> np.ndarray:
    return np.array(p.getMatrixFromQuaternion(quat_xyzw)).reshape(3, 3)


@dataclass
class _Tree:
    """One PyBullet multibody and its joints that move (Bullet's generalized coordinates, in order)."""

    uid: int
    floating: bool
    dof_joints: list[int]
    dofs: slice
    """This tree's joints in the backend's global joint arrays."""


@dataclass
class _Push:
    uid: int
    link: int
    force: np.ndarray
    torque: np.ndarray
    start: float
    end: float


class PybulletBackend(Backend):
    def __init__(self, robot_spec: RobotSpec, model_path: str | Path | None = None) -> None:
        self.robot_spec = robot_spec
        path = Path(model_path) if model_path is not None else ASSETS / f"{robot_spec.name}.xml"
        if not path.is_file():
            raise FileNotFoundError(f"no model for robot {robot_spec.name!r} at {path}")
        m = mujoco.MjModel.from_xml_path(str(path))
        missing = [n for n in robot_spec.joint_names if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) < 0]
        if missing:
            raise ValueError(f"{path}: robot spec {robot_spec.name} names joint {missing[0]!r}, which the model lacks")
        # The robot spec, not the model file, is the source of truth for limits (as in MujocoBackend).
        spec_joints = [m.joint(n).id for n in robot_spec.joint_names]
        m.jnt_range[spec_joints] = np.stack([robot_spec.lower, robot_spec.upper], axis=1)
        m.jnt_limited[spec_joints] = 1
        self.description = m
        """The compiled MJCF both engines are built from (read, never stepped)."""
        self.physics_dt = float(m.opt.timestep)
        self.physics_steps = 0
        self.client = p.connect(p.DIRECT)
        # Several backends per process each hold a private client; free it when the backend goes away.
        self._finalizer = weakref.finalize(self, p.disconnect, self.client)
        c = self.client
        p.setGravity(*m.opt.gravity, physicsClientId=c)
        p.setTimeStep(self.physics_dt, physicsClientId=c)
        p.setPhysicsEngineParameter(deterministicOverlappingPairs=1, physicsClientId=c)

        self._load(m, path)
        self._index_joints(m, path)
        self._set_up_contacts(m, path)
        self._rotors = self._add_rotors()

        self._mass_bodies = [b for b in range(1, m.nbody) if m.body_mass[b] > 0]
        self.body_names = [m.body(b).name for b in self._mass_bodies]
        self._mass0 = m.body_mass[self._mass_bodies].copy()
        self._inertia0 = np.array([p.getDynamicsInfo(*self._link[b], physicsClientId=c)[2] for b in self._mass_bodies])

        n = robot_spec.num_joints
        self.params = nominal(len(self.body_names), n)
        self._pushes: list[_Push] = []
        self._stuck: set[int] = set()
        self._steps_since_reset = 0
        self._motor_torque = np.zeros(n)
        self._camera: tuple[np.ndarray, np.ndarray, int, np.ndarray] | None = None
        self.reset(self.params)

    # Construction.

    def _load(self, m: mujoco.MjModel, path: Path) -> None:
        """Load every URDF tree; ``self._link[mujoco body] = (uid, link index)``, -1 for a tree's root."""
        c = self.client
        flags = p.URDF_USE_INERTIA_FROM_FILE | p.URDF_USE_SELF_COLLISION | p.URDF_USE_SELF_COLLISION_EXCLUDE_PARENT
        self._link: dict[int, tuple[int, int]] = {}
        self._trees: list[_Tree] = []
        self._root_pose: dict[int, tuple[np.ndarray, list[float]]] = {}
        dof_count = 0
        with tempfile.TemporaryDirectory() as tmp:
            for tree in urdf_trees(m):
                file = Path(tmp) / f"{tree.root}.urdf"
                file.write_text(tree.urdf)
                root = tree.bodies[0]
                pos, quat = np.zeros(3), [0.0, 0.0, 0.0, 1.0]
                if tree.floating:
                    pos, quat = m.body_pos[root], _xyzw(m.body_quat[root])
                try:
                    uid = p.loadURDF(
                        str(file), pos, quat, useFixedBase=not tree.floating, flags=flags, physicsClientId=c
                    )
                except p.error as exc:
                    raise ValueError(f"{path}: PyBullet refused the URDF made for tree {tree.root!r}: {exc}") from exc
                names = {WORLD if root == 0 else m.body(root).name: -1}
                dof_joints = []
                for j in range(p.getNumJoints(uid, physicsClientId=c)):
                    info = p.getJointInfo(uid, j, physicsClientId=c)
                    names[info[12].decode()] = j
                    if info[2] != p.JOINT_FIXED:
                        dof_joints.append(j)
                for b in tree.bodies:
                    self._link[b] = (uid, names[WORLD if b == 0 else m.body(b).name])
                if tree.floating:
                    self._root_pose[uid] = (np.array(pos, dtype=np.float64), quat)
                for link in [-1, *range(p.getNumJoints(uid, physicsClientId=c))]:
                    self._undamp(uid, link)
                self._trees.append(_Tree(uid, tree.floating, dof_joints, slice(dof_count, dof_count + len(dof_joints))))
                dof_count += len(dof_joints)
        self._num_dofs = dof_count
        self._moving = [tree for tree in self._trees if tree.dof_joints]

    def _index_joints(self, m: mujoco.MjModel, path: Path) -> None:
        """Global joint arrays (every tree's moving joints, tree by tree) and where the spec's joints sit."""
        c, spec = self.client, self.robot_spec
        global_names, self._dof_mj = [], []
        for tree in self._trees:
            for j in tree.dof_joints:
                name = p.getJointInfo(tree.uid, j, physicsClientId=c)[1].decode()
                global_names.append(name)
                self._dof_mj.append(int(m.jnt_dofadr[m.joint(name).id]))
        self._spec_dofs = np.array([global_names.index(name) for name in spec.joint_names])
        self._valve_dof = global_names.index(VALVE_JOINT) if VALVE_JOINT in global_names else None
        if "valve_encoder" in spec.sensors and self._valve_dof is None:
            raise ValueError(f"{path}: robot {spec.name} lists a valve_encoder but the model has no joint 'valve'")
        self._base = next((t for t in self._trees if t.floating), None)
        if "imu" in spec.sensors and self._base is None:
            raise ValueError(f"{path}: robot {spec.name} lists an imu but the model has no free base")
        self._base_body = next((b for b, (uid, link) in self._link.items() if self._base and uid == self._base.uid
                                and link == -1), None)
        self._damping0 = m.dof_damping[self._dof_mj].copy()
        self._armature0 = m.dof_armature[self._dof_mj].copy()
        self._frictionloss = m.dof_frictionloss[self._dof_mj].copy()
        self._joint_of_dof = [(t.uid, j) for t in self._trees for j in t.dof_joints]

    def _undamp(self, uid: int, link: int) -> None:
        """Bullet damps every link's velocity and clamps joint speeds at 100 rad/s by default; MuJoCo does
        neither (its joint damping is our explicit torque). The clamp bites inside a step, where a light link
        under full torque briefly outruns it, and then the constraint solver works from wrong velocities."""
        p.changeDynamics(uid, link, linearDamping=0, angularDamping=0, jointDamping=0,
                         maxJointVelocity=MAX_JOINT_VELOCITY, physicsClientId=self.client)

    def _add_rotors(self) -> dict[int, tuple[int, int]]:
        """Joint armature as Bullet sees it: per joint with armature, a rotor on a hinge fixed in the world, its
        speed tied to the joint's by a gear constraint. Its kinetic energy is 1/2 armature qd^2, exactly the
        armature's, and Bullet's solver meets limits, contacts and the gear at once. Returns dof -> (rotor, gear)."""
        c = self.client
        rotors = {}
        for dof in np.flatnonzero(self._armature0 > 0):
            uid, joint = self._joint_of_dof[dof]
            # Rotors have no collision shape; they sit below the floor only to be out of the camera's way.
            rotor = p.createMultiBody(
                baseMass=0, basePosition=[0, 0, -10.0 - dof], linkMasses=[1.0], linkCollisionShapeIndices=[-1],
                linkVisualShapeIndices=[-1], linkPositions=[[0, 0, 0]], linkOrientations=[[0, 0, 0, 1]],
                linkInertialFramePositions=[[0, 0, 0]], linkInertialFrameOrientations=[[0, 0, 0, 1]],
                linkParentIndices=[0], linkJointTypes=[p.JOINT_REVOLUTE], linkJointAxis=[[0, 0, 1]],
                physicsClientId=c,
            )
            self._undamp(rotor, 0)
            p.setJointMotorControl2(rotor, 0, p.VELOCITY_CONTROL, force=0, physicsClientId=c)
            gear = p.createConstraint(uid, joint, rotor, 0, p.JOINT_GEAR, [0, 0, 1], [0, 0, 0], [0, 0, 0],
                                      physicsClientId=c)
            # Bullet's gear: qd_joint + ratio * qd_rotor = 0; no position term (the rotor's angle is meaningless).
            p.changeConstraint(gear, gearRatio=-1.0, erp=0.0, physicsClientId=c)
            rotors[int(dof)] = (rotor, gear)
        return rotors

    def _set_up_contacts(self, m: mujoco.MjModel, path: Path) -> None:
        """MuJoCo's contact filter (contype/conaffinity, welds, parent-child) on every pair of Bullet links."""
        c = self.client
        geoms = {b: [g for g in np.flatnonzero(m.geom_bodyid == b) if collides(m, g)] for b in range(m.nbody)}
        bodies = [b for b in range(m.nbody) if geoms[b]]
        for b in bodies:
            if any(m.geom_condim[g] != 3 for g in geoms[b]):
                raise ValueError(f"{path}: body {m.body(b).name!r}: only condim 3 (sliding friction) is modelled")
        weld, parent = m.body_weldid, m.body_parentid
        robot = self._robot_bodies(m)
        self._robot_friction: dict[int, float] = {}
        self._world_links: list[tuple[int, int]] = []
        for b in bodies:
            if b in robot:
                self._robot_friction[b] = float(max(m.geom_friction[g, 0] for g in geoms[b]))
            else:
                self._world_links.append(self._link[b])
        for i, b1 in enumerate(bodies):
            for b2 in bodies[i + 1 :]:
                w1, w2 = weld[b1], weld[b2]
                filtered = w1 == w2 or (w1 and w2 and (w1 == weld[parent[w2]] or w2 == weld[parent[w1]]))
                enable = not filtered and any(
                    (m.geom_contype[g1] & m.geom_conaffinity[g2]) or (m.geom_contype[g2] & m.geom_conaffinity[g1])
                    for g1 in geoms[b1]
                    for g2 in geoms[b2]
                )
                (u1, l1), (u2, l2) = self._link[b1], self._link[b2]
                p.setCollisionFilterPair(u1, u2, l1, l2, int(enable), physicsClientId=c)
                if enable:
                    self._check_friction(m, path, b1, b2, geoms)

    def _robot_bodies(self, m: mujoco.MjModel) -> set[int]:
        """Bodies the robot moves: free bases, the spec's joints' bodies, and everything below them."""
        roots = {b for b in range(1, m.nbody) if m.body_jntnum[b] and m.jnt_type[m.body_jntadr[b]] == 0}
        roots |= {int(m.jnt_bodyid[m.joint(name).id]) for name in self.robot_spec.joint_names}
        robot = set()
        for b in range(1, m.nbody):  # MuJoCo numbers parents before children
            if b in roots or int(m.body_parentid[b]) in robot:
                robot.add(b)
        return robot

    def _check_friction(self, m: mujoco.MjModel, path: Path, b1: int, b2: int, geoms: dict[int, list[int]]) -> None:
        f1 = max(m.geom_friction[g, 0] for g in geoms[b1])
        f2 = max(m.geom_friction[g, 0] for g in geoms[b2])
        robot = [b for b in (b1, b2) if b in self._robot_friction]
        if len(robot) != 1 or self._robot_friction[robot[0]] < min(f1, f2):
            raise ValueError(
                f"{path}: contact {m.body(b1).name!r}-{m.body(b2).name!r}: Bullet multiplies frictions, so "
                "MuJoCo's max(f1, f2) is reproduced only between a robot body and the world with the robot's "
                "friction the larger"
            )

    # Where the MJCF's bodies and joints live in Bullet (for tests, benchmarks and tools).

    def bullet_link(self, body: str) -> tuple[int, int]:
        """(Bullet body id, link index) of the MJCF body ``body``; link -1 is a multibody's root."""
        body_id = mujoco.mj_name2id(self.description, mujoco.mjtObj.mjOBJ_BODY, body)
        if body_id not in self._link:
            raise ValueError(f"no body {body!r} in robot {self.robot_spec.name}'s model")
        return self._link[body_id]

    def bullet_joint(self, joint: str) -> tuple[int, int]:
        """(Bullet body id, joint index) of the MJCF hinge or slide joint ``joint``."""
        for uid, j in self._joint_of_dof:
            if p.getJointInfo(uid, j, physicsClientId=self.client)[1].decode() == joint:
                return uid, j
        raise ValueError(f"no moving joint {joint!r} in robot {self.robot_spec.name}'s model")

    def body_frame(self, body: str) -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) and rotation matrix (3, 3) of the MJCF body's frame (MuJoCo's xpos, xmat)."""
        uid, link = self.bullet_link(body)
        if link == -1:
            pos, orn = self._base_frame(uid)
        else:
            state = p.getLinkState(uid, link, computeForwardKinematics=1, physicsClientId=self.client)
            pos, orn = np.array(state[4]), state[5]
        return np.array(pos), _rotation(orn)

    # Parameters and motor model.

    def _apply_params(self, params: DynamicsParams) -> None:
        c = self.client
        if len(params.mass_scale) != len(self.body_names):
            raise ValueError(f"mass_scale has {len(params.mass_scale)} values for {len(self.body_names)} bodies")
        mass = self._mass0 * params.mass_scale
        if params.payload_mass:
            if self._base_body is None:
                raise ValueError(f"payload_mass: robot {self.robot_spec.name} has no free base to carry it")
            mass[self._mass_bodies.index(self._base_body)] += params.payload_mass
        inertia = self._inertia0 * params.mass_scale[:, None]  # a payload adds mass, not inertia, as in MuJoCo
        for b, mb, ib in zip(self._mass_bodies, mass, inertia):
            # Bullet recomputes the inertia from the collision shapes when only the mass changes: give both.
            p.changeDynamics(*self._link[b], mass=float(mb), localInertiaDiagonal=ib.tolist(), physicsClientId=c)
        for b, friction in self._robot_friction.items():
            p.changeDynamics(*self._link[b], lateralFriction=friction, physicsClientId=c)
        for uid, link in self._world_links:
            p.changeDynamics(uid, link, lateralFriction=params.friction_scale, physicsClientId=c)
        self._damping = self._damping0.copy()
        self._armature = self._armature0.copy()
        self._damping[self._spec_dofs] *= params.damping_scale
        self._armature[self._spec_dofs] *= params.armature_scale
        if self._valve_dof is not None:
            self._damping[self._valve_dof] *= params.valve_damping_scale
        for dof, (rotor, gear) in self._rotors.items():
            armature = float(self._armature[dof])
            # A zero armature (armature_scale 0) unhooks the rotor rather than gearing in a massless one.
            inertia = [armature or float(self._armature0[dof])] * 3  # only the hinge axis's moment matters
            p.changeDynamics(rotor, 0, localInertiaDiagonal=inertia, physicsClientId=self.client)
            p.changeConstraint(gear, maxForce=GEAR_TORQUE if armature else 0.0, physicsClientId=self.client)

    def _motor_model_changed(self) -> None:
        # The PD law runs here, at every physics step: it reads (kp, kd, torque limit) from this.
        kp, kd, strength = self._motor_gains()
        self._pd_gains = (kp, kd, strength * self.robot_spec.max_torque)

    def _set_joint_friction(self) -> None:
        """Bullet's velocity motors, kept only as the joints' dry friction, or as the brake of a stuck motor."""
        forces = self._frictionloss.copy()
        forces[list(self._stuck)] = STUCK_TORQUE
        for tree in self._moving:
            p.setJointMotorControlArray(
                tree.uid, tree.dof_joints, p.VELOCITY_CONTROL, targetVelocities=[0.0] * len(tree.dof_joints),
                forces=forces[tree.dofs].tolist(), physicsClientId=self.client,
            )

    # Backend interface.

    def reset(self, params: DynamicsParams, joint_pos: np.ndarray | None = None) -> RobotState:
        c, m = self.client, self.description
        q = self._begin_reset(params, joint_pos)
        self._apply_params(params)
        positions = np.array([m.qpos0[m.jnt_qposadr[m.dof_jntid[d]]] for d in self._dof_mj])
        positions[self._spec_dofs] = q
        if self._valve_dof is not None:
            positions[self._valve_dof] = params.valve_start_angle
        for tree in self._moving:
            if tree.floating:
                pos, quat = self._root_pose[tree.uid]
                self._set_base_frame(tree.uid, pos, quat)
                p.resetBaseVelocity(tree.uid, [0, 0, 0], [0, 0, 0], physicsClientId=c)
            values = positions[tree.dofs]
            p.resetJointStatesMultiDof(
                tree.uid, tree.dof_joints, [[v] for v in values], [[0.0]] * len(values), physicsClientId=c
            )
        for dof, (rotor, _) in self._rotors.items():
            p.resetJointState(rotor, 0, positions[dof], 0.0, physicsClientId=c)
        self._q, self._qd = positions, np.zeros(self._num_dofs)
        self._targets = q.copy()
        self._motor_torque = np.zeros(self.robot_spec.num_joints)
        self._steps_since_reset = 0
        return self.state()

    def _set_base_frame(self, uid: int, pos: np.ndarray, quat_xyzw: list[float]) -> None:
        """Put a floating base's link frame (MuJoCo's body frame) at ``pos``, ``quat``; Bullet's base is its
        centre-of-mass frame."""
        c = self.client
        local_pos, local_orn = p.getDynamicsInfo(uid, -1, physicsClientId=c)[3:5]
        com_pos, com_orn = p.multiplyTransforms(pos.tolist(), quat_xyzw, local_pos, local_orn)
        p.resetBasePositionAndOrientation(uid, com_pos, com_orn, physicsClientId=c)

    def _base_frame(self, uid: int) -> tuple[np.ndarray, tuple]:
        c = self.client
        com_pos, com_orn = p.getBasePositionAndOrientation(uid, physicsClientId=c)
        local_pos, local_orn = p.getDynamicsInfo(uid, -1, physicsClientId=c)[3:5]
        inv_pos, inv_orn = p.invertTransform(local_pos, local_orn)
        pos, orn = p.multiplyTransforms(com_pos, com_orn, inv_pos, inv_orn)
        return np.array(pos), orn

    def _hold(self, targets: np.ndarray, n: int) -> None:
        gains = self._pd_gains
        for _ in range(n):
            self._physics_step(targets, gains)

    def _physics_step(self, targets: np.ndarray, gains: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        c, dt = self.client, self.physics_dt
        kp, kd, limit = gains
        q, qd = self._q, self._qd
        spec = self._spec_dofs
        motor = np.clip(kp * (targets - q[spec]) - kd * qd[spec], -limit, limit)
        torque = -self._damping * qd
        torque[spec] += motor
        self._motor_torque = motor
        now = self._steps_since_reset * dt
        for push in self._pushes:
            if push.start <= now + 1e-9 < push.end:
                self._apply_push(push)
        for tree in self._moving:
            p.setJointMotorControlArray(
                tree.uid, tree.dof_joints, p.TORQUE_CONTROL, forces=torque[tree.dofs].tolist(), physicsClientId=c
            )
        p.stepSimulation(physicsClientId=c)
        self._steps_since_reset += 1
        self._pushes = [push for push in self._pushes if push.end > now + dt + 1e-9]
        self._read_joints()

    def _read_joints(self) -> None:
        for tree in self._moving:
            states = p.getJointStates(tree.uid, tree.dof_joints, physicsClientId=self.client)
            self._q[tree.dofs] = [s[0] for s in states]
            self._qd[tree.dofs] = [s[1] for s in states]

    def _apply_push(self, push: _Push) -> None:
        c = self.client
        if push.link == -1:
            com = p.getBasePositionAndOrientation(push.uid, physicsClientId=c)[0]
        else:
            com = p.getLinkState(push.uid, push.link, physicsClientId=c)[0]
        p.applyExternalForce(push.uid, push.link, push.force.tolist(), com, p.WORLD_FRAME, physicsClientId=c)
        if push.torque.any():
            p.applyExternalTorque(push.uid, push.link, push.torque.tolist(), p.WORLD_FRAME, physicsClientId=c)

    def state(self) -> RobotState:
        c, spec = self.client, self.robot_spec
        imu = np.zeros(6)
        extras: dict[str, float] = {}
        if self._base is not None:
            uid = self._base.uid
            pos, orn = self._base_frame(uid)
            linear, angular = p.getBaseVelocity(uid, physicsClientId=c)
            rot = _rotation(orn)
            imu[:3] = p.getEulerFromQuaternion(orn)
            imu[3:] = rot.T @ np.array(angular)  # body frame, as a gyro reads
            # MuJoCo reports the body frame origin's velocity; Bullet the centre of mass's.
            origin_velocity = np.array(linear) + np.cross(angular, pos - np.array(
                p.getBasePositionAndOrientation(uid, physicsClientId=c)[0]))
            extras["base_velocity_x"], extras["base_velocity_y"], extras["base_velocity_z"] = origin_velocity.tolist()
            extras["base_height"] = float(pos[2])
            extras["base_position_x"], extras["base_position_y"] = float(pos[0]), float(pos[1])
        if self._valve_dof is not None:
            extras["valve_angle"] = float(self._q[self._valve_dof])
            extras["valve_velocity"] = float(self._qd[self._valve_dof])
        state = RobotState(
            timestamp=self.time,
            joint_pos=self._q[self._spec_dofs].copy(),
            joint_vel=self._qd[self._spec_dofs].copy(),
            joint_current=self._motor_torque / spec.torque_constant,
            imu=imu,
            extras=extras,
        )
        return self._frozen.apply(state) if self._frozen else state

    def _body_handle(self, body: str) -> tuple[int, int] | None:
        """Bullet's (multibody, link) of an MJCF body; none for the world (body 0), which a push cannot move."""
        body_id = mujoco.mj_name2id(self.description, mujoco.mjtObj.mjOBJ_BODY, body)
        return self._link.get(body_id) if body_id > 0 else None

    def _schedule_push(
        self, handle: tuple[int, int], force: np.ndarray, torque: np.ndarray, start: float, end: float
    ) -> None:
        uid, link = handle
        self._pushes.append(_Push(uid, link, force, torque, start, end))

    def stick_motor(self, joint: int) -> None:
        # A jammed gearbox: the joint's friction motor brakes it where it is with all the torque it needs.
        self._stuck.add(int(self._spec_dofs[self._joint_index(joint)]))
        self._set_joint_friction()

    def _clear_engine_perturbations(self) -> None:
        self._pushes = []
        self._stuck = set()
        self._set_joint_friction()

    @property
    def time(self) -> float:
        return self._steps_since_reset * self.physics_dt

    def render(self, width: int = 480, height: int = 360) -> np.ndarray:
        """Bullet's software renderer through the MJCF's first camera (following its body if it has one)."""
        m = self.description
        if m.ncam == 0:
            raise RuntimeError(f"robot {self.robot_spec.name}: the model has no camera to render from")
        if self._camera is None:
            d = mujoco.MjData(m)
            mujoco.mj_forward(m, d)
            body = int(m.cam_bodyid[0])
            self._camera = (d.cam_xpos[0].copy(), d.cam_xmat[0].reshape(3, 3).copy(), body, d.xpos[body].copy())
        eye, frame, body, body0 = self._camera
        if body in self._link and self._link[body][1] == -1 and body != 0:
            eye = eye + self._base_frame(self._link[body][0])[0] - body0
        # A MuJoCo camera looks down its -z axis with y up.
        view = p.computeViewMatrix(eye.tolist(), (eye - frame[:, 2]).tolist(), frame[:, 1].tolist())
        projection = p.computeProjectionMatrixFOV(float(m.cam_fovy[0]), width / height, 0.01, 50.0)
        image = p.getCameraImage(
            width, height, view, projection, renderer=p.ER_TINY_RENDERER, physicsClientId=self.client
        )[2]
        return np.asarray(image, dtype=np.uint8).reshape(height, width, 4)[:, :, :3].copy()

    def close(self) -> None:
        self._finalizer()
