"""The robot <-> learner wire format: pure encode/decode, no sockets (``docs/learner_protocol.md``).

A message is a ZMQ multipart message: frame 0 is a msgpack header (a map with ``proto``, ``v``, ``type``
and the type's fields); for a transition batch the header lists its arrays as ``[name, dtype, shape]`` and
each following frame is one array's raw little-endian bytes, in that order; for a policy, frame 1 is the
ONNX file. Nothing is unpickled and nothing is allocated from a size a peer claims: every shape is checked
against the ``TransitionLayout`` of this robot before a buffer is read, and every frame's length against
its shape. Anything else raises ``WireError`` naming the field, which the receiver counts and drops.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgpack
import numpy as np

from firmware_bridge.state import IMU_FIELDS, RobotState

PROTOCOL = "robot-sac/learner"
VERSION = 1

MAX_HEADER_BYTES = 64 * 1024
"""A header is a few hundred bytes; anything near this is not ours."""
MAX_BATCH = 4096
"""Transitions in one batch (the robot sends tens; the bound keeps one message under a few MB)."""
MAX_EXTRAS = 32
MAX_GOALS = 16
MAX_PROBLEMS = 32
MAX_NAME = 64
MAX_POLICY_BYTES = 64 * 1024 * 1024
"""An actor is tens of kB to a few MB; the socket's maximum message size is set from this."""
ROBOT_ID_HELD_S = 5.0
"""A learner keeps a robot id for the spool that last spoke under it until that spool has been quiet this long;
a robot says hello at least twice within it, so a connected robot never loses its id."""

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

STATE_ARRAYS = ("joint_pos", "joint_vel", "joint_current", "imu", "extras")
"""The ``RobotState`` fields a transition carries, for the state before and after the action."""
FLAG_ARRAYS = ("time_limit", "safety_stop")


class MessageType(str, Enum):
    HELLO = "hello"
    """robot -> learner: who it is, where its spool stands, which policy it runs (also a heartbeat)."""
    TRANSITIONS = "transitions"
    """robot -> learner: a batch of consecutive sequence numbers."""
    ACK = "ack"
    """learner -> robot: what was received (stop resending) and what is durable (delete from the spool)."""
    POLICY = "policy"
    """learner -> robot: an ONNX actor with its version and sha256."""
    POLICY_RESULT = "policy_result"
    """robot -> learner: the policy was swapped in, or refused and why."""


class WireError(ValueError):
    """A message that does not decode; ``field`` names what was wrong."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class TransitionLayout:
    """The arrays of one transition batch for one robot and task: ``{name: (dtype, width)}``, in order."""

    obs_dim: int
    act_dim: int
    num_joints: int

    def arrays(self, n_extras: int) -> list[tuple[str, str, int]]:
        """``[(name, dtype, width)]``; every array has shape ``[count, width]`` except 1-d ones (width 0)."""
        a, j = self.act_dim, self.num_joints
        out = [("obs", "float32", self.obs_dim), ("action", "float32", a), ("prev_action", "float32", a),
               ("next_obs", "float32", self.obs_dim)]
        for prefix in ("state", "next_state"):
            out += [(f"{prefix}.joint_pos", "float32", j), (f"{prefix}.joint_vel", "float32", j),
                    (f"{prefix}.joint_current", "float32", j), (f"{prefix}.imu", "float32", len(IMU_FIELDS)),
                    (f"{prefix}.extras", "float32", n_extras)]
        out += [("dt", "float32", 0), ("policy_version", "int32", 0), ("time_limit", "uint8", 0),
                ("safety_stop", "uint8", 0)]
        return out


@dataclass(frozen=True)
class Hello:
    robot: str
    spool: str
    """The spool's random id: a robot whose disk was wiped starts a new sequence, not a duplicate one."""
    next_seq: int
    lowest_held: int
    """The oldest sequence number still in the spool (``next_seq`` when it is empty)."""
    policy_version: int
    policy_sha256: str
    interface_hash: str
    """``ObservationBuilder.interface_hash()`` of the robot and task: the learner refuses another layout."""
    task: str


@dataclass(frozen=True)
class TransitionBatch:
    robot: str
    spool: str
    first_seq: int
    lowest_held: int
    interface_hash: str
    goals: dict[str, float]
    extras: list[str]
    """Names of the columns of ``state.extras`` / ``next_state.extras``."""
    arrays: dict[str, np.ndarray]
    run: str = ""
    """The robot program's run that recorded these rows (random per start; "" from robots before it existed): a
    run that died cannot flag its last episode's end, so the next run's rows must not continue it."""

    @property
    def count(self) -> int:
        return int(self.arrays["obs"].shape[0])

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1

    def state(self, prefix: str, i: int) -> RobotState:
        """Row ``i`` of ``state`` or ``next_state`` as a ``RobotState`` (float64, as the reward code expects)."""
        arr = self.arrays
        return RobotState(
            timestamp=0.0,
            joint_pos=arr[f"{prefix}.joint_pos"][i],
            joint_vel=arr[f"{prefix}.joint_vel"][i],
            joint_current=arr[f"{prefix}.joint_current"][i],
            imu=arr[f"{prefix}.imu"][i],
            extras={name: float(v) for name, v in zip(self.extras, arr[f"{prefix}.extras"][i])},
        )


@dataclass(frozen=True)
class Ack:
    robot: str
    spool: str
    received: int
    """Highest sequence number the learner holds with nothing missing below it (-1: none)."""
    durable: int
    """Highest sequence number in the learner's last checkpoint: the robot may forget up to here."""
    gap: bool = False
    """True when the batch started above ``received + 1`` and the robot still holds what is missing: resend
    from ``received + 1``."""


@dataclass(frozen=True)
class PolicyMessage:
    version: int
    sha256: str
    data: bytes


@dataclass(frozen=True)
class PolicyResult:
    robot: str
    version: int
    sha256: str
    accepted: bool
    problems: list[str] = field(default_factory=list)



# -- encoding ---------------------------------------------------------------------------------------


def _header(kind: MessageType, **fields: Any) -> bytes:
    return msgpack.packb({"proto": PROTOCOL, "v": VERSION, "type": kind.value, **fields}, use_bin_type=True)


def encode_hello(m: Hello) -> list[bytes]:
    return [_header(MessageType.HELLO, **m.__dict__)]


def encode_ack(m: Ack) -> list[bytes]:
    return [_header(MessageType.ACK, **m.__dict__)]


def encode_policy_result(m: PolicyResult) -> list[bytes]:
    return [_header(MessageType.POLICY_RESULT, **m.__dict__)]


def encode_policy(version: int, data: bytes) -> list[bytes]:
    sha = hashlib.sha256(data).hexdigest()
    return [_header(MessageType.POLICY, version=int(version), sha256=sha, size=len(data)), bytes(data)]


def encode_transitions(m: TransitionBatch, layout: TransitionLayout) -> list[bytes | memoryview]:
    """Header + one frame per array; arrays are converted to the layout's dtype and checked for shape."""
    n = m.count
    specs, frames = [], []
    for name, dtype, width in layout.arrays(len(m.extras)):
        if name not in m.arrays:
            raise ValueError(f"transition batch: array {name!r} missing")
        arr = np.ascontiguousarray(m.arrays[name], dtype=np.dtype(dtype).newbyteorder("<"))
        shape = (n, width) if width else (n,)
        if arr.shape != shape:
            raise ValueError(f"transition batch: array {name!r} has shape {arr.shape}, expected {shape}")
        specs.append([name, dtype, list(shape)])
        frames.append(memoryview(arr).cast("B"))
    header = _header(
        MessageType.TRANSITIONS, robot=m.robot, spool=m.spool, first_seq=int(m.first_seq),
        lowest_held=int(m.lowest_held), interface_hash=m.interface_hash,
        goals={k: float(v) for k, v in m.goals.items()}, extras=list(m.extras), arrays=specs,
        **({"run": m.run} if m.run else {}),
    )
    return [header, *frames]


def with_lowest_held(frames: list[bytes], lowest_held: int) -> list[bytes]:
    """The same transition message with ``lowest_held`` updated (the spool's oldest changes after writing)."""
    header = msgpack.unpackb(frames[0], raw=False)
    header["lowest_held"] = int(lowest_held)
    return [msgpack.packb(header, use_bin_type=True), *frames[1:]]


# -- decoding ---------------------------------------------------------------------------------------


def _get(header: dict, key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in header:
        raise WireError(key, "missing from the header")
    value = header[key]
    if isinstance(value, bool) and kind is int:
        raise WireError(key, f"expected an integer, got {value!r}")
    if not isinstance(value, kind):
        raise WireError(key, f"expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _name(header: dict, key: str) -> str:
    value = _get(header, key, str)
    if not _NAME.match(value):
        raise WireError(key, f"{value[:80]!r} is not 1-{MAX_NAME} characters of [A-Za-z0-9_.:-]")
    return value


def _seq(header: dict, key: str, lowest: int = 0) -> int:
    value = _get(header, key, int)
    if not lowest <= value < 2**62:
        raise WireError(key, f"{value} out of range [{lowest}, 2**62)")
    return value


def _sha(header: dict, key: str, allow_empty: bool = False) -> str:
    value = _get(header, key, str)
    if not (_HEX64.match(value) or (allow_empty and value == "")):
        raise WireError(key, f"{value[:80]!r} is not a lowercase hex sha256")
    return value


def _float_map(header: dict, key: str, limit: int) -> dict[str, float]:
    value = _get(header, key, dict)
    if len(value) > limit:
        raise WireError(key, f"{len(value)} entries, at most {limit}")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not _NAME.match(k):
            raise WireError(key, f"name {k!r:.80} is not 1-{MAX_NAME} characters of [A-Za-z0-9_.:-]")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise WireError(f"{key}.{k}", f"expected a number, got {type(v).__name__}")
        if not math.isfinite(v):  # a goal of NaN would score every reward NaN and poison the critics
            raise WireError(f"{key}.{k}", f"expected a finite number, got {v}")
        out[k] = float(v)
    return out


def parse_header(frames: list[bytes]) -> tuple[MessageType, dict]:
    if not frames:
        raise WireError("frames", "empty message")
    raw = frames[0]
    if len(raw) > MAX_HEADER_BYTES:
        raise WireError("header", f"{len(raw)} bytes, at most {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(bytes(raw), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise WireError("header", f"not msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise WireError("header", f"expected a map, got {type(header).__name__}")
    if header.get("proto") != PROTOCOL:
        raise WireError("proto", f"{header.get('proto')!r:.80}, expected {PROTOCOL!r}")
    if header.get("v") != VERSION:
        raise WireError("v", f"protocol version {header.get('v')!r:.20}, this side speaks {VERSION}")
    try:
        kind = MessageType(header.get("type"))
    except ValueError:
        raise WireError("type", f"unknown message type {header.get('type')!r:.80}") from None
    return kind, header


def decode_hello(header: dict) -> Hello:
    return Hello(
        robot=_name(header, "robot"), spool=_name(header, "spool"), next_seq=_seq(header, "next_seq"),
        lowest_held=_seq(header, "lowest_held"), policy_version=_seq(header, "policy_version"),
        policy_sha256=_sha(header, "policy_sha256", allow_empty=True),
        interface_hash=_sha(header, "interface_hash"), task=_name(header, "task"),
    )


def decode_ack(header: dict) -> Ack:
    return Ack(robot=_name(header, "robot"), spool=_name(header, "spool"), received=_seq(header, "received", -1),
               durable=_seq(header, "durable", -1), gap=bool(_get(header, "gap", bool)))


def decode_policy_result(header: dict) -> PolicyResult:
    problems = _get(header, "problems", list)
    if len(problems) > MAX_PROBLEMS or not all(isinstance(p, str) for p in problems):
        raise WireError("problems", f"expected at most {MAX_PROBLEMS} strings")
    return PolicyResult(robot=_name(header, "robot"), version=_seq(header, "version"),
                        sha256=_sha(header, "sha256"), accepted=bool(_get(header, "accepted", bool)),
                        problems=[p[:2000] for p in problems])


def decode_policy(header: dict, frames: list[bytes], max_bytes: int = MAX_POLICY_BYTES) -> PolicyMessage:
    """The ONNX bytes and what the header claims; the sha256 is checked by the receiver (it reports it)."""
    size = _seq(header, "size")
    if size > max_bytes:
        raise WireError("size", f"{size} bytes, at most {max_bytes}")
    if len(frames) != 2:
        raise WireError("frames", f"a policy is 2 frames (header, ONNX bytes), got {len(frames)}")
    if len(frames[1]) != size:
        raise WireError("size", f"header says {size} bytes, the frame holds {len(frames[1])}")
    return PolicyMessage(version=_seq(header, "version"), sha256=_sha(header, "sha256"), data=bytes(frames[1]))


def decode_transitions(header: dict, frames: list[bytes], layout: TransitionLayout) -> TransitionBatch:
    """Check every declared array against ``layout`` (names, order, dtype, shape, byte length), then view
    the frames as numpy arrays (read-only, no copy)."""
    extras = _get(header, "extras", list)
    if len(extras) > MAX_EXTRAS:
        raise WireError("extras", f"{len(extras)} names, at most {MAX_EXTRAS}")
    for name in extras:
        if not isinstance(name, str) or not _NAME.match(name):
            raise WireError("extras", f"name {name!r:.80} is not 1-{MAX_NAME} characters of [A-Za-z0-9_.:-]")
    if len(set(extras)) != len(extras):
        raise WireError("extras", "a name is listed twice")
    expected = layout.arrays(len(extras))
    specs = _get(header, "arrays", list)
    if len(specs) != len(expected):
        raise WireError("arrays", f"{len(specs)} arrays declared, this robot's layout has {len(expected)}")
    if len(frames) != 1 + len(expected):
        raise WireError("frames", f"{len(frames)} frames, expected 1 header + {len(expected)} arrays")
    count = None
    arrays = {}
    for i, ((name, dtype, width), spec, frame) in enumerate(zip(expected, specs, frames[1:])):
        if not (isinstance(spec, list) and len(spec) == 3):
            raise WireError(f"arrays[{i}]", "expected [name, dtype, shape]")
        got_name, got_dtype, shape = spec
        if got_name != name:
            raise WireError(f"arrays[{i}]", f"name {got_name!r:.80}, expected {name!r}")
        if got_dtype != dtype:
            raise WireError(f"arrays[{i}] ({name})", f"dtype {got_dtype!r:.20}, expected {dtype}")
        if not (isinstance(shape, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in shape)):
            raise WireError(f"arrays[{i}] ({name})", f"shape {shape!r:.80} is not a list of integers")
        n = shape[0] if shape else -1
        if not 1 <= n <= MAX_BATCH:
            raise WireError(f"arrays[{i}] ({name})", f"batch size {n} outside [1, {MAX_BATCH}]")
        if count is None:
            count = n
        want = [count, width] if width else [count]
        if shape != want:
            raise WireError(f"arrays[{i}] ({name})", f"shape {shape}, expected {want} for this robot")
        itemsize = np.dtype(dtype).itemsize
        nbytes = count * max(width, 1) * itemsize
        if len(frame) != nbytes:
            raise WireError(f"arrays[{i}] ({name})", f"{len(frame)} bytes, shape {want} needs {nbytes}")
        arrays[name] = np.frombuffer(frame, dtype=np.dtype(dtype).newbyteorder("<")).reshape(want)
    return TransitionBatch(
        robot=_name(header, "robot"), spool=_name(header, "spool"), first_seq=_seq(header, "first_seq"),
        lowest_held=_seq(header, "lowest_held"), interface_hash=_sha(header, "interface_hash"),
        goals=_float_map(header, "goals", MAX_GOALS), extras=list(extras), arrays=arrays,
        run=_name(header, "run") if "run" in header else "",
    )
