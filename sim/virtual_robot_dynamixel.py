"""The claw's Dynamixel chain, device side: every id answers like an XM430 (Protocol 2.0).

Each motor keeps its control table as bytes with the manual's access rules
(read-only registers, EEPROM locked while torque is on, value ranges), and
answers PING, READ, WRITE, SYNC_READ and SYNC_WRITE with status packets and
error bytes. The joints drive one ``VirtualRobot``: goal positions become
its targets; torque on for every joint arms it, torque off for any disarms
it; position P gain 0 on every joint with torque on is damping (the D gain
alone acts). The passive encoder ids report the valve angle and velocity;
the robot's per-joint fault drills show in HARDWARE_ERROR_STATUS and so as
the alert bit of that motor's status packets. BUS_WATCHDOG, once the host
sets it on every joint, is the robot's watchdog: when it expires the motors
stop where they are, torque on, and refuse goals until it is written again
(the robot's own ``watchdog_s`` does not apply). Unlike a real motor, ID and
baud rate cannot be changed.

As on real motors, reads answer from the present registers of the latest
sample (``sample``). In real-time mode goal positions take effect after the
replies of the batch that carried them have gone (``finish``); in lockstep
they step the physics at once, so the next read sees the step.
"""

from __future__ import annotations

import struct

import numpy as np

from firmware_bridge.dynamixel_packets import (
    ALERT,
    BROADCAST_ID,
    Instruction,
    Packet,
    PacketParser,
    StatusError,
    status_packet,
)
from firmware_bridge.dynamixel_bus import ENCODER_EXTRAS
from firmware_bridge.dynamixel_table import (
    CONTROL_TABLE_SIZE,
    XM430,
    Area,
    BaudRate,
    HardwareError,
    OperatingMode,
    UNITS,
    decode_raw,
    encode_raw,
    to_si,
)
from firmware_bridge.motor_messages import BoardMode, MotorStatus
from sim.virtual_robot import VirtualRobot

# Registers whose values are checked on write: register -> allowed raw values.
_ALLOWED = {
    XM430.TORQUE_ENABLE: {0, 1},
    XM430.OPERATING_MODE: {m.value for m in OperatingMode},
    XM430.STATUS_RETURN_LEVEL: {0, 1, 2},
    XM430.BAUD_RATE: set(range(7)),
    XM430.BUS_WATCHDOG: set(range(128)),  # -1 is the motor's own report of a trip
}
# While a motor's bus watchdog has tripped, its goal registers are read-only (a write: DATA_RANGE).
_GOALS = {XM430.GOAL_CURRENT, XM430.GOAL_VELOCITY, XM430.GOAL_POSITION}
_WATCHDOG_TRIPPED = -1
# Status Return Level -> the instructions that still get a status packet (2: all of them).
_ANSWERED_AT_LEVEL = {
    0: {Instruction.PING},
    1: {Instruction.PING, Instruction.READ, Instruction.SYNC_READ},
}
# The simulation is wired to the spec's ids and the pty's rate: writes to these are refused (ACCESS)
# instead of silently detaching a motor from the model.
_FIXED_IN_SIMULATION = {XM430.ID, XM430.BAUD_RATE}
_OWNER = {addr: reg for reg in XM430 for addr in range(reg.value.address, reg.value.address + reg.value.size)}
# The virtual robot's per-joint fault drills (MotorStatus bits) as the XM430 reports them.
_HARDWARE_ERRORS = {
    MotorStatus.OVERCURRENT: HardwareError.OVERLOAD,
    MotorStatus.OVERTEMPERATURE: HardwareError.OVERHEATING,
    MotorStatus.ENCODER_FAULT: HardwareError.MOTOR_ENCODER,
    MotorStatus.FAILED: HardwareError.ELECTRICAL_SHOCK,
}
# PRESENT_CURRENT, PRESENT_VELOCITY and PRESENT_POSITION: one contiguous block, written in one go per sample.
_PRESENT = struct.Struct("<hii")
_PRESENT_AT = XM430.PRESENT_CURRENT.value.address
_PRESENT_UNITS = [UNITS[r] for r in (XM430.PRESENT_POSITION, XM430.PRESENT_VELOCITY, XM430.PRESENT_CURRENT)]
_PRESENT_LIMITS = [(1 << (8 * r.value.size - 1)) - 1 for r in (XM430.PRESENT_POSITION, XM430.PRESENT_VELOCITY,
                                                                 XM430.PRESENT_CURRENT)]  # fmt: skip
_MOVING_AT = XM430.MOVING.value.address
_PACKET_MEMO = 256  # status packets kept between samples: every SYNC_READ of a tick repeats the same ones


class XM430Memory:
    """One motor's control table."""

    def __init__(self, dxl_id: int, baud: int) -> None:
        self.table = bytearray(CONTROL_TABLE_SIZE)
        for reg in XM430:
            self.set(reg, reg.value.default)
        self.set(XM430.ID, dxl_id)
        # As a set-up robot leaves them (the factory ships 57600 baud and a 500 us return delay).
        rates = {b.bits_per_second: b for b in BaudRate}
        if baud not in rates:
            raise ValueError(f"bus.baud: {baud} is not a Dynamixel baud rate ({', '.join(map(str, rates))})")
        self.set(XM430.BAUD_RATE, rates[baud])
        self.set(XM430.RETURN_DELAY_TIME, 0)

    def get(self, reg: XM430) -> int:
        return decode_raw(reg, self.table[reg.value.address :])

    def set(self, reg: XM430, raw: int) -> None:
        a = reg.value.address
        self.table[a : a + reg.value.size] = encode_raw(reg, raw)

    def read(self, address: int, length: int) -> tuple[int, bytes]:
        if address + length > CONTROL_TABLE_SIZE or length == 0:
            return StatusError.ACCESS, b""
        return StatusError.NONE, bytes(self.table[address : address + length])

    def write(self, address: int, data: bytes) -> int:
        """Apply a write if every byte lands in a writable register it covers whole; else an error code."""
        end = address + len(data)
        owners = {_OWNER.get(a) for a in range(address, end)}
        if not data or end > CONTROL_TABLE_SIZE or None in owners:
            return StatusError.ACCESS
        for reg in owners:
            info = reg.value
            if not info.writable or info.address < address or info.address + info.size > end:
                return StatusError.ACCESS
            if reg in _FIXED_IN_SIMULATION:
                return StatusError.ACCESS
            if info.area is Area.EEPROM and self.get(XM430.TORQUE_ENABLE):
                return StatusError.ACCESS
            raw = decode_raw(reg, data[info.address - address :])
            if reg in _ALLOWED and raw not in _ALLOWED[reg]:
                return StatusError.DATA_RANGE
            if reg in _GOALS and self.get(XM430.BUS_WATCHDOG) == _WATCHDOG_TRIPPED:
                return StatusError.DATA_RANGE
        self.table[address:end] = data
        return StatusError.NONE

    @property
    def error_byte_alert(self) -> int:
        return ALERT if self.get(XM430.HARDWARE_ERROR_STATUS) else 0


class DynamixelChain:
    """All devices on the claw's bus. ``feed(bytes) -> [(return_delay_s, status packet), ...]``."""

    def __init__(self, robot: VirtualRobot) -> None:
        self.robot = robot
        spec = robot.spec
        self.joint_ids = spec.motor_ids
        self.encoder_ids = dict(spec.bus.extra_ids)
        self._encoder_keys = [ENCODER_EXTRAS[name] for name in self.encoder_ids]
        ids = sorted(self.joint_ids + list(self.encoder_ids.values()))
        self.memories = {i: XM430Memory(i, spec.bus.baud) for i in ids}
        self._joint_memories = [self.memories[i] for i in self.joint_ids]
        self._sampled = self._joint_memories + [self.memories[i] for i in self.encoder_ids.values()]
        self.parser = PacketParser()
        # The motors' watchdog is their BUS_WATCHDOG register, off until the host sets it (``_after_write``).
        robot.watchdog_s = 0.0
        self._torque_was_on = False
        self._pending_goals: np.ndarray | None = None
        self._packets: dict[tuple[int, int, bytes], bytes] = {}
        self._last_sync_read: tuple[int, int, tuple[int, ...]] | None = None
        self.sample()

    def feed(self, data: bytes) -> list[tuple[float, bytes]]:
        replies = []
        for packet in self.parser.feed(data):
            replies += self.handle(packet)
        return replies

    def handle(self, packet: Packet) -> list[tuple[float, bytes]]:
        """The status packets one instruction packet gets, each with its device's return delay."""
        return [reply for reply in self._handle(packet) if reply is not None]

    def finish(self) -> None:
        """Apply goal positions written before, then take a fresh sample."""
        if self._pending_goals is not None:
            goals, self._pending_goals = self._pending_goals, None
            self.robot.command(goals)
        self.sample()

    def sample(self) -> None:
        """Present registers, MOVING and HARDWARE_ERROR_STATUS from one sensor reading of the robot."""
        robot = self.robot
        state = robot.state()
        self._sync_with_robot()
        n = len(self.joint_ids)
        pos = np.concatenate([state.joint_pos, [state.extras[k[0]] for k in self._encoder_keys]])
        vel = np.concatenate([state.joint_vel, [state.extras[k[1]] for k in self._encoder_keys]])
        cur = np.concatenate([state.joint_current, np.zeros(len(self._encoder_keys))])
        raw = [
            np.clip(np.rint(values / unit.scale) + unit.offset, -limit - 1, limit).astype(int).tolist()
            for values, unit, limit in zip((pos, vel, cur), _PRESENT_UNITS, _PRESENT_LIMITS)
        ]
        moving = (np.abs(vel) > 0.01).tolist()
        for k, memory in enumerate(self._sampled):
            _PRESENT.pack_into(memory.table, _PRESENT_AT, raw[2][k], raw[1][k], raw[0][k])
            memory.table[_MOVING_AT] = moving[k]
        for memory, status in zip(self._joint_memories, robot.motor_faults[:n].tolist()):
            errors = HardwareError(0)
            for bit, error in _HARDWARE_ERRORS.items():
                if status & bit:
                    errors |= error
            memory.set(XM430.HARDWARE_ERROR_STATUS, int(errors))
        self._packets.clear()
        if self._last_sync_read is not None:
            self._sync_read(*self._last_sync_read)  # the host's next tick reads the same block

    def _handle(self, packet: Packet) -> list[tuple[float, bytes] | None]:
        self.robot.feed_watchdog()
        self._sync_with_robot()
        inst, params = packet.instruction, packet.params
        if packet.dxl_id == BROADCAST_ID:
            if inst == Instruction.PING:
                return [self._reply(i, inst, *self._ping_params(i)) for i in self.memories]
            if inst == Instruction.SYNC_READ and len(params) >= 4:
                address, length = struct.unpack_from("<HH", params)
                self._last_sync_read = (address, length, tuple(params[4:]))
                return self._sync_read(*self._last_sync_read)
            if inst == Instruction.SYNC_WRITE and len(params) >= 4:
                address, length = struct.unpack_from("<HH", params)
                body = params[4:]
                for k in range(0, len(body) - length, length + 1):
                    if body[k] in self.memories:
                        self.memories[body[k]].write(address, body[k + 1 : k + 1 + length])
                self._after_write(address, length)
            elif inst == Instruction.WRITE and len(params) > 2:
                address = struct.unpack_from("<H", params)[0]
                for memory in self.memories.values():
                    memory.write(address, params[2:])
                self._after_write(address, len(params) - 2)
            return []  # broadcast writes get no reply
        if packet.dxl_id not in self.memories:
            return []  # nobody at that id: the host times out, as on a real bus
        dxl_id = packet.dxl_id
        if inst == Instruction.PING:
            return [self._reply(dxl_id, inst, *self._ping_params(dxl_id))]
        if inst == Instruction.READ:
            if len(params) != 4:
                return [self._reply(dxl_id, inst, StatusError.DATA_LENGTH)]
            address, length = struct.unpack_from("<HH", params)
            return [self._reply(dxl_id, inst, *self.memories[dxl_id].read(address, length))]
        if inst == Instruction.WRITE:
            if len(params) < 3:
                return [self._reply(dxl_id, inst, StatusError.DATA_LENGTH)]
            address = struct.unpack_from("<H", params)[0]
            error = self.memories[dxl_id].write(address, params[2:])
            if error == StatusError.NONE:
                self._after_write(address, len(params) - 2)
            return [self._reply(dxl_id, inst, error)]
        return [self._reply(dxl_id, inst, StatusError.INSTRUCTION)]

    def _sync_read(self, address: int, length: int, ids: tuple[int, ...]) -> list[tuple[float, bytes] | None]:
        inst = Instruction.SYNC_READ
        return [self._reply(i, inst, *self.memories[i].read(address, length)) for i in ids if i in self.memories]

    def _ping_params(self, dxl_id: int) -> tuple[int, bytes]:
        memory = self.memories[dxl_id]
        return StatusError.NONE, struct.pack("<HB", memory.get(XM430.MODEL_NUMBER), memory.get(XM430.FIRMWARE_VERSION))

    def _reply(self, dxl_id: int, inst: int, error: int, params: bytes = b"") -> tuple[float, bytes] | None:
        memory = self.memories[dxl_id]
        level = memory.get(XM430.STATUS_RETURN_LEVEL)
        if level in _ANSWERED_AT_LEVEL and inst not in _ANSWERED_AT_LEVEL[level]:
            return None
        delay = memory.get(XM430.RETURN_DELAY_TIME) * 2e-6
        key = (dxl_id, int(error) | memory.error_byte_alert, params)
        packet = self._packets.get(key)
        if packet is None:
            if len(self._packets) >= _PACKET_MEMO:
                self._packets.clear()
            packet = self._packets[key] = status_packet(*key)
        return delay, packet

    def _after_write(self, address: int, length: int) -> None:
        touched = {_OWNER.get(a) for a in range(address, address + length)}
        torque = [m.get(XM430.TORQUE_ENABLE) for m in self._joint_memories]
        if XM430.TORQUE_ENABLE in touched:
            if all(torque) and self.robot.mode is not BoardMode.ARMED:
                self.robot.arm()
                self.sample()
                # Enabling torque makes each motor's goal its present position, so it holds still.
                for memory in self._joint_memories:
                    memory.set(XM430.GOAL_POSITION, memory.get(XM430.PRESENT_POSITION))
            elif not all(torque) and self.robot.mode is not BoardMode.DISARMED:
                self.robot.disarm(torque_off=True)
                self.sample()
            self._torque_was_on = all(torque)
        if XM430.POSITION_P_GAIN in touched and all(torque):
            if not any(m.get(XM430.POSITION_P_GAIN) for m in self._joint_memories):
                self.robot.disarm(torque_off=False)
                self.sample()
        if XM430.BUS_WATCHDOG in touched:
            # One watchdog for the robot, fed by every instruction packet: on while every joint has one set, at
            # the shortest of them.
            watchdogs = [m.get(XM430.BUS_WATCHDOG) for m in self._joint_memories]
            self.robot.watchdog_s = min(watchdogs) * UNITS[XM430.BUS_WATCHDOG].scale if min(watchdogs) > 0 else 0.0
        if XM430.GOAL_POSITION in touched and all(torque) and not self._watchdog_tripped:
            goals = np.array([to_si(XM430.GOAL_POSITION, m.get(XM430.GOAL_POSITION)) for m in self._joint_memories])
            if self.robot.lockstep:
                self.robot.command(goals)
                self.sample()
            else:
                self._pending_goals = goals

    @property
    def _watchdog_tripped(self) -> bool:
        return any(m.get(XM430.BUS_WATCHDOG) == _WATCHDOG_TRIPPED for m in self._joint_memories)

    def _sync_with_robot(self) -> None:
        """A watchdog trip inside the robot is the XM430s' bus watchdog expiring: each motor stops where it is,
        torque on, BUS_WATCHDOG reads -1 and the goal registers refuse writes until the host writes 0 there."""
        if not self.robot.watchdog_latched:
            return
        self._pending_goals = None
        self.robot.watchdog_s = 0.0
        self.robot.arm()  # holding the present pose, as a stopped motor does
        for memory in self._joint_memories:
            memory.set(XM430.BUS_WATCHDOG, _WATCHDOG_TRIPPED)
            memory.set(XM430.GOAL_POSITION, memory.get(XM430.PRESENT_POSITION))
