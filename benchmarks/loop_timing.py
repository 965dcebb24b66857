"""The on-robot loop at 250, 500 and 1000 Hz against the virtual quadruped, beside a bare Python loop.

For each rate, in one run and interleaved so both see the same machine:

- ``bare``: the pacing alone (one sleep to the deadline minus a 200 us spin, ``--spin-us``, then the spin; no
  work): this machine's floor;
- ``bare+wait``: the same with the loop's default wait: the sleep taken as naps of at most 1 ms, the thread's
  timer slack at 1 ns, and the loop's spin (``firmware_bridge.timing.default_spin_s``;
  ``--loop-spin-us`` sets it for this row and the loop rows): what the wait alone changes;
- ``loop``: ``ControlLoop`` driving ``robot-sac virtual-robot`` (its own process, real-time physics) over
  ZMQ with an untrained SAC actor (256x256, exported by the real exporter): state -> observation ->
  policy -> action mapping -> command exchange, one bus round trip per tick;
- ``loop+log``: the same with the MCAP tick log written off the loop's thread (and, as ``firmware-bridge
  run --log`` does, a 200 us Python thread switch interval);
- ``bare+rt`` and ``loop+rt``: the same with the real-time options (SCHED_FIFO, gc frozen and off).

The virtual robot stands in for a motor board, which has a processor of its own: in every loop row it runs
under SCHED_FIFO (where the OS allows; the table says) and pinned to the last CPU, so its physics runs as
soon as a command arrives, on a core of its own, instead of holding the core the loop's timer fires on.
Sharing the loop's two cores at normal priority, it made 8-13% of a 500 Hz loop's ticks start late,
against about 1% under SCHED_FIFO (``--device-normal`` measures that: normal priority, not pinned;
``--device-cpu -1`` only unpins it). A pinned virtual robot's CPU is then the board's, not the
computer's: every row, the bare loops included, runs on the other CPUs. Its physics wakes every step
(sampling the sensors, as a board does) and under SCHED_FIFO takes its CPU at once, so a loop that had
wandered onto that CPU lost it mid-spin: at 250 Hz, 5.8-7.0% of the plain loop's ticks started late (hundreds
of microseconds, most of them in the spin) in two of four rounds, against 0.2-1.1% off that CPU, where the bare
loop with the same wait had 0.6-1.4%. Every thread of this process then shares the loop's CPUs: ZMQ's I/O thread
(under SCHED_FIFO in the rt rows, which set it before the bus opens), the sinks' threads, the tick log's process.

ZMQ, not the pty: the modelled 1 Mbaud line alone needs about 1.6 ms per command/state round trip, more
than a 1 kHz period (``benchmarks/bus_roundtrip.py``). Times in microseconds; ``period error`` is how late
each tick started after its deadline; ``state->cmd`` is from the state in hand (the previous command's
reply, collected at the tick's start) to the command sent; ``send`` is the command's send. The reply
travels while the loop waits for its next deadline, so the round trip is not part of a tick's work; a reply
that has not come half a period past the deadline is a ``late reply`` (the tick runs on an older state;
before that existed, such a reply held the tick, so rows measured earlier are not comparable).
``late %`` is the share of ticks that started 1 us or more late: where it crosses 1%, p99 jumps from 0 to
tens of microseconds, so it says more than p99 when both loops sit near the machine's own floor (printed
at the end: the share of time a spinning thread loses to this VM's interrupts).

    python benchmarks/loop_timing.py [--seconds 10] [--rates 250 500 1000] [--repeats N] [--json FILE]
    python benchmarks/loop_timing.py --paired 10 --seconds 20   # bare, bare+wait, loop, loop+rt in alternating rounds
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from firmware_bridge.action import ActionMapper
from firmware_bridge.bus_factory import open_bus
from firmware_bridge.commands.run import LOGGING_SWITCH_INTERVAL_US
from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.control_loop import ControlLoop, LoopConfig
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.policy_runtime import PolicyRuntime
from firmware_bridge.realtime import RealtimeSettings
from firmware_bridge.spec import RobotSpec
from firmware_bridge.task import TaskInterface
from firmware_bridge.tick_log_process import TickLogProcess
from firmware_bridge.timing import DeadlineClock, Histogram, clock, set_timer_slack
from firmware_bridge.transitions import BackgroundSink

ROBOT, TASK = "quadruped", "quadruped_walk"


def export_untrained_actor(path: Path, spec: RobotSpec, task: TaskInterface) -> Path:
    """An untrained actor through the real exporter: the same graph and cost as a trained one.

    Call it in another process (``python benchmarks/loop_timing.py --export PATH``): torch in the measuring
    process would put ~180k more objects under the garbage collector, and a full collection among them
    stalls a tick for 100+ ms, a cost ``firmware-bridge run`` (no torch on the robot) never pays.
    """
    import torch

    from robot_sac.export import ExportedPolicy, build_contract, robot_interface, to_onnx
    from robot_sac.networks import Actor, ObservationNormalizer

    torch.manual_seed(0)
    interface = robot_interface(spec, task)
    actor = Actor(interface["obs_dim"], interface["act_dim"])
    normalizer = ObservationNormalizer(interface["obs_dim"], enabled=False)
    contract = build_contract(interface, "robot_sac/QuadrupedWalk-v0", normalizer, 1, "untrained")
    path.write_bytes(to_onnx(ExportedPolicy(actor, normalizer), contract))
    return path


def late_percent(h: Histogram) -> float:
    """Share of ticks that started 1 us or more after their deadline (the histogram's bin 0 is below 1 us)."""
    return 100.0 * (h.count - h.counts[0]) / h.count if h.count else 0.0


def machine_gaps(seconds: float) -> dict:
    """Spin on the clock and collect the gaps between consecutive readings of 2 us or more: the time this
    VM takes the CPU away from a running thread (interrupts, the hypervisor). A deadline falls into such a gap
    with about ``lost_percent`` probability, whatever the loop does, which puts a floor under any p99."""
    gaps = []
    now = clock()
    end = now + seconds
    while now < end:
        before, now = now, clock()
        if now - before >= 2e-6:
            gaps.append(now - before)
    gaps.sort()
    return {
        "per_s": len(gaps) / seconds,
        "lost_percent": 100.0 * sum(gaps) / seconds,
        "median_us": gaps[len(gaps) // 2] * 1e6 if gaps else 0.0,
    }


def bare_loop(
    rate_hz: float, seconds: float, spin_s: float | None, nap_s: float | None = None,
    timer_slack_ns: int | None = None,
) -> dict:
    """Deadlines over ``seconds``, as the control loop counts them: ``ticks + missed`` is ``rate * seconds``.
    One sleep to the spin at the OS's timer slack by default, as the floor is defined; ``nap_s`` and
    ``timer_slack_ns`` as the control loop waits."""
    previous = None if timer_slack_ns is None else set_timer_slack(timer_slack_ns)
    try:
        pacer = DeadlineClock(rate_hz, spin_s=spin_s, nap_s=nap_s)
        end = pacer.start + seconds
        h = Histogram()
        missed = 0
        while True:
            tick = pacer.wait()
            if tick.deadline >= end:
                return {"ticks": h.count, "missed": missed, "period_error_us": h.summary(),
                        "late_percent": late_percent(h), "period_error_hist": h}  # fmt: skip
            missed += tick.missed
            h.record(tick.period_error_us)
    finally:
        if previous is not None:
            set_timer_slack(previous)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def realtime_settings(fifo: int | None) -> RealtimeSettings:
    return RealtimeSettings(fifo_priority=fifo, gc_freeze=True)


class VirtualRobotProcess:
    """``robot-sac virtual-robot`` in its own process; ``scheduling`` says how it ran."""

    def __init__(self, fifo: int | None = None, cpu: int | None = None):
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        command = [sys.executable, "-m", "robot_sac.cli", "virtual-robot", "--robot", ROBOT, "--zmq", self.address]

        def before_exec():
            # Set before exec, so every thread of the process (ZMQ's included) inherits it. A refusal is
            # reported below from what the process actually got (an exception here would lose its reason).
            with contextlib.suppress(OSError):
                if cpu is not None:
                    os.sched_setaffinity(0, {cpu})
            with contextlib.suppress(OSError):
                if fifo is not None:
                    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(fifo))

        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, preexec_fn=before_exec)
        got_fifo = os.sched_getscheduler(self.proc.pid) == os.SCHED_FIFO
        got_cpu = os.sched_getaffinity(self.proc.pid) == {cpu}
        self.scheduling = ", ".join(
            ([f"SCHED_FIFO {fifo}" if got_fifo else "normal priority (SCHED_FIFO refused)"] if fifo is not None
             else ["normal priority"])
            + ([f"CPU {cpu}" if got_cpu else f"not pinned (CPU {cpu} refused)"] if cpu is not None else [])
        )  # fmt: skip
        self.proc.stdout.readline()  # "virtual quadruped ... on ADDR": bound and serving

    def close(self) -> dict:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        return json.loads(out.strip().splitlines()[-1])["counters"]


def control_loop(
    rate_hz: float, seconds: float, spin_s: float | None, spec, task, policy, *, log: Path | None, realtime: bool,
    fifo: int | None = None, device_fifo: int | None = None, device_cpu: int | None = None,
) -> dict:
    builder = ObservationBuilder(spec, task)
    # The policy was exported for the spec's 50 Hz; the rate limit is a speed, so the mapper follows the rate.
    mapper = ActionMapper(dataclasses.replace(spec, control_rate_hz=rate_hz))
    sinks = []
    if log is not None:
        sinks.append(BackgroundSink("log", TickLogProcess(log, {"robot": spec.name, "joint_names": spec.joint_names,
                                                          "rate_hz": rate_hz})))  # fmt: skip
    if realtime:
        settings = realtime_settings(fifo)
    else:  # as firmware-bridge run does by default when it logs
        settings = RealtimeSettings(switch_interval_s=LOGGING_SWITCH_INTERVAL_US * 1e-6 if log else None)
    device = VirtualRobotProcess(device_fifo, device_cpu)  # a motor board's stand-in (see the module's docstring)
    settings.apply()  # before the bus opens, so ZMQ's I/O thread inherits it (as in firmware-bridge run)
    try:
        # A loaded VM can hold a reply for tens of ms: the tick stops waiting half a period past its deadline
        # (a late reply, counted), and the long bus timeout keeps such a stall from counting as a lost reply.
        with open_bus(spec, zmq_address=device.address, timeout_s=0.25) as bus:
            # The robot sags while the process starts (torque off): approach at 2 rad/s to save time. The
            # missed-deadline stop is off so that every row runs its full length and shows its misses.
            config = LoopConfig(rate_hz=rate_hz, duration_s=seconds, spin_s=spin_s, approach_speed=2.0,
                                max_missed=10**9)  # fmt: skip
            loop = ControlLoop(bus, builder, mapper, policy, policy.version, config, sinks=sinks)
            report = loop.run()
    finally:
        settings.restore()
        counters = device.close()
        for sink in sinks:
            sink.close()
    s = report.summary()
    return {
        "ticks": s["ticks"],
        "missed": s["missed_deadlines"],
        "period_error_us": s["period_error_us"],
        "late_percent": late_percent(report.timings.histograms["period_error"]),
        "late_replies": s["late_replies"],
        "spin_us": s["spin_us"],
        "policy_us": s["policy_us"],
        "write_us": s["write_us"],
        "latency_us": s["latency_us"],
        "safety_stop": s["safety_stop"],
        "log_dropped": sinks[0].counters()["dropped"] if sinks else None,
        "realtime": settings.report() if realtime else None,
        "device_watchdog_trips": counters["device_watchdog_trips"],
        "device_scheduling": device.scheduling,
        "period_error_hist": report.timings.histograms["period_error"],
        "policy_hist": report.timings.histograms["policy"],
        "latency_hist": report.timings.histograms["latency"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each row")
    parser.add_argument("--rates", type=float, nargs="+", default=[250.0, 500.0, 1000.0])
    parser.add_argument("--spin-us", type=float, default=200.0, help="the bare loop's spin (the floor's)")
    parser.add_argument("--loop-spin-us", type=float,
                        help="the loop's and bare+wait's spin (default: the loop's own, "
                        "firmware_bridge.timing.default_spin_s)")  # fmt: skip
    parser.add_argument("--policy", help="policy file (default: export an untrained actor)")
    parser.add_argument("--no-extras", action="store_true", help="skip the loop+log and loop+rt rows")
    parser.add_argument(
        "--repeats", type=int, default=1,
        help="run every kind this many times, interleaved: this VM's stalls make one run's p99 a sample",
    )  # fmt: skip
    parser.add_argument(
        "--fifo", type=int, default=10, metavar="PRIORITY",
        help="SCHED_FIFO priority of the rt rows (reported as refused where the OS does not allow it)",
    )
    parser.add_argument("--device-normal", action="store_true",
                        help="run the virtual robot at normal priority, sharing the cores with the loop as an equal")
    parser.add_argument("--device-cpu", type=int, metavar="CPU",
                        help="pin the virtual robot to this CPU (default: the last one this process may use, "
                        "none with --device-normal); -1: not pinned")
    parser.add_argument(
        "--paired", type=int, metavar="N",
        help="instead of the rows: bare, bare+wait, loop and loop+rt in N alternating rounds of --seconds / N "
        "each, pooled",
    )  # fmt: skip
    parser.add_argument("--json", help="also write the rows as JSON here")
    parser.add_argument("--log-dir", type=Path,
                        help="keep the loop+log rows' MCAP logs here (default: a temporary folder, removed at exit)")
    parser.add_argument("--export", metavar="PATH", help=argparse.SUPPRESS)  # the exporter's own process
    args = parser.parse_args()
    if args.paired is not None and args.paired < 1:
        parser.error(f"--paired: at least 1 round, got {args.paired}")
    for option, value in (("--spin-us", args.spin_us), ("--loop-spin-us", args.loop_spin_us)):
        if value is not None and not 0 <= value < float("inf"):
            parser.error(f"{option}: a finite number of microseconds >= 0, got {value}")

    spec = RobotSpec.load(resolve_robot(ROBOT))
    task = TaskInterface.load(TASK)
    if args.export:
        export_untrained_actor(Path(args.export), spec, task)
        return 0
    with tempfile.TemporaryDirectory(prefix="loop_timing_") as tmp:
        return measure(args, spec, task, Path(tmp))


def measure(args: argparse.Namespace, spec: RobotSpec, task: TaskInterface, tmp: Path) -> int:
    log_dir = args.log_dir or tmp
    log_dir.mkdir(parents=True, exist_ok=True)
    policy_path = Path(args.policy) if args.policy else tmp / "actor.onnx"
    if not args.policy:
        subprocess.run([sys.executable, __file__, "--export", str(policy_path)], check=True)
    policy = PolicyRuntime(policy_path, spec, task)
    spin = args.spin_us * 1e-6
    loop_spin = None if args.loop_spin_us is None else args.loop_spin_us * 1e-6
    allowed = os.sched_getaffinity(0)
    if args.device_cpu is None:
        device_cpu = None if args.device_normal or len(allowed) < 2 else max(allowed)
    else:
        device_cpu = None if args.device_cpu < 0 else args.device_cpu
    if device_cpu is not None:
        if device_cpu not in allowed or len(allowed) < 2:
            raise SystemExit(f"--device-cpu {device_cpu}: the virtual robot needs a CPU of its own among this "
                             f"process's {sorted(allowed)}, and the loops at least one other")  # fmt: skip
        os.sched_setaffinity(0, allowed - {device_cpu})  # the board's processor is not the computer's
    own_cpus = sorted(os.sched_getaffinity(0))
    load_before = os.getloadavg()[0]
    gaps_before = machine_gaps(2.0)

    def run_kind(kind: str, rate: float, seconds: float, log: Path | None = None) -> dict:
        if kind == "bare":
            return bare_loop(rate, seconds, spin)
        if kind == "bare+wait":
            return bare_loop(rate, seconds, loop_spin, nap_s=LoopConfig.nap_s, timer_slack_ns=LoopConfig.timer_slack_ns)
        if kind == "bare+rt":
            settings = realtime_settings(args.fifo)
            settings.apply()
            try:
                row = bare_loop(rate, seconds, spin)
            finally:
                settings.restore()
            return {**row, "realtime": settings.report()}
        return control_loop(rate, seconds, loop_spin, spec, task, policy, log=log if kind == "loop+log" else None,
                            realtime=kind == "loop+rt", fifo=args.fifo,
                            device_fifo=None if args.device_normal else args.fifo, device_cpu=device_cpu)  # fmt: skip

    rows = []
    if args.paired:
        rows = measure_paired(args, run_kind)
    else:
        kinds = ["bare", "bare+wait", "loop"] + ([] if args.no_extras else ["loop+log", "bare+rt", "loop+rt"])
        for rate in args.rates:
            for repeat, kind in ((r, k) for r in range(1, args.repeats + 1) for k in kinds):
                started = time.perf_counter()
                row = run_kind(kind, rate, args.seconds, log_dir / f"{rate:g}_run{repeat}.mcap")
                for key in HISTOGRAMS:
                    row.pop(key, None)
                row.update(rate_hz=rate, kind=kind, run=repeat, wall_s=round(time.perf_counter() - started, 2))
                rows.append(row)
                print(f"  {rate:g} Hz {kind}: done", file=sys.stderr, flush=True)
        print_table(rows, args.seconds)
        print_targets(rows)
    # Everything here shares two cores with whatever else runs: the load says how much else that was.
    print(f"load average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f}, on {os.cpu_count()} CPUs")
    # About this share of deadlines falls in a gap and starts late in any loop: p99 is 0 below 1%, not above.
    gaps = {"before": gaps_before, "after": machine_gaps(2.0)}
    for when, g in gaps.items():
        print(f"machine {when}: a spinning thread lost {g['lost_percent']:.2f}% of its time to "
              f"{g['per_s']:.0f} gaps/s of >= 2 us (median {g['median_us']:.1f} us)")  # fmt: skip
    device = sorted({row["device_scheduling"] for row in rows if "device_scheduling" in row})
    if device:
        print(f"virtual robot: {', '.join(device)}; the loops: CPU {', '.join(map(str, own_cpus))}")
    for row in rows:
        if row.get("realtime"):
            print(f"real-time at {row['rate_hz']:g} Hz: {row['realtime']}")
    if args.json:
        record = {"rows": rows, "machine_gaps": gaps, "loop_cpus": own_cpus}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    if args.log_dir and any(row["kind"] == "loop+log" for row in rows):
        print(f"MCAP logs of the loop+log rows: {args.log_dir}")
    return 0


PAIRED_KINDS = ("bare", "bare+wait", "loop", "loop+rt")
HISTOGRAMS = ("period_error_hist", "policy_hist", "latency_hist")


def measure_paired(args: argparse.Namespace, run_kind) -> list[dict]:
    """``--paired N``: per rate, N rounds of ``PAIRED_KINDS`` for ``seconds / N`` each, the order rotated every
    round; each kind's period errors pooled over its rounds.

    This VM's late ticks come in bursts of one to a few seconds (a bare 1 kHz loop: 2-18 late ticks in most
    seconds, up to 101 in some), so two 10 s rows measured one after the other compare bursts as much as loops.
    Short rounds, alternated, put every kind under the same bursts."""
    segment = args.seconds / args.paired
    rows = []
    for rate in args.rates:
        pooled = {kind: Histogram() for kind in PAIRED_KINDS}
        pooled_work = {kind: {"policy": Histogram(), "latency": Histogram()} for kind in PAIRED_KINDS}
        per_round = {kind: [] for kind in PAIRED_KINDS}
        totals = {kind: {"missed": 0, "late_replies": 0} for kind in PAIRED_KINDS}
        realtime = scheduling = None
        for round_ in range(args.paired):
            shift = round_ % len(PAIRED_KINDS)
            for kind in PAIRED_KINDS[shift:] + PAIRED_KINDS[:shift]:
                row = run_kind(kind, rate, segment)
                hist = row["period_error_hist"]
                pooled[kind].merge(hist)
                for name, work in pooled_work[kind].items():
                    if f"{name}_hist" in row:
                        work.merge(row[f"{name}_hist"])
                per_round[kind].append(hist.percentile(99))
                totals[kind]["missed"] += row["missed"]
                totals[kind]["late_replies"] += row.get("late_replies", 0)
                realtime = row.get("realtime") or realtime
                scheduling = row.get("device_scheduling", scheduling)
            print(f"  {rate:g} Hz round {round_ + 1} of {args.paired}: done", file=sys.stderr, flush=True)
        for kind in PAIRED_KINDS:
            h = pooled[kind]
            rows.append({
                "rate_hz": rate, "kind": kind, "rounds": args.paired, "round_s": segment, "ticks": h.count,
                "late_percent": late_percent(h), "period_error_us": h.summary(), "round_p99_us": per_round[kind],
                **({f"{name}_us": w.summary() for name, w in pooled_work[kind].items()} if kind.startswith("loop")
                   else {}),
                **totals[kind], **({"realtime": realtime} if kind == "loop+rt" else {}),
                **({"device_scheduling": scheduling} if kind.startswith("loop") else {}),
            })  # fmt: skip
    print_paired(rows)
    return rows


def print_paired(rows: list[dict]) -> None:
    first = rows[0]
    print(f"\n{first['rounds']} rounds of {first['round_s']:g} s per kind, order rotated each round; period error "
          f"pooled over the rounds, microseconds\n")  # fmt: skip
    print("| rate Hz | kind | ticks | missed | late replies | late % | p50 | p99 | max | p99 of each round | "
          "policy p50 | p99 | state->cmd p50 | p99 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        e = r["period_error_us"]
        rounds = ", ".join(f"{p:.0f}" for p in r["round_p99_us"])
        replies = r["late_replies"] if r["kind"].startswith("loop") else "-"
        work = " | ".join(f"{r[key][stat]:.1f}" if key in r else "-"
                          for key in ("policy_us", "latency_us") for stat in ("p50", "p99"))  # fmt: skip
        print(f"| {r['rate_hz']:g} | {r['kind']} | {r['ticks']} | {r['missed']} | {replies} | "
              f"{r['late_percent']:.2f} | {e['p50']:.1f} | {e['p99']:.1f} | {e['max']:.1f} | {rounds} | "
              f"{work} |")  # fmt: skip
    p99 = {(r["rate_hz"], r["kind"]): r["period_error_us"]["p99"] for r in rows}
    for rate in dict.fromkeys(r["rate_hz"] for r in rows):
        bare = p99[rate, "bare"]
        for kind in ("loop", "loop+rt", "bare+wait"):
            ours = p99[rate, kind]
            verdict = "within" if ours <= 1.2 * bare else "NOT within"
            print(f"{rate:g} Hz: {kind} p99 {ours:.1f} us, {verdict} 1.2x the bare loop's {bare:.1f} us (pooled)")


def print_table(rows: list[dict], seconds: float) -> None:
    def cell(row, key, stat):
        value = row.get(key)
        return f"{value[stat]:.1f}" if value else "-"

    header = ("| rate Hz | run | kind | ticks | missed | late % | period err p50 | p99 | max | policy p50 | p99 | "
              "state->cmd p50 | p99 | send p50 | late replies | log dropped | stop |")  # fmt: skip
    print(f"\n{seconds:g} s per row, microseconds\n")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in rows:
        print(
            f"| {r['rate_hz']:g} | {r['run']} | {r['kind']} | {r['ticks']} | {r['missed']} | {r['late_percent']:.2f} | "
            f"{cell(r, 'period_error_us', 'p50')} | {cell(r, 'period_error_us', 'p99')} | "
            f"{cell(r, 'period_error_us', 'max')} | {cell(r, 'policy_us', 'p50')} | {cell(r, 'policy_us', 'p99')} | "
            f"{cell(r, 'latency_us', 'p50')} | {cell(r, 'latency_us', 'p99')} | {cell(r, 'write_us', 'p50')} | "
            f"{r.get('late_replies', '-')} | "
            f"{r['log_dropped'] if r.get('log_dropped') is not None else '-'} | "
            f"{(r.get('safety_stop') or '-').split(':')[0]} |"
        )


def print_targets(rows: list[dict]) -> None:
    """Per rate, in how many runs the loop's p99 period error was within 1.2x the bare loop's of the same run
    (the target), and the real-time loop's within the plain bare loop's."""
    p99 = {(r["rate_hz"], r["run"], r["kind"]): r["period_error_us"]["p99"] for r in rows if r.get("period_error_us")}
    late = {(r["rate_hz"], r["run"], r["kind"]): r["late_percent"] for r in rows}
    for rate in dict.fromkeys(r["rate_hz"] for r in rows):
        runs = sorted({run for (hz, run, _) in p99 if hz == rate})
        for kind, floor in (("loop", "bare"), ("loop+log", "bare"), ("loop+rt", "bare"), ("bare+wait", "bare")):
            pairs = [(p99[rate, run, kind], p99[rate, run, floor]) for run in runs if (rate, run, kind) in p99]
            if pairs:
                met = sum(ours <= 1.2 * bare for ours, bare in pairs)
                shares = ", ".join(f"{late[rate, run, kind]:.2f} vs {late[rate, run, floor]:.2f}" for run in runs
                                   if (rate, run, kind) in late)  # fmt: skip
                print(f"{rate:g} Hz: {kind} p99 <= 1.2x {floor} p99 in {met} of {len(pairs)} runs "
                      f"({', '.join(f'{ours:.0f} vs {bare:.0f}' for ours, bare in pairs)} us; "
                      f"ticks late: {shares} %)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
