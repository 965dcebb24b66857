"""ActionMapper: scaling around the start pose or over the range, joint-limit clipping, rate limiting."""

import numpy as np
import pytest

from firmware_bridge.action import ActionMapper, NonFiniteActionError
from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.spec import RobotSpec


@pytest.fixture(scope="module")
def claw():
    return RobotSpec.load(resolve_robot("claw"))


@pytest.fixture(scope="module")
def quadruped():
    return RobotSpec.load(resolve_robot("quadruped"))


def test_claw_maps_unit_range_onto_joint_range(claw):
    mapper = ActionMapper(claw)
    np.testing.assert_allclose(mapper.unclipped(np.ones(9)), claw.upper)
    np.testing.assert_allclose(mapper.unclipped(-np.ones(9)), claw.lower)
    np.testing.assert_allclose(mapper.unclipped(np.zeros(9)), np.zeros(9), atol=1e-12)


def test_quadruped_scales_around_start_and_clips_to_limits(quadruped):
    mapper = ActionMapper(quadruped)  # no reset: no rate limit
    target = mapper.map(np.array([0.5, -0.5, 0, 0, 0, 0, 1.0, -1.0]))
    np.testing.assert_allclose(target[:2], [0.6 + 0.25, -1.2 - 0.25])
    np.testing.assert_allclose(target[6:], [1.1, -1.7])
    # Outputs beyond [-1, 1] are clipped first.
    np.testing.assert_allclose(mapper.unclipped(np.full(8, 3.0)), quadruped.start + 0.5)


def test_targets_never_leave_joint_limits():
    from firmware_bridge.spec import RobotSpec as Spec

    spec = Spec.from_mapping({
        "name": "one", "joints": [{"name": "j", "motor_id": 1, "lower": -0.2, "upper": 1.0, "max_velocity": 100.0,
                                   "max_torque": 1.0, "kp": 1.0, "kd": 0.1, "start": 0.0}],
        "bus": {"kind": "framed_serial"}, "sensors": ["joint_encoders"], "control_rate_hz": 10.0,
        "observation": ["joint_pos"], "action": {"center": "start", "scale": 0.5}, "safe_state": {"mode": "torque_off"},
    })
    mapper = ActionMapper(spec)
    assert mapper.map(np.array([-1.0]))[0] == pytest.approx(-0.2)
    assert mapper.map(np.array([1.0]))[0] == pytest.approx(0.5)


def test_rate_limit_per_tick_after_reset(claw):
    mapper = ActionMapper(claw)
    np.testing.assert_allclose(mapper.max_step, np.full(9, 2.0944 * 0.1))
    mapper.reset(claw.start)
    first = mapper.map(np.ones(9))
    np.testing.assert_allclose(first, np.minimum(claw.start + 0.20944, claw.upper))
    assert first[2] == pytest.approx(1.5708)  # tip starts at 1.4, 0.19 rad below its limit
    second = mapper.map(np.ones(9))
    np.testing.assert_allclose(second, np.minimum(claw.start + 2 * 0.20944, claw.upper))
    # Reset from a measured pose outside the limits starts from the clipped pose.
    mapper.reset(np.full(9, 5.0))
    np.testing.assert_allclose(mapper.map(np.ones(9)), claw.upper)


def test_quadruped_rate_is_the_smaller_of_action_and_joint_limit(quadruped):
    np.testing.assert_allclose(ActionMapper(quadruped).max_step, np.full(8, 12.0 / 50.0))


def test_bad_actions_raise_naming_the_problem(claw):
    mapper = ActionMapper(claw)
    with pytest.raises(ValueError, match=r"action: expected shape \(9,\), got \(8,\)"):
        mapper.map(np.zeros(8))
    bad = np.zeros(9)
    bad[4] = np.nan
    with pytest.raises(NonFiniteActionError, match=r"non-finite policy output for joint\(s\) f1_middle"):
        mapper.map(bad)
    with pytest.raises(ValueError, match=r"ActionMapper.reset: expected shape"):
        mapper.reset(np.zeros(3))
