"""The on-robot loop against the virtual quadruped over a real pseudo-terminal, in process.

Each safety trigger ends in the safe state (the virtual board damped, then
with its torque off) with the right reason; the loop's normal run moves the robot and
hands every tick to its sinks.
"""

import argparse
import contextlib
import errno
import math
import os
import sys
import threading
import time

import numpy as np
import pytest

from firmware_bridge.action import ActionMapper
from firmware_bridge.bus_factory import open_bus
from firmware_bridge.commands import run as run_command
from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.control_loop import ControlLoop, LoopConfig
from firmware_bridge.motor_messages import BoardMode, MotorStatus
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.policy_runtime import PolicyRuntime
from firmware_bridge.safety import StopReason
from firmware_bridge.spec import RobotSpec
from firmware_bridge.task import TaskInterface
from firmware_bridge.timing import DeadlineClock, clock, timer_slack
from firmware_bridge.transitions import BackgroundSink, Transition
from sim.mujoco_backend import MujocoBackend
from sim.virtual_robot_server import PtyServer, build_robot, make_server, serving
from policy_files import write_policy

SPEC = RobotSpec.load(resolve_robot("quadruped"))
TASK = TaskInterface.load("quadruped_walk")
HIPS = np.array([0.8 if "hip" in name else 0.0 for name in SPEC.joint_names])


class Recorder:
    def __init__(self):
        self.items = []
        self.closed = False

    def handle(self, item):
        self.items.append(item)

    def close(self):
        self.closed = True


@contextlib.contextmanager
def virtual_quadruped(**kwargs):
    robot = build_robot(SPEC, MujocoBackend(SPEC), **kwargs)
    with serving(make_server(robot, serial=True)) as server:
        with open_bus(SPEC, port=server.path, timeout_s=0.05) as bus:
            yield server.robot, bus


def _policy(tmp_path, name="p.onnx", **kwargs):
    return PolicyRuntime(write_policy(tmp_path / name, SPEC, TASK, **kwargs), SPEC, TASK)


def _loop(bus, policy, version=1, sinks=(), stop=None, **config):
    config = {"rate_hz": SPEC.control_rate_hz, "duration_s": 1.0, **config}
    return ControlLoop(
        bus, ObservationBuilder(SPEC, TASK), ActionMapper(SPEC), policy, version, LoopConfig(**config),
        sinks=sinks, stop=stop,
    )  # fmt: skip


@pytest.mark.parametrize("source", ["reply", "fresh"])
def test_the_policy_drives_the_robot_and_every_tick_reaches_the_sinks(tmp_path, source):
    recorder = Recorder()
    sink = BackgroundSink("record", recorder)
    with virtual_quadruped() as (robot, bus):
        commands_before = robot.counters.commands
        reads, read_state = [], bus.read_state
        bus.read_state = lambda: reads.append(clock()) or read_state()
        report = _loop(bus, _policy(tmp_path, bias=HIPS), sinks=[sink], state_source=source).run()
        assert robot.counters.commands - commands_before == report.approach_ticks + report.ticks
        assert robot.mode is BoardMode.DISARMED  # damped, then torque off, after a clean end too
    sink.close()
    summary = report.summary()
    assert summary["safety_stop"] is None and summary["safe_state_reached"]
    # 1 s at 50 Hz: 50 deadlines, each run or counted as missed (a loaded shared VM may miss a few).
    assert 50 <= summary["ticks"] + summary["missed_deadlines"] <= 51 and summary["missed_deadlines"] <= 5
    assert summary["policy_versions"] == [1] and summary["bad_frames"] == 0
    assert set(summary["latency_us"]) == {"p50", "p99", "max"} and summary["latency_us"]["p50"] > 0
    ticks = [i for i in recorder.items if isinstance(i, Transition)]
    assert len(ticks) == summary["ticks"] and [t.tick for t in ticks] == list(range(len(ticks)))
    # A fresh state every tick; with replies, once: the first tick has no reply on its way, and reads rather
    # than act on the approach's last state (a period old or more).
    assert len(reads) == (len(ticks) if source == "fresh" else 1)
    assert reads[0] >= ticks[0].time
    hips = [i for i, name in enumerate(SPEC.joint_names) if "hip" in name]
    expected = SPEC.start[hips] + 0.5 * np.tanh(0.8)  # action.scale 0.5 around the start pose
    np.testing.assert_allclose(ticks[-1].command[hips], expected, atol=1e-6)
    moved = ticks[-1].state.joint_pos[hips] - ticks[0].state.joint_pos[hips]
    assert np.all(moved > 0.15)  # the hips followed the command
    read = report.timings.histograms["read"]
    if source == "fresh":
        assert read.percentile(50) > 100  # a bus round trip
    kinds = [i.kind for i in recorder.items if not isinstance(i, Transition)]
    assert kinds[:3] == ["armed", "policy", "policy_version"] and kinds[-1] == "safe_state"


def test_a_nan_policy_stops_before_its_output_reaches_a_motor(tmp_path):
    with virtual_quadruped() as (robot, bus):
        commands_before = robot.counters.commands
        report = _loop(bus, _policy(tmp_path, nan=True)).run()
        assert robot.mode is BoardMode.DISARMED
        policy_commands = robot.counters.commands - commands_before - report.approach_ticks
    assert report.stop_reason is StopReason.NON_FINITE_ACTION
    assert "non-finite policy output for joint(s) front_left_hip" in report.safety_stop
    assert policy_commands == 0 and report.ticks == 0 and report.safe_state_reached


def test_a_policy_that_raises_mid_run_is_a_safety_stop_naming_it_not_a_crash(tmp_path):
    runtime, calls = _policy(tmp_path), []

    def failing_policy(obs):  # as a swapped-in policy that passed its warm-up on zeros might fail on real input
        calls.append(obs)
        if len(calls) == 5:
            raise RuntimeError("Gather: index out of range")
        return runtime(obs)

    with virtual_quadruped() as (robot, bus):
        report = _loop(bus, failing_policy, duration_s=3.0).run()
        assert robot.mode is BoardMode.DISARMED
    assert report.stop_reason is StopReason.POLICY_ERROR and report.ticks == 4 and report.safe_state_reached
    assert "policy failed: policy version 1 raised RuntimeError: Gather: index out of range" == report.safety_stop


def test_a_damping_step_that_raises_anything_still_ends_with_the_torque_off(tmp_path):
    with virtual_quadruped() as (robot, bus):
        def damp_on_a_vanished_port():
            raise OSError(5, "Input/output error")

        bus.damp = damp_on_a_vanished_port
        report = _loop(bus, _policy(tmp_path), duration_s=0.2).run()
        assert robot.mode is BoardMode.DISARMED
    assert report.safe_state_reached and report.safe_stop_error is None and report.ticks >= 3


def test_a_motor_fault_reported_by_the_board_stops_the_loop(tmp_path):
    class FaultAtTick10(Recorder):
        def handle(self, item):
            if isinstance(item, Transition) and item.tick == 10:
                robot.motor_faults[3] = MotorStatus.OVERCURRENT

    sink = BackgroundSink("fault", FaultAtTick10())
    with virtual_quadruped() as (robot, bus):
        report = _loop(bus, _policy(tmp_path), duration_s=3.0, sinks=[sink]).run()
        assert robot.mode is BoardMode.DISARMED
    sink.close()
    assert report.stop_reason is StopReason.MOTOR_FAULT
    assert report.safety_stop == "motor fault: the motors report OVERCURRENT (front_right_knee: OVERCURRENT)"
    assert 10 <= report.ticks <= 14 and report.safe_state_reached  # within a few ticks of the fault


@pytest.mark.parametrize("source", ["reply", "fresh"])
def test_an_imu_that_stops_delivering_mid_run_is_a_sensor_fault_stop(tmp_path, source):
    robot = build_robot(SPEC, MujocoBackend(SPEC))
    server = make_server(robot, serial=True)
    feed, dropped_at = server.endpoint.feed, []

    def feed_then_drop(data):  # on the server's thread, so the drop never races its physics
        replies = feed(data)
        if robot.counters.commands >= 40 and not dropped_at:
            robot.backend.drop_sensor("imu")
            dropped_at.append(robot.counters.commands)
        return replies

    server.endpoint.feed = feed_then_drop
    with serving(server):
        with open_bus(SPEC, port=server.path, timeout_s=0.05) as bus:
            report = _loop(bus, _policy(tmp_path), duration_s=3.0, state_source=source).run()
    assert robot.mode is BoardMode.DISARMED and report.safe_state_reached
    assert report.stop_reason is StopReason.SENSOR_FAULT and "SENSOR_TIMEOUT" in report.safety_stop
    # The board flags its IMU 10 ms after the last sample, so the next reply or the one after carries it.
    assert dropped_at and robot.counters.commands - dropped_at[0] <= 2


@pytest.mark.parametrize("reply_wait, timeout_s", [(0.5, 0.1), (0.5, 0.02), (None, 0.1)])
def test_a_late_reply_costs_no_deadline_the_tick_runs_on_an_older_state(tmp_path, reply_wait, timeout_s):
    robot = build_robot(SPEC, MujocoBackend(SPEC))
    server = make_server(robot, serial=True)
    feed, stalls = server.endpoint.feed, []

    def feed_with_stalls(data):  # every 10th command of the policy phase is answered 65 ms (3+ periods) late
        replies = feed(data)
        if robot.counters.commands > 20 and robot.counters.commands % 10 == 0 and len(stalls) < 4:
            stalls.append(robot.counters.commands)
            time.sleep(0.065)
        return replies

    server.endpoint.feed = feed_with_stalls
    recorder = Recorder()
    sink = BackgroundSink("record", recorder)
    with serving(server):
        with open_bus(SPEC, port=server.path, timeout_s=timeout_s) as bus:
            report = _loop(bus, _policy(tmp_path), duration_s=1.5, approach_speed=20.0, reply_wait=reply_wait,
                           sinks=[sink]).run()  # fmt: skip
    sink.close()
    assert report.safety_stop is None and report.safe_state_reached and len(stalls) == 4
    stamps = np.array([item.state.timestamp for item in recorder.items if isinstance(item, Transition)])
    assert (np.diff(stamps) >= 0).all()  # an older state may be run on again, never one older than the last
    skipped = report.late_replies + report.bus_timeouts
    if reply_wait is None:  # each stall holds its tick past the next deadline
        assert report.late_replies == 0 and report.missed_deadlines >= 4
    else:  # each stall is a few ticks (3 here) on an older state, within their deadlines
        assert 8 <= skipped <= 16 and (np.diff(stamps) == 0).sum() >= 4 and report.missed_deadlines < 4
        # Up to the tick's own wait it is a late reply; past the bus timeout, when that comes first, a timeout.
        assert (report.late_replies if timeout_s == 0.1 else report.bus_timeouts) >= 8
        assert report.summary()["late_replies"] == report.late_replies == bus.counters()["late_replies"]


def test_a_robot_that_stops_answering_is_a_stale_state_and_its_watchdog_is_the_last_line(tmp_path):
    robot = build_robot(SPEC, MujocoBackend(SPEC), watchdog_s=0.1)
    server = make_server(robot, serial=True)
    assert isinstance(server, PtyServer)
    silence = threading.Event()
    thread = threading.Thread(target=server.serve, args=(silence,), daemon=True)
    thread.start()
    try:
        with open_bus(SPEC, port=server.path, timeout_s=0.03) as bus:
            threading.Timer(0.3, silence.set).start()
            report = _loop(bus, _policy(tmp_path), duration_s=3.0).run()
        thread.join()
        assert report.stop_reason is StopReason.STALE_STATE and "no STATE reply" in report.safety_stop
        # Nobody answers the safe stop either: the loop says so, and the board's own watchdog takes over.
        assert not report.safe_state_reached and "watchdog is the last line" in report.safe_stop_error
        assert robot.mode is BoardMode.ARMED
        time.sleep(0.12)
        robot.poll()  # the firmware's own timer tick
        assert robot.mode is BoardMode.DAMPING and robot.counters.watchdog_trips == 1
    finally:
        server.close()


def test_missing_too_many_deadlines_stops_the_loop(tmp_path):
    runtime = _policy(tmp_path)

    def slow_policy(obs):
        time.sleep(0.045)  # more than two 20 ms periods per tick
        return runtime(obs)

    with virtual_quadruped() as (robot, bus):
        report = _loop(bus, slow_policy, duration_s=3.0, max_missed=4).run()
        assert robot.mode is BoardMode.DISARMED
    assert report.stop_reason is StopReason.MISSED_DEADLINES and "budget 4" in report.safety_stop
    assert report.ticks <= 5  # each slow tick misses two deadlines: the budget of 4 lasts a few ticks


def test_a_policy_swapped_from_another_thread_takes_over_between_ticks(tmp_path):
    first, second = _policy(tmp_path, "v1.onnx", version=1), _policy(tmp_path, "v2.onnx", bias=HIPS, version=2)
    recorder = Recorder()
    sink = BackgroundSink("record", recorder)
    with virtual_quadruped() as (robot, bus):
        loop = _loop(bus, first, version=1, sinks=[sink])
        threading.Timer(0.4, loop.swap_policy, args=(second, 2)).start()
        report = loop.run()
    sink.close()
    assert report.policy_versions == [1, 2] and report.safety_stop is None
    ticks = [i for i in recorder.items if isinstance(i, Transition)]
    versions = [t.policy_version for t in ticks]
    switch = versions.index(2)
    assert 5 < switch < len(ticks) - 5 and set(versions[switch:]) == {2}
    assert np.all(ticks[switch - 1].action == 0) and np.all(ticks[switch].action[HIPS > 0] > 0.6)


def test_setting_stop_ends_the_run_cleanly_in_the_safe_state(tmp_path):
    stop = threading.Event()
    with virtual_quadruped() as (robot, bus):
        threading.Timer(0.6, stop.set).start()
        started = time.monotonic()
        report = _loop(bus, _policy(tmp_path), duration_s=None, stop=stop).run()
        assert time.monotonic() - started < 1.0  # within a tick of the request
        assert robot.mode is BoardMode.DISARMED
    assert report.safety_stop is None and report.safe_state_reached and report.ticks >= 3


def test_a_stop_asked_before_the_loop_runs_never_arms_the_motors(tmp_path):
    stop = threading.Event()
    stop.set()  # Ctrl-C while the bus was opening
    with virtual_quadruped() as (robot, bus):
        arms, arm = [], robot.arm
        robot.arm = lambda: arms.append(1) or arm()
        report = _loop(bus, _policy(tmp_path), stop=stop).run()
        assert robot.mode is BoardMode.DISARMED
    assert arms == [] and report.ticks == report.approach_ticks == 0 and report.safe_state_reached


def test_the_safe_stop_damps_first_and_switches_the_torque_off_after_the_hold(tmp_path):
    with virtual_quadruped() as (robot, bus):
        received = []
        disarm = robot.disarm

        def recording_disarm(torque_off):
            received.append(("torque off" if torque_off else "damping", time.monotonic(), robot.counters.commands))
            disarm(torque_off)

        robot.disarm = recording_disarm
        report = _loop(bus, _policy(tmp_path), duration_s=0.3).run()
        assert robot.mode is BoardMode.DISARMED
    assert report.safety_stop is None and report.safe_state_reached
    assert [what for what, _, _ in received] == ["damping", "torque off"]
    (_, damped_at, commands_then), (_, off_at, commands_after) = received
    assert off_at - damped_at >= SPEC.safe_state.damping_s and commands_after == commands_then


def test_the_approach_moves_slowly_from_the_armed_pose_to_the_start_pose(tmp_path):
    with virtual_quadruped(lockstep=True, watchdog_s=0) as (robot, bus):
        bus.arm()
        for _ in range(20):  # push the legs away from the start pose
            bus.exchange(SPEC.start + 0.3 * np.sign(SPEC.upper - SPEC.start - 0.3))
        bus.safe_stop()
        away = bus.read_state().joint_pos  # lockstep: nothing moves until the next command
        report = _loop(bus, _policy(tmp_path), duration_s=0.1, approach_speed=0.5).run()
    distance = np.max(np.abs(SPEC.start - np.clip(away, SPEC.lower, SPEC.upper)))
    assert distance > 0.25
    # At 0.5 rad/s and 50 Hz each approach tick moves a joint at most 0.01 rad: no jump to the start pose.
    assert report.approach_ticks == int(np.ceil(distance / 0.01)) and report.safety_stop is None


def test_a_joint_armed_outside_its_limits_is_brought_in_at_the_approach_speed(tmp_path):
    with virtual_quadruped() as (robot, bus):
        arm, exchange, sent = bus.arm, bus.exchange, []

        def arm_reading_a_sagged_knee():  # as a knee resting 0.3 rad past its limit would read
            state = arm()
            state.joint_pos[1] = SPEC.upper[1] + 0.3
            return state

        def recording_exchange(targets):
            sent.append(np.array(targets))
            return exchange(targets)

        bus.arm, bus.exchange = arm_reading_a_sagged_knee, recording_exchange
        report = _loop(bus, _policy(tmp_path), duration_s=0.1, approach_speed=0.5).run()
    assert report.safety_stop is None and len(sent) == report.approach_ticks > 0
    steps = np.abs(np.diff(np.array(sent)[:, 1], prepend=SPEC.upper[1] + 0.3))
    # 0.01 rad a tick at 0.5 rad/s and 50 Hz, the first tick included: no jump to the limit.
    assert steps.max() <= 0.01 + 1e-9 and sent[-1][1] == pytest.approx(SPEC.start[1])


def test_deadlines_past_the_end_of_the_run_are_not_counted_as_missed(tmp_path):
    runtime, calls = _policy(tmp_path), []

    def policy_slow_on_the_last_tick(obs):
        calls.append(obs)
        if len(calls) == 10:
            time.sleep(0.3)  # 15 periods: the next deadline it reaches lies well past the end
        return runtime(obs)

    with virtual_quadruped() as (robot, bus):
        report = _loop(bus, policy_slow_on_the_last_tick, duration_s=10 / SPEC.control_rate_hz,
                       approach_speed=20.0).run()  # fmt: skip
    assert report.safety_stop is None and report.ticks + report.missed_deadlines == 10


def test_a_board_that_leaves_armed_mid_run_stops_the_loop_naming_it(tmp_path):
    with virtual_quadruped() as (robot, bus):
        threading.Timer(0.5, robot.disarm, kwargs={"torque_off": False}).start()  # an emergency stop, say
        report = _loop(bus, _policy(tmp_path), duration_s=3.0, approach_speed=20.0).run()
        assert robot.mode is BoardMode.DISARMED
    assert report.stop_reason is StopReason.MOTOR_FAULT and report.safe_state_reached
    assert "DISARMED (board mode DAMPING, not enabled: front_left_hip" in report.safety_stop
    assert 5 < report.ticks < 50


@pytest.mark.parametrize("nap_s, spin_s, expected_spin_s", [(0.5e-3, None, 1e-3), (None, 3e-4, 3e-4)])
def test_the_loop_paces_with_its_configured_naps_and_spin(tmp_path, monkeypatch, nap_s, spin_s, expected_spin_s):
    waits = []

    class RecordingClock(DeadlineClock):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            waits.append((self.nap_s, self.spin_s))

    monkeypatch.setattr("firmware_bridge.control_loop.DeadlineClock", RecordingClock)
    with virtual_quadruped() as (_, bus):
        report = _loop(bus, _policy(tmp_path), duration_s=0.2, nap_s=nap_s, spin_s=spin_s).run()
    # At the spec's 50 Hz the default spin is its cap, 1 ms (a quarter of the 20 ms period would be 5).
    assert waits == [(nap_s, pytest.approx(expected_spin_s))] and report.ticks >= 5
    assert report.summary()["spin_us"] == pytest.approx(expected_spin_s * 1e6)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.sched_getscheduler(0) != os.SCHED_OTHER,
    reason="timer slack is a Linux setting, and a real-time thread has none",
)
def test_the_loop_sleeps_with_its_timer_slack_and_gives_the_threads_back_after(tmp_path):
    before = timer_slack()
    policy = _policy(tmp_path)
    seen = []

    def recording(obs):
        seen.append(timer_slack())
        return policy(obs)

    with virtual_quadruped() as (_, bus):
        report = _loop(bus, recording, duration_s=0.2, timer_slack_ns=3).run()
    assert seen and set(seen) == {3} and report.timer_slack_ns == 3 and report.summary()["timer_slack_ns"] == 3
    assert timer_slack() == before
    with virtual_quadruped() as (_, bus):
        seen.clear()
        report = _loop(bus, recording, duration_s=0.1, timer_slack_ns=None).run()
    assert set(seen) == {before} and report.timer_slack_ns is None
    with virtual_quadruped() as (_, bus):  # a safety stop gives it back too
        report = _loop(bus, _policy(tmp_path, name="nan.onnx", nan=True), timer_slack_ns=3).run()
    assert report.stop_reason is StopReason.NON_FINITE_ACTION and timer_slack() == before

    def broken_safe_stop(report):
        raise RuntimeError("the safe stop broke")

    with virtual_quadruped() as (_, bus):  # and so does a run that ends in an exception
        loop = _loop(bus, policy, duration_s=0.05, timer_slack_ns=3)
        loop._safe_stop = broken_safe_stop
        with pytest.raises(RuntimeError, match="the safe stop broke"):
            loop.run()
    assert timer_slack() == before


def test_a_refused_timer_slack_is_an_event_and_the_loop_runs_without_it(tmp_path, monkeypatch):
    def refuse(ns):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr("firmware_bridge.control_loop.set_timer_slack", refuse)
    recorder = Recorder()
    sink = BackgroundSink("record", recorder)
    with virtual_quadruped() as (_, bus):
        report = _loop(bus, _policy(tmp_path), duration_s=0.2, sinks=[sink]).run()
    sink.close()
    events = [i for i in recorder.items if not isinstance(i, Transition) and i.kind == "timer_slack"]
    assert [e.detail for e in events] == ["timer slack of 1 ns not set: [Errno 1] Operation not permitted"]
    assert report.timer_slack_ns is None and report.safety_stop is None and report.ticks >= 5


def test_the_run_commands_nap_option_takes_microseconds_or_none(capsys):
    parser = argparse.ArgumentParser()
    run_command.add_arguments(parser)
    base = ["--policy", "p.onnx", "--robot", "quadruped", "--zmq", "tcp://127.0.0.1:5555"]
    assert parser.parse_args(base).nap_us == 1000.0
    assert parser.parse_args([*base, "--nap-us", "250"]).nap_us == 250.0
    assert parser.parse_args([*base, "--nap-us", "none"]).nap_us is None
    for bad in ("0", "-5", "inf", "nan", "soon"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--nap-us", bad])
        assert "--nap-us" in capsys.readouterr().err
    assert parser.parse_args(base).spin_us is None
    assert parser.parse_args([*base, "--spin-us", "0"]).spin_us == 0.0
    for bad in ("-5", "inf", "nan", "soon"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--spin-us", bad])
        assert "--spin-us" in capsys.readouterr().err
    assert parser.parse_args(base).timer_slack_ns == 1
    assert parser.parse_args([*base, "--timer-slack-ns", "5000"]).timer_slack_ns == 5000
    assert parser.parse_args([*base, "--timer-slack-ns", "None"]).timer_slack_ns is None
    for bad in ("0", "-1", "1.5", "soon", "1000000001"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--timer-slack-ns", bad])
        assert "--timer-slack-ns" in capsys.readouterr().err
    assert parser.parse_args([*base, "--switch-interval-us", "200"]).switch_interval_us == 200.0
    for option in ("--switch-interval-us", "--bus-timeout-ms"):
        for bad in ("0", "-5", "inf", "nan", "soon", "none"):
            with pytest.raises(SystemExit):
                parser.parse_args([*base, option, bad])
            assert option in capsys.readouterr().err


def test_bad_loop_settings_are_refused_with_the_field_name():
    with pytest.raises(ValueError, match="approach_speed"):
        LoopConfig(rate_hz=50, approach_speed=0)
    # The approach's targets skip the action mapper: its speed is held to the slowest joint's limit.
    with pytest.raises(ValueError, match="approach_speed: 21 rad/s exceeds joint front_left_hip's max_velocity of 20"):
        LoopConfig(rate_hz=50, approach_speed=21.0).check_spec(SPEC)
    LoopConfig(rate_hz=50, approach_speed=20.0).check_spec(SPEC)
    for rate in (-1, 0, math.nan, math.inf):
        with pytest.raises(ValueError, match="rate_hz"):
            LoopConfig(rate_hz=rate)
    with pytest.raises(ValueError, match="nap_s"):
        LoopConfig(rate_hz=50, nap_s=0)
    with pytest.raises(ValueError, match="spin_s"):
        LoopConfig(rate_hz=50, spin_s=-1e-6)
    for slack in (0, -1, 1.5, True, 1_000_000_001):
        with pytest.raises(ValueError, match="timer_slack_ns"):
            LoopConfig(rate_hz=50, timer_slack_ns=slack)
    # NaN compares false with every bound: as a stale limit it would switch the stale-state stop off.
    LoopConfig(rate_hz=50, stale_after_s=0)  # the least allowed: two periods
    for field, bad in [("stale_after_s", math.nan), ("stale_after_s", -1), ("approach_speed", math.nan),
                       ("duration_s", math.nan), ("miss_window_s", math.inf), ("approach_tolerance", math.nan),
                       ("max_missed", -1), ("max_missed", 2.5)]:  # fmt: skip
        with pytest.raises(ValueError, match=field):
            LoopConfig(rate_hz=50, **{field: bad})
