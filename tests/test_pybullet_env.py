"""The PyBullet envs through Gymnasium, several per process, and the backend's perturbation hooks."""

import gymnasium as gym
import numpy as np
import pybullet as p
import pytest
from gymnasium.utils.env_checker import check_env

import sim  # noqa: F401  (registers the ids)
from sim.pybullet_backend import PybulletBackend
from sim.task import TaskSpec


@pytest.mark.parametrize("env_id", ["robot_sac/ClawTurn-v0", "robot_sac/QuadrupedWalk-v0"])
def test_pybullet_env_passes_gymnasium_checker(env_id):
    env = gym.make(env_id, backend="pybullet")
    assert isinstance(env.unwrapped.backend, PybulletBackend)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_envs_in_one_process_are_independent_and_deterministic():
    envs = [gym.make("robot_sac/QuadrupedWalk-v0", backend="pybullet") for _ in range(3)]
    assert len({env.unwrapped.backend.client for env in envs}) == 3
    for env in envs:
        env.reset(seed=4)
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 8)).astype(np.float32)
    untouched = envs[2].unwrapped.backend.state()
    for a in actions:
        obs0 = envs[0].step(a)[0]
        obs1 = envs[1].step(a)[0]
    # Same seed, same actions: the same episode; the third env, never stepped, has not moved.
    np.testing.assert_array_equal(obs0, obs1)
    np.testing.assert_array_equal(envs[2].unwrapped.backend.state().joint_pos, untouched.joint_pos)
    assert envs[0].unwrapped.backend.time == pytest.approx(20 * envs[0].unwrapped.robot_spec.control_period, rel=0.2)
    for env in envs:
        env.close()


@pytest.fixture
def quadruped():
    backend = PybulletBackend(TaskSpec.load("quadruped_walk").load_robot())
    yield backend
    backend.close()


@pytest.fixture
def claw():
    backend = PybulletBackend(TaskSpec.load("claw_turn").load_robot())
    yield backend
    backend.close()


def test_stuck_motor_holds_whatever_it_is_commanded(claw):
    spec = claw.robot_spec
    start = claw.state().joint_pos.copy()
    claw.stick_motor(1)
    target = spec.start.copy()
    target[1] = spec.upper[1]
    target[2] = spec.lower[2]
    state = claw.step(target, 1.0)
    assert abs(state.joint_pos[1] - start[1]) < 5e-3
    assert abs(state.joint_pos[2] - spec.lower[2]) < 0.1  # a free joint does follow
    claw.clear_perturbations()
    assert claw.step(target, 1.0).joint_pos[1] > start[1] + 1.0


def test_failed_motor_goes_limp_and_weak_motor_gives_less_torque(quadruped):
    spec = quadruped.robot_spec
    quadruped.step(spec.start, 0.3)
    target = spec.start + 0.4
    strong = quadruped.step(target, 0.005).joint_current.copy()
    quadruped.reset(quadruped.params)
    quadruped.step(spec.start, 0.3)
    quadruped.set_motor_strength(0, 0.5)
    quadruped.set_motor_strength(3, 0.0)
    weak = quadruped.step(target, 0.005).joint_current
    assert weak[3] == 0.0
    assert 0.0 < abs(weak[0]) <= 0.5 * spec.max_torque[0] / spec.torque_constant[0] + 1e-9
    assert abs(weak[0]) < abs(strong[0])


def test_safe_states_and_gains(claw):
    spec = claw.robot_spec
    claw.step(spec.start, 0.2)
    claw.set_safe_state("torque_off")
    state = claw.step(spec.lower, 0.5)
    assert np.all(state.joint_current == 0.0)
    claw.set_safe_state("damping", kd=0.3)
    state = claw.step(spec.lower, 0.0025)
    # Damping only: the motor pushes against the motion, never towards the target.
    assert np.all(state.joint_current * state.joint_vel <= 1e-12)
    claw.set_safe_state(None)
    claw.set_gains(np.zeros(spec.num_joints), np.zeros(spec.num_joints))
    assert np.all(claw.step(spec.upper, 0.1).joint_current == 0.0)


def test_dropped_sensors_freeze_and_clear(quadruped, claw):
    quadruped.drop_sensor("imu")
    frozen = quadruped.state().imu.copy()
    quadruped.apply_force("base", np.array([0.0, 150.0, 0.0]), 0.0, 0.1)
    state = quadruped.step(quadruped.robot_spec.start, 0.3)
    np.testing.assert_array_equal(state.imu, frozen)
    quadruped.clear_perturbations()
    assert not np.array_equal(quadruped.state().imu, frozen)

    claw.drop_sensor("joint:f0_tip")
    before = claw.state().joint_pos[2]
    target = claw.robot_spec.start.copy()
    target[2] = 0.0
    state = claw.step(target, 1.0)
    assert state.joint_pos[2] == before
    assert state.joint_pos[5] == pytest.approx(1.4, abs=0.05)
    with pytest.raises(ValueError, match="drop_sensor: unknown sensor 'lidar'"):
        claw.drop_sensor("lidar")
    with pytest.raises(ValueError, match="robot quadruped has no valve_encoder"):
        quadruped.drop_sensor("valve_encoder")


def test_forces_on_unknown_bodies_are_refused(claw):
    with pytest.raises(ValueError, match="apply_force: no body 'lid'"):
        claw.apply_force("lid", np.zeros(3), 0.0, 0.1)
    with pytest.raises(ValueError, match=r"force and torque must have shape \(3,\)"):
        claw.apply_force("valve", np.zeros(2), 0.0, 0.1)


def test_reset_applies_randomized_params_and_perturbation_options():
    env = gym.make("robot_sac/QuadrupedWalkNominal-v0", backend="pybullet").unwrapped
    backend = env.backend
    uid, link = backend.bullet_link("base")
    env.reset(seed=0)
    base_mass = p.getDynamicsInfo(uid, link, physicsClientId=backend.client)[0]
    _, info = env.reset(seed=0, options={"perturbation": ("payload", 1.0)})
    assert info["dynamics"]["payload_mass"] == 1.0
    assert p.getDynamicsInfo(uid, link, physicsClientId=backend.client)[0] == pytest.approx(base_mass + 1.0)
    env.reset(seed=0)
    assert p.getDynamicsInfo(uid, link, physicsClientId=backend.client)[0] == pytest.approx(base_mass)
    env.close()


def test_render_rgb_array():
    env = gym.make("robot_sac/QuadrupedWalk-v0", backend="pybullet", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (360, 480, 3) and frame.dtype == np.uint8 and frame.std() > 0
    env.close()


@pytest.mark.parametrize("task", ["quadruped_walk", "claw_turn"])
def test_every_perturbation_of_the_task_runs_on_pybullet(task):
    """The task's robustness grid, each perturbation at its strongest severity, a second of simulated time."""
    from sim.perturbations import PERTURBATIONS

    env = gym.make(f"robot_sac/{'QuadrupedWalk' if task == 'quadruped_walk' else 'ClawTurn'}-v0", backend="pybullet")
    grid = env.unwrapped.task.perturbations
    assert grid and set(grid) <= set(PERTURBATIONS)
    steps = int(round(1.5 * env.unwrapped.robot_spec.control_rate_hz))
    for name, severities in grid.items():
        env.reset(seed=1, options={"perturbation": (name, severities[-1])})
        for _ in range(steps):
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            assert np.all(np.isfinite(obs)) and np.isfinite(reward), name
            if terminated:
                break
    env.close()
