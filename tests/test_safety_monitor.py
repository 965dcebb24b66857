"""The per-tick safety checks, one trigger at a time."""

import numpy as np
import pytest

from firmware_bridge.safety import SafetyMonitor, SafetyStop, StopReason, describe_faults
from firmware_bridge.state import Fault, RobotState


def _monitor(**kwargs):
    args = {"stale_after_s": 0.1, "max_missed": 3, "miss_window": 10}
    args.update(kwargs)
    return SafetyMonitor(**args)


def _state(t, faults=0):
    s = RobotState.zeros(2, timestamp=t)
    s.faults = faults
    return s


def test_motor_fault_bits_stop_and_are_named():
    monitor = _monitor()
    monitor.check_state(_state(0.0), now=0.0)
    with pytest.raises(SafetyStop) as stop:
        monitor.check_state(_state(0.01, int(Fault.OVERCURRENT | Fault.ENCODER)), now=0.01)
    assert stop.value.reason is StopReason.MOTOR_FAULT
    assert "OVERCURRENT" in str(stop.value) and "ENCODER" in str(stop.value)
    assert describe_faults(0x1000 | int(Fault.WATCHDOG)) == "WATCHDOG|0x1000"


def test_a_sensor_that_stopped_delivering_is_a_sensor_fault_unless_a_motor_fault_comes_with_it():
    monitor = _monitor()
    with pytest.raises(SafetyStop) as stop:
        monitor.check_state(_state(0.0, int(Fault.SENSOR_TIMEOUT)), now=0.0)
    assert stop.value.reason is StopReason.SENSOR_FAULT
    assert str(stop.value) == (
        "sensor fault: the board reports SENSOR_TIMEOUT: its IMU has stopped delivering samples (IMU_STALE)"
    )
    with pytest.raises(SafetyStop) as stop:
        monitor.check_state(_state(0.0, int(Fault.SENSOR_TIMEOUT | Fault.OVERCURRENT)), now=0.0)
    assert stop.value.reason is StopReason.MOTOR_FAULT and "OVERCURRENT|SENSOR_TIMEOUT" in str(stop.value)


def test_a_state_whose_timestamp_stops_advancing_is_stale():
    monitor = _monitor(stale_after_s=0.05)
    for k in range(5):
        monitor.check_state(_state(k * 0.01), now=k * 0.01)
    monitor.check_state(_state(0.04), now=0.08)  # frozen for 40 ms: still within the limit
    with pytest.raises(SafetyStop) as stop:
        monitor.check_state(_state(0.04), now=0.10)
    assert stop.value.reason is StopReason.STALE_STATE and "stuck at 0.040000" in str(stop.value)


def test_a_non_finite_observation_names_its_feature():
    monitor = _monitor(feature_slices={"joint_pos": slice(0, 2), "joint_vel": slice(2, 4)})
    monitor.check_observation(np.zeros(4, np.float32))
    with pytest.raises(SafetyStop) as stop:
        monitor.check_observation(np.array([0, 0, np.inf, 0], np.float32))
    assert stop.value.reason is StopReason.NON_FINITE_OBSERVATION and "joint_vel" in str(stop.value)


def test_missed_deadlines_beyond_the_budget_within_the_window_stop():
    monitor = _monitor(max_missed=3, miss_window=10)
    monitor.check_deadlines(2)
    for _ in range(12):  # the two misses slide out of the window
        monitor.check_deadlines(0)
    monitor.check_deadlines(3)  # exactly the budget
    with pytest.raises(SafetyStop) as stop:
        monitor.check_deadlines(1)
    assert stop.value.reason is StopReason.MISSED_DEADLINES and "4 missed in the last 10" in str(stop.value)


def test_a_lost_reply_is_tolerated_only_while_the_last_state_is_fresh():
    monitor = _monitor(stale_after_s=0.1)
    with pytest.raises(SafetyStop, match="no state yet"):
        monitor.missing_state(0.0, TimeoutError("no reply"))
    monitor.check_state(_state(1.0), now=1.0)
    monitor.missing_state(1.05, TimeoutError("no reply"))  # 50 ms old: act on it
    with pytest.raises(SafetyStop) as stop:
        monitor.missing_state(1.11, TimeoutError("no reply to seq 7"))
    assert stop.value.reason is StopReason.STALE_STATE
    assert "no reply to seq 7 (last good state: 110 ms; limit 100 ms)" in str(stop.value)
