"""Making training environments: any Gymnasium id with a Box action space, actions rescaled to [-1, 1]."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None, **extra: Any) -> gym.Env:
    """``gymnasium.make`` with the project's robot tasks registered; the policy always acts in [-1, 1]."""
    if env_id.startswith("robot_sac/"):
        import sim  # noqa: F401  (registers the robot tasks)
    env = gym.make(env_id, **(env_kwargs or {}), **extra)
    if not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(f"env {env_id}: SAC needs a Box action space, got {env.action_space}")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        raise ValueError(f"env {env_id}: expected a flat Box observation space, got {env.observation_space}")
    low, high = env.action_space.low, env.action_space.high
    if not (np.all(low == -1.0) and np.all(high == 1.0)):
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(f"env {env_id}: action space must be bounded, got {env.action_space}")
        ones = np.ones(env.action_space.shape, dtype=np.float32)
        env = gym.wrappers.RescaleAction(env, -ones, ones)
    return env


def episode_success(info: dict[str, Any]) -> bool | None:
    """The task's own success flag at the end of an episode, or None where the env defines none."""
    for key in ("success", "is_success"):
        if key in info:
            return bool(info[key])
    return None
