"""The quadruped's motor board as a ``MotorBus``, over a serial port (framed) or a ZMQ socket (bare bodies).

Every host frame gets exactly one reply: a STATE echoing the frame's sequence
number (an INFO for INFO_REQUEST). Replies that echo an older number are
late answers to a request that already timed out; they are counted and
dropped, never mistaken for the current tick.
"""

from __future__ import annotations

import select
import time

import numpy as np
import serial
import zmq

from firmware_bridge.calibration import Calibration
from firmware_bridge.motor_bus import BusError, BusTimeout, MotorBus, MotorInfo, ReplyLate
from firmware_bridge.motor_messages import (
    Arm,
    BoardMode,
    CommandWriter,
    Disarm,
    DisarmMode,
    FaultFlags,
    Heartbeat,
    Info,
    InfoRequest,
    Message,
    MessageError,
    MotorStatus,
    POSITION_SCALE,
    State,
    encode_body,
)
from firmware_bridge.serial_framing import BodyDecoder, FrameCounters, FrameDecoder, frame_body
from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import Fault, RobotState

# As plain ints: this mapping runs on every reply, and enum flag arithmetic costs microseconds per bit.
# MOTOR_FAULT is the summary of the motors' own status bits, which say what it is; a board or motor bit that has no
# name here still fails closed (UNKNOWN, MOTOR_FAILED).
_BOARD_FAULTS = (
    (int(FaultFlags.WATCHDOG), int(Fault.WATCHDOG)),
    (int(FaultFlags.UNDERVOLTAGE), int(Fault.UNDERVOLTAGE)),
    (int(FaultFlags.OVERTEMPERATURE), int(Fault.OVERTEMPERATURE)),
    (int(FaultFlags.IMU_STALE), int(Fault.SENSOR_TIMEOUT)),
    (int(FaultFlags.BAD_COMMAND), int(Fault.BAD_COMMAND)),
)
_BOARD_NAMED = sum(flag for flag, _ in _BOARD_FAULTS) | int(FaultFlags.MOTOR_FAULT)
_MOTOR_FAULTS = (
    (int(MotorStatus.OVERCURRENT), int(Fault.OVERCURRENT)),
    (int(MotorStatus.OVERTEMPERATURE), int(Fault.OVERTEMPERATURE)),
    (int(MotorStatus.ENCODER_FAULT), int(Fault.ENCODER)),
    (int(MotorStatus.FAILED), int(Fault.MOTOR_FAILED)),
)
_MOTOR_NAMED = sum(flag for flag, _ in _MOTOR_FAULTS) | int(MotorStatus.ENABLED)
_ENABLED, _MOTOR_FAULT = int(MotorStatus.ENABLED), int(FaultFlags.MOTOR_FAULT)
_UNKNOWN, _MOTOR_FAILED, _DISARMED = int(Fault.UNKNOWN), int(Fault.MOTOR_FAILED), int(Fault.DISARMED)
_ANY_MOTOR_FAULT = sum(fault for _, fault in _MOTOR_FAULTS)


class SerialLink:
    """Framed messages over a pyserial port (or anything with ``write``, ``read`` and ``fileno``)."""

    def __init__(self, port) -> None:
        self.port = port
        self.port.timeout = 0  # reads return what is there; waiting is done with select on the descriptor
        self.decoder = FrameDecoder()
        self.name = f"serial {getattr(port, 'port', port)}"

    @property
    def counters(self) -> FrameCounters:
        return self.decoder.counters

    def send(self, body: bytes) -> None:
        try:
            self.port.write(frame_body(body))
        except (OSError, serial.SerialException) as exc:
            raise BusError(f"{self.name}: write failed, adapter unplugged or port closed? ({exc})") from None

    def receive(self, deadline: float) -> list[tuple[int, Message]]:
        """Whatever complete messages arrive before ``deadline`` (time.monotonic), at least one if any."""
        while True:
            remaining = deadline - time.monotonic()
            try:
                ready, _, _ = select.select([self.port.fileno()], [], [], max(0.0, remaining))
                data = self.port.read(max(1, self.port.in_waiting)) if ready else b""
            except (OSError, serial.SerialException) as exc:
                raise BusError(f"{self.name}: read failed, adapter unplugged or port closed? ({exc})") from None
            got = self.decoder.feed(data)
            if got:
                return got
            if remaining <= 0:
                return []


class ZmqLink:
    """Bare message bodies over a connected DEALER socket; the device binds a ROUTER."""

    def __init__(self, socket: zmq.Socket) -> None:
        self.socket = socket
        self._fd = socket.getsockopt(zmq.FD)
        self.decoder = BodyDecoder()
        self.name = f"zmq {socket.getsockopt_string(zmq.LAST_ENDPOINT) or 'socket'}"

    @property
    def counters(self) -> FrameCounters:
        return self.decoder.counters

    def send(self, body: bytes) -> None:
        try:
            # Never blocking: with no device reading, ZMQ queues up to its high-water mark, then would wait.
            self.socket.send(body, zmq.NOBLOCK)
        except zmq.Again:
            raise BusError(f"{self.name}: send queue full, the device has stopped reading") from None
        except zmq.ZMQError as exc:
            raise BusError(f"{self.name}: send failed ({exc})") from None

    def receive(self, deadline: float) -> list[tuple[int, Message]]:
        # ZMQ's own timeouts (RCVTIMEO, poll) count whole milliseconds, more than a 1 kHz tick can give a reply:
        # wait on the socket's descriptor with select instead. It signals a change of the socket's state, not
        # a message, so the socket is asked (EVENTS) before every wait.
        while True:
            bodies = []
            try:
                while self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    bodies.append(self.socket.recv(zmq.NOBLOCK))
            except zmq.ZMQError as exc:
                raise BusError(f"{self.name}: receive failed ({exc})") from None
            if bodies:
                return [decoded for decoded in map(self.decoder.decode, bodies) if decoded is not None]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            select.select([self._fd], [], [], remaining)


class BoardBus(MotorBus):
    """The motor board. Wire slot k carries the motor with the k-th smallest id (docs/protocol.md)."""

    def __init__(
        self,
        spec: RobotSpec,
        link: SerialLink | ZmqLink,
        *,
        timeout_s: float = 0.02,
        calibration: Calibration | None = None,
    ) -> None:
        super().__init__(spec, calibration)
        self.link = link
        self.timeout_s = timeout_s
        ids = spec.motor_ids
        self._slot_ids = sorted(ids)
        self._slot_of_joint = np.array([self._slot_ids.index(i) for i in ids])
        n = len(self._slot_ids)
        self._motor = np.empty(n)
        self._kp, self._kd, self._torque = np.empty(n), np.empty(n), np.zeros(n)
        self._kp[self._slot_of_joint], self._kd[self._slot_of_joint] = spec.kp, spec.kd
        self._commands = CommandWriter(n)
        self._check_encodable(self._offset, self._direction)
        self._seq = 0
        self._stale_replies = 0
        self._timeouts = 0
        self._late_replies = 0
        self._time_base_us = 0  # unwraps the board's 32-bit microsecond clock
        self._last_board_us: int | None = None
        self._pending: tuple[int, float] | None = None
        """The sequence number and reply deadline of a command sent but not yet collected."""
        self._armed = False
        """Between an ARM and the next DISARM: every state must then show the board ARMED, every motor enabled."""

    def set_calibration(self, calibration: Calibration) -> None:
        self._check_encodable(*calibration.arrays(self.spec))
        super().set_calibration(calibration)

    def _check_encodable(self, offset: np.ndarray, direction: np.ndarray) -> None:
        """Every target inside a joint's limits must fit the COMMAND's position field once calibrated: else
        the first one past the field's range would fail a tick mid-run instead of the calibration failing now."""
        spec, reach = self.spec, 32767 * POSITION_SCALE
        ends = np.stack([direction * spec.lower + offset, direction * spec.upper + offset])
        for j in np.flatnonzero(np.abs(ends).max(axis=0) > reach):
            raise BusError(
                f"robot {spec.name}: joint {spec.joint_names[j]}'s limits [{spec.lower[j]:g}, {spec.upper[j]:g}] rad "
                f"are motor angles [{ends[:, j].min():g}, {ends[:, j].max():g}] rad with its calibration (offset "
                f"{offset[j]:g}, direction {direction[j]:+g}); the motor board protocol carries +/-{reach:g} rad"
            )

    def exchange(self, targets: np.ndarray) -> RobotState:
        self.send_command(targets)
        return self.collect_reply()

    def send_command(self, targets: np.ndarray) -> None:
        targets = np.asarray(targets, dtype=np.float64)
        if targets.shape != (self.spec.num_joints,):
            raise ValueError(f"targets: expected shape ({self.spec.num_joints},), got {targets.shape}")
        self._motor[self._slot_of_joint] = self._motor_from_joint(targets)
        seq = self._next_seq()
        try:
            body = self._commands.body(seq, self._motor, self._kp, self._kd, self._torque)
        except MessageError as exc:  # a target the wire cannot carry: the loop's bus-error stop, not a crash
            raise BusError(f"motor board: COMMAND seq {seq} not sent: {exc} (wire slots in motor id order)") from None
        self.link.send(body)
        self._pending = (seq, time.monotonic() + self.timeout_s)

    def collect_reply(self, wait_s: float | None = None) -> RobotState:
        if self._pending is None:
            raise RuntimeError("collect_reply without a command sent")
        seq, deadline = self._pending
        self._pending = None
        # The timeout counts from the send: a reply that arrived while the loop waited for its deadline is
        # already in the receive buffer and returns at once.
        if wait_s is not None:
            wait_s = max(0.0, wait_s)
            cutoff = time.monotonic() + wait_s
            if cutoff < deadline:
                return self._state(self._await_reply(seq, cutoff, "COMMAND", late_after_s=wait_s))
        return self._state(self._await_reply(seq, deadline, "COMMAND"))

    def read_state(self) -> RobotState:
        return self._state(self._send(Heartbeat()))

    def arm(self) -> RobotState:
        self._armed = True  # so that a board refusing to arm shows in the ARM reply itself
        return self._state(self._send(Arm()))

    def damp(self) -> RobotState:
        self._armed = False
        return self._state(self._send(Disarm(DisarmMode.DAMP)))

    def torque_off(self) -> RobotState:
        self._armed = False
        return self._state(self._send(Disarm(DisarmMode.TORQUE_OFF)))

    def scan(self) -> list[MotorInfo]:
        info = self._send(InfoRequest(), reply_type=Info)
        firmware = ".".join(str(v) for v in info.firmware)
        return [MotorInfo(i, m, firmware) for i, m in zip(info.motor_ids, info.motor_models)]

    def counters(self) -> dict[str, int]:
        return {
            **self.link.counters.as_dict(),
            "stale_replies": self._stale_replies,
            "timeouts": self._timeouts,
            "late_replies": self._late_replies,
        }

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _send(self, msg: Message, reply_type: type = State):
        seq = self._next_seq()
        return self._request(seq, encode_body(msg, seq), type(msg).__name__.upper(), reply_type)

    def _request(self, seq: int, body: bytes, what: str, reply_type: type = State):
        self.link.send(body)
        return self._await_reply(seq, time.monotonic() + self.timeout_s, what, reply_type)

    def _await_reply(
        self, seq: int, deadline: float, what: str, reply_type: type = State, late_after_s: float | None = None
    ):
        """The reply to ``seq`` by ``deadline``; past it ``BusTimeout``, or ``ReplyLate`` when the caller cut the
        wait short (``late_after_s``, the wait it allowed), carrying the newest late reply to an earlier
        command that came meanwhile: the board answers in order, so it is newer than any state in hand."""
        newest_late: State | None = None
        while True:
            for _, reply in self.link.receive(deadline):
                if reply_type is State and isinstance(reply, State) and reply.last_command_seq == seq:
                    return reply
                if reply_type is Info and isinstance(reply, Info):
                    return reply
                # Dropped unseen if the awaited reply follows; its fault flags then come again in that one.
                self._stale_replies += 1
                if isinstance(reply, State):
                    newest_late = reply
            if time.monotonic() >= deadline:
                if late_after_s is not None:
                    self._late_replies += 1
                    raise ReplyLate(
                        f"motor board: no {reply_type.__name__.upper()} reply to {what} seq {seq} within the "
                        f"{late_after_s * 1e6:.0f} us the tick waits for it on {self.link.name}",
                        None if newest_late is None else self._state(newest_late),
                    )
                self._timeouts += 1
                raise BusTimeout(
                    f"motor board: no {reply_type.__name__.upper()} reply to {what} "
                    f"seq {seq} within {self.timeout_s * 1000:.0f} ms on {self.link.name}"
                )

    def _state(self, reply: State) -> RobotState:
        n = len(self._slot_ids)
        if reply.position.size != n:
            raise BusError(f"motor board reports {reply.position.size} motors, robot spec {self.spec.name} has {n}")
        j = self._slot_of_joint
        pos, vel, current = self._joint_from_motor(reply.position[j], reply.velocity[j], reply.current[j])
        faults = 0
        board = int(reply.faults)
        if board:
            for flag, fault in _BOARD_FAULTS:
                if board & flag:
                    faults |= fault
            if board & ~_BOARD_NAMED:
                faults |= _UNKNOWN
        status = int(np.bitwise_or.reduce(reply.status)) if n else 0
        detail = ""
        if status & ~_ENABLED:
            for flag, fault in _MOTOR_FAULTS:
                if status & flag:
                    faults |= fault
            if status & ~_MOTOR_NAMED:
                faults |= _MOTOR_FAILED
            detail = self._motor_fault_detail(reply.status[j])
        if board & _MOTOR_FAULT and not faults & _ANY_MOTOR_FAULT:
            faults |= _MOTOR_FAILED
        # One reduction on the fast path (0.6 us; every tick at up to 1 kHz comes through here): all enabled?
        if self._armed and (
            reply.mode is not BoardMode.ARMED or not int(np.bitwise_and.reduce(reply.status)) & _ENABLED
        ):
            faults |= _DISARMED
            disabled = (reply.status[j] & _ENABLED) == 0
            names = [name for name, off in zip(self.spec.joint_names, disabled.tolist()) if off]
            lost = f"board mode {reply.mode.name}" + (f", not enabled: {', '.join(names)}" if names else "")
            detail = f"{detail}; {lost}" if detail else lost
        if self._last_board_us is not None and reply.board_time_us < self._last_board_us:
            self._time_base_us += 1 << 32
        self._last_board_us = reply.board_time_us
        return RobotState(
            timestamp=(self._time_base_us + reply.board_time_us) * 1e-6,
            joint_pos=pos,
            joint_vel=vel,
            joint_current=current,
            imu=np.concatenate([reply.orientation, reply.gyro]),
            faults=faults,
            fault_detail=detail,
        )

    def _motor_fault_detail(self, status: np.ndarray) -> str:
        """``joint: STATUS BITS`` for each motor (in joint order) whose status carries more than ENABLED."""
        out = []
        for name, bits in zip(self.spec.joint_names, status.tolist()):
            bits &= ~_ENABLED
            if bits:
                names = [f.name for f in MotorStatus if bits & f]
                unknown = bits & ~_MOTOR_NAMED
                out.append(f"{name}: {'|'.join(names + ([f'0x{unknown:x}'] if unknown else []))}")
        return ", ".join(out)
