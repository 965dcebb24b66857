"""Soft Actor-Critic (Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018).

One ``update(batch)``: critic target, critic, actor and temperature gradients, their steps, Polyak averaging.
The caller samples, logs and checkpoints.
"""

from __future__ import annotations

import copy
import platform
import warnings
import weakref
from concurrent.futures import Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial
from typing import Callable, Literal

import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from robot_sac.critic_process import CriticProcess
from robot_sac.cuda_graphs import GraphedUpdate
from robot_sac.networks import Actor, CriticEnsemble, ObservationNormalizer
from robot_sac.replay import Batch


@dataclass
class SACConfig:
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak averaging rate of the target critics."""
    actor_average_tau: float = 0.0
    """Polyak averaging rate of a copy of the actor, stepped after each actor update; deterministic actions
    (evaluation, ``best.pt``, export, the learner's pushes) come from that copy. A policy's success can swing from
    one evaluation to the next while the critics chase it; an average over the last ~1/tau updates can move less
    (Nikishin et al., "Improving Stability in Deep Reinforcement Learning with Weight Averaging", 2018); on the
    quadruped at 5e-4 it did not (docs/learning.md, "A Polyak-averaged actor"). It starts at the initial actor,
    whose weight in it has decayed to (1 - tau)^n after n actor steps (e^-5 at n = 5/tau). 0: off, the actor as
    trained."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics."""
    alpha_lr: float = 3e-4
    """Adam learning rate of log(temperature)."""
    batch_size: int = 256
    """Transitions per gradient update, sampled uniformly from the replay buffer."""
    actor_hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor (ReLU between them)."""
    critic_hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of each critic."""
    n_critics: int = 2
    """Critics in the fused ensemble; the target takes the minimum over ``n_target_critics`` of them."""
    n_target_critics: int = 2
    """REDQ draws this many ensemble members per update for the min in the target (2 = clipped double Q)."""
    critic_dropout: float = 0.0
    """DroQ's dropout rate in the critics (0.01 in the paper); 0 turns it off."""
    critic_layer_norm: bool = False
    """Layer norm after each critic hidden layer (DroQ)."""
    simultaneous_update: bool = True
    """Compute the critic, actor and temperature gradients from the same pre-update networks, as the original
    implementation's single training step does; on CPU without critic dropout the critic's and the actor's
    passes then run at once (``parallel_update``). False: the actor's gradient goes through the just-updated
    critics (SB3's order)."""
    parallel_update: Literal["process", "thread"] = "process"
    """Where the critics' pass runs while this thread runs the actor's, when the two run at once: a child process
    (the networks in shared memory; two threads of one interpreter slow each other down), or a second thread.
    Results are the same either way. Unlike a usual ``spawn`` or ``forkserver`` child, the critic process does not
    run the main script, so a script needs no ``if __name__ == "__main__":`` guard for it (and a config subclass
    defined in the script cannot reach it: use the thread). It takes the critic optimizer's settings and this
    config when it starts. A daemonic process (which may not start
    children), a platform without ``forkserver`` (Windows) or a CPU other than x86-64 uses the thread."""
    utd: int = 1
    """Update-to-data ratio: gradient updates per environment step."""
    actor_update_every: int = 1
    """Update the actor and temperature on every k-th critic update (high-UTD setups use k > 1)."""
    autotune_alpha: bool = True
    """Learn the temperature toward ``target_entropy``; when false, ``alpha`` stays fixed."""
    alpha: float = 1.0
    """Initial (or fixed) temperature."""
    target_entropy: float | None = None
    """Entropy target for the temperature; None means -|A|."""
    normalize_observations: bool = False
    """Keep running observation statistics and feed normalized observations to every network."""
    privileged_critic: bool = False
    """Asymmetric actor-critic: the critics also see the simulator's privileged observation (``sim.privileged``:
    the true state, including what no sensor reads, and the episode's drawn dynamics); the actor, and with it
    every exported policy, sees the observation only. Robot tasks only; a learner cannot continue such a run on
    a robot's transitions, which carry no privileged observation."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this before they enter the critic target."""
    cuda_graphs: bool = True
    """On CUDA, replay each update from a CUDA graph captured after a few eager ones. At these network sizes an
    update is a few hundred small kernels, and launching them costs several times what they compute."""
    matmul_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Precision of the hidden layers' matrix products during updates (autocast); weights, output layers and
    losses stay float32. ``auto`` picks bfloat16 where the hardware computes it natively (CPUs with
    AVX512-BF16, CUDA GPUs with bf16), float32 elsewhere."""


def select_device(requested: str = "auto") -> torch.device:
    """CUDA when present and asked for (or ``auto``), CPU otherwise."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available")
    return device


# Before anything here changes it: OMP_NUM_THREADS, or the physical cores.
_DEFAULT_TORCH_THREADS = torch.get_num_threads()


def configure_torch_threads(requested: int, two_threads: bool) -> int:
    """Set torch's intra-op threads per pass and return the count: ``requested``, or for 0 torch's default,
    split between the two passes when the update runs them on two threads (``SAC.two_threads``)."""
    if requested > 0:
        threads = requested
    else:
        threads = max(1, _DEFAULT_TORCH_THREADS // 2) if two_threads else _DEFAULT_TORCH_THREADS
    torch.set_num_threads(threads)
    return threads


def resolve_matmul_dtype(requested: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for ``matmul_dtype`` on ``device``."""
    if requested == "float32":
        return torch.float32
    if requested == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        # Without AVX512-BF16, oneDNN emulates bfloat16 and runs slower than float32.
        native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return torch.bfloat16 if native else torch.float32


class SAC:
    def __init__(
        self, obs_dim: int, act_dim: int, cfg: SACConfig, device: torch.device | str = "cpu", privileged_dim: int = 0
    ):
        """``privileged_dim``: the width of the privileged observation the critics see with ``privileged_critic``
        (and must be given then); batches carry it in ``privileged`` and ``next_privileged``."""
        if cfg.n_target_critics > cfg.n_critics:
            raise ValueError(f"n_target_critics={cfg.n_target_critics} exceeds n_critics={cfg.n_critics}")
        if cfg.privileged_critic != (privileged_dim > 0):
            raise ValueError(
                f"privileged_critic={cfg.privileged_critic} with a privileged observation of {privileged_dim} values"
            )
        self.cfg = cfg
        self.device = torch.device(device)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.matmul_dtype = resolve_matmul_dtype(cfg.matmul_dtype, self.device)
        self.normalizer = ObservationNormalizer(obs_dim, enabled=cfg.normalize_observations).to(self.device)
        self.privileged_dim = privileged_dim
        self.privileged_normalizer = ObservationNormalizer(privileged_dim, enabled=cfg.normalize_observations).to(
            self.device
        )
        self.actor = Actor(obs_dim, act_dim, cfg.actor_hidden).to(self.device)
        if not 0.0 <= cfg.actor_average_tau <= 1.0:
            raise ValueError(f"actor_average_tau={cfg.actor_average_tau} is not in [0, 1]")
        self.actor_average: Actor | None = None
        if cfg.actor_average_tau > 0:
            self.actor_average = copy.deepcopy(self.actor).requires_grad_(False)
        critic_in = obs_dim + privileged_dim
        critic_args = (critic_in, act_dim, cfg.critic_hidden, cfg.n_critics, cfg.critic_dropout, cfg.critic_layer_norm)
        self._critic = CriticEnsemble(*critic_args).to(self.device)
        self._critic_target = CriticEnsemble(*critic_args).to(self.device)
        self._critic_target.load_state_dict(self._critic.state_dict())
        self._critic_target.requires_grad_(False)
        self.log_alpha = torch.tensor(float(np.log(cfg.alpha)), device=self.device, requires_grad=True)
        self.target_entropy = float(-act_dim if cfg.target_entropy is None else cfg.target_entropy)
        fused = self.device.type in ("cpu", "cuda")
        graphs = cfg.cuda_graphs and self.device.type == "cuda"
        self._critic_opt = torch.optim.Adam(self._critic.parameters(), lr=cfg.critic_lr, fused=fused, capturable=graphs)
        # The actor and the temperature step together: their losses share no parameters, so one optimizer
        # step (one fused kernel) over both equals two separate steps, at half the Python overhead.
        self.actor_opt = torch.optim.Adam(
            [{"params": self.actor.parameters(), "lr": cfg.actor_lr}, {"params": [self.log_alpha], "lr": cfg.alpha_lr}],
            fused=fused,
            capturable=graphs,
        )
        self._critic_params = list(self._critic.parameters())
        self._target_params = list(self._critic_target.parameters())
        self._actor_and_alpha = [*self.actor.parameters(), self.log_alpha]
        self._actor_params = list(self.actor.parameters())
        self._average_params = list(self.actor_average.parameters()) if self.actor_average is not None else []
        # Dropout draws from torch's global generator, so with it the two passes keep one thread and a
        # fixed order; results do not depend on which thread ran what.
        self.two_threads = cfg.simultaneous_update and self.device.type == "cpu" and cfg.critic_dropout == 0
        in_process = (
            self.two_threads
            and cfg.parallel_update == "process"
            and not mp.current_process().daemon
            and "forkserver" in mp.get_all_start_methods()
            # The hand-offs are plain stores to shared memory, ordered as written only on x86's memory model.
            and platform.machine().lower() in ("x86_64", "amd64")
        )
        self._critic_worker = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="sac-critic")
            if self.two_threads and not in_process
            else None
        )
        # Started at the first update that needs it, so that an agent only loaded for acting starts no process.
        self._critic_process: CriticProcess | None = None
        self._stop_critic_process: weakref.finalize | None = None
        self._wants_critic_process = in_process
        self._graphed = GraphedUpdate(self) if graphs else None
        self.updates = 0

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    @property
    def critic(self) -> CriticEnsemble:
        """The critics, once any step the critic process is still taking is done."""
        self.settle()
        return self._critic

    @property
    def critic_target(self) -> CriticEnsemble:
        """The target critics, once any step the critic process is still taking is done."""
        self.settle()
        return self._critic_target

    @property
    def critic_opt(self) -> torch.optim.Optimizer:
        """The critics' optimizer, once any step the critic process is still taking is done."""
        self.settle()
        return self._critic_opt

    def settle(self) -> None:
        """Wait for the critic process to finish the critics' step of the last update: ``update`` returns before
        it does, so that the step overlaps acting and the environment's step. Raises an error the child met. A
        reference to the critics kept from before an update does not wait: read them through these properties."""
        if self._critic_process is not None:
            self._critic_process.settle()

    def close(self) -> None:
        """Stop the critic process, if there is one, once its step is done; the next update starts another.
        (Garbage collection of the agent stops it too.)"""
        if self._critic_process is not None:
            try:
                self.settle()
            finally:
                self._stop_critic_process()
                self._critic_process = self._stop_critic_process = None

    @property
    def policy_actor(self) -> Actor:
        """The actor that deterministic actions, evaluation and export use: the average when there is one."""
        return self.actor if self.actor_average is None else self.actor_average

    @torch.inference_mode()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions ``[B, A]`` (or ``[A]`` for one observation) in [-1, 1] for raw observations: sampled from the
        actor being trained, or deterministic from ``policy_actor``."""
        single = obs.ndim == 1
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.device).reshape(-1, self.obs_dim)
        x = self.normalizer(x)
        action = self.policy_actor.deterministic(x) if deterministic else self.actor.explore(x)
        out = action.cpu().numpy()
        return out[0] if single else out

    def _target_members(self) -> torch.Tensor | slice:
        """The ensemble members whose minimum is the target: all of them, or (REDQ) a random subset."""
        n, ensemble = self.cfg.n_target_critics, self.cfg.n_critics
        # REDQ: the minimum over a random subset keeps the bias low with a large ensemble.
        return torch.randperm(ensemble, device=self.device)[:n] if n < ensemble else slice(None)

    @torch.no_grad()
    def critic_target_values(
        self,
        reward: torch.Tensor,
        next_obs: torch.Tensor | None,
        terminated: torch.Tensor,
        alpha: torch.Tensor,
        noise: torch.Tensor | None = None,
        members: torch.Tensor | slice | None = None,
        next_sample: tuple[torch.Tensor, torch.Tensor] | None = None,
        next_critic_obs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The soft TD target ``[B]``: r + gamma (1 - terminated) (min_i Q'_i(s', a') - alpha log pi(a'|s')).

        ``noise`` and ``members`` are the random draws (next action's noise, REDQ's subset), drawn here when
        not given; ``next_sample`` is the next action and its log-probability when already sampled (``next_obs``,
        the actor's input, may then be None); ``next_critic_obs`` is what the critics see of s' where that is more
        than ``next_obs`` (``critic_observation``).
        """
        self.settle()
        if next_sample is None:
            next_sample = self.actor.sample(next_obs, noise)
        if members is None:
            members = self._target_members()
        critic_obs = next_obs if next_critic_obs is None else next_critic_obs
        target = self._critic_target
        return soft_td_target(self.cfg, target, reward, terminated, alpha, members, next_sample, critic_obs)

    def critic_observation(self, obs: torch.Tensor, privileged: torch.Tensor | None) -> torch.Tensor:
        """What the critics see: the normalized observation ``obs``, followed by the normalized privileged
        observation (raw, ``[B, privileged_dim]``) when the critics take one."""
        if self.privileged_dim == 0:
            return obs
        if privileged is None:
            raise ValueError("Batch.privileged, Batch.next_privileged: the critics see them (privileged_critic)")
        return torch.cat([obs, self.privileged_normalizer(privileged)], dim=-1)

    def _autocast(self) -> torch.autocast:
        # Autocast is per thread: the critic worker enters its own. Its cache of cast weights would outlive a
        # CUDA graph's capture, so a capture goes without it.
        low_precision = self.matmul_dtype == torch.bfloat16
        capturing = self.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=low_precision, cache_enabled=not capturing
        )

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step on the critics, and (every ``actor_update_every``) on the actor and alpha. With the
        critic process, the critics' backward pass and step may still be under way when this returns
        (``settle``)."""
        self.settle()
        actor_due = (self.updates + 1) % self.cfg.actor_update_every == 0
        if self._graphed is not None:
            info = self._graphed(batch, actor_due)
        else:
            draws = self._draws(batch.obs.shape[0], actor_due) if self.two_threads else (None, None, None)
            info = self._update(batch, actor_due, *draws)
        self.updates += 1
        values = {**info, "charts/alpha": self.log_alpha.detach().exp()}
        # One device-to-host transfer for all of them (on CUDA, the update's only synchronization).
        return dict(zip(values, torch.stack(list(values.values())).tolist()))

    def _draws(self, batch_size: int, actor_due: bool) -> tuple:
        """The update's random draws made up front, in the order one thread makes them: the next actions' noise,
        REDQ's subset, and when the actor steps its actions' noise. The two-thread update and CUDA graphs take
        them so; the generator's stream (and with it every result) then does not depend on how threads
        interleave, or on a graph."""
        next_noise = torch.randn(batch_size, self.act_dim, device=self.device)
        members = self._target_members()
        noise = torch.randn(batch_size, self.act_dim, device=self.device) if actor_due else None
        return next_noise, members, noise

    def _update(self, batch: Batch, actor_due: bool, next_noise, members, noise) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        with self._autocast():
            obs = self.normalizer(batch.obs)
            next_obs = self.normalizer(batch.next_obs)
            critic_obs = self.critic_observation(obs, batch.privileged)
            next_critic_obs = self.critic_observation(next_obs, batch.next_privileged)
            alpha = self.log_alpha.detach().exp()
            critic_inputs = (batch, critic_obs, next_obs, next_critic_obs, alpha, next_noise, members)
            actor_inputs = (obs, critic_obs, alpha, noise)
            if not actor_due:
                info = self._critic_step(*self._critic_grads(*critic_inputs))
            elif cfg.simultaneous_update:
                info = self._simultaneous_step(critic_inputs, actor_inputs)
            else:
                info = self._critic_step(*self._critic_grads(*critic_inputs))
                # The actor's gradient flows through the critics' inputs only; freezing their weights skips
                # computing parameter gradients that the next critic step would discard anyway.
                self._critic.requires_grad_(False)
                loss, actor_info = self._actor_loss(*actor_inputs)
                self.actor_opt.zero_grad(set_to_none=True)
                loss.backward()
                self._actor_step()
                self._critic.requires_grad_(True)
                info.update(actor_info)
        return info

    def _simultaneous_step(self, critic_inputs: tuple, actor_inputs: tuple):
        """Critic, actor and temperature gradients from the same networks, then both optimizer steps."""
        if self._wants_critic_process:
            return self._update_in_process(critic_inputs, actor_inputs)
        if self._critic_worker is None:
            critic_result = self._critic_grads(*critic_inputs)
            actor_info = self._actor_grads(*actor_inputs)
            info = self._critic_step(*critic_result)
        else:
            info, actor_info = self._grads_on_two_threads(critic_inputs, actor_inputs)
        self._actor_step()
        info.update(actor_info)
        return info

    def _update_in_process(self, critic_inputs: tuple, actor_inputs: tuple):
        """The critics' gradients and step in the critic process, the actor's and temperature's gradients and
        step here, split as ``_grads_on_two_threads`` splits them except that the child samples the next actions.
        The actor steps while the child may still be stepping the critics, so unlike on the thread an error in
        the child's pass leaves the actor stepped and the critics not. This returns once the critic loss is known;
        the critics' backward pass (when the actor's was quicker) and step go on in the child (``settle``), and an
        error there is raised by the next ``settle``."""
        rows = critic_inputs[0].action.shape[0]
        process = self._critic_process
        if process is None or not process.alive or rows > process.rows:
            if process is not None:
                if not process.alive:
                    warnings.warn(
                        f"the critic process had exited with code {process.exitcode}; starting another",
                        RuntimeWarning,
                    )
                self.close()
            process = self._critic_process = CriticProcess(self, max(rows, self.cfg.batch_size))
            self._stop_critic_process = weakref.finalize(self, process.close)
        try:
            process.submit(*critic_inputs)
            info = self._actor_grads(*actor_inputs, process.release)
            process.wait_actor_free()
            self._actor_step()
            critic_loss, q_mean = process.losses()
        except BaseException:
            process.settle()
            raise
        return {"losses/critic": critic_loss, "losses/q_mean": q_mean, **info}

    def _grads_on_two_threads(self, critic_inputs: tuple, actor_inputs: tuple):
        """The critics' gradients and step on the worker, the actor's and temperature's gradients here.

        An error or Ctrl-C after the actor's pass has released the critics leaves them stepped and the actor
        not, as SB3's order (critic step, then the actor's pass) would."""
        # The next actions are sampled on this thread while the worker evaluates the critics: that balances
        # the two threads' work (8 of the update's 16 hidden-layer matrix products each). The worker steps
        # the critics once this thread's backward pass has gone through them, so the actor's gradient comes
        # from the critics before the step and the step overlaps the rest of the actor's backward pass.
        batch, critic_obs, next_obs, next_critic_obs, alpha, next_noise, members = critic_inputs
        next_sample, critics_released = Future(), Future()
        critic_job = self._run_in_autocast(
            self._critic_update, batch, critic_obs, next_critic_obs, alpha, members, next_sample, critics_released
        )
        actor_job = partial(self._actor_side, next_sample, critics_released, next_obs, next_noise, actor_inputs)
        return self._alongside(critic_job, actor_job, release=(next_sample, critics_released))

    def _actor_side(self, next_sample: Future, critics_released: Future, next_obs, next_noise, actor_inputs: tuple):
        with torch.no_grad():
            next_sample.set_result(self.actor.sample(next_obs, next_noise))
        return self._actor_grads(*actor_inputs, partial(_release, critics_released))

    def _alongside(self, worker_job, caller_job, release: tuple[Future, ...] = ()) -> tuple:
        """Both results of ``worker_job`` on the critic worker and ``caller_job`` on this thread, run at once.

        The worker is waited for even when ``caller_job`` raises or Ctrl-C arrives (also during the wait), so
        nothing (a checkpoint, the next update) sees networks that the other thread is still writing; each
        future in ``release``, which the worker waits on, is failed first if this thread never set it.
        """
        future = None
        try:
            future = self._critic_worker.submit(worker_job)
            mine = caller_job()
        finally:
            interrupted = None
            for handoff in release:
                while not handoff.done():
                    try:
                        handoff.set_exception(RuntimeError("the update stopped before this thread handed it on"))
                    except KeyboardInterrupt as exc:  # the worker polls: it sees the future once it is set
                        interrupted = exc
            while future is not None and not future.done():
                try:
                    wait([future])
                except KeyboardInterrupt as exc:
                    interrupted = exc
            if interrupted is not None:
                raise interrupted
        return future.result(), mine

    def _actor_step(self) -> None:
        self.actor_opt.step()
        if self.actor_average is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self._average_params, self._actor_params, self.cfg.actor_average_tau)

    def _actor_grads(
        self, obs, critic_obs, alpha, noise, release: Callable[[torch.Tensor], None] | None = None
    ) -> dict[str, torch.Tensor]:
        """The actor's and temperature's gradients into their ``.grad``; their loss values for logging.
        ``release`` is called once the backward pass has gone through the critics."""
        loss, info = self._actor_loss(obs, critic_obs, alpha, noise, release)
        # torch.autograd.grad leaves the critics' .grad alone: the critic pass may be filling it.
        grads = torch.autograd.grad(loss, self._actor_and_alpha, allow_unused=not self.cfg.autotune_alpha)
        for param, grad in zip(self._actor_and_alpha, grads):
            param.grad = grad
        return info

    def _run_in_autocast(self, fn, *args):
        def job():
            with self._autocast():
                return fn(*args)

        return job

    def _critic_grads(
        self, batch, critic_obs, next_obs, next_critic_obs, alpha, next_noise, members
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The critic loss and values ``[E, B]``, with the loss's gradient in the critics' ``.grad``."""
        target_q = self.critic_target_values(
            batch.reward, next_obs, batch.terminated, alpha, next_noise, members, next_critic_obs=next_critic_obs
        )
        return self._critic_backward(self._critic(critic_obs, batch.action), target_q)

    def _critic_update(
        self, batch, critic_obs, next_critic_obs, alpha, members, next_sample: Future, critics_released: Future
    ):
        """The worker's part: ``_critic_grads`` with the target computed once ``next_sample`` is ready, then the
        critics' step once ``critics_released`` says the actor's pass no longer needs them. (Without dropout,
        which would draw in another order; the worker runs only then.)"""
        q = self._critic(critic_obs, batch.action)
        target_q = self.critic_target_values(
            batch.reward, None, batch.terminated, alpha, members=members, next_sample=_await(next_sample),
            next_critic_obs=next_critic_obs,
        )
        result = self._critic_backward(q, target_q)
        _await(critics_released)
        return self._critic_step(*result)

    def _critic_backward(self, q: torch.Tensor, target_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = critic_loss(q, target_q)
        critic_loss_backward(self._critic_opt, loss)
        return loss, q

    def _critic_step(self, critic_loss: torch.Tensor, q: torch.Tensor) -> dict[str, torch.Tensor]:
        step_critics(self._critic_opt, self._critic_params, self._target_params, self.cfg.tau)
        return {"losses/critic": critic_loss.detach(), "losses/q_mean": q.detach().mean()}

    def _actor_loss(
        self, obs, critic_obs, alpha, noise, release: Callable[[torch.Tensor], None] | None = None
    ) -> tuple[torch.Tensor, dict]:
        """The actor's loss plus (when tuned) the temperature's, and their values for logging; the backward
        pass calls ``release`` when it reaches the action, past every critic operation. The actor sees
        ``obs``, the critics ``critic_obs``."""
        cfg = self.cfg
        action, log_prob = self.actor.sample(obs, noise)
        if release is not None:
            # The action is the critics' only input that depends on the actor, so the backward pass reaches it
            # after every critic operation.
            action.register_hook(release)
        q_all = self._critic(critic_obs, action)
        # Clipped double Q for the paper's twin critics; REDQ's actor uses the whole ensemble's mean.
        q_pi = q_all.mean(0) if cfg.n_target_critics < cfg.n_critics else q_all.min(0).values
        actor_loss = (alpha * log_prob - q_pi).mean()
        entropy = -log_prob.detach().mean()
        info = {"losses/actor": actor_loss.detach(), "charts/entropy": entropy}
        if not cfg.autotune_alpha:
            return actor_loss, info
        # d loss / d log_alpha = -(entropy_target - entropy): entropy below its target raises alpha.
        alpha_loss = self.log_alpha * (entropy - self.target_entropy)
        info["losses/alpha"] = alpha_loss.detach()
        return actor_loss + alpha_loss, info

    def state_dict(self) -> dict:
        self.settle()
        return {
            "actor": self.actor.state_dict(),
            **({"actor_average": self.actor_average.state_dict()} if self.actor_average is not None else {}),
            "critic": self._critic.state_dict(),
            "critic_target": self._critic_target.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            **({"privileged_normalizer": self.privileged_normalizer.state_dict()} if self.privileged_dim else {}),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self._critic_opt.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.settle()
        self.actor.load_state_dict(state["actor"])
        if self.actor_average is not None:
            # A run that averages from here on (or from before averaging existed) starts from the actor.
            self.actor_average.load_state_dict(state.get("actor_average", state["actor"]))
        self._critic.load_state_dict(state["critic"])
        self._critic_target.load_state_dict(state["critic_target"])
        self.normalizer.load_state_dict(state["normalizer"])
        if self.privileged_dim:
            self.privileged_normalizer.load_state_dict(state["privileged_normalizer"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(_actor_and_alpha_opt_state(state))
        self._critic_opt.load_state_dict(state["critic_opt"])
        # The optimizer's state tensors were replaced: a child would step the old ones.
        self.close()
        # The saved settings come with the state; capturable is this machine's choice (a run trained with CUDA
        # graphs resumes on a CPU, and the other way round). The steps are on the device either way (fused).
        for group in (*self.actor_opt.param_groups, *self._critic_opt.param_groups):
            group["capturable"] = self._graphed is not None
        self.updates = int(state["updates"])
        if self._graphed is not None:
            # The optimizers' state tensors were replaced: graphs captured before would step the old ones.
            self._graphed = GraphedUpdate(self)


def soft_td_target(cfg: SACConfig, critic_target, reward, terminated, alpha, members, next_sample, next_critic_obs):
    """r + gamma (1 - terminated) (min over ``members`` of Q'(s', a') - alpha log pi(a'|s')), ``[B]``, for the next
    actions and log-probabilities ``next_sample`` and what the critics see of s'."""
    next_action, next_log_prob = next_sample
    next_q = critic_target(next_critic_obs, next_action)[members].min(0).values - alpha * next_log_prob
    # Terminations stop the bootstrap; time-limit truncations were stored with terminated=0.
    return cfg.reward_scale * reward + cfg.gamma * (1.0 - terminated) * next_q


def critic_loss(q: torch.Tensor, target_q: torch.Tensor) -> torch.Tensor:
    """The sum over critics of each one's mean squared TD error, as one reduction."""
    return 0.5 * q.shape[0] * F.mse_loss(q, target_q.expand_as(q))


def critic_loss_backward(critic_opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """The critic loss's gradient in the critics' ``.grad``, replacing what was there."""
    critic_opt.zero_grad(set_to_none=True)
    loss.backward()


def step_critics(critic_opt: torch.optim.Optimizer, params: list, target_params: list, tau: float) -> None:
    """The critics' optimizer step, then Polyak averaging of their targets."""
    critic_opt.step()
    with torch.no_grad():
        torch._foreach_lerp_(target_params, params, tau)


def _await(future: Future):
    """``future``'s result, polled: a Ctrl-C inside the setter's ``set_result`` can lose the wake-up, never
    the result."""
    while True:
        try:
            return future.result(timeout=0.1)
        except FutureTimeout:  # the builtin TimeoutError only from Python 3.11
            continue


def _release(future: Future, grad: torch.Tensor) -> None:
    future.set_result(None)


def _actor_and_alpha_opt_state(state: dict) -> dict:
    """The actor optimizer's state; checkpoints from before the temperature joined it carry ``alpha_opt``."""
    if "alpha_opt" not in state:
        return state["actor_opt"]
    actor, alpha = state["actor_opt"], state["alpha_opt"]
    first_alpha_index = len(actor["param_groups"][0]["params"])
    merged = dict(actor["state"])
    merged.update({first_alpha_index + int(i): v for i, v in alpha["state"].items()})
    alpha_group = {**alpha["param_groups"][0], "params": [first_alpha_index]}
    return {"state": merged, "param_groups": [actor["param_groups"][0], alpha_group]}
