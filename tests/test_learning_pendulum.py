"""A learning test that reaches the update: SAC solves Pendulum-v1 within 6,000 steps."""

import pytest

from robot_sac.config import load_train_config
from robot_sac.trainer import Trainer


@pytest.mark.slow
def test_pendulum_reaches_minus_200_within_6000_steps(tmp_path):
    cfg = load_train_config("configs/train/pendulum.yaml", ["eval_episodes=10", "eval_interval=2000"],
                            total_steps=6_000, seed=0)
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    summary = trainer.train()
    assert trainer.agent.updates == 6_000 - cfg.learning_starts
    assert summary["eval_return_final"] >= -200, summary["evals"]
