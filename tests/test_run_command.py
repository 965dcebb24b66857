"""``firmware-bridge run`` end to end: two processes, the bridge and ``robot-sac virtual-robot``, on a real pty.

The quadruped (framed serial) and the claw (Dynamixel) each run a policy at 100 Hz for 10 s
(``benchmarks/loop_timing.py`` measures 250-1000 Hz); signals, a killed bridge and a silent robot each end
with the robot safe.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.spec import RobotSpec
from firmware_bridge.task import TaskInterface
from firmware_bridge.tick_log import read_tick_log
from policy_files import write_policy

RATE_HZ = 100.0
E2E_SECONDS = 10.0


def robot_at_rate(tmp_path: Path, name: str, rate_hz: float = RATE_HZ) -> tuple[Path, RobotSpec]:
    """The robot's spec with another control rate, as a file both processes load."""
    mapping = yaml.safe_load(resolve_robot(name).read_text())
    mapping["control_rate_hz"] = rate_hz
    path = tmp_path / f"{name}_{rate_hz:g}hz.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return path, RobotSpec.load(path)


class VirtualRobot:
    """``robot-sac virtual-robot --serial`` as a child process; ``counters()`` stops it and reads its report."""

    def __init__(self, robot: Path, *extra: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "robot_sac.cli", "virtual-robot", "--robot", str(robot), "--serial", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = self.proc.stdout.readline()
        assert " on " in first, f"virtual robot did not start: {first!r} {self.proc.stderr.read()}"
        self.port = first.split(" on ")[-1].strip()

    def counters(self) -> dict[str, int]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=20)
        assert self.proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])["counters"]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def virtual_robots():
    started = []

    def start(robot: Path, *extra: str) -> VirtualRobot:
        started.append(VirtualRobot(robot, *extra))
        return started[-1]

    yield start
    for robot in started:
        robot.kill()


def bridge(*args: str, own_group: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge.cli", "run", "--approach-speed", "1.0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=own_group,
    )


def wait_for_policy_phase(proc: subprocess.Popen, seconds_after: float = 0.5) -> str:
    """Read the bridge's event lines (stderr with ``--json`` on stdout) until the policy runs, then wait a bit."""
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if "policy phase starts" in line:
            time.sleep(seconds_after)
            return "".join(seen)
        assert line, f"bridge ended before its policy phase: {''.join(seen)}"
    raise AssertionError(f"no policy phase within 30 s: {''.join(seen)}")


def _moving_policy(tmp_path, spec, task, seed=0):
    """A random linear-tanh policy: it reacts to the state, so the robot keeps moving (like an untrained actor)."""
    rng = np.random.default_rng(seed)
    from firmware_bridge.observation import ObservationBuilder

    dim = ObservationBuilder(spec, task).dim
    return write_policy(
        tmp_path / f"{spec.name}.onnx", spec, task, weights=rng.normal(0, 0.5, (dim, spec.num_joints)),
        bias=rng.normal(0, 0.5, spec.num_joints),
    )  # fmt: skip


# 100 Hz for 10 s: twice the quadruped's spec rate, ten times the D'Claw's 10 Hz. One claw tick is a
# SYNC_WRITE and a SYNC_READ of ten devices, ~2.7 ms on the modelled 1 Mbaud line.
@pytest.mark.parametrize("robot_name,task_name", [("quadruped", "quadruped_walk"), ("claw", "claw_turn")])
def test_a_policy_drives_the_virtual_robot_over_its_pty_at_100_hz_without_a_safety_stop(
    tmp_path, virtual_robots, robot_name, task_name
):
    robot_file, spec = robot_at_rate(tmp_path, robot_name, RATE_HZ)
    policy = _moving_policy(tmp_path, spec, TaskInterface.load(task_name))
    device = virtual_robots(robot_file)
    log, summary_file = tmp_path / "run.mcap", tmp_path / "summary.json"
    proc = bridge("--policy", str(policy), "--robot", str(robot_file), "--port", device.port,
                  "--duration", str(E2E_SECONDS), "--log", str(log), "--json", str(summary_file))  # fmt: skip
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    summary = json.loads(summary_file.read_text())
    assert summary["safety_stop"] is None and summary["safe_state_reached"]
    deadlines = summary["ticks"] + summary["missed_deadlines"]
    assert deadlines >= RATE_HZ * E2E_SECONDS and summary["missed_deadlines"] < 0.01 * deadlines
    for key in ("period_error_us", "latency_us"):
        assert set(summary[key]) == {"p50", "p99", "max"}
    assert summary["bad_frames"] == 0 and summary["policy_versions"] == [1]
    assert summary["transitions_sent"] == 0 and summary["transitions_acked"] == 0
    assert summary["sinks"]["console"]["offered"] < 20  # events only, not the 1000 ticks
    log_counters = summary["sinks"]["log"]
    assert log_counters["dropped"] == log_counters["pending"] == 0 and log_counters["error"] is None
    # Logging shortens Python's thread switch interval, so the writer cannot hold the interpreter for 5 ms.
    assert summary["realtime"] == {"applied": ["switch interval 200 us"], "refused": []}
    data = read_tick_log(log)
    assert data.ticks == summary["ticks"]
    assert np.ptp(data.joint_pos, axis=0).max() > 0.1, "the robot did not move"
    assert "SAFETY" not in out and "robot in its safe state" in out
    counters = device.counters()
    assert counters["device_watchdog_trips"] == 0 and counters["device_commands"] >= summary["ticks"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_end_in_the_safe_state_without_a_traceback(tmp_path, virtual_robots, sig):
    robot_file, spec = robot_at_rate(tmp_path, "quadruped")
    policy = _moving_policy(tmp_path, spec, TaskInterface.load("quadruped_walk"))
    device = virtual_robots(robot_file)
    proc = bridge("--policy", str(policy), "--robot", str(robot_file), "--port", device.port, "--json")
    wait_for_policy_phase(proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    summary = json.loads(out)
    assert summary["stopped_by_signal"] and summary["safety_stop"] is None and summary["safe_state_reached"]
    assert summary["ticks"] >= 20  # half a second of policy ticks at 100 Hz, give or take a loaded VM
    assert device.counters()["device_watchdog_trips"] == 0  # disarmed by the bridge, not by the watchdog


def test_a_sigterm_to_the_whole_process_group_still_logs_the_run_to_its_safe_state(tmp_path, virtual_robots):
    """As a service manager stops a unit (systemd's default KillMode=control-group): the log's writer gets the
    signal too, and must outlive the bridge's safe stop to record it."""
    robot_file, spec = robot_at_rate(tmp_path, "quadruped")
    policy = _moving_policy(tmp_path, spec, TaskInterface.load("quadruped_walk"))
    device = virtual_robots(robot_file)
    log = tmp_path / "run.mcap"
    # Timing is not what this test is about: a loaded machine's missed deadlines must not stop the run first.
    proc = bridge("--policy", str(policy), "--robot", str(robot_file), "--port", device.port, "--json", "--log",
                  str(log), "--max-missed", "1000", own_group=True)  # fmt: skip
    wait_for_policy_phase(proc)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["safe_state_reached"] and summary["sinks"]["log"]["error"] is None
    data = read_tick_log(log)
    kinds = [event["kind"] for event in data.events]
    assert data.ticks == summary["ticks"] and kinds[-2:] == ["safe_state", "summary"]


# The quadruped's motor board has a watchdog of its own; the claw's XM430s have the bus watchdog the bridge sets
# when it arms them. At 100 Hz both are 100 ms.
@pytest.mark.parametrize("robot_name,task_name", [("quadruped", "quadruped_walk"), ("claw", "claw_turn")])
def test_a_killed_bridge_leaves_the_robot_to_its_watchdog(tmp_path, virtual_robots, robot_name, task_name):
    robot_file, spec = robot_at_rate(tmp_path, robot_name)
    policy = _moving_policy(tmp_path, spec, TaskInterface.load(task_name))
    device = virtual_robots(robot_file)
    proc = bridge("--policy", str(policy), "--robot", str(robot_file), "--port", device.port, "--json")
    wait_for_policy_phase(proc)
    proc.kill()
    proc.wait()
    time.sleep(0.3)  # three watchdog periods
    counters = device.counters()
    assert counters["device_watchdog_trips"] == 1 and counters["device_commands"] > 10


def test_a_robot_that_stops_answering_is_reported_and_its_watchdog_takes_over(tmp_path, virtual_robots):
    robot_file, spec = robot_at_rate(tmp_path, "quadruped")
    policy = _moving_policy(tmp_path, spec, TaskInterface.load("quadruped_walk"))
    device = virtual_robots(robot_file)
    log = tmp_path / "silent.mcap"
    proc = bridge("--policy", str(policy), "--robot", str(robot_file), "--port", device.port, "--json",
                  "--log", str(log))  # fmt: skip
    wait_for_policy_phase(proc)
    os.kill(device.proc.pid, signal.SIGSTOP)  # the board hangs: no reply, no watchdog either, yet
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        os.kill(device.proc.pid, signal.SIGCONT)
    summary = json.loads(out)
    assert proc.returncode == 4, err  # even the safe stop got no answer
    assert summary["safety_stop"].startswith("stale state: motor board: no STATE reply")
    assert not summary["safe_state_reached"] and "watchdog is the last line" in summary["safe_stop_error"]
    time.sleep(0.3)  # the board runs again and finds no command for far longer than its timeout
    assert device.counters()["device_watchdog_trips"] == 1
    # The log holds the ticks before the silence and both events; log-summary reports them.
    summary_run = subprocess.run([sys.executable, "-m", "firmware_bridge.cli", "log-summary", str(log), "--json",
                                  "--no-plot"], capture_output=True, text=True, timeout=60)  # fmt: skip
    logged = json.loads(summary_run.stdout)
    assert logged["ticks"] == summary["ticks"] and logged["safe_state"] is False
    assert logged["safety_stop"] == summary["safety_stop"]
    assert [e["kind"] for e in logged["events"]][-2:] == ["safety_stop", "safe_stop_failed"]


def test_a_policy_for_another_robot_is_refused_before_anything_is_armed(tmp_path, virtual_robots):
    claw_policy = write_policy(
        tmp_path / "claw.onnx", RobotSpec.load(resolve_robot("claw")), TaskInterface.load("claw_turn")
    )
    robot_file, _ = robot_at_rate(tmp_path, "quadruped")
    device = virtual_robots(robot_file)
    proc = bridge("--policy", str(claw_policy), "--robot", str(robot_file), "--port", device.port)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "wrong robot" in err and "policy is for robot 'claw'" in err and "action dimension differs" in err
    counters = device.counters()
    assert counters["device_commands"] == 0 and counters.get("frames", 0) == 0


def test_a_missing_port_or_an_unwritable_log_is_a_clear_error(tmp_path):
    robot_file, spec = robot_at_rate(tmp_path, "quadruped")
    policy = _moving_policy(tmp_path, spec, TaskInterface.load("quadruped_walk"))
    base = ("--policy", str(policy), "--robot", str(robot_file))
    proc = bridge(*base, "--port", str(tmp_path / "no-such-tty"))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "no-such-tty: cannot open serial port" in err
    proc = bridge(*base, "--port", str(tmp_path / "no-such-tty"), "--log", str(tmp_path / "missing" / "run.mcap"))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "--log" in err and "No such file or directory" in err
    proc = bridge(*base, "--port", str(tmp_path / "no-such-tty"), "--log", str(tmp_path / "run.mcap"),
                  "--learner", "tcp://127.0.0.1:1", "--robot-id", "a b")  # fmt: skip
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "robot_id 'a b': use 1-64 characters" in err and "Traceback" not in err
    assert not (tmp_path / "run.mcap").exists()
    proc = bridge(*base, "--port", str(tmp_path / "no-such-tty"), "--approach-speed", "25")  # the joints' limit is 20
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "approach_speed: 25 rad/s exceeds joint front_left_hip's max_velocity" in err
    proc = bridge(*base, "--port", str(tmp_path / "no-such-tty"), "--learner", "gpu-box:5555")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "learner address 'gpu-box:5555': expected tcp://HOST:PORT" in err
    proc = bridge(*base, "--port", str(tmp_path / "no-such-tty"), "--learner", "tcp://127.0.0.1:1", "--rate", "50")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and f"--rate 50: with --learner the loop runs at the robot spec's control rate " \
        f"({spec.control_rate_hz:g} Hz)" in err
