"""A learning test on the claw: SAC turns the valve to its goal far better than a random policy in 10,000 steps.

The variant is the easiest one, and deliberately so: ``ClawTurnFixed-v0`` (the fixed goal, half a turn from a
valve starting at 0) on the nominal model (``randomize: false``), with small networks
(``configs/train/claw_turn_ci.yaml``). It shows that the claw env, the reward and SAC together learn to turn
the valve; it says nothing about the real task (random goals, randomized dynamics), which needs ~100k steps
(docs/learning.md). The env is deterministic, so each policy's episodes repeat exactly; the random policy's
vary with its actions. Both are scored on the same evaluation seeds, by the valve's goal error at the end of
the episode (what the task's success is judged on).
"""

import numpy as np
import pytest

from robot_sac.config import load_train_config
from robot_sac.envs import make_env
from robot_sac.trainer import Trainer
from sim.rewards import valve_error

CONFIG = "configs/train/claw_turn_ci.yaml"
EVAL_EPISODES = 10
EVAL_SEED = 2_000_000


def final_goal_errors_deg(env, policy, episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED) -> np.ndarray:
    """|valve goal error| in degrees at the end of each episode, episode ``i`` reset with seed ``seed + i``."""
    errors = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(policy(obs))
            done = terminated or truncated
        state = env.unwrapped
        errors.append(abs(np.rad2deg(valve_error(state.true_state, state.goals))))
    return np.array(errors)


@pytest.mark.slow
def test_sac_turns_the_claw_valve_far_better_than_random(tmp_path):
    cfg = load_train_config(CONFIG)
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    trainer.train()
    assert trainer.agent.updates == cfg.total_steps - cfg.learning_starts

    env = make_env(cfg.env, cfg.env_kwargs)
    learned = final_goal_errors_deg(env, lambda obs: trainer.agent.act(obs, deterministic=True))
    rng = np.random.default_rng(0)
    random = final_goal_errors_deg(env, lambda obs: rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32))
    # Measured (docs/learning.md): the random policy ends ~130 degrees off, the zero action 172; trained
    # policies ended 1-28 degrees off on 10 seeds. Half the random policy's error leaves a wide margin both ways.
    report = f"learned {learned.round(1)}, random {random.round(1)}"
    assert learned.mean() < 0.5 * random.mean(), report
