"""The asymmetric critic (``sac.privileged_critic``): what the env hands over, what the critics and the actor
see, and where such a run can and cannot go (export yes, a learner on robot transitions no)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import sim  # noqa: F401  (registers the ids)
from firmware_bridge.typed_yaml import ConfigError
from learner_helpers import make_claw_run
from robot_sac.config import TrainConfig
from robot_sac.export import export_run, load_policy
from robot_sac.learner import Learner, LearnerConfig
from robot_sac.replay import Batch
from robot_sac.sac import SAC, SACConfig
from robot_sac.trainer import Trainer
from sim.privileged import privileged_names, privileged_observation

OBS, ACT, PRIV, B = 3, 2, 4, 8


def test_the_env_reports_the_true_state_and_the_drawn_dynamics():
    env = gym.make("robot_sac/QuadrupedWalk-v0").unwrapped
    _, info = env.reset(seed=4)
    np.testing.assert_array_equal(info["privileged"], privileged_observation(env.true_state, env.params))
    for _ in range(3):
        _, _, _, _, info = env.step(np.zeros(8, dtype=np.float32))
    names = privileged_names(env.true_state, env.params)
    values = dict(zip(names, info["privileged"], strict=True))
    true = env.true_state
    # The true readings, where the policy's observation was built from noisy ones.
    assert values["true_joint_pos[3]"] == np.float32(true.joint_pos[3]) != np.float32(env.observed_state.joint_pos[3])
    assert values["true_base_velocity_x"] == np.float32(true.extras["base_velocity_x"])
    assert "true_base_position_x" not in values
    assert values["friction_scale"] == np.float32(env.params.friction_scale)
    assert values["motor_strength[7]"] == np.float32(env.params.motor_strength[7])
    assert values["latency_ticks"] == np.float32(env.params.latency_ticks)
    assert info["privileged"].dtype == np.float32


def _agent(**overrides) -> SAC:
    cfg = SACConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), batch_size=B, matmul_dtype="float32",
                    privileged_critic=True, normalize_observations=True, **overrides)  # fmt: skip
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, cfg, privileged_dim=PRIV)
    # Statistics far from (0, 1), so a path that skipped a normalizer would change the numbers.
    agent.normalizer.update(torch.randn(200, OBS) * 2 + 1)
    agent.privileged_normalizer.update(torch.randn(200, PRIV) * 5 - 3)
    return agent


def _batch(privileged_scale: float = 1.0) -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(
        obs=torch.randn(B, OBS, generator=g),
        action=torch.rand(B, ACT, generator=g) * 2 - 1,
        reward=torch.randn(B, generator=g),
        next_obs=torch.randn(B, OBS, generator=g),
        terminated=torch.tensor([1.0] + [0.0] * (B - 1)),
        privileged=privileged_scale * torch.randn(B, PRIV, generator=g),
        next_privileged=privileged_scale * torch.randn(B, PRIV, generator=g),
    )


@torch.no_grad()
def _expected_losses(agent: SAC, batch: Batch, seed: int) -> tuple[float, float]:
    """The critic and actor losses by hand: the actor on the normalized observation, the critics on it
    followed by the normalized privileged observation; the update's draws in its order."""
    torch.manual_seed(seed)
    next_noise, noise = torch.randn(B, ACT), torch.randn(B, ACT)
    obs, next_obs = agent.normalizer(batch.obs), agent.normalizer(batch.next_obs)
    critic_obs = torch.cat([obs, agent.privileged_normalizer(batch.privileged)], -1)
    next_critic_obs = torch.cat([next_obs, agent.privileged_normalizer(batch.next_privileged)], -1)
    alpha = agent.alpha
    next_action, next_log_prob = agent.actor.sample(next_obs, next_noise)
    next_q = agent.critic_target(next_critic_obs, next_action).min(0).values - alpha * next_log_prob
    target = batch.reward + agent.cfg.gamma * (1 - batch.terminated) * next_q
    critic_loss = 0.5 * 2 * (agent.critic(critic_obs, batch.action) - target).square().mean()
    action, log_prob = agent.actor.sample(obs, noise)
    actor_loss = (alpha * log_prob - agent.critic(critic_obs, action).min(0).values).mean()
    return critic_loss.item(), actor_loss.item()


@pytest.mark.parametrize("simultaneous", [True, False])
def test_the_update_feeds_the_critics_the_privileged_observation_and_the_actor_not(simultaneous):
    agent = _agent(simultaneous_update=simultaneous)
    assert agent.actor.trunk[0].in_features == OBS
    assert agent.critic.net[0].weight.shape[1] == OBS + PRIV + ACT
    batch = _batch()
    critic_loss, actor_loss = _expected_losses(agent, batch, seed=5)
    # The same update with other privileged values scores otherwise: the check below can tell.
    assert abs(_expected_losses(agent, _batch(privileged_scale=3.0), seed=5)[0] - critic_loss) > 1e-3
    torch.manual_seed(5)
    info = agent.update(batch)
    assert info["losses/critic"] == pytest.approx(critic_loss, rel=1e-5)
    if simultaneous:  # SB3's order takes the actor's loss through the critics just stepped
        assert info["losses/actor"] == pytest.approx(actor_loss, rel=1e-5)
    deterministic = agent.act(np.ones(OBS, dtype=np.float32), deterministic=True)
    assert deterministic.shape == (ACT,)


def test_the_privileged_statistics_are_saved_with_the_agent():
    agent = _agent()
    state = agent.state_dict()
    other = SAC(OBS, ACT, agent.cfg, privileged_dim=PRIV)
    other.load_state_dict(state)
    for key in ("mean", "var", "count"):
        assert torch.equal(other.privileged_normalizer.state_dict()[key], agent.privileged_normalizer.state_dict()[key])
    assert other.privileged_normalizer.count.item() == 200


def test_the_option_and_the_privileged_width_must_agree():
    with pytest.raises(ValueError, match="privileged_critic=True with a privileged observation of 0 values"):
        SAC(OBS, ACT, SACConfig(privileged_critic=True))
    with pytest.raises(ValueError, match="privileged_critic=False with a privileged observation of 4 values"):
        SAC(OBS, ACT, SACConfig(), privileged_dim=4)


def test_an_env_without_a_privileged_observation_is_refused_by_name(tmp_path):
    cfg = TrainConfig(env="Pendulum-v1", total_steps=10, sac=SACConfig(privileged_critic=True))
    with pytest.raises(ConfigError, match=r"sac.privileged_critic: env Pendulum-v1 gives no privileged observation"):
        Trainer(cfg, tmp_path / "run", show_progress=False)


def test_a_privileged_run_exports_its_actor_and_a_learner_refuses_it(tmp_path):
    run = make_claw_run(tmp_path / "run", steps=80, privileged_critic=True, normalize_observations=True)
    policy = load_policy(run, "last")
    assert policy.actor.trunk[0].in_features == policy.normalizer.mean.shape[0] == 24
    result = export_run(run, "last")
    assert result.contract.obs_dim == 24
    with pytest.raises(ConfigError, match="sac.privileged_critic: .*which a robot's transitions do not carry"):
        Learner(run, tmp_path / "out", LearnerConfig(device="cpu", torch_threads=1), bind="tcp://127.0.0.1:*")


def test_a_batch_without_the_privileged_observation_is_refused_by_name():
    agent = _agent()
    batch = _batch()
    batch.privileged = batch.next_privileged = None
    with pytest.raises(ValueError, match=r"Batch.privileged, Batch.next_privileged: the critics see them"):
        agent.update(batch)


def test_the_trainer_stores_each_transition_with_its_own_privileged_observations(tmp_path):
    cfg = TrainConfig(env="robot_sac/ClawTurnFixed-v0", total_steps=100, seed=2, learning_starts=100,
                      buffer_size=1000, eval_interval=10**6, checkpoint_interval=10**6, log_interval=10**6,
                      device="cpu", torch_threads=1,
                      sac=SACConfig(batch_size=32, actor_hidden=(32, 32), critic_hidden=(32, 32),
                                    privileged_critic=True, normalize_observations=True))  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    trainer.train()
    buf = trainer.buffer
    env = gym.make("robot_sac/ClawTurnFixed-v0")
    _, info = env.reset(seed=2)
    np.testing.assert_array_equal(buf.privileged[0], info["privileged"])  # the run's first reset
    episode_ends = {39, 79}  # 40-tick episodes, cut by the time limit
    for i in range(99):
        if i not in episode_ends:
            np.testing.assert_array_equal(buf.next_privileged[i], buf.privileged[i + 1], err_msg=f"row {i}")
    assert not np.array_equal(buf.next_privileged[39], buf.privileged[40])  # a new episode's reset
    # One update of the statistics per step, from the same rows the buffer holds.
    assert trainer.agent.privileged_normalizer.count.item() == 100
    np.testing.assert_allclose(trainer.agent.privileged_normalizer.mean.numpy(), buf.next_privileged[:100].mean(0),
                               rtol=1e-6, atol=1e-6)
