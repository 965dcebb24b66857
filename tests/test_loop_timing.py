"""Deadline pacing and timing histograms of the on-robot loop."""

import time

import numpy as np
import pytest

from firmware_bridge.timing import DeadlineClock, Histogram, clock


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
    assert [t.deadline for t in ticks] == [start + k * 0.005 for k in range(20)]
    assert all(t.started >= t.deadline for t in ticks)
    assert pacer.missed == 0 and [t.index for t in ticks] == list(range(20))


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


@pytest.mark.parametrize("nap_s", [1e-3, None])
def test_a_long_sleep_is_taken_in_naps_and_still_ends_at_the_deadline(monkeypatch, nap_s):
    sleeps = []
    real_sleep = time.sleep

    def recorded(seconds):
        sleeps.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr("firmware_bridge.timing.time.sleep", recorded)
    pacer = DeadlineClock(100.0, spin_s=200e-6, nap_s=nap_s)
    pacer.wait()  # the first deadline may be close; the next ones are a full period (10 ms) apart
    sleeps.clear()
    ticks = [pacer.wait() for _ in range(5)]
    assert all(t.started >= t.deadline for t in ticks)
    if nap_s is None:
        assert len(sleeps) <= 5 and max(sleeps) > 9e-3  # one sleep of about 9.8 ms per tick
    else:
        assert max(sleeps) <= nap_s
        assert len(sleeps) >= 10  # about 9.8 ms a tick in naps of 1 ms: ten a tick unless the VM stalls a nap
    # Waking late from a nap shortens the naps that follow: in all, about the period less the spin per tick.
    assert sum(sleeps) <= 5 * (10e-3 - 200e-6) + 1e-9


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="rate_hz"):
        DeadlineClock(0)
    with pytest.raises(ValueError, match="spin_s"):
        DeadlineClock(100, spin_s=-1)
    with pytest.raises(ValueError, match="nap_s"):
        DeadlineClock(100, nap_s=0)


def test_coarse_histogram_counts_every_value_in_its_bin():
    h = Histogram()
    for v in (0.3, 1.5, 3.0, 7.0, 12.0, 900.0, 1100.0, 2.5e5):  # none within a fine bin (1%) of an edge
        h.record(v)
    coarse = h.coarse()
    counts = dict(zip(coarse["edges_us"], coarse["counts"]))
    assert sum(coarse["counts"]) == 8
    assert counts[0.0] == 1 and counts[1.0] == 1 and counts[2.0] == 1 and counts[5.0] == 1 and counts[10.0] == 1
    assert counts[500.0] == 1 and counts[1e3] == 1 and counts[1e5] == 1  # the last bin is open-ended
