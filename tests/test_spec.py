"""Robot spec and task interface: strict loading, derived arrays, the interface hash, name resolution."""

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from firmware_bridge.config_paths import configs_dir, resolve_robot, resolve_task
from firmware_bridge.spec import RobotSpec
from firmware_bridge.task import TaskInterface
from firmware_bridge.typed_yaml import ConfigError

REPO = Path(__file__).resolve().parent.parent


def _claw_mapping() -> dict:
    return yaml.safe_load((REPO / "configs/robots/claw.yaml").read_text())


def test_claw_spec_loads_with_joint_order_and_limits():
    spec = RobotSpec.load(REPO / "configs/robots/claw.yaml")
    assert spec.num_joints == 9
    assert spec.joint_names[:3] == ["f0_base", "f0_middle", "f0_tip"]
    assert spec.motor_ids == [10, 11, 12, 20, 21, 22, 30, 31, 32]
    assert spec.bus.kind == "dynamixel" and spec.bus.extra_ids == {"valve_encoder": 50}
    np.testing.assert_allclose(spec.lower[:3], [-0.48, -1.0472, -1.5708])
    assert spec.control_period == pytest.approx(0.1)


def test_quadruped_spec_loads():
    spec = RobotSpec.load(resolve_robot("quadruped"))
    assert spec.num_joints == 8 and spec.bus.kind == "framed_serial"
    assert "imu" in spec.sensors and spec.control_rate_hz == 50.0


def test_unknown_key_is_named_with_file(tmp_path):
    mapping = _claw_mapping()
    mapping["joints"][1]["stiffness"] = 3.0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(mapping))
    with pytest.raises(ConfigError, match=r"bad.yaml: joints\[1\]\.stiffness: unknown key for JointSpec"):
        RobotSpec.load(path)


def test_wrong_type_and_bad_bus_kind_are_named():
    mapping = _claw_mapping()
    mapping["joints"][0]["kp"] = "stiff"
    with pytest.raises(ConfigError, match=r"joints\[0\]\.kp: expected a number"):
        RobotSpec.from_mapping(mapping)
    mapping = _claw_mapping()
    mapping["bus"]["kind"] = "can"
    with pytest.raises(ConfigError, match=r"bus\.kind: 'can' is not one of"):
        RobotSpec.from_mapping(mapping)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["joints"][0].update(lower=1.0), r"joints\[0\] \(f0_base\): lower 1.0 must be below upper"),
        (lambda m: m["joints"][2].update(start=2.0), r"joints\[2\] \(f0_tip\): start 2.0 outside"),
        (lambda m: m["joints"][4].update(name="f0_base"), r"duplicate joint name 'f0_base'"),
        (lambda m: m["joints"][4].update(motor_id=50), r"motor id 50 used twice"),
        (lambda m: m["action"].update(scale=[0.1, 0.2]), r"action.scale: 2 values for 9 joints"),
        (lambda m: m["joints"][3].update(max_torque=0.0), r"joints\[3\] \(f1_base\)\.max_torque: must be positive"),
        (lambda m: m["safe_state"].update(damping_s=-0.1), r"safe_state.damping_s: must not be negative"),
    ],
)
def test_inconsistent_spec_is_refused(edit, message):
    mapping = _claw_mapping()
    edit(mapping)
    with pytest.raises(ConfigError, match=message):
        RobotSpec.from_mapping(mapping)


def test_interface_hash_is_stable_and_tracks_the_interface():
    mapping = _claw_mapping()
    spec = RobotSpec.from_mapping(mapping)
    assert spec.interface_hash() == RobotSpec.from_mapping(copy.deepcopy(mapping)).interface_hash()
    assert len(spec.interface_hash()) == 64 and int(spec.interface_hash(), 16) >= 0
    # Gains are tuning, not interface.
    retuned = copy.deepcopy(mapping)
    retuned["joints"][0]["kp"] = 5.0
    assert RobotSpec.from_mapping(retuned).interface_hash() == spec.interface_hash()
    # A limit, the joint order or the observation layout change the hash.
    for edit in (
        lambda m: m["joints"][0].update(upper=0.4),
        lambda m: m["joints"].insert(0, m["joints"].pop(1)),
        lambda m: m.update(observation=["last_action", "joint_pos"]),
    ):
        changed = copy.deepcopy(mapping)
        edit(changed)
        assert RobotSpec.from_mapping(changed).interface_hash() != spec.interface_hash()
    assert spec.interface_hash(["joint_pos", "last_action", "valve_target_error"]) != spec.interface_hash()


def test_task_interface_by_name_and_path_reads_only_its_keys():
    by_name = TaskInterface.load("claw_turn")
    by_path = TaskInterface.load(REPO / "configs/tasks/claw_turn.yaml")
    assert by_name == by_path
    assert by_name.robot == "claw" and by_name.goals == {"valve_angle": pytest.approx(3.14159)}
    assert "valve_target_error" in by_name.observation
    assert by_name.load_robot().name == "claw"


def test_task_interface_errors_name_file_and_key(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nrobot: claw\nobservation: joint_pos\n")
    with pytest.raises(ConfigError, match=r"t.yaml: observation: expected a list"):
        TaskInterface.load(path)
    path.write_text("name: t\n")
    with pytest.raises(ConfigError, match=r"t.yaml: robot: required key missing"):
        TaskInterface.load(path)


def test_resolver_reports_unknown_names_and_missing_files():
    assert resolve_task("quadruped_walk") == configs_dir() / "tasks" / "quadruped_walk.yaml"
    with pytest.raises(ConfigError, match=r"unknown task 'claw_turnn' \(known: .*claw_turn"):
        resolve_task("claw_turnn")
    with pytest.raises(ConfigError, match=r"nope/robot.yaml: no such robot file"):
        resolve_robot("nope/robot.yaml")


def test_resolver_works_from_another_directory(tmp_path):
    code = "from firmware_bridge.config_paths import resolve_task; print(resolve_task('claw_turn'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == REPO / "configs/tasks/claw_turn.yaml"


def test_firmware_bridge_contract_imports_no_physics_or_torch():
    code = (
        "import sys, firmware_bridge.spec, firmware_bridge.task, firmware_bridge.state, "
        "firmware_bridge.observation, firmware_bridge.action\n"
        "bad = [m for m in ('torch', 'mujoco', 'pybullet', 'gymnasium', 'sim', 'robot_sac') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
