"""The training runner: glue only (act, step, store, update, evaluate, log, checkpoint).

A run directory holds ``config.yaml``, ``checkpoints/`` (``last.pt`` + the ``replay.<step>.npz`` it names, for resuming,
``best.pt`` for export), TensorBoard events in ``tb/``, ``curve.png`` and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from firmware_bridge.typed_yaml import ConfigError, to_mapping
from robot_sac.checkpoint_io import atomic_torch_save, restore_rng_states, rng_states
from robot_sac.config import TrainConfig, load_run_config
from robot_sac.envs import episode_success, make_env
from robot_sac.evaluation import run_episodes
from robot_sac.plots import plot_learning_curve
from robot_sac.replay import ReplayBuffer
from robot_sac.sac import SAC, configure_torch_threads, select_device

CHECKPOINT_VERSION = 1


class EpisodeTape:
    """What it takes to rebuild the training env mid-episode: its RNG before the reset, then the actions.

    Simulator state cannot be pickled portably (MuJoCo envs re-create their model when unpickled), but
    every env here is deterministic given its RNG, so replaying the episode's actions rebuilds it exactly.
    The run's first episode starts from ``reset(seed=seed)``, which replaces the RNG: its tape holds no RNG
    state (``None``), and replaying it reseeds instead.
    """

    def __init__(self) -> None:
        self.rng_state: dict | None = None
        self.actions: list[np.ndarray] = []

    def start(self, env, seeded: bool = False) -> None:
        """Record the start of an episode; ``seeded`` when its reset is given the run's seed."""
        self.rng_state = None if seeded else env.unwrapped.np_random.bit_generator.state
        self.actions = []

    def state_dict(self) -> dict:
        return {"rng_state": self.rng_state, "actions": np.array(self.actions, dtype=np.float32)}

    def replay(self, env, seed: int, state: dict) -> tuple[np.ndarray, dict]:
        """The observation and info the env is left at."""
        if state["rng_state"] is None:
            obs, info = env.reset(seed=seed)
        else:
            env.reset(seed=seed)
            env.unwrapped.np_random.bit_generator.state = state["rng_state"]
            obs, info = env.reset()
        self.rng_state = state["rng_state"]
        self.actions = []
        for action in state["actions"]:
            obs, _, _, _, info = env.step(action)
            self.actions.append(action)
        return obs, info


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path, show_progress: bool = True):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.show_progress = show_progress
        self.device = select_device(cfg.device)

        self.env = make_env(cfg.env, cfg.env_kwargs)
        self.eval_env = make_env(cfg.env, cfg.env_kwargs)
        obs_dim = self.env.observation_space.shape[0]
        act_dim = self.env.action_space.shape[0]
        self.tape = EpisodeTape()
        self.tape.start(self.env, seeded=True)
        self.obs, info = self.env.reset(seed=cfg.seed)
        self.privileged = self._privileged(info)
        privileged_dim = 0 if self.privileged is None else self.privileged.shape[0]
        torch.manual_seed(cfg.seed)
        self.agent = SAC(obs_dim, act_dim, cfg.sac, self.device, privileged_dim)
        configure_torch_threads(cfg.torch_threads, self.agent.two_threads)
        self.buffer = ReplayBuffer(obs_dim, act_dim, cfg.buffer_size, self.device, privileged_dim)
        self.rng = np.random.default_rng(cfg.seed)

        self.step = 0
        self.episodes = 0
        self.wall_s = 0.0
        self.update_wall_s = 0.0
        self.learning_steps = 0
        self.episode_returns: list[tuple[int, float]] = []
        self.evals: list[dict[str, float]] = []
        self.best_eval: dict[str, float] | None = None
        self.ep_return = 0.0
        self.ep_len = 0
        self.last_update_info: dict[str, float] = {}
        self._writer = None

    # -- construction from a run directory -------------------------------------------------------

    @classmethod
    def resume(cls, run_dir: str | Path, total_steps: int | None = None, show_progress: bool = True) -> "Trainer":
        run_dir = Path(run_dir)
        ckpt = run_dir / "checkpoints" / "last.pt"
        if not ckpt.exists():
            raise FileNotFoundError(f"{run_dir}: no checkpoint to resume from ({ckpt} is missing)")
        cfg = load_run_config(run_dir)
        if total_steps is not None:
            cfg = dataclasses.replace(cfg, total_steps=total_steps)
        trainer = cls(cfg, run_dir, show_progress)
        trainer._load_checkpoint(ckpt)
        return trainer

    def _privileged(self, info: dict) -> np.ndarray | None:
        """The privileged observation in a reset's or step's ``info``, where the critics take one."""
        if not self.cfg.sac.privileged_critic:
            return None
        if "privileged" not in info:
            raise ConfigError(
                f"sac.privileged_critic: env {self.cfg.env} gives no privileged observation (info['privileged']); "
                "the robot tasks (robot_sac/...) do"
            )
        return info["privileged"]

    # -- the loop ---------------------------------------------------------------------------------

    def train(self, until: int | None = None) -> dict[str, Any]:
        """Train until ``until`` environment steps (default: the config's total) and return the summary."""
        cfg = self.cfg
        until = cfg.total_steps if until is None else until
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(to_mapping(cfg), sort_keys=False))
        start_step, start_time = self.step, time.perf_counter()
        base_wall = self.wall_s

        with self._progress() as progress:
            task = progress.add_task(
                "train", total=until, completed=self.step, ret=float("nan"), alpha=self.agent.alpha, sps=0.0
            )
            while self.step < until:
                self._collect_one()
                if self.step > cfg.learning_starts:
                    t0 = time.perf_counter()
                    for _ in range(cfg.sac.utd):
                        self.last_update_info = self.agent.update(self.buffer.sample(self.rng, cfg.sac.batch_size))
                    self.update_wall_s += time.perf_counter() - t0
                    self.learning_steps += 1
                self.wall_s = base_wall + time.perf_counter() - start_time
                if self.step % cfg.log_interval == 0:
                    self._log_scalars()
                if self.step % cfg.eval_interval == 0:
                    self.evaluate()
                if self.step % cfg.checkpoint_interval == 0 or self.step == until:
                    self.save_checkpoint()
                recent = self.episode_returns[-10:]
                progress.update(
                    task,
                    completed=self.step,
                    ret=float(np.mean([r for _, r in recent])) if recent else float("nan"),
                    alpha=self.agent.alpha,
                    sps=(self.step - start_step) / max(time.perf_counter() - start_time, 1e-9),
                )
        summary = self.write_summary()
        if self._writer is not None:
            self._writer.flush()
        return summary

    def _collect_one(self) -> None:
        cfg = self.cfg
        if self.step < cfg.learning_starts:
            action = self.rng.uniform(-1.0, 1.0, size=self.env.action_space.shape).astype(np.float32)
        else:
            action = self.agent.act(self.obs)
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        self.tape.actions.append(np.asarray(action, dtype=np.float32))
        next_privileged = self._privileged(info)
        self.buffer.add(self.obs, action, reward, next_obs, terminated, self.privileged, next_privileged)
        if cfg.sac.normalize_observations:
            self.agent.normalizer.update(next_obs)
            if next_privileged is not None:
                self.agent.privileged_normalizer.update(next_privileged)
        self.step += 1
        self.ep_return += float(reward)
        self.ep_len += 1
        if terminated or truncated:
            self.episodes += 1
            self.episode_returns.append((self.step, self.ep_return))
            writer = self.writer
            writer.add_scalar("rewards/episode_return", self.ep_return, self.step)
            writer.add_scalar("rewards/episode_length", self.ep_len, self.step)
            success = episode_success(info)
            if success is not None:
                writer.add_scalar("rewards/episode_success", float(success), self.step)
            self.ep_return, self.ep_len = 0.0, 0
            self.tape.start(self.env)
            next_obs, reset_info = self.env.reset()
            next_privileged = self._privileged(reset_info)
        self.obs, self.privileged = next_obs, next_privileged

    def evaluate(self) -> dict[str, float]:
        """Deterministic actions on a fixed set of seeded episodes, so evaluations compare across time."""
        episodes = run_episodes(
            self.eval_env, lambda obs: self.agent.act(obs, deterministic=True), self.cfg.eval_episodes,
            seed=self.cfg.seed + 1_000_003,
        ).summary()
        result = {"step": self.step, **{k: episodes[k] for k in ("return_mean", "return_std", "length_mean")}}
        if "success_rate" in episodes:
            result["success_rate"] = episodes["success_rate"]
        self.evals.append(result)
        for key in ("return_mean", "return_std", "success_rate"):
            if key in result:
                self.writer.add_scalar(f"eval/{key}", result[key], self.step)
        if self.best_eval is None or eval_rank(result) > eval_rank(self.best_eval):
            self.best_eval = result
            self._save_policy(self.ckpt_dir / "best.pt", result)
        return result

    # -- logging ------------------------------------------------------------------------------------

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a crashed run wrote after its last checkpoint.
            self._writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step or None)
        return self._writer

    def _log_scalars(self) -> None:
        writer = self.writer
        for key, value in self.last_update_info.items():
            writer.add_scalar(key, value, self.step)
        if self.wall_s > 0:
            writer.add_scalar("charts/steps_per_s", self.step / self.wall_s, self.step)

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[sps]:>6.0f} steps/s"),
            TextColumn("return {task.fields[ret]:>8.1f}"),
            TextColumn("alpha {task.fields[alpha]:.3f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not self.show_progress,
        )

    def write_summary(self) -> dict[str, Any]:
        final = self.evals[-1] if self.evals else {}
        summary: dict[str, Any] = {
            "env": self.cfg.env,
            "seed": self.cfg.seed,
            "steps": self.step,
            "episodes": self.episodes,
            "updates": self.agent.updates,
            "wall_s": round(self.wall_s, 3),
            "steps_per_s": self.step / self.wall_s if self.wall_s > 0 else None,
            "updates_per_s": self.agent.updates / self.update_wall_s if self.update_wall_s > 0 else None,
            "eval_return_final": final.get("return_mean"),
            "eval_return_best": max(e["return_mean"] for e in self.evals) if self.evals else None,
            "best_checkpoint": self.best_eval,
            "device": str(self.device),
            "matmul_dtype": str(self.agent.matmul_dtype).removeprefix("torch."),
            "evals": self.evals,
        }
        if "success_rate" in final:
            summary["success_rate_final"] = final["success_rate"]
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_learning_curve(self.run_dir / "curve.png", self.cfg.env, self.episode_returns, self.evals)
        return summary

    # -- checkpoints --------------------------------------------------------------------------------

    def _save_policy(self, path: Path, eval_result: dict[str, float]) -> None:
        """The actor-side state export needs, without optimizers or replay."""
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "version": CHECKPOINT_VERSION,
            "config": to_mapping(self.cfg),
            "step": self.step,
            "eval": eval_result,
            "actor": self.agent.policy_actor.state_dict(),
            "normalizer": self.agent.normalizer.state_dict(),
        }
        atomic_torch_save(state, path)

    def save_checkpoint(self) -> Path:
        """The replay under a name of its own, then ``last.pt`` naming it, then older replay files removed: a
        crash anywhere in between leaves a ``last.pt`` and the replay written with it, never a newer replay
        beside older counters (a resume would then store the steps in between twice)."""
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        replay_file = f"replay.{self.step}.npz"
        self.buffer.save(self.ckpt_dir / replay_file)
        state = {
            "version": CHECKPOINT_VERSION,
            "config": to_mapping(self.cfg),
            "agent": self.agent.state_dict(),
            "counters": {
                "step": self.step,
                "episodes": self.episodes,
                "wall_s": self.wall_s,
                "update_wall_s": self.update_wall_s,
                "learning_steps": self.learning_steps,
                "ep_return": self.ep_return,
                "ep_len": self.ep_len,
            },
            "episode_returns": self.episode_returns,
            "evals": self.evals,
            "tape": self.tape.state_dict(),
            "replay_file": replay_file,
            "rng": rng_states(self.rng),
        }
        path = self.ckpt_dir / "last.pt"
        atomic_torch_save(state, path)
        for old in self.ckpt_dir.glob("replay*.npz*"):  # with what a crash mid-write left (.npz.tmp)
            if old.name != replay_file:
                old.unlink(missing_ok=True)
        return path

    def _load_checkpoint(self, path: Path) -> None:
        # Our own file, written by save_checkpoint: it holds numpy RNG states, so weights_only cannot load it.
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path}: checkpoint version {state.get('version')} != {CHECKPOINT_VERSION}")
        self.agent.load_state_dict(state["agent"])
        self.buffer.load(saved_replay(self.ckpt_dir, state))
        c = state["counters"]
        self.step, self.episodes = c["step"], c["episodes"]
        self.wall_s, self.update_wall_s = c["wall_s"], c["update_wall_s"]
        self.learning_steps = c["learning_steps"]
        # Ranked against what best.pt holds, which a run started before eval_rank chose by return alone.
        best = self.ckpt_dir / "best.pt"
        self.best_eval = torch.load(best, map_location="cpu", weights_only=False)["eval"] if best.is_file() else None
        self.episode_returns = [tuple(x) for x in state["episode_returns"]]
        self.evals = state["evals"]
        self.obs, info = self.tape.replay(self.env, self.cfg.seed, state["tape"])
        self.privileged = self._privileged(info)
        self.ep_return, self.ep_len = c["ep_return"], c["ep_len"]
        restore_rng_states(self.rng, state["rng"])


def eval_rank(result: dict[str, float]) -> tuple[float, float]:
    """The order ``best.pt`` is chosen by: the task's success rate where it has one (what its targets count),
    then the return, so the checkpoint kept is the one that best meets the task's target, not the one that
    scored most while sometimes failing (a quadruped gait fast enough to outscore a steady one despite falls)."""
    return result.get("success_rate", 0.0), result["return_mean"]


def saved_replay(ckpt_dir: Path, state: dict) -> Path:
    """The replay file a ``last.pt`` state was written with (``replay.npz`` for runs from before they were named
    by step)."""
    return ckpt_dir / state.get("replay_file", "replay.npz")
