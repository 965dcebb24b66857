"""The official Dynamixel SDK, as a client, against the virtual claw on a pseudo-terminal."""

import time

import numpy as np
import pytest
from dynamixel_sdk import COMM_RX_TIMEOUT, COMM_SUCCESS, PacketHandler

from firmware_bridge.bus_factory import open_bus
from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.dynamixel_packets import BROADCAST_ID, Instruction, PacketParser, StatusError, build_packet
from firmware_bridge.dynamixel_bus import DynamixelBus, DynamixelPort
from firmware_bridge.dynamixel_table import XM430, XM430_MODEL_NUMBER, decode_raw, to_si
from firmware_bridge.motor_bus import BusError, BusTimeout
from firmware_bridge.motor_messages import BoardMode
from firmware_bridge.spec import RobotSpec
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
    assert ph.write1ByteTxRx(port, IDS[0], XM430.OPERATING_MODE.value.address, 2) == (COMM_SUCCESS, StatusError.DATA_RANGE)
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


def test_watchdog_switches_torque_off_until_torque_is_enabled_again():
    robot = build_robot(SPEC, MujocoBackend(SPEC), watchdog_s=0.05)
    with serving(make_server(robot, serial=True)) as server, open_bus(SPEC, port=server.path, timeout_s=0.5) as bus:
        bus.arm()
        bus.exchange(SPEC.start)
        time.sleep(0.15)
        torque = [bus.read_register(i, XM430.TORQUE_ENABLE) for i in IDS]
        assert torque == [0] * len(IDS) and robot.counters.watchdog_trips == 1
        bus.exchange(SPEC.start)
        assert robot.mode is BoardMode.DISARMED  # goals alone do not re-arm
        bus.arm()
        assert robot.mode is BoardMode.ARMED and not robot.watchdog_latched
        bus.safe_stop()


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
