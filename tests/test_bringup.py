"""``firmware-bridge check`` against the virtual robots: findings, fixes, calibration, wiggle."""

import json
import time

import numpy as np
import pytest
import yaml
from dynamixel_sdk import PacketHandler

from firmware_bridge import bringup
from firmware_bridge.bus_factory import open_bus
from firmware_bridge.calibration import Calibration
from firmware_bridge.cli import main
from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.dynamixel_bus import DynamixelPort
from firmware_bridge.dynamixel_table import XM430
from firmware_bridge.motor_messages import BoardMode, MotorStatus
from firmware_bridge.spec import RobotSpec
from firmware_bridge.typed_yaml import ConfigError, load_yaml
from sim.mujoco_backend import MujocoBackend
from sim.virtual_robot_server import build_robot, make_server, serving

QUADRUPED = RobotSpec.load(resolve_robot("quadruped"))
CLAW = RobotSpec.load(resolve_robot("claw"))


def _serve(spec, **kwargs):
    return serving(make_server(build_robot(spec, MujocoBackend(spec), **kwargs), serial=True))


def _check(capsys, *argv):
    code = main(["check", *argv, "--json", "--timeout-ms", "500"])
    return code, json.loads(capsys.readouterr().out)


def test_check_on_a_healthy_quadruped_finds_all_motors_and_moves_nothing(capsys):
    with _serve(QUADRUPED, lockstep=True, watchdog_s=0) as server:
        code, report = _check(capsys, "--robot", "quadruped", "--port", server.path)
        assert server.robot.counters.commands == 0 and server.robot.counters.rejected_commands == 0
    assert code == 0 and report["ok"]
    assert [m["id"] for m in report["motors"]] == list(range(8))
    assert {f["level"] for f in report["findings"]} == {"ok"}
    assert report["round_trip_us"]["p50"] > 0
    np.testing.assert_allclose(list(report["joint_pos"].values()), QUADRUPED.start, atol=0.05)


def test_missing_and_unexpected_ids_fail_the_check_naming_them(capsys, tmp_path):
    mapping = load_yaml(resolve_robot("quadruped"))
    mapping["joints"][3]["motor_id"] = 12
    (tmp_path / "q.yaml").write_text(yaml.safe_dump(mapping))
    with _serve(QUADRUPED, lockstep=True, watchdog_s=0) as server:
        code, report = _check(capsys, "--robot", str(tmp_path / "q.yaml"), "--port", server.path)
    messages = [(f["level"], f["message"]) for f in report["findings"]]
    assert code == 1 and not report["ok"]
    assert ("fail", "front_right_knee (id 12) does not answer") in messages
    assert ("warn", "unexpected id 3 (model 1) on the bus") in messages


def test_joint_outside_its_limits_fails(capsys, tmp_path):
    mapping = load_yaml(resolve_robot("quadruped"))
    mapping["joints"][0].update(lower=0.9, start=1.0)  # the virtual hip rests at 0.6
    (tmp_path / "q.yaml").write_text(yaml.safe_dump(mapping))
    with _serve(QUADRUPED, lockstep=True, watchdog_s=0) as server:
        code, report = _check(capsys, "--robot", str(tmp_path / "q.yaml"), "--port", server.path)
    [bad] = [f for f in report["findings"] if f["level"] == "fail"]
    assert code == 1 and bad["message"].startswith("front_left_hip at +0.6") and "outside [0.9, 1.8]" in bad["message"]


@pytest.mark.parametrize("drill, expected", [
    ("imu", ("fail", "SENSOR_TIMEOUT set", "the IMU delivers no samples")),
    ("motor", ("fail", "OVERCURRENT set (front_right_hip: OVERCURRENT)", "a motor drew too much current")),
])  # fmt: skip
def test_fault_flags_read_before_arming_fail_the_check_with_the_fix_and_nothing_moves(capsys, drill, expected):
    # Real time: the board's clock runs on, and its polls (each control period) drop the IMU at once; 100 ms later it
    # is well past its 10 ms IMU timeout when the check reads.
    with _serve(QUADRUPED, watchdog_s=0, sensor_drops=[(0.0, "imu")] if drill == "imu" else ()) as server:
        if drill == "motor":
            server.robot.motor_faults[2] = MotorStatus.OVERCURRENT
        time.sleep(0.1)
        code, report = _check(capsys, "--robot", "quadruped", "--port", server.path, "--wiggle", "front_left_hip")
        assert server.robot.counters.commands == 0 and server.robot.mode is BoardMode.DISARMED
    faults = [(f["level"], f["message"], f["fix"]) for f in report["findings"] if f["topic"] == "faults"]
    assert code == 1 and not report["ok"] and "wiggle" not in report
    assert len(faults) == 1 and faults[0][:2] == expected[:2] and faults[0][2].startswith(expected[2])
    assert ("warn", "front_left_hip: not moved, a check above failed") in [
        (f["level"], f["message"]) for f in report["findings"] if f["topic"] == "wiggle"
    ]


def test_latency_timer_above_one_ms_warns_with_the_fix(tmp_path):
    (tmp_path / "ttyUSB0").mkdir()
    (tmp_path / "ttyUSB0" / "latency_timer").write_text("16\n")
    [finding] = bringup.check_latency_timer("/dev/ttyUSB0", sysfs=tmp_path)
    assert finding.level == "warn" and "latency timer is 16 ms" in finding.message
    assert finding.fix.startswith(f"echo 1 | sudo tee {tmp_path}/ttyUSB0/latency_timer")
    (tmp_path / "ttyUSB0" / "latency_timer").write_text("1\n")
    assert bringup.check_latency_timer("/dev/ttyUSB0", sysfs=tmp_path)[0].level == "ok"


def test_low_baud_and_return_delay_on_a_dynamixel_warn(capsys):
    with _serve(CLAW, lockstep=True, watchdog_s=0) as server:
        port = DynamixelPort(server.path, timeout_s=0.5)
        port.openPort()
        PacketHandler(2.0).write1ByteTxRx(port, 21, XM430.RETURN_DELAY_TIME.value.address, 250)
        port.closePort()
        code, report = _check(capsys, "--robot", "claw", "--port", server.path, "--baud", "57600")
    warnings = {f["message"]: f["fix"] for f in report["findings"] if f["level"] == "warn"}
    assert code == 0
    assert warnings["id 21: return delay time 250 (= 500 us per reply)"].startswith("with torque off, write 0")
    assert (
        warnings["port opened at 57600 baud, below the spec's 1000000"]
        == "use --baud 1000000 (and set the devices to it)"
    )
    assert len(warnings) == 2


def test_a_bus_watchdog_an_earlier_session_left_tripped_warns(capsys):
    with _serve(CLAW, lockstep=True, watchdog_s=0) as server:
        for dxl_id in (11, 12):  # as a session killed mid-run leaves its motors
            server.endpoint.chain.memories[dxl_id].set(XM430.BUS_WATCHDOG, -1)
        code, report = _check(capsys, "--robot", "claw", "--port", server.path)
    warnings = {f["message"]: f["fix"] for f in report["findings"] if f["level"] == "warn"}
    assert code == 0
    assert "clears it when it arms" in warnings["id 11, 12: bus watchdog tripped (BUS_WATCHDOG -1): goals are refused"]


def test_calibrate_writes_offsets_that_read_the_held_pose_as_the_start_pose(capsys, tmp_path):
    out = tmp_path / "quadruped_cal.yaml"
    with _serve(QUADRUPED, lockstep=True, watchdog_s=0) as server:
        code, report = _check(capsys, "--robot", "quadruped", "--port", server.path, "--calibrate", str(out),
                              "--reversed", "rear_left_knee")  # fmt: skip
        calibration = Calibration.load(out)
        with open_bus(QUADRUPED, port=server.path, timeout_s=0.5, calibration=calibration) as bus:
            calibrated = bus.read_state().joint_pos
        motor = server.robot.state().joint_pos
    assert code == 0 and calibration.joints["rear_left_knee"].direction == -1
    assert calibration.joints["rear_left_knee"].offset == pytest.approx(motor[5] + QUADRUPED.start[5], abs=2e-4)
    np.testing.assert_allclose(calibrated, QUADRUPED.start, atol=2e-4)
    with pytest.raises(ValueError, match="--reversed: 'elbow' is not a joint of quadruped"):
        bringup.calibrate(QUADRUPED, motor, ["elbow"])


def test_wiggle_moves_only_the_named_joint_both_ways_and_ends_safe():
    with _serve(CLAW, lockstep=True) as server:
        with open_bus(CLAW, port=server.path, timeout_s=0.5) as bus:
            before = bus.read_state().joint_pos
            moved = bringup.wiggle(bus, "f0_middle", seconds=1.5)
            after = bus.read_state().joint_pos
        mode = server.robot.mode
    assert moved["max"] > 0.5 * moved["commanded"] and moved["min"] < -0.5 * moved["commanded"]
    assert mode.name == "DISARMED"  # the claw's safe state: torque off
    np.testing.assert_allclose(np.delete(after, 1), np.delete(before, 1), atol=0.02)
    with pytest.raises(ValueError, match="--wiggle: 'elbow' is not a joint of claw"):
        bringup.wiggle(bus, "elbow")


def test_a_calibration_for_another_robot_is_refused_naming_the_file(capsys, tmp_path):
    path = tmp_path / "claw_cal.yaml"
    Calibration.identity(CLAW).save(path)
    with pytest.raises(ConfigError, match=f"{path}: robot: calibration is for 'claw', the robot spec is 'quadruped'"):
        Calibration.load(path, QUADRUPED)
    assert main(["check", "--robot", "quadruped", "--port", str(tmp_path / "tty"), "--calibration", str(path)]) == 2
    assert f"{path}: robot: calibration is for 'claw'" in capsys.readouterr().err
