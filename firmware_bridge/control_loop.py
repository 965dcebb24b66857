"""The on-robot loop: arm, approach the start pose slowly, run the policy at a fixed rate, always end safe.

One policy tick, on absolute deadlines:
state (the reply to the previous command, collected now, or a fresh read) ->
observation -> policy -> action mapping -> command sent -> hand the
transition to the sinks (never blocking). A new policy given with
``swap_policy`` (from any thread) takes effect at the start of the next tick.

Every way out of ``run`` (duration reached, ``stop`` set by a signal handler,
a ``SafetyStop``, a bus failure, an exception from anywhere) passes through
the safe stop: the motors damp for the robot spec's ``safe_state.damping_s``,
then their torque goes off. Safety stops and bus failures are reported in
the ``LoopReport``; any other exception propagates after the safe stop.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from firmware_bridge.action import ActionMapper, NonFiniteActionError
from firmware_bridge.motor_bus import BusError, BusTimeout, MotorBus, MotorFault, ReplyLate
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.safety import SafetyMonitor, SafetyStop, StopReason, fault_stop
from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import RobotState
from firmware_bridge.timing import MAX_TIMER_SLACK_NS, DeadlineClock, TickTimings, clock, set_timer_slack, timer_slack
from firmware_bridge.transitions import Event, Transition, TransitionSink

Policy = Callable[[np.ndarray], np.ndarray]
"""Observation (obs_dim,) float32 -> action (act_dim,) in [-1, 1]; ``PolicyRuntime`` is one."""


@dataclass(frozen=True)
class LoopConfig:
    rate_hz: float
    """Ticks per second."""
    duration_s: float | None = None
    """Policy phase length; None runs until ``stop`` is set or a safety stop."""
    spin_s: float | None = None
    """Busy-wait this long before each deadline instead of sleeping (the OS wakes sleepers late); None: a
    quarter of the period, at most 1 ms (200 us below 2 ms periods; ``firmware_bridge.timing.default_spin_s``)."""
    nap_s: float | None = 1e-3
    """Sleep at most this long at a time before the spin (see ``DeadlineClock``); None: one sleep."""
    timer_slack_ns: int | None = 1
    """The loop thread's timer slack while it runs (Linux; see ``firmware_bridge.timing``): how much later than
    asked the kernel may end its sleeps. 1 ns is the least; None leaves the OS's (50 us for a normal thread)."""
    approach_speed: float = 0.3
    """Fastest joint speed [rad/s] while moving from the armed pose to the spec's start pose."""
    approach_tolerance: float = 0.01
    """No approach when every joint is already this close to the start pose [rad] (encoder resolution)."""
    stale_after_s: float = 0.1
    """A state whose timestamp has not advanced for this long is stale (the motor board's watchdog is 100 ms)."""
    max_missed: int | None = None
    """Missed deadlines allowed within ``miss_window_s``; None: 10% of the window's deadlines, at least 2."""
    miss_window_s: float = 1.0
    state_source: Literal["reply", "fresh"] = "reply"
    """Where a tick's observation comes from. ``reply``: the state the motors sent back with the previous
    command, one bus round trip per tick, sent at one tick's end and collected at the next one's start so
    that it overlaps the wait (what 1 kHz needs; the state is up to a period old, a loop delay
    of the kind training covers with its 0-1 tick latency randomization); a tick with no reply on its way (the
    first, or one after a send that timed out) reads a fresh state instead. ``fresh``: a separate state read
    at the tick's start, two round trips per tick, for slow loops on fast buses that want the freshest
    state."""
    reply_wait: float | None = 0.5
    """With ``state_source: reply``, in the policy phase: how far past its deadline, in periods, a tick waits for
    the reply to the previous command (on a bus that has such a reply: the motor board; a Dynamixel chain reads
    its state at the tick's start). A later reply (a loaded host, a USB adapter's latency spike) does not cost
    the deadline: the tick runs on the newest state it has, counts it in ``late_replies``, and the reply is
    dropped as stale when it comes. The bus timeout still ends the wait if it comes first (counted in
    ``bus_timeouts``), and ``stale_after_s`` still stops the loop when no new state comes at all. None waits
    for the bus timeout alone."""
    safe_stop_attempts: int = 3
    """Tries of the safe-stop request before giving up (the board's own watchdog is then the last line)."""

    def __post_init__(self) -> None:
        if not 0 < self.rate_hz < math.inf:
            raise ValueError(f"rate_hz: a finite number > 0, got {self.rate_hz}")
        # Written so that NaN fails every check: a NaN bound would compare false forever and switch its stop off.
        if self.duration_s is not None and not self.duration_s >= 0:
            raise ValueError(f"duration_s: a number of seconds >= 0, or None, got {self.duration_s}")
        for name in ("approach_speed", "miss_window_s"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name}: a finite number > 0, got {getattr(self, name)}")
        if not 0 <= self.stale_after_s < math.inf:  # 0: the least the loop allows, two periods
            raise ValueError(f"stale_after_s: a finite number >= 0, got {self.stale_after_s}")
        if not 0 <= self.approach_tolerance < math.inf:
            raise ValueError(f"approach_tolerance: a finite number >= 0, got {self.approach_tolerance}")
        if self.max_missed is not None and (isinstance(self.max_missed, bool) or not isinstance(self.max_missed, int)
                                            or self.max_missed < 0):  # fmt: skip
            raise ValueError(f"max_missed: a whole number >= 0, or None, got {self.max_missed!r}")
        if self.spin_s is not None and not (0 <= self.spin_s < math.inf):
            raise ValueError(f"spin_s: a finite number of seconds >= 0, or None, got {self.spin_s}")
        if self.nap_s is not None and not (0 < self.nap_s < math.inf):
            raise ValueError(f"nap_s: a finite number of seconds > 0, or None, got {self.nap_s}")
        slack = self.timer_slack_ns
        if slack is not None and (
            isinstance(slack, bool) or not isinstance(slack, int) or not 1 <= slack <= MAX_TIMER_SLACK_NS
        ):
            raise ValueError(f"timer_slack_ns: a whole number of nanoseconds, 1 to {MAX_TIMER_SLACK_NS}, or None, "
                             f"got {slack!r}")  # fmt: skip
        if self.state_source not in ("reply", "fresh"):
            raise ValueError(f"state_source: 'reply' or 'fresh', got {self.state_source!r}")
        if self.reply_wait is not None and not (0 <= self.reply_wait < math.inf):
            raise ValueError(f"reply_wait: a finite number of periods >= 0, or None, got {self.reply_wait}")
        if self.safe_stop_attempts < 1:
            raise ValueError(f"safe_stop_attempts: must be at least 1, got {self.safe_stop_attempts}")

    def check_spec(self, spec: RobotSpec) -> None:
        """Refuse settings this robot cannot take. The approach's targets skip the action mapper's rate limit,
        so its speed must itself respect every joint's ``max_velocity``."""
        slowest = int(np.argmin(spec.max_velocity))
        if self.approach_speed > spec.max_velocity[slowest]:
            raise ValueError(
                f"approach_speed: {self.approach_speed:g} rad/s exceeds joint {spec.joint_names[slowest]}'s "
                f"max_velocity of {spec.max_velocity[slowest]:g} rad/s"
            )

    @property
    def miss_window(self) -> int:
        return max(1, round(self.miss_window_s * self.rate_hz))

    @property
    def missed_budget(self) -> int:
        return self.max_missed if self.max_missed is not None else max(2, self.miss_window // 10)


@dataclass
class LoopReport:
    """What happened; ``summary()`` gives the ``firmware-bridge run`` JSON keys."""

    rate_hz: float
    ticks: int = 0
    approach_ticks: int = 0
    missed_deadlines: int = 0
    """In the policy phase; ``ticks + missed_deadlines`` is the number of deadlines it had."""
    approach_missed: int = 0
    bus_timeouts: int = 0
    """Requests that got no reply; each tolerated while the last good state was fresh enough."""
    late_replies: int = 0
    """Ticks that stopped waiting for their state (``LoopConfig.reply_wait``) and ran on an older one."""
    wall_s: float = 0.0
    """Policy phase length, first tick to the end of the last."""
    timings: TickTimings = field(default_factory=TickTimings)
    safety_stop: str | None = None
    stop_reason: StopReason | None = None
    safe_state_reached: bool = False
    safe_stop_error: str | None = None
    policy_versions: list[int] = field(default_factory=list)
    timer_slack_ns: int | None = None
    """The loop thread's timer slack while it ran [ns], where the loop set it (``LoopConfig.timer_slack_ns``)."""
    spin_s: float | None = None
    """The busy-wait before each deadline that the loop used (``LoopConfig.spin_s``, or the rate's default)."""
    bus_counters: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        t = self.timings.summary()
        deadlines = self.ticks + self.missed_deadlines
        return {
            "ticks": self.ticks,
            "missed_deadlines": self.missed_deadlines,
            "missed_fraction": self.missed_deadlines / deadlines if deadlines else 0.0,
            "rate_hz": self.rate_hz,
            "achieved_rate_hz": round(self.ticks / self.wall_s, 3) if self.wall_s > 0 else 0.0,
            "wall_s": round(self.wall_s, 4),
            "approach_ticks": self.approach_ticks,
            "approach_missed_deadlines": self.approach_missed,
            "period_error_us": t["period_error"],
            "latency_us": t["latency"],
            "read_us": t["read"],
            "policy_us": t["policy"],
            "write_us": t["write"],
            "safety_stop": self.safety_stop,
            "safe_state_reached": self.safe_state_reached,
            "safe_stop_error": self.safe_stop_error,
            "bus_timeouts": self.bus_timeouts,
            "late_replies": self.late_replies,
            "bad_frames": int(self.bus_counters.get("bad_frames", self.bus_counters.get("errors", 0))),
            "bus_counters": self.bus_counters,
            "policy_versions": self.policy_versions,
            "timer_slack_ns": self.timer_slack_ns,
            "spin_us": None if self.spin_s is None else round(self.spin_s * 1e6, 3),
            "timing_histograms_us": self.timings.coarse(),
        }


class ControlLoop:
    def __init__(
        self,
        bus: MotorBus,
        builder: ObservationBuilder,
        mapper: ActionMapper,
        policy: Policy,
        policy_version: int,
        config: LoopConfig,
        *,
        goals: dict[str, float] | None = None,
        sinks: Sequence[TransitionSink] = (),
        stop: threading.Event | None = None,
    ) -> None:
        spec = bus.spec
        if builder.robot_spec.joint_names != spec.joint_names or mapper.robot_spec.joint_names != spec.joint_names:
            raise ValueError("ControlLoop: bus, observation builder and action mapper must share one robot spec")
        config.check_spec(spec)
        self.bus = bus
        self.spec = spec
        self.builder = builder
        self.mapper = mapper
        self.config = config
        self.goals = goals
        self.sinks = list(sinks)
        self.stop = stop or threading.Event()
        # One tuple, replaced whole: a swap from another thread is a single reference store.
        self._requested: tuple[Policy, int] = (policy, policy_version)

    def swap_policy(self, policy: Policy, version: int) -> None:
        """Run ``policy`` from the next tick on. It must already be checked against this robot
        (``PolicyRuntime`` with the robot spec does that); the loop only swaps the reference."""
        self._requested = (policy, version)

    def run(self) -> LoopReport:
        config = self.config
        report = LoopReport(rate_hz=config.rate_hz)
        monitor = SafetyMonitor(
            # A slow loop reads the state only once a period: never call it stale within two of them.
            stale_after_s=max(config.stale_after_s, 2.0 / config.rate_hz),
            max_missed=config.missed_budget,
            miss_window=config.miss_window,
            feature_slices=self.builder.slices(),
        )
        previous_slack = self._set_timer_slack(report)
        try:
            if self.stop.is_set():  # Ctrl-C or SIGTERM while the bus opened: the motors are never armed
                return report
            armed = self._guard(self.bus.arm)
            arrived = clock()
            monitor.check_state(armed, arrived)
            self._emit(Event(arrived, "armed", "motors armed"))
            deadlines = DeadlineClock(config.rate_hz, spin_s=config.spin_s, nap_s=config.nap_s)
            report.spin_s = deadlines.spin_s
            last = self._approach((armed, arrived), deadlines, monitor, report)
            if last is not None:
                self._emit(Event(clock(), "policy", "policy phase starts"))
                self._policy_phase(last, deadlines, monitor, report)
        except SafetyStop as stop:
            report.safety_stop = str(stop)
            report.stop_reason = stop.reason
            self._emit(Event(clock(), "safety_stop", str(stop), {"reason": stop.reason.name}))
        finally:
            try:
                self._safe_stop(report)
                report.bus_counters = self.bus.counters()
            finally:
                if previous_slack is not None:
                    with contextlib.suppress(OSError):  # the thread's slack is never worth a lost report
                        set_timer_slack(previous_slack)
        return report

    def _set_timer_slack(self, report: LoopReport) -> int | None:
        """Apply ``LoopConfig.timer_slack_ns`` to this thread; the slack to restore, or None. A refusal is an
        event, not a stop: the loop keeps its deadlines without it, only less precisely."""
        wanted = self.config.timer_slack_ns
        if wanted is None:
            return None
        try:
            previous = set_timer_slack(wanted)
        except OSError as exc:
            self._emit(Event(clock(), "timer_slack", f"timer slack of {wanted} ns not set: {exc}"))
            return None
        with contextlib.suppress(OSError):
            report.timer_slack_ns = timer_slack()  # 0 under SCHED_FIFO on recent kernels, which ignore the setting
        return previous

    def _approach(self, armed, deadlines: DeadlineClock, monitor: SafetyMonitor, report):
        """Move in straight joint-space lines from the armed pose to the start pose at ``approach_speed``.
        Returns the last reply and when it arrived, or None if stopped on the way."""
        last = armed
        # From the pose the motors hold now, even where a joint rests outside its limits (a sagged leg): a start
        # clipped to the limits would jump such a joint to its limit in one tick. Every target lies between
        # that pose and the start pose, so none drives a joint further out.
        q0 = armed[0].joint_pos.astype(np.float64)
        if not np.isfinite(q0).all():
            bad = ", ".join(self.spec.joint_names[i] for i in np.flatnonzero(~np.isfinite(q0)))
            raise SafetyStop(StopReason.NON_FINITE_OBSERVATION, f"joint position of {bad} not finite once armed")
        distance = float(np.max(np.abs(self.spec.start - q0)))
        if distance <= self.config.approach_tolerance:
            return last
        steps = math.ceil(distance / (self.config.approach_speed / self.config.rate_hz))
        for i in range(1, steps + 1):
            tick = deadlines.wait()
            report.approach_missed += tick.missed
            monitor.check_deadlines(tick.missed)
            if self.stop.is_set():
                return None
            reply = self._tolerate_timeout(
                self.bus.exchange, monitor, report, q0 + (self.spec.start - q0) * (i / steps)
            )
            if reply is not None:
                last = (reply, clock())
                monitor.check_state(reply, last[1])
            report.approach_ticks += 1
        return last

    def _policy_phase(self, last, deadlines: DeadlineClock, monitor: SafetyMonitor, report: LoopReport) -> None:
        hist = self.builder.new_history(self.goals)
        h = report.timings.histograms
        h_period, h_read, h_policy, h_write, h_latency = (
            h["period_error"], h["read"], h["policy"], h["write"], h["latency"]
        )  # fmt: skip
        bus, builder, mapper, sinks = self.bus, self.builder, self.mapper, self.sinks
        fresh = self.config.state_source == "fresh"
        reply_wait_s = None if self.config.reply_wait is None else self.config.reply_wait / self.config.rate_hz
        reply, reply_arrived = last
        # As the simulator does at reset: rate limiting starts from the measured pose.
        mapper.reset(reply.joint_pos)
        active: tuple[Policy, int] | None = None
        pending = False  # a command was sent and its reply, the next tick's state, not yet collected
        end = None
        while not self.stop.is_set():
            tick = deadlines.wait()
            if end is None:
                end = tick.deadline + (self.config.duration_s if self.config.duration_s is not None else math.inf)
                started = tick.deadline
            if tick.deadline >= end:
                # Of the deadlines skipped on the way here, those at or past the end were never the run's.
                beyond = min(tick.missed, int((tick.deadline - end) / deadlines.period + 1e-9))
                report.missed_deadlines += tick.missed - beyond
                break
            report.missed_deadlines += tick.missed
            monitor.check_deadlines(tick.missed)
            requested = self._requested
            if requested is not active:
                active = requested
                policy, version = active
                report.policy_versions.append(version)
                self._emit(Event(tick.started, "policy_version", f"policy version {version}", {"version": version}))

            t0 = clock()
            # With no reply on its way (the first tick, or after a send that timed out) the state in hand is a
            # period old or more: read a fresh one rather than act on it.
            if fresh or not pending:
                read = self._tolerate_timeout(bus.read_state, monitor, report)
                t1 = clock()
                if read is not None:
                    reply, reply_arrived = read, t1
                    monitor.check_state(read, t1)
            else:
                pending = False
                wait_s = None if reply_wait_s is None else tick.deadline + reply_wait_s - t0
                answer = self._tolerate_timeout(bus.collect_reply, monitor, report, wait_s)
                if answer is not None:
                    reply, reply_arrived = answer, clock()
                    monitor.check_state(answer, reply_arrived)
                t1 = clock()
            state, arrived = reply, reply_arrived
            obs = builder.build(state, hist)
            monitor.check_observation(obs)
            try:
                action = policy(obs)
            except Exception as exc:  # a swapped-in policy that fails on a real observation: stop, do not crash
                raise SafetyStop(
                    StopReason.POLICY_ERROR, f"policy version {version} raised {type(exc).__name__}: {exc}"
                ) from None
            try:
                command = mapper.map(action)
            except NonFiniteActionError as exc:
                raise SafetyStop(StopReason.NON_FINITE_ACTION, f"{exc} (policy version {version})") from None
            hist.record(action, state)
            t2 = clock()
            if fresh:
                answer = self._tolerate_timeout(bus.exchange, monitor, report, command)
                if answer is not None and answer.faults:
                    raise fault_stop(answer.faults, answer.fault_detail)
            else:
                # The reply is collected at the next tick's start: the round trip overlaps the wait.
                pending = self._tolerate_timeout(self._send_command, monitor, report, command) is not None
            t3 = clock()

            period_error, read_us, policy_us = tick.period_error_us, (t1 - t0) * 1e6, (t2 - t1) * 1e6
            write_us, latency_us = (t3 - t2) * 1e6, (t3 - arrived) * 1e6
            h_period.record(period_error)
            h_read.record(read_us)
            h_policy.record(policy_us)
            h_write.record(write_us)
            h_latency.record(latency_us)
            if sinks:
                timings = {"period_error": period_error, "read": read_us, "policy": policy_us, "write": write_us,
                           "latency": latency_us}  # fmt: skip
                item = Transition(
                    report.ticks, tick.started, state, obs, action, command, version, timings, tick.missed
                )
                for sink in sinks:
                    sink.offer(item)
            report.ticks += 1
            report.wall_s = t3 - started
        if pending:
            # The last command's reply: consumed here, so the safe stop's requests find a clean bus.
            self._tolerate_timeout(bus.collect_reply, monitor, report)

    def _send_command(self, command: np.ndarray) -> bool:
        self.bus.send_command(command)
        return True

    def _tolerate_timeout(self, call, monitor: SafetyMonitor, report: LoopReport, *args) -> RobotState | None:
        """``call(*args)``'s state, or None after a timeout the safety monitor still tolerates (see
        ``SafetyMonitor.missing_state``); a bus error is always a stop."""
        try:
            return call(*args)
        except ReplyLate as exc:
            report.late_replies += 1
            if exc.state is not None:  # an earlier command's late reply: older than awaited, newer than in hand
                return exc.state
            monitor.missing_state(clock(), exc)
            return None
        except BusTimeout as exc:
            report.bus_timeouts += 1
            monitor.missing_state(clock(), exc)
            return None
        except MotorFault as exc:
            raise SafetyStop(StopReason.MOTOR_FAULT, str(exc)) from None
        except BusError as exc:
            raise SafetyStop(StopReason.BUS_ERROR, str(exc)) from None

    def _guard(self, call, *args) -> RobotState:
        """A bus call whose failure is a safety stop: no answer is a stale state, a wrong answer a bus error."""
        try:
            return call(*args)
        except BusTimeout as exc:
            raise SafetyStop(StopReason.STALE_STATE, str(exc)) from None
        except MotorFault as exc:
            raise SafetyStop(StopReason.MOTOR_FAULT, str(exc)) from None
        except BusError as exc:
            raise SafetyStop(StopReason.BUS_ERROR, str(exc)) from None

    def _safe_stop(self, report: LoopReport) -> None:
        """Damping, held for the spec's ``safe_state.damping_s`` so the robot comes to rest, then torque off.
        The robot is safe once its torque is off, even if the damping step went unanswered."""
        errors: list[str] = []
        hold = self.spec.safe_state.damping_s
        if self._attempt(self.bus.damp, errors):
            self._emit(Event(clock(), "damping", f"motors damping for {hold:g} s before torque off"))
            time.sleep(hold)
        report.safe_state_reached = self._attempt(self.bus.torque_off, errors)
        if not report.safe_state_reached:
            report.safe_stop_error = (
                f"safe stop failed {len(errors)} time(s), last: {errors[-1]}; the motor board's watchdog is the "
                "last line"
            )
        elif errors:
            detail = f"torque off (damping went unanswered: {errors[-1]})"
        else:
            detail = "damped, then torque off"
        self._emit(
            Event(
                clock(),
                "safe_state" if report.safe_state_reached else "safe_stop_failed",
                report.safe_stop_error or f"motors in the safe state: {detail}",
            )
        )

    def _attempt(self, step, errors: list[str]) -> bool:
        """Up to ``safe_stop_attempts`` tries of one safe-stop step; whether one was answered."""
        for _ in range(self.config.safe_stop_attempts):
            try:
                step()
            except BusError as exc:  # BusTimeout included: try again, the line may have hiccuped
                errors.append(str(exc))
                continue
            except Exception as exc:  # whatever a failed damping step raised, torque off must still be tried
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            return True
        return False

    def _emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.offer(event)
