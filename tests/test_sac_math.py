"""The SAC math against references: log-probabilities, the TD target, the temperature, Polyak averaging."""

import math
import os
import signal

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from robot_sac.critic_process import _DONE, CriticProcessError
from robot_sac.networks import Actor, CriticEnsemble, squashed_gaussian_log_prob
from robot_sac.replay import Batch
from robot_sac.sac import SAC, SACConfig


def reference_log_prob(mean, log_std, pre_tanh):
    dist = TransformedDistribution(Independent(Normal(mean, log_std.exp()), 1), [TanhTransform(cache_size=1)])
    action = dist.transforms[0](pre_tanh)  # cached, so log_prob inverts exactly even where tanh rounds to 1
    return dist.log_prob(action)


def test_squashed_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(64, 3, generator=g, dtype=torch.float64)
    log_std = torch.randn(64, 3, generator=g, dtype=torch.float64).clamp(-3, 1)
    pre_tanh = mean + log_std.exp() * torch.randn(64, 3, generator=g, dtype=torch.float64)
    ours = squashed_gaussian_log_prob((pre_tanh - mean) / log_std.exp(), log_std, pre_tanh)
    torch.testing.assert_close(ours, reference_log_prob(mean, log_std, pre_tanh), rtol=1e-10, atol=1e-10)


def test_squashed_log_prob_is_finite_and_exact_at_the_action_bounds():
    mean = torch.tensor([[9.0, -12.0]])
    log_std = torch.tensor([[-1.0, -1.0]])
    pre_tanh = torch.tensor([[10.0, -11.5]])  # tanh rounds to exactly +-1 in float32
    assert torch.all(torch.tanh(pre_tanh).abs() == 1.0)
    ours = squashed_gaussian_log_prob((pre_tanh - mean) / log_std.exp(), log_std, pre_tanh)
    # float64 closed form: log N(u) + 2 log cosh(u), with log cosh u = |u| + log1p(exp(-2|u|)) - log 2
    expected = 0.0
    for m, s, u in [(9.0, -1.0, 10.0), (-12.0, -1.0, -11.5)]:
        std = math.exp(s)
        log_normal = -0.5 * ((u - m) / std) ** 2 - s - 0.5 * math.log(2 * math.pi)
        log_cosh = abs(u) + math.log1p(math.exp(-2 * abs(u))) - math.log(2)
        expected += log_normal + 2 * log_cosh
    assert torch.isfinite(ours).all()
    assert ours.item() == pytest.approx(expected, rel=1e-5)
    naive = (Normal(mean, log_std.exp()).log_prob(pre_tanh) - torch.log(1 - torch.tanh(pre_tanh) ** 2)).sum()
    assert not torch.isfinite(naive)  # what the stable form avoids


def test_actor_sample_log_prob_is_the_density_of_its_own_sample():
    torch.manual_seed(1)
    actor = Actor(5, 2, (32, 32))
    obs = torch.randn(16, 5)
    torch.manual_seed(7)
    action, log_prob = actor.sample(obs)
    torch.manual_seed(7)
    mean, log_std = actor(obs)
    pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
    torch.testing.assert_close(action, torch.tanh(pre_tanh))
    torch.testing.assert_close(log_prob, reference_log_prob(mean, log_std, pre_tanh), rtol=1e-5, atol=1e-5)
    assert action.abs().max() < 1.0
    torch.manual_seed(7)
    torch.testing.assert_close(actor.explore(obs), action, rtol=0, atol=0)  # the same draw, no log-probability


def test_log_std_is_clamped():
    actor = Actor(3, 2, (8,))
    with torch.no_grad():
        actor.head.bias[2:] = 50.0
        actor.head.weight.zero_()
    _, log_std = actor(torch.zeros(4, 3))
    assert torch.all(log_std == 2.0)


def test_fused_critic_equals_separate_linear_networks():
    """Values and parameter gradients: the output layer takes its own path (a multiply and a sum)."""
    torch.manual_seed(0)
    critic = CriticEnsemble(4, 2, (16, 16), ensemble=2)
    obs, act = torch.randn(8, 4), torch.randn(8, 2)
    q = critic(obs, act)
    assert q.shape == (2, 8)
    fused_grads = torch.autograd.grad((q * torch.arange(1.0, 9.0)).sum(), list(critic.parameters()))
    x = torch.cat([obs, act], -1)
    reference = []
    for i in range(2):
        h = x
        linears = [m for m in critic.net if hasattr(m, "weight")] + [critic.head]
        for j, layer in enumerate(linears):
            h = h @ layer.weight[i] + layer.bias[i, 0]
            if j < len(linears) - 1:
                h = torch.relu(h)
        torch.testing.assert_close(q[i], h.squeeze(-1))
        reference.append(h.squeeze(-1))
    weighted = (torch.stack(reference) * torch.arange(1.0, 9.0)).sum()
    for fused, ref in zip(fused_grads, torch.autograd.grad(weighted, list(critic.parameters()))):
        torch.testing.assert_close(fused, ref)


def _agent(**overrides):
    cfg = SACConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), batch_size=4, **overrides)
    torch.manual_seed(0)
    return SAC(obs_dim=3, act_dim=2, cfg=cfg)


def test_critic_target_on_a_hand_computed_batch_terminal_vs_truncated():
    agent = _agent(gamma=0.9, alpha=0.5)
    with torch.no_grad():  # target critics output constants 3.0 and 2.0, so the min is 2.0
        last = agent.critic_target.head
        last.weight.zero_()
        last.bias[0].fill_(3.0)
        last.bias[1].fill_(2.0)
    reward = torch.tensor([1.0, 1.0])
    next_obs = torch.randn(2, 3)
    terminated = torch.tensor([1.0, 0.0])  # row 0 ended in a termination, row 1 was cut by the time limit
    alpha = torch.tensor(0.5)
    torch.manual_seed(3)
    target = agent.critic_target_values(reward, next_obs, terminated, alpha)
    torch.manual_seed(3)
    _, next_log_prob = agent.actor.sample(next_obs)
    assert target[0].item() == pytest.approx(1.0)  # no bootstrap after a termination
    assert target[1].item() == pytest.approx(1.0 + 0.9 * (2.0 - 0.5 * next_log_prob[1].item()), rel=1e-6)


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(n, 3, generator=g),
        action=torch.rand(n, 2, generator=g) * 2 - 1,
        reward=torch.randn(n, generator=g),
        next_obs=torch.randn(n, 3, generator=g),
        terminated=torch.zeros(n),
    )


@pytest.mark.parametrize("log_std_bias, direction", [(-6.0, +1), (0.0, -1)])
def test_temperature_rises_when_entropy_is_below_target_and_falls_above(log_std_bias, direction):
    agent = _agent(alpha=0.2, actor_lr=0.0)  # actor frozen, so its entropy is what we set
    with torch.no_grad():
        agent.actor.head.bias[2:] = log_std_bias
    before = agent.alpha
    info = agent.update(_batch())
    entropy = info["charts/entropy"]
    assert (entropy < agent.target_entropy) == (direction > 0)
    assert (agent.alpha - before) * direction > 0


def test_fixed_alpha_stays_fixed():
    agent = _agent(alpha=0.3, autotune_alpha=False)
    for seed in range(3):
        agent.update(_batch(seed=seed))
    assert agent.alpha == pytest.approx(0.3)


def test_target_critics_are_polyak_averaged():
    agent = _agent(tau=0.1)
    target_before = [p.clone() for p in agent.critic_target.parameters()]
    agent.update(_batch())
    for old, new_target, online in zip(target_before, agent.critic_target.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(new_target, 0.9 * old + 0.1 * online)
        assert not new_target.requires_grad


@pytest.mark.parametrize("simultaneous_update", [True, False])
def test_the_averaged_actor_is_a_polyak_average_stepped_with_the_actor(simultaneous_update):
    agent = _agent(actor_average_tau=0.1, actor_update_every=2, simultaneous_update=simultaneous_update)
    average = [p.detach().clone() for p in agent.actor.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(average, agent.actor_average.parameters()))
    for seed in range(4):
        agent.update(_batch(seed=seed))
        if seed % 2 == 1:  # the actor stepped (every second update); the critics-only updates leave both alone
            average = [0.9 * a + 0.1 * p for a, p in zip(average, agent.actor.parameters())]
        for expected, got in zip(average, agent.actor_average.parameters()):
            torch.testing.assert_close(got, expected)
            assert not got.requires_grad
    assert any(not torch.equal(a, p) for a, p in zip(average, agent.actor.parameters()))


def test_deterministic_actions_come_from_the_average_and_samples_from_the_trained_actor():
    agent = _agent(actor_average_tau=0.5, actor_lr=1e-2)
    for seed in range(3):
        agent.update(_batch(seed=seed))
    obs = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    x = torch.as_tensor(obs)
    with torch.no_grad():
        average, trained = agent.actor_average.deterministic(x).numpy(), agent.actor.deterministic(x).numpy()
        torch.manual_seed(4)
        sampled = agent.actor.sample(x)[0].numpy()
    np.testing.assert_allclose(agent.act(obs, deterministic=True), average, rtol=0, atol=1e-7)
    assert np.abs(average - trained).max() > 1e-3
    torch.manual_seed(4)
    np.testing.assert_allclose(agent.act(obs), sampled, rtol=0, atol=1e-7)
    plain = _agent()
    assert plain.policy_actor is plain.actor and "actor_average" not in plain.state_dict()


def test_the_average_is_saved_and_a_state_without_one_starts_it_from_the_actor():
    agent = _agent(actor_average_tau=0.3)
    for seed in range(2):
        agent.update(_batch(seed=seed))
    state = agent.state_dict()
    restored = _agent(actor_average_tau=0.3)
    restored.load_state_dict(state)
    for name, value in agent.actor_average.state_dict().items():
        assert torch.equal(restored.actor_average.state_dict()[name], value), name
    del state["actor_average"]  # a run saved before averaging was turned on
    started = _agent(actor_average_tau=0.3)
    started.load_state_dict(state)
    for name, value in state["actor"].items():
        assert torch.equal(started.actor_average.state_dict()[name], value), name


@pytest.mark.parametrize("tau", [-0.1, 1.5])
def test_an_averaging_rate_outside_0_1_is_refused_by_name(tau):
    with pytest.raises(ValueError, match=f"actor_average_tau={tau} is not in"):
        _agent(actor_average_tau=tau)


def test_update_moves_the_critic_toward_the_target():
    agent = _agent(alpha=0.1, autotune_alpha=False, critic_lr=1e-2)
    batch = _batch(n=32)
    losses = [agent.update(batch)["losses/critic"] for _ in range(50)]
    assert losses[-1] < 0.5 * losses[0]


def test_redq_target_uses_a_subset_of_a_larger_ensemble():
    agent = _agent(n_critics=5, n_target_critics=2, critic_dropout=0.01, critic_layer_norm=True, gamma=0.5)
    with torch.no_grad():  # target critic i outputs the constant 10 - i
        agent.critic_target.head.weight.zero_()
        agent.critic_target.head.bias.copy_(torch.arange(10.0, 5.0, -1.0).view(5, 1, 1))
    draws = [agent._target_members() for _ in range(20)]
    assert all(len(set(m.tolist())) == 2 and 0 <= m.min() and m.max() < 5 for m in draws)
    assert len({tuple(sorted(m.tolist())) for m in draws}) > 1
    reward, next_obs, alpha = torch.zeros(3), torch.randn(3, 3), torch.tensor(0.0)
    target = agent.critic_target_values(reward, next_obs, torch.zeros(3), alpha, members=torch.tensor([0, 3]))
    torch.testing.assert_close(target, torch.full((3,), 0.5 * 7.0))  # min(10, 7), discounted
    info = agent.update(_batch())
    assert np.isfinite(info["losses/critic"])


def _actor_after_one_update(**overrides):
    agent = _agent(**overrides)
    torch.manual_seed(1)
    agent.update(_batch(n=16))
    return [p.detach().clone() for p in (*agent.actor.parameters(), agent.log_alpha)]


def test_simultaneous_update_takes_the_actor_step_on_the_pre_update_critics():
    simultaneous = _actor_after_one_update(simultaneous_update=True, critic_lr=1e-2)
    # A sequential update whose critic step changes nothing sees the same critics as the simultaneous one.
    frozen_critic = _actor_after_one_update(simultaneous_update=False, critic_lr=0.0)
    sequential = _actor_after_one_update(simultaneous_update=False, critic_lr=1e-2)
    for a, b in zip(simultaneous, frozen_critic):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(simultaneous, sequential))


def _one_thread(agent: SAC) -> SAC:
    """What a CUDA device or critic dropout gets: both passes on the caller."""
    agent._wants_critic_process, agent._critic_worker = False, None
    return agent


def _assert_same_state(state_a: dict, state_b: dict) -> None:
    for key in ("actor", "critic", "critic_target"):
        for name, value in state_a[key].items():
            assert torch.equal(value, state_b[key][name]), f"{key}.{name}"
    assert torch.equal(state_a["log_alpha"], state_b["log_alpha"])
    assert state_a["critic_opt"]["state"].keys() == state_b["critic_opt"]["state"].keys()
    for index, moments in state_a["critic_opt"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(value, state_b["critic_opt"]["state"][index][name]), f"critic_opt.{index}.{name}"


@pytest.mark.parametrize(
    "overrides",
    [{}, {"autotune_alpha": False}, {"actor_update_every": 2, "n_critics": 5, "n_target_critics": 2}],
    ids=["default", "fixed-alpha", "redq-delayed-actor"],
)
def test_the_critic_process_and_thread_give_the_same_result_as_one_thread(overrides):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same intra-op threads on every side, so the sums run in the same order
    try:
        runs = {}
        for mode in ("process", "thread", "one thread"):
            agent = _agent(parallel_update="thread" if mode == "thread" else "process", **overrides)
            assert agent.two_threads
            if mode == "one thread":
                _one_thread(agent)
            torch.manual_seed(2)
            infos = [agent.update(_batch(n=16, seed=seed)) for seed in range(5)]
            assert (agent._critic_process is not None) == (mode == "process")
            runs[mode] = (infos, agent.state_dict())
    finally:
        torch.set_num_threads(threads)
    for mode in ("process", "thread"):
        assert runs[mode][0] == runs["one thread"][0], mode
        _assert_same_state(runs[mode][1], runs["one thread"][1])
    assert (agent.alpha != 1.0) == overrides.get("autotune_alpha", True)
    assert agent.updates == 5


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("parallel_update", ["process", "thread"])
def test_a_failing_actor_pass_leaves_no_step_and_no_running_worker(monkeypatch, parallel_update, error):
    agent = _agent(parallel_update=parallel_update)
    critic_before = [p.detach().clone() for p in agent.critic.parameters()]
    actor_loss = agent._actor_loss

    def fail(*args):
        raise error("actor pass failed")

    monkeypatch.setattr(agent, "_actor_loss", fail)
    with pytest.raises(error, match="actor pass failed"):
        agent.update(_batch())
    assert agent.updates == 0
    assert all(torch.equal(a, b) for a, b in zip(critic_before, agent.critic.parameters()))
    if parallel_update == "thread":
        # The critic pass on the worker finished (its gradients are there) and took no step.
        assert all(p.grad is not None for p in agent.critic.parameters())
    # Nothing is left waiting: the next update runs, and steps the critics.
    monkeypatch.setattr(agent, "_actor_loss", actor_loss)
    agent.update(_batch())
    assert agent.updates == 1
    assert not any(torch.equal(a, b) for a, b in zip(critic_before, agent.critic.parameters()))


def test_an_error_in_the_critic_process_reaches_the_caller_with_its_traceback(monkeypatch):
    agent = _agent(n_critics=5, n_target_critics=2)
    agent.update(_batch())
    critic_before = [p.detach().clone() for p in agent.critic.parameters()]
    monkeypatch.setattr(agent, "_target_members", lambda: torch.tensor([0, 7]))  # no critic 7 of 5
    with pytest.raises(CriticProcessError, match=r"failed in update 2:\n(.|\n)*IndexError"):
        agent.update(_batch())
    assert agent.updates == 1
    assert all(torch.equal(a, b) for a, b in zip(critic_before, agent.critic.parameters()))
    # The process serves the next update.
    monkeypatch.undo()
    agent.update(_batch())
    assert agent.updates == 2


def test_a_critic_process_that_dies_is_reported_and_replaced():
    agent = _agent()
    agent.update(_batch())
    agent.settle()
    first = agent._critic_process
    os.kill(first._process.pid, signal.SIGKILL)
    first._process.join(timeout=10)
    # Killed during an update: the caller's wait ends in an error, not a hang.
    next_noise, members, _ = agent._draws(4, True)
    batch = _batch()
    first.submit(batch, batch.obs, batch.next_obs, batch.next_obs, torch.tensor(1.0), next_noise, members)
    with pytest.raises(CriticProcessError, match=r"\(pid \d+\) exited with code -9 during update 2"):
        first.losses()
    # Found dead at the next update: replaced, with a warning.
    with pytest.warns(RuntimeWarning, match="the critic process had exited with code -9; starting another"):
        agent.update(_batch())
    assert agent._critic_process is not first and agent._critic_process.alive
    assert agent.updates == 2


def test_a_failure_after_the_critic_loss_is_published_is_raised_by_the_next_settle():
    agent = _agent()
    agent.update(_batch())
    agent.settle()
    process = agent._critic_process
    next_noise, members, _ = agent._draws(4, True)
    batch = _batch()
    process.submit(batch, batch.obs, batch.next_obs, batch.next_obs, torch.tensor(1.0), next_noise, members)
    loss, _ = process.losses()  # published; the child goes on to its backward pass, then waits for the release
    assert torch.isfinite(loss)
    os.kill(process._process.pid, signal.SIGKILL)
    # The next reader of the critics (here a checkpoint) hears of it.
    with pytest.raises(CriticProcessError, match=r"\(pid \d+\) exited with code -9 during update 2"):
        agent.state_dict()


def test_close_stops_the_critic_process_and_the_next_update_starts_another():
    agent = _agent()
    agent.update(_batch())
    first = agent._critic_process
    agent.close()
    assert agent._critic_process is None and not first.alive and first.exitcode == 0
    agent.update(_batch())
    assert agent._critic_process.alive and agent.updates == 2


def test_a_loaded_state_continues_in_the_critic_process_as_it_would_have():
    def trained(updates: int, **overrides) -> SAC:
        agent = _agent(**overrides)
        torch.manual_seed(5)
        for seed in range(updates):
            agent.update(_batch(n=16, seed=seed))
        return agent

    def three_more(agent: SAC) -> dict:
        torch.manual_seed(6)
        for seed in range(3, 6):
            agent.update(_batch(n=16, seed=seed))
        return agent.state_dict()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = trained(1)  # its child holds optimizer state that loading replaces
        resumed.load_state_dict(trained(3).state_dict())
        reference = _one_thread(trained(3))
        _assert_same_state(three_more(resumed), three_more(reference))
    finally:
        torch.set_num_threads(threads)


def test_a_failing_next_action_sample_does_not_leave_the_worker_thread_waiting(monkeypatch):
    import threading
    from concurrent.futures import Future

    from robot_sac import sac

    handoffs = []

    class RecordedFuture(Future):
        def __init__(self):
            super().__init__()
            handoffs.append(self)

    monkeypatch.setattr(sac, "Future", RecordedFuture)
    agent = _agent(parallel_update="thread")
    assert agent.two_threads
    sample = agent.actor.sample
    outcome = {}

    def fail(*args):
        raise RuntimeError("sampling failed")

    def two_updates():
        agent.actor.sample = fail
        try:
            agent.update(_batch())
        except RuntimeError as exc:
            outcome["error"] = str(exc)
        agent.actor.sample = sample
        agent.update(_batch())
        outcome["second"] = agent.updates

    # A worker left waiting for the next actions would block these updates forever: bound them.
    thread = threading.Thread(target=two_updates, daemon=True)
    thread.start()
    thread.join(timeout=60)
    stuck = [f for f in handoffs if not f.done()]
    for future in stuck:  # so that a failure here reports instead of hanging the interpreter's exit
        future.set_exception(RuntimeError("released by the test"))
    assert not thread.is_alive() and not stuck, "the critic worker is stuck"
    assert outcome == {"error": "sampling failed", "second": 1}


def test_default_threads_are_split_between_the_two_passes(monkeypatch):
    from robot_sac import sac

    threads = torch.get_num_threads()
    monkeypatch.setattr(sac, "_DEFAULT_TORCH_THREADS", 6)
    try:
        assert sac.configure_torch_threads(0, two_threads=True) == 3 == torch.get_num_threads()
        assert sac.configure_torch_threads(0, two_threads=False) == 6 == torch.get_num_threads()
        assert sac.configure_torch_threads(2, two_threads=True) == 2 == torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)


def test_observation_normalizer_matches_numpy_statistics():
    from robot_sac.networks import ObservationNormalizer

    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(500, 4))
    norm = ObservationNormalizer(4)
    for chunk in np.array_split(data, 7):
        norm.update(torch.as_tensor(chunk))
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-10)
    np.testing.assert_allclose(norm.var.numpy(), data.var(0), rtol=1e-10)
    out = norm(torch.as_tensor(data[:3], dtype=torch.float32))
    expected = (data[:3] - data.mean(0)) / np.sqrt(data.var(0) + 1e-8)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_observation_normalizer_one_row_at_a_time_as_the_trainer_merges():
    from robot_sac.networks import ObservationNormalizer

    rng = np.random.default_rng(1)
    data = rng.normal(-2.0, 5.0, size=(300, 3)).astype(np.float32)
    norm = ObservationNormalizer(3)
    for row in data:
        norm.update(row)
    np.testing.assert_allclose(norm.mean.numpy(), data.astype(np.float64).mean(0), rtol=1e-10)
    np.testing.assert_allclose(norm.var.numpy(), data.astype(np.float64).var(0), rtol=1e-10)
    assert norm.count.item() == 300 and norm.mean.dtype == torch.float64
    np.testing.assert_array_equal(norm.inv_scale.numpy(), (1.0 / np.sqrt(norm.var.numpy() + 1e-8)).astype(np.float32))
    with pytest.raises(ValueError, match="3 values expected, got shape \\(4,\\)"):
        norm.update(np.zeros(4))
    # A bfloat16 tensor (what an autocast region holds) and an empty batch are taken too.
    before = norm.mean.clone()
    norm.update(torch.zeros(0, 3, dtype=torch.bfloat16))
    assert torch.equal(norm.mean, before) and norm.count.item() == 300
    norm.update(torch.ones(1, 3, dtype=torch.bfloat16))
    assert norm.count.item() == 301


def test_bfloat16_matmuls_keep_float32_losses_and_weights():
    agent = _agent(matmul_dtype="bfloat16")
    info = agent.update(_batch(n=16))
    assert all(np.isfinite(v) for v in info.values())
    assert all(p.dtype == torch.float32 for p in agent.critic.parameters())
    _, log_prob = agent.actor.sample(torch.randn(4, 3))
    assert log_prob.dtype == torch.float32


def test_bfloat16_critic_values_keep_float32_resolution():
    # A bfloat16 output layer would round Q ~ 300 to steps of 2; the float32 head keeps small TD errors.
    torch.manual_seed(0)
    critic = CriticEnsemble(3, 2, (32, 32), ensemble=2)
    with torch.no_grad():
        critic.head.bias.fill_(300.0)
    obs, act = torch.randn(64, 3), torch.rand(64, 2) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q_low = critic(obs, act)
    q_full = critic(obs, act)
    assert q_low.dtype == torch.float32
    assert len(torch.unique(q_low)) > 100  # not collapsed onto bfloat16's grid of step 2 around 300
    torch.testing.assert_close(q_low, q_full, atol=0.05, rtol=0)


def test_checkpoints_with_a_separate_temperature_optimizer_still_load():
    agent = _agent()
    for seed in range(3):
        agent.update(_batch(n=16, seed=seed))
    state = agent.state_dict()
    # The layout written before the actor and the temperature shared one optimizer.
    joint = state["actor_opt"]
    n_actor = len(joint["param_groups"][0]["params"])
    legacy = dict(state)
    legacy["actor_opt"] = {"state": {i: joint["state"][i] for i in range(n_actor)},
                           "param_groups": [joint["param_groups"][0]]}
    legacy["alpha_opt"] = {"state": {0: joint["state"][n_actor]},
                           "param_groups": [{**joint["param_groups"][1], "params": [0]}]}
    restored = _agent()
    restored.load_state_dict(legacy)
    torch.testing.assert_close(restored.actor_opt.state_dict(), joint)


def test_critic_checkpoints_with_the_output_layer_inside_net_still_load():
    torch.manual_seed(0)
    critic = CriticEnsemble(4, 2, (16, 16), ensemble=2)
    legacy = {k.replace("head.", f"net.{len(critic.net)}."): v for k, v in critic.state_dict().items()}
    restored = CriticEnsemble(4, 2, (16, 16), ensemble=2)
    restored.load_state_dict(legacy)
    obs, act = torch.randn(8, 4), torch.randn(8, 2)
    torch.testing.assert_close(restored(obs, act), critic(obs, act))


def test_auto_precision_follows_native_bfloat16_support(monkeypatch):
    from robot_sac.sac import resolve_matmul_dtype

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_matmul_dtype("auto", cpu) == torch.bfloat16
    assert resolve_matmul_dtype("float32", cpu) == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert resolve_matmul_dtype("auto", cpu) == torch.float32
    assert resolve_matmul_dtype("bfloat16", cpu) == torch.bfloat16


def test_device_selection_is_automatic_and_explicit_cuda_fails_clearly(monkeypatch):
    from robot_sac.sac import select_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="'cuda' requested but CUDA is not available"):
        select_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")


def test_the_workers_wait_outlasts_its_polling_interval():
    import threading
    from concurrent.futures import Future

    from robot_sac.sac import _await

    future = Future()
    timer = threading.Timer(0.35, future.set_result, args=("the next actions",))  # three 0.1 s polls time out
    timer.start()
    try:
        assert _await(future) == "the next actions"
    finally:
        timer.cancel()


def test_the_critics_read_right_after_an_update_are_the_stepped_ones():
    # The critic process may still be stepping when update() returns; reading the critics waits for it. Networks
    # of full size, so that the step takes long enough to be caught unfinished.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        in_process, reference = (SAC(3, 2, SACConfig(batch_size=64)) for _ in range(2))
        reference.load_state_dict(in_process.state_dict())
        _one_thread(reference)
        caught_stepping = 0
        for seed in range(16):
            for agent in (reference, in_process):
                torch.manual_seed(seed)
                agent.update(_batch(n=64, seed=seed))
            process = in_process._critic_process
            caught_stepping += int(process._flags[_DONE]) != process.update
            targets = [p.clone() for p in in_process.critic_target.parameters()]
            assert all(torch.equal(a, b) for a, b in zip(targets, reference.critic_target.parameters()))
    finally:
        torch.set_num_threads(threads)
    # Otherwise the reads above tested nothing: the child had always finished before them.
    assert caught_stepping > 0


UNGUARDED_SCRIPT = """
import sys
import torch
from robot_sac.replay import Batch
from robot_sac.sac import SAC, SACConfig

print("top level", flush=True)
agent = SAC(obs_dim=3, act_dim=2, cfg=SACConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), batch_size=4))
g = torch.Generator().manual_seed(0)
for _ in range(3):
    agent.update(Batch(obs=torch.randn(4, 3, generator=g), action=torch.rand(4, 2, generator=g) * 2 - 1,
                       reward=torch.randn(4, generator=g), next_obs=torch.randn(4, 3, generator=g),
                       terminated=torch.zeros(4)))
agent.settle()
print("updates", agent.updates, "in a child process", agent._critic_process is not None, flush=True)
"""


@pytest.mark.parametrize("how", ["path", "module"])
def test_a_script_without_a_main_guard_runs_once_beside_the_critic_process(tmp_path, how):
    """The critic process does not run the parent's main module: an unguarded script (which would open its robot's
    port a second time in a child that did) trains, and its top level runs once."""
    import subprocess
    import sys

    (tmp_path / "unguarded_train.py").write_text(UNGUARDED_SCRIPT)
    target = ["unguarded_train.py"] if how == "path" else ["-m", "unguarded_train"]
    done = subprocess.run(
        [sys.executable, *target], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["top level", "updates 3 in a child process True"]


def test_only_the_critic_process_start_leaves_the_main_module_out(monkeypatch):
    """Another thread starting a process meanwhile (a robustness pool, say) still gets the main module."""
    import threading
    from multiprocessing import spawn

    from robot_sac.child_processes import without_main_module

    original = spawn.get_preparation_data
    monkeypatch.setattr(spawn, "get_preparation_data", lambda name: {"init_main_from_path": "/x/train.py", "n": name})
    patched = spawn.get_preparation_data
    seen = {}
    with without_main_module():
        seen["here"] = spawn.get_preparation_data("a")
        other = threading.Thread(target=lambda: seen.update(there=spawn.get_preparation_data("b")))
        other.start()
        other.join()
    assert seen == {"here": {"n": "a"}, "there": {"init_main_from_path": "/x/train.py", "n": "b"}}
    assert spawn.get_preparation_data is patched
    monkeypatch.undo()
    assert spawn.get_preparation_data is original
