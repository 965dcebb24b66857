"""ObservationBuilder: layout from robot spec + task, feature values, and errors at construction."""

import dataclasses

import numpy as np
import pytest

from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import RobotState
from firmware_bridge.task import TaskInterface
from firmware_bridge.typed_yaml import ConfigError


@pytest.fixture(scope="module")
def claw():
    return RobotSpec.load(resolve_robot("claw"))


@pytest.fixture(scope="module")
def quadruped():
    return RobotSpec.load(resolve_robot("quadruped"))


def _claw_state(valve_angle: float) -> RobotState:
    q = np.linspace(-0.4, 0.4, 9)
    return RobotState(
        timestamp=1.5,
        joint_pos=q,
        joint_vel=np.full(9, 0.25),
        joint_current=np.zeros(9),
        extras={"valve_angle": valve_angle, "valve_velocity": -0.5},
    )


def test_claw_turn_layout_and_values(claw):
    task = TaskInterface.load("claw_turn")
    builder = ObservationBuilder(claw, task)
    assert builder.layout == [
        ("joint_pos", 9),
        ("last_action", 9),
        ("valve_angle_cos_sin", 2),
        ("valve_spokes_cos_sin", 2),
        ("valve_velocity", 1),
        ("valve_target_error", 1),
    ]
    assert builder.dim == 24
    history = builder.new_history({"valve_angle": -3.0})
    history.record(np.full(9, 0.5), _claw_state(0.0))
    obs = builder.build(_claw_state(3.0), history)
    assert obs.dtype == np.float32 and obs.shape == (24,)
    s = builder.slices()
    np.testing.assert_allclose(obs[s["joint_pos"]], np.linspace(-0.4, 0.4, 9), rtol=1e-6)
    np.testing.assert_array_equal(obs[s["last_action"]], np.full(9, 0.5, dtype=np.float32))
    np.testing.assert_allclose(obs[s["valve_angle_cos_sin"]], [np.cos(3.0), np.sin(3.0)], rtol=1e-6)
    np.testing.assert_allclose(obs[s["valve_spokes_cos_sin"]], [np.cos(9.0), np.sin(9.0)], rtol=1e-5)
    assert obs[s["valve_velocity"]][0] == pytest.approx(-0.5)
    # -3.0 - 3.0 = -6.0 rad, the short way round is +0.283 rad.
    assert obs[s["valve_target_error"]][0] == pytest.approx(2 * np.pi - 6.0, abs=1e-6)


def test_error_cos_sin_feature_is_continuous_across_half_a_turn(claw):
    task = dataclasses.replace(TaskInterface.load("claw_turn"), observation=["valve_target_error_cos_sin"])
    builder = ObservationBuilder(claw, task)
    history = builder.new_history({"valve_angle": 0.0})
    just_over = builder.build(_claw_state(np.pi - 1e-3), history)[-2:]
    just_under = builder.build(_claw_state(-np.pi + 1e-3), history)[-2:]
    np.testing.assert_allclose(just_over, just_under, atol=3e-3)
    np.testing.assert_allclose(just_over, [-1.0, 0.0], atol=3e-3)


def test_new_history_uses_task_goal_by_default(claw):
    builder = ObservationBuilder(claw, TaskInterface.load("claw_turn"))
    history = builder.new_history()
    assert history.goals == {"valve_angle": pytest.approx(3.14159)}
    np.testing.assert_array_equal(history.last_action, np.zeros(9))


def test_quadruped_layout_reads_imu_and_offsets_from_start(quadruped):
    builder = ObservationBuilder(quadruped, TaskInterface.load("quadruped_walk"))
    assert builder.feature_names == [
        "base_roll_pitch", "base_angular_velocity", "joint_pos_from_start", "joint_vel", "last_action", "base_heading"
    ]
    assert builder.dim == 2 + 3 + 8 + 8 + 8 + 2
    state = RobotState(
        timestamp=0.0,
        joint_pos=quadruped.start + 0.1,
        joint_vel=np.arange(8.0),
        joint_current=np.zeros(8),
        imu=np.array([0.1, -0.2, 3.0, 1.0, 2.0, 3.0]),
    )
    obs = builder.build(state, builder.new_history())
    np.testing.assert_allclose(obs[:5], [0.1, -0.2, 1.0, 2.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(obs[5:13], np.full(8, 0.1), rtol=1e-5)
    np.testing.assert_allclose(obs[13:21], np.arange(8.0))
    np.testing.assert_allclose(obs[29:31], [0.0, 1.0])  # the first tick faces forward, whatever the yaw reads


def test_history_features_are_the_previous_tick_and_zero_at_the_start(quadruped):
    task = dataclasses.replace(
        TaskInterface.load("quadruped_walk"), observation=["joint_pos_from_start_prev", "last_action_prev"]
    )
    builder = ObservationBuilder(quadruped, task)
    s = builder.slices()

    def state(offset: float) -> RobotState:
        return RobotState(timestamp=0.0, joint_pos=quadruped.start + offset, joint_vel=np.zeros(8),
                          joint_current=np.zeros(8), imu=np.zeros(6))

    history = builder.new_history()
    first = builder.build(state(0.3), history)
    np.testing.assert_array_equal(first[s["joint_pos_from_start_prev"]], np.zeros(8))
    np.testing.assert_array_equal(first[s["last_action_prev"]], np.zeros(8))
    history.record(np.full(8, 0.25), state(0.3))
    second = builder.build(state(0.5), history)
    np.testing.assert_allclose(second[s["joint_pos_from_start_prev"]], np.full(8, 0.3), rtol=1e-5)
    np.testing.assert_array_equal(second[s["last_action"]], np.full(8, 0.25, dtype=np.float32))
    np.testing.assert_array_equal(second[s["last_action_prev"]], np.zeros(8))
    history.record(np.full(8, -0.75), state(0.5))
    third = builder.build(state(0.6), history)
    np.testing.assert_allclose(third[s["joint_pos_from_start_prev"]], np.full(8, 0.5), rtol=1e-5)
    np.testing.assert_array_equal(third[s["last_action"]], np.full(8, -0.75, dtype=np.float32))
    np.testing.assert_array_equal(third[s["last_action_prev"]], np.full(8, 0.25, dtype=np.float32))


def test_gait_clock_turns_at_the_goal_frequency_in_policy_ticks_from_each_episode_start(quadruped):
    task = dataclasses.replace(TaskInterface.load("quadruped_walk"), observation=["gait_clock"])
    builder = ObservationBuilder(quadruped, task)
    clock = builder.slices()["gait_clock"]
    state = RobotState(timestamp=0.0, joint_pos=quadruped.start, joint_vel=np.zeros(8), joint_current=np.zeros(8),
                       imu=np.zeros(6))  # fmt: skip
    history = builder.new_history({"gait_frequency": 2.5})
    ticks_per_cycle = quadruped.control_rate_hz / 2.5  # 20 at 50 Hz
    seen = {}
    for tick in range(int(ticks_per_cycle) + 1):
        seen[tick] = builder.build(state, history)[clock]
        history.record(np.zeros(8), state)
    np.testing.assert_allclose(seen[0], [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(seen[int(ticks_per_cycle // 4)], [1.0, 0.0], atol=1e-6)  # a quarter cycle
    np.testing.assert_allclose(seen[int(ticks_per_cycle // 2)], [0.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(seen[int(ticks_per_cycle)], [0.0, 1.0], atol=1e-6)
    assert history.ticks == int(ticks_per_cycle) + 1
    np.testing.assert_allclose(builder.build(state, builder.new_history({"gait_frequency": 2.0}))[clock], [0.0, 1.0])
    with pytest.raises(ConfigError, match="gait_frequency"):
        builder.new_history()


def test_unknown_feature_is_an_error_at_construction(claw):
    task = dataclasses.replace(TaskInterface.load("claw_turn"), observation=["valve_angel_cos_sin"])
    with pytest.raises(ConfigError, match=r"task claw_turn: unknown observation feature 'valve_angel_cos_sin'"):
        ObservationBuilder(claw, task)


def test_feature_needing_a_missing_sensor_is_refused(claw):
    task = dataclasses.replace(TaskInterface.load("claw_turn"), observation=["base_roll_pitch"])
    with pytest.raises(ConfigError, match=r"'base_roll_pitch' needs sensor 'imu', which robot claw does not list"):
        ObservationBuilder(claw, task)


def test_missing_goal_and_wrong_joint_count_are_named(claw):
    task = dataclasses.replace(TaskInterface.load("claw_turn"), goals={})
    builder = ObservationBuilder(claw, task)
    with pytest.raises(ConfigError, match=r"needs goal 'valve_angle'"):
        builder.new_history()
    history = builder.new_history({"valve_angle": 0.0})
    with pytest.raises(ValueError, match=r"RobotState has 8 joints, robot claw has 9"):
        builder.build(RobotState.zeros(8), history)
    with pytest.raises(KeyError, match=r"no extra sensor 'valve_angle'"):
        builder.build(RobotState.zeros(9), history)


def test_interface_hash_covers_the_task_features(claw):
    builder = ObservationBuilder(claw, TaskInterface.load("claw_turn"))
    assert builder.interface_hash() == claw.interface_hash(builder.feature_names)
    assert builder.interface_hash() != claw.interface_hash()


def test_robot_state_validates_shapes():
    with pytest.raises(ValueError, match=r"RobotState.joint_vel: shape \(3,\), expected \(2,\)"):
        RobotState(timestamp=0.0, joint_pos=np.zeros(2), joint_vel=np.zeros(3), joint_current=np.zeros(2))
    with pytest.raises(ValueError, match=r"RobotState.imu: shape \(3,\)"):
        RobotState(timestamp=0.0, joint_pos=np.zeros(2), joint_vel=np.zeros(2), joint_current=np.zeros(2),
                   imu=np.zeros(3))
    state = RobotState.zeros(2)
    copied = state.copy()
    copied.joint_pos[0] = 1.0
    assert state.joint_pos[0] == 0.0


def test_base_heading_is_the_yaw_turned_since_each_episodes_first_tick(quadruped):
    task = dataclasses.replace(TaskInterface.load("quadruped_walk"), observation=["base_heading"])
    builder = ObservationBuilder(quadruped, task)
    heading = builder.slices()["base_heading"]

    def state(yaw):
        return RobotState(timestamp=0.0, joint_pos=quadruped.start, joint_vel=np.zeros(8),
                          joint_current=np.zeros(8), imu=np.array([0.0, 0.0, yaw, 0.0, 0.0, 0.0]))  # fmt: skip

    history = builder.new_history()
    # The first tick faces forward whatever the IMU's yaw reads.
    np.testing.assert_allclose(builder.build(state(3.0), history)[heading], [0.0, 1.0], atol=1e-6)
    history.record(np.zeros(8), state(3.0))
    np.testing.assert_allclose(builder.build(state(3.0 + np.pi / 2), history)[heading], [1.0, 0.0], atol=1e-6)
    # 3.0 to -3.0 rad is 0.28 rad further left across the wrap, not 6 rad right.
    turned = 2 * np.pi - 6.0
    np.testing.assert_allclose(builder.build(state(-3.0), history)[heading], [np.sin(turned), np.cos(turned)],
                               atol=1e-6)
    # Later ticks keep the first tick's yaw as the reference; a new episode takes its own.
    history.record(np.zeros(8), state(-3.0))
    np.testing.assert_allclose(builder.build(state(3.0), history)[heading], [0.0, 1.0], atol=1e-6)
    fresh = builder.new_history()
    np.testing.assert_allclose(builder.build(state(-1.0), fresh)[heading], [0.0, 1.0], atol=1e-6)
