"""The learner's network side: one ROUTER socket on its own thread, many robots.

Per robot it keeps ``received`` (the highest sequence number held with nothing missing below it) and
``durable`` (the highest one in the last checkpoint, set by the training thread). A batch that starts
above ``received + 1`` while the robot still holds the missing numbers is refused with a gap acknowledgement
(the robot resends from there), so ``received`` alone is enough to drop every duplicate; numbers the robot
no longer holds (its spool overflowed) are counted as lost and skipped. Accepted batches are scored with
the task's code and queued for the training thread; acknowledgements tell the robot what it may stop
sending (``received``) and what it may delete (``durable``).

Anything that does not decode is counted and dropped; the thread never dies of a peer's bytes.
"""

from __future__ import annotations

import copy
import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import zmq

from firmware_bridge import curve_keys
from firmware_bridge.learner_wire import (
    MAX_BATCH,
    MAX_EXTRAS,
    MAX_HEADER_BYTES,
    ROBOT_ID_HELD_S,
    Ack,
    MessageType,
    TransitionLayout,
    WireError,
    decode_hello,
    decode_policy_result,
    decode_transitions,
    encode_ack,
    encode_policy,
    parse_header,
)
from robot_sac.real_transitions import Scored, TransitionScorer

MAX_REFUSALS_KEPT = 20
"""Per robot, the newest policy refusals kept (each up to a message's worth of problem text)."""

RESEND_POLICY_AFTER_S = 5.0
"""A robot that still announces an older policy this long after a push gets the newest again."""

MAX_CONFLICTS_LISTED = 256
"""Distinct (robot, spool) name conflicts listed in the errors; all are counted."""

MAX_ROBOTS = 1024
"""Robot records a learner keeps; each id ever heard from has one. Without CURVE anyone who can reach the port can
name a robot, so an id beyond this is refused (counted ``too_many_robots``) rather than kept for good."""

HISTORY_KEPT = 100
"""Per robot, the newest episode returns and policy versions sent and accepted that are kept. A learner runs for
days, and a record is copied with every batch taken in and written with every checkpoint, so these stay bounded;
the episodes are counted in full."""


@dataclass
class RobotRecord:
    robot: str
    spool: str = ""
    received: int = -1
    durable: int = -1
    transitions: int = 0
    """Transitions accepted (first copies)."""
    duplicates: int = 0
    gaps: int = 0
    """Batches refused because numbers below them were missing (the robot resends)."""
    lost: int = 0
    """Numbers the robot no longer held when they were due (its spool overflowed)."""
    non_finite: int = 0
    unscorable: int = 0
    off_period: int = 0
    """Rows scored but not stored: they spanned another time than the control period."""
    safety_stops: int = 0
    after_termination: int = 0
    """Rows that started where the task had already ended the episode (lying where it fell): not stored."""
    policy_versions_sent: list[int] = field(default_factory=list)
    """The newest ``HISTORY_KEPT`` versions sent, oldest first (a version sent again is listed once); a result for
    an older one counts as unknown."""
    policy_versions_accepted: list[int] = field(default_factory=list)
    """The newest ``HISTORY_KEPT`` versions the robot reported running."""
    policy_refusals: list[tuple[int, list[str]]] = field(default_factory=list)
    running_version: int = -1
    episode_returns: list[float] = field(default_factory=list)
    """Real-world returns (the task's reward) of the newest ``HISTORY_KEPT`` episodes that ended, newest last."""
    episodes: int = 0
    """Episodes that ended with a known return, all of them."""
    episodes_unscored: int = 0
    """Episodes with any row that could not be scored (non-finite or unscorable): their return is unknown, so it
    is not in ``episode_returns``."""
    episode_return: float = 0.0
    episode_rows: int = 0
    """Rows in the episode still open: a row after a termination ends it only if it has some."""
    run: str = ""
    """The robot program's run whose rows came last (``TransitionBatch.run``)."""
    routing_id: bytes | None = None
    key: str | None = None
    """The CURVE public key the robot first spoke with; another key claiming this id is refused while this one is
    in the allow-list. Kept in checkpoints, so a restarted learner still knows it."""
    first_seen: float | None = None
    last_seen: float | None = None
    last_push: tuple[int, float] = (-1, 0.0)

    _KEPT = ("robot", "spool", "received", "durable", "transitions", "duplicates", "gaps", "lost", "non_finite",
             "unscorable", "off_period", "safety_stops", "after_termination", "policy_versions_sent",
             "policy_versions_accepted", "running_version", "episode_returns", "episodes", "episodes_unscored",
             "episode_return", "episode_rows", "run", "key")

    _COUNTED = ("transitions", "duplicates", "gaps", "lost", "non_finite", "unscorable", "off_period", "safety_stops",
                "after_termination", "episode_returns", "episodes", "episodes_unscored", "episode_return",
                "episode_rows", "run")
    """What moves with the transitions taken in. A checkpoint saves these as they were when the last batch it
    holds was taken, not as the link has them now: the link may have taken more since, which a restarted
    learner gets again from the robot and must count only once."""

    def counted_state(self) -> dict:
        return {key: copy.copy(getattr(self, key)) for key in self._COUNTED}

    def checkpoint_state(self, through: int) -> dict:
        # Copies: the link thread trims these lists while the training thread writes the checkpoint.
        state = {key: copy.copy(getattr(self, key)) for key in self._KEPT}
        state["received"] = state["durable"] = through
        return state

    _ADDED = {"off_period": 0, "episodes_unscored": 0, "episode_return": 0.0, "key": None, "after_termination": 0,
              "episode_rows": 0, "run": ""}
    """Counters added after checkpoints were first written, with the value an older checkpoint means."""

    @classmethod
    def from_checkpoint(cls, state: dict) -> RobotRecord:
        # Checkpoints from before the histories were bounded hold every episode's return and no count.
        state = {**cls._ADDED, "episodes": len(state["episode_returns"]), **state}
        for key in ("episode_returns", "policy_versions_sent", "policy_versions_accepted"):
            state[key] = state[key][-HISTORY_KEPT:]
        return cls(**{key: state[key] for key in cls._KEPT})

    def report(self) -> dict:
        span = (self.last_seen - self.first_seen) if self.first_seen and self.last_seen else 0.0
        return {
            "transitions_received": self.transitions, "duplicates_dropped": self.duplicates,
            "transitions_per_s": round(self.transitions / span, 1) if span > 0 else None,
            "gaps_refused": self.gaps, "lost": self.lost, "non_finite": self.non_finite,
            "unscorable": self.unscorable, "off_period": self.off_period, "safety_stops": self.safety_stops,
            "after_termination": self.after_termination,
            "received_through": self.received,
            "durable_through": self.durable, "policy_versions_sent": list(self.policy_versions_sent),
            "policy_versions_accepted": list(self.policy_versions_accepted),
            "policy_refusals": [[v, p] for v, p in self.policy_refusals], "running_version": self.running_version,
            "episodes": self.episodes, "episodes_unscored": self.episodes_unscored,
            "episode_return_last10": float(np.mean(self.episode_returns[-10:])) if self.episode_returns else None,
        }  # fmt: skip

    def add_rewards(self, scored: Scored) -> None:
        rows = zip(scored.row_reward.tolist(), scored.episode_end.tolist(), scored.after_termination.tolist())
        for reward, end, after_termination in rows:
            if not after_termination:
                self.episode_return += reward  # a NaN (a row not scored) makes the episode's return unknown
                self.episode_rows += 1
            # A row after a termination closes an episode still open: its terminating row could not be scored.
            if (end or after_termination) and self.episode_rows:
                if np.isnan(self.episode_return):
                    self.episodes_unscored += 1
                else:
                    self.episodes += 1
                    _append_bounded(self.episode_returns, self.episode_return)
                self.episode_return, self.episode_rows = 0.0, 0


@dataclass
class Ingested:
    robot: str
    spool: str
    last_seq: int
    scored: Scored
    counted: dict = field(default_factory=dict)
    """The robot's ``RobotRecord.counted_state()`` right after this batch was taken."""


class LearnerLink:
    def __init__(
        self,
        bind: str,
        layout: TransitionLayout,
        interface_hash: str,
        scorer: TransitionScorer,
        robots: dict[str, RobotRecord] | None = None,
        keys_dir: str | None = None,
        context: zmq.Context | None = None,
    ):
        self.bind = bind
        self.layout = layout
        self.interface_hash = interface_hash
        self.scorer = scorer
        self.robots: dict[str, RobotRecord] = robots or {}
        self._keys = curve_keys.server_keys(keys_dir) if keys_dir is not None else None
        self._allowed: frozenset[str] = frozenset()
        """The allow-list as the authenticator read it (set beside it)."""
        self._conflicts_logged: set[tuple[str, str]] = set()
        self._started = time.monotonic()
        """When the link began to listen (reset as it binds): a checkpoint's spools are held from then."""
        self.context = context or zmq.Context.instance()
        self.ingest: queue.Queue[Ingested] = queue.Queue()
        self.counts = dict.fromkeys(("messages", "malformed", "oversized", "wrong_interface", "impersonation",
                                     "name_conflict", "too_many_robots", "unknown_robot", "unknown_policy",
                                     "wrong_connection", "unreachable"), 0)  # fmt: skip
        self.errors: deque[str] = deque(maxlen=20)
        """The latest reasons for dropped messages."""
        widest = max(layout.obs_dim, layout.act_dim, MAX_EXTRAS, 6)
        self.max_frame_bytes = MAX_BATCH * widest * 4
        self.max_message_bytes = MAX_HEADER_BYTES + len(layout.arrays(MAX_EXTRAS)) * self.max_frame_bytes
        self._commands: queue.Queue = queue.Queue()
        self._latest_policy: tuple[int, list[bytes]] | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.endpoint: str | None = None
        """The bound address (with the real port when ``bind`` asked for a random one)."""
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="learner-link", daemon=True)

    # -- the training thread's side ---------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10.0)
        if self.error is not None:
            raise RuntimeError(f"learner link: {self.error}") from self.error

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def publish(self, version: int, data: bytes) -> None:
        """Send this policy to every robot (from any thread)."""
        self._commands.put(("publish", version, data))

    def set_durable(self, durable: dict[str, tuple[str, int]]) -> None:
        """``{robot: (spool, through)}`` now in a checkpoint; the robots are told they may delete it."""
        self._commands.put(("durable", durable))

    # -- the link thread ----------------------------------------------------------------------------

    def _work(self) -> None:
        auth = None
        sock = None
        try:
            sock = self.context.socket(zmq.ROUTER)
            sock.linger = 0
            # Without this a policy for a robot that went away would vanish without a trace.
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.maxmsgsize = max(self.max_frame_bytes, MAX_HEADER_BYTES)
            sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
            if self._keys is not None:
                self._allowed = curve_keys.allowed_user_ids(self._keys)
                auth = curve_keys.start_authenticator(self.context, self._keys)
                curve_keys.configure_server(sock, self._keys)
            self._started = time.monotonic()
            sock.bind(self.bind)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self._ready.set()
            while not self._stop.is_set():
                self._run_commands(sock)
                if sock.poll(10):
                    for _ in range(256):
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._receive(sock, frames)
        except BaseException as exc:  # noqa: BLE001 - reported by start() or the learner's report
            self.error = exc
        finally:
            self._ready.set()
            if sock is not None:
                sock.close(linger=0)
            if auth is not None:
                auth.stop()

    def _run_commands(self, sock: zmq.Socket) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if command[0] == "publish":
                _, version, data = command
                self._latest_policy = (version, encode_policy(version, data))
                for rec in self.robots.values():
                    self._push(sock, rec)
            else:
                for robot, (spool, through) in command[1].items():
                    rec = self.robots.get(robot)
                    if rec is not None and rec.spool == spool and through > rec.durable:
                        rec.durable = through
                        self._ack(sock, rec)

    def _send(self, sock: zmq.Socket, rec: RobotRecord, frames: list) -> bool:
        if rec.routing_id is None:
            return False
        try:
            sock.send_multipart([rec.routing_id, *frames], flags=zmq.NOBLOCK)
            return True
        except zmq.ZMQError:  # EHOSTUNREACH (gone, ROUTER_MANDATORY) or EAGAIN (its pipe is full)
            self.counts["unreachable"] += 1
            return False

    def _ack(self, sock: zmq.Socket, rec: RobotRecord, gap: bool = False) -> None:
        self._send(sock, rec, encode_ack(Ack(rec.robot, rec.spool, rec.received, rec.durable, gap)))

    def _push(self, sock: zmq.Socket, rec: RobotRecord) -> None:
        if self._latest_policy is None:
            return
        version, frames = self._latest_policy
        if rec.running_version >= version or any(v == version for v, _ in rec.policy_refusals):
            return
        if self._send(sock, rec, frames):
            if version not in rec.policy_versions_sent[-1:]:  # sent again to a robot still announcing an older one
                _append_bounded(rec.policy_versions_sent, version)
            rec.last_push = (version, time.monotonic())

    def _drop(self, kind: str, reason: str) -> None:
        self.counts[kind] += 1
        self.errors.append(f"{kind}: {reason}")

    def _receive(self, sock: zmq.Socket, frames: list[zmq.Frame]) -> None:
        self.counts["messages"] += 1
        routing_id = frames[0].bytes
        body = frames[1:]
        size = sum(len(f) for f in body)
        if size > self.max_message_bytes or len(body) > 2 + len(self.layout.arrays(MAX_EXTRAS)):
            self._drop("oversized", f"{len(body)} frames, {size} bytes (at most {self.max_message_bytes})")
            return
        key = body[0].get("User-Id") if self._keys is not None else None
        buffers = [f.buffer for f in body]
        try:
            kind, header = parse_header(buffers)
            if kind is MessageType.TRANSITIONS:
                self._on_transitions(sock, decode_transitions(header, buffers, self.layout), routing_id, key)
            elif kind is MessageType.HELLO:
                self._on_hello(sock, decode_hello(header), routing_id, key)
            elif kind is MessageType.POLICY_RESULT:
                self._on_policy_result(decode_policy_result(header), routing_id, key)
            else:
                raise WireError("type", f"{kind.value} is not sent to a learner")
        except WireError as exc:
            self._drop("malformed", str(exc))

    def _record(self, robot: str, spool: str, routing_id: bytes, key: str | None, interface_hash: str):
        """The robot's record, or None when this message must be dropped (wrong layout, wrong key, another live
        spool)."""
        if interface_hash != self.interface_hash:
            self._drop(
                "wrong_interface", f"{robot}: interface {interface_hash[:12]}, learner {self.interface_hash[:12]}"
            )
            return None
        rec = self.robots.get(robot)
        if rec is None:
            if len(self.robots) >= MAX_ROBOTS:
                self.counts["too_many_robots"] += 1
                if self.counts["too_many_robots"] == 1:  # listed once: a flood would push every other reason out
                    self.errors.append(f"too_many_robots: {robot}: the learner keeps {MAX_ROBOTS} robot records (one "
                                       "per id ever heard from); messages naming a new id are refused")  # fmt: skip
                return None
            rec = self.robots[robot] = RobotRecord(robot)
        rebinding = key is not None and key != rec.key
        if rebinding and rec.key in self._allowed:
            self._drop("impersonation", f"{robot}: spoken for by key {rec.key[:8]}..., not {key[:8]}... (to move the "
                                        "id to another key: remove the old key from the allow-list, or restart the "
                                        "learner with --release-robot ID)")  # fmt: skip
            return None
        now = time.monotonic()
        if rec.spool != spool:
            # Another connection's spool under a live id is a second robot under the same name, refused so that
            # the two spools' numbering does not overwrite each other. A spool from a checkpoint is held from
            # the link's start: its robot says hello within a second.
            quiet_since = rec.last_seen if rec.last_seen is not None else self._started
            if rec.spool and routing_id != rec.routing_id and now - quiet_since < ROBOT_ID_HELD_S:
                self.counts["name_conflict"] += 1
                # Listed once per spool (a second robot repeats every second), and never more than a bounded set.
                if (robot, spool) not in self._conflicts_logged and len(self._conflicts_logged) < MAX_CONFLICTS_LISTED:
                    self._conflicts_logged.add((robot, spool))
                    self.errors.append(f"name_conflict: {robot}: spool {spool} from another connection while "
                                       f"spool {rec.spool} is live under that id")  # fmt: skip
                return None
            # A new spool (first contact, or the robot lost its disk): its numbering starts over.
            rec.spool, rec.received, rec.durable = spool, -1, -1
        # Bound only by a message that is taken: one refused above must not claim the id for its key.
        if rebinding:
            if rec.key is not None:
                self.errors.append(f"rebound: {robot} to key {key[:8]}...; its key {rec.key[:8]}... is no longer "
                                   "in the allow-list")  # fmt: skip
            rec.key = key
        rec.first_seen = rec.first_seen or now
        rec.last_seen = now
        rec.routing_id = routing_id
        return rec

    def _on_hello(self, sock, hello, routing_id: bytes, key: str | None) -> None:
        rec = self._record(hello.robot, hello.spool, routing_id, key, hello.interface_hash)
        if rec is None:
            return
        # What the robot says it runs now, even an older version than it accepted before (a bridge restarted
        # with its original file): the newest is then pushed to it again.
        rec.running_version = hello.policy_version
        self._ack(sock, rec)
        version, sent_at = rec.last_push
        if self._latest_policy is not None and (version != self._latest_policy[0] or
                                                time.monotonic() - sent_at > RESEND_POLICY_AFTER_S):  # fmt: skip
            self._push(sock, rec)

    def _on_policy_result(self, result, routing_id: bytes, key: str | None) -> None:
        rec = self.robots.get(result.robot)
        if rec is None or (key is not None and rec.key != key):
            self._drop("unknown_robot", f"policy result from {result.robot!r}")
            return
        if routing_id != rec.routing_id:
            # A robot answers on the connection its policy came over, which its hellos keep current; another
            # connection (without CURVE, anyone) must not claim a version for it.
            self._drop("wrong_connection", f"policy result for {rec.robot} from a connection that is not its own")
            return
        if result.version not in rec.policy_versions_sent:
            self._drop("unknown_policy", f"{rec.robot}: a result for policy {result.version}, which was not sent to it")
            return
        if result.accepted:
            _append_bounded(rec.policy_versions_accepted, result.version)
            rec.running_version = max(rec.running_version, result.version)
        else:
            rec.policy_refusals.append((result.version, result.problems))
            # What a robot sends is kept within bounds: the newest refusals tell what is wrong.
            del rec.policy_refusals[:-MAX_REFUSALS_KEPT]
            self.errors.append(f"{rec.robot} refused policy {result.version}: {'; '.join(result.problems)}")

    def _on_transitions(self, sock, batch, routing_id: bytes, key: str | None) -> None:
        rec = self._record(batch.robot, batch.spool, routing_id, key, batch.interface_hash)
        if rec is None:
            return
        expected = rec.received + 1
        if batch.first_seq > expected and batch.lowest_held > expected:
            # The robot let these go (spool full): wait for them no longer. They belong to the episode still open,
            # or begin the one these rows continue: its return is unknown.
            rec.lost += batch.lowest_held - expected
            rec.episode_return, rec.episode_rows = math.nan, rec.episode_rows + batch.lowest_held - expected
            rec.received, expected = batch.lowest_held - 1, batch.lowest_held
        if batch.first_seq > expected:
            rec.gaps += 1
            self._ack(sock, rec, gap=True)
            return
        skip = expected - batch.first_seq
        if skip >= batch.count:
            rec.duplicates += batch.count
            self._ack(sock, rec)
            return
        rec.duplicates += skip
        if batch.run != rec.run:
            # The robot program started again: an episode its last run left open was cut where it died, with no
            # flag on its last row, and its return is not a whole episode's.
            if rec.run and rec.episode_rows:
                rec.episodes_unscored += 1
                rec.episode_return, rec.episode_rows = 0.0, 0
            rec.run = batch.run
        scored = self.scorer.score(batch, start=skip)
        rec.transitions += batch.count - skip
        rec.non_finite += scored.non_finite
        rec.unscorable += scored.unscorable
        rec.off_period += scored.off_period
        rec.safety_stops += scored.safety_stops
        rec.after_termination += int(scored.after_termination.sum())
        rec.add_rewards(scored)
        rec.received = batch.last_seq
        self.ingest.put(Ingested(rec.robot, rec.spool, batch.last_seq, scored, rec.counted_state()))
        self._ack(sock, rec)


def _append_bounded(history: list, value) -> None:
    history.append(value)
    del history[:-HISTORY_KEPT]
