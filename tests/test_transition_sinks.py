"""Sinks never block the loop: a full queue drops and counts, a failing consumer is contained."""

import threading
import time

import numpy as np
import pytest

from firmware_bridge.state import RobotState
from firmware_bridge.transitions import BackgroundSink, Event, Transition


class Gate:
    """A consumer that holds each item until released, recording what it got."""

    def __init__(self):
        self.release = threading.Event()
        self.items = []
        self.closed = False

    def handle(self, item):
        self.release.wait(5)
        self.items.append(item)

    def close(self):
        self.closed = True


class Broken:
    def __init__(self):
        self.closed = False

    def handle(self, item):
        raise OSError("disk full")

    def close(self):
        self.closed = True


def test_a_full_queue_drops_and_counts_without_blocking():
    gate = Gate()
    sink = BackgroundSink("slow", gate, capacity=4)
    results = [sink.offer(Event(float(i), "e", str(i))) for i in range(20)]
    assert results.count(False) >= 20 - 5  # 4 queued + at most 1 taken by the consumer
    gate.release.set()
    sink.close()
    c = sink.counters()
    assert c["offered"] == 20 and c["handled"] + c["dropped"] == 20 and c["handled"] == len(gate.items)
    assert [e.detail for e in gate.items] == [str(i) for i, ok in enumerate(results) if ok]  # in order
    assert gate.closed


def test_a_failing_consumer_stops_quietly_and_close_reports_it():
    consumer = Broken()
    sink = BackgroundSink("broken", consumer)
    sink.offer(Event(0.0, "e", "first"))
    deadline = time.monotonic() + 5
    while sink.error is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert sink.offer(Event(1.0, "e", "later")) is False
    assert consumer.closed
    # The item it failed on and the one refused after are lost, and counted so.
    assert sink.counters() == {"offered": 2, "handled": 0, "dropped": 2, "pending": 0}
    with pytest.raises(RuntimeError, match="sink broken failed: disk full"):
        sink.close()
    assert sink.counters()["dropped"] == 2


def test_an_events_only_sink_is_never_handed_a_tick():
    gate = Gate()
    gate.release.set()
    sink = BackgroundSink("console", gate, accepts=(Event,))
    state = RobotState(0.0, np.zeros(2), np.zeros(2), np.zeros(2))
    tick = Transition(0, 0.0, state, np.zeros(4), np.zeros(2), np.zeros(2), 1, {})
    assert all(sink.offer(tick) for _ in range(50))
    sink.offer(Event(1.0, "safety_stop", "nan action"))
    sink.close()
    assert [type(item) for item in gate.items] == [Event] and sink.counters() == {
        "offered": 1,
        "handled": 1,
        "dropped": 0,
        "pending": 0,
    }


class Slow:
    """Takes 20 ms per item; records when ``hurry`` came relative to the items."""

    def __init__(self):
        self.items = []
        self.hurried_after = None

    def handle(self, item):
        time.sleep(0.02)
        self.items.append(item)

    def hurry(self):
        self.hurried_after = len(self.items)

    def close(self):
        pass


def test_close_waits_while_the_consumer_makes_progress_and_hurries_it_first():
    slow = Slow()
    sink = BackgroundSink("log", slow)
    for i in range(40):  # 0.8 s of work, four times the stall limit below
        sink.offer(Event(float(i), "e", str(i)))
    sink.close(stall_s=0.2)
    assert len(slow.items) == 40 and slow.hurried_after is not None and slow.hurried_after < 40
    assert sink.counters() == {"offered": 40, "handled": 40, "dropped": 0, "pending": 0}


def test_close_gives_up_on_a_stalled_consumer_and_counts_what_is_pending():
    gate = Gate()
    sink = BackgroundSink("stuck", gate)
    for i in range(5):
        sink.offer(Event(float(i), "e", str(i)))
    with pytest.raises(TimeoutError, match="sink stuck: no progress for 0.2 s"):
        sink.close(stall_s=0.2)
    assert sink.counters()["pending"] == 5
    gate.release.set()


class StallsOnce:
    """Holds its first item for ``stall_s``, then keeps up."""

    def __init__(self, stall_s):
        self.stall_s = stall_s
        self.items = []
        self.closed = threading.Event()

    def handle(self, item):
        if not self.items:
            time.sleep(self.stall_s)
        self.items.append(item)

    def close(self):
        self.closed.set()


@pytest.mark.parametrize("stall_s, gives_up", [(0.15, False), (0.4, True)])
def test_a_consumer_that_catches_up_after_a_full_queue_is_still_closed(stall_s, gives_up):
    consumer = StallsOnce(stall_s)
    sink = BackgroundSink("log", consumer, capacity=4)
    sink.offer(Event(0.0, "e", "0"))
    time.sleep(0.05)  # the consumer holds the first item: 4 of the next 9 fit in the queue
    for i in range(1, 10):
        sink.offer(Event(float(i), "e", str(i)))
    if gives_up:
        with pytest.raises(TimeoutError, match="sink log: no progress for 0.2 s, 5 items pending"):
            sink.close(stall_s=0.2)
    else:
        sink.close(stall_s=0.2)
    assert consumer.closed.wait(2), "the consumer was never closed"
    c = sink.counters()
    assert c["handled"] == len(consumer.items) == 5 and c["dropped"] == 5 and c["pending"] == 0
