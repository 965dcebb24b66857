"""Where the learner starts: the simulation run's networks, optimizers and temperature; then its own
checkpoint, with the real replay buffer and the per-robot sequence numbers that go with it."""

import shutil
import threading
import time

import numpy as np
import pytest
import torch

from firmware_bridge.policy_contract import Mismatch
from firmware_bridge.policy_runtime import PolicyRejectedError
from learner_helpers import make_claw_run
from robot_sac.export import ExportError, TorchPolicy, verify
from robot_sac import learner as learner_module
from robot_sac.learner import Learner, LearnerConfig
from robot_sac.learner_link import Ingested, RobotRecord
from robot_sac.real_transitions import Scored

CFG = LearnerConfig(device="cpu", torch_threads=1, learning_starts=4)


@pytest.fixture(scope="module")
def claw_run(tmp_path_factory):
    return make_claw_run(tmp_path_factory.mktemp("claw_run"))


def test_a_new_learner_continues_the_simulation_run(tmp_path, claw_run):
    sim = torch.load(claw_run / "checkpoints" / "last.pt", weights_only=False)["agent"]
    learner = Learner(claw_run, tmp_path / "out", CFG, bind="tcp://127.0.0.1:*")
    state = learner.agent.state_dict()
    for name, value in sim["actor"].items():
        assert torch.equal(state["actor"][name], value), name
    assert torch.equal(state["log_alpha"], sim["log_alpha"])
    assert state["critic_opt"]["state"].keys() == sim["critic_opt"]["state"].keys()
    assert len(learner.sim) == 60 and len(learner.real) == 0
    assert learner.next_version == 61  # past the simulation run's step count, the version its export carries
    assert Learner(claw_run, tmp_path / "out2", LearnerConfig(device="cpu", seed_replay=False)).sim is None


def test_a_learner_started_while_the_run_checkpoints_takes_a_consistent_pair(tmp_path, claw_run, monkeypatch):
    """A run still training writes a newer last.pt and removes the replay file the older one named; a learner that
    read the older last.pt just before reads the newer one again, and starts from it with its replay."""
    run = tmp_path / "run"
    shutil.copytree(claw_run, run)
    ckpt = run / "checkpoints"
    read, names = learner_module._read_sim_checkpoint, []

    def read_then_the_run_checkpoints(ckpt_dir, device):
        state = read(ckpt_dir, device)
        names.append(state["replay_file"])
        if len(names) == 1:
            (ckpt / state["replay_file"]).rename(ckpt / "replay.61.npz")
            torch.save({**state, "replay_file": "replay.61.npz", "counters": {**state["counters"], "step": 61}},
                       ckpt / "last.pt")  # fmt: skip
        return state

    monkeypatch.setattr(learner_module, "_read_sim_checkpoint", read_then_the_run_checkpoints)
    learner = Learner(run, tmp_path / "out", CFG, bind="tcp://127.0.0.1:*")
    assert names == ["replay.60.npz", "replay.61.npz"]
    assert len(learner.sim) == 60 and learner.next_version == 62  # the newer checkpoint's step count + 1


def test_a_replay_file_that_is_always_gone_is_reported_by_name(tmp_path, claw_run, monkeypatch):
    read = learner_module._read_sim_checkpoint
    monkeypatch.setattr(learner_module, "_read_sim_checkpoint",
                        lambda ckpt_dir, device: {**read(ckpt_dir, device), "replay_file": "replay.gone.npz"})
    missing = r"replay.gone.npz: the replay file named by .*last.pt is missing \(read 3 times"
    with pytest.raises(FileNotFoundError, match=missing):
        Learner(claw_run, tmp_path / "out", CFG, bind="tcp://127.0.0.1:*")


def scored(n, start, obs_dim):
    obs = np.full((n, obs_dim), 0.0, dtype=np.float32)
    obs[:, 0] = np.arange(start, start + n)
    return Scored(obs=obs, action=np.zeros((n, 9), np.float32), reward=np.ones(n, np.float32), next_obs=obs,
                  terminated=np.zeros(n, np.float32), row_reward=np.ones(n, np.float32),
                  episode_end=np.zeros(n, bool), after_termination=np.zeros(n, bool))  # fmt: skip


def test_a_restarted_learner_has_exactly_what_its_checkpoint_had(tmp_path, claw_run):
    learner = Learner(claw_run, tmp_path / "out", CFG, bind="tcp://127.0.0.1:*")
    dim = learner.layout.obs_dim
    key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # the CURVE public key (Z85) the robot spoke with
    learner.link.robots["claw-1"] = RobotRecord("claw-1", spool="00aa11bb22cc33dd", key=key)
    learner.link.ingest.put(Ingested("claw-1", "00aa11bb22cc33dd", 9, scored(10, 0, dim)))
    learner.run(threading.Event(), max_updates=1)  # takes them in, one update, a checkpoint at the end
    weights = {k: v.clone() for k, v in learner.agent.actor.state_dict().items()}
    # After the checkpoint: neither these transitions nor this update survive a kill.
    learner.link.ingest.put(Ingested("claw-1", "00aa11bb22cc33dd", 14, scored(5, 10, dim)))
    learner.agent.update(learner.real.sample(np.random.default_rng(0), 4))

    again = Learner(claw_run, tmp_path / "out", CFG, bind="tcp://127.0.0.1:*")
    assert (again.transitions, again.updates, len(again.real)) == (10, 1, 10)
    assert sorted(again.real.obs[:10, 0].astype(int).tolist()) == list(range(10))
    assert again.ingested == {"claw-1": ("00aa11bb22cc33dd", 9)}
    record = again.link.robots["claw-1"]
    assert (record.spool, record.received, record.durable, record.key) == ("00aa11bb22cc33dd", 9, 9, key)
    for name, value in again.agent.actor.state_dict().items():
        assert torch.equal(value, weights[name]), name
    with pytest.raises(ValueError, match=r"--release-robot claw-2: no robot of that id .* \(known: claw-1\)"):
        again.release_robot("claw-2")
    again.release_robot("claw-1")  # e.g. the robot moved to a new key while its old one stays allowed
    assert record.key is None
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").glob("real_replay.*")) == ["real_replay.1.npz"]


def test_a_checkpoint_counts_what_its_replay_holds_not_what_the_link_took_since(tmp_path, claw_run):
    """The link takes batches on its own thread; a checkpoint holds the replay up to the last batch the learner
    drained, and the robot's counters as they were then. A restarted learner gets the rest again."""
    spool = "00aa11bb22cc33dd"
    learner = Learner(claw_run, tmp_path / "out", CFG, bind="tcp://127.0.0.1:*")
    counted = {**RobotRecord("claw-1").counted_state(), "transitions": 10, "episode_returns": [1.5],
               "episodes": 1, "episode_return": 0.25}  # fmt: skip
    learner.link.ingest.put(Ingested("claw-1", spool, 9, scored(10, 0, learner.layout.obs_dim), counted))
    learner.run(threading.Event(), max_updates=1)
    # Five more taken by the link and not yet drained when the learner dies: its live record counts them.
    learner.link.robots["claw-1"] = RobotRecord("claw-1", spool=spool, received=14, transitions=15,
                                                episode_returns=[1.5, 2.0], episode_return=0.5)  # fmt: skip
    learner.save_checkpoint()

    again = Learner(claw_run, tmp_path / "out", CFG, bind="tcp://127.0.0.1:*")
    record = again.link.robots["claw-1"]
    assert (record.received, record.transitions, record.episode_returns, record.episode_return) == (9, 10, [1.5], 0.25)
    assert record.episodes == 1
    assert len(again.real) == 10


def test_batches_taken_before_learning_starts_reach_a_checkpoint_while_it_runs(tmp_path, claw_run):
    """Before ``learning_starts`` every batch arrives while the learner waits for data: each must still be
    checkpointed, or the robots are never told they may forget it and their spools fill."""
    cfg = LearnerConfig(device="cpu", torch_threads=1, learning_starts=1000, checkpoint_every_s=0.01)
    learner = Learner(claw_run, tmp_path / "out", cfg, bind="tcp://127.0.0.1:*")
    stop = threading.Event()
    runner = threading.Thread(target=learner.run, args=(stop,))
    runner.start()
    try:
        learner.link.ingest.put(Ingested("claw-1", "00aa11bb22cc33dd", 9, scored(10, 0, learner.layout.obs_dim)))
        deadline = time.monotonic() + 10
        while learner.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        checkpointed_while_running = learner.checkpoints
    finally:
        stop.set()
        runner.join()
    assert checkpointed_while_running >= 1 and learner.updates == 0 and len(learner.real) == 10
    saved = torch.load(tmp_path / "out" / "checkpoints" / "last.pt", weights_only=False)["robots"]["claw-1"]
    assert (saved["received"], saved["durable"]) == (9, 9)


def test_a_failed_export_is_counted_and_the_learner_keeps_training(tmp_path, claw_run, monkeypatch):
    failures = iter([ExportError("onnxruntime differs from torch by 0.5 (tolerance 1e-4)"),
                     PolicyRejectedError("policy.onnx", [(Mismatch.FAILS_TO_RUN, "on a zero observation")]),
                     RuntimeError("out of disk space")])  # fmt: skip

    def refuses(*args, **kwargs):
        raise next(failures)

    monkeypatch.setattr("robot_sac.learner.verify", refuses)
    cfg = LearnerConfig(device="cpu", torch_threads=1, learning_starts=4, push_every=1)
    learner = Learner(claw_run, tmp_path / "out", cfg, bind="tcp://127.0.0.1:*")
    learner.link.ingest.put(Ingested("claw-1", "00aa11bb22cc33dd", 9, scored(10, 0, learner.layout.obs_dim)))
    report = learner.run(threading.Event(), max_updates=3)
    assert report["updates"] == 3 and report["policy_exports"] == [] and report["push_failure_count"] == 3
    reasons = [why for _, why in report["push_failures"]]
    assert reasons[0] == "onnxruntime differs from torch by 0.5 (tolerance 1e-4)"
    assert (
        reasons[1].startswith("PolicyRejectedError: policy.onnx: policy refused") and "running it fails" in reasons[1]
    )
    assert reasons[2] == "RuntimeError: out of disk space"


def test_the_learner_pushes_the_averaged_actor_when_the_run_averages(tmp_path):
    run = make_claw_run(tmp_path / "run", actor_average_tau=0.1)
    learner = Learner(run, tmp_path / "out", CFG, bind="tcp://127.0.0.1:*")
    learner.link.ingest.put(Ingested("claw-1", "00aa11bb22cc33dd", 9, scored(10, 0, learner.layout.obs_dim)))
    learner.run(threading.Event(), max_updates=1)
    agent = learner.agent
    with torch.no_grad():  # an average far from the actor, as after many updates
        for param in agent.actor_average.parameters():
            param.add_(0.2 * torch.randn_like(param))
    published = []
    learner.link.publish = lambda version, data: published.append(data)
    learner.push()
    obs = {"real": learner.real.obs[:10]}
    verify(published[0], TorchPolicy(agent.actor_average, agent.normalizer), obs, learner.robot_spec, learner.task)
    with pytest.raises(ExportError, match="differs from torch"):
        verify(published[0], TorchPolicy(agent.actor, agent.normalizer), obs, learner.robot_spec, learner.task)
