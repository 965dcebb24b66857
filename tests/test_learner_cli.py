"""The commands: ``robot-sac keys``, and ``firmware-bridge run --learner --keys`` against ``robot-sac learner
--keys`` and ``robot-sac virtual-robot``, three processes on loopback."""

import json
import subprocess
import sys

import pytest
import zmq.auth

from learner_helpers import LearnerProcess, free_port, make_claw_run
from policy_files import write_policy
from firmware_bridge.task import TaskInterface
from robot_sac.cli import main as robot_sac_main

TASK = TaskInterface.load("claw_turn")
SPEC = TASK.load_robot()


def test_keys_makes_the_server_pair_client_pairs_and_the_allow_list(tmp_path, capsys):
    assert robot_sac_main(["keys", str(tmp_path / "k"), "--client", "claw-a", "--client", "claw-b"]) == 0
    keys = tmp_path / "k"
    public, secret = zmq.auth.load_certificate(keys / "server.key_secret")
    assert secret is not None and zmq.auth.load_certificate(keys / "server.key")[0] == public
    assert sorted(p.name for p in (keys / "allowed").iterdir()) == ["claw-a.key", "claw-b.key"]
    for name in ("claw-a", "claw-b"):
        assert zmq.auth.load_certificate(keys / "clients" / f"{name}.key_secret")[1] is not None
    server_before = (keys / "server.key_secret").read_bytes()
    assert robot_sac_main(["keys", str(keys)]) == 0  # again: the server pair stays, a default client is added
    assert (keys / "server.key_secret").read_bytes() == server_before
    assert (keys / "allowed" / "client.key").exists()


@pytest.fixture(scope="module")
def claw_run(tmp_path_factory):
    return make_claw_run(tmp_path_factory.mktemp("claw_run"))


def test_bridge_run_streams_to_a_curve_learner_through_the_commands(tmp_path, claw_run):
    keys = tmp_path / "keys"
    assert robot_sac_main(["keys", str(keys), "--client", "claw-a"]) == 0
    learner = LearnerProcess(claw_run, tmp_path / "learner", free_port(), "--keys", str(keys),
                             "--checkpoint-every", "0.5", "--set", "learning_starts=8")  # fmt: skip
    learner.start()
    robot = subprocess.Popen([sys.executable, "-m", "robot_sac.cli", "virtual-robot", "--robot", "claw", "--serial"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        port = robot.stdout.readline().split(" on ")[-1].strip()
        policy = write_policy(tmp_path / "p.onnx", SPEC, TASK, version=1)
        bridge = subprocess.run(
            [sys.executable, "-m", "firmware_bridge.cli", "run", "--policy", str(policy), "--robot", "claw", "--port",
             port, "--duration", "4", "--approach-speed", "1.0", "--json", "-", "--learner", learner.endpoint,
             "--keys", str(keys), "--key-name", "claw-a", "--robot-id", "claw-cli", "--spool", str(tmp_path / "spool")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert bridge.returncode == 0, bridge.stderr
        summary = json.loads(bridge.stdout)
    finally:
        robot.terminate()
        robot.wait(20)
        learned = learner.stop()
    uplink = summary["sinks"]["learner"]
    # Every pair of ticks is a transition, or (a read that timed out on a loaded machine left a tick on the state
    # before) a pair the uplink counts as stale and does not send.
    assert uplink["transitions"] + uplink["stale_states"] == summary["ticks"] - 1, (uplink, summary)
    assert summary["transitions_sent"] == uplink["transitions"] > 20 and uplink["stale_states"] <= 3
    assert summary["transitions_acked"] > 0 and uplink["dropped"] == 0
    robot_report = learned["robots"]["claw-cli"]
    assert robot_report["transitions_received"] == summary["transitions_sent"]
    assert robot_report["unscorable"] == 0 and learned["link"]["malformed"] == 0
