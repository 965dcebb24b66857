"""The perturbations the robustness suite adds to ``sim.perturbations`` change what they say they change."""

import numpy as np
import pytest

from firmware_bridge.state import RobotState
from sim.env import RobotEnv
from sim.perturbations import PUSH_DURATION_S, PUSH_START_S
from sim.rewards import walked_far_enough
from sim.task import Criteria


@pytest.fixture(scope="module")
def claw():
    env = RobotEnv("claw_turn", randomize=False)
    yield env
    env.close()


@pytest.fixture(scope="module")
def quadruped():
    env = RobotEnv("quadruped_walk", randomize=False)
    yield env
    env.close()


def _hold(env, ticks):
    states = []
    for _ in range(ticks):
        env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        states.append(env.true_state)
    return states


def test_push_twists_the_valve_of_the_claw(claw):
    ticks = int(round((PUSH_START_S + PUSH_DURATION_S) / claw.robot_spec.control_period)) + 2
    claw.reset(seed=3, options={"perturbation": ("push", 0.0)})
    calm = [s.extras["valve_angle"] for s in _hold(claw, ticks)]
    claw.reset(seed=3, options={"perturbation": ("push", 0.3)})
    pushed = [s.extras["valve_angle"] for s in _hold(claw, ticks)]
    before = int(PUSH_START_S / claw.robot_spec.control_period) - 1
    assert pushed[:before] == pytest.approx(calm[:before])
    assert abs(pushed[-1] - calm[-1]) > 0.3


def test_lateral_push_moves_the_base_sideways(quadruped):
    quadruped.reset(seed=0, options={"perturbation": ("push_lateral", 240.0)})
    state = _hold(quadruped, int(round((PUSH_START_S + PUSH_DURATION_S) / quadruped.robot_spec.control_period)) + 1)[-1]
    assert abs(state.extras["base_velocity_y"]) > 0.5
    assert abs(state.extras["base_velocity_x"]) < 0.5 * abs(state.extras["base_velocity_y"])


def test_lateral_push_refuses_a_robot_without_a_base(claw):
    with pytest.raises(ValueError, match="push_lateral: robot claw has no free base"):
        claw.reset(seed=0, options={"perturbation": ("push_lateral", 10.0)})


def test_scaled_parameters_reach_the_model(claw):
    model = claw.backend.model
    claw.reset(seed=0)
    friction, damping = model.geom_friction[:, 0].copy(), model.dof_damping.copy()
    claw.reset(seed=0, options={"perturbation": ("friction", 0.5)})
    np.testing.assert_allclose(model.geom_friction[:, 0], 0.5 * friction)
    claw.reset(seed=0, options={"perturbation": ("joint_damping", 4.0)})
    joints = [model.joint(name).dofadr[0] for name in claw.robot_spec.joint_names]
    np.testing.assert_allclose(model.dof_damping[joints], 4.0 * damping[joints])
    assert model.dof_damping[claw.backend.valve_dof_id] == pytest.approx(damping[claw.backend.valve_dof_id])
    claw.reset(seed=0, options={"perturbation": ("motor_strength", 0.4)})
    np.testing.assert_allclose(model.actuator_forcerange[:, 1], 0.4 * claw.robot_spec.max_torque)


def test_lower_control_rate_holds_each_action_longer(claw):
    claw.reset(seed=0, options={"perturbation": ("control_rate", 0.5)})
    _hold(claw, 3)
    assert claw.backend.time == pytest.approx(3 * 2 * claw.robot_spec.control_period)


def test_bias_offsets_every_angle_reading(claw):
    claw.reset(seed=0, options={"perturbation": ("obs_bias", 0.05)})
    _hold(claw, 2)
    offset = claw.observed_state.joint_pos - claw.true_state.joint_pos
    np.testing.assert_allclose(np.abs(offset), 0.05)
    assert len(set(np.sign(offset))) == 2, "signs are drawn per reading"
    valve = claw.observed_state.extras["valve_angle"] - claw.true_state.extras["valve_angle"]
    assert abs(valve) == pytest.approx(0.05)


def test_dropped_readings_leave_stale_values(claw):
    claw.reset(seed=0, options={"perturbation": ("obs_dropout", 1.0)})
    first = claw.observed_state
    states = _hold(claw, 5)
    assert claw.observed_state is first
    assert not np.allclose(states[-1].joint_pos, first.joint_pos)
    claw.reset(seed=0, options={"perturbation": ("obs_dropout", 0.0)})
    _hold(claw, 1)
    assert claw.observed_state is claw.true_state


def _standing_at(x: float, roll: float = 0.0) -> RobotState:
    zeros = np.zeros(8)
    imu = np.array([roll, 0.0, 0.0, 0.0, 0.0, 0.0])
    return RobotState(0.0, zeros, zeros, zeros, imu, {"base_position_x": x, "base_height": 0.2})


def test_quadruped_success_is_distance_walked_without_falling():
    criteria = Criteria(max_tilt_deg=40.0, min_base_height=0.12, min_distance_m=2.0)
    assert walked_far_enough(_standing_at(2.5), {}, criteria)
    assert not walked_far_enough(_standing_at(1.5), {}, criteria)
    assert not walked_far_enough(_standing_at(2.5, roll=1.0), {}, criteria)
    with pytest.raises(ValueError, match="min_distance_m"):
        walked_far_enough(_standing_at(2.5), {}, Criteria(max_tilt_deg=40.0))


def test_quadruped_env_reports_success(quadruped):
    quadruped.reset(seed=0)
    _, _, _, _, info = quadruped.step(np.zeros(8, dtype=np.float32))
    assert info["is_success"] is False
    assert quadruped.true_state.extras["base_position_x"] == pytest.approx(0.0, abs=0.05)
