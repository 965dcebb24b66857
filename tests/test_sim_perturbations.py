"""Each named perturbation, applied through ``reset(options=...)``, changes what it says it changes."""

import gymnasium as gym
import numpy as np
import pytest

import sim  # noqa: F401
from sim.perturbations import PERTURBATIONS, PUSH_DURATION_S, PUSH_START_S
from sim.task import TaskSpec


def _env(env_id):
    return gym.make(env_id).unwrapped


def test_every_perturbation_in_the_task_grids_is_known_and_runs():
    for task_name, env_id in (("claw_turn", "robot_sac/ClawTurnNominal-v0"),
                              ("quadruped_walk", "robot_sac/QuadrupedWalkNominal-v0")):
        env = _env(env_id)
        for name, severities in TaskSpec.load(task_name).perturbations.items():
            assert name in PERTURBATIONS
            for severity in severities:
                obs, _ = env.reset(seed=0, options={"perturbation": (name, severity)})
                obs, *_ = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
                assert np.all(np.isfinite(obs)), (name, severity)


def test_payload_and_valve_damping_change_the_parameters():
    env = _env("robot_sac/QuadrupedWalkNominal-v0")
    _, info = env.reset(seed=0, options={"perturbation": ("payload", 1.0)})
    assert info["dynamics"]["payload_mass"] == 1.0
    assert env.backend.model.body_mass.sum() == pytest.approx(5.3)
    env = _env("robot_sac/ClawTurnNominal-v0")
    _, info = env.reset(seed=0, options={"perturbation": ("valve_damping", 4.0)})
    assert env.backend.model.dof_damping[env.backend.valve_dof_id] == pytest.approx(0.2)


def test_push_happens_at_its_time():
    env = _env("robot_sac/QuadrupedWalkNominal-v0")
    env.reset(seed=0, options={"perturbation": ("push", 240.0)})
    period = env.robot_spec.control_period
    speeds = []
    for _ in range(int((PUSH_START_S + PUSH_DURATION_S) / period) + 2):
        env.step(np.zeros(8, dtype=np.float32))
        vx, vy = env.true_state.extras["base_velocity_x"], env.true_state.extras["base_velocity_y"]
        speeds.append(np.hypot(vx, vy))
    before = int(PUSH_START_S / period) - 1
    assert max(speeds[25:before]) < 0.1 and speeds[-1] > 0.5


def test_failed_motor_has_no_torque_and_weak_motor_is_weaker():
    env = _env("robot_sac/ClawTurnNominal-v0")
    env.reset(seed=0, options={"perturbation": ("motor_failed", 1)})
    limits = env.backend.model.actuator_forcerange[:, 1]
    assert np.count_nonzero(limits == 0.0) == 1
    env.reset(seed=0, options={"perturbation": ("motor_weak", 0.3)})
    limits = env.backend.model.actuator_forcerange[:, 1]
    assert sorted(np.round(limits / env.robot_spec.max_torque, 6)) == [0.3] + [1.0] * 8
    env.reset(seed=0)
    np.testing.assert_allclose(env.backend.model.actuator_forcerange[:, 1], env.robot_spec.max_torque)


@pytest.mark.parametrize("backend", ["mujoco", "pybullet"])
def test_a_joint_hook_refuses_a_joint_the_robot_does_not_have(backend):
    env = gym.make("robot_sac/ClawTurnNominal-v0", backend=backend).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="joint index 9 out of range for 9 joints"):
        env.backend.set_motor_strength(9, 0.5)
    with pytest.raises(ValueError, match="joint index -1 out of range"):
        env.backend.set_motor_strength(-1, 0.5)
    env.backend.set_motor_strength(8, 0.5)
    env.close()
