"""Small policy files for the robustness tests: real ONNX graphs with the metadata ``PolicyRuntime`` checks,
built with ``onnx.helper`` (no training): ``action = tanh(obs @ weight + bias)``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from firmware_bridge.action import ActionMapper
from firmware_bridge.policy_contract import FORMAT_VERSION, INPUT_NAME, OUTPUT_NAME, PolicyContract
from robot_sac.export import robot_interface
from sim.task import TaskSpec


def linear_policy(path: Path, task: str | Path, weight: np.ndarray | None = None, bias: np.ndarray | None = None,
                  run_id: str = "scripted") -> Path:
    """Write ``tanh(obs @ weight + bias)`` for ``task``'s robot to ``path``; zeros where not given."""
    spec = TaskSpec.load(task)
    robot = spec.load_robot()
    interface = robot_interface(robot, spec)
    obs_dim, act_dim = interface["obs_dim"], interface["act_dim"]
    weight = np.zeros((obs_dim, act_dim), np.float32) if weight is None else weight.astype(np.float32)
    bias = np.zeros(act_dim, np.float32) if bias is None else bias.astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", [INPUT_NAME, "weight"], ["linear"]),
         helper.make_node("Add", ["linear", "bias"], ["pre"]),
         helper.make_node("Tanh", ["pre"], [OUTPUT_NAME])],
        "scripted_policy",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", obs_dim])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", act_dim])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    contract = PolicyContract(policy_format=FORMAT_VERSION, env_id=f"robot_sac/{spec.name}", normalization=None,
                              policy_version=1, run_id=run_id, exporter="tests", **interface)
    for key, value in contract.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    path.write_bytes(model.SerializeToString())
    return path


def hold_start_policy(path: Path, task: str | Path) -> Path:
    """A policy that commands the robot's start pose whatever it observes."""
    robot = TaskSpec.load(task).load_robot()
    mapper = ActionMapper(robot)
    action = np.clip((robot.start - mapper.center) / mapper.scale, -0.999, 0.999)
    return linear_policy(path, task, bias=np.arctanh(action), run_id="hold_start")
