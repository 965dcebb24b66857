"""Sequence numbers end to end: the learner drops duplicates, refuses gaps, skips what a robot lost; the
robot pairs ticks into transitions with the right episode flags, resends when unanswered and deletes only
what the learner made durable."""

import dataclasses
import time

import numpy as np
import pytest
import zmq

from firmware_bridge.learner_spool import Spool
from firmware_bridge.learner_uplink import LearnerUplink, UplinkConfig
from firmware_bridge.learner_wire import (
    Ack,
    Hello,
    MessageType,
    PolicyResult,
    TransitionLayout,
    decode_ack,
    decode_policy,
    decode_transitions,
    encode_ack,
    encode_hello,
    encode_policy_result,
    encode_transitions,
    parse_header,
)
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.policy_runtime import PolicyRuntime
from firmware_bridge.task import TaskInterface
from firmware_bridge.transitions import Event
from learner_helpers import batch, tick
from policy_files import write_policy
from robot_sac import learner_link
from robot_sac.learner_link import HISTORY_KEPT, MAX_REFUSALS_KEPT, LearnerLink, RobotRecord
from robot_sac.real_transitions import TransitionScorer
from sim.task import TaskSpec

TASK = TaskInterface.load("claw_turn")
SPEC = TASK.load_robot()
BUILDER = ObservationBuilder(SPEC, TASK)
LAYOUT = TransitionLayout(BUILDER.dim, SPEC.num_joints, SPEC.num_joints)
HASH = BUILDER.interface_hash()


@pytest.fixture
def link():
    link = LearnerLink("tcp://127.0.0.1:*", LAYOUT, HASH, TransitionScorer(TaskSpec.load("claw_turn"), SPEC))
    link.start()
    yield link
    link.stop()


@pytest.fixture
def dealer(link):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(link.endpoint)
    yield sock
    sock.close()


def exchange(sock, first_seq, n=4, lowest_held=None, spool="00aa11bb22cc33dd"):
    b = batch(LAYOUT, n, first_seq, ("valve_angle", "valve_velocity"), interface_hash=HASH, spool=spool,
              lowest_held=first_seq if lowest_held is None else lowest_held)  # fmt: skip
    sock.send_multipart(encode_transitions(b, LAYOUT))
    assert sock.poll(5000)
    kind, header = parse_header(sock.recv_multipart())
    assert kind is MessageType.ACK
    return decode_ack(header)


def test_duplicates_are_dropped_gaps_refused_and_lost_numbers_skipped(link, dealer):
    assert exchange(dealer, 0).received == 3
    ack = exchange(dealer, 0)  # the same batch again
    assert (ack.received, ack.gap) == (3, False)
    assert exchange(dealer, 2).received == 5  # overlaps: 2, 3 dropped, 4, 5 new
    ack = exchange(dealer, 10, lowest_held=6)  # 6..9 missing and the robot still holds them
    assert (ack.received, ack.gap) == (5, True)
    ack = exchange(dealer, 10, lowest_held=8)  # the robot's spool let 6 and 7 go: 8, 9 still due
    assert (ack.received, ack.gap) == (7, True)
    assert exchange(dealer, 8, n=6, lowest_held=8).received == 13
    rec = link.robots["claw-1"]
    assert (rec.transitions, rec.duplicates, rec.gaps, rec.lost) == (4 + 2 + 6, 4 + 2, 2, 2)
    items = []
    while not link.ingest.empty():
        items.append(link.ingest.get())
    assert [(i.last_seq, len(i.scored)) for i in items] == [(3, 4), (5, 2), (13, 6)]
    # A new spool (a robot whose disk was replaced) numbers from 0 again and is not taken for duplicates.
    assert exchange(dealer, 0, spool="ffee00112233aabb").received == 3


def test_rows_a_robot_lost_leave_the_return_of_the_episode_they_belonged_to_unknown(link, dealer):
    exchange(dealer, 0)  # rows 0-3 of an episode that ends at row 5; the robot's spool let 4-7 go
    b = batch(LAYOUT, 2, 8, ("valve_angle", "valve_velocity"), interface_hash=HASH, lowest_held=8)
    b.arrays["time_limit"][1] = 1  # rows 8-9 end the next episode, whose start was lost too
    dealer.send_multipart(encode_transitions(b, LAYOUT))
    assert dealer.poll(5000)
    dealer.recv_multipart()
    rec = link.robots["claw-1"]
    # One episode's end and another's start were lost: what is left is not one episode with a known return.
    assert (rec.lost, rec.episodes, rec.episodes_unscored, rec.episode_returns) == (4, 0, 1, [])


def test_a_robot_program_that_died_mid_episode_does_not_merge_it_with_the_next_runs(link, dealer):
    def send(first, n, run, end):
        b = batch(LAYOUT, n, first, ("valve_angle", "valve_velocity"), interface_hash=HASH, spool="00aa11bb22cc33dd")
        b = dataclasses.replace(b, run=run)
        b.arrays["time_limit"][-1] = end
        dealer.send_multipart(encode_transitions(b, LAYOUT))
        assert dealer.poll(5000)
        dealer.recv_multipart()
        return link.ingest.get(timeout=5).scored

    send(0, 4, "aaaa0000aaaa0000", 0)  # the run was killed here: its last row carries no end
    after = send(4, 3, "bbbb1111bbbb1111", 1)  # the next run's first episode, ended by its own flag
    rec = link.robots["claw-1"]
    assert (rec.episodes, rec.episodes_unscored) == (1, 1)
    assert rec.episode_returns == pytest.approx([float(after.row_reward.sum())])


def _connect(link):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(link.endpoint)
    return sock


def _send_unanswered(sock, spool, link, conflicts):
    b = batch(LAYOUT, 4, 0, ("valve_angle", "valve_velocity"), interface_hash=HASH, spool=spool)
    sock.send_multipart(encode_transitions(b, LAYOUT))
    assert not sock.poll(300)  # no acknowledgement: nothing of it was taken
    assert link.counts["name_conflict"] == conflicts


def test_a_second_spool_under_a_live_robot_id_is_refused_until_the_first_goes_quiet(link, dealer, monkeypatch):
    monkeypatch.setattr(learner_link, "ROBOT_ID_HELD_S", 1.0)
    assert exchange(dealer, 0).received == 3
    other = _connect(link)
    _send_unanswered(other, "ffee00112233aabb", link, conflicts=1)
    _send_unanswered(other, "ffee00112233aabb", link, conflicts=2)
    # Reported once: a second robot would otherwise push every other reason out of the list each second.
    assert [e for e in link.errors if "ffee00112233aabb" in e] == [
        "name_conflict: claw-1: spool ffee00112233aabb from another connection while spool 00aa11bb22cc33dd is "
        "live under that id"
    ]
    # The same spool from a new connection (the robot's program restarted) is the same robot.
    restarted = _connect(link)
    assert exchange(restarted, 4).received == 7
    time.sleep(1.1)
    # That robot went quiet (e.g. it came back with a new disk, and this is it): the id moves to the new spool.
    assert exchange(other, 0, spool="ffee00112233aabb").received == 3
    assert link.robots["claw-1"].transitions == 12
    for sock in (other, restarted):
        sock.close()


def test_robot_records_are_bounded_and_a_new_id_beyond_the_bound_is_refused(monkeypatch):
    monkeypatch.setattr(learner_link, "MAX_ROBOTS", 2)
    link = LearnerLink("tcp://127.0.0.1:*", LAYOUT, HASH, TransitionScorer(TaskSpec.load("claw_turn"), SPEC))
    for n in (1, 2):
        assert link._record(f"claw-{n}", "00aa11bb22cc33dd", f"robot {n}".encode(), None, HASH) is not None
    for n in (3, 4):
        assert link._record(f"claw-{n}", "00aa11bb22cc33dd", f"robot {n}".encode(), None, HASH) is None
    assert link.counts["too_many_robots"] == 2 and set(link.robots) == {"claw-1", "claw-2"}
    assert [e for e in link.errors if "too_many_robots" in e] == [
        "too_many_robots: claw-3: the learner keeps 2 robot records (one per id ever heard from); messages naming a "
        "new id are refused"
    ]
    # The robots it keeps are served as before.
    assert link._record("claw-1", "00aa11bb22cc33dd", b"robot 1", None, HASH) is link.robots["claw-1"]


def test_a_message_refused_for_its_spool_does_not_bind_the_id_to_its_key():
    # A released id (robot-sac learner --release-robot), held for its checkpoint's spool after the restart.
    link = LearnerLink("tcp://127.0.0.1:*", LAYOUT, HASH, TransitionScorer(TaskSpec.load("claw_turn"), SPEC),
                       robots={"claw-1": RobotRecord("claw-1", spool="00aa11bb22cc33dd")})  # fmt: skip
    link._allowed = frozenset({"key-of-claw-1", "key-of-another"})
    assert link._record("claw-1", "ffee00112233aabb", b"other", "key-of-another", HASH) is None
    assert link.counts["name_conflict"] == 1 and link.robots["claw-1"].key is None
    rec = link._record("claw-1", "00aa11bb22cc33dd", b"owner", "key-of-claw-1", HASH)
    assert rec is not None and rec.key == "key-of-claw-1" and link.counts["impersonation"] == 0


def test_a_robot_must_say_hello_well_within_the_time_a_learner_holds_its_id():
    with pytest.raises(ValueError, match=r"heartbeat_s: 3.0 s; at most 2.5 s"):
        UplinkConfig("tcp://127.0.0.1:5555", "claw-1", "/nonexistent", heartbeat_s=3.0)


def test_a_spool_from_a_checkpoint_holds_its_id_for_a_while_after_the_link_starts(monkeypatch):
    monkeypatch.setattr(learner_link, "ROBOT_ID_HELD_S", 1.0)
    saved = RobotRecord("claw-1", spool="00aa11bb22cc33dd", received=3, durable=3, transitions=4)
    link = LearnerLink("tcp://127.0.0.1:*", LAYOUT, HASH, TransitionScorer(TaskSpec.load("claw_turn"), SPEC),
                       robots={"claw-1": RobotRecord.from_checkpoint(saved.checkpoint_state(3))})  # fmt: skip
    link.start()
    other, owner = _connect(link), _connect(link)
    try:
        _send_unanswered(other, "ffee00112233aabb", link, conflicts=1)
        assert exchange(owner, 4).received == 7  # its own robot, back within a second, carries on numbering
        assert link.robots["claw-1"].transitions == 8
    finally:
        other.close()
        owner.close()
        link.stop()


def test_a_result_for_a_policy_never_sent_is_dropped_and_refusals_kept_are_bounded(link, dealer):
    exchange(dealer, 0)  # the robot is known from its transitions
    sha = "0" * 64
    dealer.send_multipart(encode_policy_result(PolicyResult("claw-1", 2**62 - 1, sha, True)))
    deadline = time.monotonic() + 5
    while link.counts["unknown_policy"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    record = link.robots["claw-1"]
    assert link.counts["unknown_policy"] == 1 and record.running_version == -1  # no version claimed that way
    assert record.policy_versions_accepted == []

    record.policy_versions_sent.append(7)
    for _ in range(MAX_REFUSALS_KEPT + 10):
        dealer.send_multipart(encode_policy_result(PolicyResult("claw-1", 7, sha, False, ["wrong robot: x"])))
    # One more unknown result behind them: the link handles messages in order, so once it is counted, every
    # refusal before it has been kept and trimmed.
    dealer.send_multipart(encode_policy_result(PolicyResult("claw-1", 8, sha, True)))
    deadline = time.monotonic() + 5
    while link.counts["unknown_policy"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert link.counts["unknown_policy"] == 2 and len(record.policy_refusals) == MAX_REFUSALS_KEPT

    # The versions sent and accepted are bounded the same way.
    record.policy_versions_sent[:] = range(10, 10 + HISTORY_KEPT)
    results = [*range(10, 10 + HISTORY_KEPT), *range(10, 15)]
    for version in results:
        dealer.send_multipart(encode_policy_result(PolicyResult("claw-1", version, sha, True)))
    dealer.send_multipart(encode_policy_result(PolicyResult("claw-1", 9, sha, True)))  # not among those kept
    deadline = time.monotonic() + 5
    while link.counts["unknown_policy"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert link.counts["unknown_policy"] == 3
    assert record.policy_versions_accepted == results[-HISTORY_KEPT:]
    assert record.running_version == 10 + HISTORY_KEPT - 1


def test_a_policy_result_from_another_connection_than_the_robots_is_dropped(link, dealer):
    exchange(dealer, 0)
    record = link.robots["claw-1"]
    record.policy_versions_sent.append(7)
    sha = "0" * 64
    other = _connect(link)
    try:
        other.send_multipart(encode_policy_result(PolicyResult("claw-1", 7, sha, True)))
        deadline = time.monotonic() + 5
        while link.counts["wrong_connection"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.counts["wrong_connection"] == 1
        assert (record.policy_versions_accepted, record.running_version) == ([], -1)
    finally:
        other.close()
    # The robot's own connection is heard.
    dealer.send_multipart(encode_policy_result(PolicyResult("claw-1", 7, sha, True)))
    deadline = time.monotonic() + 5
    while record.running_version != 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (record.policy_versions_accepted, record.running_version) == ([7], 7)


def test_a_robot_restarted_with_an_older_policy_is_sent_the_newest_again(link, dealer, monkeypatch):
    monkeypatch.setattr(learner_link, "RESEND_POLICY_AFTER_S", 0.3)

    def hello_and_policies(sock, version):
        sock.send_multipart(encode_hello(Hello("claw-1", "00aa11bb22cc33dd", 0, 0, version, "", HASH, "claw_turn")))
        got, end = [], time.monotonic() + 0.6
        while time.monotonic() < end:
            if sock.poll(50):
                frames = sock.recv_multipart()
                kind, header = parse_header(frames)
                if kind is MessageType.POLICY:
                    got.append(decode_policy(header, frames).version)
        return got

    hello_and_policies(dealer, 3)
    link.publish(7, b"onnx bytes")
    assert 7 in hello_and_policies(dealer, 3)
    dealer.send_multipart(encode_policy_result(PolicyResult("claw-1", 7, "0" * 64, True)))
    assert hello_and_policies(dealer, 7) == [] and link.robots["claw-1"].running_version == 7
    restarted = _connect(link)  # the bridge restarted with its original file, version 3
    try:
        assert 7 in hello_and_policies(restarted, 3) + hello_and_policies(restarted, 3)
        assert link.robots["claw-1"].running_version == 3
    finally:
        restarted.close()


def test_the_versions_pushed_to_a_robot_are_bounded_and_a_version_sent_again_listed_once():
    class Socket:  # stands in for the ROUTER socket: what _push sends, kept
        def __init__(self):
            self.sent = []

        def send_multipart(self, frames, flags=0):
            self.sent.append(frames)

    link = LearnerLink("tcp://127.0.0.1:*", LAYOUT, HASH, TransitionScorer(TaskSpec.load("claw_turn"), SPEC))
    rec = RobotRecord("claw-1", routing_id=b"claw-1's connection")
    sock = Socket()
    for version in range(HISTORY_KEPT + 5):
        link._latest_policy = (version, [b"policy %d" % version])
        link._push(sock, rec)
    link._push(sock, rec)  # the robot still announces an older version: the newest is sent again
    assert len(sock.sent) == HISTORY_KEPT + 6 and sock.sent[-1] == [b"claw-1's connection", b"policy 104"]
    assert rec.policy_versions_sent == list(range(5, HISTORY_KEPT + 5))


def test_a_long_running_record_keeps_the_newest_returns_and_counts_every_episode():
    scorer = TransitionScorer(TaskSpec.load("claw_turn"), SPEC)
    b = batch(LAYOUT, 2 * (HISTORY_KEPT + 5), 0, ("valve_angle", "valve_velocity"), interface_hash=HASH)
    b.arrays["time_limit"][1::2] = 1  # episodes of two rows
    scored = scorer.score(b)
    returns = (scored.row_reward[0::2] + scored.row_reward[1::2]).tolist()
    rec = RobotRecord(robot="claw-1", spool="00")
    rec.add_rewards(scored)
    assert rec.episodes == HISTORY_KEPT + 5 and rec.report()["episodes"] == HISTORY_KEPT + 5
    assert rec.episode_returns == pytest.approx(returns[5:])
    state = rec.checkpoint_state(through=b.last_seq)
    again = RobotRecord.from_checkpoint(state)
    assert (again.episodes, again.episode_returns) == (rec.episodes, rec.episode_returns)
    # A checkpoint from before the bound holds every return and no count: all are counted, the newest kept.
    old = {key: value for key, value in state.items() if key != "episodes"}
    old.update(episode_returns=returns, policy_versions_sent=list(range(HISTORY_KEPT + 3)))
    loaded = RobotRecord.from_checkpoint(old)
    assert loaded.episodes == HISTORY_KEPT + 5 and loaded.episode_returns == pytest.approx(returns[5:])
    assert loaded.policy_versions_sent == list(range(3, HISTORY_KEPT + 3))


def test_rows_are_scored_by_the_task_code_and_non_finite_rows_dropped(link, dealer):
    b = batch(LAYOUT, 3, 0, ("valve_angle", "valve_velocity"), interface_hash=HASH)
    b.arrays["next_obs"][1, 0] = np.nan
    dealer.send_multipart(encode_transitions(b, LAYOUT))
    assert dealer.poll(5000)
    dealer.recv_multipart()
    scored = link.ingest.get(timeout=5).scored
    assert len(scored) == 2 and scored.non_finite == 1
    assert np.all(np.isfinite(scored.reward)) and not np.all(scored.reward == 0)


def test_readings_so_large_that_the_reward_overflows_float32_are_dropped_as_non_finite():
    b = batch(LAYOUT, 3, 0, ("valve_angle", "valve_velocity"), interface_hash=HASH)
    b.arrays["next_state.joint_current"][1, :] = 1e30  # finite in float32: a glitched reading, or a hostile peer
    scored = TransitionScorer(TaskSpec.load("claw_turn"), SPEC).score(b)
    assert (len(scored), scored.non_finite) == (2, 1)
    assert np.isfinite(scored.reward).all() and np.isnan(scored.row_reward[1])


def test_a_row_that_cannot_be_scored_still_ends_its_episode_and_its_return_is_not_recorded():
    scorer = TransitionScorer(TaskSpec.load("claw_turn"), SPEC)
    b = batch(LAYOUT, 6, 0, ("valve_angle", "valve_velocity"), interface_hash=HASH)
    b.arrays["time_limit"][[2, 5]] = 1  # two episodes of three rows
    b.arrays["obs"][2, 0] = np.nan  # the first episode's last row
    scored = scorer.score(b)
    assert (len(scored), scored.non_finite) == (5, 1)
    assert scored.episode_end.tolist() == [False, False, True, False, False, True]
    assert np.isnan(scored.row_reward[2]) and np.isfinite(scored.row_reward[[0, 1, 3, 4, 5]]).all()
    rec = RobotRecord(robot="claw-1", spool="00")
    rec.add_rewards(scored)
    # The first episode's return is unknown; the second's is its own three rows, not merged with the first's.
    assert rec.episodes_unscored == 1
    assert rec.episode_returns == pytest.approx([float(scored.row_reward[3:].sum())])
    assert rec.report()["episodes_unscored"] == 1
    # Scoring from row 2 on (rows 0-1 were duplicates): the arrays cover rows 2-5 only.
    tail = scorer.score(b, start=2)
    assert tail.episode_end.tolist() == [True, False, False, True] and np.isnan(tail.row_reward[0])
    np.testing.assert_array_equal(tail.row_reward[1:], scored.row_reward[3:])
    assert (len(tail), tail.non_finite) == (3, 1)


def test_rows_off_the_control_period_count_in_the_return_but_are_not_stored():
    scorer = TransitionScorer(TaskSpec.load("claw_turn"), SPEC)
    b = batch(LAYOUT, 6, 0, ("valve_angle", "valve_velocity"), interface_hash=HASH)
    period = SPEC.control_period
    # On time, early and late within half a period; two periods (a tick that ran on a stale state); a tenth.
    b.arrays["dt"][:] = [period, 0.6 * period, 1.4 * period, 2 * period, 0.1 * period, period]
    b.arrays["time_limit"][-1] = 1
    everything = TransitionScorer(TaskSpec.load("claw_turn"), SPEC)
    every_row = batch(LAYOUT, 6, 0, ("valve_angle", "valve_velocity"), interface_hash=HASH)
    every_row.arrays["time_limit"][-1] = 1
    all_scored = everything.score(every_row)
    scored = scorer.score(b)
    assert (len(scored), scored.off_period, len(scored.row_reward)) == (4, 2, 6)
    np.testing.assert_array_equal(scored.obs, b.arrays["obs"][[0, 1, 2, 5]])
    np.testing.assert_array_equal(scored.reward, all_scored.reward[[0, 1, 2, 5]])
    # The episode's return is the same with or without the dropped rows: the robot did turn the valve then.
    np.testing.assert_array_equal(scored.row_reward, all_scored.reward)
    assert scored.episode_end.tolist() == [False] * 5 + [True]
    assert scorer.last_off_period.startswith(f"a row spanned {1e3 * 0.1 * period:.1f} ms")
    assert everything.last_off_period is None
    # A termination is stored whatever its dt: the row spanning two periods ends in a fall here.
    falls = TransitionScorer(TaskSpec.load("claw_turn"), SPEC)
    falls.kind = dataclasses.replace(falls.kind, terminated=lambda state, criteria: state.joint_pos[0] == 99)
    b.arrays["next_state.joint_pos"][3, 0] = 99
    scored = falls.score(b)
    assert (len(scored), scored.off_period, scored.terminated.tolist()) == (5, 1, [0, 0, 0, 1, 0])
    assert f"control period is {1e3 * period:.1f} ms" in scorer.last_off_period


def test_rows_from_where_the_robot_fell_are_marked_not_stored_and_add_to_no_return():
    scorer = TransitionScorer(TaskSpec.load("claw_turn"), SPEC)
    scorer.kind = dataclasses.replace(scorer.kind, terminated=lambda state, criteria: state.joint_pos[0] == 99)
    b = batch(LAYOUT, 7, 0, ("valve_angle", "valve_velocity"), interface_hash=HASH)
    # Row 1 falls; rows 2 and 3 start where it fell (the robot lies there, the bridge's time limit comes on row 3);
    # rows 4-6 start upright again.
    b.arrays["next_state.joint_pos"][[1, 2], 0] = 99
    b.arrays["state.joint_pos"][[2, 3], 0] = 99
    b.arrays["time_limit"][[3, 6]] = 1
    scored = scorer.score(b)
    assert (len(scored), scored.terminations) == (5, 1)
    assert scored.after_termination.tolist() == [False, False, True, True, False, False, False]
    np.testing.assert_array_equal(scored.obs, b.arrays["obs"][[0, 1, 4, 5, 6]])
    assert scored.terminated.tolist() == [0, 1, 0, 0, 0]
    rec = RobotRecord(robot="claw-1", spool="00")
    rec.add_rewards(scored)
    # The fall ends the first episode; the second is the rows from upright on; the rows on the ground and the
    # time limit among them add no episode of their own.
    r = scored.row_reward
    assert rec.episode_returns == pytest.approx([r[0] + r[1], r[4] + r[5] + r[6]]) and rec.episodes_unscored == 0
    # A fall row that could not be scored leaves its episode open, without a return: the first row on the ground
    # ends it, so the episode after it keeps its own return.
    b.arrays["next_obs"][1, 0] = np.nan
    scored = scorer.score(b)
    assert (scored.non_finite, int(scored.after_termination.sum())) == (1, 2)
    rec = RobotRecord(robot="claw-1", spool="00")
    rec.add_rewards(scored)
    r = scored.row_reward
    assert (rec.episodes, rec.episodes_unscored) == (1, 1)
    assert rec.episode_returns == pytest.approx([r[4] + r[5] + r[6]])
    # Records from checkpoints written before these counts existed load with none.
    state = rec.checkpoint_state(through=6)
    del state["after_termination"], state["episode_rows"]
    assert RobotRecord.from_checkpoint(state).report()["after_termination"] == 0


def test_the_link_counts_the_rows_after_a_termination_per_robot(link, dealer):
    fallen = lambda state, criteria: state.joint_pos[0] == 99  # noqa: E731
    link.scorer.kind = dataclasses.replace(link.scorer.kind, terminated=fallen)
    b = batch(LAYOUT, 5, 0, ("valve_angle", "valve_velocity"), interface_hash=HASH)
    b.arrays["next_state.joint_pos"][[0, 1], 0] = 99
    b.arrays["state.joint_pos"][[1, 2], 0] = 99
    dealer.send_multipart(encode_transitions(b, LAYOUT))
    assert dealer.poll(5000)
    dealer.recv_multipart()
    assert len(link.ingest.get(timeout=5).scored) == 3
    assert link.robots["claw-1"].report()["after_termination"] == 2


class FakeLearner:
    def __init__(self):
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def batches(self, timeout=5.0):
        """Transition batches received within ``timeout`` (hellos skipped), with the sender's id."""
        out, end = [], time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.sock.poll(50):
                continue
            peer, *frames = self.sock.recv_multipart()
            kind, header = parse_header(frames)
            if kind is MessageType.TRANSITIONS:
                out.append((peer, decode_transitions(header, frames, LAYOUT)))
        return out


def offer_episode(uplink, ticks):
    """What the loop hands an uplink in one policy phase: its start, one tick per index, its end."""
    uplink.offer(Event(0, "policy", "start"))
    for i in ticks:
        uplink.offer(tick(i, SPEC.num_joints, BUILDER.dim))
    uplink.offer(Event(0, "safe_state", "done"))


@pytest.fixture
def uplink_to(tmp_path):
    made = []

    def make(endpoint, **config):
        policy = PolicyRuntime(write_policy(tmp_path / "p.onnx", SPEC, TASK, version=1), SPEC, TASK)
        options = {"batch_size": 64, "flush_s": 0.05, "spool_fsync": False, **config}
        made.append(LearnerUplink(UplinkConfig(endpoint, "claw-1", tmp_path / "spool", **options), BUILDER, policy))
        return made[-1]

    yield make
    for uplink in made:
        uplink.close()


def test_ticks_pair_into_transitions_with_episode_flags_and_no_pair_across_episodes(uplink_to):
    fake = FakeLearner()
    uplink = uplink_to(fake.endpoint, flush_s=0.3)
    n = SPEC.num_joints
    items = [Event(0, "policy", "start"), *(tick(i, n, BUILDER.dim) for i in range(4)),
             Event(0, "safety_stop", "stale state"), Event(0, "policy", "start"),
             *(tick(i, n, BUILDER.dim) for i in range(10, 13)), Event(0, "safe_state", "done")]  # fmt: skip
    for item in items:
        uplink.offer(item)
    (_, b), = fake.batches(3.0)[:1]
    arr = b.arrays
    assert b.count == 3 + 2 and b.first_seq == 0
    assert arr["obs"][:, 0].tolist() == [0, 1, 2, 10, 11]
    assert arr["next_obs"][:, 0].tolist() == [1, 2, 3, 11, 12]
    assert arr["safety_stop"].tolist() == [0, 0, 1, 0, 0]
    assert arr["time_limit"].tolist() == [0, 0, 0, 0, 1]
    # The previous action is zero at each episode start, then the action before.
    assert np.all(arr["prev_action"][[0, 3]] == 0) and np.all(arr["prev_action"][[1, 2, 4]] == np.float32(0.1))
    assert arr["next_state.extras"][:, b.extras.index("valve_angle")] == pytest.approx([0.01, 0.02, 0.03, 0.11, 0.12])
    fake.sock.close()


def test_ticks_that_ran_on_the_state_before_pair_into_no_transition(uplink_to):
    fake = FakeLearner()
    uplink = uplink_to(fake.endpoint, flush_s=0.3)
    ticks = [tick(i, SPEC.num_joints, BUILDER.dim) for i in range(6)]
    ticks = [dataclasses.replace(t, action=np.full(SPEC.num_joints, 0.1 * (t.tick + 1), np.float32)) for t in ticks]
    # Ticks 2 and 3 got no reply in time: both ran on tick 1's state.
    ticks[2] = dataclasses.replace(ticks[2], state=ticks[1].state)
    ticks[3] = dataclasses.replace(ticks[3], state=ticks[1].state)
    for item in (Event(0, "policy", "start"), *ticks, Event(0, "safe_state", "done")):
        uplink.offer(item)
    (_, b), = fake.batches(3.0)[:1]
    assert b.count == 3
    assert b.arrays["obs"][:, 0].tolist() == [0, 3, 4] and b.arrays["next_obs"][:, 0].tolist() == [1, 4, 5]
    assert b.arrays["dt"].tolist() == pytest.approx([0.1, 0.3, 0.1])  # the second pair spans the late ticks
    assert b.arrays["prev_action"][:, 0].tolist() == pytest.approx([0.0, 0.3, 0.4])  # the action before, each
    assert b.arrays["time_limit"].tolist() == [0, 0, 1]
    assert uplink.counters()["stale_states"] == 2 and uplink.counters()["transitions"] == 3
    fake.sock.close()


def test_batches_left_under_another_interface_are_set_aside_and_hold_nothing_back(link, uplink_to, tmp_path):
    # An earlier run's batches, never made durable, from before the robot spec or task changed its observation.
    spool = Spool(tmp_path / "spool", fsync=False)
    for _ in range(2):
        spool.add(4, lambda first: encode_transitions(
            batch(LAYOUT, 4, first, ("valve_angle", "valve_velocity"), interface_hash="f" * 64,
                  spool=spool.spool_id), LAYOUT))  # fmt: skip
    (tmp_path / "spool" / "0000000000000008-000004.batch").write_bytes(b"cut short")
    uplink = uplink_to(link.endpoint)
    assert uplink.set_aside == {"interface-ffffffffffff": 8, "unreadable": 4}
    assert len(list((tmp_path / "spool" / "interface-ffffffffffff").glob("*.batch"))) == 2
    assert (uplink.spool.lowest_held, uplink.counters()["spool_set_aside"]) == (12, 12)
    offer_episode(uplink, range(5))
    item = link.ingest.get(timeout=5)
    # This run's rows arrive at once; the learner counts the numbers set aside as lost.
    assert (item.last_seq, len(item.scored), link.robots["claw-1"].lost) == (15, 4, 12)
    assert link.counts["wrong_interface"] == 0 and uplink.counters()["rewinds"] == 0


def test_a_learner_answering_every_batch_with_the_same_gap_draws_one_rewind_per_resend_interval(uplink_to):
    fake = FakeLearner()
    uplink = uplink_to(fake.endpoint, batch_size=2, resend_after_s=1.0)
    offer_episode(uplink, range(13))
    answered, end = 0, time.monotonic() + 1.5
    while time.monotonic() < end:  # the learner misses number 0 for good, and says so to every batch
        if fake.sock.poll(20):
            peer, *frames = fake.sock.recv_multipart()
            if parse_header(frames)[0] is MessageType.TRANSITIONS:
                fake.sock.send_multipart([peer, *encode_ack(Ack("claw-1", uplink.spool.spool_id, -1, -1, True))])
                answered += 1
    # Each batch in flight draws a gap answer; a rewind on each would resend the window on each, without end.
    assert answered >= 6 and uplink.counters()["rewinds"] <= 4  # (without the bound: thousands)
    fake.sock.close()


def test_a_restarted_robot_does_not_resend_what_the_learner_already_holds(link, uplink_to):
    first = uplink_to(link.endpoint)
    offer_episode(first, range(9))
    assert link.ingest.get(timeout=5).last_seq == 7
    first.close()  # no checkpoint yet: the spool keeps all 8, the learner holds them too
    assert first.spool.held == 8
    again = uplink_to(link.endpoint)  # the robot program restarted on the same spool
    offer_episode(again, range(20, 23))
    item = link.ingest.get(timeout=5)
    assert (item.last_seq, len(item.scored)) == (9, 2)
    assert link.robots["claw-1"].duplicates == 0 and again.counters()["resent"] == 0


def test_unanswered_batches_are_resent_and_only_durable_ones_deleted(uplink_to):
    fake = FakeLearner()
    uplink = uplink_to(fake.endpoint, batch_size=4, resend_after_s=0.5)
    offer_episode(uplink, range(9))
    first = fake.batches(1.5)
    # 8 transitions in two batches of the batch size, never answered: both come again.
    sent = [(b.first_seq, b.count) for _, b in first]
    assert sent[:2] == [(0, 4), (4, 4)] and sent.count((0, 4)) >= 2
    peer = first[0][0]
    fake.sock.send_multipart([peer, *encode_ack(ack_for(uplink, received=7, durable=3))])
    deadline = time.monotonic() + 5
    while uplink.spool.held != 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert uplink.spool.held == 4 and uplink.spool.lowest_held == 4  # 0..3 durable and deleted; 4..7 kept
    assert uplink.counters()["acked"] == 4 and uplink.counters()["resent"] >= 4
    fake.sock.close()


def ack_for(uplink, received, durable):
    from firmware_bridge.learner_wire import Ack

    return Ack(uplink.config.robot_id, uplink.spool.spool_id, received, durable)


def test_several_robots_are_counted_apart_and_each_gets_the_policy(link, tmp_path):
    made = []
    for name in ("claw-a", "claw-b"):
        policy = PolicyRuntime(write_policy(tmp_path / f"{name}.onnx", SPEC, TASK, version=1), SPEC, TASK)
        config = UplinkConfig(link.endpoint, name, tmp_path / name, batch_size=8, flush_s=0.05, spool_fsync=False,
                              heartbeat_s=0.2)  # fmt: skip
        made.append(LearnerUplink(config, BUILDER, policy))
    for k, uplink in enumerate(made):
        offer_episode(uplink, range(10 + 5 * k))
    counts = lambda: {name: r.transitions for name, r in link.robots.items()}  # noqa: E731
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and counts() != {"claw-a": 9, "claw-b": 14}:
        time.sleep(0.02)
    assert counts() == {"claw-a": 9, "claw-b": 14}
    link.publish(2, write_policy(tmp_path / "v2.onnx", SPEC, TASK, version=2).read_bytes())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(u.counters()["policies_accepted"] for u in made):
        time.sleep(0.02)
    assert [u.policy_version for u in made] == [2, 2]
    # The robot's acceptance reaches the learner on its own message, after the robot has swapped.
    accepted = lambda: [r.policy_versions_accepted for r in link.robots.values()]  # noqa: E731
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and accepted() != [[2], [2]]:
        time.sleep(0.02)
    assert accepted() == [[2], [2]]
    for uplink in made:
        uplink.close()
