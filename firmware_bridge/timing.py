"""Loop timing: absolute deadlines with a sleep-then-spin wait, and per-tick timing histograms.

Deadlines lie on a fixed grid ``start + k * period``, so a late tick never
shifts the ones after it (no drift). By default the grid keeps its
deadlines as far from whole milliseconds of the clock as its period allows:
a Linux kernel with HZ = 100, 250 or 1000 (and no tick skew) fires its timer
tick on whole multiples of its tick period on this clock, so a grid on whole
milliseconds puts deadlines on the tick, and each of those starts late by the
interrupt's length (measured here, HZ=250: 25% of the ticks of a 1 kHz loop,
50% at 500 Hz, all of them at 250 Hz; 0.5-0.8% at 1 kHz off the tick).

The wait sleeps until ``spin_s`` before the deadline (the OS wakes a sleeper
tens to hundreds of microseconds late) and busy-waits the rest: by default a
quarter of the period, at most 1 ms, for periods of 2 ms and longer, and at
most 200 us for shorter ones (``default_spin_s``). This VM sometimes wakes
a sleeper 0.6-1 ms late; in ten interleaved 2 s rounds at 250 Hz, 0.08% of
the ticks of a 1 ms spin started late against 1.82% with 200 us, at the
cost of at most a quarter of a core while the loop runs (5% at 50 Hz). Part
of that lateness is the thread's timer slack, which Linux lets a normal thread's
timers fire late by so that wake-ups can be batched (50 us by default, none
under SCHED_FIFO); ``set_timer_slack`` takes it to 1 ns for the loop's
thread. Here that took a 250 Hz sleep's median overshoot from 130-140 us to
70-80 us (one sleep) and from 80-100 us to 30-40 us (naps). A sleep longer
than ``nap_s`` is taken as naps of at most that: after several milliseconds
idle a core (here, a VM's virtual CPU halted by its host) wakes late by more
than the spin more often. On a noisy day here, a bare loop sleeping its
period less the spin at once started 13-47% of its ticks late at 50 Hz and
28-40% at 100 Hz (3 s samples); in naps of at most 1 ms, 0.3-6.3%. A tick that
cannot start before the next grid point has missed its deadline: the missed
grid points are skipped, never run in a burst to catch up.

Histograms are log-binned (about 1% wide) so a run of any length keeps a
fixed, small amount of memory and recording one value is a few hundred
nanoseconds of pure Python.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import functools
import math
import os
import sys
import time
from dataclasses import dataclass
from fractions import Fraction

clock = time.perf_counter
"""The loop's clock: monotonic, nanosecond resolution."""

_GROWTH = 1.01
_LOG_GROWTH = math.log(_GROWTH)
_MIN_US = 1.0
_MAX_US = 1e8  # 100 s: beyond any tick
_BINS = int(math.log(_MAX_US / _MIN_US) / _LOG_GROWTH) + 2  # bin 0 holds values below 1 us


def tick_offset(period_s: float) -> float:
    """How far past whole multiples of the period the default grid lies: half the spacing of its deadlines
    modulo 1 ms, the farthest every deadline can be from whole milliseconds (0.5 ms for a whole number of
    milliseconds, 0.25 ms at 400 Hz, 0.125 ms at 4 kHz)."""
    spacing_ms = 1.0 / Fraction(period_s * 1e3).limit_denominator(64).denominator
    return 0.5e-3 * spacing_ms


_PR_SET_TIMERSLACK, _PR_GET_TIMERSLACK = 29, 30  # <linux/prctl.h>
MAX_TIMER_SLACK_NS = 1_000_000_000
"""1 s: far beyond any useful slack, and within the ``int`` that reading it back returns."""


def timer_slack() -> int:
    """The calling thread's timer slack in nanoseconds (recent kernels report 0 for a real-time thread, which
    has none). ``OSError`` where the OS has no such setting."""
    return _prctl(_PR_GET_TIMERSLACK, 0)


def set_timer_slack(ns: int) -> int:
    """Set the calling thread's timer slack to ``ns`` nanoseconds (0: the thread's default; recent kernels
    ignore it for a real-time thread) and return the slack it had. ``OSError`` where the OS has no such setting
    or refuses it."""
    if not 0 <= ns <= MAX_TIMER_SLACK_NS:
        raise ValueError(f"timer slack: 0 to {MAX_TIMER_SLACK_NS} ns, got {ns}")
    previous = timer_slack()
    _prctl(_PR_SET_TIMERSLACK, ns)
    return previous


@functools.cache
def _prctl_function():
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    # int prctl(int option, unsigned long arg2, ...): an int result, whose -1 a wider restype would not show.
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


def _prctl(option: int, value: int) -> int:
    if not sys.platform.startswith("linux"):
        raise OSError(errno.ENOSYS, "timer slack is a Linux setting")
    result = _prctl_function()(option, value, 0, 0, 0)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


COARSE_EDGES_US = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5)


class Histogram:
    """Durations in microseconds: count, exact max, and percentiles within about 1%.

    Bin 0 holds values below 1 us (reported as 0); bin i >= 1 holds [1.01**(i-1), 1.01**i) us.
    """

    __slots__ = ("counts", "count", "max_us")

    def __init__(self) -> None:
        self.counts = [0] * _BINS
        self.count = 0
        self.max_us = 0.0

    def record(self, us: float) -> None:
        if us < _MIN_US:
            index = 0
        else:
            index = min(int(math.log(us) / _LOG_GROWTH) + 1, _BINS - 1)
        self.counts[index] += 1
        self.count += 1
        if us > self.max_us:
            self.max_us = us

    def merge(self, other: "Histogram") -> None:
        """Add ``other``'s values to these: the histogram of both runs' values together."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.count += other.count
        self.max_us = max(self.max_us, other.max_us)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100) in us: the geometric middle of its bin, capped at the exact max."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                if index == 0:
                    return 0.0
                return min(_GROWTH ** (index - 0.5), self.max_us)
        return self.max_us

    def summary(self) -> dict[str, float]:
        """``{p50, p99, max}`` in microseconds, rounded to 0.1 us."""
        return {
            "p50": round(self.percentile(50), 1),
            "p99": round(self.percentile(99), 1),
            "max": round(self.max_us, 1),
        }

    def coarse(self) -> dict[str, list[float]]:
        """Counts between ``COARSE_EDGES_US`` (the last bin open-ended): a histogram small enough for JSON."""
        counts = [0] * len(COARSE_EDGES_US)
        for low, high, n in self.bins():
            middle = math.sqrt(low * high) if low > 0 else 0.0
            counts[bisect.bisect_right(COARSE_EDGES_US, middle) - 1] += n
        return {"edges_us": list(COARSE_EDGES_US), "counts": counts}

    def bins(self) -> list[tuple[float, float, int]]:
        """Non-empty bins as ``(low_us, high_us, count)``, for plotting."""
        out = []
        for index, n in enumerate(self.counts):
            if n:
                low = 0.0 if index == 0 else _GROWTH ** (index - 1)
                out.append((low, _GROWTH**index, n))
        return out


TIMING_CHANNELS = ("period_error", "read", "policy", "write", "latency")
"""What each tick measures, in microseconds:

- ``period_error``: how late the tick started after its deadline;
- ``read``: getting the state: collecting the reply to the previous command (on a motor board normally
  waiting in the receive buffer already; on a Dynamixel chain a SYNC_READ made now), or with
  ``state_source: fresh`` a state read, request to reply;
- ``policy``: observation building, inference and action mapping;
- ``write``: the command: sent (its reply is the next tick's state), or with ``fresh`` sent and acknowledged;
- ``latency``: the state in hand to the command sent (acknowledged, with ``fresh``): the tick's
  state-to-command time.
"""


class TickTimings:
    """One histogram per channel in ``TIMING_CHANNELS``."""

    def __init__(self) -> None:
        self.histograms = {name: Histogram() for name in TIMING_CHANNELS}

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: h.summary() for name, h in self.histograms.items()}

    def coarse(self) -> dict[str, dict[str, list[float]]]:
        return {name: h.coarse() for name, h in self.histograms.items()}


@dataclass
class Tick:
    index: int
    """Ticks run so far in this loop, starting at 0."""
    deadline: float
    """The grid point this tick belongs to (``clock()`` seconds)."""
    started: float
    """When the wait returned."""
    missed: int
    """Grid points skipped just before this tick because the loop was late."""

    @property
    def period_error_us(self) -> float:
        return (self.started - self.deadline) * 1e6


def default_spin_s(period_s: float) -> float:
    """The spin before each deadline unless one is given: a quarter of the period, at most 1 ms for periods of
    2 ms and longer and at most 200 us for shorter ones. At 1 kHz, in alternating paired benchmark runs, the loop
    started 0.38-0.42% of its ticks late with 200 us and 0.51-1.83% with 250 us."""
    return min(1e-3 if period_s >= 2e-3 else 200e-6, period_s / 4)


class DeadlineClock:
    """Absolute-deadline pacing: ``wait()`` returns at the next grid point, reporting lateness and misses."""

    def __init__(
        self,
        rate_hz: float,
        *,
        spin_s: float | None = None,
        nap_s: float | None = 1e-3,
        start: float | None = None,
    ) -> None:
        """``spin_s``: None for ``default_spin_s`` of the period."""
        if not 0 < rate_hz < math.inf:
            raise ValueError(f"rate_hz: a finite number > 0, got {rate_hz}")
        if spin_s is None:
            spin_s = default_spin_s(1.0 / rate_hz)
        if not 0 <= spin_s < math.inf:
            raise ValueError(f"spin_s: a finite number of seconds >= 0, got {spin_s}")
        if nap_s is not None and not (0 < nap_s < math.inf):
            raise ValueError(f"nap_s: a finite number of seconds > 0 (or None for one sleep), got {nap_s}")
        self.period = 1.0 / rate_hz
        self.spin_s = spin_s
        self.nap_s = nap_s
        if start is None:  # the first grid point from now on, off the kernel's tick (see the module's docstring)
            offset = tick_offset(self.period)
            start = math.ceil((clock() - offset) / self.period) * self.period + offset
        self.start = start
        self._k = 0  # grid index of the next deadline
        self.ticks = 0
        self.missed = 0

    def next_deadline(self) -> float:
        return self.start + self._k * self.period

    def wait(self) -> Tick:
        """Block until the next deadline (sleep, then spin). If it has passed by a full period or more, before
        the wait or during a sleep that overslept, skip to the latest grid point that has passed and count the
        skipped ones as missed."""
        deadline = self.next_deadline()
        now = clock()
        if now < deadline:
            coarse = deadline - self.spin_s - now
            while self.nap_s is not None and coarse > self.nap_s:
                time.sleep(self.nap_s)
                coarse = deadline - self.spin_s - clock()
            if coarse > 0:
                time.sleep(coarse)
            now = clock()
            while now < deadline:
                now = clock()
        missed = 0
        if now - deadline >= self.period:
            missed = int((now - deadline) / self.period)
            self._k += missed
            deadline = self.next_deadline()
        tick = Tick(index=self.ticks, deadline=deadline, started=now, missed=missed)
        self._k += 1
        self.ticks += 1
        self.missed += missed
        return tick
