"""Deadline pacing and timing histograms of the on-robot loop."""

import errno
import math
import os
import sys
import threading
import time

import numpy as np
import pytest

from firmware_bridge.timing import (
    MAX_TIMER_SLACK_NS, DeadlineClock, Histogram, _prctl, clock, set_timer_slack, timer_slack,
)


def test_histogram_percentiles_match_numpy_within_a_bin():
    values = np.random.default_rng(0).lognormal(mean=3.0, sigma=1.2, size=20_000)
    h = Histogram()
    for v in values:
        h.record(float(v))
    for q in (50, 99):
        assert h.percentile(q) == pytest.approx(np.percentile(values, q), rel=0.011)
    assert h.max_us == values.max()
    assert h.count == values.size
    assert sum(n for _, _, n in h.bins()) == values.size


def test_merged_histograms_equal_one_histogram_of_all_values():
    rng = np.random.default_rng(1)
    first, second = rng.lognormal(2.0, 1.0, 5_000), rng.lognormal(4.0, 0.5, 3_000)
    merged, a, both = Histogram(), Histogram(), Histogram()
    for v in first:
        a.record(float(v))
        both.record(float(v))
    b = Histogram()
    for v in second:
        b.record(float(v))
        both.record(float(v))
    merged.merge(a)
    merged.merge(b)
    assert merged.counts == both.counts
    assert (merged.count, merged.max_us) == (8_000, max(first.max(), second.max()))
    assert merged.summary() == both.summary()
    assert a.count == 5_000  # the merged-in histogram is left as it was


def test_histogram_sub_microsecond_values_and_empty_summary():
    h = Histogram()
    assert h.summary() == {"p50": 0.0, "p99": 0.0, "max": 0.0}
    for v in (0.0, 0.2, 0.9, 0.5):
        h.record(v)
    h.record(1000.0)
    assert h.percentile(50) == 0.0
    assert h.summary()["max"] == 1000.0
    assert h.percentile(100) == pytest.approx(1000.0, rel=0.01)


def test_deadlines_lie_on_a_fixed_grid_and_a_late_tick_does_not_shift_the_rest():
    start = clock() + 0.01
    pacer = DeadlineClock(200.0, start=start)
    ticks = []
    for k in range(20):
        tick = pacer.wait()
        ticks.append(tick)
        if k == 5:
            time.sleep(0.004)  # most of a period late, but not a full one: nothing is skipped
    # Every deadline on the grid; one is skipped only where a tick reports it missed (a stall of the VM longer
    # than a period can cause that; the 4 ms sleep alone does not).
    index = [round((t.deadline - start) / 0.005) for t in ticks]
    assert [t.deadline for t in ticks] == [start + k * 0.005 for k in index]
    assert [t.index for t in ticks] == list(range(20))
    assert [b - a - 1 for a, b in zip([-1] + index, index)] == [t.missed for t in ticks]
    assert all(t.started >= t.deadline for t in ticks) and pacer.missed == sum(t.missed for t in ticks) <= 3


@pytest.mark.parametrize(
    "rate_hz, offset_ms",
    [(1000.0, 0.5), (500.0, 0.5), (400.0, 0.25), (125.0, 0.5), (50.0, 0.5), (1500.0, 1 / 6), (4000.0, 0.125)],
)
def test_the_default_grid_lies_off_whole_milliseconds_where_the_kernels_tick_falls(rate_hz, offset_ms):
    before = clock()
    pacer = DeadlineClock(rate_hz)
    after = clock()
    period = 1.0 / rate_hz
    assert before - 1e-9 <= pacer.start <= after + period
    grid_points = (pacer.start - offset_ms * 1e-3) / period  # a whole number
    assert abs(grid_points - round(grid_points)) < 1e-6
    for k in range(64):  # every deadline at least the offset away from a whole millisecond
        ms = (pacer.start + k * period) * 1e3
        assert abs(ms - round(ms)) >= offset_ms - 1e-6
    first = pacer.wait()
    assert first.deadline == pytest.approx(pacer.start + first.missed * period, abs=1e-9)


def test_a_stall_longer_than_a_period_skips_the_missed_deadlines_instead_of_bursting():
    pacer = DeadlineClock(1000.0)
    pacer.wait()
    time.sleep(0.0055)  # deadlines +1 .. +5 ms pass during the stall
    late = pacer.wait()
    assert late.missed >= 4
    assert 0 <= late.period_error_us < 1000.0  # runs at the latest grid point that has passed
    following = pacer.wait()
    assert following.missed == 0
    assert following.deadline == pytest.approx(late.deadline + 0.001, abs=1e-9)
    assert pacer.missed == late.missed


def test_spin_wait_wakes_close_to_the_deadline():
    pacer = DeadlineClock(500.0, spin_s=500e-6)
    errors = [pacer.wait().period_error_us for _ in range(100)]
    # Generous for a shared 2-core VM; sleeping without a spin typically wakes 50-100 us late.
    assert np.median(errors) < 30.0


class FakeTime:
    """A clock that advances 1 us per reading, and a sleep that advances it by the request plus ``oversleep``
    (popped per call; 0 once empty): the wait's arithmetic without the machine's timing."""

    def __init__(self, oversleep=()):
        self.now = 100.0
        self.sleeps = []
        self.oversleep = list(oversleep)

    def clock(self):
        self.now += 1e-6
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds + (self.oversleep.pop(0) if self.oversleep else 0.0)


def _fake_pacer(monkeypatch, fake, **kwargs):
    monkeypatch.setattr("firmware_bridge.timing.clock", fake.clock)
    monkeypatch.setattr("firmware_bridge.timing.time", fake)
    return DeadlineClock(100.0, spin_s=200e-6, start=fake.now + 0.010, **kwargs)


def test_a_long_sleep_is_taken_in_naps_and_the_spin_ends_at_the_deadline(monkeypatch):
    fake = FakeTime()
    pacer = _fake_pacer(monkeypatch, fake, nap_s=1e-3)
    for k in range(3):
        fake.sleeps.clear()
        tick = pacer.wait()
        # 9.8 ms to the spin: nine naps of 1 ms and one of the 0.8 ms left (less the clock's readings).
        assert len(fake.sleeps) == 10 and max(fake.sleeps) == 1e-3
        assert sum(fake.sleeps) == pytest.approx(9.8e-3, abs=20e-6)
        assert tick.missed == 0 and 0 <= tick.period_error_us < 2.0


def test_without_naps_the_wait_is_one_sleep(monkeypatch):
    fake = FakeTime()
    pacer = _fake_pacer(monkeypatch, fake, nap_s=None)
    tick = pacer.wait()
    assert len(fake.sleeps) == 1 and fake.sleeps[0] == pytest.approx(9.8e-3, abs=5e-6)
    assert 0 <= tick.period_error_us < 2.0


def test_a_nap_that_wakes_late_shortens_the_rest_and_one_past_the_deadline_starts_the_tick_late(monkeypatch):
    fake = FakeTime(oversleep=[2.5e-3] + [0.0] * 6 + [0.5e-3])
    pacer = _fake_pacer(monkeypatch, fake, nap_s=1e-3)
    tick = pacer.wait()
    # Of the 9.8 ms to the spin: a nap of 1 ms that lasts 3.5, six naps of 1 ms, then the 0.3 ms left, which
    # wakes 0.5 ms late, past the deadline: no spin.
    assert len(fake.sleeps) == 8 and sum(fake.sleeps) == pytest.approx(7.3e-3, abs=20e-6)
    assert tick.missed == 0 and tick.period_error_us == pytest.approx(300.0, abs=20.0)


def test_a_sleep_that_oversleeps_past_later_deadlines_counts_them_as_missed(monkeypatch):
    # The first nap ends 26 ms on, past the deadlines at 10 and 20 ms: the first is missed, the tick is the second.
    fake = FakeTime(oversleep=[25e-3])
    pacer = _fake_pacer(monkeypatch, fake, nap_s=1e-3)
    first_deadline = pacer.next_deadline()
    tick = pacer.wait()
    assert tick.missed == 1 and tick.deadline == pytest.approx(first_deadline + 0.010)
    assert 0 <= tick.period_error_us < 10_000.0
    following = pacer.wait()
    assert following.missed == 0 and following.deadline == pytest.approx(first_deadline + 0.020)
    assert pacer.missed == 1


@pytest.mark.parametrize("rate_hz, spin_us", [(4000, 62.5), (1000, 200), (500, 500), (250, 1000), (50, 1000)])
def test_the_default_spin_is_a_quarter_of_the_period_at_most_1_ms_and_200_us_below_2_ms(rate_hz, spin_us):
    assert DeadlineClock(rate_hz).spin_s == pytest.approx(spin_us * 1e-6)
    assert DeadlineClock(rate_hz, spin_s=0.0).spin_s == 0.0


def test_bad_parameters_are_refused():
    for rate_hz in (0, -1, math.inf, math.nan):
        with pytest.raises(ValueError, match="rate_hz"):
            DeadlineClock(rate_hz)
    for spin_s in (-1, math.inf, math.nan):
        with pytest.raises(ValueError, match="spin_s"):
            DeadlineClock(100, spin_s=spin_s)
    for nap_s in (0, -1e-3, math.inf, math.nan):
        with pytest.raises(ValueError, match="nap_s"):
            DeadlineClock(100, nap_s=nap_s)


def test_coarse_histogram_counts_every_value_in_its_bin():
    h = Histogram()
    for v in (0.3, 1.5, 3.0, 7.0, 12.0, 900.0, 1100.0, 2.5e5):  # none within a fine bin (1%) of an edge
        h.record(v)
    coarse = h.coarse()
    counts = dict(zip(coarse["edges_us"], coarse["counts"]))
    assert sum(coarse["counts"]) == 8
    assert counts[0.0] == 1 and counts[1.0] == 1 and counts[2.0] == 1 and counts[5.0] == 1 and counts[10.0] == 1
    assert counts[500.0] == 1 and counts[1e3] == 1 and counts[1e5] == 1  # the last bin is open-ended


NORMAL_LINUX_THREAD = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.sched_getscheduler(0) != os.SCHED_OTHER,
    reason="timer slack is a Linux setting, and a real-time thread has none",
)


@NORMAL_LINUX_THREAD
def test_timer_slack_is_set_per_thread_and_the_previous_value_comes_back():
    before = timer_slack()
    try:
        assert set_timer_slack(7) == before and timer_slack() == 7
        other = []
        thread = threading.Thread(target=lambda: other.append(timer_slack()))
        thread.start()
        thread.join()
        assert other == [7]  # a thread started now inherits it ...
        thread = threading.Thread(target=lambda: other.append(set_timer_slack(9)))
        thread.start()
        thread.join()
        assert timer_slack() == 7  # ... but its own setting stays its own
        assert set_timer_slack(before) == 7 and timer_slack() == before
    finally:
        set_timer_slack(before)
    for bad in (-1, MAX_TIMER_SLACK_NS + 1):
        with pytest.raises(ValueError, match="timer slack"):
            set_timer_slack(bad)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is a Linux call")
def test_a_refused_prctl_is_an_os_error_not_a_number():
    with pytest.raises(OSError) as refused:
        _prctl(9999, 0)  # no such option
    assert refused.value.errno == errno.EINVAL
