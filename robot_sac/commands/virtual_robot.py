"""``robot-sac virtual-robot``: simulated hardware on a real pseudo-terminal or ZMQ socket.

Prints the address to connect to on its first line, serves until Ctrl-C or
SIGTERM, then prints its counters as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading

from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.spec import RobotSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", required=True, help="robot name or path to configs/robots/<robot>.yaml")
    parser.add_argument("--task", help="task name or file: its randomization (seeded) sets the dynamics")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--serial", action="store_true", help="serve the robot's serial protocol on a new pty")
    where.add_argument("--zmq", metavar="ADDR", help="bind a ZMQ ROUTER at ADDR (e.g. tcp://127.0.0.1:5600)")
    parser.add_argument("--link", help="with --serial: make this path a symlink to the pty")
    parser.add_argument("--lockstep", action="store_true", help="advance one control period per command")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled dynamics (with --task)")
    parser.add_argument("--backend", default="mujoco", choices=["mujoco", "pybullet"], help="physics engine")
    parser.add_argument(
        "--watchdog-ms",
        type=float,
        help="the motor board goes safe after this long without a command (0: off; default 100, or 3 control "
        "periods if longer); a Dynamixel chain's motors stop on the BUS_WATCHDOG the host sets instead",
    )
    parser.add_argument(
        "--drop-sensor",
        action="append",
        default=[],
        metavar="SENSOR@SECONDS",
        help="fault drill: freeze SENSOR (imu, joint_encoders, valve_encoder or joint:<name>) once the board's "
        "clock reaches SECONDS; a frozen IMU raises the board's IMU_STALE flag (repeatable)",
    )


def parse_drop(text: str) -> tuple[float, str]:
    """``SENSOR@SECONDS`` as ``(seconds, sensor)``."""
    sensor, _, seconds = text.rpartition("@")
    try:
        when = float(seconds)
    except ValueError:
        when = math.nan
    if not sensor or not math.isfinite(when) or when < 0:
        raise ValueError(f"--drop-sensor {text!r}: expected SENSOR@SECONDS with SECONDS >= 0, e.g. imu@5")
    return when, sensor


def run(args: argparse.Namespace) -> int:
    from sim.env import make_backend
    from sim.task import TaskSpec
    from sim.virtual_robot_server import build_robot, make_server, server_counters

    if args.link and not args.serial:
        print("robot-sac virtual-robot: error: --link needs --serial", file=sys.stderr)
        return 2
    try:
        drops = [parse_drop(text) for text in args.drop_sensor]
    except ValueError as exc:
        print(f"robot-sac virtual-robot: error: {exc}", file=sys.stderr)
        return 2
    task = TaskSpec.load(args.task) if args.task else None
    spec = RobotSpec.load(resolve_robot(args.robot))
    if task is not None and task.load_robot().name != spec.name:
        print(f"robot-sac virtual-robot: error: task {args.task} is for robot {task.robot}, not {spec.name}",
              file=sys.stderr)  # fmt: skip
        return 2
    backend = make_backend(args.backend, spec)
    try:
        robot = build_robot(
            spec,
            backend,
            task=task,
            seed=args.seed,
            watchdog_s=None if args.watchdog_ms is None else args.watchdog_ms / 1000.0,
            sensor_drops=drops,
            lockstep=args.lockstep,
        )
        server = make_server(robot, serial=args.serial, zmq_address=args.zmq, link=args.link)
    except ValueError as exc:
        backend.close()
        print(f"robot-sac virtual-robot: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    mode = ("lockstep" if args.lockstep else "real time") + f", {args.backend}"
    mode += "".join(f", drops {sensor} at {at:g} s" for at, sensor in drops)
    where = f"{server.path} (link {args.link})" if args.link else server.address
    print(f"virtual {spec.name} ({spec.bus.kind if args.serial else 'zmq'}, {mode}) on {where}", flush=True)
    try:
        server.serve(stop)
    finally:
        counters = server_counters(server)
        server.close()
        backend.close()
        print(json.dumps({"counters": counters}), flush=True)
    return 0
