"""The motor-board bus against the virtual quadruped, over a real pseudo-terminal and a real ZMQ socket."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import serial
import zmq

from firmware_bridge.board_bus import BoardBus, SerialLink, ZmqLink
from firmware_bridge.bus_factory import open_bus
from firmware_bridge.calibration import Calibration, JointCalibration
from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.motor_bus import BusError, BusTimeout, ReplyLate
from firmware_bridge.motor_messages import BoardMode, FaultFlags, MotorStatus, State
from firmware_bridge.serial_framing import encode_frame
from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import Fault
from firmware_bridge.typed_yaml import ConfigError
from robot_sac.cli import main as robot_sac_main
from sim.mujoco_backend import MujocoBackend
from sim.task import TaskSpec
from sim.virtual_robot_server import build_robot, make_server, serving

SPEC = RobotSpec.load(resolve_robot("quadruped"))


def _virtual(serial_link=True, **kwargs):
    robot = build_robot(SPEC, MujocoBackend(SPEC), **kwargs)
    return serving(make_server(robot, serial=serial_link))


@pytest.mark.parametrize("transport", ["serial", "zmq"])
def test_lockstep_exchange_advances_one_period_and_holds_the_pose(transport):
    with _virtual(transport == "serial", lockstep=True, watchdog_s=0) as server:
        where = {"port": server.path} if transport == "serial" else {"zmq_address": server.address}
        with open_bus(SPEC, timeout_s=0.5, **where) as bus:
            motors = bus.scan()
            assert [m.motor_id for m in motors] == list(range(8)) and motors[0].firmware == "1.1.0"
            with bus.armed() as start:
                states = [bus.exchange(SPEC.start) for _ in range(10)]
            assert server.robot.mode is BoardMode.DISARMED  # damped, then torque off, on leaving the block
            assert np.diff([start.timestamp] + [s.timestamp for s in states]) == pytest.approx(SPEC.control_period)
            np.testing.assert_allclose(states[-1].joint_pos, SPEC.start, atol=0.1)
            assert states[-1].imu.shape == (6,) and abs(states[-1].imu[0]) < 0.1
            assert bus.counters()["bad_frames"] == 0 and bus.counters()["stale_replies"] == 0


def test_reading_never_arms_and_commands_before_arming_are_refused():
    with _virtual(lockstep=True, watchdog_s=0) as server:
        with open_bus(SPEC, port=server.path, timeout_s=0.5) as bus:
            before = bus.read_state()
            bus.exchange(SPEC.start + 0.2)
            after = bus.read_state()
    assert server.robot.mode is BoardMode.DISARMED
    assert server.robot.counters.rejected_commands == 1 and server.robot.counters.commands == 0
    assert after.timestamp == before.timestamp  # lockstep: a refused command does not advance time


def test_watchdog_damps_and_latches_until_rearmed():
    with _virtual(watchdog_s=0.05) as server:
        with open_bus(SPEC, port=server.path, timeout_s=0.5) as bus:
            assert bus.arm().faults == 0
            bus.exchange(SPEC.start)
            time.sleep(0.15)
            tripped = bus.exchange(SPEC.start)
            assert tripped.faults & Fault.WATCHDOG
            assert server.robot.mode is BoardMode.DAMPING
            still = bus.exchange(SPEC.start)  # a command alone does not re-arm
            assert still.faults & Fault.WATCHDOG and server.robot.mode is BoardMode.DAMPING
            rearmed = bus.arm()
            assert rearmed.faults == 0 and server.robot.mode is BoardMode.ARMED
            bus.safe_stop()
    assert server.robot.counters.watchdog_trips == 1


def test_same_task_and_seed_give_the_same_trajectory_in_lockstep():
    task = TaskSpec.load("quadruped_walk")

    def trajectory(seed):
        with _virtual(lockstep=True, watchdog_s=0, task=task, seed=seed) as server:
            with open_bus(SPEC, port=server.path, timeout_s=0.5) as bus, bus.armed():
                wave = [SPEC.start + 0.3 * np.sin(0.5 * k) for k in range(15)]
                return np.array([bus.exchange(t).joint_pos for t in wave])

    a, b, c = trajectory(1), trajectory(1), trajectory(2)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4


def test_a_dropped_imu_is_flagged_stale_by_the_board_until_it_reports_again():
    with _virtual(lockstep=True, watchdog_s=0) as server:
        with open_bus(SPEC, port=server.path, timeout_s=0.5) as bus:
            with bus.armed():
                live = [bus.exchange(SPEC.start) for _ in range(3)]
                server.robot.backend.drop_sensor("imu")  # lockstep: the board is idle between exchanges
                frozen = [bus.exchange(SPEC.start) for _ in range(3)]
                server.robot.backend.clear_perturbations()
                back = bus.exchange(SPEC.start)
    assert [s.faults for s in live] == [0, 0, 0]
    # One control period (20 ms) passes the board's 10 ms IMU timeout: every reply after the drop says so.
    assert [s.faults for s in frozen] == [int(Fault.SENSOR_TIMEOUT)] * 3
    assert all(np.array_equal(s.imu, frozen[0].imu) for s in frozen)
    assert [s.joint_pos.tolist() for s in frozen][0] != [s.joint_pos.tolist() for s in frozen][-1]
    assert back.faults == 0 and not np.array_equal(back.imu, frozen[0].imu)


@pytest.mark.parametrize("board_bits, motor_status, expected, detail", [
    (0, MotorStatus.ENABLED, Fault(0), ""),
    (FaultFlags.MOTOR_FAULT, MotorStatus.ENABLED | MotorStatus.OVERCURRENT | MotorStatus.ENCODER_FAULT,
     Fault.OVERCURRENT | Fault.ENCODER, "rear_left_knee: OVERCURRENT|ENCODER_FAULT"),
    (FaultFlags.MOTOR_FAULT, MotorStatus.ENABLED | MotorStatus.FAILED, Fault.MOTOR_FAILED, "rear_left_knee: FAILED"),
    (FaultFlags.MOTOR_FAULT, MotorStatus.ENABLED | 0x40, Fault.MOTOR_FAILED, "rear_left_knee: 0x40"),  # no name here
    (FaultFlags.MOTOR_FAULT, MotorStatus.ENABLED, Fault.MOTOR_FAILED, ""),  # the summary alone: a motor failed
    (FaultFlags.BAD_COMMAND, MotorStatus.ENABLED, Fault.BAD_COMMAND, ""),
    (0x0400 | FaultFlags.UNDERVOLTAGE, MotorStatus.ENABLED, Fault.UNKNOWN | Fault.UNDERVOLTAGE, ""),
])  # fmt: skip
def test_every_fault_bit_the_board_sets_reaches_the_state_none_is_dropped(board_bits, motor_status, expected, detail):
    with _virtual(lockstep=True, watchdog_s=0) as server:
        writer = server.endpoint.board._writer
        body = writer.body
        writer.body = lambda reply_seq, seq, mode, faults: body(reply_seq, seq, mode, faults | int(board_bits))
        with open_bus(SPEC, port=server.path, timeout_s=0.5) as bus, bus.armed():
            server.robot.motor_faults[5] = int(motor_status) & ~int(MotorStatus.ENABLED)
            state = bus.exchange(SPEC.start)
    assert Fault(state.faults) == expected and state.fault_detail == detail


def test_a_silent_board_raises_bus_timeout_naming_the_request_and_port():
    master, slave = os.openpty()
    port = serial.Serial(os.ttyname(slave), timeout=0)
    try:
        bus = BoardBus(SPEC, SerialLink(port), timeout_s=0.02)
        t0 = time.monotonic()
        with pytest.raises(BusTimeout, match=rf"no STATE reply to HEARTBEAT seq 1 within 20 ms on serial {port.port}"):
            bus.read_state()
        assert 0.02 <= time.monotonic() - t0 < 0.2
        assert bus.counters()["timeouts"] == 1
    finally:
        port.close()
        os.close(master)
        os.close(slave)


def test_a_vanished_serial_device_raises_bus_error_not_an_os_error():
    master, slave = os.openpty()
    port = serial.Serial(os.ttyname(slave), timeout=0)
    bus = BoardBus(SPEC, SerialLink(port), timeout_s=0.05)
    os.close(master)  # the other end disappears, as an unplugged USB adapter does
    try:
        with pytest.raises(BusError, match=rf"serial {port.port}: (write|read) failed, adapter unplugged"):
            bus.read_state()
    finally:
        port.close()
        os.close(slave)


def test_a_port_that_stops_draining_fails_the_write_within_the_timeout_instead_of_holding_the_loop():
    master, slave = os.openpty()  # nothing ever reads the master: the pty's buffer fills, as a hung adapter's does
    try:
        with open_bus(SPEC, port=os.ttyname(slave), timeout_s=0.05) as bus:
            started = time.monotonic()
            with pytest.raises(BusError, match="write failed"):
                for _ in range(100_000):
                    bus.send_command(SPEC.start)
            blocked_s = time.monotonic() - started
    finally:
        os.close(master)
        os.close(slave)
    assert blocked_s < 5.0


def test_zmq_send_never_blocks_and_a_closed_socket_is_a_bus_error():
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 2)
    sock.connect("tcp://127.0.0.1:1")  # nobody reads: the queue fills at the high-water mark
    link = ZmqLink(sock)
    with pytest.raises(BusError, match="send queue full, the device has stopped reading"):
        for _ in range(10):
            link.send(b"\x01")
    sock.close()
    with pytest.raises(BusError, match="send failed"):
        link.send(b"\x01")
    with pytest.raises(BusError, match="receive failed"):
        link.receive(time.monotonic() + 0.01)


def reply(echo: int, position: float) -> State:
    """A board's STATE answering host message ``echo``, every motor at ``position``."""
    zeros = np.zeros(8)
    return State(0, echo, BoardMode.ARMED, 0, np.full(8, position), zeros, zeros, np.zeros(8, np.uint8), np.zeros(3),
                 np.zeros(3))  # fmt: skip


def test_a_late_reply_to_a_timed_out_request_is_counted_and_not_used():
    master, slave = os.openpty()
    port = serial.Serial(os.ttyname(slave), timeout=0)
    try:
        bus = BoardBus(SPEC, SerialLink(port), timeout_s=0.02)
        with pytest.raises(BusTimeout):
            bus.read_state()  # seq 1 goes unanswered in time
        os.write(master, encode_frame(reply(1, 0.1), 1) + encode_frame(reply(2, 0.2), 2))
        state = bus.read_state()  # seq 2
        np.testing.assert_allclose(state.joint_pos, 0.2)
        assert bus.counters()["stale_replies"] == 1
    finally:
        port.close()
        os.close(master)
        os.close(slave)


def test_a_reply_collected_a_tick_after_its_command_was_waiting_and_its_timeout_counts_from_the_send():
    master, slave = os.openpty()
    port = serial.Serial(os.ttyname(slave), timeout=0)
    try:
        bus = BoardBus(SPEC, SerialLink(port), timeout_s=0.02)
        with pytest.raises(RuntimeError, match="collect_reply without a command sent"):
            bus.collect_reply()
        bus.send_command(SPEC.start)  # seq 1: the board answers while the loop waits for its next deadline
        os.write(master, encode_frame(reply(1, 0.3), 1))
        time.sleep(0.05)  # longer than the timeout: the reply arrived in time and waits in the buffer
        t0 = time.monotonic()
        np.testing.assert_allclose(bus.collect_reply().joint_pos, 0.3)
        assert time.monotonic() - t0 < 0.01
        bus.send_command(SPEC.start)  # seq 2 goes unanswered
        time.sleep(0.05)
        t0 = time.monotonic()
        with pytest.raises(BusTimeout, match="no STATE reply to COMMAND seq 2 within 20 ms"):
            bus.collect_reply()
        assert time.monotonic() - t0 < 0.01  # the 20 ms ran from the send, not from the collect
        assert bus.counters()["timeouts"] == 1 and bus.counters()["stale_replies"] == 0
    finally:
        port.close()
        os.close(master)
        os.close(slave)


def test_a_reply_later_than_the_ticks_wait_is_skipped_and_dropped_as_stale_when_it_comes():
    master, slave = os.openpty()
    port = serial.Serial(os.ttyname(slave), timeout=0)
    try:
        bus = BoardBus(SPEC, SerialLink(port), timeout_s=0.5)
        bus.send_command(SPEC.start)  # seq 1: not answered yet when the tick stops waiting
        t0 = time.monotonic()
        with pytest.raises(ReplyLate, match=r"no STATE reply to COMMAND seq 1 within the 5000 us the tick waits") as e:
            bus.collect_reply(wait_s=0.005)
        waited = time.monotonic() - t0
        assert 0.005 <= waited < 0.1  # the tick's wait, not the bus's 500 ms
        assert e.value.state is None and isinstance(e.value, BusTimeout)  # timeout handlers handle it too
        os.write(master, encode_frame(reply(1, 0.1), 1))  # seq 1's reply comes late, seq 2's later still
        bus.send_command(SPEC.start)
        with pytest.raises(ReplyLate, match="seq 2") as e:
            bus.collect_reply(wait_s=0.005)
        np.testing.assert_allclose(e.value.state.joint_pos, 0.1)  # the newest state there is
        bus.send_command(SPEC.start)  # seq 3: answered in time, after seq 2's late reply
        os.write(master, encode_frame(reply(2, 0.2), 2) + encode_frame(reply(3, 0.3), 3))
        np.testing.assert_allclose(bus.collect_reply(wait_s=0.005).joint_pos, 0.3)
        assert bus.counters()["late_replies"] == 2 and bus.counters()["stale_replies"] == 2
        assert bus.counters()["timeouts"] == 0
        bus.timeout_s = 0.02  # a wait longer than the bus timeout ends at the bus timeout
        bus.send_command(SPEC.start)  # seq 4
        with pytest.raises(BusTimeout, match="no STATE reply to COMMAND seq 4 within 20 ms") as e:
            bus.collect_reply(wait_s=1.0)
        assert not isinstance(e.value, ReplyLate) and bus.counters()["timeouts"] == 1
    finally:
        port.close()
        os.close(master)
        os.close(slave)


def test_zmq_timeout_when_nobody_is_bound():
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect("tcp://127.0.0.1:1")
    try:
        with pytest.raises(BusTimeout, match="no STATE reply to ARM seq 1 within 30 ms on zmq tcp://127.0.0.1:1"):
            BoardBus(SPEC, ZmqLink(sock), timeout_s=0.03).arm()
    finally:
        sock.close()


def test_calibration_maps_motor_angles_to_joint_angles_both_ways(tmp_path):
    joints = {name: JointCalibration() for name in SPEC.joint_names}
    joints["front_left_hip"] = JointCalibration(offset=0.25, direction=-1)
    calibration = Calibration("quadruped", joints)
    calibration.save(tmp_path / "cal.yaml")
    assert Calibration.load(tmp_path / "cal.yaml") == calibration
    with _virtual(lockstep=True, watchdog_s=0) as server:
        with open_bus(SPEC, port=server.path, timeout_s=0.5) as raw_bus:
            raw = raw_bus.read_state().joint_pos
        with open_bus(SPEC, port=server.path, timeout_s=0.5, calibration=calibration) as bus:
            calibrated = bus.read_state().joint_pos
            with bus.armed():
                for _ in range(40):
                    bus.exchange(np.where(np.arange(8) == 0, -0.75, SPEC.start))
        moved = server.robot.state().joint_pos  # the motor's own angle
    assert calibrated[0] == pytest.approx(-(raw[0] - 0.25), abs=2e-4)
    np.testing.assert_allclose(calibrated[1:], raw[1:], atol=2e-4)
    assert moved[0] == pytest.approx(1.0, abs=0.05)  # motor = direction * joint + offset = 0.75 + 0.25


def test_a_calibration_whose_limits_the_wire_cannot_carry_is_refused_when_the_bus_opens():
    joints = {name: JointCalibration() for name in SPEC.joint_names}
    joints["front_left_knee"] = JointCalibration(offset=-1.8)  # as a knee calibrated at -3.0 rad would write
    with _virtual(lockstep=True, watchdog_s=0) as server:
        with pytest.raises(BusError, match=r"joint front_left_knee's limits \[-2.6, -0.2\] rad are motor angles "
                                           r"\[-4.4, -2\] rad .* carries \+/-3.2767 rad"):  # fmt: skip
            with open_bus(SPEC, port=server.path, calibration=Calibration("quadruped", joints)):
                pass
        with open_bus(SPEC, port=server.path, timeout_s=0.5) as bus:
            # Nor does one set on an open bus (what `firmware-bridge check --calibrate` does) take effect.
            with pytest.raises(BusError, match="joint front_left_knee's limits"):
                bus.set_calibration(Calibration("quadruped", joints))
            assert bus.calibration == Calibration.identity(SPEC)
            # A target past the field's range (the approach from a pose outside the limits may ask one) fails as
            # a bus error, which the loop turns into a safety stop.
            with pytest.raises(BusError, match=r"COMMAND seq \d+ not sent: position\[1\]: -4.0 is outside"):
                bus.send_command(np.where(np.arange(8) == 1, -4.0, SPEC.start))


def test_calibration_for_another_robot_or_joint_set_is_refused():
    with pytest.raises(ConfigError, match="robot: calibration is for 'claw', the robot spec is 'quadruped'"):
        Calibration("claw", {}).arrays(SPEC)
    with pytest.raises(ConfigError, match=r"joints: missing \['front_left_knee'"):
        Calibration("quadruped", {"front_left_hip": JointCalibration()}).arrays(SPEC)
    with pytest.raises(ConfigError, match="direction: must be 1 or -1, got 0"):
        JointCalibration(direction=0)


def test_virtual_robot_command_links_a_pty_and_prints_counters_on_sigterm(tmp_path):
    link = tmp_path / "ttyQUAD"
    proc = subprocess.Popen(
        [sys.executable, "-m", "robot_sac.cli", "virtual-robot", "--robot", "quadruped", "--serial",
         "--link", str(link), "--lockstep", "--watchdog-ms", "0", "--drop-sensor", "imu@0.05"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = proc.stdout.readline()
        assert "virtual quadruped (framed_serial, lockstep, mujoco, drops imu at 0.05 s) on /dev/pts/" in first
        assert str(link) in first
        with open_bus(SPEC, port=str(link), timeout_s=1.0) as bus, bus.armed():
            states = [bus.exchange(SPEC.start) for _ in range(5)]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    counters = json.loads(out.strip().splitlines()[-1])["counters"]
    assert counters["frames"] == 8 and counters["bad_frames"] == 0  # arm, 5 commands, damp, torque off
    assert counters["device_commands"] == 5
    assert proc.returncode == 0 and not link.exists()
    # Lockstep, 20 ms a command: the drill freezes the IMU at the 4th command (0.06 s), flagged from its reply.
    assert [s.faults for s in states] == [0, 0, 0, int(Fault.SENSOR_TIMEOUT), int(Fault.SENSOR_TIMEOUT)]
    assert np.array_equal(states[3].imu, states[4].imu)


@pytest.mark.parametrize("drop, error", [
    ("imu", "--drop-sensor 'imu': expected SENSOR@SECONDS with SECONDS >= 0, e.g. imu@5"),
    ("imu@-1", "--drop-sensor 'imu@-1': expected SENSOR@SECONDS"),
    ("lidar@2", "drop_sensor: unknown sensor 'lidar'"),
    ("valve_encoder@2", "drop_sensor: robot quadruped has no valve_encoder"),
])  # fmt: skip
def test_virtual_robot_command_refuses_a_drill_it_cannot_run(drop, error, capsys):
    assert robot_sac_main(["virtual-robot", "--robot", "quadruped", "--serial", "--drop-sensor", drop]) == 2
    assert error in capsys.readouterr().err
