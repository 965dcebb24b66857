"""Gymnasium ids for the tasks; registered on ``import sim``. The time limit comes from each task file."""

from __future__ import annotations

import gymnasium

from sim.task import TaskSpec

# id -> RobotEnv keyword arguments.
ENVS: dict[str, dict] = {
    "robot_sac/QuadrupedWalk-v0": {"task": "quadruped_walk"},
    "robot_sac/QuadrupedWalkNominal-v0": {"task": "quadruped_walk", "randomize": False},
    "robot_sac/ClawTurn-v0": {"task": "claw_turn"},
    "robot_sac/ClawTurnFixed-v0": {"task": "claw_turn", "fixed_goal": True},
    "robot_sac/ClawTurnNominal-v0": {"task": "claw_turn", "randomize": False},
}


def register_envs() -> None:
    for env_id, kwargs in ENVS.items():
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(
            env_id,
            entry_point="sim.env:RobotEnv",
            max_episode_steps=TaskSpec.load(kwargs["task"]).episode_steps,
            kwargs=kwargs,
        )
