"""Command -> state round trip through a MotorBus against the virtual robot, and the highest sustained rate.

Each case starts ``robot-sac virtual-robot`` in its own process (real-time
mode, so physics runs as it would beside real hardware), opens the bus the
way ``firmware-bridge run`` does, arms, and sends position commands back to
back: every exchange is one command and one state reply. The pty cases model
a real 1 Mbaud UART (10 bit times per byte each way, see
``sim/virtual_robot_server.py``); ZMQ runs over TCP loopback.

    python benchmarks/bus_roundtrip.py [--seconds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from firmware_bridge.bus_factory import open_bus
from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.motor_bus import BusTimeout
from firmware_bridge.spec import RobotSpec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(robot: str, transport: str, seconds: float) -> tuple[np.ndarray, float, dict]:
    """(round-trip times [s], exchanges per second, bus counters) for one run."""
    spec = RobotSpec.load(resolve_robot(robot))
    where = ["--serial"] if transport == "pty" else ["--zmq", f"tcp://127.0.0.1:{_free_port()}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "robot_sac.cli", "virtual-robot", "--robot", robot, *where],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        address = proc.stdout.readline().split(" on ")[-1].strip()
        target = {"port": address} if transport == "pty" else {"zmq_address": address}
        with open_bus(spec, timeout_s=0.5, **target) as bus, bus.armed():
            for _ in range(50):  # warm up caches and the physics catch-up
                bus.exchange(spec.start)
            times = []
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                t0 = time.perf_counter()
                try:
                    bus.exchange(spec.start)
                except BusTimeout:
                    continue  # counted by the bus; a late reply is dropped as stale by the next exchange
                times.append(time.perf_counter() - t0)
            rate = len(times) / (time.perf_counter() - start)
            counters = bus.counters()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    return np.array(times), rate, counters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of back-to-back exchanges per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the table shows their medians")
    args = parser.parse_args()
    cases = [
        ("quadruped", "pty", "framed serial, 1 Mbaud pty"),
        ("quadruped", "zmq", "ZMQ, TCP loopback"),
        ("claw", "pty", "Dynamixel 2.0, 1 Mbaud pty"),
    ]
    # Tails depend on what else the machine runs: say how busy it was.
    print(f"load average (1 min) before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'robot':10s} {'transport':28s} {'p50 us':>8s} {'p99 us':>8s} {'max us':>8s} {'rate /s':>8s} {'bad':>4s}")
    # bad: bad frames + timeouts (0.5 s) seen by the host over all runs of the case
    for robot, transport, label in cases:
        runs = [measure(robot, transport, args.seconds) for _ in range(args.repeats)]
        p50 = np.median([np.percentile(t, 50) for t, _, _ in runs]) * 1e6
        p99 = np.median([np.percentile(t, 99) for t, _, _ in runs]) * 1e6
        worst = max(t.max() for t, _, _ in runs) * 1e6
        rate = np.median([r for _, r, _ in runs])
        bad = sum(c.get("bad_frames", 0) + c.get("timeouts", 0) for _, _, c in runs)
        print(f"{robot:10s} {label:28s} {p50:8.0f} {p99:8.0f} {worst:8.0f} {rate:8.0f} {bad:4d}")
    print(f"load average (1 min) after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
