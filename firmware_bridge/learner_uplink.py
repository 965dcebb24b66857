"""The robot's link to the off-board learner: a ``TransitionSink`` with its own thread.

The control loop ``offer``s every tick and event (never blocking: a full queue drops and counts). The
uplink's thread pairs consecutive ticks into transitions (observation, action, next observation, the
``RobotState`` before and after, the previous action, episode-boundary flags), seals them into numbered
batches in the on-disk ``Spool``, sends them over one DEALER socket (at most ``window`` batches
unacknowledged), and forgets a batch only when the learner says it is in a checkpoint. A learner that is
down costs nothing but spool space; when it answers again, whatever it has not got is sent again.

Policies come back on the same socket: the sha256 is checked, then ``PolicyRuntime`` checks the file
against this robot's spec and task; a good one is handed to ``swap`` (``ControlLoop.swap_policy``, which
takes effect at the next tick), a bad one is refused, counted and reported to the learner, and the running
policy keeps running. The socket is owned by this one thread (ZMQ sockets are not thread-safe).
"""

from __future__ import annotations

import hashlib
import queue
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from firmware_bridge import curve_keys
from firmware_bridge.learner_spool import Spool, SpoolError
from firmware_bridge.learner_wire import (
    MAX_BATCH,
    MAX_HEADER_BYTES,
    MAX_POLICY_BYTES,
    ROBOT_ID_HELD_S,
    Hello,
    MessageType,
    PolicyResult,
    TransitionBatch,
    TransitionLayout,
    WireError,
    decode_ack,
    decode_policy,
    encode_hello,
    encode_policy_result,
    encode_transitions,
    parse_header,
    with_lowest_held,
)
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.policy_runtime import PolicyRejectedError, PolicyRuntime
from firmware_bridge.transitions import Event, Transition

Swap = Callable[[PolicyRuntime, int], None]

# Loop events that end an episode, and the flag the last transition before them gets. "policy" starts the
# policy phase (a new episode begins; nothing before it was a policy transition).
SAFETY_EVENTS = ("safety_stop",)
END_EVENTS = ("safe_state", "safe_stop_failed", "summary")
START_EVENTS = ("policy", "armed")


@dataclass(frozen=True)
class UplinkConfig:
    endpoint: str
    """The learner's address, e.g. ``tcp://gpu-box:5555``."""
    robot_id: str
    """Unique per robot; the learner keeps sequence numbers and statistics per id."""
    spool_dir: Path
    keys_dir: Path | None = None
    """CURVE keys (``robot-sac keys``); None sends in the clear."""
    client_name: str = "client"
    """Which key pair under ``keys_dir/clients`` is this robot's."""
    batch_size: int = 64
    """Transitions per batch (a batch is also sealed after ``flush_s``)."""
    flush_s: float = 0.5
    window: int = 8
    """Batches sent and not yet acknowledged as received, at most."""
    resend_after_s: float = 2.0
    """No acknowledgement for this long: send again from the first unacknowledged transition."""
    heartbeat_s: float = 1.0
    """A hello this often, so a restarted learner learns of the robot (and of its policy) without data."""
    spool_max_bytes: int = 256 * 1024 * 1024
    spool_fsync: bool = True
    queue_capacity: int = 8192
    close_timeout_s: float = 2.0
    """At close, wait this long for the learner to take what is left (the spool keeps the rest)."""

    def __post_init__(self) -> None:
        if not re.match(r"^(tcp|ipc)://\S+$", self.endpoint):
            raise ValueError(f"learner address {self.endpoint!r}: expected tcp://HOST:PORT (or ipc://PATH)")
        if not re.match(r"^[A-Za-z0-9_.:-]{1,64}$", self.robot_id):
            raise ValueError(f"robot_id {self.robot_id!r}: use 1-64 characters of [A-Za-z0-9_.:-]")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size: {self.batch_size} outside [1, {MAX_BATCH}]")
        for key in ("flush_s", "resend_after_s", "heartbeat_s"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: must be positive, got {getattr(self, key)}")
        if self.heartbeat_s > ROBOT_ID_HELD_S / 2:
            raise ValueError(f"heartbeat_s: {self.heartbeat_s} s; at most {ROBOT_ID_HELD_S / 2:g} s, so that the "
                             f"learner, which holds a robot id for {ROBOT_ID_HELD_S:g} s after its last message, "
                             "keeps this robot's id")  # fmt: skip
        if self.window < 1:
            raise ValueError(f"window: must be at least 1, got {self.window}")


_CLOSE = object()


class LearnerUplink:
    """``offer`` from the loop; ``counters()`` and ``refusals`` for the report; ``close()`` at the end."""

    name = "learner"

    def __init__(
        self,
        config: UplinkConfig,
        builder: ObservationBuilder,
        policy: PolicyRuntime,
        swap: Swap | None = None,
        goals: dict[str, float] | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.config = config
        self.builder = builder
        self.spec = builder.robot_spec
        self.task = builder.task
        self.goals = builder.new_history(goals).goals
        self.interface_hash = builder.interface_hash()
        self.run_id = secrets.token_hex(8)
        """Marks this run's batches: the learner ends an episode the previous run left open (it died)."""
        self.layout = TransitionLayout(builder.dim, self.spec.num_joints, self.spec.num_joints)
        self.swap = swap
        self._swap_lock = threading.Lock()
        self._held: tuple[PolicyRuntime, int] | None = None
        """A policy accepted before ``attach``: the loop did not exist yet."""
        self.policy_version = policy.version
        self.policy_sha256 = policy.sha256
        # Read now, so a missing key file stops the command before the robot moves.
        self._keys = curve_keys.client_keys(config.keys_dir, config.client_name) if config.keys_dir else None
        self.spool = Spool(config.spool_dir, config.spool_max_bytes, config.spool_fsync)
        self.set_aside: dict[str, int] = self._set_aside_foreign_batches()
        """Transitions moved out of the spool at start, by the folder (under the spool) they went to."""
        self.refusals: list[tuple[int, list[str]]] = []
        """(version, problems) of every policy refused."""
        self.swaps: list[tuple[int, float]] = []
        """(version, time.monotonic() of the hand-over) of every policy accepted."""
        self.error: BaseException | None = None
        self._counts = dict.fromkeys(
            ("offered", "dropped", "transitions", "stale_states", "sent", "resent", "acked", "rewinds",
             "bad_messages", "policies_received", "policies_accepted", "policies_refused"), 0)  # fmt: skip
        self._queue: queue.Queue = queue.Queue(maxsize=config.queue_capacity)
        self._context = context or zmq.Context.instance()
        # Pairing ticks into transitions (uplink thread only).
        self._prev: Transition | None = None
        self._prev_action: np.ndarray | None = None
        self._pending: dict | None = None
        self._rows: list[dict] = []
        self._rows_since = 0.0
        # Sending state (uplink thread only).
        self._cursor = self.spool.lowest_held
        """Next sequence number to send."""
        self._max_sent = self._cursor - 1
        self._received = -1
        """Highest number the learner said it holds with nothing missing below."""
        self._in_flight: deque[tuple[int, float]] = deque()  # (last seq of a sent batch, when sent)
        self._heard_from_learner = False
        """Whether an acknowledgement has come since start: till then (or ``resend_after_s``) nothing is sent, so
        a restarted robot does not resend what the learner already holds."""
        self._started = time.monotonic()
        self._last_rewind: tuple[int, float] = (-2, -float("inf"))
        """(the number acknowledged, when) of the latest rewind on an acknowledgement."""
        self._thread = threading.Thread(target=self._work, name="learner-uplink", daemon=True)
        self._thread.start()

    def _set_aside_foreign_batches(self) -> dict[str, int]:
        """Batches an earlier run left unacknowledged under another observation interface (the robot spec or
        task has changed since), or that cannot be read back: no learner of this run takes them, and sent first
        they would hold back every batch after them (the learner answers each with a gap). They go to a folder
        of the spool named for their interface; the learner counts their numbers as lost."""
        moved: dict[str, int] = {}
        for first in self.spool.batches():
            try:
                _, header = parse_header(self.spool.read(first))
                interface = str(header.get("interface_hash"))
            except (SpoolError, WireError):
                interface = None
            if interface == self.interface_hash:
                continue
            folder = "unreadable" if interface is None else f"interface-{interface[:12]}"
            moved[folder] = moved.get(folder, 0) + self.spool.set_aside(first, folder)
        return moved

    # -- the loop's side --------------------------------------------------------------------------

    def attach(self, swap: Swap) -> None:
        """Hand accepted policies to ``swap`` from now on (and the one accepted before, if any)."""
        with self._swap_lock:
            self.swap = swap
            if self._held is not None:
                swap(*self._held)
                self._held = None

    def offer(self, item: Transition | Event) -> bool:
        self._counts["offered"] += 1
        if self.error is not None:
            self._counts["dropped"] += 1
            return False
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._counts["dropped"] += 1
            return False
        return True

    def close(self) -> None:
        """Seal what is pending, give the learner ``close_timeout_s`` to take it, stop the thread."""
        if self._thread.is_alive():
            try:  # timed: a thread stuck with a full queue must not hold the bridge's exit
                self._queue.put(_CLOSE, timeout=self.config.close_timeout_s + 5.0)
            except queue.Full:
                raise TimeoutError("learner uplink: thread stuck, its queue stayed full at close") from None
            self._thread.join(self.config.close_timeout_s + 5.0)
            if self._thread.is_alive():
                raise TimeoutError("learner uplink: thread still running after close")
        if self.error is not None:
            raise RuntimeError(f"learner uplink failed: {self.error}") from self.error

    def counters(self) -> dict[str, int]:
        return {**self._counts, "spool_held": self.spool.held, "spool_dropped": self.spool.dropped,
                "spool_set_aside": sum(self.set_aside.values()), "policy_version": self.policy_version}  # fmt: skip

    # -- the uplink thread --------------------------------------------------------------------------

    def _socket(self) -> zmq.Socket:
        sock = self._context.socket(zmq.DEALER)
        sock.linger = 0
        # Queue only on a live connection: while the learner is away, the spool is the queue.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.sndhwm = self.config.window + 4
        sock.maxmsgsize = MAX_POLICY_BYTES + MAX_HEADER_BYTES
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        if self._keys is not None:
            curve_keys.configure_client(sock, self._keys)
        sock.connect(self.config.endpoint)
        return sock

    def _work(self) -> None:
        sock = None
        try:
            sock = self._socket()
            closing_since = None
            next_hello = 0.0
            while True:
                closing = closing_since is not None
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _CLOSE:
                        closing_since = time.monotonic()
                        self._end_episode(None)
                        break
                    self._take(item)
                now = time.monotonic()
                while self._rows and (
                    len(self._rows) >= self.config.batch_size
                    or now - self._rows_since >= self.config.flush_s
                    or closing
                ):
                    self._seal()
                while sock.poll(0):
                    self._receive(sock)
                if now >= next_hello:
                    self._send_hello(sock)
                    next_hello = now + self.config.heartbeat_s
                self._resend_if_silent(now)
                self._send(sock, now)
                if closing and (
                    self._received >= self.spool.next_seq - 1 or now - closing_since > self.config.close_timeout_s
                ):
                    break
                sock.poll(10)
        except BaseException as exc:  # noqa: BLE001 - kept for close(); the loop must never see it
            self.error = exc
        finally:
            if sock is not None:
                sock.close(linger=0)

    # Pairing ticks into transitions.

    def _take(self, item: Transition | Event) -> None:
        if isinstance(item, Event):
            if item.kind in SAFETY_EVENTS:
                self._end_episode("safety_stop")
            elif item.kind in END_EVENTS:
                self._end_episode("time_limit")
            elif item.kind in START_EVENTS:
                self._end_episode(None)
            return
        prev = self._prev
        if prev is not None:
            if item.state.timestamp == prev.state.timestamp:
                # This tick ran on the state before (its reply was late, or the board sent the same sample): it
                # saw nothing of what prev's action did, so that pair is no transition. The next pair spans both
                # ticks' time (its dt says so).
                self._counts["stale_states"] += 1
            else:
                self._flush_pending(None)
                self._pending = self._row(prev, item)
            self._prev_action = prev.action
        self._prev = item

    def _row(self, prev: Transition, cur: Transition) -> dict:
        zeros = np.zeros(self.spec.num_joints, dtype=np.float32)
        return {
            "obs": prev.observation, "action": prev.action, "next_obs": cur.observation,
            "prev_action": self._prev_action if self._prev_action is not None else zeros,
            "state": prev.state, "next_state": cur.state,
            "dt": cur.state.timestamp - prev.state.timestamp, "policy_version": prev.policy_version,
        }  # fmt: skip

    def _end_episode(self, flag: str | None) -> None:
        """The episode ended: the last transition gets ``flag`` (``time_limit``/``safety_stop``); an episode
        cut by None (a new phase, or closing with no reason known) is a time-limit cut too: the state did
        not end, only the recording did."""
        self._flush_pending(flag or "time_limit")
        self._prev = None
        self._prev_action = None

    def _flush_pending(self, flag: str | None) -> None:
        if self._pending is None:
            return
        row = self._pending
        row["time_limit"] = flag == "time_limit"
        row["safety_stop"] = flag == "safety_stop"
        if not self._rows:
            self._rows_since = time.monotonic()
        self._rows.append(row)
        self._pending = None
        self._counts["transitions"] += 1

    def _seal(self) -> None:
        """Store the oldest rows (at most a batch, all naming the same extras) as one numbered batch."""
        rows = self._rows[: self.config.batch_size]
        extras = sorted(rows[0]["state"].extras)
        # A row whose states name other extras than the first ends the batch; it starts the next one.
        same = []
        for r in rows:
            if sorted(r["state"].extras) != extras or sorted(r["next_state"].extras) != extras:
                break
            same.append(r)
        del self._rows[: len(same)]
        if self._rows:
            self._rows_since = time.monotonic()
        arrays = {
            name: np.array([r[name] for r in same], dtype=np.float32)
            for name in ("obs", "action", "prev_action", "next_obs", "dt")
        }
        for prefix in ("state", "next_state"):
            states = [r[prefix] for r in same]
            arrays[f"{prefix}.joint_pos"] = np.array([s.joint_pos for s in states], dtype=np.float32)
            arrays[f"{prefix}.joint_vel"] = np.array([s.joint_vel for s in states], dtype=np.float32)
            arrays[f"{prefix}.joint_current"] = np.array([s.joint_current for s in states], dtype=np.float32)
            arrays[f"{prefix}.imu"] = np.array([s.imu for s in states], dtype=np.float32)
            arrays[f"{prefix}.extras"] = np.array(
                [[s.extras[k] for k in extras] for s in states], dtype=np.float32
            ).reshape(len(states), len(extras))
        arrays["policy_version"] = np.array([r["policy_version"] for r in same], dtype=np.int32)
        arrays["time_limit"] = np.array([r["time_limit"] for r in same], dtype=np.uint8)
        arrays["safety_stop"] = np.array([r["safety_stop"] for r in same], dtype=np.uint8)

        def encode(first_seq: int) -> list:
            batch = TransitionBatch(self.config.robot_id, self.spool.spool_id, first_seq, self.spool.lowest_held,
                                    self.interface_hash, self.goals, extras, arrays, self.run_id)  # fmt: skip
            return encode_transitions(batch, self.layout)

        self.spool.add(len(same), encode)
        if self._cursor < self.spool.lowest_held:
            # The spool was full and let the oldest go: there is nothing left to send below its oldest.
            self._cursor = self.spool.lowest_held

    # Network.

    def _send_hello(self, sock: zmq.Socket) -> None:
        hello = Hello(
            robot=self.config.robot_id, spool=self.spool.spool_id, next_seq=self.spool.next_seq,
            lowest_held=self.spool.lowest_held, policy_version=self.policy_version,
            policy_sha256=self.policy_sha256, interface_hash=self.interface_hash,
            task=self.task.name if self.task is not None else self.spec.name,
        )  # fmt: skip
        try:
            sock.send_multipart(encode_hello(hello), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # no connection yet; the next heartbeat tries again

    def _send(self, sock: zmq.Socket, now: float) -> None:
        if not self._heard_from_learner and now - self._started < self.config.resend_after_s:
            return  # the answer to the first hello says where to start
        while len(self._in_flight) < self.config.window:
            found = self.spool.batch_from(max(self._cursor, self.spool.lowest_held))
            if found is None:
                return
            first, count = found
            frames = with_lowest_held(self.spool.read(first), self.spool.lowest_held)
            try:
                sock.send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.Again:
                return  # not connected, or the learner is slow: the spool keeps it
            last = first + count - 1
            fresh = max(0, last - max(self._max_sent, first - 1))
            self._counts["sent"] += fresh
            self._counts["resent"] += count - fresh
            self._max_sent = max(self._max_sent, last)
            self._cursor = last + 1
            self._in_flight.append((last, now))

    def _rewind(self, received: int) -> None:
        """Send again from just after what the learner holds."""
        self._received = received
        self._cursor = max(received + 1, self.spool.lowest_held)
        self._in_flight.clear()
        self._counts["rewinds"] += 1

    def _resend_if_silent(self, now: float) -> None:
        if self._in_flight and now - self._in_flight[0][1] > self.config.resend_after_s:
            self._rewind(self._received)

    def _receive(self, sock: zmq.Socket) -> None:
        frames = sock.recv_multipart()
        try:
            kind, header = parse_header(frames)
            if kind is MessageType.ACK:
                self._on_ack(decode_ack(header))
            elif kind is MessageType.POLICY:
                self._on_policy(sock, decode_policy(header, frames))
            else:
                raise WireError("type", f"{kind.value} is not sent to a robot")
        except WireError:
            self._counts["bad_messages"] += 1

    def _on_ack(self, ack) -> None:
        if ack.robot != self.config.robot_id or ack.spool != self.spool.spool_id:
            self._counts["bad_messages"] += 1
            return
        if ack.gap or ack.received < self._received:
            # A gap, or a learner that restarted from a checkpoint older than what it had acknowledged. Every
            # batch in flight behind a hole draws its own gap answer: one rewind per hole (and per resend_after_s)
            # sends the window again once, not once per batch answered.
            now = time.monotonic()
            target, when = self._last_rewind
            if ack.received != target or now - when > self.config.resend_after_s:
                self._rewind(ack.received)
                self._last_rewind = (ack.received, now)
        else:
            self._received = ack.received
            self._cursor = max(self._cursor, ack.received + 1)  # what the learner holds is not sent (again)
            while self._in_flight and self._in_flight[0][0] <= ack.received:
                self._in_flight.popleft()
        self._heard_from_learner = True
        self._counts["acked"] += self.spool.forget_through(ack.durable)

    def _on_policy(self, sock: zmq.Socket, msg) -> None:
        self._counts["policies_received"] += 1
        problems: list[str] = []
        runtime = None
        digest = hashlib.sha256(msg.data).hexdigest()
        if digest != msg.sha256:
            problems.append(f"sha256: the bytes hash to {digest}, the header says {msg.sha256}")
        elif msg.version <= self.policy_version:
            problems.append(f"version: {msg.version} is not newer than the running version {self.policy_version}")
        else:
            try:
                runtime = PolicyRuntime(msg.data, self.spec, self.task)
            except PolicyRejectedError as exc:
                problems += [f"{kind.value}: {text}" for kind, text in exc.problems]
            if runtime is not None and runtime.version != msg.version:
                problems.append(f"version: the header says {msg.version}, the file's metadata {runtime.version}")
        if problems:
            self._counts["policies_refused"] += 1
            self.refusals.append((msg.version, problems))
        else:
            self._counts["policies_accepted"] += 1
            self.policy_version, self.policy_sha256 = msg.version, digest
            with self._swap_lock:
                if self.swap is not None:
                    self.swap(runtime, msg.version)
                else:
                    self._held = (runtime, msg.version)
            self.swaps.append((msg.version, time.monotonic()))
        result = PolicyResult(self.config.robot_id, msg.version, msg.sha256, not problems, problems)
        try:
            sock.send_multipart(encode_policy_result(result), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # the learner learns the running version from the next hello
