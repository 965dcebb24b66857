"""Stable-Baselines3's SAC, an outside client, trains a few hundred steps on each env without error."""

import gymnasium as gym
import numpy as np
import pytest

import sim  # noqa: F401

sb3 = pytest.importorskip("stable_baselines3")
torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Two intra-op threads on a shared 2-core machine make each tiny update ~15x slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("env_id", ["robot_sac/ClawTurn-v0", "robot_sac/QuadrupedWalk-v0"])
def test_sb3_sac_trains_and_acts(env_id):
    env = gym.make(env_id)
    model = sb3.SAC(
        "MlpPolicy", env, learning_starts=100, batch_size=32, buffer_size=1000,
        policy_kwargs={"net_arch": [32, 32]}, seed=0, device="cpu",
    )
    # Without a logger of its own, learn() leaves an empty SB3-<time> folder in the temp dir on every test run.
    model.set_logger(sb3.common.logger.Logger(folder=None, output_formats=[]))
    model.learn(total_timesteps=300)
    # The updates ran (past learning_starts) and the trained actor gives valid actions for this env.
    assert model.num_timesteps == 300 and model._n_updates >= 150
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == env.action_space.shape and np.all(np.abs(action) <= 1.0)
    env.step(action)
