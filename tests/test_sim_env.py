"""RobotEnv through Gymnasium: API checks, one observation code path, time limits, perturbation options."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim  # noqa: F401  (registers the ids)
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.state import RobotState
from sim.env import RobotEnv
from sim.task import TaskSpec

ENV_IDS = ["robot_sac/ClawTurn-v0", "robot_sac/QuadrupedWalk-v0"]


@pytest.mark.parametrize("env_id", ENV_IDS + ["robot_sac/ClawTurnFixed-v0", "robot_sac/QuadrupedWalkNominal-v0"])
def test_env_passes_gymnasium_checker(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_observation_is_the_builder_applied_to_the_reported_state(env_id):
    env = gym.make(env_id)
    base = env.unwrapped
    obs, _ = env.reset(seed=3)
    first_yaw_read = base.observed_state.imu[2]
    # An independent builder from the same specs, fed the state the env says the sensors reported.
    builder = ObservationBuilder(base.robot_spec, base.task)
    rng = np.random.default_rng(0)
    for _ in range(5):
        history = base.observation_builder.new_history(base.goals)
        history.last_action = base.history.last_action.copy()
        # The heading's reference is the first tick's yaw as the sensors reported it (the robot has no other).
        history.start_yaw = None if base.history.ticks == 0 else first_yaw_read
        np.testing.assert_array_equal(obs, builder.build(base.observed_state, history))
        assert isinstance(base.observed_state, RobotState)
        obs, *_ = env.step(rng.uniform(-1, 1, base.action_space.shape).astype(np.float32))
    env.close()


def test_history_features_in_the_env_are_the_previous_observation_and_action():
    task = dataclasses.replace(
        TaskSpec.load("quadruped_walk"), observation=["joint_pos_from_start_prev", "last_action_prev"]
    )
    env = RobotEnv(task)
    s = env.observation_builder.slices()
    obs, _ = env.reset(seed=5)
    rng = np.random.default_rng(1)
    previous_action = np.zeros(8)
    for _ in range(4):
        action = rng.uniform(-1, 1, 8).astype(np.float32)
        next_obs, *_ = env.step(action)
        # The noisy reading the policy saw, not the true state: what the bridge has on the robot.
        np.testing.assert_array_equal(next_obs[s["joint_pos_from_start_prev"]], obs[s["joint_pos_from_start"]])
        np.testing.assert_array_equal(next_obs[s["last_action_prev"]], previous_action.astype(np.float32))
        obs, previous_action = next_obs, action
    env.close()


def test_nominal_env_observes_the_true_state_and_randomized_env_adds_noise():
    nominal = gym.make("robot_sac/ClawTurnNominal-v0").unwrapped
    nominal.reset(seed=0)
    nominal.step(np.zeros(9, dtype=np.float32))
    assert nominal.observed_state is nominal.true_state
    noisy = gym.make("robot_sac/ClawTurn-v0").unwrapped
    noisy.reset(seed=0)
    noisy.step(np.zeros(9, dtype=np.float32))
    assert not np.allclose(noisy.observed_state.joint_pos, noisy.true_state.joint_pos)
    np.testing.assert_allclose(noisy.observed_state.joint_pos, noisy.true_state.joint_pos, atol=0.06)


def test_time_limit_comes_from_the_task_file():
    env = gym.make("robot_sac/ClawTurnNominal-v0")
    assert env.spec.max_episode_steps == env.unwrapped.task.episode_steps == 40
    env.reset(seed=0)
    for step in range(40):
        _, _, terminated, truncated, info = env.step(np.zeros(9, dtype=np.float32))
        assert not terminated
        assert truncated == (step == 39)
    assert set(info["reward_terms"]) == {"angle_error", "progress", "within_tolerance", "near_goal", "joint_velocity",
                                           "effort"}
    assert isinstance(info["is_success"], bool)


def test_reward_is_the_sum_of_its_reported_terms():
    env = gym.make("robot_sac/QuadrupedWalk-v0")
    env.reset(seed=1)
    _, reward, _, _, info = env.step(np.full(8, 0.3, dtype=np.float32))
    assert reward == pytest.approx(sum(info["reward_terms"].values()))
    assert info["reward_terms"]["alive"] == pytest.approx(0.2)


def test_fixed_goal_variant_uses_the_task_goal_and_random_variant_samples():
    fixed = gym.make("robot_sac/ClawTurnFixed-v0")
    goals = [fixed.reset(seed=s)[1]["goals"]["valve_angle"] for s in range(3)]
    assert goals == [pytest.approx(3.14159)] * 3
    rand = gym.make("robot_sac/ClawTurn-v0")
    goals = [rand.reset(seed=s)[1]["goals"]["valve_angle"] for s in range(5)]
    assert len(set(goals)) == 5 and all(-np.pi <= g <= np.pi for g in goals)


def test_quadruped_falls_terminate():
    env = gym.make("robot_sac/QuadrupedWalkNominal-v0")
    env.reset(seed=0)
    env.unwrapped.backend.apply_force("base", np.array([0.0, 400.0, 0.0]), 0.0, 0.2)
    for _ in range(100):
        _, _, terminated, truncated, _ = env.step(np.zeros(8, dtype=np.float32))
        if terminated:
            break
    assert terminated and not truncated


def test_wrong_action_shape_and_unknown_backend_are_refused():
    env = gym.make("robot_sac/ClawTurn-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action: expected shape \(9,\), got \(8,\)"):
        env.unwrapped.step(np.zeros(8))
    with pytest.raises(ValueError, match=r"backend 'bullet': unknown \(known: mujoco"):
        gym.make("robot_sac/ClawTurn-v0", backend="bullet")


def test_perturbation_option_changes_the_episode():
    env = gym.make("robot_sac/ClawTurnNominal-v0").unwrapped
    _, info = env.reset(seed=0, options={"perturbation": ("latency_ticks", 1.0)})
    assert info["dynamics"]["latency_ticks"] == 1.0
    _, info = env.reset(seed=0, options={"perturbation": ("sensor_drop", 1)})
    frozen = env.observed_state.extras["valve_angle"]
    env.backend.data.qvel[env.backend.valve_dof_id] = 5.0
    env.step(np.zeros(9, dtype=np.float32))
    assert env.observed_state.extras["valve_angle"] == frozen
    assert env.backend.data.qpos[env.backend.valve_qpos_id] != frozen
    with pytest.raises(ValueError, match=r"perturbation 'earthquake': unknown"):
        env.reset(seed=0, options={"perturbation": ("earthquake", 1.0)})


def test_render_rgb_array_or_skip():
    env = gym.make("robot_sac/ClawTurn-v0", render_mode="rgb_array")
    env.reset(seed=0)
    try:
        frame = env.render()
    except RuntimeError as exc:
        pytest.skip(f"no GL here: {exc}")
    assert frame.shape == (360, 480, 3) and frame.dtype == np.uint8 and frame.std() > 0


def test_gymnasium_make_imports_sim_through_the_module_prefix():
    """Gymnasium 1.x dropped plugin entry points; ``module:id`` imports the module (and registers) first."""
    import subprocess
    import sys

    code = "import gymnasium as gym; env = gym.make('sim:robot_sac/ClawTurn-v0'); print(env.spec.max_episode_steps)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "40"
