"""The robustness grid: suites load strictly, and the jobs and their outcomes are fixed by the seed."""

import sys
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.typed_yaml import ConfigError
from robot_sac.robustness.grid import BASELINE, IDLE_POLICY, plan
from robot_sac.robustness.study import run_study
from robot_sac.robustness.suite import Suite, load_suite
from sim.task import TaskSpec

sys.path.insert(0, str(Path(__file__).parent))
from robustness_policies import linear_policy  # noqa: E402

GRID = {"push": [0.1, 0.4], "obs_noise": [0.05]}


def test_plan_is_a_pure_function_of_its_inputs():
    jobs = plan(GRID, ["mujoco"], policies=2, episodes=3, seed=7)
    assert jobs == plan(GRID, ["mujoco"], policies=2, episodes=3, seed=7)
    assert jobs != plan(GRID, ["mujoco"], policies=2, episodes=3, seed=8)
    # idle reference, then per policy: baseline + 3 perturbed conditions, 3 episodes each.
    assert len(jobs) == 3 + 2 * 4 * 3
    assert [j.policy for j in jobs[:3]] == [IDLE_POLICY] * 3
    assert jobs[3].condition.perturbation == BASELINE
    # Common random numbers: episode i starts from the same seed in every cell and for every policy.
    assert {(j.episode, j.seed) for j in jobs} == {(0, 7), (1, 8), (2, 9)}


def test_suites_load_strictly_and_name_the_key(tmp_path):
    for name in ("default", "quick"):
        suite = load_suite(name)
        for task in ("claw_turn", "quadruped_walk"):
            assert suite.grid(TaskSpec.load(task))
    bad = tmp_path / "bad.yaml"
    bad.write_text("episodes: 2\ntasks: {claw_turn: {earthquake: [1.0]}}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: tasks.claw_turn.earthquake: unknown perturbation"):
        load_suite(bad)
    bad.write_text("episodes: 0\n")
    with pytest.raises(ConfigError, match="episodes: need at least 1"):
        load_suite(bad)
    with pytest.raises(ConfigError, match="unknown robustness suite 'nope'"):
        load_suite("nope")


def test_a_task_missing_from_the_suite_sweeps_its_own_grid():
    task = TaskSpec.load("claw_turn")
    assert Suite(tasks={}).grid(task) == {k: [float(s) for s in v] for k, v in task.perturbations.items()}


def test_rerunning_gives_the_same_cells_with_any_number_of_workers(tmp_path):
    rng_policy = linear_policy(
        tmp_path / "p.onnx", "claw_turn", weight=np.random.default_rng(1).normal(0, 0.5, (24, 9))
    )
    suite = Suite(episodes=2, tasks={"claw_turn": {"push": [0.3], "obs_noise": [0.1]}})
    one = run_study([rng_policy], "claw_turn", ["mujoco"], suite, seed=5, workers=1, progress=False)
    two = run_study([rng_policy], "claw_turn", ["mujoco"], suite, seed=5, workers=2, progress=False)
    assert one["cells"] == two["cells"] and one["verdicts"] == two["verdicts"]
    other = run_study([rng_policy], "claw_turn", ["mujoco"], suite, seed=6, workers=1, progress=False)
    assert other["cells"] != one["cells"]


UNGUARDED_STUDY = """
import sys
from pathlib import Path

sys.path.insert(0, {tests!r})
from robustness_policies import linear_policy
from robot_sac.robustness.study import run_study
from robot_sac.robustness.suite import Suite

print("top level", flush=True)
policy = linear_policy(Path("p.onnx"), "claw_turn")
suite = Suite(episodes=1, tasks={{"claw_turn": {{"push": [0.3]}}}})
summary = run_study([policy], "claw_turn", ["mujoco"], suite, seed=5, workers=2, progress=False)
print("cells", len(summary["cells"]), flush=True)
"""


def test_a_study_from_a_script_without_a_main_guard_runs_the_script_once(tmp_path):
    """The spawned workers do not run the parent's main script, which would start the study again in each."""
    import subprocess

    (tmp_path / "study.py").write_text(UNGUARDED_STUDY.format(tests=str(Path(__file__).parent)))
    done = subprocess.run([sys.executable, "study.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "top level" and lines.count("top level") == 1 and lines[-1].startswith("cells ")
