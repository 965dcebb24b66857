"""The critics' half of the simultaneous update in a process of its own (CPU).

Two threads of one interpreter slow each other down: they share its lock and its allocator. Here the critics'
half of a HalfCheetah-sized update took 1.84 ms and the actor's 1.72 ms, each alone on one thread, but the two
side by side on two threads took 2.78 ms; two processes each keep their own core's speed. So the critics' half
runs in a child process: the networks, the critic optimizer's state and each update's inputs live in shared
memory, and the two sides hand off through update numbers written to a small shared control block. A waiting
side polls for a moment (the next hand-off is usually less than a millisecond away), then sleeps on a semaphore,
so an idle agent holds no core.

The child runs the operations of the one-thread update's critic pass on the same inputs: results are bit-identical
to it (tests/test_sac_math.py).
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from dataclasses import dataclass
from functools import partial

import torch
import torch.multiprocessing as mp
from torch import nn

from robot_sac.child_processes import without_main_module
from robot_sac.networks import Actor, CriticEnsemble

# Slots of the control block, an int64 tensor in shared memory.
_GO = 0  # the number of the latest update whose inputs are in place
_RELEASED = 1  # that number once the parent's actor pass no longer needs the critics; minus it: skip the step
_ACTOR_FREE = 2  # that number once the child no longer reads the actor, which the parent may then step
_LOSSES = 3  # that number once the critic loss and mean Q-value are in place
_DONE = 4  # that number once the child has finished with it (stepped, skipped or failed)
_FAILED = 5  # that number if the child raised during it; the traceback follows on the pipe
_STOP = 6
_ROWS = 7  # the batch size of the update in place
_SLOTS = 8

SPIN_S = 0.002
"""How long a waiting side polls before it sleeps. An environment step between two updates takes 0.05-0.6 ms
here, so the child is still polling when the next update arrives; evaluation episodes outlast it. (With 0.4 ms
of work between HalfCheetah-sized updates, before the critics' step overlapped it: 2.69 ms per update against
2.78 ms sleeping at once.)"""

_TRACEBACK_CHARS = 16_000

_LIVENESS_S = 0.5
"""How often a sleeping side wakes to check that the other is still alive."""


@dataclass
class _CriticSide:
    """What the child needs, sent once: the networks and the optimizer state, all in shared memory."""

    critic: CriticEnsemble
    critic_target: CriticEnsemble
    actor: Actor
    optimizer_defaults: dict
    optimizer_state: list[dict[str, torch.Tensor]]
    cfg: object  # SACConfig
    low_precision: bool


class CriticProcessError(RuntimeError):
    """The critic process failed or died during an update."""


class CriticProcess:
    """The parent's handle on the child that computes and steps the critics.

    Per update: ``submit`` the inputs, run the actor's pass (calling ``release`` once its backward pass has gone
    through the critics), ``wait_actor_free`` before stepping the actor, then ``losses``: the critic loss and mean
    Q-value. The child may still be stepping the critics and their targets then, while the parent acts and steps
    the environment; ``settle`` waits for that, and anything that reads the critics must call it first.
    """

    def __init__(self, agent, rows: int):
        """``agent``: the SAC whose critics move to the child; ``rows``: the largest batch it will submit."""
        self.rows = rows
        self.update = 0
        self._settled = 0
        for module in (agent._critic, agent._critic_target, agent.actor):
            module.share_memory()
        opt = agent._critic_opt
        state = [_shared_adam_state(opt, p) for p in agent._critic_params]
        critic_in = agent.obs_dim + agent.privileged_dim
        f32 = dict(dtype=torch.float32)
        self._inputs = {
            "critic_obs": torch.zeros(rows, critic_in, **f32),
            "action": torch.zeros(rows, agent.act_dim, **f32),
            "reward": torch.zeros(rows, **f32),
            "terminated": torch.zeros(rows, **f32),
            "next_obs": torch.zeros(rows, agent.obs_dim, **f32),
            "next_critic_obs": torch.zeros(rows, critic_in, **f32),
            "next_noise": torch.zeros(rows, agent.act_dim, **f32),
            "alpha": torch.zeros((), **f32),
            "members": torch.zeros(agent.cfg.n_target_critics, dtype=torch.int64),
            "out": torch.zeros(2, **f32),
        }
        for tensor in self._inputs.values():
            tensor.share_memory_()
        self._control = torch.zeros(_SLOTS, dtype=torch.int64).share_memory_()
        self._flags = self._control.numpy()
        defaults = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
        side = _CriticSide(
            agent._critic, agent._critic_target, agent.actor, defaults, state, agent.cfg,
            agent.matmul_dtype == torch.bfloat16,
        )
        ctx = mp.get_context("forkserver")
        # The server imports torch once; every child after the first forks from it in milliseconds.
        ctx.set_forkserver_preload(["robot_sac.critic_process"])
        self._wake_child = ctx.Semaphore(0)
        self._wake_parent = ctx.Semaphore(0)
        self._errors, child_errors = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_serve,
            # The child's intra-op threads: the parent's, which the trainer has set per pass.
            args=(side, self._inputs, self._control, self._wake_child, self._wake_parent, child_errors, os.getpid(),
                  torch.get_num_threads()),
            name="sac-critic",
            daemon=True,
        )
        with without_main_module():
            self._process.start()
        child_errors.close()

    def submit(self, batch, critic_obs, next_obs, next_critic_obs, alpha, next_noise, members) -> None:
        """Put an update's inputs in place and start the child on it (after the previous one has settled)."""
        self.settle()
        rows = batch.action.shape[0]
        if rows > self.rows:
            raise ValueError(f"a batch of {rows} rows; the critic process was sized for {self.rows}")
        inputs = self._inputs
        with torch.no_grad():
            for name, value in (
                ("critic_obs", critic_obs), ("action", batch.action), ("reward", batch.reward),
                ("terminated", batch.terminated), ("next_obs", next_obs), ("next_critic_obs", next_critic_obs),
                ("next_noise", next_noise),
            ):
                inputs[name][:rows].copy_(value)
            inputs["alpha"].copy_(alpha)
            if isinstance(members, torch.Tensor):
                inputs["members"].copy_(members)
        self.update += 1
        self._flags[_ROWS] = rows
        self._flags[_GO] = self.update  # last: the child reads the inputs once it sees this
        self._wake_child.release()

    def release(self, *_) -> None:
        """The actor's pass is through the critics: the child may step them (usable as a tensor hook)."""
        self._signal_release(self.update)

    def wait_actor_free(self) -> None:
        """Until the child has sampled the next actions: the actor may change after that."""
        self._wait(_ACTOR_FREE, self.update)

    def losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The submitted update's critic loss and mean Q-value. The child publishes them before its backward pass
        and step, so an error in those reaches the caller at the next ``settle``."""
        self._wait(_LOSSES, self.update)
        if self._flags[_FAILED] == self.update:
            self.settle()  # raises the child's error
        out = self._inputs["out"]
        return out[0].clone(), out[1].clone()

    def settle(self) -> None:
        """Until the child is done with the submitted update; raises the error it met, once. An update whose
        actor pass never released the critics ends with them unstepped, as on the thread. A Ctrl-C during the
        wait is held until the child is done, so that nothing sees networks it is still writing; a second one
        kills the child (which may leave the critics part-stepped). Not thread-safe: call it from the thread
        that updates."""
        if self._settled == self.update or self._flags[_GO] != self.update:
            return  # settled, or ``submit`` was interrupted before it started the child
        if abs(int(self._flags[_RELEASED])) != self.update:
            self._signal_release(-self.update)
        interrupted = None
        while True:
            try:
                self._wait(_DONE, self.update)
                break
            except KeyboardInterrupt as exc:
                if interrupted is not None:
                    self._settled = self.update
                    self._process.kill()
                    raise
                interrupted = exc
        self._settled = self.update
        if interrupted is not None:
            raise interrupted
        if self._flags[_FAILED] == self.update:
            message = "(no traceback arrived)"
            while self._errors.poll(1.0):  # earlier updates' tracebacks, unread after an interrupt, come first
                update, text = self._errors.recv()
                if update == self.update:
                    message = text
                    break
            raise CriticProcessError(f"the critic process failed in update {self.update}:\n{message}")

    def close(self) -> None:
        """Stop the child (it exits on its own, too, when this process dies). A step under way finishes; a wait
        for the actor's release ends without a step."""
        if self._process.is_alive():
            self._flags[_STOP] = 1
            self._wake_child.release()
            self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode

    def _signal_release(self, value: int) -> None:
        self._flags[_RELEASED] = value
        self._wake_child.release()

    def _wait(self, slot: int, value: int) -> None:
        flags = self._flags
        if not _wait_until(lambda: flags[slot] == value, flags, self._wake_parent, self._process.is_alive):
            self._settled = self.update  # nothing more will come of it
            hint = ""
            if self.update == 1:  # it died starting up
                hint = " (its traceback, if it printed one, is on stderr; sac.parallel_update: thread runs without it)"
            raise CriticProcessError(
                f"the critic process (pid {self._process.pid}) exited with code {self._process.exitcode} "
                f"during update {self.update}{hint}"
            )


def _shared_adam_state(opt: torch.optim.Optimizer, param: nn.Parameter) -> dict[str, torch.Tensor]:
    """``param``'s Adam state in shared memory, created as Adam's first step would create it if not there yet."""
    state = opt.state[param]
    if not state:
        # A fused Adam keeps its step count as a float32 tensor beside the parameter.
        state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    for tensor in state.values():
        tensor.share_memory_()
    return state


def _wait_until(ready, flags, wake, other_alive) -> bool:
    """Until ``ready()``: poll, then sleep on ``wake``. False if the stop flag is set or ``other_alive()`` turns
    false first. The flags are the truth; ``wake`` only cuts a sleep short. Each hand-off releases it, also those
    that polling saw, so before sleeping the surplus is drained: otherwise the sleep would return at once."""
    deadline = time.perf_counter() + SPIN_S
    while not ready():
        if flags[_STOP]:
            return False
        if time.perf_counter() > deadline:
            while wake.acquire(block=False):
                pass
            if ready():
                break
            if not wake.acquire(timeout=_LIVENESS_S) and not other_alive():
                return ready()
    return True


def _pid_alive(pid: int) -> bool:
    # The child's own parent is the fork server, not the process that holds the networks: ask after that one. A
    # process this one may not signal has taken a dead parent's number.
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _serve(
    side: _CriticSide, inputs, control, wake_child, wake_parent, errors, parent_pid: int, threads: int
) -> None:
    """The child's loop: one critic pass per update the parent submits, until told to stop or orphaned."""
    from robot_sac.sac import critic_loss, critic_loss_backward, soft_td_target, step_critics

    # Ctrl-C reaches the whole process group; the parent handles it and finishes or skips the step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    flags = control.numpy()
    params = list(side.critic.parameters())
    target_params = list(side.critic_target.parameters())
    opt = torch.optim.Adam(params, **side.optimizer_defaults)
    for param, state in zip(params, side.optimizer_state):
        opt.state[param] = state
    cfg = side.cfg
    all_members = cfg.n_target_critics == cfg.n_critics
    parent_alive = partial(_pid_alive, parent_pid)
    done = 0
    while True:
        # Past the last one done, not the next number: an interrupted submit may have skipped one.
        if not _wait_until(lambda: flags[_GO] > done, flags, wake_child, parent_alive):
            return
        done = int(flags[_GO])
        rows = int(flags[_ROWS])
        x = {name: tensor[:rows] if tensor.dim() and name not in ("members", "out") else tensor
             for name, tensor in inputs.items()}
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=side.low_precision):
                with torch.no_grad():
                    next_sample = side.actor.sample(x["next_obs"], x["next_noise"])
                flags[_ACTOR_FREE] = done
                wake_parent.release()
                q = side.critic(x["critic_obs"], x["action"])
                target_q = soft_td_target(
                    cfg, side.critic_target, x["reward"], x["terminated"], x["alpha"],
                    slice(None) if all_members else x["members"], next_sample, x["next_critic_obs"],
                )
                loss = critic_loss(q, target_q)
                # Published before the backward pass: the parent waits for them once its actor has stepped.
                x["out"][0] = loss.detach()
                x["out"][1] = q.detach().mean()
                flags[_LOSSES] = done
                wake_parent.release()
                critic_loss_backward(opt, loss)
                if not _wait_until(lambda: abs(flags[_RELEASED]) == done, flags, wake_child, parent_alive):
                    return
                if flags[_RELEASED] == done:
                    step_critics(opt, params, target_params, cfg.tau)
        except Exception:  # reported to the parent, which raises it; the child serves on
            # Bounded: a message larger than the pipe's buffer would block here while the parent waits for DONE.
            errors.send((done, traceback.format_exc()[-_TRACEBACK_CHARS:]))
            flags[_FAILED] = done
        flags[_ACTOR_FREE] = flags[_LOSSES] = done
        flags[_DONE] = done
        wake_parent.release()
