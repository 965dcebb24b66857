"""The tick log written by a child process, so that encoding it never competes with the loop for the GIL.

``TickLog`` spends about 60-160 us of Python per tick on JSON and MCAP framing. On the bridge's own
interpreter that time is taken from the loop's thread whenever it wants the interpreter lock, and at 1 kHz
it cost a tenth of the deadlines. ``TickLogProcess`` is the ``transitions.Consumer`` the bridge runs
instead: it packs each ``Transition`` into one flat float64 record (a few microseconds) and writes it to
a pipe; ``python -m firmware_bridge.tick_log_process`` reads the pipe, rebuilds the items and hands them to
``TickLog``, under the idle scheduling policy. The file is the same as ``TickLog`` writes in-process.

The stream is a sequence of frames: one kind byte, a little-endian uint32 length, the payload.
``I`` (first): JSON ``{"path", "run_info"}``; ``L``: JSON layout of the tick records that follow (array
lengths, extras names, timing channel names), sent again whenever it changes; ``T``: one packed tick;
``E``: one event as JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np

from firmware_bridge.state import RobotState
from firmware_bridge.transitions import Event, Transition

_FRAME = struct.Struct("<cI")
_TICK_HEADER = struct.Struct("<qqqqdd")
"""tick, missed, policy_version, faults, time, state timestamp."""
_ARRAYS = ("joint_pos", "joint_vel", "joint_current", "imu", "observation", "action", "command")


class TickCodec:
    """Packs transitions into flat records and back; ``layout`` describes the records of one run."""

    def __init__(self, layout: dict | None = None) -> None:
        self.layout = layout

    @staticmethod
    def layout_of(item: Transition) -> dict:
        state = item.state
        sizes = {
            "joint_pos": state.joint_pos.size,
            "joint_vel": state.joint_vel.size,
            "joint_current": state.joint_current.size,
            "imu": state.imu.size,
            "observation": item.observation.size,
            "action": item.action.size,
            "command": item.command.size,
        }
        return {"sizes": sizes, "extras": list(state.extras), "timings": list(item.timings_us)}

    def encode(self, item: Transition) -> bytes:
        state = item.state
        header = _TICK_HEADER.pack(
            item.tick, item.missed, item.policy_version, int(state.faults), item.time, state.timestamp
        )
        values = np.concatenate(
            (
                state.joint_pos,
                state.joint_vel,
                state.joint_current,
                state.imu,
                item.observation,
                item.action,
                item.command,
                np.fromiter(state.extras.values(), np.float64, len(state.extras)),
                np.fromiter(item.timings_us.values(), np.float64, len(item.timings_us)),
            ),
            dtype=np.float64,
        )
        return header + values.tobytes()

    def decode(self, record: bytes) -> Transition:
        if self.layout is None:
            raise ValueError("tick record before any layout frame")
        tick, missed, version, faults, time_s, timestamp = _TICK_HEADER.unpack_from(record)
        values = np.frombuffer(record, np.float64, offset=_TICK_HEADER.size)
        sizes, extras, timings = self.layout["sizes"], self.layout["extras"], self.layout["timings"]
        expected = sum(sizes.values()) + len(extras) + len(timings)
        if values.size != expected:
            raise ValueError(f"tick record holds {values.size} values, the layout says {expected}")
        parts = {}
        at = 0
        for name in _ARRAYS:
            parts[name] = values[at : at + sizes[name]].copy()
            at += sizes[name]
        extra_values = values[at : at + len(extras)].tolist()
        at += len(extras)
        state = RobotState(
            timestamp=timestamp,
            joint_pos=parts["joint_pos"],
            joint_vel=parts["joint_vel"],
            joint_current=parts["joint_current"],
            imu=parts["imu"],
            extras=dict(zip(extras, extra_values)),
            faults=faults,
        )
        return Transition(
            tick=tick,
            time=time_s,
            state=state,
            observation=parts["observation"].astype(np.float32),
            action=parts["action"].astype(np.float32),
            command=parts["command"],
            policy_version=version,
            timings_us=dict(zip(timings, values[at:].tolist())),
            missed=missed,
        )


def _frame(kind: bytes, payload: bytes) -> bytes:
    return _FRAME.pack(kind, len(payload)) + payload


class TickLogProcess:
    """A ``transitions.Consumer`` that hands every item to a ``TickLog`` in a child process."""

    def __init__(self, path: str | Path, run_info: dict[str, object]) -> None:
        self.path = Path(path)
        # Fail here, in the bridge, with the path in the message, not later in the child.
        self.path.open("wb").close()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge.tick_log_process"],
            stdin=subprocess.PIPE,
            bufsize=0,
        )
        self._pipe = self._proc.stdin
        self._codec = TickCodec()
        init = {"path": str(self.path.resolve()), "run_info": run_info}
        self._write(_frame(b"I", json.dumps(init).encode()))

    def handle(self, item: Transition | Event) -> None:
        if isinstance(item, Event):
            event = {"time": item.time, "kind": item.kind, "detail": item.detail, "data": item.data}
            self._write(_frame(b"E", json.dumps(event, allow_nan=True).encode()))
            return
        layout = TickCodec.layout_of(item)
        if layout != self._codec.layout:
            self._codec.layout = layout
            self._write(_frame(b"L", json.dumps(layout).encode()))
        self._write(_frame(b"T", self._codec.encode(item)))

    def _write(self, data: bytes) -> None:
        while data:  # a signal (the bridge's Ctrl-C) can cut a blocking pipe write short
            data = data[self._pipe.write(data) :]

    def hurry(self) -> None:
        """Move the writer from the idle scheduling class to the normal one, for draining once the loop is over.

        Leaving SCHED_IDLE needs CAP_SYS_NICE or a RLIMIT_NICE allowance; without them the writer keeps
        draining at idle priority (the sink waits while it makes progress).
        """
        if hasattr(os, "SCHED_IDLE"):
            with contextlib.suppress(PermissionError, ProcessLookupError):
                os.sched_setscheduler(self._proc.pid, os.SCHED_OTHER, os.sched_param(0))

    def close(self) -> None:
        try:
            self._pipe.close()
        except BrokenPipeError:
            pass
        code = self._proc.wait()
        if code != 0:
            raise RuntimeError(f"tick log writer for {self.path} exited with status {code}")


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    if not data:
        return None
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            raise EOFError(f"stream ended inside a frame ({len(data)} of {n} bytes)")
        data += more
    return data


def serve(stream: BinaryIO) -> None:
    """The child's side: frames from ``stream`` into a ``TickLog`` until the stream ends."""
    from firmware_bridge.tick_log import TickLog

    codec = TickCodec()
    log: TickLog | None = None
    try:
        while (head := _read_exact(stream, _FRAME.size)) is not None:
            kind, length = _FRAME.unpack(head)
            payload = _read_exact(stream, length) or b""
            if kind == b"I":
                init = json.loads(payload)
                log = TickLog(init["path"], init["run_info"])
            elif log is None:
                raise ValueError(f"frame {kind!r} before the init frame")
            elif kind == b"L":
                codec.layout = json.loads(payload)
            elif kind == b"T":
                log.handle(codec.decode(payload))
            elif kind == b"E":
                log.handle(Event(**json.loads(payload)))
            else:
                raise ValueError(f"unknown frame kind {kind!r}")
    finally:
        if log is not None:
            log.close()


def main() -> None:
    # Ctrl-C reaches the whole process group, and so does a service manager's SIGTERM (systemd's default
    # KillMode=control-group): the bridge handles both and then closes the pipe, which is what ends the writer,
    # after the last tick and the safe-stop events are in the file. A bridge killed outright closes it too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # SCHED_IDLE: the writer only gets a CPU that nothing else wants, so it is never what a waking loop has
    # to preempt (at 1 kHz on two cores its p99 period error was 23-58 us this way, 167-217 us at nice 10).
    # It also replaces the SCHED_FIFO a real-time bridge's children inherit. A machine busy on every core
    # starves the writer: the pipe and the sink's queue fill, and ticks are dropped and counted, not waited for.
    # Once the loop is over the bridge moves it back to the normal class (``hurry``) to drain what is queued.
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(19)
    serve(sys.stdin.buffer)


if __name__ == "__main__":
    main()
