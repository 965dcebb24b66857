"""Cell metrics and verdicts: by hand on known outcomes, and end to end on a scripted policy whose episodes
have outcomes known in closed form."""

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from firmware_bridge.config_paths import resolve_task
from robot_sac.robustness.grid import Condition
from robot_sac.robustness.metrics import cell_metrics, normalized_return, verdict
from robot_sac.robustness.runner import EpisodeOutcome
from robot_sac.robustness.study import run_study
from robot_sac.robustness.suite import Suite
from sim.env import RobotEnv

sys.path.insert(0, str(Path(__file__).parent))
from robustness_policies import hold_start_policy  # noqa: E402


def test_cell_metrics_from_known_outcomes():
    outcomes = [EpisodeOutcome(10.0, True, False, 40), EpisodeOutcome(30.0, False, True, 12),
                EpisodeOutcome(20.0, True, False, 40), EpisodeOutcome(0.0, False, True, 8)]
    cell = cell_metrics(Condition("push", 120.0), "mujoco", outcomes, baseline_return=25.0, idle_return=5.0)
    assert cell["perturbation"] == "push" and cell["severity"] == 120.0 and cell["backend"] == "mujoco"
    assert cell["episodes"] == 4
    assert cell["success_rate"] == 0.5
    assert cell["return_mean"] == 15.0
    assert cell["return_std"] == pytest.approx(np.sqrt(125.0))
    assert cell["return_normalized"] == pytest.approx((15.0 - 5.0) / (25.0 - 5.0))
    assert cell["fall_rate"] == 0.5
    assert cell["length_mean"] == 25.0


def test_normalized_return_scale():
    assert normalized_return(100.0, baseline=100.0, idle=-20.0) == 1.0
    assert normalized_return(-20.0, baseline=100.0, idle=-20.0) == 0.0
    assert normalized_return(-80.0, baseline=100.0, idle=-20.0) == -0.5
    assert normalized_return(5.0, baseline=-20.0, idle=-20.0) is None
    assert normalized_return(5.0, baseline=-30.0, idle=-20.0) is None


def _cells(rates):
    return [{"perturbation": "friction", "severity": s, "success_rate": r} for s, r in rates]


def test_verdict_names_the_first_severity_below_half():
    baseline = {"perturbation": "none", "severity": 0.0, "success_rate": 0.9}
    v = verdict(baseline, _cells([(0.7, 0.8), (0.4, 0.45), (0.2, 0.6)]))
    assert (v["breaks_at"], v["holds_up_to"]) == (0.4, 0.7)
    assert v["text"] == "friction: success drops below 50% at severity 0.4 (45%), holds at 0.7"
    v = verdict(baseline, _cells([(0.7, 0.8), (0.4, 0.5)]))
    assert (v["breaks_at"], v["holds_up_to"]) == (None, 0.4)
    v = verdict({**baseline, "success_rate": 0.3}, _cells([(0.7, 0.8)]))
    assert v["breaks_at"] is None and "already without perturbation" in v["text"]


def _short_claw_task(path: Path) -> Path:
    """The claw turn task, 5 ticks, goals within +/-0.4 rad, reward -|goal error| + 1 inside 10 degrees."""
    mapping = yaml.safe_load(resolve_task("claw_turn").read_text())
    mapping.update(episode_steps=5, goal_sampling={"valve_angle": [-0.4, 0.4]},
                   reward={"angle_error": -1.0, "within_tolerance": 1.0})
    path.write_text(yaml.safe_dump(mapping))
    return path


def test_scripted_policy_cell_has_its_known_outcomes(tmp_path):
    task = str(_short_claw_task(tmp_path / "claw_short.yaml"))
    policy = hold_start_policy(tmp_path / "hold.onnx", task)
    episodes, seed = 6, 11
    suite = Suite(episodes=episodes, tasks={"claw_turn": {"obs_noise": [0.1]}})
    summary = run_study([policy], task, ["mujoco"], suite, seed=seed, workers=1, progress=False)

    # Holding the start pose leaves the valve where it starts (0 rad on the nominal model), so each episode's
    # outcome follows from its goal alone.
    env = RobotEnv(task, randomize=False)
    goals = np.array([abs(env.reset(seed=seed + i)[1]["goals"]["valve_angle"]) for i in range(episodes)])
    env.close()
    inside = goals < np.deg2rad(10.0)
    expected_returns = 5 * (-goals + inside)
    assert 0 < inside.sum() < episodes, "the seeds should give both outcomes"

    baseline, noisy = summary["cells"]
    assert (baseline["perturbation"], noisy["perturbation"], noisy["severity"]) == ("none", "obs_noise", 0.1)
    assert baseline["success_rate"] == pytest.approx(inside.mean())
    np.testing.assert_allclose(baseline["returns"], expected_returns, atol=0.02)
    assert baseline["return_mean"] == pytest.approx(expected_returns.mean(), abs=0.02)
    assert baseline["fall_rate"] == 0.0 and baseline["length_mean"] == 5
    # The policy is blind, so sensor noise changes nothing; and it is the idle reference itself, so there is
    # no span to normalize by.
    assert noisy["returns"] == baseline["returns"] and noisy["success_rate"] == baseline["success_rate"]
    assert summary["idle_return"]["mujoco"] == pytest.approx(baseline["return_mean"])
    assert baseline["return_normalized"] is None
