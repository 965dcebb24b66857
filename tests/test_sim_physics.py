"""Physical sanity of the models and the effects of the backend's motor model and perturbation hooks."""

import numpy as np
import pytest

import sim  # noqa: F401  (first: it picks MuJoCo's GL backend before mujoco is imported)
import mujoco
from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.spec import RobotSpec
from sim.mujoco_backend import MujocoBackend
from sim.randomization import nominal


@pytest.fixture()
def claw():
    backend = MujocoBackend(RobotSpec.load(resolve_robot("claw")))
    backend.reset(nominal(len(backend.body_names), 9))
    return backend


@pytest.fixture()
def quadruped():
    backend = MujocoBackend(RobotSpec.load(resolve_robot("quadruped")))
    backend.reset(nominal(len(backend.body_names), 8))
    return backend


def test_quadruped_model_is_minitaur_sized(quadruped):
    assert 4.0 <= quadruped.model.body_mass.sum() <= 5.0
    assert quadruped.model.nu == 8


def test_quadruped_holding_its_start_pose_stays_up_for_5_s(quadruped):
    spec = quadruped.robot_spec
    for _ in range(250):
        state = quadruped.step(spec.start, 0.02)
        assert abs(state.imu[0]) < np.deg2rad(5) and abs(state.imu[1]) < np.deg2rad(5)
        assert state.extras["base_height"] > 0.2
    assert state.timestamp == pytest.approx(5.0)
    np.testing.assert_allclose(state.joint_pos, spec.start, atol=0.1)
    assert abs(state.extras["base_velocity_x"]) < 0.01


def test_quadruped_limp_motors_collapse(quadruped):
    for j in range(8):
        quadruped.set_motor_strength(j, 0.0)
    state = quadruped.step(quadruped.robot_spec.start, 1.0)
    assert state.extras["base_height"] < 0.12


def test_claw_finger_reaches_a_joint_target(claw):
    target = claw.robot_spec.start.copy()
    target[:3] = [0.3, -0.2, 0.9]
    state = claw.step(target, 1.0)
    np.testing.assert_allclose(state.joint_pos[:3], target[:3], atol=0.03)
    np.testing.assert_allclose(state.joint_pos[3:], claw.robot_spec.start[3:], atol=0.03)


def test_valve_spins_down_under_its_damping(claw):
    claw.data.qvel[claw.valve_dof_id] = 6.0
    speeds = [claw.step(claw.robot_spec.start, 0.02).extras["valve_velocity"] for _ in range(50)]
    assert speeds[0] > 4.0  # still turning after 0.02 s: a free rotor, not a brake
    assert all(b < a for a, b in zip(speeds, speeds[1:]) if a > 1e-3)
    assert abs(speeds[-1]) < 0.05


def test_fingers_turn_the_valve(claw):
    """Lowering the fingers among the spokes and swinging them sideways turns the valve."""
    angle0 = claw.state().extras["valve_angle"]
    down = np.tile([0.45, 0.0, 0.0], 3)  # swing aside first, then lower at the side of a spoke
    claw.step(np.tile([0.45, -0.7, 1.4], 3), 0.5)
    claw.step(down, 0.5)
    state = claw.step(np.tile([-0.45, 0.0, 0.0], 3), 1.0)
    assert abs(state.extras["valve_angle"] - angle0) > 0.3


def test_pd_law_matches_the_motor_board(claw):
    """MuJoCo's actuator force is strength * clip(kp (target - q) - kd qd, +/-max) with the episode's scales."""
    params = nominal(len(claw.body_names), 9)
    strength = np.linspace(0.8, 1.2, 9)
    kp_scale = np.linspace(1.3, 0.7, 9)
    from dataclasses import replace

    claw.reset(replace(params, motor_strength=strength, kp_scale=kp_scale))
    target = claw.robot_spec.start + np.tile([0.4, -0.3, 0.5], 3)
    claw.step(target, 0.03)
    m, d = claw.model, claw.data
    mujoco.mj_forward(m, d)
    spec = claw.robot_spec
    q, qd = d.qpos[claw.qpos_ids], d.qvel[claw.dof_ids]
    expected = strength * np.clip(spec.kp * kp_scale * (target - q) - spec.kd * qd, -spec.max_torque, spec.max_torque)
    np.testing.assert_allclose(d.actuator_force[claw.actuator_ids], expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(claw.state().joint_current, expected / spec.torque_constant, rtol=1e-9, atol=1e-12)


def test_safe_states(claw):
    claw.data.qvel[claw.dof_ids] = 1.0
    claw.set_safe_state("damping", kd=0.2)
    claw.step(claw.robot_spec.start + 0.3, 0.0025)
    mujoco.mj_forward(claw.model, claw.data)
    np.testing.assert_allclose(claw.data.actuator_force[claw.actuator_ids], -0.2 * claw.data.qvel[claw.dof_ids])
    claw.set_safe_state("torque_off")
    claw.step(claw.robot_spec.start + 0.3, 0.0025)
    np.testing.assert_array_equal(claw.state().joint_current, np.zeros(9))
    with pytest.raises(ValueError, match=r"safe state mode 'off'"):
        claw.set_safe_state("off")


def test_push_moves_the_base_for_its_duration_only(quadruped):
    start = quadruped.robot_spec.start
    quadruped.step(start, 1.0)  # settle on its feet
    quadruped.apply_force("base", np.array([60.0, 0.0, 0.0]), start=1.1, duration=0.1)
    before = quadruped.step(start, 0.1).extras["base_velocity_x"]
    during = quadruped.step(start, 0.1).extras["base_velocity_x"]
    assert abs(before) < 0.05 and during > 0.3
    assert quadruped.data.xfrc_applied.any() == False  # noqa: E712  (cleared once the push ended)
    with pytest.raises(ValueError, match=r"apply_force: no body 'tail'"):
        quadruped.apply_force("tail", np.zeros(3), 0.0, 1.0)


def test_stuck_motor_ignores_commands(claw):
    claw.stick_motor(1)
    q1 = claw.state().joint_pos[1]
    state = claw.step(claw.robot_spec.start + 0.5, 1.0)
    assert abs(state.joint_pos[1] - q1) < 0.01
    assert abs(state.joint_pos[0] - (claw.robot_spec.start[0] + 0.5)) < 0.05
    claw.clear_perturbations()
    state = claw.step(claw.robot_spec.start + 0.5, 1.0)
    assert abs(state.joint_pos[1] - (claw.robot_spec.start[1] + 0.5)) < 0.05


def test_dropped_sensors_freeze(quadruped, claw):
    quadruped.step(quadruped.robot_spec.start, 0.1)
    imu0 = quadruped.state().imu
    assert quadruped.sensor_dropped_at("imu") is None
    quadruped.drop_sensor("imu")
    assert quadruped.sensor_dropped_at("imu") == pytest.approx(quadruped.time) == pytest.approx(0.1)
    quadruped.apply_force("base", np.array([0.0, 200.0, 300.0]), quadruped.time, 0.05)
    state = quadruped.step(quadruped.robot_spec.start, 0.2)
    np.testing.assert_array_equal(state.imu, imu0)
    assert np.linalg.norm(quadruped.data.qvel[3:6]) > 0.1  # the body did turn; the IMU just does not say so
    claw.drop_sensor("joint:f0_base")
    state = claw.step(claw.robot_spec.start + 0.3, 0.5)
    assert state.joint_pos[0] == pytest.approx(claw.robot_spec.start[0])
    assert state.joint_pos[3] == pytest.approx(claw.robot_spec.start[3] + 0.3, abs=0.05)
    with pytest.raises(ValueError, match=r"drop_sensor: unknown sensor 'lidar'"):
        claw.drop_sensor("lidar")
    with pytest.raises(ValueError, match=r"robot claw has no imu \(its sensors: joint_encoders, joint_currents"):
        claw.drop_sensor("imu")
    with pytest.raises(ValueError, match=r"robot claw has no joint 'f9_tip'"):
        claw.drop_sensor("joint:f9_tip")
    quadruped.clear_perturbations()
    assert quadruped.sensor_dropped_at("imu") is None


@pytest.mark.parametrize("engine", ["mujoco", "pybullet"])
def test_a_command_late_within_the_tick_holds_the_previous_targets_first(engine):
    from sim.pybullet_backend import PybulletBackend

    spec = RobotSpec.load(resolve_robot("claw"))
    make = MujocoBackend if engine == "mujoco" else PybulletBackend
    previous, targets = spec.start.copy(), spec.start.copy()
    targets[:3] += [0.4, -0.3, 0.5]

    def run(*steps):
        backend = make(spec)
        backend.reset(nominal(len(backend.body_names), 9))
        for args, kwargs in steps:
            state = backend.step(*args, **kwargs)
        return state, backend.physics_steps

    dt = make(spec).physics_dt
    period = 20 * dt
    late, n = run(((targets, period), {"previous_targets": previous, "switch_after": 7 * dt}))
    split, _ = run(((previous, 7 * dt), {}), ((targets, 13 * dt), {}))
    assert n == 20
    np.testing.assert_array_equal(late.joint_pos, split.joint_pos)
    # The new targets get the period's last physics step however late the command came.
    very_late, _ = run(((targets, period), {"previous_targets": previous, "switch_after": 5 * period}))
    last_only, _ = run(((previous, 19 * dt), {}), ((targets, dt), {}))
    np.testing.assert_array_equal(very_late.joint_pos, last_only.joint_pos)
    # A switch before the period's start is no switch.
    early, _ = run(((targets, period), {"previous_targets": previous, "switch_after": -3 * dt}))
    on_time, n = run(((targets, period), {}))
    assert n == 20
    np.testing.assert_array_equal(early.joint_pos, on_time.joint_pos)
    assert not np.array_equal(late.joint_pos, on_time.joint_pos)
