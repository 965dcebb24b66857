"""Randomization: pure and seeded, inside its ranges, off means nominal, and it reaches the physics."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

import sim  # noqa: F401
from firmware_bridge.state import RobotState
from sim.randomization import corrupt_state, nominal, sample
from sim.task import RandomizationSpec, TaskSpec
from firmware_bridge.typed_yaml import ConfigError


def _trajectory(env_id: str, seed: int, steps: int = 15):
    env = gym.make(env_id)
    obs, info = env.reset(seed=seed)
    actions = np.random.default_rng(99).uniform(-1, 1, (steps, env.action_space.shape[0])).astype(np.float32)
    observations, rewards = [obs], []
    for a in actions:
        obs, reward, *_ = env.step(a)
        observations.append(obs)
        rewards.append(reward)
    return info, np.array(observations), np.array(rewards)


@pytest.mark.parametrize("env_id", ["robot_sac/ClawTurn-v0", "robot_sac/QuadrupedWalk-v0"])
def test_same_seed_same_parameters_and_identical_trajectory(env_id):
    info_a, obs_a, rew_a = _trajectory(env_id, seed=7)
    info_b, obs_b, rew_b = _trajectory(env_id, seed=7)
    np.testing.assert_array_equal(info_a.pop("privileged"), info_b.pop("privileged"))
    assert info_a == info_b
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)


@pytest.mark.parametrize("task_name", ["claw_turn", "quadruped_walk"])
def test_different_seeds_give_different_parameters_inside_ranges(task_name):
    spec = TaskSpec.load(task_name).randomization
    draws = [sample(spec, 12, 9, np.random.default_rng(seed)) for seed in range(20)]
    for field in ("mass_scale", "friction_scale", "damping_scale", "armature_scale", "motor_strength", "kp_scale",
                  "kd_scale", "latency_ticks", "payload_mass", "valve_damping_scale", "valve_start_angle"):
        low, high = getattr(spec, field)
        values = np.concatenate([np.atleast_1d(getattr(p, field)) for p in draws])
        assert np.all(values >= low) and np.all(values <= high), field
        if high > low:
            assert len(np.unique(values)) > 1, field
    for sensor, limit in spec.obs_bias.items():
        biases = np.concatenate([p.obs_bias[sensor] for p in draws])
        assert np.all(np.abs(biases) <= limit) and np.ptp(biases) > 0


def test_switched_off_gives_nominal_and_draws_nothing():
    spec = dataclasses.replace(TaskSpec.load("quadruped_walk").randomization, enabled=False)
    rng = np.random.default_rng(0)
    params = sample(spec, 9, 8, rng)
    assert params.as_dict() == nominal(9, 8).as_dict()
    assert rng.uniform() == np.random.default_rng(0).uniform()


def test_nominal_env_reports_nominal_parameters_and_model_values():
    env = gym.make("robot_sac/QuadrupedWalkNominal-v0")
    _, info = env.reset(seed=5)
    backend = env.unwrapped.backend
    assert info["dynamics"] == nominal(len(backend.body_names), 8).as_dict()
    np.testing.assert_allclose(backend.model.body_mass, backend.nominal_mass)
    np.testing.assert_allclose(backend.model.actuator_gainprm[:, 0], env.unwrapped.robot_spec.kp)


def test_sampled_parameters_reach_the_model():
    env = gym.make("robot_sac/QuadrupedWalk-v0")
    _, info = env.reset(seed=11)
    backend, spec = env.unwrapped.backend, env.unwrapped.robot_spec
    d = info["dynamics"]
    m = backend.model
    base = m.body("base").id
    assert m.body_mass[base] == pytest.approx(3.5 * d["mass_scale"][0] + d["payload_mass"])
    strength = np.array(d["motor_strength"])
    np.testing.assert_allclose(m.actuator_gainprm[:, 0], strength * spec.kp * np.array(d["kp_scale"]))
    np.testing.assert_allclose(m.actuator_biasprm[:, 2], -strength * spec.kd * np.array(d["kd_scale"]))
    np.testing.assert_allclose(m.actuator_forcerange[:, 1], strength * spec.max_torque)
    np.testing.assert_allclose(m.geom_friction[:, 0], backend.nominal_friction[:, 0] * d["friction_scale"])


def test_valve_start_angle_and_damping_are_applied():
    env = gym.make("robot_sac/ClawTurn-v0")
    _, info = env.reset(seed=4)
    base = env.unwrapped
    assert base.true_state.extras["valve_angle"] == pytest.approx(info["dynamics"]["valve_start_angle"])
    dof = base.backend.valve_dof_id
    assert base.backend.model.dof_damping[dof] == pytest.approx(0.05 * info["dynamics"]["valve_damping_scale"])


def test_corrupt_state_adds_bias_and_noise_without_touching_the_input():
    params = dataclasses.replace(
        nominal(1, 3), obs_noise={"joint_pos": 0.1}, obs_bias={"valve_angle": np.array([0.5]), "imu": np.ones(6)}
    )
    state = RobotState(0.0, np.zeros(3), np.zeros(3), np.zeros(3), extras={"valve_angle": 1.0})
    out = corrupt_state(state, params, np.random.default_rng(0))
    expected_noise = np.random.default_rng(0).normal(0.0, 0.1, 3)
    np.testing.assert_allclose(out.joint_pos, expected_noise)
    assert out.extras["valve_angle"] == pytest.approx(1.5)
    np.testing.assert_array_equal(out.imu, np.ones(6))
    np.testing.assert_array_equal(state.joint_pos, np.zeros(3))
    assert state.extras["valve_angle"] == 1.0


def test_latency_delays_the_command():
    """With one tick of latency the first action has no effect until the second tick."""
    moved = {}
    for latency in (0.0, 1.0):
        env = gym.make("robot_sac/ClawTurnNominal-v0").unwrapped
        env.reset(seed=0, options={"perturbation": ("latency_ticks", latency)})
        q0 = env.true_state.joint_pos.copy()
        env.step(np.ones(9, dtype=np.float32))
        moved[latency] = np.abs(env.true_state.joint_pos - q0).max()
    assert moved[0.0] > 0.05 and moved[1.0] < 0.01


def test_bad_randomization_keys_are_named():
    with pytest.raises(ConfigError, match=r"randomization.obs_noise.gps: unknown sensor"):
        RandomizationSpec(obs_noise={"gps": 0.1})
    with pytest.raises(ConfigError, match=r"randomization.mass_scale: low 1.2 above high 0.8"):
        RandomizationSpec(mass_scale=(1.2, 0.8))
