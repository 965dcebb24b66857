"""The motor board's messages: command, state, arm, disarm, heartbeat, info.

Pure code, bytes in and bytes out. A message *body* is a 4-byte header
(version, type, sequence) and a fixed-point payload, all little-endian; the
serial link wraps bodies in COBS frames with a CRC (``serial_framing``), ZMQ
carries them bare. ``docs/protocol.md`` specifies every byte; the tables
below are that specification as data.
"""

from __future__ import annotations

import dataclasses
import enum
import struct

import numpy as np

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<BBH")  # version, message type, sequence number
MAX_MOTORS = 16


class MessageType(enum.IntEnum):
    """Host -> board types have the high bit clear; board -> host types have it set."""

    COMMAND = 0x01
    ARM = 0x02
    DISARM = 0x03
    HEARTBEAT = 0x04
    INFO_REQUEST = 0x05
    STATE = 0x81
    INFO = 0x85


class CommandFlags(enum.IntFlag):
    ARM = 0x01  # arm (clearing a latched watchdog) before applying the targets
    DAMP = 0x02  # ignore the targets and damp: the in-band safe state


class DisarmMode(enum.IntEnum):
    DAMP = 0  # motors short-circuited through a damping gain: the robot sags slowly
    TORQUE_OFF = 1  # motors unpowered


class BoardMode(enum.IntEnum):
    DISARMED = 0
    DAMPING = 1
    ARMED = 2


class FaultFlags(enum.IntFlag):
    WATCHDOG = 0x0001  # no command within the timeout: damping, latched until ARM
    MOTOR_FAULT = 0x0002  # at least one motor reports a non-zero status
    UNDERVOLTAGE = 0x0004
    OVERTEMPERATURE = 0x0008
    BAD_COMMAND = 0x0010  # a command for the wrong number of motors was refused
    IMU_STALE = 0x0020  # the IMU has delivered no new sample within the board's IMU timeout; clears when it does


class MotorStatus(enum.IntFlag):
    ENABLED = 0x01
    OVERCURRENT = 0x02
    OVERTEMPERATURE = 0x04
    ENCODER_FAULT = 0x08
    FAILED = 0x10  # the driver stopped this motor


# Fixed-point scales: physical value = integer * scale.
POSITION_SCALE = 1e-4  # rad per count, i16: +/-3.2767 rad
VELOCITY_SCALE = 2e-3  # rad/s per count, i16: +/-65.534 rad/s
CURRENT_SCALE = 1e-3  # A per count, i16: +/-32.767 A
TORQUE_SCALE = 1e-3  # N m per count, i16: +/-32.767 N m
KP_SCALE = 1e-2  # N m/rad per count, u16: 0..655.35
KD_SCALE = 1e-4  # N m s/rad per count, u16: 0..6.5535
ORIENTATION_SCALE = 1e-4  # rad per count, i16 (roll, pitch, yaw)
GYRO_SCALE = 1e-3  # rad/s per count, i16

COMMAND_MOTOR = np.dtype([("position", "<i2"), ("kp", "<u2"), ("kd", "<u2"), ("torque", "<i2")])
STATE_MOTOR = np.dtype([("position", "<i2"), ("velocity", "<i2"), ("current", "<i2"), ("status", "u1")])
INFO_MOTOR = np.dtype([("id", "u1"), ("model", "<u2")])
COMMAND_HEAD = struct.Struct("<BB")  # flags, motor count
STATE_HEAD = struct.Struct("<IHBHB")  # board time us, last command seq, mode, faults, motor count
IMU = struct.Struct("<6h")  # roll, pitch, yaw, gyro x/y/z
_COMMAND_PREFIX = struct.Struct(HEADER.format + COMMAND_HEAD.format[1:])
_STATE_PREFIX = struct.Struct(HEADER.format + STATE_HEAD.format[1:])  # a STATE body up to its IMU block
DISARM_BODY = struct.Struct("<B")
INFO_HEAD = struct.Struct("<BBBB")  # firmware major, minor, patch, motor count

COMMAND_SCALES = {"position": POSITION_SCALE, "kp": KP_SCALE, "kd": KD_SCALE, "torque": TORQUE_SCALE}
_COMMAND_SCALE_ROW = np.array(list(COMMAND_SCALES.values()))
_COMMAND_SIGNED = np.array([65536.0 if COMMAND_MOTOR[f].kind == "i" else 0.0 for f in COMMAND_SCALES])
STATE_SCALES = {"position": POSITION_SCALE, "velocity": VELOCITY_SCALE, "current": CURRENT_SCALE}
IMU_SCALES = (ORIENTATION_SCALE,) * 3 + (GYRO_SCALE,) * 3
_IMU_SCALE_ARRAY = np.array(IMU_SCALES)


class MessageError(ValueError):
    """A body that cannot be decoded, or values that cannot be encoded; the text names the field."""


class UnknownMessageType(MessageError):
    """A well-formed body whose type byte this version does not know."""


@dataclasses.dataclass(frozen=True)
class Command:
    """Per-motor PD targets, in motor order: position (rad), kp (N m/rad), kd (N m s/rad), feed-forward (N m)."""

    position: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    torque: np.ndarray
    flags: CommandFlags = CommandFlags(0)


@dataclasses.dataclass(frozen=True)
class Arm:
    """Enables the motors and clears a latched watchdog; they hold where they are until commanded."""


@dataclasses.dataclass(frozen=True)
class Disarm:
    mode: DisarmMode = DisarmMode.DAMP


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """Asks for one STATE reply without changing anything: reading the robot never moves it."""


@dataclasses.dataclass(frozen=True)
class InfoRequest:
    """Asks the board for one INFO reply (motor ids, models, firmware) for bring-up."""


@dataclasses.dataclass(frozen=True)
class State:
    """What the board reports: per-motor arrays in motor order, IMU (rad, rad/s), board time.

    ``last_command_seq`` is the sequence number of the host frame this state answers.
    """

    board_time_us: int
    last_command_seq: int
    mode: BoardMode
    faults: FaultFlags
    position: np.ndarray
    velocity: np.ndarray
    current: np.ndarray
    status: np.ndarray
    orientation: np.ndarray  # roll, pitch, yaw
    gyro: np.ndarray  # body rates about x, y, z


@dataclasses.dataclass(frozen=True)
class Info:
    firmware: tuple[int, int, int]
    motor_ids: tuple[int, ...]
    motor_models: tuple[int, ...]


Message = Command | Arm | Disarm | Heartbeat | InfoRequest | State | Info

_TYPE_OF = {
    Command: MessageType.COMMAND,
    Arm: MessageType.ARM,
    Disarm: MessageType.DISARM,
    Heartbeat: MessageType.HEARTBEAT,
    InfoRequest: MessageType.INFO_REQUEST,
    State: MessageType.STATE,
    Info: MessageType.INFO,
}


def _motor_count(*arrays: np.ndarray, names: tuple[str, ...]) -> int:
    sizes = {name: np.size(a) for name, a in zip(names, arrays)}
    n = sizes[names[0]]
    for name, size in sizes.items():
        if size != n:
            raise MessageError(f"{name}: {size} values for {n} motors")
    if n > MAX_MOTORS:
        raise MessageError(f"{names[0]}: {n} motors, at most {MAX_MOTORS}")
    return n


def _encode_payload(msg: Message) -> bytes:
    if isinstance(msg, Disarm):
        return DISARM_BODY.pack(int(msg.mode))
    if isinstance(msg, Info):
        n = _motor_count(np.array(msg.motor_ids), np.array(msg.motor_models), names=("motor_ids", "motor_models"))
        records = np.zeros(n, INFO_MOTOR)
        records["id"] = msg.motor_ids
        records["model"] = msg.motor_models
        return INFO_HEAD.pack(*msg.firmware, n) + records.tobytes()
    return b""


class StateWriter:
    """STATE bodies for ``n`` motors, encoded into one preallocated buffer.

    A motor board answers every command with its latest sample, so the sample is encoded once, when it is
    taken (``fill``), and each reply only stamps its header fields (``body``): a few microseconds instead of
    converting every value again on the reply path.
    """

    def __init__(self, n: int) -> None:
        if n > MAX_MOTORS:
            raise MessageError(f"position: {n} motors, at most {MAX_MOTORS}")
        self.n = n
        self.buffer = bytearray(_STATE_PREFIX.size + IMU.size + n * STATE_MOTOR.itemsize)
        self._imu = np.frombuffer(self.buffer, "<i2", 6, _STATE_PREFIX.size)
        self._records = np.frombuffer(self.buffer, STATE_MOTOR, n, _STATE_PREFIX.size + IMU.size)
        self._values = np.empty(3 * n + 6)
        self._scales = np.repeat(
            [POSITION_SCALE, VELOCITY_SCALE, CURRENT_SCALE, *IMU_SCALES], [n, n, n, 1, 1, 1, 1, 1, 1]
        )
        self._counts = np.empty(3 * n + 6, np.int16)
        self.board_time_us = 0

    def fill(self, board_time_us: int, position, velocity, current, status, orientation, gyro) -> None:
        """Encode one sample. Sensors saturate at the ends of their range, as board firmware would, instead
        of failing a tick; a non-finite value raises ``MessageError`` naming its field."""
        n, v = self.n, self._values
        for k, (name, field) in enumerate((("position", position), ("velocity", velocity), ("current", current))):
            if np.size(field) != n:
                raise MessageError(f"{name}: {np.size(field)} values for {n} motors")
            v[k * n : (k + 1) * n] = field
        if np.size(orientation) + np.size(gyro) != 6:
            raise MessageError(
                f"imu: expected 3 orientation and 3 gyro values, got {np.size(orientation) + np.size(gyro)}"
            )
        v[3 * n : 3 * n + 3] = orientation
        v[3 * n + 3 :] = gyro
        if not np.isfinite(v).all():
            bad = int(np.flatnonzero(~np.isfinite(v))[0])
            name = ("position", "velocity", "current", "imu")[min(bad // n, 3)] if n else "imu"
            index = bad - 3 * n if name == "imu" else bad % n
            raise MessageError(f"{name}[{index}]: not finite ({v[bad]})")
        np.clip(np.rint(v / self._scales), -32768, 32767, out=v)
        counts = self._counts
        counts[:] = v
        records = self._records
        records["position"] = counts[:n]
        records["velocity"] = counts[n : 2 * n]
        records["current"] = counts[2 * n : 3 * n]
        records["status"] = status
        self._imu[:] = counts[3 * n :]
        self.board_time_us = board_time_us

    def body(self, seq: int, last_command_seq: int, mode: int, faults: int) -> bytes:
        """The last sample as a STATE body with these header fields."""
        _STATE_PREFIX.pack_into(self.buffer, 0, PROTOCOL_VERSION, MessageType.STATE, seq & 0xFFFF,
                                self.board_time_us & 0xFFFFFFFF, last_command_seq & 0xFFFF, mode, faults,
                                self.n)  # fmt: skip
        return bytes(self.buffer)


class CommandWriter:
    """COMMAND bodies for ``n`` motors in one preallocated buffer: the host sends one every tick, so the
    conversion is a few array operations, not a Python loop over values."""

    _FIELDS = tuple(COMMAND_SCALES)

    def __init__(self, n: int) -> None:
        if n > MAX_MOTORS:
            raise MessageError(f"position: {n} motors, at most {MAX_MOTORS}")
        self.n = n
        self.buffer = bytearray(_COMMAND_PREFIX.size + n * COMMAND_MOTOR.itemsize)
        self._records = np.frombuffer(self.buffer, COMMAND_MOTOR, n, _COMMAND_PREFIX.size)
        self._values = np.empty(4 * n)
        self._scales = np.repeat([COMMAND_SCALES[f] for f in self._FIELDS], n)
        limits = [np.iinfo(COMMAND_MOTOR[f]) for f in self._FIELDS]
        self._low = np.repeat([i.min for i in limits], n)
        self._high = np.repeat([i.max for i in limits], n)

    def body(self, seq: int, position, kp, kd, torque, flags: int = 0) -> bytes:
        n, v = self.n, self._values
        for k, (name, field) in enumerate(zip(self._FIELDS, (position, kp, kd, torque))):
            if np.size(field) != n:
                raise MessageError(f"{name}: {np.size(field)} values for {n} motors")
            v[k * n : (k + 1) * n] = field
        if not np.isfinite(v).all():
            bad = int(np.flatnonzero(~np.isfinite(v))[0])
            raise MessageError(f"{self._FIELDS[bad // n]}[{bad % n}]: not finite ({v[bad]})")
        counts = np.rint(v / self._scales)
        out = np.flatnonzero((counts < self._low) | (counts > self._high))
        if out.size:
            i = int(out[0])
            name, scale = self._FIELDS[i // n], self._scales[i]
            raise MessageError(
                f"{name}[{i % n}]: {v[i]} is outside the encodable range "
                f"[{self._low[i] * scale:g}, {self._high[i] * scale:g}]"
            )
        records = self._records
        for k, name in enumerate(self._FIELDS):
            records[name] = counts[k * n : (k + 1) * n]
        _COMMAND_PREFIX.pack_into(self.buffer, 0, PROTOCOL_VERSION, MessageType.COMMAND, seq & 0xFFFF, flags, n)
        return bytes(self.buffer)


def encode_body(msg: Message, seq: int) -> bytes:
    """Header + payload for ``msg`` with sequence number ``seq`` (mod 2**16)."""
    if isinstance(msg, Command):
        writer = CommandWriter(_motor_count(msg.position, msg.kp, msg.kd, msg.torque,
                                            names=("position", "kp", "kd", "torque")))  # fmt: skip
        return writer.body(seq, msg.position, msg.kp, msg.kd, msg.torque, int(msg.flags))
    if isinstance(msg, State):
        writer = StateWriter(_motor_count(msg.position, msg.velocity, msg.current, msg.status,
                                          names=("position", "velocity", "current", "status")))  # fmt: skip
        writer.fill(msg.board_time_us, msg.position, msg.velocity, msg.current, msg.status, msg.orientation, msg.gyro)
        return writer.body(seq, msg.last_command_seq, int(msg.mode), int(msg.faults))
    return HEADER.pack(PROTOCOL_VERSION, _TYPE_OF[type(msg)], seq & 0xFFFF) + _encode_payload(msg)


def _expect_size(payload: bytes, size: int, what: str) -> None:
    if len(payload) != size:
        raise MessageError(f"{what}: payload is {len(payload)} bytes, expected {size}")


def _records(payload: bytes, offset: int, n: int, dtype: np.dtype, what: str) -> np.ndarray:
    _expect_size(payload, offset + n * dtype.itemsize, what)
    return np.frombuffer(payload, dtype, count=n, offset=offset)


def _decode_payload(kind: MessageType, payload: bytes) -> Message:
    if kind is MessageType.COMMAND:
        head = COMMAND_HEAD.size
        if len(payload) < head:
            raise MessageError(f"COMMAND: payload is {len(payload)} bytes, shorter than its {head}-byte head")
        flags, n = COMMAND_HEAD.unpack_from(payload)
        # Every per-motor field is 2 bytes: read them as one (n, 4) block and scale by column, sign by column.
        raw = _records(payload, head, 4 * n, np.dtype("<u2"), "COMMAND").reshape(n, 4).astype(np.float64)
        raw -= _COMMAND_SIGNED * (raw >= 32768)
        raw *= _COMMAND_SCALE_ROW
        return Command(flags=CommandFlags(flags), **{f: raw[:, k] for k, f in enumerate(COMMAND_SCALES)})
    if kind is MessageType.STATE:
        head = STATE_HEAD.size + IMU.size
        if len(payload) < head:
            raise MessageError(f"STATE: payload is {len(payload)} bytes, shorter than its {head}-byte head")
        time_us, last_seq, mode, faults, n = STATE_HEAD.unpack_from(payload)
        imu = np.frombuffer(payload, "<i2", 6, STATE_HEAD.size) * _IMU_SCALE_ARRAY
        rec = _records(payload, head, n, STATE_MOTOR, "STATE")
        try:
            board_mode = BoardMode(mode)
        except ValueError:
            raise MessageError(f"STATE: mode byte {mode} is not one of {[m.value for m in BoardMode]}") from None
        return State(
            board_time_us=time_us, last_command_seq=last_seq, mode=board_mode, faults=FaultFlags(faults),
            status=rec["status"].copy(), orientation=imu[0:3], gyro=imu[3:6],
            position=rec["position"] * POSITION_SCALE, velocity=rec["velocity"] * VELOCITY_SCALE,
            current=rec["current"] * CURRENT_SCALE,
        )
    if kind is MessageType.DISARM:
        _expect_size(payload, DISARM_BODY.size, "DISARM")
        try:
            return Disarm(DisarmMode(payload[0]))
        except ValueError:
            modes = [m.value for m in DisarmMode]
            raise MessageError(f"DISARM: mode byte {payload[0]} is not one of {modes}") from None
    if kind is MessageType.INFO:
        if len(payload) < INFO_HEAD.size:
            raise MessageError(f"INFO: payload is {len(payload)} bytes, shorter than its {INFO_HEAD.size}-byte head")
        major, minor, patch, n = INFO_HEAD.unpack_from(payload)
        rec = _records(payload, INFO_HEAD.size, n, INFO_MOTOR, "INFO")
        return Info((major, minor, patch), tuple(int(i) for i in rec["id"]), tuple(int(m) for m in rec["model"]))
    _expect_size(payload, 0, kind.name)
    return {MessageType.ARM: Arm, MessageType.HEARTBEAT: Heartbeat, MessageType.INFO_REQUEST: InfoRequest}[kind]()


def decode_body(body: bytes) -> tuple[int, Message]:
    """``(seq, message)`` from a body; raises ``MessageError`` (``UnknownMessageType``) naming what is wrong."""
    if len(body) < HEADER.size:
        raise MessageError(f"body is {len(body)} bytes, shorter than the {HEADER.size}-byte header")
    version, kind, seq = HEADER.unpack_from(body)
    if version != PROTOCOL_VERSION:
        raise MessageError(f"version byte is {version}, this side speaks version {PROTOCOL_VERSION}")
    try:
        message_type = MessageType(kind)
    except ValueError:
        raise UnknownMessageType(f"type byte 0x{kind:02x} is not a known message type") from None
    return seq, _decode_payload(message_type, body[HEADER.size :])
