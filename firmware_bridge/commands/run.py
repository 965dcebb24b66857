"""``firmware-bridge run``: run an exported policy on the robot at a fixed rate, and always end in the safe state.

Exit status: 0 when the run ends by its duration, Ctrl-C or SIGTERM; 3 after
a safety stop (the robot is in its safe state); 4 when even the safe stop
failed (the motor board's watchdog is then the last line); 2 for a refused
policy or a bad configuration; 1 when the bus cannot be opened.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import signal
import sys
import threading
from pathlib import Path

from firmware_bridge.action import ActionMapper
from firmware_bridge.calibration import Calibration
from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.learner_spool import SpoolError
from firmware_bridge import learner_options
from firmware_bridge.control_loop import ControlLoop, LoopConfig, LoopReport
from firmware_bridge.motor_bus import BusError
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.realtime import RealtimeSettings
from firmware_bridge.spec import RobotSpec
from firmware_bridge.task import TaskInterface
from firmware_bridge.transitions import BackgroundSink, Event
from firmware_bridge.timing import MAX_TIMER_SLACK_NS, clock

EXIT_SAFETY_STOP = 3
EXIT_SAFE_STOP_FAILED = 4
LOGGING_SWITCH_INTERVAL_US = 200.0
"""With a log writer or learner uplink thread running Python code, Python's default 5 ms switch interval lets
that thread keep the interpreter for up to 5 ms while the loop waits for it. In an A/B run here (250 Hz with
the MCAP log) 200 us took the loop's p99 policy time from 4.1 ms to 0.7 ms; this VM's noise blurs repeats."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, help="exported policy (.onnx) with its metadata")
    parser.add_argument("--robot", required=True, help="robot name or path to configs/robots/<robot>.yaml")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the motor board or Dynamixel chain (e.g. /dev/ttyUSB0)")
    where.add_argument("--zmq", metavar="ADDR", help="motor controller on the network (e.g. tcp://10.0.0.2:5600)")
    parser.add_argument("--baud", type=int, help="serial baud rate (default: the robot spec's)")
    parser.add_argument("--rate", type=float, help="loop rate in Hz (default: the robot spec's control rate)")
    parser.add_argument("--duration", type=float, help="seconds of policy control (default: until Ctrl-C/SIGTERM)")
    parser.add_argument("--task", help="task name or file (default: the task recorded in the policy)")
    parser.add_argument("--goal", action="append", default=[], metavar="NAME=VALUE", help="override a task goal")
    parser.add_argument("--calibration", help="calibration file from `firmware-bridge check --calibrate`")
    parser.add_argument("--log", metavar="FILE", help="record every tick to this MCAP file")
    parser.add_argument(
        "--json", nargs="?", const="-", metavar="FILE", help="write the summary as JSON to FILE (or stdout)"
    )
    safety = parser.add_argument_group("safety")
    safety.add_argument("--approach-speed", type=float, default=0.3, help="rad/s towards the start pose")
    safety.add_argument(
        "--stale-ms", type=float, default=100.0, help="no fresh state for this long (at least 2 periods) = safety stop"
    )
    safety.add_argument(
        "--bus-timeout-ms", type=_positive("milliseconds"), default=20.0,
        help="a reply later than this is lost; the loop goes on with the last state until it is stale",
    )  # fmt: skip
    safety.add_argument("--max-missed", type=int, help="missed deadlines allowed per window (default: 10%%)")
    safety.add_argument("--miss-window", type=float, default=1.0, help="window of --max-missed, seconds")
    timing = parser.add_argument_group("timing and real-time settings (off by default)")
    timing.add_argument(
        "--state-source",
        choices=("reply", "fresh"),
        default="reply",
        help="observe the state sent back with the previous command (one round trip per tick), or read it "
        "fresh at each tick (two round trips; fresher on a slow loop)",
    )
    timing.add_argument(
        "--reply-wait", type=_periods_or_none, default=0.5, metavar="PERIODS",
        help="motor board, --state-source reply: how far past its deadline a tick waits for its state (or the "
        "bus timeout, if sooner); a later reply is skipped and the tick runs on the newest state it has, "
        "counted as a late reply. 'none': wait for the bus timeout alone",
    )  # fmt: skip
    timing.add_argument(
        "--spin-us", type=_nonnegative("microseconds"), metavar="US",
        help="busy-wait before each deadline, us (default: a quarter of the period, at most 1000; at most 200 for "
        "periods under 2 ms)",
    )  # fmt: skip
    timing.add_argument(
        "--nap-us", type=_nap_us, default=1000.0, metavar="US",
        help="sleep at most this long at a time before the spin, us: a core idle for several ms wakes late "
        "more often. 'none': one sleep",
    )  # fmt: skip
    timing.add_argument(
        "--timer-slack-ns", type=_slack_ns, default=1, metavar="NS",
        help="the loop thread's timer slack (Linux): how much later than asked its sleeps may end; the OS's "
        "default is 50000 ns. 'none': leave it",
    )  # fmt: skip
    timing.add_argument("--cpu", type=int, help="pin the process to this CPU")
    timing.add_argument("--fifo", type=int, metavar="PRIORITY", help="SCHED_FIFO at this priority")
    timing.add_argument("--gc-freeze", action="store_true", help="freeze and disable the garbage collector")
    timing.add_argument("--mlock", action="store_true", help="lock the process's memory in RAM (mlockall)")
    timing.add_argument(
        "--switch-interval-us",
        type=_positive("microseconds"),
        metavar="US",
        help=f"Python thread switch interval (default {LOGGING_SWITCH_INTERVAL_US:g} us with --log or --learner, "
        "else Python's 5000 us)",
    )
    learner_options.add_arguments(parser)


class EventPrinter:
    """Prints the loop's events (armed, policy phase, swaps, safety stops) as they happen, off the loop's thread."""

    def __init__(self, out) -> None:
        self.out = out
        self.t0: float | None = None

    def handle(self, item: Event) -> None:
        if item.kind != "summary":
            self.t0 = item.time if self.t0 is None else self.t0
            print(f"[{item.time - self.t0:8.3f} s] {item.kind}: {item.detail}", file=self.out, flush=True)

    def close(self) -> None:
        self.out.flush()


def _periods_or_none(text: str) -> float | None:
    return _number_or_none(text, "periods")


def _nap_us(text: str) -> float | None:
    value = _number_or_none(text, "microseconds")
    if value is not None and not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"a finite number of microseconds > 0 or 'none', got {text!r}")
    return value


def _slack_ns(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_TIMER_SLACK_NS:
        raise argparse.ArgumentTypeError(f"a whole number of nanoseconds, 1 to {MAX_TIMER_SLACK_NS}, or 'none', "
                                         f"got {text!r}")  # fmt: skip
    return value


def _nonnegative(unit: str):
    return _finite(unit, ">= 0", lambda value: value >= 0)


def _positive(unit: str):
    return _finite(unit, "> 0", lambda value: value > 0)


def _finite(unit: str, bound: str, within):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (value < math.inf and within(value)):  # NaN fails both
            raise argparse.ArgumentTypeError(f"a finite number of {unit} {bound}, got {text!r}")
        return value

    return parse


def _number_or_none(text: str, unit: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of {unit} or 'none', got {text!r}") from None


def _switch_interval_s(args: argparse.Namespace) -> float | None:
    if args.switch_interval_us is not None:
        return args.switch_interval_us * 1e-6
    busy_threads = args.log or getattr(args, "learner", None)
    return LOGGING_SWITCH_INTERVAL_US * 1e-6 if busy_threads else None


def _goals(pairs: list[str]) -> dict[str, float]:
    goals = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            goals[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ValueError(f"--goal {pair!r}: expected NAME=VALUE with a number")
    return goals


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the CLI imports every subcommand module to build its parser, and
    # onnxruntime and the bus libraries would slow down every `firmware-bridge --help`.
    from firmware_bridge.bus_factory import open_bus
    from firmware_bridge.policy_runtime import PolicyRejectedError, PolicyRuntime

    err = sys.stderr
    # With JSON on stdout the human-readable lines go to stderr, so stdout stays parseable.
    out = sys.stderr if args.json == "-" else sys.stdout
    try:
        goals = _goals(args.goal)
    except ValueError as exc:
        print(f"firmware-bridge run: error: {exc}", file=err)
        return 2
    spec = RobotSpec.load(resolve_robot(args.robot))
    task = TaskInterface.load(args.task) if args.task else None
    try:
        policy = PolicyRuntime(args.policy, spec, task)
    except (PolicyRejectedError, FileNotFoundError) as exc:
        print(f"firmware-bridge run: error: {exc}", file=err)
        return 2
    task_obs = task if task is not None else policy.contract.task_interface()
    builder = ObservationBuilder(spec, task_obs)
    rate = args.rate or spec.control_rate_hz
    # The rate limit is a speed [rad/s]; at another loop rate the per-tick step must follow.
    mapper = ActionMapper(spec if rate == spec.control_rate_hz else dataclasses.replace(spec, control_rate_hz=rate))
    if rate != policy.contract.control_rate_hz:
        print(f"warning: running at {rate:g} Hz; the policy was trained at {policy.contract.control_rate_hz:g} Hz",
              file=err)  # fmt: skip
    try:
        config = LoopConfig(
            rate_hz=rate,
            duration_s=args.duration,
            spin_s=None if args.spin_us is None else args.spin_us * 1e-6,
            nap_s=None if args.nap_us is None else args.nap_us * 1e-6,
            timer_slack_ns=args.timer_slack_ns,
            approach_speed=args.approach_speed,
            stale_after_s=args.stale_ms / 1e3,
            max_missed=args.max_missed,
            miss_window_s=args.miss_window,
            state_source=args.state_source,
            reply_wait=args.reply_wait,
        )
        config.check_spec(spec)
    except ValueError as exc:
        print(f"firmware-bridge run: error: {exc}", file=err)
        return 2
    calibration = Calibration.load(args.calibration, spec) if args.calibration else None
    realtime = RealtimeSettings(
        cpu=args.cpu,
        fifo_priority=args.fifo,
        gc_freeze=args.gc_freeze,
        lock_memory=args.mlock,
        switch_interval_s=_switch_interval_s(args),
    )
    stop = threading.Event()
    if getattr(args, "learner", None) and rate != spec.control_rate_hz:
        # The learner stores transitions of one control period, the step the policy was trained on.
        print(f"firmware-bridge run: error: --rate {rate:g}: with --learner the loop runs at the robot spec's "
              f"control rate ({spec.control_rate_hz:g} Hz), the step the learner's transitions must span",
              file=err)  # fmt: skip
        return 2
    try:
        uplink = learner_options.uplink_from_args(args, builder, policy, goals)
    except (ValueError, OSError, SpoolError) as exc:
        print(f"firmware-bridge run: error: {exc}", file=err)
        return 2
    sinks: list = []
    if args.log:
        from firmware_bridge.tick_log_process import TickLogProcess

        run_info = {
            "robot": spec.name,
            "joint_names": spec.joint_names,
            "observation": builder.layout,
            "task": builder.task.name if builder.task is not None else "",
            "policy": str(args.policy),
            "policy_sha256": policy.sha256,
            "policy_version": policy.version,
            "rate_hz": rate,
            "bus": args.port or args.zmq,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            tick_log = TickLogProcess(args.log, run_info)
        except OSError as exc:
            print(f"firmware-bridge run: error: --log {args.log}: {exc.strerror or exc}", file=err)
            if uplink is not None:
                with contextlib.suppress(RuntimeError, TimeoutError):  # its own failure is not this error
                    uplink.close()
            return 2
        sinks.append(BackgroundSink("log", tick_log))
    if uplink is not None:
        sinks.append(uplink)
    sinks.insert(0, BackgroundSink("console", EventPrinter(out), accepts=(Event,)))

    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    report: LoopReport | None = None
    # Before the bus opens: threads it starts (ZMQ's I/O thread) inherit the scheduling policy. The sinks'
    # threads started above keep the default policy: logging must never compete with the loop.
    realtime.apply()
    try:
        with open_bus(
            spec,
            port=args.port,
            zmq_address=args.zmq,
            baud=args.baud,
            timeout_s=args.bus_timeout_ms / 1e3,
            calibration=calibration,
        ) as bus:
            loop = ControlLoop(
                bus, builder, mapper, policy, policy.version, config, goals=goals, sinks=sinks, stop=stop
            )
            if uplink is not None:
                uplink.attach(loop.swap_policy)
            print(f"{spec.name}: policy {args.policy} (version {policy.version}) at {rate:g} Hz on "
                  f"{args.port or args.zmq}", file=out)  # fmt: skip
            report = loop.run()
    except BusError as exc:
        print(f"firmware-bridge run: error: {exc}", file=err)
        return 1
    finally:
        realtime.restore()
        # The handlers stay until the sinks are drained: a second Ctrl-C must not cost the run its summary.
        summary = _finish(report, policy, realtime, sinks, stopped=stop.is_set())
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _print(summary, out)
    if args.json:
        text = json.dumps(summary, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if not summary["safe_state_reached"]:
        return EXIT_SAFE_STOP_FAILED
    return EXIT_SAFETY_STOP if summary["safety_stop"] else 0


def _slack_text(ns: int | None) -> str:
    if ns is None:
        return "as the OS set it"
    return "0 ns (a real-time thread has none)" if ns == 0 else f"{ns} ns"


def _finish(report: LoopReport | None, policy, realtime: RealtimeSettings, sinks, *, stopped: bool) -> dict:
    """The summary; the sinks get it as a last event and are drained and closed."""
    summary = report.summary() if report is not None else {"safety_stop": None, "safe_state_reached": False}
    summary["stopped_by_signal"] = stopped
    summary["policy_us_runtime"] = policy.latency_us()
    summary["realtime"] = realtime.report()
    for sink in sinks:
        sink.offer(Event(clock(), "summary", "run summary", summary))
    counters = {}
    for sink in sinks:
        try:
            sink.close()
            error = getattr(sink, "error", None)  # not part of the TransitionSink protocol: reported where kept
        except (RuntimeError, TimeoutError) as exc:  # a failed log never changes the exit status
            error = exc
        counters[sink.name] = {**sink.counters(), "error": str(error) if error else None}
    summary["sinks"] = counters
    # The learner uplink, when it is among the sinks, counts these; without one nothing is sent.
    summary["transitions_sent"] = sum(c.get("sent", 0) for c in counters.values())
    summary["transitions_acked"] = sum(c.get("acked", 0) for c in counters.values())
    return summary


def _print(summary: dict, out) -> None:
    if "ticks" not in summary:
        return

    def pct(key: str) -> str:
        v = summary[key]
        return f"p50 {v['p50']:8.1f}  p99 {v['p99']:8.1f}  max {v['max']:8.1f}"

    spin = "" if summary["spin_us"] is None else f", spin {summary['spin_us']:g} us"
    lines = [
        f"ticks {summary['ticks']} in {summary['wall_s']:.2f} s ({summary['achieved_rate_hz']:.1f} Hz of "
        f"{summary['rate_hz']:g}), missed deadlines {summary['missed_deadlines']}, late replies "
        f"{summary['late_replies']}, bus timeouts {summary['bus_timeouts']}, bad frames {summary['bad_frames']}",
        f"period error us  {pct('period_error_us')}",
        f"state read us    {pct('read_us')}",
        f"policy us        {pct('policy_us')}",
        f"command write us {pct('write_us')}",
        f"state->command   {pct('latency_us')}",
        f"policy versions {summary['policy_versions']}, timer slack {_slack_text(summary['timer_slack_ns'])}{spin}",
    ]
    if summary["realtime"]["applied"] or summary["realtime"]["refused"]:
        lines.append(f"real-time: applied {summary['realtime']['applied']}, refused {summary['realtime']['refused']}")
    if summary["safety_stop"]:
        lines.append(f"SAFETY STOP: {summary['safety_stop']}")
    lines.append(
        "robot in its safe state"
        if summary["safe_state_reached"]
        else f"SAFE STOP FAILED: {summary['safe_stop_error']}"
    )
    print("\n".join(lines), file=out)
