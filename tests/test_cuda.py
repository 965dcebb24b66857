"""The CUDA path: the same update as on the CPU, and runs that move between a GPU machine and a CPU-only one.

Skipped where CUDA is absent (CI here); the rest of the suite also runs on CUDA there, since runs default to
``device: auto``.
"""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from robot_sac.config import TrainConfig
from robot_sac.export import export_run
from robot_sac.replay import Batch
from robot_sac.sac import SAC, SACConfig
from robot_sac.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

OBS_DIM, ACT_DIM, BATCH = 11, 3, 64


def _batch(seed: int, privileged_dim: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    batch = Batch(
        obs=torch.randn(BATCH, OBS_DIM, generator=g),
        action=torch.rand(BATCH, ACT_DIM, generator=g) * 2 - 1,
        reward=torch.randn(BATCH, generator=g),
        next_obs=torch.randn(BATCH, OBS_DIM, generator=g),
        terminated=(torch.rand(BATCH, generator=g) < 0.2).float(),
    )
    if privileged_dim:
        batch.privileged = torch.randn(BATCH, privileged_dim, generator=g) * 2 + 1
        batch.next_privileged = torch.randn(BATCH, privileged_dim, generator=g) * 2 + 1
    return batch


def _to(batch: Batch, device: str) -> Batch:
    return Batch(**{f.name: None if getattr(batch, f.name) is None else getattr(batch, f.name).to(device)
                    for f in dataclasses.fields(batch)})  # fmt: skip


def _seeded_draws(monkeypatch):
    """torch.randn / randn_like drawn on the CPU from one generator, then moved: the same noise on both devices."""
    generator = torch.Generator()
    randn = torch.randn

    def fake_randn(*size, device=None, dtype=None, **kw):
        return randn(*size, generator=generator, dtype=dtype).to(device)

    def fake_randn_like(t, **kw):
        return randn(t.shape, generator=generator, dtype=t.dtype).to(t.device)

    monkeypatch.setattr(torch, "randn", fake_randn)
    monkeypatch.setattr(torch, "randn_like", fake_randn_like)
    return generator


def _grads(agent: SAC) -> dict[str, torch.Tensor]:
    named = [*(("actor." + n, p) for n, p in agent.actor.named_parameters()),
             *(("critic." + n, p) for n, p in agent.critic.named_parameters()), ("log_alpha", agent.log_alpha)]
    return {name: p.grad.detach().cpu() for name, p in named}


@pytest.mark.parametrize("simultaneous", [True, False])
def test_one_update_on_cuda_computes_what_the_cpu_computes(monkeypatch, simultaneous):
    cfg = SACConfig(batch_size=BATCH, matmul_dtype="float32", simultaneous_update=simultaneous,
                    normalize_observations=True)
    torch.manual_seed(0)
    cpu = SAC(OBS_DIM, ACT_DIM, cfg, "cpu")
    cpu.normalizer.update(torch.randn(500, OBS_DIM) * 3 + 1)
    gpu = SAC(OBS_DIM, ACT_DIM, cfg, "cuda")
    gpu.load_state_dict(cpu.state_dict())
    assert gpu.matmul_dtype == torch.float32 and next(gpu.critic.parameters()).is_cuda

    batch = _batch(1)
    generator = _seeded_draws(monkeypatch)
    generator.manual_seed(7)
    cpu_info = cpu.update(batch)
    generator.manual_seed(7)
    gpu_info = gpu.update(_to(batch, "cuda"))

    assert gpu_info.keys() == cpu_info.keys()
    for key in cpu_info:
        assert gpu_info[key] == pytest.approx(cpu_info[key], rel=1e-4, abs=1e-6), key
    cpu_grads, gpu_grads = _grads(cpu), _grads(gpu)
    for name in cpu_grads:
        torch.testing.assert_close(gpu_grads[name], cpu_grads[name], rtol=1e-3, atol=1e-6, msg=name)


def test_auto_precision_on_cuda_is_bfloat16_where_the_gpu_has_it_and_stays_close_to_float32(monkeypatch):
    torch.manual_seed(0)
    reference = SAC(OBS_DIM, ACT_DIM, SACConfig(batch_size=BATCH, matmul_dtype="float32"), "cuda")
    auto = SAC(OBS_DIM, ACT_DIM, SACConfig(batch_size=BATCH, matmul_dtype="auto"), "cuda")
    auto.load_state_dict(reference.state_dict())
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    assert auto.matmul_dtype == expected

    batch = _to(_batch(2), "cuda")
    generator = _seeded_draws(monkeypatch)
    generator.manual_seed(3)
    ref_info = reference.update(batch)
    generator.manual_seed(3)
    auto_info = auto.update(batch)
    # Hidden layers in bfloat16 (8 bits of mantissa), output layers and losses in float32.
    for key in ("losses/critic", "losses/actor", "losses/q_mean", "charts/entropy"):
        assert auto_info[key] == pytest.approx(ref_info[key], rel=0.03, abs=0.02), key


@pytest.mark.parametrize(
    "sac_kw",
    [
        {},
        {"simultaneous_update": False, "actor_update_every": 2, "actor_average_tau": 0.05},
        {"n_critics": 5, "n_target_critics": 2, "matmul_dtype": "float32"},  # REDQ: a random subset per update
        {"critic_dropout": 0.01, "critic_layer_norm": True},  # DroQ: dropout draws inside the graph
        {"privileged_critic": True},  # the privileged observations staged too, and their statistics read in place
    ],
    ids=["default", "sequential-delayed-actor-averaged", "redq", "droq", "privileged"],
)
def test_graphed_updates_follow_the_eager_ones(sac_kw):
    cfg = SACConfig(batch_size=BATCH, normalize_observations=True, **sac_kw)
    privileged_dim = 5 if cfg.privileged_critic else 0
    torch.manual_seed(0)
    eager = SAC(OBS_DIM, ACT_DIM, dataclasses.replace(cfg, cuda_graphs=False), "cuda", privileged_dim)
    graphed = SAC(OBS_DIM, ACT_DIM, cfg, "cuda", privileged_dim)
    graphed.load_state_dict(eager.state_dict())
    assert graphed._graphed is not None and eager._graphed is None

    batches = [_to(_batch(10 + i, privileged_dim), "cuda") for i in range(12)]
    runs = {}
    for name, agent in (("eager", eager), ("graphed", graphed)):
        torch.manual_seed(1)
        infos = []
        for i, batch in enumerate(batches):
            # The statistics change between updates, as in training: the graphs must see the new ones.
            agent.normalizer.update(batch.next_obs[: 8 + i])
            if privileged_dim:
                agent.privileged_normalizer.update(batch.next_privileged[: 8 + i])
            infos.append(agent.update(batch))
        runs[name] = infos
    assert len(graphed._graphed.graphs) == len({(i + 1) % cfg.actor_update_every == 0 for i in range(12)})

    # With dropout the two runs draw their masks in another order (the graphs draw the noise up front).
    exact = cfg.critic_dropout == 0
    for step, (e, g) in enumerate(zip(runs["eager"], runs["graphed"])):
        assert e.keys() == g.keys()
        for key in e:
            if exact:
                assert g[key] == pytest.approx(e[key], rel=1e-5, abs=1e-6), (step, key)
            else:
                assert np.isfinite(g[key]), (step, key)
    if exact:
        for name in ("actor", "critic", "critic_target", *(("actor_average",) if cfg.actor_average_tau else ())):
            a, b = getattr(eager, name).state_dict(), getattr(graphed, name).state_dict()
            for key in a:
                torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6, msg=f"{name}.{key}")


def _philox_offset() -> int:
    return int(torch.cuda.get_rng_state().view(torch.int64)[1])


def test_a_replayed_droq_update_draws_fresh_dropout_masks_as_an_eager_one_does():
    cfg = SACConfig(batch_size=BATCH, critic_dropout=0.01, critic_layer_norm=True)
    torch.manual_seed(0)
    eager = SAC(OBS_DIM, ACT_DIM, dataclasses.replace(cfg, cuda_graphs=False), "cuda")
    graphed = SAC(OBS_DIM, ACT_DIM, cfg, "cuda")
    plain = SAC(OBS_DIM, ACT_DIM, dataclasses.replace(cfg, critic_dropout=0.0), "cuda")
    batch = _to(_batch(20), "cuda")
    advances = {}
    for name, agent in (("eager", eager), ("graphed", graphed), ("plain", plain)):
        for _ in range(5):  # past the eager updates: the graphed agent replays from here on
            agent.update(batch)
        before = _philox_offset()
        agent.update(batch)
        advances[name] = _philox_offset() - before
    assert graphed._graphed.graphs
    # A replay moves the generator on by the dropout draws too, as an eager update does: the masks are new
    # each time, not the ones of the capture.
    assert advances["graphed"] == advances["eager"] > advances["plain"] > 0, advances


def test_a_checkpoint_loaded_into_a_graphed_agent_is_the_one_it_steps():
    cfg = SACConfig(batch_size=BATCH, matmul_dtype="float32")
    torch.manual_seed(0)
    agent = SAC(OBS_DIM, ACT_DIM, cfg, "cuda")
    for i in range(6):
        agent.update(_to(_batch(30 + i), "cuda"))  # three eager updates, then graphs
    assert agent._graphed.graphs
    torch.manual_seed(1)
    other = SAC(OBS_DIM, ACT_DIM, dataclasses.replace(cfg, cuda_graphs=False), "cuda")
    for i in range(2):
        other.update(_to(_batch(40 + i), "cuda"))
    # Other weights (copied into the same tensors) and other optimizer state (new tensors, which graphs
    # captured before would not see).
    agent.load_state_dict(copy.deepcopy(other.state_dict()))  # as from a file: tensors of its own

    # Three eager updates and the capture of a new graph, which must step the loaded state.
    for i in range(5):
        batch = _to(_batch(50 + i), "cuda")
        torch.manual_seed(5 + i)
        a = agent.update(batch)
        torch.manual_seed(5 + i)
        b = other.update(batch)
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (i, key)
    assert agent._graphed.graphs
    for key, value in other.actor.state_dict().items():
        torch.testing.assert_close(agent.actor.state_dict()[key], value, rtol=1e-5, atol=1e-7)


def _cfg(**kw) -> TrainConfig:
    base = dict(
        env="Pendulum-v1", total_steps=400, seed=4, learning_starts=200, buffer_size=2_000, eval_interval=200,
        eval_episodes=1, checkpoint_interval=200, log_interval=100, torch_threads=1,
        sac=SACConfig(batch_size=32, actor_hidden=(32, 32), critic_hidden=(32, 32), normalize_observations=True),
    )
    base.update(kw)
    return TrainConfig(**base)


def test_a_run_trained_on_cuda_resumes_and_exports_on_a_machine_without_it(tmp_path, monkeypatch):
    run = tmp_path / "run"
    trainer = Trainer(_cfg(), run, show_progress=False)
    trained = trainer.train(until=300)
    assert trainer.device.type == "cuda" and trainer.buffer.sample(np.random.default_rng(0), 8).obs.is_cuda
    assert trained["device"].startswith("cuda")
    actor_on_gpu = {k: v.cpu() for k, v in trainer.agent.actor.state_dict().items()}
    del trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    exported = export_run(run, checkpoint="last")  # written on the GPU at step 300
    assert exported.data and exported.contract.policy_version == 300
    assert max(exported.max_abs_diff.values()) < 1e-4

    resumed = Trainer.resume(run, show_progress=False)
    assert resumed.device.type == "cpu" and resumed.step == 300
    for key, value in resumed.agent.actor.state_dict().items():
        assert not value.is_cuda
        torch.testing.assert_close(value, actor_on_gpu[key], rtol=0, atol=0)
    summary = resumed.train()
    assert summary["device"] == "cpu" and resumed.agent.updates == 400 - 200


def test_a_resumed_cuda_run_equals_an_uninterrupted_one(tmp_path):
    # The resumed run's first three updates are eager where the straight run's replay a graph: this holds as long
    # as both run the same kernels, as they did on an H100.
    straight = Trainer(_cfg(), tmp_path / "a", show_progress=False)
    straight.train()
    first = Trainer(_cfg(), tmp_path / "b", show_progress=False)
    first.train(until=260)  # inside the second 200-step episode, 60 updates in
    del first
    resumed = Trainer.resume(tmp_path / "b", show_progress=False)
    assert resumed.device.type == "cuda" and resumed.step == 260 and resumed.agent.updates == 60
    resumed.train()

    for name in ("actor", "critic", "critic_target"):
        a, b = getattr(straight.agent, name).state_dict(), getattr(resumed.agent, name).state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resume"
    assert straight.episode_returns == resumed.episode_returns
