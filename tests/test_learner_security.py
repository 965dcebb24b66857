"""Nobody else in, nothing bad through: CURVE allow-list, malformed and oversized messages, bad policies.

Everything on 127.0.0.1, the learner's network side (``LearnerLink``) without the trainer.
"""

import hashlib
import time

import msgpack
import pytest
import zmq

from firmware_bridge.curve_keys import KeysError, create_keys
from firmware_bridge.learner_uplink import LearnerUplink, UplinkConfig
from firmware_bridge.learner_wire import (
    MAX_BATCH,
    MessageType,
    TransitionLayout,
    decode_policy_result,
    encode_policy,
    encode_transitions,
    parse_header,
)
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.policy_runtime import PolicyRuntime
from firmware_bridge.spec import RobotSpec
from firmware_bridge.task import TaskInterface
from firmware_bridge.transitions import Event
from learner_helpers import batch, tick
from policy_files import write_policy
from robot_sac import learner_link
from robot_sac.learner_link import LearnerLink, RobotRecord
from robot_sac.real_transitions import TransitionScorer
from sim.task import TaskSpec

TASK = TaskInterface.load("claw_turn")
SPEC = TASK.load_robot()
BUILDER = ObservationBuilder(SPEC, TASK)
LAYOUT = TransitionLayout(BUILDER.dim, SPEC.num_joints, SPEC.num_joints)


def wait_for(condition, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def link_factory():
    links = []

    def make(keys_dir=None, robots=None):
        link = LearnerLink("tcp://127.0.0.1:*", LAYOUT, BUILDER.interface_hash(),
                           TransitionScorer(TaskSpec.load("claw_turn"), SPEC), robots=robots,
                           keys_dir=keys_dir)  # fmt: skip
        link.start()
        links.append(link)
        return link

    yield make
    for link in links:
        link.stop()


@pytest.fixture
def uplinks(tmp_path):
    made = []

    def make(endpoint, robot_id="claw-1", keys_dir=None, client="client", swap=None, version=1, spool=None):
        policy = PolicyRuntime(write_policy(tmp_path / f"{robot_id}-v{version}.onnx", SPEC, TASK, version=version),
                               SPEC, TASK)  # fmt: skip
        config = UplinkConfig(endpoint, robot_id, tmp_path / (spool or f"spool-{robot_id}"), keys_dir, client,
                              batch_size=8, flush_s=0.05, spool_fsync=False, heartbeat_s=0.2)  # fmt: skip
        uplink = LearnerUplink(config, BUILDER, policy, swap=swap)
        made.append(uplink)
        return uplink

    yield make
    for uplink in made:
        uplink.close()


def feed(uplink, n):
    """``n`` ticks of one episode: ``n - 1`` transitions."""
    uplink.offer(Event(0.0, "policy", "start"))
    for i in range(n):
        uplink.offer(tick(i, SPEC.num_joints, BUILDER.dim))
    uplink.offer(Event(0.0, "safe_state", "end"))


def test_only_allow_listed_curve_keys_get_data_in_or_policies_out(tmp_path, link_factory, uplinks):
    keys = tmp_path / "keys"
    create_keys(keys, ["robot-a", "intruder"])
    (keys / "allowed" / "intruder.key").unlink()  # made, then revoked
    link = link_factory(keys)
    good = uplinks(link.endpoint, "claw-good", keys, "robot-a")
    bad = uplinks(link.endpoint, "claw-bad", keys, "intruder")
    feed(good, 20)
    feed(bad, 20)
    assert wait_for(lambda: link.robots.get("claw-good") and link.robots["claw-good"].transitions == 19)
    data = write_policy(tmp_path / "v5.onnx", SPEC, TASK, version=5).read_bytes()
    link.publish(5, data)
    assert wait_for(lambda: good.counters()["policies_accepted"] == 1)
    time.sleep(0.5)
    assert "claw-bad" not in link.robots
    assert bad.counters()["policies_received"] == 0 and bad.counters()["acked"] == 0
    assert bad.spool.held == 19  # the intruder's transitions never left it
    assert link.counts["messages"] > 0 and link.robots["claw-good"].policy_versions_sent == [5]


def test_a_robot_id_stays_with_its_first_key_across_a_restart_until_that_key_is_revoked(tmp_path, link_factory,
                                                                                       uplinks, monkeypatch):
    # A new spool after a restart waits for the saved one's hold (test_learner_link.py); shortened here.
    monkeypatch.setattr(learner_link, "ROBOT_ID_HELD_S", 0.3)
    keys = tmp_path / "keys"
    create_keys(keys, ["robot-a", "robot-b"])
    link = link_factory(keys)
    owner = uplinks(link.endpoint, "claw-1", keys, "robot-a")
    feed(owner, 10)
    assert wait_for(lambda: link.robots.get("claw-1") and link.robots["claw-1"].transitions == 9)
    owner.close()
    link.stop()

    def restart():  # as the learner does: the records from its last checkpoint
        saved = {name: rec.checkpoint_state(rec.received) for name, rec in link.robots.items()}
        return link_factory(keys, robots={name: RobotRecord.from_checkpoint(state) for name, state in saved.items()})

    link = restart()
    impostor = uplinks(link.endpoint, "claw-1", keys, "robot-b", spool="spool-impostor")
    feed(impostor, 10)
    assert wait_for(lambda: link.counts["impersonation"] > 0)
    assert link.robots["claw-1"].transitions == 9 and impostor.counters()["acked"] == 0
    assert "spoken for by key" in link.errors[-1] and "--release-robot" in link.errors[-1]
    impostor.close()
    link.stop()

    # Revoked, the first key no longer holds the id: the next key to speak for it takes it.
    (keys / "allowed" / "robot-a.key").unlink()
    link = restart()
    successor = uplinks(link.endpoint, "claw-1", keys, "robot-b", spool="spool-successor")
    feed(successor, 10)
    assert wait_for(lambda: link.robots["claw-1"].transitions == 18)
    assert link.counts["impersonation"] == 0
    assert any(e.startswith("rebound: claw-1 to key") and "no longer in the allow-list" in e for e in link.errors)


def test_a_client_without_curve_gets_nothing_from_a_curve_learner(tmp_path, link_factory, uplinks):
    keys = tmp_path / "keys"
    create_keys(keys, ["robot-a"])
    link = link_factory(keys)
    plain = uplinks(link.endpoint, "claw-plain")
    feed(plain, 10)
    time.sleep(1.0)
    assert link.counts["messages"] == 0 and link.robots == {}


def test_malformed_and_oversized_messages_are_counted_and_dropped_and_the_link_serves_on(link_factory, uplinks):
    link = link_factory()
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(link.endpoint)
    good = [bytes(f) for f in encode_transitions(batch(LAYOUT, 4, interface_hash=BUILDER.interface_hash()), LAYOUT)]
    header = msgpack.unpackb(good[0])
    huge = dict(header, arrays=[[n, d, [MAX_BATCH + 1, *s[1:]]] for n, d, s in header["arrays"]])
    wide = dict(header, arrays=[[n, d, [4, 999] if n == "obs" else s] for n, d, s in header["arrays"]])
    raw.send_multipart([b"\x93garbage"])
    raw.send_multipart([msgpack.packb(huge), *good[1:]])
    raw.send_multipart([msgpack.packb(wide), *good[1:]])
    raw.send_multipart([good[0], *good[1:-1]])  # a frame missing
    raw.send_multipart([b"x"] * 200)  # more frames than any message has
    raw.send_multipart([msgpack.packb(dict(header, interface_hash="cd" * 32)), *good[1:]])
    assert wait_for(lambda: link.counts["malformed"] == 4 and link.counts["oversized"] == 1
                    and link.counts["wrong_interface"] == 1)  # fmt: skip
    assert "batch size" in " ".join(link.errors) and "obs" in " ".join(link.errors)
    assert link.robots == {}
    # One frame above the socket's maximum message size: libzmq drops that connection before Python sees it.
    raw.send_multipart([b"x" * (link.max_frame_bytes + 1)])
    uplink = uplinks(link.endpoint)
    feed(uplink, 12)
    assert wait_for(lambda: link.robots.get("claw-1") and link.robots["claw-1"].transitions == 11)
    assert (link.counts["malformed"], link.counts["oversized"]) == (4, 1)  # the huge frame never got in
    raw.close()


class FakeLearner:
    """A bare ROUTER that plays the learner, to send the robot policies a real learner never would."""

    def __init__(self):
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.peer = None

    def wait_for_robot(self):
        assert self.sock.poll(5000)
        self.peer = self.sock.recv_multipart()[0]

    def send(self, frames):
        self.sock.send_multipart([self.peer, *frames])

    def result(self):
        while self.sock.poll(5000):
            frames = self.sock.recv_multipart()[1:]
            kind, header = parse_header(frames)
            if kind is MessageType.POLICY_RESULT:
                return decode_policy_result(header)
        raise AssertionError("no policy result from the robot")


def test_the_robot_refuses_a_wrong_sha256_a_wrong_robot_and_an_old_version_and_keeps_its_policy(tmp_path, uplinks):
    fake = FakeLearner()
    swapped = []
    uplink = uplinks(fake.endpoint, swap=lambda policy, version: swapped.append((policy, version)), version=3)
    fake.wait_for_robot()

    good = write_policy(tmp_path / "good.onnx", SPEC, TASK, version=4).read_bytes()
    frames = encode_policy(4, good)
    header = msgpack.unpackb(frames[0])
    header["sha256"] = hashlib.sha256(b"something else").hexdigest()
    fake.send([msgpack.packb(header), frames[1]])
    result = fake.result()
    assert not result.accepted and result.problems[0].startswith("sha256")

    quad = RobotSpec.load("configs/robots/quadruped.yaml")
    wrong_robot = write_policy(tmp_path / "quad.onnx", quad, TaskInterface.load("quadruped_walk"), version=4)
    fake.send(encode_policy(4, wrong_robot.read_bytes()))
    result = fake.result()
    assert not result.accepted and any(p.startswith("wrong robot") for p in result.problems)

    fake.send(encode_policy(2, write_policy(tmp_path / "old.onnx", SPEC, TASK, version=2).read_bytes()))
    result = fake.result()
    assert not result.accepted and "not newer" in result.problems[0]

    # A graph that loads but raises when run: refused like the others, and the uplink carries on.
    fake.send(encode_policy(4, write_policy(tmp_path / "fails.onnx", SPEC, TASK, fails=True, version=4).read_bytes()))
    result = fake.result()
    assert not result.accepted and result.problems[0].startswith("onnxruntime loads it, but running it fails")
    assert swapped == [] and uplink.policy_version == 3 and uplink.counters()["policies_refused"] == 4

    fake.send(encode_policy(4, good))
    assert fake.result().accepted
    assert [v for _, v in swapped] == [4] and swapped[0][0].sha256 == hashlib.sha256(good).hexdigest()
    fake.sock.close()


def test_missing_key_files_stop_both_sides_before_any_socket_naming_the_file(tmp_path, uplinks):
    keys = tmp_path / "keys"
    create_keys(keys, ["robot-a"])
    with pytest.raises(KeysError, match="clients/robot-b.key_secret"):
        uplinks("tcp://127.0.0.1:9", keys_dir=keys, client="robot-b")
    (keys / "allowed" / "robot-a.key").unlink()
    with pytest.raises(KeysError, match="no allowed client keys"):
        LearnerLink("tcp://127.0.0.1:*", LAYOUT, BUILDER.interface_hash(),
                    TransitionScorer(TaskSpec.load("claw_turn"), SPEC), keys_dir=keys)  # fmt: skip
