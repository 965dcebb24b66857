"""The tick log: every tick of ``firmware-bridge run`` in an MCAP file, and the reader ``log-summary`` uses.

Messages are JSON with a JSON Schema per topic (MCAP's ``json`` /
``jsonschema`` encodings), which Foxglove and the ``mcap`` CLI open without
plugins. One message per topic per tick, ``log_time`` on the Unix clock:

- ``/state``: the ``RobotState`` the observation was built from;
- ``/observation``, ``/action`` (policy output in [-1, 1]), ``/command``
  (joint targets [rad]): ``{"values": [...]}``;
- ``/timing``: tick index, deadlines missed before it, policy version and
  the per-tick timings of ``timing.TIMING_CHANNELS`` in microseconds;
- ``/events``: phase changes, policy swaps, safety stops, the final summary.

A ``run`` metadata record holds the robot, joint and feature names, the
policy, the rate and the real-time settings.

``TickLog`` is a ``transitions.Consumer``. ``firmware-bridge run`` runs it in a
child process (``tick_log_process``), never on the loop's thread or interpreter.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mcap.reader import make_reader
from mcap.writer import Writer

from firmware_bridge.timing import TIMING_CHANNELS, clock
from firmware_bridge.transitions import Event, Transition

_NUMBERS = {"type": "array", "items": {"type": "number"}}
_VALUES = {"type": "object", "properties": {"values": _NUMBERS}}
SCHEMAS: dict[str, tuple[str, dict]] = {
    "/state": (
        "robot_sac.RobotState",
        {
            "type": "object",
            "properties": {
                "timestamp": {"type": "number", "description": "seconds on the motor board's clock"},
                "joint_pos": _NUMBERS,
                "joint_vel": _NUMBERS,
                "joint_current": _NUMBERS,
                "imu": _NUMBERS,
                "extras": {"type": "object", "additionalProperties": {"type": "number"}},
                "faults": {"type": "integer"},
            },
        },
    ),
    "/observation": ("robot_sac.Observation", _VALUES),
    "/action": ("robot_sac.PolicyAction", _VALUES),
    "/command": ("robot_sac.JointTargets", _VALUES),
    "/timing": (
        "robot_sac.TickTiming",
        {
            "type": "object",
            "properties": {
                "tick": {"type": "integer"},
                "missed": {"type": "integer"},
                "policy_version": {"type": "integer"},
                **{f"{name}_us": {"type": "number"} for name in TIMING_CHANNELS},
            },
        },
    ),
    "/events": (
        "robot_sac.Event",
        {
            "type": "object",
            "properties": {"kind": {"type": "string"}, "detail": {"type": "string"}, "data": {"type": "object"}},
        },
    ),
}


CHUNK_BYTES = 64 * 1024


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()


class TickLog:
    """Writes ``Transition`` and ``Event`` items to an MCAP file; ``run_info`` goes into the ``run`` metadata."""

    def __init__(self, path: str | Path, run_info: dict[str, object]) -> None:
        self.path = Path(path)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close(), from the sink's thread
        # Closing a chunk compresses it with the interpreter lock held (python-zstandard keeps the GIL): 17 ms
        # here for the default 1 MiB chunk, a stall the loop's thread would sit through; 0.5 ms for 64 KiB.
        self._writer = Writer(self._file, chunk_size=CHUNK_BYTES)
        self._writer.start(profile="", library="robot-sac firmware-bridge")
        self._channels = {}
        for topic, (name, schema) in SCHEMAS.items():
            schema_id = self._writer.register_schema(name=name, encoding="jsonschema", data=_dumps(schema))
            self._channels[topic] = self._writer.register_channel(
                topic=topic, message_encoding="json", schema_id=schema_id
            )
        self._writer.add_metadata("run", {key: json.dumps(value) for key, value in run_info.items()})
        # Loop-clock seconds -> Unix nanoseconds, fixed once so log times keep the loop clock's spacing.
        self._epoch_offset_ns = time.time_ns() - int(clock() * 1e9)
        self._sequence = 0

    def handle(self, item: Transition | Event) -> None:
        t = self._epoch_offset_ns + int(item.time * 1e9)
        if isinstance(item, Event):
            self._write("/events", t, {"kind": item.kind, "detail": item.detail, "data": item.data})
            return
        state = item.state
        self._write(
            "/state",
            t,
            {
                "timestamp": state.timestamp,
                "joint_pos": state.joint_pos.tolist(),
                "joint_vel": state.joint_vel.tolist(),
                "joint_current": state.joint_current.tolist(),
                "imu": state.imu.tolist(),
                "extras": state.extras,
                "faults": state.faults,
            },
        )
        self._write("/observation", t, {"values": item.observation.tolist()})
        self._write("/action", t, {"values": item.action.tolist()})
        self._write("/command", t, {"values": item.command.tolist()})
        timing = {"tick": item.tick, "missed": item.missed, "policy_version": item.policy_version}
        timing.update({f"{name}_us": value for name, value in item.timings_us.items()})
        self._write("/timing", t, timing)

    def _write(self, topic: str, log_time_ns: int, payload: dict) -> None:
        self._writer.add_message(
            channel_id=self._channels[topic],
            log_time=log_time_ns,
            publish_time=log_time_ns,
            data=_dumps(payload),
            sequence=self._sequence,
        )
        self._sequence += 1

    def close(self) -> None:
        try:
            self._writer.finish()
        finally:
            self._file.close()


class TickLogError(ValueError):
    """A file that is not a tick log (not MCAP, or missing the ``run`` metadata or the tick topics)."""


@dataclass
class TickLogData:
    """A tick log read back: per-tick arrays in tick order, events, and the run metadata."""

    run_info: dict[str, object]
    time_s: np.ndarray
    """(ticks,) seconds since the first tick."""
    joint_pos: np.ndarray
    """(ticks, joints) measured positions [rad]."""
    command: np.ndarray
    """(ticks, joints) commanded targets [rad]."""
    action: np.ndarray
    timings_us: dict[str, np.ndarray]
    missed: np.ndarray
    policy_version: np.ndarray
    events: list[dict] = field(default_factory=list)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    """Sensors beyond the joints by name (the claw's ``valve_angle`` [rad], ...): (ticks,), NaN where absent."""

    @property
    def ticks(self) -> int:
        return len(self.time_s)


def read_tick_log(path: str | Path) -> TickLogData:
    """Read a tick log written by ``TickLog``; raises ``TickLogError`` naming the file and what is wrong."""
    path = Path(path)
    per_topic: dict[str, list[tuple[int, dict]]] = {topic: [] for topic in SCHEMAS}
    run_info: dict[str, object] | None = None
    try:
        with open(path, "rb") as stream:
            reader = make_reader(stream)
            for record in reader.iter_metadata():
                if record.name == "run":
                    run_info = {key: json.loads(value) for key, value in record.metadata.items()}
            for _schema, channel, message in reader.iter_messages(log_time_order=True):
                if channel.topic in per_topic:
                    per_topic[channel.topic].append((message.log_time, json.loads(message.data)))
    except OSError as exc:
        raise TickLogError(f"{path}: cannot read: {exc}") from None
    except Exception as exc:  # the mcap reader raises several unrelated types on a damaged file
        raise TickLogError(f"{path}: not a readable MCAP file: {type(exc).__name__}: {exc}") from None
    if run_info is None:
        raise TickLogError(f"{path}: no 'run' metadata record: not a firmware-bridge tick log")
    ticks = per_topic["/timing"]
    for topic in ("/state", "/action", "/command"):
        if len(per_topic[topic]) != len(ticks):
            raise TickLogError(
                f"{path}: {len(per_topic[topic])} {topic} messages for {len(ticks)} /timing messages"
            )
    t0 = ticks[0][0] if ticks else 0
    n_joints = len(run_info.get("joint_names", [])) if isinstance(run_info.get("joint_names"), list) else 0

    def matrix(topic: str, key: str) -> np.ndarray:
        rows = [payload[key] for _, payload in per_topic[topic]]
        return np.array(rows, dtype=np.float64).reshape(len(rows), -1 if rows else n_joints)

    return TickLogData(
        run_info=run_info,
        time_s=np.array([(t - t0) * 1e-9 for t, _ in ticks]),
        joint_pos=matrix("/state", "joint_pos"),
        command=matrix("/command", "values"),
        action=matrix("/action", "values"),
        timings_us={
            name: np.array([payload.get(f"{name}_us", np.nan) for _, payload in ticks], dtype=np.float64)
            for name in TIMING_CHANNELS
        },
        missed=np.array([payload["missed"] for _, payload in ticks], dtype=np.int64),
        policy_version=np.array([payload["policy_version"] for _, payload in ticks], dtype=np.int64),
        events=[{"time_s": (t - t0) * 1e-9, **payload} for t, payload in per_topic["/events"]],
        extras=_extras(per_topic["/state"]),
    )


def _extras(states: list[tuple[int, dict]]) -> dict[str, np.ndarray]:
    names = dict.fromkeys(name for _, payload in states for name in payload.get("extras", {}))
    return {
        name: np.array([payload.get("extras", {}).get(name, np.nan) for _, payload in states], dtype=np.float64)
        for name in names
    }
