"""Task files load strictly; reward weights and perturbations must name known entries."""

import numpy as np
import pytest
import yaml

from firmware_bridge.config_paths import resolve_task
from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import RobotState
from firmware_bridge.typed_yaml import ConfigError
from sim.rewards import Reward, Transition
from sim.task import Criteria, TaskSpec


def _write(tmp_path, edit):
    mapping = yaml.safe_load(resolve_task("claw_turn").read_text())
    edit(mapping)
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["reward"].update(angel_error=1.0), r"reward.angel_error: unknown reward term for claw_turn"),
        (lambda m: m["perturbations"].update(tornado=[1.0]), r"perturbations.tornado: unknown perturbation"),
        (lambda m: m["randomization"].update(gravity=[9, 10]), r"randomization.gravity: unknown key"),
        (lambda m: m.update(kind="juggle"), r"kind: 'juggle' is not one of"),
        (lambda m: m.update(episode_steps="long"), r"episode_steps: expected an integer"),
        (lambda m: m["goal_sampling"].update(speed=[0, 1]), r"goal_sampling.speed: no fixed value"),
        (lambda m: (m.pop("goals"), m.pop("goal_sampling")), r"reward.angle_error: needs goals.valve_angle"),
        (lambda m: m["reward"].update(speed_tracking=1.0), r"reward.speed_tracking: unknown reward term for claw"),
    ],
)
def test_bad_task_files_are_refused_naming_file_and_key(tmp_path, edit, message):
    path = _write(tmp_path, edit)
    with pytest.raises(ConfigError, match=f"task.yaml: {message}"):
        TaskSpec.load(path)


def test_both_tasks_load_with_their_robots():
    for name, robot, steps in (("claw_turn", "claw", 40), ("quadruped_walk", "quadruped", 1000)):
        task = TaskSpec.load(name)
        assert task.load_robot().name == robot and task.episode_steps == steps


def test_claw_reward_terms_on_hand_made_states():
    robot = RobotSpec.load("configs/robots/claw.yaml")
    task = TaskSpec.load("claw_turn")

    def state(angle):
        return RobotState(0.0, np.zeros(9), np.full(9, 2.0), np.full(9, 0.5), extras={"valve_angle": angle})

    reward = Reward("claw_turn", {"angle_error": -2.0, "progress": 20.0, "within_tolerance": 5.0,
                                  "near_goal": 3.0, "joint_velocity": -0.02, "effort": -0.05})
    t = Transition(state(0.0), state(3.0), np.zeros(9), np.zeros(9), {"valve_angle": 3.1}, robot, task.criteria)
    total, terms = reward(t)
    assert terms["angle_error"] == pytest.approx(-0.2)
    assert terms["progress"] == pytest.approx(20.0 * (3.1 - 0.1))
    assert terms["within_tolerance"] == 5.0  # 0.1 rad < 10 degrees
    assert terms["near_goal"] == 3.0  # and so within 3 x 10 degrees
    assert terms["joint_velocity"] == pytest.approx(-0.08)
    assert terms["effort"] == pytest.approx(-0.0125)
    assert total == pytest.approx(sum(terms.values()))
    # Across the +/-pi seam the error is the short way round.
    t = Transition(
        state(3.0),
        state(-3.0),
        np.zeros(9),
        np.zeros(9),
        {"valve_angle": 3.1},
        robot,
        Criteria(success_tolerance_deg=10.0),
    )
    assert reward(t)[1]["angle_error"] == pytest.approx(-2.0 * (2 * np.pi - 6.1))
    # near_goal pays out to three tolerances (30 degrees here), not beyond; within_tolerance only inside one.
    for error_deg, near, within in ((25.0, 3.0, 0.0), (35.0, 0.0, 0.0), (5.0, 3.0, 5.0)):
        t = Transition(state(0.0), state(np.deg2rad(error_deg)), np.zeros(9), np.zeros(9), {"valve_angle": 0.0},
                       robot, Criteria(success_tolerance_deg=10.0))
        terms = reward(t)[1]
        assert (terms["near_goal"], terms["within_tolerance"]) == (near, within), error_deg


def test_speed_tracking_peaks_at_the_goal_speed_and_needs_the_goal(tmp_path):
    robot = RobotSpec.load("configs/robots/quadruped.yaml")
    criteria = TaskSpec.load("quadruped_walk").criteria

    def tracking(vx, goals):
        state = RobotState(0.0, np.zeros(8), np.zeros(8), np.zeros(8), imu=np.zeros(6), extras={"base_velocity_x": vx})
        t = Transition(state, state, np.zeros(8), np.zeros(8), goals, robot, criteria)
        return Reward("quadruped_walk", {"speed_tracking": 2.0})(t)[0]

    assert tracking(1.0, {"forward_speed": 1.0}) == pytest.approx(2.0)
    # 1/e at half a metre per second either side, and no more for going faster than the goal.
    assert tracking(0.5, {"forward_speed": 1.0}) == pytest.approx(2.0 * np.exp(-1.0))
    assert tracking(1.5, {"forward_speed": 1.0}) == pytest.approx(tracking(0.5, {"forward_speed": 1.0}))
    assert tracking(0.0, {"forward_speed": 1.0}) == pytest.approx(2.0 * np.exp(-4.0))
    with pytest.raises(ValueError, match=r"goals.forward_speed: the speed_tracking term needs a goal speed"):
        tracking(1.0, {})
    # A task file that weights the term without the goal is refused when it loads.
    mapping = yaml.safe_load(resolve_task("quadruped_walk").read_text())
    mapping.pop("goals")
    mapping["reward"]["speed_tracking"] = 2.0
    (tmp_path / "walk.yaml").write_text(yaml.safe_dump(mapping))
    with pytest.raises(ConfigError, match=r"walk.yaml: reward.speed_tracking: needs goals.forward_speed"):
        TaskSpec.load(tmp_path / "walk.yaml")
    mapping["goals"] = {"forward_speed": 1.0}
    (tmp_path / "walk.yaml").write_text(yaml.safe_dump(mapping))
    assert TaskSpec.load(tmp_path / "walk.yaml").goals == {"forward_speed": 1.0}


def test_the_fallen_term_pays_on_the_tick_the_quadruped_falls_only():
    robot = RobotSpec.load("configs/robots/quadruped.yaml")
    criteria = TaskSpec.load("quadruped_walk").criteria  # a fall: tilt past 40 degrees, or the base below 0.12 m
    reward = Reward("quadruped_walk", {"fallen": -100.0, "alive": 0.2})

    def terms(roll_deg, height):
        imu = np.array([np.deg2rad(roll_deg), 0, 0, 0, 0, 0])
        state = RobotState(0.0, np.zeros(8), np.zeros(8), np.zeros(8), imu=imu, extras={"base_height": height})
        return reward(Transition(state, state, np.zeros(8), np.zeros(8), {}, robot, criteria))

    assert terms(10.0, 0.2) == (pytest.approx(0.2), {"fallen": 0.0, "alive": pytest.approx(0.2)})
    assert terms(39.0, 0.13)[1]["fallen"] == 0.0
    assert terms(41.0, 0.2) == (pytest.approx(-99.8), {"fallen": -100.0, "alive": pytest.approx(0.2)})
    assert terms(0.0, 0.11)[1]["fallen"] == -100.0


def test_reward_refuses_unknown_weight():
    with pytest.raises(ValueError, match=r"reward.speed: unknown reward term for quadruped_walk"):
        Reward("quadruped_walk", {"speed": 1.0})
