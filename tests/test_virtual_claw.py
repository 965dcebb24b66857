"""The official Dynamixel SDK, as a client, against the virtual claw on a pseudo-terminal."""

import os
import time

import numpy as np
import pytest
from dynamixel_sdk import COMM_RX_TIMEOUT, COMM_SUCCESS, PacketHandler

from firmware_bridge.bus_factory import open_bus
from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.dynamixel_packets import ALERT, BROADCAST_ID, Instruction, PacketParser, StatusError, build_packet
from firmware_bridge.dynamixel_bus import DynamixelBus, DynamixelPort
from firmware_bridge.dynamixel_table import XM430, XM430_MODEL_NUMBER, decode_raw, to_si
from firmware_bridge.motor_bus import BusError, BusTimeout, MotorFault
from firmware_bridge.motor_messages import BoardMode, MotorStatus
from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import Fault
from firmware_bridge.typed_yaml import load_yaml
from sim.mujoco_backend import MujocoBackend
from sim.virtual_robot_dynamixel import DynamixelChain
from sim.virtual_robot_server import build_robot, make_server, serving

SPEC = RobotSpec.load(resolve_robot("claw"))
IDS = SPEC.motor_ids
VALVE = SPEC.bus.extra_ids["valve_encoder"]


@pytest.fixture
def claw():
    robot = build_robot(SPEC, MujocoBackend(SPEC), lockstep=True, watchdog_s=0)
    with serving(make_server(robot, serial=True)) as server:
        # The SDK's own port handler, with a reply timeout that survives a loaded test machine.
        port = DynamixelPort(server.path, timeout_s=0.5)
        assert port.openPort() and port.setBaudRate(SPEC.bus.baud)
        try:
            yield server, port, PacketHandler(2.0)
        finally:
            port.closePort()


def test_every_id_answers_ping_like_an_xm430_and_absent_ids_time_out(claw):
    _, port, ph = claw
    for dxl_id in IDS + [VALVE]:
        model, result, error = ph.ping(port, dxl_id)
        assert (model, result, error) == (XM430_MODEL_NUMBER, COMM_SUCCESS, 0)
    _, result, _ = ph.ping(port, 99)
    assert result == COMM_RX_TIMEOUT
    found, result = ph.broadcastPing(port)
    assert result == COMM_SUCCESS and sorted(found) == sorted(IDS + [VALVE])


def test_read_and_write_registers_with_the_manuals_rules(claw):
    server, port, ph = claw
    mode, result, error = ph.read1ByteTxRx(port, IDS[0], XM430.OPERATING_MODE.value.address)
    assert (mode, result, error) == (3, COMM_SUCCESS, 0)
    present, _, _ = ph.read4ByteTxRx(port, IDS[2], XM430.PRESENT_POSITION.value.address)
    assert to_si(XM430.PRESENT_POSITION, decode_raw(XM430.PRESENT_POSITION, present.to_bytes(4, "little"))) == (
        pytest.approx(server.robot.state().joint_pos[2], abs=2e-3)
    )
    # Read-only register, a value out of range, an address past the table: each refused with its error byte.
    assert ph.write2ByteTxRx(port, IDS[0], XM430.PRESENT_CURRENT.value.address, 5) == (COMM_SUCCESS, StatusError.ACCESS)
    assert ph.write1ByteTxRx(port, IDS[0], XM430.OPERATING_MODE.value.address, 2) == (
        COMM_SUCCESS,
        StatusError.DATA_RANGE,
    )
    assert ph.readTxRx(port, IDS[0], 146, 4)[1:] == (COMM_SUCCESS, StatusError.ACCESS)
    assert ph.write1ByteTxRx(port, IDS[0], XM430.ID.value.address, 5) == (COMM_SUCCESS, StatusError.ACCESS)
    # EEPROM is writable with torque off and locked with torque on.
    address = XM430.RETURN_DELAY_TIME.value.address
    assert ph.write1ByteTxRx(port, IDS[0], address, 0) == (COMM_SUCCESS, 0)
    assert ph.write1ByteTxRx(port, IDS[0], XM430.TORQUE_ENABLE.value.address, 1) == (COMM_SUCCESS, 0)
    assert ph.write1ByteTxRx(port, IDS[0], address, 5) == (COMM_SUCCESS, StatusError.ACCESS)


def _present(ph, port, dxl_id):
    raw, _, _ = ph.read4ByteTxRx(port, dxl_id, XM430.PRESENT_POSITION.value.address)
    return decode_raw(XM430.PRESENT_POSITION, raw.to_bytes(4, "little"))


def test_torque_on_every_joint_arms_holding_the_present_position(claw):
    server, port, ph = claw
    for dxl_id in IDS[:-1]:
        ph.write1ByteTxRx(port, dxl_id, XM430.TORQUE_ENABLE.value.address, 1)
    assert server.robot.mode is BoardMode.DISARMED  # not until the last joint
    ph.write1ByteTxRx(port, IDS[-1], XM430.TORQUE_ENABLE.value.address, 1)
    assert server.robot.mode is BoardMode.ARMED
    goal, _, _ = ph.read4ByteTxRx(port, IDS[1], XM430.GOAL_POSITION.value.address)
    assert abs(decode_raw(XM430.GOAL_POSITION, goal.to_bytes(4, "little")) - _present(ph, port, IDS[1])) <= 2
    ph.write1ByteTxRx(port, IDS[4], XM430.TORQUE_ENABLE.value.address, 0)
    assert server.robot.mode is BoardMode.DISARMED


def test_dynamixel_bus_sync_writes_targets_and_sync_reads_joints_and_valve(claw):
    server, port, _ = claw
    bus = DynamixelBus(SPEC, port)
    target = SPEC.start.copy()
    target[1] += 0.3
    with bus.armed():
        for _ in range(30):
            state = bus.exchange(target)
    np.testing.assert_allclose(state.joint_pos, target, atol=0.06)
    assert set(state.extras) == {"valve_angle", "valve_velocity"}
    assert state.extras["valve_angle"] == pytest.approx(server.robot.state().extras["valve_angle"], abs=2e-3)
    assert server.robot.mode is BoardMode.DISARMED and server.robot.counters.commands == 30
    assert bus.counters() == {"timeouts": 0, "errors": 0}


def test_a_motor_the_spec_names_but_the_bus_lacks_times_out_by_id(claw):
    _, port, _ = claw
    mapping = load_yaml(resolve_robot("claw"))
    mapping["joints"][4]["motor_id"] = 99
    bus = DynamixelBus(RobotSpec.from_mapping(mapping), port)
    with pytest.raises(BusTimeout, match="dynamixel id 99: no status packet for SYNC_READ"):
        bus.read_state()
    with pytest.raises(BusTimeout, match="dynamixel id 99: no status packet for READ OPERATING_MODE"):
        bus.arm()


def test_refused_writes_raise_naming_the_id_and_register(claw):
    _, port, ph = claw
    bus = DynamixelBus(SPEC, port)
    bus.write_register(IDS[0], XM430.TORQUE_ENABLE, 1)
    with pytest.raises(BusError, match=r"dynamixel id 10: WRITE RETURN_DELAY_TIME=3 refused .*not available"):
        bus.write_register(IDS[0], XM430.RETURN_DELAY_TIME, 3)


def test_a_vanished_adapter_is_a_bus_error_and_leaves_the_port_free_for_the_safe_stop():
    master, slave = os.openpty()
    port = DynamixelPort(os.ttyname(slave), timeout_s=0.05)
    assert port.openPort() and port.setBaudRate(SPEC.bus.baud)
    bus = DynamixelBus(SPEC, port)
    os.close(master)  # the other end disappears, as an unplugged USB adapter does
    try:
        for request in (bus.read_state, bus.torque_off):  # the second finds the port free, and fails the same way
            with pytest.raises(BusError, match=r"serial (write|read|flush) failed, adapter unplugged"):
                request()
            assert not port.is_using
    finally:
        port.closePort()
        os.close(slave)


def test_the_bus_watchdog_the_bridge_arms_stops_the_motors_where_they_are_until_armed_again():
    robot = build_robot(SPEC, MujocoBackend(SPEC), watchdog_s=0.05)  # the motors' register decides, not this
    with serving(make_server(robot, serial=True)) as server, open_bus(SPEC, port=server.path, timeout_s=0.5) as bus:
        for i in IDS:  # torque on without the watchdog, as a host that never sets it leaves the motors
            bus.write_register(i, XM430.TORQUE_ENABLE, 1)
        time.sleep(0.2)
        assert robot.counters.watchdog_trips == 0 and robot.mode is BoardMode.ARMED
        bus.arm()
        # Three control periods of the claw's 10 Hz, in 20 ms units.
        assert bus.watchdog_raw == 15 and [bus.read_register(i, XM430.BUS_WATCHDOG) for i in IDS] == [15] * len(IDS)
        assert not bus.read_state().faults
        bus.exchange(SPEC.start)
        time.sleep(0.6)
        assert robot.counters.watchdog_trips == 1
        assert [bus.read_register(i, XM430.BUS_WATCHDOG) for i in IDS] == [-1] * len(IDS)
        assert [bus.read_register(i, XM430.TORQUE_ENABLE) for i in IDS] == [1] * len(IDS)  # stopped, not limp
        stopped = bus.read_state()  # the bus reads the watchdogs every half second while armed
        assert stopped.faults == Fault.DISARMED and "bus watchdog tripped on " + SPEC.joint_names[0] in \
            stopped.fault_detail
        held = stopped.joint_pos
        away = np.clip(SPEC.start + 0.4, SPEC.lower, SPEC.upper)
        for _ in range(5):
            bus.exchange(away)  # goals refused: it stays where it stopped
            time.sleep(0.05)
        np.testing.assert_allclose(bus.read_state().joint_pos, held, atol=0.02)
        with pytest.raises(BusError, match="WRITE GOAL_POSITION.* refused"):
            bus.write_register(IDS[0], XM430.GOAL_POSITION, 2048)
        bus.arm()  # clears the trip and sets the watchdog again
        for _ in range(10):
            bus.exchange(away)
            time.sleep(0.05)
        assert np.abs(bus.read_state().joint_pos - held).max() > 0.1
        bus.safe_stop()
        assert [bus.read_register(i, XM430.BUS_WATCHDOG) for i in IDS] == [0] * len(IDS)  # off for the hold
    assert robot.counters.watchdog_trips == 1


def test_random_instruction_packets_never_crash_the_chain_and_it_still_answers():
    robot = build_robot(SPEC, MujocoBackend(SPEC), lockstep=True, watchdog_s=0)
    chain = DynamixelChain(robot)
    rng = np.random.default_rng(3)
    ids = IDS + [VALVE, BROADCAST_ID, 7]
    instructions = [int(i) for i in Instruction] + [0x42]
    stream = b""
    for _ in range(400):
        params = rng.integers(0, 256, rng.integers(0, 24), dtype=np.uint8).tobytes()
        stream += build_packet(int(rng.choice(ids)), int(rng.choice(instructions)), params)
        if rng.random() < 0.3:
            stream += rng.integers(0, 256, rng.integers(1, 20), dtype=np.uint8).tobytes()
    for start in range(0, len(stream), 61):
        chain.feed(stream[start : start + 61])
    [(_, reply)] = chain.feed(build_packet(IDS[0], Instruction.PING))
    assert PacketParser().feed(reply)[0].params == bytes([0, 0xFC, 0x03, 48])  # no error, model 1020, firmware 48
    assert chain.parser.counters.packets >= 400


def test_the_safe_stop_zeroes_the_p_gain_with_torque_on_then_switches_the_torque_off(claw):
    server, port, _ = claw
    robot = server.robot
    received = []
    disarm = robot.disarm

    def recording_disarm(torque_off):
        received.append(("torque off" if torque_off else "damping", time.monotonic()))
        disarm(torque_off)

    robot.disarm = recording_disarm
    bus = DynamixelBus(SPEC, port)
    bus.arm()
    bus.exchange(SPEC.start)
    bus.safe_stop()
    assert [what for what, _ in received] == ["damping", "torque off"]
    assert received[1][1] - received[0][1] >= SPEC.safe_state.damping_s
    assert [bus.read_register(i, XM430.POSITION_P_GAIN) for i in IDS] == [0] * len(IDS)
    assert [bus.read_register(i, XM430.TORQUE_ENABLE) for i in IDS] == [0] * len(IDS)
    # Arming again gives the joints their stiffness back.
    bus.arm()
    assert robot.mode is BoardMode.ARMED
    assert [bus.read_register(i, XM430.POSITION_P_GAIN) for i in IDS] == [800] * len(IDS)


def test_a_hardware_error_alert_is_a_motor_fault_naming_the_motor(claw):
    server, port, ph = claw
    bus = DynamixelBus(SPEC, port)
    bus.arm()
    server.robot.motor_faults[4] = MotorStatus.OVERCURRENT
    with pytest.raises(
        MotorFault, match=r"dynamixel id 21 reports a hardware error \(HARDWARE_ERROR_STATUS: OVERLOAD\)"
    ):
        bus.exchange(SPEC.start)
    _, result, error = ph.read1ByteTxRx(port, IDS[4], XM430.HARDWARE_ERROR_STATUS.value.address)
    assert result == COMM_SUCCESS and error == ALERT  # the instruction worked; the alert flags the motor
    assert bus.counters() == {"timeouts": 0, "errors": 0}  # not a bus error
    bus.torque_off()  # a faulted motor still takes the torque off
    assert server.robot.mode is BoardMode.DISARMED


def test_the_loop_stops_on_a_motor_fault_alert_and_ends_safe(tmp_path):
    from firmware_bridge.action import ActionMapper
    from firmware_bridge.control_loop import ControlLoop, LoopConfig
    from firmware_bridge.observation import ObservationBuilder
    from firmware_bridge.policy_runtime import PolicyRuntime
    from firmware_bridge.safety import StopReason
    from firmware_bridge.task import TaskInterface
    from firmware_bridge.transitions import BackgroundSink, Transition
    from policy_files import write_policy

    task = TaskInterface.load("claw_turn")
    policy = PolicyRuntime(write_policy(tmp_path / "claw.onnx", SPEC, task), SPEC, task)
    robot = build_robot(SPEC, MujocoBackend(SPEC), watchdog_s=0)

    class FaultAtTick5:
        def handle(self, item):
            if isinstance(item, Transition) and item.tick == 5:
                robot.motor_faults[7] = MotorStatus.OVERTEMPERATURE

        def close(self):
            pass

    sink = BackgroundSink("fault", FaultAtTick5())
    with serving(make_server(robot, serial=True)) as server, open_bus(SPEC, port=server.path, timeout_s=0.5) as bus:
        config = LoopConfig(rate_hz=SPEC.control_rate_hz, duration_s=3.0)
        report = ControlLoop(bus, ObservationBuilder(SPEC, task), ActionMapper(SPEC), policy, 1, config,
                             sinks=[sink]).run()  # fmt: skip
        assert robot.mode is BoardMode.DISARMED
    sink.close()
    assert report.stop_reason is StopReason.MOTOR_FAULT
    assert "dynamixel id 31 reports a hardware error (HARDWARE_ERROR_STATUS: OVERHEATING)" in report.safety_stop
    assert 5 <= report.ticks <= 8 and report.safe_state_reached


def test_a_stall_that_trips_the_motors_bus_watchdog_stops_the_loop_naming_it(tmp_path):
    from firmware_bridge.action import ActionMapper
    from firmware_bridge.control_loop import ControlLoop, LoopConfig
    from firmware_bridge.observation import ObservationBuilder
    from firmware_bridge.policy_runtime import PolicyRuntime
    from firmware_bridge.safety import StopReason
    from firmware_bridge.task import TaskInterface
    from policy_files import write_policy

    task = TaskInterface.load("claw_turn")
    runtime = PolicyRuntime(write_policy(tmp_path / "claw.onnx", SPEC, task), SPEC, task)
    calls = []

    def policy_that_stalls_once(obs):
        calls.append(1)
        if len(calls) == 5:
            time.sleep(0.36)  # past the 300 ms watchdog, within the loop's budget of missed deadlines
        return runtime(obs)

    robot = build_robot(SPEC, MujocoBackend(SPEC))
    with serving(make_server(robot, serial=True)) as server, open_bus(SPEC, port=server.path, timeout_s=0.5) as bus:
        config = LoopConfig(rate_hz=SPEC.control_rate_hz, duration_s=3.0)
        report = ControlLoop(bus, ObservationBuilder(SPEC, task), ActionMapper(SPEC), policy_that_stalls_once, 1,
                             config).run()  # fmt: skip
        assert robot.mode is BoardMode.DISARMED
    assert robot.counters.watchdog_trips == 1 and report.stop_reason is StopReason.MOTOR_FAULT
    assert "DISARMED (bus watchdog tripped on" in report.safety_stop and report.safe_state_reached
    assert report.ticks <= 12  # five before the stall, the trip seen within the half-second check after it


def test_at_the_claws_rate_each_tick_observes_the_joints_read_at_its_start_not_a_period_ago(tmp_path):
    from firmware_bridge.action import ActionMapper
    from firmware_bridge.control_loop import ControlLoop, LoopConfig
    from firmware_bridge.observation import ObservationBuilder
    from firmware_bridge.policy_runtime import PolicyRuntime
    from firmware_bridge.task import TaskInterface
    from firmware_bridge.transitions import BackgroundSink, Transition
    from policy_files import write_policy

    class Recorder:
        def __init__(self):
            self.ticks = []

        def handle(self, item):
            if isinstance(item, Transition):
                self.ticks.append(item)

        def close(self):
            pass

    task = TaskInterface.load("claw_turn")
    policy = PolicyRuntime(write_policy(tmp_path / "claw.onnx", SPEC, task), SPEC, task)
    robot = build_robot(SPEC, MujocoBackend(SPEC), watchdog_s=0)
    recorder = Recorder()
    sink = BackgroundSink("record", recorder)
    # The Dynamixel bus stamps a state with time.monotonic() when its SYNC_READ returns; ticks run on perf_counter.
    monotonic_minus_loop_clock = time.monotonic() - time.perf_counter()
    with serving(make_server(robot, serial=True)) as server, open_bus(SPEC, port=server.path, timeout_s=0.5) as bus:
        config = LoopConfig(rate_hz=SPEC.control_rate_hz, duration_s=1.0)
        report = ControlLoop(bus, ObservationBuilder(SPEC, task), ActionMapper(SPEC), policy, 1, config,
                             sinks=[sink]).run()  # fmt: skip
    sink.close()
    assert report.safety_stop is None and report.ticks >= 9
    period = 1.0 / SPEC.control_rate_hz
    age = [t.state.timestamp - (t.time + monotonic_minus_loop_clock) for t in recorder.ticks[1:]]
    # Read after the tick started and well within its period; the reply to the previous command would be
    # about a period (100 ms) older than the tick.
    assert min(age) > -0.005 and max(age) < 0.3 * period, age
