"""MuJoCo and PyBullet agree on the same robot: open-loop joint-target sine sweeps on a fixed base, standing
height (measured 0.2448 vs 0.2457 m), and the response to a push (0.54 vs 0.52 m/s).

Tolerances (max |q_mujoco - q_pybullet| over the sweep): 0.005 rad on the quadruped (1 ms steps), 0.02 rad on
the claw (2.5 ms steps; MuJoCo integrates the PD damping implicitly, our Bullet loop explicitly). Measured:
~0.002 and ~0.004 rad. Without the armature (geared rotors) the quadruped is off by ~0.02 rad.
"""

import dataclasses
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from sim.mujoco_backend import ASSETS, MujocoBackend
from sim.pybullet_backend import PybulletBackend
from sim.randomization import nominal, sample
from sim.task import TaskSpec

# robot -> (task, tolerance [rad], sine amplitude [rad], frequency [Hz], seconds, target update period [s])
SWEEPS = {
    "quadruped": ("quadruped_walk", 0.005, 0.4, 2.0, 1.0, 0.02),
    "claw": ("claw_turn", 0.02, 0.35, 1.0, 2.0, 0.025),
}


def fixed_base_model(robot: str, directory) -> tuple:
    """The robot's MJCF with its free joint removed and the base lifted 1 m (feet clear of the ground), and its
    spec without the IMU such a model cannot carry. Both engines load this same file."""
    tree = ET.parse(ASSETS / f"{robot}.xml")
    for body in tree.iter("body"):
        free = body.find("freejoint")
        if free is not None:
            body.remove(free)
            x, y, z = (float(v) for v in body.get("pos").split())
            body.set("pos", f"{x} {y} {z + 1.0}")
    path = directory / f"{robot}_fixed.xml"
    tree.write(path)
    spec = TaskSpec.load(SWEEPS[robot][0]).load_robot()
    return path, dataclasses.replace(spec, sensors=[s for s in spec.sensors if s != "imu"])


def sweep(backend, joint: int, amplitude: float, frequency: float, seconds: float, period: float,
          params=None) -> np.ndarray:
    spec = backend.robot_spec
    backend.reset(params or nominal(len(backend.body_names), spec.num_joints))
    trajectory = []
    for k in range(1, int(round(seconds / period)) + 1):
        target = spec.start.copy()
        target[joint] = np.clip(target[joint] + amplitude * np.sin(2 * np.pi * frequency * k * period),
                                spec.lower[joint], spec.upper[joint])
        trajectory.append(backend.step(target, period).joint_pos)
    return np.array(trajectory)


@pytest.mark.parametrize("robot", list(SWEEPS))
def test_sine_sweep_per_joint_agrees_on_a_fixed_base(robot, tmp_path):
    path, spec = fixed_base_model(robot, tmp_path)
    _, tolerance, amplitude, frequency, seconds, period = SWEEPS[robot]
    mj, pb = MujocoBackend(spec, path), PybulletBackend(spec, path)
    # The fingers and legs are identical, so one of each kind of joint covers every distinct chain.
    kinds = {name.split("_", 1)[-1] for name in spec.joint_names}
    joints = [next(i for i, n in enumerate(spec.joint_names) if n.endswith(kind)) for kind in sorted(kinds)]
    for joint in joints:
        q_mj = sweep(mj, joint, amplitude, frequency, seconds, period)
        q_pb = sweep(pb, joint, amplitude, frequency, seconds, period)
        # The sweep really moves the joint (not a robot stuck at its start pose agreeing with itself).
        assert np.ptp(q_mj[:, joint]) > amplitude
        error = np.abs(q_mj - q_pb).max()
        assert error < tolerance, f"{spec.joint_names[joint]}: max joint error {error:.4f} rad"
    mj.close()
    pb.close()


def test_sweep_disagrees_without_armature(tmp_path):
    """The agreement test can fail: drop the armature in Bullet only and the quadruped sweep leaves tolerance."""
    path, spec = fixed_base_model("quadruped", tmp_path)
    _, tolerance, amplitude, frequency, seconds, period = SWEEPS["quadruped"]
    mj, pb = MujocoBackend(spec, path), PybulletBackend(spec, path)
    params = dataclasses.replace(nominal(len(pb.body_names), spec.num_joints), armature_scale=np.zeros(8))
    q_mj = sweep(mj, 1, amplitude, frequency, seconds, period)
    q_pb = sweep(pb, 1, amplitude, frequency, seconds, period, params)
    assert np.abs(q_mj - q_pb).max() > tolerance


def test_standing_height_agrees():
    spec = TaskSpec.load("quadruped_walk").load_robot()
    heights = []
    for backend in (MujocoBackend(spec), PybulletBackend(spec)):
        backend.reset(nominal(len(backend.body_names), spec.num_joints))
        state = backend.step(spec.start, 1.0)
        assert abs(state.imu[0]) < 0.01 and abs(state.imu[1]) < 0.02  # standing level, not fallen
        heights.append(state.extras["base_height"])
        backend.close()
    assert 0.2 < heights[0] < 0.26
    assert heights[1] == pytest.approx(heights[0], abs=0.003)


def test_push_gives_the_same_base_velocity():
    """A 0.1 s, 40 N sideways push on the standing quadruped: the same impulse in both engines."""
    spec = TaskSpec.load("quadruped_walk").load_robot()
    velocities = []
    for backend in (MujocoBackend(spec), PybulletBackend(spec)):
        backend.reset(nominal(len(backend.body_names), spec.num_joints))
        backend.step(spec.start, 0.5)
        backend.apply_force("base", np.array([0.0, 40.0, 0.0]), backend.time, 0.1)
        state = backend.step(spec.start, 0.1)
        velocities.append(state.extras["base_velocity_y"])
        backend.close()
    # Impulse 4 N s on 4.3 kg: just under 0.93 m/s, less what the feet's friction takes.
    assert 0.3 < velocities[0] < 0.93
    assert velocities[1] == pytest.approx(velocities[0], rel=0.1)


def test_valve_under_a_torque_turns_alike():
    """0.05 N m on the valve for 0.2 s: damping, friction loss and armature decide where it stops."""
    spec = TaskSpec.load("claw_turn").load_robot()
    angles = []
    for backend in (MujocoBackend(spec), PybulletBackend(spec)):
        backend.reset(nominal(len(backend.body_names), spec.num_joints))
        backend.apply_force("valve", np.zeros(3), 0.0, 0.2, torque=np.array([0.0, 0.0, -0.05]))
        angles.append(backend.step(spec.start, 0.5).extras["valve_angle"])
        backend.close()
    assert angles[0] < -0.1  # measured -0.1395 (MuJoCo) and -0.1401 (PyBullet)
    assert angles[1] == pytest.approx(angles[0], rel=0.05)


def test_stuck_middle_joint_leaves_the_tip_free_alike():
    """A jammed joint pushed against by its motor while its neighbour swings: Bullet's joint speed clamp once
    froze the neighbour here."""
    spec = TaskSpec.load("claw_turn").load_robot()
    target = spec.start.copy()
    target[1], target[2] = spec.upper[1], spec.lower[2]
    tips = []
    for backend in (MujocoBackend(spec), PybulletBackend(spec)):
        backend.reset(nominal(len(backend.body_names), spec.num_joints))
        backend.stick_motor(1)
        tip = [backend.step(target, 0.05).joint_pos[2] for _ in range(6)]
        tips.append(tip)
        backend.close()
    np.testing.assert_allclose(tips[1], tips[0], atol=0.1)


@pytest.mark.parametrize("robot", list(SWEEPS))
def test_randomized_dynamics_act_alike(robot, tmp_path):
    """One episode's sampled masses, damping, armature, gains and motor strengths, given to both engines: the
    sweep still agrees, so each parameter means the same thing in both."""
    path, spec = fixed_base_model(robot, tmp_path)
    task, tolerance, amplitude, frequency, seconds, period = SWEEPS[robot]
    mj, pb = MujocoBackend(spec, path), PybulletBackend(spec, path)
    params = sample(TaskSpec.load(task).randomization, len(mj.body_names), spec.num_joints, np.random.default_rng(3))
    params = dataclasses.replace(params, payload_mass=0.0)  # no free base to carry it here
    nominal_run = sweep(mj, 1, amplitude, frequency, seconds, period)
    q_mj = sweep(mj, 1, amplitude, frequency, seconds, period, params)
    q_pb = sweep(pb, 1, amplitude, frequency, seconds, period, params)
    effect, gap = np.abs(q_mj - nominal_run).max(), np.abs(q_mj - q_pb).max()
    # The engines differ on the randomized motion well below how far the randomization moved it (measured:
    # gap 0.002 vs 0.007 rad on the quadruped, 0.004 vs 0.014 rad on the claw).
    assert gap < tolerance and gap < 0.5 * effect


def test_friction_scale_reaches_every_contact_pair():
    """Bullet multiplies the two frictions of a contact: foot x ground must be MuJoCo's max(foot, ground) x
    the episode's scale."""
    import pybullet as p

    spec = TaskSpec.load("quadruped_walk").load_robot()
    mj, pb = MujocoBackend(spec), PybulletBackend(spec)
    params = dataclasses.replace(nominal(len(pb.body_names), spec.num_joints), friction_scale=0.6)
    mj.reset(params)
    pb.reset(params)
    m = mj.model
    ground = p.getDynamicsInfo(*pb.bullet_link("world"), physicsClientId=pb.client)[1]
    for leg in ("front_left", "rear_right"):
        foot = p.getDynamicsInfo(*pb.bullet_link(f"{leg}_shank"), physicsClientId=pb.client)[1]
        expected = max(m.geom(f"{leg}_foot").friction[0], m.geom("ground").friction[0])  # MuJoCo's, scaled
        assert foot * ground == pytest.approx(expected, rel=1e-6)
    assert ground == pytest.approx(0.6)
