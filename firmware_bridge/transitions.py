"""What the loop hands off each tick, and the non-blocking sinks that take it off the loop's thread.

The loop calls ``offer`` on every sink once per tick; ``offer`` never blocks:
a full queue drops the item and counts it. Each ``BackgroundSink`` has its
own bounded queue and thread, so a slow consumer (a disk, a learner link)
never delays the loop or another sink. The MCAP tick log and the console are
consumers inside a ``BackgroundSink``; the learner uplink is a ``TransitionSink``
of its own, with its own queue and thread (``firmware_bridge.learner_uplink``).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from firmware_bridge.state import RobotState


@dataclass(frozen=True)
class Transition:
    """One tick: what was measured, what the policy saw and did, what was sent, and how long it took."""

    tick: int
    time: float
    """The tick's start on the loop clock (``timing.clock``, seconds)."""
    state: RobotState
    """The state the observation was built from."""
    observation: np.ndarray
    action: np.ndarray
    """Policy output in [-1, 1]."""
    command: np.ndarray
    """Joint position targets sent [rad], after clipping and rate limiting."""
    policy_version: int
    timings_us: dict[str, float]
    """This tick's values of ``timing.TIMING_CHANNELS``."""
    missed: int = 0
    """Deadlines skipped just before this tick."""


@dataclass(frozen=True)
class Event:
    """Something that happened beside the ticks: a phase change, a policy swap, a safety stop."""

    time: float
    """Loop clock seconds."""
    kind: str
    detail: str
    data: dict = field(default_factory=dict)


class TransitionSink(Protocol):
    """What the loop talks to. ``offer`` must not block; ``close`` drains and stops."""

    name: str

    def offer(self, item: Transition | Event) -> bool: ...

    def close(self) -> None: ...

    def counters(self) -> dict[str, int]: ...


class Consumer(Protocol):
    """Work done off the loop's thread, one item at a time, in order.

    A consumer may also define ``hurry()``: the sink calls it, from the closing thread, when the loop is over
    and what is queued should drain as fast as the machine allows (the tick log's writer leaves the idle
    scheduling class then).
    """

    def handle(self, item: Transition | Event) -> None: ...

    def close(self) -> None: ...


_CLOSE = object()


class BackgroundSink:
    """A bounded queue in front of a ``Consumer`` running on its own daemon thread.

    A consumer that raises is stopped: the error is kept (``error``) and later offers are dropped and
    counted, so a broken log can never stop the robot's loop. ``accepts`` names the item types the consumer
    wants; the others are passed over in ``offer`` (and not counted), so an events-only consumer's thread
    does not wake, and take the interpreter lock from the loop, on every tick.
    """

    def __init__(
        self,
        name: str,
        consumer: Consumer,
        *,
        capacity: int = 4096,
        accepts: tuple[type, ...] = (Transition, Event),
    ) -> None:
        self.name = name
        self.consumer = consumer
        self.accepts = accepts
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.offered = 0
        # Each counter has one writer, so no increment is lost between threads: the loop's offers count what
        # they turn away, the worker what it abandons once its consumer has failed.
        self._refused = 0
        self._abandoned_items = 0
        self.handled = 0
        self.error: BaseException | None = None
        self._closing = False
        self._abandoned = False
        self._thread = threading.Thread(target=self._work, name=f"sink-{name}", daemon=True)
        self._thread.start()

    def offer(self, item: Transition | Event) -> bool:
        if not isinstance(item, self.accepts):
            return True
        self.offered += 1
        if self.error is not None:
            self._refused += 1
            return False
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._refused += 1
            return False
        return True

    @property
    def dropped(self) -> int:
        """Items offered that will never be handled: refused (queue full, consumer failed) or abandoned."""
        return self._refused + self._abandoned_items

    def close(self, stall_s: float = 10.0) -> None:
        """Let the consumer finish what is queued, then close it; raises the consumer's error, if any.

        Waits as long as the consumer makes progress (a starved log writer on a busy machine may take a while,
        and the robot is already safe when sinks close): it gives up once ``stall_s`` pass without an item
        handled, leaving the rest counted as ``pending``. Closing the consumer itself gets ``stall_s`` more.
        """
        hurry = getattr(self.consumer, "hurry", None)
        if hurry is not None and self._thread.is_alive():
            hurry()
        queued = False
        progress = (self.handled, self._closing)
        deadline = time.monotonic() + stall_s
        while self._thread.is_alive():
            if not queued:
                # Retried until there is room: a consumer that catches up must still find the end of its queue.
                try:
                    self._queue.put(_CLOSE, timeout=0.05)
                    queued = True
                except queue.Full:
                    pass
            else:
                self._thread.join(0.05)
            if (self.handled, self._closing) != progress:
                progress = (self.handled, self._closing)
                deadline = time.monotonic() + stall_s
            elif time.monotonic() > deadline and self._thread.is_alive():
                self._abandoned = True  # without the end marker queued, the worker stops once the queue is empty
                stage = "closing its consumer" if self._closing else f"{self.counters()['pending']} items pending"
                raise TimeoutError(f"sink {self.name}: no progress for {stall_s:g} s, {stage}")
        if self.error is not None:
            raise RuntimeError(f"sink {self.name} failed: {self.error}") from self.error

    def counters(self) -> dict[str, int]:
        """``pending``: accepted, and neither handled nor dropped yet (after ``close``: only if it gave up)."""
        pending = self.offered - self.handled - self.dropped
        return {"offered": self.offered, "handled": self.handled, "dropped": self.dropped, "pending": pending}

    def _work(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _CLOSE:
                    break
                try:
                    self.consumer.handle(item)
                except BaseException:
                    self._abandoned_items += 1
                    raise
                self.handled += 1
                if self._abandoned and self._queue.empty():
                    break
        except BaseException as exc:  # noqa: BLE001 - kept and re-raised by close(), never into the loop
            self.error = exc
            self._drop_queued()
        finally:
            self._closing = True
            try:
                self.consumer.close()
            except BaseException as exc:  # noqa: BLE001
                self.error = self.error or exc

    def _drop_queued(self) -> None:
        """After the consumer failed: what is still queued will never be handled, so it counts as dropped."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _CLOSE:
                self._abandoned_items += 1
