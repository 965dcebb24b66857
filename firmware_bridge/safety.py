"""What stops the on-robot loop, checked every tick; every check fails closed.

Each trigger raises ``SafetyStop`` with a ``StopReason`` and a message that
names what was seen (the fault bits, the bus error, the joint with a NaN).
The loop catches it, puts the robot in its safe state and reports it.
"""

from __future__ import annotations

import enum
from collections import deque

import numpy as np

from firmware_bridge.state import Fault, RobotState


class StopReason(str, enum.Enum):
    NON_FINITE_ACTION = "non-finite policy output"
    POLICY_ERROR = "policy failed"
    NON_FINITE_OBSERVATION = "non-finite observation"
    STALE_STATE = "stale state"
    BUS_ERROR = "bus error"
    MOTOR_FAULT = "motor fault"
    SENSOR_FAULT = "sensor fault"
    MISSED_DEADLINES = "too many missed deadlines"


class SafetyStop(Exception):
    """The loop must go to the safe state now; ``str()`` is ``"<reason>: <detail>"``."""

    def __init__(self, reason: StopReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def describe_faults(bits: int) -> str:
    names = [f.name for f in Fault if bits & f]
    unknown = bits & ~sum(Fault)
    if unknown:
        names.append(f"0x{unknown:x}")
    return "|".join(n for n in names if n)


def fault_stop(faults: int, detail: str = "") -> SafetyStop:
    """The stop for a state's fault bits (and ``RobotState.fault_detail``): a sensor fault when only sensors
    stopped delivering, else a motor fault (the board's or a motor's)."""
    if not faults & ~int(Fault.SENSOR_TIMEOUT):
        return SafetyStop(StopReason.SENSOR_FAULT, f"the board reports {describe_faults(faults)}: its IMU has "
                                                   "stopped delivering samples (IMU_STALE)")  # fmt: skip
    where = f" ({detail})" if detail else ""
    return SafetyStop(StopReason.MOTOR_FAULT, f"the motors report {describe_faults(faults)}{where}")


class SafetyMonitor:
    """Per-tick checks on the state, the observation and the deadline budget.

    ``stale_after_s``: the state's own timestamp (the motor board's clock) must advance within this much
    wall time; a frozen sensor that still answers is as stale as one that does not.
    ``max_missed`` within ``miss_window`` consecutive deadlines: more and the loop is too late to control
    the robot.
    """

    def __init__(self, *, stale_after_s: float, max_missed: int, miss_window: int, feature_slices=None) -> None:
        if stale_after_s <= 0:
            raise ValueError(f"stale_after_s: must be positive, got {stale_after_s}")
        if max_missed < 0 or miss_window < 1:
            raise ValueError(f"max_missed {max_missed} / miss_window {miss_window}: need max_missed >= 0, window >= 1")
        self.stale_after_s = stale_after_s
        self.max_missed = max_missed
        self.miss_window = miss_window
        self.feature_slices = feature_slices or {}
        # (deadline index, missed count) of recent misses; the window slides over deadline indices.
        self._misses: deque[tuple[int, int]] = deque()
        self._missed_in_window = 0
        self._deadlines_seen = 0
        self._last_timestamp: float | None = None
        self._last_advance = 0.0

    def check_state(self, state: RobotState, now: float) -> None:
        """Fault bits, and a state timestamp that has stopped advancing (``now``: the loop clock)."""
        if state.faults:
            raise fault_stop(state.faults, state.fault_detail)
        if self._last_timestamp is None or state.timestamp != self._last_timestamp:
            self._last_timestamp = state.timestamp
            self._last_advance = now
        elif now - self._last_advance > self.stale_after_s:
            raise SafetyStop(
                StopReason.STALE_STATE,
                f"state timestamp stuck at {state.timestamp:.6f} s for {(now - self._last_advance) * 1e3:.0f} ms "
                f"(limit {self.stale_after_s * 1e3:.0f} ms)",
            )

    def missing_state(self, now: float, error: Exception) -> None:
        """A request got no reply: tolerated while the last good state is younger than ``stale_after_s``
        (the loop then acts on it, as the simulator's observation dropout trains for), a stop after that."""
        if self._last_timestamp is None or now - self._last_advance > self.stale_after_s:
            age = "no state yet" if self._last_timestamp is None else f"{(now - self._last_advance) * 1e3:.0f} ms"
            raise SafetyStop(
                StopReason.STALE_STATE, f"{error} (last good state: {age}; limit {self.stale_after_s * 1e3:.0f} ms)"
            )

    def check_observation(self, obs: np.ndarray) -> None:
        if not np.isfinite(obs).all():
            bad = np.flatnonzero(~np.isfinite(obs))
            names = [name for name, s in self.feature_slices.items() if any(s.start <= i < s.stop for i in bad)]
            raise SafetyStop(
                StopReason.NON_FINITE_OBSERVATION,
                f"observation index(es) {bad.tolist()} ({', '.join(names) or 'unknown feature'}) not finite",
            )

    def check_deadlines(self, missed: int) -> None:
        """Count this tick's deadline and the ``missed`` ones skipped before it."""
        self._deadlines_seen += missed + 1
        if missed:
            self._misses.append((self._deadlines_seen, missed))
            self._missed_in_window += missed
        while self._misses and self._misses[0][0] <= self._deadlines_seen - self.miss_window:
            self._missed_in_window -= self._misses.popleft()[1]
        if self._missed_in_window > self.max_missed:
            raise SafetyStop(
                StopReason.MISSED_DEADLINES,
                f"{self._missed_in_window} missed in the last {self.miss_window} deadlines (budget {self.max_missed})",
            )
