"""Evaluation: episodes run through PolicyRuntime, summary.json, and the episode runner the robustness tool
reuses."""

import json

import numpy as np
import pytest
import torch

from firmware_bridge.task import TaskInterface
from robot_sac.cli import main
from robot_sac.evaluation import make_task_env, run_episodes
from robot_sac.export import ExportedPolicy, build_contract, env_interface, robot_interface, to_onnx
from robot_sac.networks import Actor, ObservationNormalizer


def _random_policy_file(path, interface, env_id):
    torch.manual_seed(0)
    actor = Actor(interface["obs_dim"], interface["act_dim"], (16, 16))
    normalizer = ObservationNormalizer(interface["obs_dim"], enabled=False)
    path.write_bytes(to_onnx(ExportedPolicy(actor, normalizer), build_contract(interface, env_id, normalizer, 1, "t")))
    return path


def test_run_episodes_matches_a_hand_written_loop():
    env = make_task_env("Pendulum-v1")
    push = lambda obs: np.array([0.3], dtype=np.float32)  # noqa: E731
    results = run_episodes(env, push, episodes=2, seed=4)
    expected = []
    for seed in (4, 5):
        env.reset(seed=seed)
        total = 0.0
        for _ in range(200):
            total += env.step(np.array([0.3], dtype=np.float32))[1]
        expected.append(total)
    np.testing.assert_allclose(results.returns, expected, rtol=1e-12)
    summary = results.summary()
    assert summary["episodes"] == 2 and summary["episode_lengths"] == [200, 200]
    assert summary["return_mean"] == pytest.approx(np.mean(expected)) and "success_rate" not in summary
    with pytest.raises(ValueError, match="at least 1"):
        run_episodes(env, push, episodes=0, seed=0)


def test_eval_command_runs_a_claw_policy_and_writes_the_summary(tmp_path, capsys):
    task = TaskInterface.load("claw_turn")
    policy = _random_policy_file(tmp_path / "claw.onnx", robot_interface(task.load_robot(), task),
                                 "robot_sac/ClawTurn-v0")
    code = main(["eval", str(policy), "--task", "claw_turn", "--episodes", "2", "--seed", "3", "--out",
                 str(tmp_path / "eval")])
    assert code == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert json.loads(capsys.readouterr().out) == summary
    assert summary["episodes"] == 2 and summary["backend"] == "mujoco" and summary["randomized"] is True
    assert summary["episode_lengths"] == [40, 40] and summary["success_rate"] in (0.0, 0.5, 1.0)
    assert summary["return_std"] == pytest.approx(np.std(summary["returns"]))
    assert summary["policy_latency_us"]["calls"] == 80  # every action came from PolicyRuntime

    # Same seeds, same episodes: the runner is deterministic given the seed.
    assert main(["eval", str(policy), "--task", "claw_turn", "--episodes", "2", "--seed", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["returns"] == summary["returns"]


def test_eval_refuses_a_policy_for_another_robot(tmp_path, capsys):
    env = make_task_env("Pendulum-v1")
    policy = _random_policy_file(tmp_path / "pendulum.onnx", env_interface(env), "Pendulum-v1")
    assert main(["eval", str(policy), "--task", "claw_turn", "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "robot-sac eval: error:" in err and "wrong robot" in err and "trained on env 'Pendulum-v1'" in err
    assert main(["eval", str(policy), "--task", "Pendulum-v1", "--episodes", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "gymnasium"
    with pytest.raises(ValueError, match="Pendulum-v1 is a Gymnasium env, not a robot task"):
        make_task_env("Pendulum-v1", backend="mujoco")
    assert main(["eval", str(policy), "--task", "Pendulum-v1", "--nominal"]) == 2
    assert "robot-sac eval: error: Pendulum-v1 is a Gymnasium env, not a robot task" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(policy), "--task", "claw_turn", "--backend", "bullet"])
    assert exc.value.code == 2 and "invalid choice: 'bullet'" in capsys.readouterr().err
