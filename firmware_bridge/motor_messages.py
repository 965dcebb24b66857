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
DISARM_BODY = struct.Struct("<B")
INFO_HEAD = struct.Struct("<BBBB")  # firmware major, minor, patch, motor count

COMMAND_SCALES = {"position": POSITION_SCALE, "kp": KP_SCALE, "kd": KD_SCALE, "torque": TORQUE_SCALE}
STATE_SCALES = {"position": POSITION_SCALE, "velocity": VELOCITY_SCALE, "current": CURRENT_SCALE}
IMU_SCALES = (ORIENTATION_SCALE,) * 3 + (GYRO_SCALE,) * 3


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


def _to_fixed(values: np.ndarray, scale: float, dtype: np.dtype, field: str, saturate: bool) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise MessageError(f"{field}[{bad}]: not finite ({values[bad]})")
    counts = np.rint(values / scale)
    info = np.iinfo(dtype)
    if saturate:
        counts = np.clip(counts, info.min, info.max)
    else:
        out = np.flatnonzero((counts < info.min) | (counts > info.max))
        if out.size:
            i = int(out[0])
            raise MessageError(
                f"{field}[{i}]: {values[i]} is outside the encodable range "
                f"[{info.min * scale:g}, {info.max * scale:g}]"
            )
    return counts.astype(dtype)


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
    if isinstance(msg, Command):
        n = _motor_count(msg.position, msg.kp, msg.kd, msg.torque, names=("position", "kp", "kd", "torque"))
        records = np.zeros(n, COMMAND_MOTOR)
        for field, scale in COMMAND_SCALES.items():
            records[field] = _to_fixed(getattr(msg, field), scale, COMMAND_MOTOR[field], field, saturate=False)
        return COMMAND_HEAD.pack(int(msg.flags), n) + records.tobytes()
    if isinstance(msg, State):
        n = _motor_count(msg.position, msg.velocity, msg.current, msg.status,
                         names=("position", "velocity", "current", "status"))
        records = np.zeros(n, STATE_MOTOR)
        # Sensors saturate at the ends of their range, as board firmware would, instead of failing a tick.
        for field, scale in STATE_SCALES.items():
            records[field] = _to_fixed(getattr(msg, field), scale, STATE_MOTOR[field], field, saturate=True)
        records["status"] = msg.status
        imu_values = np.concatenate([msg.orientation, msg.gyro]).astype(np.float64)
        if imu_values.size != 6:
            raise MessageError(f"imu: expected 3 orientation and 3 gyro values, got {imu_values.size}")
        imu = [int(_to_fixed([v], s, np.dtype("<i2"), "imu", saturate=True)[0]) for v, s in zip(imu_values, IMU_SCALES)]
        head = STATE_HEAD.pack(msg.board_time_us & 0xFFFFFFFF, msg.last_command_seq & 0xFFFF, int(msg.mode),
                               int(msg.faults), n)
        return head + IMU.pack(*imu) + records.tobytes()
    if isinstance(msg, Disarm):
        return DISARM_BODY.pack(int(msg.mode))
    if isinstance(msg, Info):
        n = _motor_count(np.array(msg.motor_ids), np.array(msg.motor_models), names=("motor_ids", "motor_models"))
        records = np.zeros(n, INFO_MOTOR)
        records["id"] = msg.motor_ids
        records["model"] = msg.motor_models
        return INFO_HEAD.pack(*msg.firmware, n) + records.tobytes()
    return b""


def encode_body(msg: Message, seq: int) -> bytes:
    """Header + payload for ``msg`` with sequence number ``seq`` (mod 2**16)."""
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
        rec = _records(payload, head, n, COMMAND_MOTOR, "COMMAND")
        scaled = {f: rec[f].astype(np.float64) * s for f, s in COMMAND_SCALES.items()}
        return Command(flags=CommandFlags(flags), **scaled)
    if kind is MessageType.STATE:
        head = STATE_HEAD.size + IMU.size
        if len(payload) < head:
            raise MessageError(f"STATE: payload is {len(payload)} bytes, shorter than its {head}-byte head")
        time_us, last_seq, mode, faults, n = STATE_HEAD.unpack_from(payload)
        imu = np.array(IMU.unpack_from(payload, STATE_HEAD.size), dtype=np.float64) * np.array(IMU_SCALES)
        rec = _records(payload, head, n, STATE_MOTOR, "STATE")
        try:
            board_mode = BoardMode(mode)
        except ValueError:
            raise MessageError(f"STATE: mode byte {mode} is not one of {[m.value for m in BoardMode]}") from None
        return State(
            board_time_us=time_us, last_command_seq=last_seq, mode=board_mode, faults=FaultFlags(faults),
            status=rec["status"].copy(), orientation=imu[0:3], gyro=imu[3:6],
            **{f: rec[f].astype(np.float64) * s for f, s in STATE_SCALES.items()},
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
