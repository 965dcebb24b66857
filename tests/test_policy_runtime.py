"""PolicyRuntime: refuses every kind of wrong file with one error naming each problem; runs the right one."""

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.policy_contract import Mismatch, PolicyContract
from firmware_bridge.policy_runtime import PolicyRejectedError, PolicyRuntime
from firmware_bridge.spec import RobotSpec
from firmware_bridge.task import TaskInterface
from firmware_bridge.typed_yaml import to_mapping
from robot_sac.export import ExportedPolicy, TorchPolicy, build_contract, robot_interface, to_onnx
from robot_sac.networks import Actor, ObservationNormalizer


@pytest.fixture(scope="module")
def claw():
    task = TaskInterface.load("claw_turn")
    return task.load_robot(), task


@pytest.fixture(scope="module")
def claw_policy(claw):
    robot, task = claw
    interface = robot_interface(robot, task)
    torch.manual_seed(0)
    actor = Actor(interface["obs_dim"], interface["act_dim"], (32, 32)).eval()
    normalizer = ObservationNormalizer(interface["obs_dim"], enabled=True)
    normalizer.update(torch.randn(500, interface["obs_dim"], dtype=torch.float64) * 3.0 + 1.0)
    contract = build_contract(interface, "robot_sac/ClawTurn-v0", normalizer.eval(), 7, "test-run")
    return to_onnx(ExportedPolicy(actor, normalizer), contract), TorchPolicy(actor, normalizer), contract


def _spec_with(robot: RobotSpec, **changes) -> RobotSpec:
    mapping = to_mapping(robot)
    for key, value in changes.items():
        mapping[key] = value
    return RobotSpec.from_mapping(mapping)


def _refusal(policy, robot=None, task=None) -> PolicyRejectedError:
    with pytest.raises(PolicyRejectedError) as info:
        PolicyRuntime(policy, robot, task)
    return info.value


def _with_metadata(data: bytes, edit) -> bytes:
    model = onnx.load_from_string(data)
    metadata = {p.key: p.value for p in model.metadata_props}
    edit(metadata)
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


def test_matching_policy_runs_like_the_torch_actor_from_bytes_and_from_a_path(claw, claw_policy, tmp_path):
    robot, task = claw
    data, torch_policy, contract = claw_policy
    path = tmp_path / "policy.onnx"
    path.write_bytes(data)
    from_path = PolicyRuntime(path, robot, task)
    from_bytes = PolicyRuntime(data, robot)  # task defaults to the one the file records
    assert from_path.contract == contract and from_path.version == 7
    assert (from_path.obs_dim, from_path.act_dim) == (ObservationBuilder(robot, task).dim, 9)
    obs = np.random.default_rng(1).normal(1.0, 4.0, size=(50, contract.obs_dim)).astype(np.float32)
    with torch.no_grad():
        expected = torch_policy(torch.from_numpy(obs)).numpy()
    single = np.stack([from_path(o) for o in obs])
    np.testing.assert_allclose(single, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(from_bytes.run_batch(obs), expected, rtol=0, atol=1e-5)
    assert np.abs(single).max() <= 1.0
    # float64 observations (what numpy code produces) are accepted, and ``out`` is filled in place.
    out = np.empty(9, dtype=np.float32)
    assert from_path(obs[0].astype(np.float64), out=out) is out
    np.testing.assert_allclose(out, expected[0], rtol=0, atol=1e-5)
    # Each call's result is its own array, not a view of the runtime's buffer.
    first = from_path(obs[0])
    from_path(obs[1])
    np.testing.assert_allclose(first, expected[0], rtol=0, atol=1e-5)


def test_latency_figures_count_calls_after_warm_up(claw_policy):
    runtime = PolicyRuntime(claw_policy[0])
    assert runtime.latency_us() == {"calls": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    for _ in range(30):
        runtime(np.zeros(runtime.obs_dim, dtype=np.float32))
    stats = runtime.latency_us()
    assert stats["calls"] == 30 and 0 < stats["p50"] <= stats["p99"] <= stats["max"]


def test_wrong_observation_shape_is_an_error(claw_policy):
    runtime = PolicyRuntime(claw_policy[0])
    n = runtime.obs_dim
    with pytest.raises(ValueError, match=rf"observation shape \({n - 1},\), expected \({n},\)"):
        runtime(np.zeros(n - 1, dtype=np.float32))


def test_policy_for_another_robot_lists_every_mismatch(claw_policy):
    quadruped_task = TaskInterface.load("quadruped_walk")
    error = _refusal(claw_policy[0], quadruped_task.load_robot())
    assert error.kinds == {
        Mismatch.ROBOT, Mismatch.OBSERVATION_LAYOUT, Mismatch.INTERFACE_HASH, Mismatch.ACT_DIM,
        Mismatch.ACTION_NAMES, Mismatch.ACTION_SCALING, Mismatch.CONTROL_RATE,
    }
    text = str(error)
    assert "cannot build the policy's observation" in text and "needs sensor 'valve_encoder'" in text
    assert "policy is for robot 'claw', this robot is 'quadruped'" in text
    assert "policy outputs 9 actions, robot 'quadruped' has 8 joints" in text
    assert "policy runs at 10.0 Hz, robot 'quadruped' at 50.0 Hz" in text
    assert text.startswith("<") and "policy refused (" in text


def test_changed_motor_id_changes_only_the_interface_hash(claw, claw_policy):
    robot, task = claw
    joints = to_mapping(robot)["joints"]
    joints[4]["motor_id"] = 99
    error = _refusal(claw_policy[0], _spec_with(robot, joints=joints), task)
    assert error.kinds == {Mismatch.INTERFACE_HASH}
    assert "joints, limits, motor ids" in str(error)


def test_changed_joint_limit_changes_the_hash_and_the_action_scaling(claw, claw_policy):
    robot, task = claw
    joints = to_mapping(robot)["joints"]
    joints[0]["upper"] = 0.5
    error = _refusal(claw_policy[0], _spec_with(robot, joints=joints), task)
    assert error.kinds == {Mismatch.INTERFACE_HASH, Mismatch.ACTION_SCALING}
    assert "action center" in str(error) and "action scale" in str(error)


def test_changed_observation_layout_is_named_feature_by_feature(claw, claw_policy):
    robot, task = claw
    error = _refusal(claw_policy[0], _spec_with(robot, observation=["joint_pos", "joint_vel", "last_action"]), task)
    assert error.kinds == {Mismatch.OBSERVATION_LAYOUT, Mismatch.OBS_DIM, Mismatch.INTERFACE_HASH}
    text = str(error)
    features = claw_policy[2].observation_features
    assert "feature 1: policy last_action(9), robot joint_vel(9)" in text
    assert f"feature {len(features)}: policy nothing, robot {features[-1][0]}({features[-1][1]})" in text
    n = claw_policy[2].obs_dim
    assert f"policy takes {n} observation values, this robot builds {n + 9}" in text


def test_renamed_joint_and_other_control_rate(claw, claw_policy):
    robot, task = claw
    joints = to_mapping(robot)["joints"]
    joints[2]["name"] = "f0_distal"
    error = _refusal(claw_policy[0], _spec_with(robot, joints=joints, control_rate_hz=20.0), task)
    assert error.kinds == {Mismatch.ACTION_NAMES, Mismatch.CONTROL_RATE, Mismatch.INTERFACE_HASH}
    assert "'f0_distal'" in str(error)


def test_other_task_is_refused(claw, claw_policy):
    robot, task = claw
    other = dataclasses.replace(task, name="claw_spin", observation=["valve_angle_cos_sin", "valve_velocity"])
    error = _refusal(claw_policy[0], robot, other)
    assert error.kinds == {Mismatch.TASK, Mismatch.OBSERVATION_LAYOUT, Mismatch.OBS_DIM, Mismatch.INTERFACE_HASH}
    assert "policy is for task 'claw_turn', asked to run task 'claw_spin'" in str(error)


def test_a_robot_refuses_a_policy_trained_without_one(claw, claw_policy):
    robot, task = claw
    contract = claw_policy[2]
    gym_only = _with_metadata(claw_policy[0], lambda m: m.update(robot='""', robot_interface_hash='""', task='""'))
    assert PolicyRuntime(gym_only).contract.robot == ""  # fine for evaluation in simulation
    error = _refusal(gym_only, robot, task)
    assert error.kinds == {Mismatch.ROBOT}
    assert f"trained on env {contract.env_id!r}, not on a robot" in str(error)


def test_missing_metadata_keys_are_all_named(claw, claw_policy):
    def drop(metadata):
        del metadata["robot_interface_hash"], metadata["control_rate_hz"]

    error = _refusal(_with_metadata(claw_policy[0], drop), *claw)
    assert error.kinds == {Mismatch.MISSING_METADATA}
    assert "metadata key(s) missing: robot_interface_hash, control_rate_hz" in str(error)


def test_malformed_metadata_names_the_key(claw_policy):
    error = _refusal(_with_metadata(claw_policy[0], lambda m: m.update(obs_dim="twenty-four")))
    assert error.kinds == {Mismatch.BAD_METADATA} and "metadata 'obs_dim' is not JSON" in str(error)
    error = _refusal(_with_metadata(claw_policy[0], lambda m: m.update(act_dim='[9]')))
    assert error.kinds == {Mismatch.BAD_METADATA} and "metadata.act_dim: expected an integer" in str(error)
    error = _refusal(_with_metadata(claw_policy[0], lambda m: m.update(action_names='["a","b"]')))
    assert "action_names has 2 entries, act_dim says 9" in str(error)
    error = _refusal(_with_metadata(claw_policy[0], lambda m: m.update(policy_format="2")))
    assert error.kinds == {Mismatch.FORMAT_VERSION} and "policy_format 2, this runtime reads 1" in str(error)


def test_files_that_are_not_onnx_are_refused(tmp_path, claw_policy):
    text = tmp_path / "notes.txt"
    text.write_text("hello, robot\n")
    error = _refusal(text)
    assert error.kinds == {Mismatch.NOT_ONNX}
    assert str(error).startswith(f"{text}: policy refused")
    assert "an ONNX model starts with its ir_version (byte 0x08), this file starts with 68 65 6c 6c" in str(error)
    checkpoint = tmp_path / "best.pt"
    torch.save({"actor": {}}, checkpoint)
    assert _refusal(checkpoint).kinds == {Mismatch.NOT_ONNX}
    assert "the file is empty" in str(_refusal(b""))
    with pytest.raises(FileNotFoundError, match="no such policy file"):
        PolicyRuntime(tmp_path / "missing.onnx")


def test_truncated_file_is_refused_with_the_byte_counts(claw_policy):
    data = claw_policy[0]
    for cut in (len(data) // 2, len(data) - 300, 11):
        error = _refusal(data[:cut])
        assert error.kinds == {Mismatch.TRUNCATED}, (cut, str(error))
        assert f"ends at byte {cut}" in str(error)


def test_fields_from_a_newer_onnx_are_skipped_but_bad_wire_types_are_not(claw_policy):
    data = claw_policy[0]
    # Field 30 does not exist in ModelProto today: a varint (tag 0xF0 0x01) and a 4-byte fixed32 (0xF5 0x01).
    newer = data + bytes([0xF0, 0x01, 0x05, 0xF5, 0x01, 1, 2, 3, 4])
    assert PolicyRuntime(newer).contract == claw_policy[2]
    error = _refusal(data + bytes([0x3B]))  # field 7 (graph) with wire type 3, a protobuf group
    assert error.kinds == {Mismatch.NOT_ONNX} and f"byte {len(data)}: graph with wire type 3" in str(error)


def test_damaged_graph_that_still_parses_is_refused_by_onnxruntime(claw_policy):
    model = onnx.load_from_string(claw_policy[0])
    model.graph.node[0].op_type = "NoSuchOperator"
    error = _refusal(model.SerializeToString())
    assert error.kinds == {Mismatch.UNLOADABLE} and "NoSuchOperator" in str(error)


def test_a_graph_that_loads_but_fails_to_run_is_refused_not_raised(claw, tmp_path):
    from policy_files import write_policy

    path = write_policy(tmp_path / "fails.onnx", *claw, fails=True)
    error = _refusal(path, *claw)
    assert error.kinds == {Mismatch.FAILS_TO_RUN}
    assert "onnxruntime loads it, but running it fails: on a zero observation:" in str(error)
    assert "Gather node" in str(error) and "indices element out of data bounds" in str(error)


def _foreign_model(in_name="x", in_shape=(1, 5), out_name="y", out_shape=(1, 5), dtype=TensorProto.FLOAT):
    graph = helper.make_graph(
        [helper.make_node("Tanh", [in_name], [out_name])],
        "foreign",
        [helper.make_tensor_value_info(in_name, dtype, list(in_shape))],
        [helper.make_tensor_value_info(out_name, dtype, list(out_shape))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def test_foreign_model_without_metadata_and_with_other_io_is_refused(claw):
    error = _refusal(_foreign_model().SerializeToString(), *claw)
    assert error.kinds == {Mismatch.MISSING_METADATA, Mismatch.INPUT_OUTPUT}
    text = str(error)
    assert "graph inputs are ['x'], expected exactly ['obs']" in text
    assert "graph outputs are ['y'], expected exactly ['action']" in text


def test_right_metadata_on_a_graph_of_the_wrong_shape_is_refused(claw, claw_policy):
    model = _foreign_model("obs", ("batch", 20), "action", ("batch", 20))
    for key, value in claw_policy[2].to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    error = _refusal(model.SerializeToString(), *claw)
    assert error.kinds == {Mismatch.INPUT_OUTPUT}
    assert f"input 'obs' has shape ['batch', 20], expected [batch, {claw_policy[2].obs_dim}]" in str(error)
    assert "output 'action' has shape ['batch', 20], expected [batch, 9]" in str(error)


def test_contract_round_trips_through_metadata(claw_policy):
    contract = claw_policy[2]
    parsed, problems = PolicyContract.from_metadata(contract.to_metadata())
    assert problems == [] and parsed == contract
    assert parsed.task_interface() == TaskInterface.load("claw_turn")


def test_double_precision_graph_is_refused():
    model = _foreign_model("obs", ("batch", 24), "action", ("batch", 24), dtype=TensorProto.DOUBLE)
    error = _refusal(model.SerializeToString())
    assert Mismatch.INPUT_OUTPUT in error.kinds
    assert "input 'obs' is tensor(double), expected tensor(float)" in str(error)
