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
from firmware_bridge.motor_bus import BusError, BusTimeout, MotorBus, MotorInfo
from firmware_bridge.motor_messages import (
    Arm,
    Command,
    Disarm,
    DisarmMode,
    FaultFlags,
    Heartbeat,
    Info,
    InfoRequest,
    Message,
    MotorStatus,
    State,
    encode_body,
)
from firmware_bridge.serial_framing import BodyDecoder, FrameCounters, FrameDecoder, encode_frame
from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import Fault, RobotState

_BOARD_FAULTS = {
    FaultFlags.WATCHDOG: Fault.WATCHDOG,
    FaultFlags.UNDERVOLTAGE: Fault.UNDERVOLTAGE,
    FaultFlags.OVERTEMPERATURE: Fault.OVERTEMPERATURE,
}
_MOTOR_FAULTS = {
    MotorStatus.OVERCURRENT: Fault.OVERCURRENT,
    MotorStatus.OVERTEMPERATURE: Fault.OVERTEMPERATURE,
    MotorStatus.ENCODER_FAULT: Fault.ENCODER,
}


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

    def send(self, msg: Message, seq: int) -> None:
        try:
            self.port.write(encode_frame(msg, seq))
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
        self.decoder = BodyDecoder()
        self.name = f"zmq {socket.getsockopt_string(zmq.LAST_ENDPOINT) or 'socket'}"

    @property
    def counters(self) -> FrameCounters:
        return self.decoder.counters

    def send(self, msg: Message, seq: int) -> None:
        self.socket.send(encode_body(msg, seq))

    def receive(self, deadline: float) -> list[tuple[int, Message]]:
        remaining_ms = max(0, int((deadline - time.monotonic()) * 1000 + 0.999))
        out = []
        if self.socket.poll(remaining_ms, zmq.POLLIN):
            while self.socket.poll(0, zmq.POLLIN):
                decoded = self.decoder.decode(self.socket.recv())
                if decoded is not None:
                    out.append(decoded)
        return out


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
        self._kp, self._kd = spec.kp, spec.kd
        self._seq = 0
        self._stale_replies = 0
        self._timeouts = 0
        self._time_base_us = 0  # unwraps the board's 32-bit microsecond clock
        self._last_board_us: int | None = None

    def exchange(self, targets: np.ndarray) -> RobotState:
        targets = np.asarray(targets, dtype=np.float64)
        if targets.shape != (self.spec.num_joints,):
            raise ValueError(f"targets: expected shape ({self.spec.num_joints},), got {targets.shape}")
        motor = np.empty(len(self._slot_ids))
        motor[self._slot_of_joint] = self._motor_from_joint(targets)
        kp, kd = np.empty_like(motor), np.empty_like(motor)
        kp[self._slot_of_joint], kd[self._slot_of_joint] = self._kp, self._kd
        return self._state(self._request(Command(position=motor, kp=kp, kd=kd, torque=np.zeros_like(motor))))

    def read_state(self) -> RobotState:
        return self._state(self._request(Heartbeat()))

    def arm(self) -> RobotState:
        return self._state(self._request(Arm()))

    def safe_stop(self) -> RobotState:
        mode = DisarmMode.DAMP if self.spec.safe_state.mode == "damping" else DisarmMode.TORQUE_OFF
        return self._state(self._request(Disarm(mode)))

    def scan(self) -> list[MotorInfo]:
        info = self._request(InfoRequest(), reply_type=Info)
        firmware = ".".join(str(v) for v in info.firmware)
        return [MotorInfo(i, m, firmware) for i, m in zip(info.motor_ids, info.motor_models)]

    def counters(self) -> dict[str, int]:
        return {**self.link.counters.as_dict(), "stale_replies": self._stale_replies, "timeouts": self._timeouts}

    def _request(self, msg: Message, reply_type: type = State):
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        self.link.send(msg, seq)
        deadline = time.monotonic() + self.timeout_s
        while True:
            for _, reply in self.link.receive(deadline):
                if reply_type is State and isinstance(reply, State) and reply.last_command_seq == seq:
                    return reply
                if reply_type is Info and isinstance(reply, Info):
                    return reply
                self._stale_replies += 1
            if time.monotonic() >= deadline:
                self._timeouts += 1
                raise BusTimeout(
                    f"motor board: no {reply_type.__name__.upper()} reply to {type(msg).__name__.upper()} "
                    f"seq {seq} within {self.timeout_s * 1000:.0f} ms on {self.link.name}"
                )

    def _state(self, reply: State) -> RobotState:
        n = len(self._slot_ids)
        if reply.position.size != n:
            raise BusError(f"motor board reports {reply.position.size} motors, robot spec {self.spec.name} has {n}")
        j = self._slot_of_joint
        pos, vel, current = self._joint_from_motor(reply.position[j], reply.velocity[j], reply.current[j])
        faults = Fault(0)
        for flag, fault in _BOARD_FAULTS.items():
            if flag in reply.faults:
                faults |= fault
        status = np.bitwise_or.reduce(reply.status) if n else 0
        for flag, fault in _MOTOR_FAULTS.items():
            if status & flag:
                faults |= fault
        if self._last_board_us is not None and reply.board_time_us < self._last_board_us:
            self._time_base_us += 1 << 32
        self._last_board_us = reply.board_time_us
        return RobotState(
            timestamp=(self._time_base_us + reply.board_time_us) * 1e-6,
            joint_pos=pos,
            joint_vel=vel,
            joint_current=current,
            imu=np.concatenate([reply.orientation, reply.gyro]),
            faults=int(faults),
        )
