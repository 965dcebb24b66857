"""The MCAP tick log: written off the loop's thread during a real run, read back, summarized and plotted."""

import json

import numpy as np
import pytest
from mcap.reader import make_reader

from firmware_bridge.action import ActionMapper
from firmware_bridge.bus_factory import open_bus
from firmware_bridge.cli import main
from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.control_loop import ControlLoop, LoopConfig
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.policy_runtime import PolicyRuntime
from firmware_bridge.spec import RobotSpec
from firmware_bridge.task import TaskInterface
from firmware_bridge.state import RobotState
from firmware_bridge.tick_log_process import TickLogProcess
from firmware_bridge.tick_log import CHUNK_BYTES, SCHEMAS, TickLog, TickLogError, read_tick_log
from firmware_bridge.transitions import BackgroundSink, Transition
from policy_files import write_policy
from sim.mujoco_backend import MujocoBackend
from sim.virtual_robot_server import build_robot, make_server, serving

SPEC = RobotSpec.load(resolve_robot("quadruped"))
TASK = TaskInterface.load("quadruped_walk")


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("log")
    bias = np.where(np.arange(SPEC.num_joints) % 2 == 0, 0.8, 0.0)
    policy = PolicyRuntime(write_policy(tmp / "p.onnx", SPEC, TASK, bias=bias, version=7), SPEC, TASK)
    builder = ObservationBuilder(SPEC, TASK)
    sink = BackgroundSink("log", TickLogProcess(tmp / "run.mcap", {"robot": SPEC.name, "joint_names": SPEC.joint_names,
                                                              "rate_hz": SPEC.control_rate_hz}))  # fmt: skip
    robot = build_robot(SPEC, MujocoBackend(SPEC))
    with serving(make_server(robot, serial=True)) as server, open_bus(SPEC, port=server.path) as bus:
        loop = ControlLoop(
            bus, builder, ActionMapper(SPEC), policy, 7, LoopConfig(rate_hz=50, duration_s=0.6), sinks=[sink]
        )
        report = loop.run()
    sink.close()
    return tmp / "run.mcap", report


def test_every_tick_is_in_the_log_with_its_timings(logged_run):
    path, report = logged_run
    data = read_tick_log(path)
    assert data.ticks == report.ticks > 20
    assert data.joint_pos.shape == data.command.shape == (report.ticks, SPEC.num_joints)
    assert set(data.policy_version) == {7}
    assert np.all(np.diff(data.time_s) > 0.01)  # 20 ms apart, give or take the VM
    np.testing.assert_allclose(
        np.median(data.timings_us["latency"]), report.timings.histograms["latency"].percentile(50), rtol=0.2
    )
    assert [e["kind"] for e in data.events][-1] == "safe_state"


def test_the_log_is_plain_mcap_with_json_schemas(logged_run):
    path, _ = logged_run
    with open(path, "rb") as f:
        summary = make_reader(f).get_summary()
    topics = {c.topic: c for c in summary.channels.values()}
    assert set(topics) == set(SCHEMAS)
    assert {c.message_encoding for c in topics.values()} == {"json"}
    assert {s.encoding for s in summary.schemas.values()} == {"jsonschema"}
    assert summary.statistics.channel_message_counts[topics["/state"].id] > 20


def test_log_summary_prints_and_plots(logged_run, tmp_path, capsys):
    path, report = logged_run
    png = tmp_path / "plot.png"
    assert main(["log-summary", str(path), "--json", "--plot", str(png)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ticks"] == report.ticks and summary["policy_versions"] == [7]
    assert summary["safety_stop"] is None and summary["safe_state"] is True
    assert summary["joint_travel_rad"]["front_left_hip"] > 0.1  # the biased joints moved
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_a_file_that_is_not_a_tick_log_is_refused_by_name(tmp_path, capsys):
    bad = tmp_path / "noise.mcap"
    bad.write_bytes(b"\x89MCAP0\r\n" + bytes(range(256)))
    with pytest.raises(TickLogError, match="noise.mcap"):
        read_tick_log(bad)
    assert main(["log-summary", str(bad)]) == 2
    assert "noise.mcap" in capsys.readouterr().err


def test_chunks_stay_small_so_compressing_one_never_stalls_the_loop_for_long(tmp_path):
    # Compressing a chunk holds the interpreter lock: a 1 MiB chunk took 17 ms here, 64 KiB 0.5 ms.
    log = TickLog(tmp_path / "big.mcap", {"robot": SPEC.name, "joint_names": SPEC.joint_names})
    rng = np.random.default_rng(0)
    joints, obs_dim = SPEC.num_joints, ObservationBuilder(SPEC, TASK).dim
    state = RobotState(0.0, rng.random(joints), rng.random(joints), rng.random(joints))
    timings = {"period_error": 1.0, "read": 0.0, "policy": 90.0, "write": 800.0, "latency": 950.0}
    for k in range(400):
        obs = rng.random(obs_dim).astype(np.float32)
        log.handle(Transition(k, k * 1e-3, state, obs, rng.random(joints), rng.random(joints), 1, timings))
    log.close()
    with open(tmp_path / "big.mcap", "rb") as f:
        chunks = make_reader(f).get_summary().chunk_indexes
    assert len(chunks) > 3
    assert max(c.uncompressed_size for c in chunks) < CHUNK_BYTES + 4096  # one message may overshoot the bound
    assert read_tick_log(tmp_path / "big.mcap").ticks == 400
