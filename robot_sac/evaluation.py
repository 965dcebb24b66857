"""Run a policy for whole episodes and summarize them; ``robot-sac eval`` and the robustness tool use this.

A policy here is any ``obs (obs_dim,) -> action (act_dim,)`` callable; exported files run through
``firmware_bridge.policy_runtime.PolicyRuntime``, the code the robot runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from robot_sac.envs import episode_success, make_env

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass
class EpisodeResults:
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    successes: list[bool] = field(default_factory=list)
    """One flag per episode where the env reports success; empty where it defines none."""

    def summary(self) -> dict[str, Any]:
        """``episodes``, ``return_mean``, ``return_std``, ``episode_lengths``, ``length_mean`` and, where the
        task defines success, ``success_rate``."""
        result: dict[str, Any] = {
            "episodes": len(self.returns),
            "return_mean": float(np.mean(self.returns)),
            "return_std": float(np.std(self.returns)),
            "returns": [float(r) for r in self.returns],
            "episode_lengths": list(self.lengths),
            "length_mean": float(np.mean(self.lengths)),
        }
        if self.successes:
            result["success_rate"] = float(np.mean(self.successes))
        return result


def run_episodes(
    env: gym.Env, policy: Policy, episodes: int, seed: int, reset_options: dict[str, Any] | None = None
) -> EpisodeResults:
    """``episodes`` episodes, episode ``i`` reset with seed ``seed + i`` (and ``reset_options``, e.g. a
    perturbation), until the env terminates or truncates."""
    if episodes < 1:
        raise ValueError(f"episodes: need at least 1, got {episodes}")
    results = EpisodeResults()
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i, options=reset_options)
        total, length, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            total += float(reward)
            length += 1
            done = terminated or truncated
        results.returns.append(total)
        results.lengths.append(length)
        success = episode_success(info)
        if success is not None:
            results.successes.append(success)
    return results


def make_task_env(task: str | os.PathLike, backend: str | None = None, randomize: bool = True) -> gym.Env:
    """The env for ``--task``: a task name or task file (a robot env on ``backend``, default mujoco), or any
    registered Gymnasium id (``Pendulum-v1``), which takes no backend."""
    text = os.fspath(task)
    if text in gym.registry:
        if backend is not None or not randomize:
            raise ValueError(f"{text} is a Gymnasium env, not a robot task: it has no backend or randomization")
        return make_env(text)
    from sim.task import TaskSpec

    spec = TaskSpec.load(text)
    env_spec = gym.envs.registration.EnvSpec(
        id=f"robot_sac/{spec.name}",
        entry_point="sim.env:RobotEnv",
        max_episode_steps=spec.episode_steps,
        kwargs={"task": spec, "backend": backend or "mujoco", "randomize": randomize},
    )
    return gym.make(env_spec)
