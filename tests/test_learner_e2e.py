"""End to end on loopback: the virtual claw on a pseudo-terminal, the on-robot loop with the learner uplink,
and the learner (its own process) continuing SAC; new actors come back and are swapped in between ticks."""

import threading
import time

import pytest

from firmware_bridge.action import ActionMapper
from firmware_bridge.bus_factory import open_bus
from firmware_bridge.control_loop import ControlLoop, LoopConfig
from firmware_bridge.learner_uplink import LearnerUplink, UplinkConfig
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.policy_runtime import PolicyRuntime
from firmware_bridge.task import TaskInterface
from firmware_bridge.transitions import BackgroundSink
from learner_helpers import LearnerProcess, free_port, make_claw_run
from policy_files import write_policy
from sim.mujoco_backend import MujocoBackend
from sim.virtual_robot_server import build_robot, make_server, serving

TASK = TaskInterface.load("claw_turn")
SPEC = TASK.load_robot()


class Recorder:
    def __init__(self):
        self.items = []

    def handle(self, item):
        self.items.append(item)

    def close(self):
        """Nothing to release: the items stay readable after the loop closes its sinks."""


@pytest.fixture(scope="module")
def claw_run(tmp_path_factory):
    return make_claw_run(tmp_path_factory.mktemp("claw_run"))


def wait_for(condition, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not condition():
        time.sleep(0.05)
    return condition()


def test_transitions_flow_the_learner_updates_and_new_actors_are_swapped_in(tmp_path, claw_run):
    push_every = 40
    # The claw's own 10 Hz: an exchange over the pty costs 10-35 ms on this machine; four updates per
    # transition bring the pushes within seconds.
    learner = LearnerProcess(claw_run, tmp_path / "learner", free_port(), "--push-every", str(push_every), "--utd",
                             "4", "--checkpoint-every", "0.5", "--set", "learning_starts=16")  # fmt: skip
    learner.start()
    builder = ObservationBuilder(SPEC, TASK)
    policy = PolicyRuntime(write_policy(tmp_path / "v1.onnx", SPEC, TASK, version=1), SPEC, TASK)
    uplink = LearnerUplink(UplinkConfig(learner.endpoint, "claw-vr", tmp_path / "spool", batch_size=16, flush_s=0.2,
                                        spool_fsync=False), builder, policy)  # fmt: skip
    recorder = BackgroundSink("record", Recorder())
    stop = threading.Event()
    # Two swaps, then a second of running the last one.
    watcher = threading.Thread(target=lambda: (wait_for(lambda: len(uplink.swaps) >= 2, 150), time.sleep(1.0),
                                               stop.set()), daemon=True)  # fmt: skip
    robot = build_robot(SPEC, MujocoBackend(SPEC))
    try:
        with serving(make_server(robot, serial=True)) as server, open_bus(SPEC, port=server.path, timeout_s=0.2) as bus:
            config = LoopConfig(rate_hz=SPEC.control_rate_hz, stale_after_s=0.5)
            loop = ControlLoop(bus, builder, ActionMapper(SPEC), policy, policy.version, config,
                               sinks=[uplink, recorder], stop=stop)  # fmt: skip
            uplink.attach(loop.swap_policy)
            watcher.start()
            report = loop.run()
        uplink.close()
        recorder.close()
    finally:
        summary = learner.stop()

    assert report.safety_stop is None and report.safe_state_reached
    swapped = [version for version, _ in uplink.swaps]
    assert len(swapped) >= 2 and swapped == sorted(swapped) and swapped[0] > 1
    # Every policy the loop ran came from the learner, in order; a push that lands after the loop's last
    # tick is swapped in by the uplink but never run.
    ran = report.policy_versions
    assert len(ran) >= 3 and ran == [1, *swapped[: len(ran) - 1]]
    produced = uplink.counters()["transitions"]
    robot_report = summary["robots"]["claw-vr"]
    # Two pushes take 2 * push_every updates, owed at four per transition received (none before learning_starts).
    assert robot_report["transitions_received"] == produced >= max(16, 2 * push_every // 4)
    assert robot_report["duplicates_dropped"] == 0 and robot_report["unscorable"] == 0
    # One episode, cut by the end of the run, scored with the task's reward.
    assert robot_report["episodes"] == 1 and robot_report["episode_return_last10"] is not None
    assert list((tmp_path / "learner" / "tb").glob("events.out.tfevents.*"))
    assert robot_report["policy_versions_accepted"][:2] == swapped[:2]
    # A row that spans another time than the control period (a stalled tick) is scored but not stored.
    assert summary["updates"] >= 2 * push_every
    assert summary["real_buffer"] == produced - robot_report["off_period"]
    assert robot_report["off_period"] <= max(2, produced // 20)
    # The swap is a reference store between ticks: the ticks that start a new policy are on time.
    ticks = recorder.consumer.items
    policy_ticks = [t for t in ticks if hasattr(t, "policy_version")]
    firsts = [b for a, b in zip(policy_ticks, policy_ticks[1:]) if b.policy_version != a.policy_version]
    assert [t.policy_version for t in firsts] == ran[1:]
    assert all(t.missed == 0 for t in firsts)
