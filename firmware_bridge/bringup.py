"""Bring-up checks for a new robot: what ``firmware-bridge check`` finds, each with how to fix it.

Every check reads only; ``wiggle`` is the one function that moves a motor,
and only when the user asks for it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Literal

import numpy as np

from firmware_bridge.calibration import Calibration, JointCalibration
from firmware_bridge.dynamixel_bus import DynamixelBus
from firmware_bridge.dynamixel_table import XM430, BaudRate
from firmware_bridge.motor_bus import MotorBus, MotorInfo
from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import Fault

USB_SERIAL_SYSFS = Path("/sys/bus/usb-serial/devices")
# Models whose control table is the XM430's (dynamixel_table): XM430-W350, XM430-W210.
XM430_FAMILY = {1020: "XM430-W350", 1030: "XM430-W210"}


@dataclasses.dataclass(frozen=True)
class Finding:
    level: Literal["ok", "warn", "fail"]
    topic: str
    message: str
    fix: str = ""


def check_motors(spec: RobotSpec, found: list[MotorInfo], dynamixel: bool) -> list[Finding]:
    """Every id the spec names answers; nothing else does; models are ones the bus code knows."""
    expected = {j.motor_id: j.name for j in spec.joints} | {i: name for name, i in spec.bus.extra_ids.items()}
    by_id = {m.motor_id: m for m in found}
    out = []
    for motor_id, name in expected.items():
        if motor_id not in by_id:
            fix = "check its cable, power and id; a Dynamixel keeps its id and baud rate in EEPROM"
            out.append(Finding("fail", "motors", f"{name} (id {motor_id}) does not answer", fix))
            continue
        m = by_id[motor_id]
        model = XM430_FAMILY.get(m.model, f"model {m.model}") if dynamixel else f"model {m.model}"
        out.append(Finding("ok", "motors", f"{name} (id {motor_id}): {model}, firmware {m.firmware}"))
        if dynamixel and m.model not in XM430_FAMILY:
            fix = "its control table may differ from the XM430 one the bus uses"
            out.append(Finding("warn", "motors", f"{name} (id {motor_id}) is model {m.model}, not an XM430", fix))
    for m in found:
        if m.motor_id not in expected:
            fix = "remove it or give it an id the spec does not use; two motors on one id corrupt replies"
            out.append(Finding("warn", "motors", f"unexpected id {m.motor_id} (model {m.model}) on the bus", fix))
    return out


def check_limits(spec: RobotSpec, joint_pos: np.ndarray) -> list[Finding]:
    out = []
    for j, q in zip(spec.joints, joint_pos):
        if j.lower <= q <= j.upper:
            out.append(Finding("ok", "limits", f"{j.name} at {q:+.3f} rad, inside [{j.lower}, {j.upper}]"))
        else:
            fix = "move it inside by hand, or recalibrate (--calibrate) if the reading is wrong"
            out.append(Finding("fail", "limits", f"{j.name} at {q:+.3f} rad, outside [{j.lower}, {j.upper}]", fix))
    return out


# What each fault flag a state can carry means at bring-up, and what to do about it.
_FAULT_FIXES = {
    Fault.OVERCURRENT: "a motor drew too much current: look for a jammed joint or a short, then power-cycle",
    Fault.OVERTEMPERATURE: "let the motors cool; check the load on them and how long they were held",
    Fault.ENCODER: "check the encoder's cable and magnet on the motor named by the board",
    Fault.WATCHDOG: "latched by a session that stopped commanding without disarming; the next ARM clears it",
    Fault.SENSOR_TIMEOUT: "the IMU delivers no samples: check its cable and power; the bridge will not run on it",
    Fault.UNDERVOLTAGE: "charge or replace the battery, or check the supply",
    Fault.MOTOR_FAILED: "a motor's driver stopped it: read the board's own log, then power-cycle",
    Fault.BAD_COMMAND: "the board refused a command for another motor count: check the robot spec's motors",
    Fault.DISARMED: "the board left ARMED during a run: check the emergency stop and that no other client "
    "talks to the board",
    Fault.UNKNOWN: "the board set a fault bit this bridge has no name for: compare the board's firmware with "
    "docs/protocol.md",
}


def check_faults(faults: int, detail: str = "") -> list[Finding]:
    """The fault flags of a state read before arming (and where they come from, ``RobotState.fault_detail``):
    a latched watchdog warns, anything else fails."""
    if not faults:
        return [Finding("ok", "faults", "no fault flags set")]
    where = f" ({detail})" if detail else ""
    return [
        Finding("warn" if fault is Fault.WATCHDOG else "fail", "faults", f"{fault.name} set{where}",
                _FAULT_FIXES[fault])
        for fault in Fault
        if faults & fault
    ]  # fmt: skip


def check_latency_timer(port: str, sysfs: Path = USB_SERIAL_SYSFS) -> list[Finding]:
    """A USB serial adapter's latency timer holds bytes back up to this many ms (Linux default 16)."""
    name = os.path.basename(os.path.realpath(port))
    path = sysfs / name / "latency_timer"
    if not path.exists():
        return [Finding("ok", "latency", f"{port} is not a USB serial adapter: no latency timer")]
    ms = int(path.read_text().strip())
    if ms > 1:
        fix = f'echo 1 | sudo tee {path}  (or a udev rule: ATTR{{latency_timer}}="1")'
        return [Finding("warn", "latency", f"{name} latency timer is {ms} ms: every reply waits up to {ms} ms", fix)]
    return [Finding("ok", "latency", f"{name} latency timer is {ms} ms")]


def check_baud(spec: RobotSpec, baud: int) -> list[Finding]:
    if baud < spec.bus.baud:
        fix = f"use --baud {spec.bus.baud} (and set the devices to it)"
        return [Finding("warn", "baud", f"port opened at {baud} baud, below the spec's {spec.bus.baud}", fix)]
    return [Finding("ok", "baud", f"port at {baud} baud")]


def check_dynamixel_settings(bus: DynamixelBus) -> list[Finding]:
    """Return delay time (the factory's 500 us per motor per read), each motor's baud rate, and a bus watchdog an
    earlier session left tripped."""
    out = []
    tripped = [i for i in bus.joint_ids if bus.read_register(i, XM430.BUS_WATCHDOG) < 0]
    if tripped:
        text = f"id {', '.join(map(str, tripped))}: bus watchdog tripped (BUS_WATCHDOG -1): goals are refused"
        fix = "an earlier session stopped sending without a safe stop; `firmware-bridge run` clears it when it arms"
        out.append(Finding("warn", "bus watchdog", text, fix))
    for dxl_id in bus.joint_ids + list(bus.encoder_ids.values()):
        delay = bus.read_register(dxl_id, XM430.RETURN_DELAY_TIME)
        if delay > 0:
            text = f"id {dxl_id}: return delay time {delay} (= {2 * delay} us per reply)"
            fix = f"with torque off, write 0 to Return Delay Time (address {XM430.RETURN_DELAY_TIME.value.address})"
            out.append(Finding("warn", "return delay", text, fix))
        rate = BaudRate(bus.read_register(dxl_id, XM430.BAUD_RATE)).bits_per_second
        if rate < bus.spec.bus.baud:
            text = f"id {dxl_id}: motor baud rate {rate}, below the spec's {bus.spec.bus.baud}"
            fix = "raise it with Dynamixel Wizard (Baud Rate, address 8) and reconnect at the new rate"
            out.append(Finding("warn", "baud", text, fix))
    if not out:
        out.append(Finding("ok", "dynamixel", "return delay 0 and baud rate at the spec's on every motor"))
    return out


def round_trip(bus: MotorBus, count: int = 100) -> dict[str, float]:
    """State-read round trip in microseconds: p50, p99, max over ``count`` reads."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        bus.read_state()
        times.append(time.perf_counter() - t0)
    us = np.array(times) * 1e6
    return {"p50": float(np.percentile(us, 50)), "p99": float(np.percentile(us, 99)), "max": float(us.max())}


def calibrate(spec: RobotSpec, motor_pos: np.ndarray, reversed_joints: list[str]) -> Calibration:
    """Offsets that make the present motor angles read as the spec's start pose (the robot is held in it)."""
    unknown = sorted(set(reversed_joints) - set(spec.joint_names))
    if unknown:
        raise ValueError(f"--reversed: {unknown[0]!r} is not a joint of {spec.name} ({', '.join(spec.joint_names)})")
    joints = {}
    for j, q in zip(spec.joints, motor_pos):
        direction = -1 if j.name in reversed_joints else 1
        joints[j.name] = JointCalibration(offset=float(q - direction * j.start), direction=direction)
    return Calibration(spec.name, joints)


def wiggle(bus: MotorBus, joint: str, amplitude: float = math.radians(5), seconds: float = 2.0) -> dict[str, float]:
    """Move one joint +/-amplitude around where it is, slowly (one sine period), the others holding still.

    Returns how far it went each way, so the user sees it move the right way. Ends in the safe state.
    """
    spec = bus.spec
    if joint not in spec.joint_names:
        raise ValueError(f"--wiggle: {joint!r} is not a joint of {spec.name} ({', '.join(spec.joint_names)})")
    k = spec.joint_names.index(joint)
    ticks = max(2, int(seconds * spec.control_rate_hz))
    with bus.armed() as start:
        hold = start.joint_pos.copy()
        reached = []
        t0 = time.monotonic()
        for i in range(ticks + 1):
            target = hold.copy()
            target[k] = np.clip(hold[k] + amplitude * math.sin(2 * math.pi * i / ticks), spec.lower[k], spec.upper[k])
            reached.append(bus.exchange(target).joint_pos[k] - hold[k])
            time.sleep(max(0.0, t0 + (i + 1) * spec.control_period - time.monotonic()))
    return {"commanded": amplitude, "max": float(max(reached)), "min": float(min(reached))}
