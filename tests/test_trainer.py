"""The runner end to end on small budgets: run directory contents, bootstrap flags, exact resume."""

import json

import numpy as np
import pytest
import torch
import yaml

from firmware_bridge.typed_yaml import ConfigError
from robot_sac.cli import main
from robot_sac.config import TrainConfig
from robot_sac.sac import SACConfig
from robot_sac.trainer import Trainer


def _cfg(env="InvertedPendulum-v5", **kw):
    base = dict(
        env=env, total_steps=300, seed=3, learning_starts=100, buffer_size=5_000, eval_interval=150,
        eval_episodes=2, checkpoint_interval=10_000, log_interval=50, torch_threads=1,
        sac=SACConfig(batch_size=32, actor_hidden=(32, 32), critic_hidden=(32, 32)),
    )
    base.update(kw)
    return TrainConfig(**base)


def test_terminations_stop_the_bootstrap_and_truncations_do_not(tmp_path):
    # Pendulum only truncates (200-step limit); InvertedPendulum terminates when the pole falls.
    pend = Trainer(_cfg("Pendulum-v1", total_steps=250, learning_starts=250), tmp_path / "p", show_progress=False)
    pend.train()
    assert pend.episodes == 1 and pend.buffer.terminated[:250].sum() == 0

    inv = Trainer(_cfg(total_steps=120, learning_starts=120), tmp_path / "i", show_progress=False)
    inv.train()
    ends = np.flatnonzero(inv.buffer.terminated[:120])
    assert len(ends) == inv.episodes > 1
    assert [s for s, _ in inv.episode_returns] == (ends + 1).tolist()


@pytest.mark.parametrize(
    "env, stop, sac_options",
    [
        # mid-episode, in a later episode, after learning started; averaged
        ("InvertedPendulum-v5", 170, {"actor_average_tau": 0.05}),
        # inside the run's first episode, which began from reset(seed=...)
        ("Pendulum-v1", 150, {}),
        # critics that see the privileged observation, normalized: the tape's replay restores it too
        ("robot_sac/ClawTurnFixed-v0", 170, {"privileged_critic": True, "normalize_observations": True}),
    ],
)
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, env, stop, sac_options):
    # On the CPU, as the contract says; the stops are placed on this trajectory (tests/test_cuda.py: on CUDA).
    sac = SACConfig(batch_size=32, actor_hidden=(32, 32), critic_hidden=(32, 32), **sac_options)
    average_tau = sac.actor_average_tau
    straight = Trainer(_cfg(env, device="cpu", sac=sac), tmp_path / "a", show_progress=False)
    straight.train()

    first = Trainer(_cfg(env, device="cpu", sac=sac), tmp_path / "b", show_progress=False)
    first.train(until=stop)
    assert first.ep_len > 0 and (first.episodes > 0) == (env != "Pendulum-v1")
    del first
    resumed = Trainer.resume(tmp_path / "b", show_progress=False)
    assert resumed.step == stop
    resumed.train()

    for name in ("actor", "critic", "critic_target", *(("actor_average",) if average_tau else ())):
        a = getattr(straight.agent, name).state_dict()
        b = getattr(resumed.agent, name).state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resume"
    assert straight.agent.log_alpha.item() == resumed.agent.log_alpha.item()
    assert straight.episode_returns == resumed.episode_returns
    for field in straight.buffer.fields:
        np.testing.assert_array_equal(getattr(straight.buffer, field), getattr(resumed.buffer, field))
    for name in ("normalizer", "privileged_normalizer"):
        a, b = getattr(straight.agent, name).state_dict(), getattr(resumed.agent, name).state_dict()
        assert all(torch.equal(a[key], b[key]) for key in a)


def test_a_crash_between_writing_the_replay_and_last_pt_resumes_from_the_last_complete_checkpoint(
    tmp_path, monkeypatch
):
    sac = SACConfig(batch_size=32, actor_hidden=(32, 32), critic_hidden=(32, 32))
    straight = Trainer(_cfg(device="cpu", sac=sac), tmp_path / "a", show_progress=False)
    straight.train()

    first = Trainer(_cfg(device="cpu", sac=sac), tmp_path / "b", show_progress=False)
    first.train(until=170)

    def killed(obj, path):  # the process dies after the step-230 replay is on disk, before last.pt names it
        raise KeyboardInterrupt

    monkeypatch.setattr("robot_sac.trainer.atomic_torch_save", killed)
    with pytest.raises(KeyboardInterrupt):
        first.train(until=230)
    monkeypatch.undo()
    checkpoints = tmp_path / "b" / "checkpoints"
    assert {p.name for p in checkpoints.glob("replay*.npz")} == {"replay.170.npz", "replay.230.npz"}
    (checkpoints / "replay.200.npz.tmp").write_bytes(b"half a file")  # what a crash mid-write leaves

    resumed = Trainer.resume(tmp_path / "b", show_progress=False)
    assert resumed.step == 170 and resumed.buffer.size == 170
    resumed.train()
    for key, value in straight.agent.critic.state_dict().items():
        assert torch.equal(value, resumed.agent.critic.state_dict()[key]), key
    np.testing.assert_array_equal(straight.buffer.obs, resumed.buffer.obs)
    assert [p.name for p in checkpoints.glob("replay*")] == ["replay.300.npz"]


def test_cli_writes_a_complete_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--env", "Pendulum-v1", "--steps", "400", "--seed", "1", "--out", str(out),
                 "--set", "learning_starts=200", "--set", "eval_interval=200", "--set", "eval_episodes=1",
                 "--set", "sac.batch_size=32", "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("steps", "wall_s", "steps_per_s", "updates_per_s", "eval_return_final", "eval_return_best"):
        assert summary[key] is not None, key
    assert summary["steps"] == 400 and summary["updates"] == 200
    assert [e["step"] for e in summary["evals"]] == [200, 400]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["env"] == "Pendulum-v1" and config["learning_starts"] == 200 and config["seed"] == 1
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "checkpoints" / "last.pt").exists() and (out / "checkpoints" / "best.pt").exists()
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert '"eval_return_final"' in capsys.readouterr().out

    # Resume with a longer budget continues the same run.
    assert main(["train", "--resume", str(out), "--steps", "600", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 600 and [e["step"] for e in summary["evals"]] == [200, 400, 600]


def test_resume_names_the_run_config_that_is_wrong(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    (tmp_path / "config.yaml").write_text("env: Pendulum-v1\nsac:\n  gama: 0.9\n")
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'config.yaml'}: sac\.gama: unknown key"):
        Trainer.resume(tmp_path, show_progress=False)


def test_best_checkpoint_is_the_highest_success_rate_then_return_and_survives_a_resume(tmp_path, monkeypatch):
    # Scripted evaluation results, so the choice is checked without training a policy to each level.
    results = iter([(0.4, 100.0), (0.6, 50.0), (0.6, 80.0), (0.5, 500.0)])

    class Scripted:
        def summary(self):
            success, ret = next(results)
            return {"return_mean": ret, "return_std": 0.0, "length_mean": 10.0, "success_rate": success}

    monkeypatch.setattr("robot_sac.trainer.run_episodes", lambda *a, **k: Scripted())
    trainer = Trainer(_cfg(total_steps=200, learning_starts=200, eval_interval=50), tmp_path / "r",
                      show_progress=False)
    trainer.train(until=150)  # stops with a checkpoint at 150
    resumed = Trainer.resume(tmp_path / "r", show_progress=False)
    resumed.train()

    assert [e["step"] for e in resumed.evals] == [50, 100, 150, 200]
    best = torch.load(tmp_path / "r" / "checkpoints" / "best.pt", weights_only=False)
    assert best["eval"]["step"] == 150 and best["eval"]["return_mean"] == 80.0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["best_checkpoint"]["step"] == 150
    assert summary["eval_return_best"] == 500.0
