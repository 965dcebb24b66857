"""The virtual robot's firmware behaviour, without a transport: arming, watchdog, time, sensor noise."""

import numpy as np
import pytest

from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.motor_messages import BoardMode
from firmware_bridge.spec import RobotSpec
from sim.mujoco_backend import MujocoBackend
from sim.randomization import nominal
from sim.task import TaskSpec
from sim.virtual_robot import VirtualRobot
from sim.virtual_robot_server import build_robot

SPEC = RobotSpec.load(resolve_robot("quadruped"))


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _robot(clock, watchdog_s=0.1):
    backend = MujocoBackend(SPEC)
    params = nominal(len(backend.body_names), SPEC.num_joints)
    return VirtualRobot(SPEC, backend, params, watchdog_s=watchdog_s, lockstep=True, clock=clock)


def test_watchdog_trips_after_its_timeout_and_latches_until_armed():
    clock = ManualClock()
    robot = _robot(clock)
    assert robot.command(SPEC.start) is False  # disarmed: refused
    robot.arm()
    clock.now += 0.09
    assert robot.command(SPEC.start) is True
    clock.now += 0.09
    robot.poll()
    assert robot.mode is BoardMode.ARMED
    clock.now += 0.02
    robot.poll()
    assert robot.mode is BoardMode.DAMPING and robot.watchdog_latched
    assert robot.command(SPEC.start) is False
    assert robot.mode is BoardMode.DAMPING
    robot.arm()
    assert robot.mode is BoardMode.ARMED and not robot.watchdog_latched
    assert robot.counters.watchdog_trips == 1 and robot.counters.rejected_commands == 2
    assert robot.next_deadline() == pytest.approx(clock.now + SPEC.control_period)  # sooner than the watchdog


class StallAfterReading(ManualClock):
    """A clock whose next reading comes before a stall of ``stall_s``: the process stops right after it."""

    def __init__(self) -> None:
        super().__init__()
        self.stall_s = 0.0

    def __call__(self) -> float:
        reading, self.now = self.now, self.now + self.stall_s
        self.stall_s = 0.0
        return reading


def test_a_stall_inside_a_command_does_not_feed_the_watchdog_past_it():
    clock = StallAfterReading()
    robot = _robot(clock)
    robot.arm()
    clock.now += 0.05
    clock.stall_s = 0.4  # the board hangs in the middle of taking this command
    assert robot.command(SPEC.start) is True
    clock.now += 0.01  # the next command comes right after the hang: 0.41 s since the watchdog was fed
    assert robot.command(SPEC.start) is False
    assert robot.counters.watchdog_trips == 1 and robot.mode is BoardMode.DAMPING


def test_lockstep_advances_exactly_one_control_period_per_applied_command():
    robot = _robot(ManualClock(), watchdog_s=0)
    robot.arm()
    t0 = robot.board_time_us
    for _ in range(5):
        robot.command(SPEC.start)
    assert robot.board_time_us - t0 == pytest.approx(5 * SPEC.control_period * 1e6, abs=1)
    robot.disarm(torque_off=False)
    assert robot.command(SPEC.start) is False and robot.board_time_us - t0 == pytest.approx(
        5e6 * SPEC.control_period, abs=1
    )


def test_a_task_adds_its_seeded_sensor_noise_and_nominal_reports_the_physics_exactly():
    task = TaskSpec.load("quadruped_walk")
    plain = build_robot(SPEC, MujocoBackend(SPEC), lockstep=True)
    np.testing.assert_array_equal(plain.state().joint_pos, plain.backend.state().joint_pos)
    a, b = (build_robot(SPEC, MujocoBackend(SPEC), task=task, seed=4, lockstep=True) for _ in range(2))
    noisy = a.state().joint_pos
    assert 0 < np.abs(noisy - a.backend.state().joint_pos).max() < 0.1
    np.testing.assert_array_equal(noisy, b.state().joint_pos)


def test_a_board_reply_flags_a_motor_fault_only_with_the_sample_that_carries_its_status():
    # A fault set between two samples (from another thread, as a test or a drill does) must not reach the host as
    # the board's MOTOR_FAULT flag with statuses that do not show it: the bridge would read "a motor failed".
    from firmware_bridge.motor_messages import FaultFlags, Heartbeat, MotorStatus, decode_body
    from sim.virtual_robot_board import BoardDevice

    board = BoardDevice(_robot(ManualClock()))
    board.robot.motor_faults[3] = MotorStatus.OVERCURRENT
    _, before = decode_body(board.handle(1, Heartbeat(), 1))
    assert not before.faults & FaultFlags.MOTOR_FAULT and not np.any(before.status & MotorStatus.OVERCURRENT)
    board.sample()
    _, after = decode_body(board.handle(2, Heartbeat(), 2))
    assert after.faults & FaultFlags.MOTOR_FAULT
    assert [int(s) & int(MotorStatus.OVERCURRENT) for s in after.status].count(int(MotorStatus.OVERCURRENT)) == 1
