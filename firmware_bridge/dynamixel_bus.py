"""The claw's Dynamixel XM430 chain as a ``MotorBus``, through the official Dynamixel SDK.

One tick is one SYNC_WRITE of goal positions (no reply) and one SYNC_READ of
present current, velocity and position (126..135, one contiguous block) for
every joint and every passive encoder: one round trip. Position gains live in
the motors' P/D gain registers, so ``exchange`` sends positions only.

The safe stop's damping step sets every joint's position P gain to 0 with
the torque on: no stiffness, and the motor's D gain alone acts (the XM430
ships with D = 0, which leaves the joint limp; set a D gain on the motors for
real damping). ``arm`` gives back the P gain a damping step took.

A status packet whose error byte carries the alert bit (0x80) comes from a
motor with a hardware error (HARDWARE_ERROR_STATUS): reading the state then
raises ``MotorFault`` naming the motor and its error bits.
"""

from __future__ import annotations

import math
import select
import termios
import time

import numpy as np
import serial
from dynamixel_sdk import COMM_RX_TIMEOUT, COMM_SUCCESS, GroupSyncRead, GroupSyncWrite, PacketHandler, PortHandler

from firmware_bridge.calibration import Calibration
from firmware_bridge.dynamixel_packets import ALERT
from firmware_bridge.dynamixel_table import (
    BUS_WATCHDOG_UNIT,
    UNITS,
    XM430,
    HardwareError,
    OperatingMode,
    decode_raw,
    encode_raw,
    from_si,
)
from firmware_bridge.motor_bus import BusError, BusTimeout, MotorBus, MotorFault, MotorInfo
from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import Fault, RobotState
from firmware_bridge.typed_yaml import ConfigError

# Passive encoders the spec may name in ``bus.extra_ids``, and the RobotState extras they fill.
ENCODER_EXTRAS = {"valve_encoder": ("valve_angle", "valve_velocity")}
READ_START = XM430.PRESENT_CURRENT.value.address
READ_LENGTH = XM430.PRESENT_POSITION.value.address + XM430.PRESENT_POSITION.value.size - READ_START
WATCHDOG_CHECK_S = 0.5
"""How often ``read_state`` also reads the joints' BUS_WATCHDOG while they are armed. A trip (a stall longer than
the watchdog that the loop's missed-deadline budget let pass) stops the motors, and they refuse goals without a
word on the wire: seen here it is a ``Fault.DISARMED`` in the state. One SYNC_READ of a byte per joint, about 1 ms
on a 1 Mbaud line, every half second."""
# The block read every tick, as one numpy record per motor.
_PRESENT = np.dtype([("current", "<i2"), ("velocity", "<i4"), ("position", "<i4")])
assert _PRESENT.itemsize == READ_LENGTH
_POSITION, _VELOCITY, _CURRENT = (UNITS[r] for r in (XM430.PRESENT_POSITION, XM430.PRESENT_VELOCITY,
                                                      XM430.PRESENT_CURRENT))  # fmt: skip


# What a serial port raises when its adapter is gone: pyserial's own errors, the OS's, and termios's (a flush).
_PORT_ERRORS = (OSError, serial.SerialException, termios.error)


class DynamixelPort(PortHandler):
    """The SDK's port handler with a reply timeout of our choosing.

    The SDK waits 2 x 16 ms + 2 ms for any reply, sized for a USB adapter at its default latency timer;
    a bus tuned to 1 ms wants to notice a dead motor sooner, a loaded test machine needs longer.
    """

    def __init__(self, port_name: str, timeout_s: float) -> None:
        super().__init__(port_name)
        self.timeout_ms = timeout_s * 1000.0

    def setPacketTimeout(self, packet_length):  # noqa: N802 (the SDK's name)
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * packet_length + self.timeout_ms

    def readPort(self, length):  # noqa: N802 (the SDK's name)
        """What has arrived, waiting in ``select`` for the first byte (up to the packet timeout).

        The SDK calls this in a loop while it waits for a status packet; its own non-blocking read makes
        that loop spin a whole core for the length of every round trip, which on a two-core computer
        starves whatever else must run (on a virtual robot, the motors' side of the bus).
        """
        try:
            if not self.ser.in_waiting:
                remaining_s = (self.packet_timeout - self.getTimeSinceStart()) / 1000.0
                if remaining_s > 0:
                    select.select([self.ser.fileno()], [], [], remaining_s)
            return self.ser.read(length)
        except _PORT_ERRORS as exc:
            raise self._failed("read", exc) from None

    def writePort(self, packet):  # noqa: N802 (the SDK's name)
        try:
            return super().writePort(packet)
        except _PORT_ERRORS as exc:  # a write timeout included: the port stopped draining
            raise self._failed("write", exc) from None

    def clearPort(self):  # noqa: N802 (the SDK's name)
        try:
            return super().clearPort()
        except _PORT_ERRORS as exc:
            raise self._failed("flush", exc) from None

    def _failed(self, what: str, exc: Exception) -> BusError:
        # The SDK marks the port busy for a whole transaction and frees it at the transaction's end: an error
        # that ends one early must free it, or every later request (the safe stop's first) finds it busy.
        self.is_using = False
        return BusError(f"{self.port_name}: serial {what} failed, adapter unplugged or port closed? ({exc})")


class DynamixelBus(MotorBus):
    def __init__(
        self,
        spec: RobotSpec,
        port: PortHandler,
        *,
        calibration: Calibration | None = None,
        packet_handler=None,
    ) -> None:
        super().__init__(spec, calibration)
        unknown = sorted(set(spec.bus.extra_ids) - set(ENCODER_EXTRAS))
        if unknown:
            raise ConfigError(f"bus.extra_ids: {unknown[0]!r} is not a known encoder ({sorted(ENCODER_EXTRAS)})")
        self.port = port
        self.ph = packet_handler or PacketHandler(2.0)
        self.joint_ids = spec.motor_ids
        self.encoder_ids = dict(spec.bus.extra_ids)
        goal = XM430.GOAL_POSITION.value
        self._writer = GroupSyncWrite(port, self.ph, goal.address, goal.size)
        for i in self.joint_ids:
            self._writer.addParam(i, list(encode_raw(XM430.GOAL_POSITION, 2048)))
        self._read_ids = self.joint_ids + list(self.encoder_ids.values())
        self._reader = GroupSyncRead(port, self.ph, READ_START, READ_LENGTH)
        for i in self._read_ids:
            self._reader.addParam(i)
        watchdog = XM430.BUS_WATCHDOG.value
        self._watchdog_reader = GroupSyncRead(port, self.ph, watchdog.address, watchdog.size)
        for i in self.joint_ids:
            self._watchdog_reader.addParam(i)
        self._next_watchdog_check: float | None = None
        """While armed, when ``read_state`` next reads the bus watchdogs; None when not armed."""
        self._timeouts = 0
        self._errors = 0

    def exchange(self, targets: np.ndarray) -> RobotState:
        self.send_command(targets)
        return self.read_state()

    def send_command(self, targets: np.ndarray) -> None:
        targets = np.asarray(targets, dtype=np.float64)
        if targets.shape != (self.spec.num_joints,):
            raise ValueError(f"targets: expected shape ({self.spec.num_joints},), got {targets.shape}")
        for dxl_id, rad in zip(self.joint_ids, self._motor_from_joint(targets).tolist()):
            self._writer.changeParam(dxl_id, list(encode_raw(XM430.GOAL_POSITION, from_si(XM430.GOAL_POSITION, rad))))
        self._check(self._writer.txPacket(), 0, "SYNC_WRITE goal position", None)

    def collect_reply(self, wait_s: float | None = None) -> RobotState:
        """A SYNC_WRITE has no reply: the state is a SYNC_READ made now, at the next tick's start, so the
        policy sees the joints as they are rather than as they were a period ago. There is no earlier reply
        to give up on, so ``wait_s`` does not apply: the read has the port's packet timeout."""
        return self.read_state()

    def read_state(self) -> RobotState:
        state, alerted = self._sync_read()
        if alerted:
            raise self._motor_fault(alerted[0])
        if self._next_watchdog_check is not None and state.timestamp >= self._next_watchdog_check:
            self._next_watchdog_check = state.timestamp + WATCHDOG_CHECK_S
            tripped = self._tripped_watchdogs()
            if tripped:
                state.faults |= Fault.DISARMED
                state.fault_detail = (f"bus watchdog tripped on {', '.join(tripped)}: no instruction reached them "
                                      f"for {self.watchdog_raw * BUS_WATCHDOG_UNIT.scale * 1e3:.0f} ms, and they "
                                      "stopped")  # fmt: skip
        return state

    def _tripped_watchdogs(self) -> list[str]:
        """The joints whose BUS_WATCHDOG reads -1."""
        what = "SYNC_READ bus watchdog"
        self._check(self._watchdog_reader.txPacket(), 0, what, None)
        tripped = []
        for name, dxl_id in zip(self.spec.joint_names, self.joint_ids):
            data, result, error = self.ph.readRx(self.port, dxl_id, XM430.BUS_WATCHDOG.value.size)
            self._check(result, error, what, dxl_id)
            if decode_raw(XM430.BUS_WATCHDOG, bytes(data)) < 0:
                tripped.append(name)
        return tripped

    def _sync_read(self) -> tuple[RobotState, list[int]]:
        """The state, and the ids whose status packets carried the hardware alert bit."""
        what = "SYNC_READ present current/velocity/position"
        self._check(self._reader.txPacket(), 0, what, None)
        raw, alerted = bytearray(), []
        # The replies come one status packet per id, in order; reading them here (as the SDK's group does)
        # lets a missing reply name its motor.
        for dxl_id in self._read_ids:
            data, result, error = self.ph.readRx(self.port, dxl_id, READ_LENGTH)
            self._check(result, error, what, dxl_id)
            if error & ALERT:
                alerted.append(dxl_id)
            raw += bytes(data)
        present = np.frombuffer(raw, _PRESENT)
        pos = (present["position"] - _POSITION.offset) * _POSITION.scale
        vel = present["velocity"] * _VELOCITY.scale
        cur = present["current"] * _CURRENT.scale
        n = self.spec.num_joints
        joint_pos, joint_vel, joint_cur = self._joint_from_motor(pos[:n], vel[:n], cur[:n])
        extras = {}
        for k, name in enumerate(self.encoder_ids, start=n):
            angle_key, velocity_key = ENCODER_EXTRAS[name]
            extras[angle_key] = float(pos[k])
            extras[velocity_key] = float(vel[k])
        state = RobotState(timestamp=time.monotonic(), joint_pos=joint_pos, joint_vel=joint_vel,
                           joint_current=joint_cur, extras=extras)  # fmt: skip
        return state, alerted

    def _motor_fault(self, dxl_id: int) -> MotorFault:
        try:
            bits = HardwareError(self.read_register(dxl_id, XM430.HARDWARE_ERROR_STATUS))
            detail = "|".join(e.name for e in HardwareError if e in bits) or "none set"
        except BusError as exc:
            detail = f"unreadable: {exc}"
        return MotorFault(dxl_id, f"dynamixel id {dxl_id} reports a hardware error (HARDWARE_ERROR_STATUS: {detail})")

    @property
    def watchdog_raw(self) -> int:
        """BUS_WATCHDOG as ``arm`` sets it, in 20 ms units: the motors' own last line, armed with the torque.
        After this long without an instruction packet each motor stops where it is, and refuses goals until
        the next ``arm``. Three control periods, at least 100 ms (as a motor board's). A stall that long can still
        fit the loop's missed-deadline budget; ``read_state`` then sees the trip (``WATCHDOG_CHECK_S``)."""
        units = max(0.1, 3.0 / self.spec.control_rate_hz) / BUS_WATCHDOG_UNIT.scale
        return min(127, math.ceil(round(units, 9)))

    def arm(self) -> RobotState:
        watchdog = self.watchdog_raw
        for i in self.joint_ids:
            if self.read_register(i, XM430.OPERATING_MODE) != OperatingMode.POSITION:
                self.write_register(i, XM430.TORQUE_ENABLE, 0)  # the mode is in EEPROM: torque must be off
                self.write_register(i, XM430.OPERATING_MODE, OperatingMode.POSITION)
            if self.read_register(i, XM430.POSITION_P_GAIN) == 0:  # left by a damping step
                self.write_register(i, XM430.POSITION_P_GAIN, XM430.POSITION_P_GAIN.value.default)
            # 0 first: it clears a trip left by an earlier session (-1), which holds the goal registers read-only.
            self.write_register(i, XM430.BUS_WATCHDOG, 0)
            self.write_register(i, XM430.BUS_WATCHDOG, watchdog)
        for i in self.joint_ids:
            self.write_register(i, XM430.TORQUE_ENABLE, 1)
        self._next_watchdog_check = time.monotonic() + WATCHDOG_CHECK_S
        return self.read_state()

    def damp(self) -> RobotState:
        """The bus watchdog off (the damping hold sends nothing), then position P gain 0 on every joint at once
        (one SYNC_WRITE each), torque staying on."""
        self._next_watchdog_check = None
        for reg, what in ((XM430.BUS_WATCHDOG, "bus watchdog off"), (XM430.POSITION_P_GAIN, "position P gain 0")):
            writer = GroupSyncWrite(self.port, self.ph, reg.value.address, reg.value.size)
            for i in self.joint_ids:
                writer.addParam(i, list(encode_raw(reg, 0)))
            self._check(writer.txPacket(), 0, f"SYNC_WRITE {what}", None)
        return self._sync_read()[0]

    def torque_off(self) -> RobotState:
        """Torque off on every joint, trying all of them before reporting the first failure; a motor with a
        hardware error still takes it."""
        self._next_watchdog_check = None
        failure = None
        for i in self.joint_ids:
            try:
                self.write_register(i, XM430.TORQUE_ENABLE, 0)
            except BusError as exc:
                failure = failure or exc
        if failure:
            raise failure
        return self._sync_read()[0]

    def scan(self) -> list[MotorInfo]:
        found, result = self.ph.broadcastPing(self.port)
        if result != COMM_SUCCESS and not found:
            self._check(result, 0, "broadcast PING", None)
        return [MotorInfo(i, model, f"v{fw}") for i, (model, fw) in sorted(found.items())]

    def read_register(self, dxl_id: int, reg: XM430) -> int:
        info = reg.value
        data, result, error = self.ph.readTxRx(self.port, dxl_id, info.address, info.size)
        self._check(result, error, f"READ {reg.name}", dxl_id)
        return decode_raw(reg, bytes(data))

    def write_register(self, dxl_id: int, reg: XM430, raw: int) -> None:
        info = reg.value
        result, error = self.ph.writeTxRx(self.port, dxl_id, info.address, info.size, list(encode_raw(reg, raw)))
        self._check(result, error, f"WRITE {reg.name}={raw}", dxl_id)

    def counters(self) -> dict[str, int]:
        return {"timeouts": self._timeouts, "errors": self._errors}

    def _check(self, result: int, error: int, what: str, dxl_id: int | None) -> None:
        who = f"dynamixel id {dxl_id}" if dxl_id is not None else "dynamixel bus"
        where = f"on {self.port.getPortName()}"
        if result == COMM_RX_TIMEOUT:
            self._timeouts += 1
            raise BusTimeout(f"{who}: no status packet for {what} {where}")
        if result != COMM_SUCCESS:
            self._errors += 1
            raise BusError(f"{who}: {what} failed {where}: {self.ph.getTxRxResult(result)}")
        # The alert bit is the motor's hardware error, not a refusal: the instruction itself was carried out.
        if error & ~ALERT:
            self._errors += 1
            raise BusError(f"{who}: {what} refused {where}: {self.ph.getRxPacketError(error & ~ALERT)}")
