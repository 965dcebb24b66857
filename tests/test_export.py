"""Export: train -> export -> PolicyRuntime gives the training actor's actions; the file is deterministic and
carries the contract; the command checks its own output."""

import json

import numpy as np
import onnx
import pytest
import torch

from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.policy_contract import Mismatch
from firmware_bridge.policy_runtime import PolicyRejectedError, PolicyRuntime
from firmware_bridge.task import TaskInterface
from robot_sac.cli import main
from robot_sac.config import TrainConfig
from robot_sac.envs import make_env
from robot_sac.export import ExportError, TorchPolicy, export_run, load_policy, verify
from robot_sac.sac import SACConfig
from robot_sac.trainer import Trainer


def _train(run_dir, env, normalize, steps=250):
    cfg = TrainConfig(
        env=env, total_steps=steps, seed=5, learning_starts=100, buffer_size=2_000, eval_interval=125,
        eval_episodes=1, checkpoint_interval=10_000, log_interval=50, torch_threads=1,
        sac=SACConfig(batch_size=32, actor_hidden=(32, 32), critic_hidden=(32, 32), normalize_observations=normalize),
    )
    Trainer(cfg, run_dir, show_progress=False).train()
    return run_dir


@pytest.fixture(scope="module")
def claw_run(tmp_path_factory):
    """A normalized claw run: real robot env, real observations, the statistics folded into the graph."""
    return _train(tmp_path_factory.mktemp("claw") / "claw-run", "robot_sac/ClawTurn-v0", normalize=True, steps=200)


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("pendulum") / "pend-run", "Pendulum-v1", normalize=False)


def _env_observations(env_id, n=100, seed=11):
    env = make_env(env_id)
    obs, _ = env.reset(seed=seed)
    rows = []
    rng = np.random.default_rng(seed)
    while len(rows) < n:
        rows.append(obs)
        obs, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return np.stack(rows).astype(np.float32)


def test_claw_round_trip_matches_the_normalized_torch_actor(claw_run, tmp_path, capsys):
    out = tmp_path / "claw.onnx"
    assert main(["export", str(claw_run), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["robot"] == "claw" and printed["normalized"] is True
    assert set(printed["max_abs_diff_onnxruntime_vs_torch"]) == {"real", "random"}
    assert max(printed["max_abs_diff_onnxruntime_vs_torch"].values()) <= 1e-5

    loaded = load_policy(claw_run, "best")
    assert loaded.normalizer.enabled and loaded.normalizer.count.item() > 100
    assert not torch.allclose(loaded.normalizer.mean, torch.zeros_like(loaded.normalizer.mean))
    task = TaskInterface.load("claw_turn")
    runtime = PolicyRuntime(out, task.load_robot(), task)
    contract = runtime.contract
    assert (contract.robot, contract.task, contract.env_id) == ("claw", "claw_turn", "robot_sac/ClawTurn-v0")
    assert contract.run_id == "claw-run" and contract.policy_version == loaded.step
    assert contract.observation_features[0] == ("joint_pos", 9)
    assert contract.obs_dim == ObservationBuilder(task.load_robot(), task).dim
    assert contract.action_names[:3] == ["f0_base", "f0_middle", "f0_tip"]
    assert contract.control_rate_hz == 10.0
    np.testing.assert_array_equal(contract.normalization.mean, loaded.normalizer.mean.numpy())

    obs = _env_observations("robot_sac/ClawTurn-v0")
    with torch.no_grad():
        expected = TorchPolicy(loaded.actor, loaded.normalizer)(torch.from_numpy(obs)).numpy()
    actions = np.stack([runtime(o) for o in obs])
    np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-5)
    assert np.ptp(actions) > 0.01  # a policy that reacts to its input, not a constant


def test_pendulum_export_has_no_robot_and_the_env_action_scaling(pendulum_run, tmp_path, capsys):
    out = tmp_path / "pendulum.onnx"
    assert main(["export", str(pendulum_run), "--checkpoint", "last", "--out", str(out)]) == 0
    capsys.readouterr()
    runtime = PolicyRuntime(out)
    contract = runtime.contract
    assert (contract.robot, contract.robot_interface_hash, contract.task) == ("", "", "")
    assert contract.observation_features == [("observation", 3)] and contract.action_names == ["a0"]
    assert contract.action_center == [0.0] and contract.action_scale == [2.0]  # Pendulum torque in [-2, 2]
    assert contract.control_rate_hz == 20.0 and contract.normalization is None
    assert contract.policy_version == 250  # last.pt: the final training step
    loaded = load_policy(pendulum_run, "last")
    obs = _env_observations("Pendulum-v1")
    with torch.no_grad():
        expected = loaded.actor.deterministic(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(runtime.run_batch(obs), expected, rtol=0, atol=1e-5)
    with pytest.raises(PolicyRejectedError) as info:
        PolicyRuntime(out, TaskInterface.load("claw_turn").load_robot())
    assert info.value.kinds == {Mismatch.ROBOT}


def test_exporting_twice_gives_the_same_bytes(pendulum_run):
    first, second = export_run(pendulum_run), export_run(pendulum_run)
    assert first.data == second.data
    model = onnx.load_from_string(first.data)
    assert [i.name for i in model.graph.input] == ["obs"] and [o.name for o in model.graph.output] == ["action"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.opset_import[0].version == 20
    # No source paths or line numbers from the exporter: the bytes do not depend on the checkout.
    assert not any(node.metadata_props for node in model.graph.node)
    assert b"export.py" not in first.data
    assert export_run(pendulum_run, policy_version=42).data != first.data


def _verify_against_shifted_mean(run, shift: float) -> dict[str, float]:
    """``verify`` of the run's exported file against its torch actor with the first action's mean moved by
    ``shift``."""
    result = export_run(run)
    loaded = load_policy(run)
    other = TorchPolicy(loaded.actor, loaded.normalizer)
    with torch.no_grad():
        other.actor.head.bias[0] += shift
    return verify(result.data, other, {"real": _env_observations("Pendulum-v1", n=20)})


def test_verify_refuses_a_file_that_differs_from_torch(pendulum_run):
    with pytest.raises(ExportError, match=r"onnxruntime differs from torch by \{'real'"):
        _verify_against_shifted_mean(pendulum_run, 1e-3)


def test_verify_accepts_differences_at_float32_rounding_scale(pendulum_run):
    # onnxruntime and torch sum in different orders: a trained claw policy's actions differed by 1.3e-5 on the
    # random check observations. A difference of that order is rounding, not a wrong file.
    diffs = _verify_against_shifted_mean(pendulum_run, 3e-5)
    assert 1e-5 < diffs["real"] < 1e-4


def test_best_and_last_export_the_averaged_actor_when_the_run_averages(tmp_path):
    cfg = TrainConfig(
        env="Pendulum-v1", total_steps=200, seed=5, learning_starts=100, buffer_size=2_000, eval_interval=200,
        eval_episodes=1, checkpoint_interval=10_000, log_interval=50, torch_threads=1,
        sac=SACConfig(batch_size=32, actor_hidden=(32, 32), critic_hidden=(32, 32), actor_average_tau=0.05),
    )
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    trainer.train()  # one evaluation, at the last step: best.pt and last.pt hold the same average
    average, trained = trainer.agent.actor_average.state_dict(), trainer.agent.actor.state_dict()
    assert any(not torch.equal(average[k], trained[k]) for k in average)
    for checkpoint in ("best", "last"):
        exported = load_policy(tmp_path / "run", checkpoint).actor.state_dict()
        for name, value in average.items():
            assert torch.equal(exported[name], value), f"{checkpoint}: {name}"


def test_export_errors_name_the_missing_checkpoint(pendulum_run, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x.onnx")]) == 2
    assert f"{tmp_path}/checkpoints/best.pt: no such checkpoint" in capsys.readouterr().err
    assert main(["export", str(pendulum_run), "--checkpoint", str(pendulum_run / "config.yaml")]) == 2
    assert "config.yaml" in capsys.readouterr().err
