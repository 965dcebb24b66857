"""``robot-sac robustness`` end to end: the report files are written and parse, wrong policies are refused."""

import json
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from robot_sac.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from robustness_policies import hold_start_policy, linear_policy  # noqa: E402


def test_report_files_are_written_and_parse(tmp_path, capsys):
    policy = hold_start_policy(tmp_path / "hold.onnx", "claw_turn")
    other = linear_policy(tmp_path / "other.onnx", "claw_turn", weight=np.random.default_rng(0).normal(0, 0.5, (24, 9)))
    out = tmp_path / "report"
    code = main(["robustness", str(policy), "--task", "claw_turn", "--suite", "quick", "--episodes", "2",
                 "--workers", "1", "--compare", str(other), "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == str(policy) and summary["task"] == "claw_turn"
    swept = {"push": [0.1, 0.4], "motor_strength": [0.6, 0.3], "obs_noise": [0.05, 0.2]}
    assert {k: v["severities"] for k, v in summary["perturbations"].items()} == swept
    assert len(summary["cells"]) == 1 + 6
    for cell in summary["cells"]:
        assert {"perturbation", "severity", "backend", "episodes", "success_rate", "return_mean",
                "return_normalized", "return_std", "fall_rate"} <= set(cell)
        assert cell["backend"] == "mujoco" and cell["episodes"] == 2
    assert [c["policy"] for c in summary["compare"]] == [str(other)]
    assert len(summary["compare"][0]["cells"]) == len(summary["cells"])
    assert set(summary["verdicts"]) == set(swept)

    report = (out / "report.md").read_text()
    for name in swept:
        assert summary["verdicts"][name]["mujoco"]["text"] in report
        assert f"![{name}](heatmap_{name}.png)" in report
    assert "## Policies compared" in report
    table = report.split("## Conditions, worst first")[1].split("\n\n")[1].splitlines()[2:]
    success = [float(row.split("|")[4].strip().rstrip("%")) for row in table]
    assert success == sorted(success), "worst conditions first"

    assert set(summary["figures"]) == {"overview", *swept}
    for name in summary["figures"].values():
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    assert "report:" in capsys.readouterr().out


def test_a_policy_for_another_robot_is_refused_before_any_episode(tmp_path, capsys):
    policy = hold_start_policy(tmp_path / "quadruped.onnx", "quadruped_walk")
    code = main(["robustness", str(policy), "--task", "claw_turn", "--suite", "quick", "--workers", "1",
                 "--out", str(tmp_path / "report"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "policy is for robot 'quadruped', this robot is 'claw'" in err
    assert not (tmp_path / "report").exists()


def test_an_unknown_backend_is_named(tmp_path):
    policy = hold_start_policy(tmp_path / "hold.onnx", "claw_turn")
    with pytest.raises(SystemExit, match=r"--backend 'bullet3': unknown \(known: mujoco, pybullet, all\)"):
        main(["robustness", str(policy), "--task", "claw_turn", "--backend", "bullet3", "--out", str(tmp_path / "r")])
