"""The tick log's child-process writer: the packed record round trip, the file it writes, a writer that dies."""

import os
import time

import numpy as np
import pytest

from firmware_bridge.state import Fault, RobotState
from firmware_bridge.tick_log import read_tick_log
from firmware_bridge.tick_log_process import TickCodec, TickLogProcess
from firmware_bridge.transitions import BackgroundSink, Event, Transition

TIMINGS = {"period_error": 3.5, "read": 0.0, "policy": 91.25, "write": 420.0, "latency": 1010.5}


def transition(k: int, rng: np.random.Generator) -> Transition:
    state = RobotState(
        timestamp=0.01 * k,
        joint_pos=rng.normal(size=9),
        joint_vel=rng.normal(size=9),
        joint_current=rng.normal(size=9),
        imu=rng.normal(size=6),
        extras={"valve_angle": float(rng.normal()), "valve_velocity": float(rng.normal())},
        faults=int(Fault.SENSOR_TIMEOUT) if k % 2 else 0,
    )
    return Transition(k, 100.0 + 0.01 * k, state, rng.normal(size=31).astype(np.float32),
                      rng.uniform(-1, 1, 9).astype(np.float32), rng.normal(size=9), 4, dict(TIMINGS),
                      missed=k % 3)  # fmt: skip


def test_a_packed_tick_decodes_to_the_same_transition():
    item = transition(5, np.random.default_rng(0))
    codec = TickCodec(TickCodec.layout_of(item))
    back = codec.decode(codec.encode(item))
    assert (back.tick, back.time, back.missed, back.policy_version) == (5, item.time, 2, 4)
    assert back.timings_us == TIMINGS
    assert back.state.extras == item.state.extras and back.state.faults == item.state.faults
    for name in ("joint_pos", "joint_vel", "joint_current", "imu"):
        np.testing.assert_array_equal(getattr(back.state, name), getattr(item.state, name))
    for name in ("observation", "action", "command"):
        np.testing.assert_array_equal(getattr(back, name), getattr(item, name))
        assert getattr(back, name).dtype == getattr(item, name).dtype


def test_a_record_that_does_not_fit_its_layout_is_refused():
    item = transition(0, np.random.default_rng(1))
    record = TickCodec(TickCodec.layout_of(item)).encode(item)
    with pytest.raises(ValueError, match="before any layout"):
        TickCodec().decode(record)
    with pytest.raises(ValueError, match="holds 89 values, the layout says 88"):
        layout = TickCodec.layout_of(item)
        layout["sizes"]["observation"] -= 1
        TickCodec(layout).decode(record)


def test_the_child_writes_every_tick_and_event_into_the_mcap_file(tmp_path):
    rng = np.random.default_rng(2)
    items = [transition(k, rng) for k in range(50)]
    log = TickLogProcess(tmp_path / "run.mcap", {"robot": "claw", "joint_names": [f"j{i}" for i in range(9)]})
    log.handle(Event(99.0, "phase", "policy", {"rate_hz": 100.0}))
    for item in items:
        log.handle(item)
    log.handle(Event(101.0, "stop", "duration reached"))
    log.close()
    data = read_tick_log(tmp_path / "run.mcap")
    assert data.ticks == 50
    assert data.run_info["robot"] == "claw"
    np.testing.assert_array_equal(data.joint_pos, np.stack([i.state.joint_pos for i in items]))
    np.testing.assert_array_equal(data.command, np.stack([i.command for i in items]))
    np.testing.assert_array_equal(data.missed, [k % 3 for k in range(50)])
    np.testing.assert_array_equal(data.timings_us["policy"], np.full(50, 91.25))
    assert [e["kind"] for e in data.events] == ["phase", "stop"]


def test_an_unwritable_log_path_fails_in_the_bridge_naming_it(tmp_path):
    with pytest.raises(OSError, match="no-such-dir"):
        TickLogProcess(tmp_path / "no-such-dir" / "run.mcap", {})


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
def test_the_writer_runs_idle_and_hurry_returns_it_to_the_normal_class(tmp_path):
    log = TickLogProcess(tmp_path / "run.mcap", {"robot": "claw"})
    deadline = time.monotonic() + 5
    while os.sched_getscheduler(log._proc.pid) != os.SCHED_IDLE and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.sched_getscheduler(log._proc.pid) == os.SCHED_IDLE
    log.hurry()
    policy = os.sched_getscheduler(log._proc.pid)
    log.close()
    if policy == os.SCHED_IDLE and os.geteuid() != 0:
        pytest.skip("leaving SCHED_IDLE needs CAP_SYS_NICE or a RLIMIT_NICE allowance here")
    assert policy == os.SCHED_OTHER
    log.hurry()  # after the writer exited: nothing to do, and no error


def test_a_dead_writer_stops_the_sink_and_is_counted_never_raised_at_the_loop(tmp_path):
    rng = np.random.default_rng(3)
    log = TickLogProcess(tmp_path / "run.mcap", {"robot": "claw"})
    sink = BackgroundSink("log", log, capacity=8)
    log._proc.kill()
    log._proc.wait()
    offers = [sink.offer(transition(k, rng)) for k in range(200)]
    deadline = time.monotonic() + 5
    while sink.error is None and time.monotonic() < deadline:
        sink.offer(transition(0, rng))
        time.sleep(0.01)
    assert isinstance(sink.error, BrokenPipeError)
    assert sink.offer(transition(0, rng)) is False
    assert sink.counters()["dropped"] >= 1 and len(offers) == 200
    with pytest.raises(RuntimeError, match="sink log failed"):
        sink.close()


def test_extra_sensors_are_read_back_and_plotted_beside_the_joints(tmp_path):
    from firmware_bridge.commands.log_summary import plot

    rng = np.random.default_rng(5)
    items = [transition(k, rng) for k in range(40)]
    log = TickLogProcess(tmp_path / "run.mcap", {"robot": "claw", "joint_names": [f"j{i}" for i in range(9)]})
    for item in items:
        log.handle(item)
    log.close()
    data = read_tick_log(tmp_path / "run.mcap")
    assert list(data.extras) == ["valve_angle", "valve_velocity"]
    np.testing.assert_array_equal(data.extras["valve_angle"], [i.state.extras["valve_angle"] for i in items])
    plot(data, tmp_path / "run.png")
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policies")
def test_the_writer_runs_under_the_idle_scheduling_policy(tmp_path):
    log = TickLogProcess(tmp_path / "run.mcap", {"robot": "claw"})
    try:
        deadline = time.monotonic() + 10
        while os.sched_getscheduler(log._proc.pid) != os.SCHED_IDLE and time.monotonic() < deadline:
            time.sleep(0.02)  # the child sets it once Python has started
        assert os.sched_getscheduler(log._proc.pid) == os.SCHED_IDLE
    finally:
        log.close()
