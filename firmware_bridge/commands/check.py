"""``firmware-bridge check``: bring-up of a new robot. Finds the motors, reads them, warns about slow
settings, measures the bus, and optionally calibrates or wiggles one joint. Moves nothing unless asked."""

from __future__ import annotations

import argparse
import dataclasses
import json

from firmware_bridge import bringup
from firmware_bridge.bus_factory import open_bus
from firmware_bridge.calibration import Calibration
from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.dynamixel_bus import DynamixelBus
from firmware_bridge.motor_bus import BusError
from firmware_bridge.spec import RobotSpec

_MARK = {"ok": "[ ok ]", "warn": "[warn]", "fail": "[FAIL]"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", required=True, help="robot name or path to configs/robots/<robot>.yaml")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the motor bus, e.g. /dev/ttyUSB0")
    where.add_argument("--zmq", metavar="ADDR", help="ZMQ address of a networked motor board")
    parser.add_argument("--baud", type=int, help="baud rate (default: the spec's)")
    parser.add_argument("--timeout-ms", type=float, default=50.0, help="reply timeout per request")
    parser.add_argument("--calibration", help="calibration file to apply while checking")
    parser.add_argument(
        "--calibrate", metavar="FILE", help="with the robot held in the spec's start pose: write zero offsets to FILE"
    )
    parser.add_argument(
        "--reversed", nargs="+", default=[], metavar="JOINT", help="with --calibrate: joints mounted reversed"
    )
    parser.add_argument("--wiggle", metavar="JOINT", help="move this joint +/-5 degrees, slowly, and report")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")


def run(args: argparse.Namespace) -> int:
    spec = RobotSpec.load(resolve_robot(args.robot))
    calibration = Calibration.load(args.calibration, spec) if args.calibration else None
    baud = args.baud or spec.bus.baud
    findings: list[bringup.Finding] = []
    summary: dict = {"robot": spec.name}
    try:
        timeout_s = args.timeout_ms / 1000
        with open_bus(
            spec, port=args.port, zmq_address=args.zmq, baud=baud, timeout_s=timeout_s, calibration=calibration
        ) as bus:
            dynamixel = isinstance(bus, DynamixelBus)
            found = bus.scan()
            summary["motors"] = [{"id": m.motor_id, "model": m.model, "firmware": m.firmware} for m in found]
            findings += bringup.check_motors(spec, found, dynamixel)
            if args.port:
                findings += bringup.check_latency_timer(args.port) + bringup.check_baud(spec, baud)
            if dynamixel:
                findings += bringup.check_dynamixel_settings(bus)
            if not any(f.level == "fail" for f in findings):
                if args.calibrate:
                    bus.set_calibration(Calibration.identity(spec))
                    new = bringup.calibrate(spec, bus.read_state().joint_pos, args.reversed)
                    try:
                        bus.set_calibration(new)  # the bus refuses one its wire cannot carry
                    except BusError as exc:
                        findings.append(bringup.Finding("fail", "calibration", f"{args.calibrate} not written: {exc}",
                                                        "hold the robot in the spec's start pose, and check how each "
                                                        "motor is mounted"))  # fmt: skip
                    else:
                        new.save(args.calibrate)
                        findings.append(bringup.Finding("ok", "calibration", f"wrote {args.calibrate}"))
                state = bus.read_state()
                summary["joint_pos"] = dict(zip(spec.joint_names, state.joint_pos.round(4).tolist()))
                findings += bringup.check_limits(spec, state.joint_pos)
                findings += bringup.check_faults(state.faults, state.fault_detail)
                summary["round_trip_us"] = bringup.round_trip(bus)
                rt = summary["round_trip_us"]
                text = f"state read p50 {rt['p50']:.0f} us, p99 {rt['p99']:.0f} us, max {rt['max']:.0f} us"
                findings.append(bringup.Finding("ok", "round trip", text))
                if args.wiggle and any(f.level == "fail" for f in findings):
                    findings.append(bringup.Finding("warn", "wiggle", f"{args.wiggle}: not moved, a check above "
                                                    "failed"))  # fmt: skip
                elif args.wiggle:
                    moved = bringup.wiggle(bus, args.wiggle)
                    summary["wiggle"] = {"joint": args.wiggle, **moved}
                    findings.append(_wiggle_finding(args.wiggle, moved))
            summary["bus_counters"] = bus.counters()
    except (BusError, ValueError) as exc:
        findings.append(bringup.Finding("fail", "bus", str(exc), "check the port, the power and the robot spec's bus"))
    summary["findings"] = [dataclasses.asdict(f) for f in findings]
    summary["ok"] = not any(f.level == "fail" for f in findings)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for f in findings:
            print(f"{_MARK[f.level]} {f.topic}: {f.message}")
            if f.fix and f.level != "ok":
                print(f"       fix: {f.fix}")
    return 0 if summary["ok"] else 1


def _wiggle_finding(joint: str, moved: dict[str, float]) -> bringup.Finding:
    text = f"{joint}: commanded +/-{moved['commanded']:.3f} rad, moved {moved['min']:+.3f} .. {moved['max']:+.3f} rad"
    if moved["max"] > 0.5 * moved["commanded"] and moved["min"] < -0.5 * moved["commanded"]:
        return bringup.Finding("ok", "wiggle", text)
    fix = "it barely moved or moved one way only: check gains, load and direction"
    return bringup.Finding("warn", "wiggle", text, fix)
