"""Small hand-built ONNX policies with the full policy contract, for tests of the on-robot loop.

``action = tanh(obs @ W + b)``, optionally times NaN, written with ``onnx.helper``; the metadata is the
same ``PolicyContract`` the exporter writes, so ``PolicyRuntime`` checks these files like any other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from firmware_bridge.action import ActionMapper
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.policy_contract import FORMAT_VERSION, INPUT_NAME, OUTPUT_NAME, PolicyContract
from firmware_bridge.spec import RobotSpec
from firmware_bridge.task import TaskInterface


def contract_for(spec: RobotSpec, task: TaskInterface | None, version: int) -> PolicyContract:
    builder = ObservationBuilder(spec, task)
    mapper = ActionMapper(spec)
    return PolicyContract(
        policy_format=FORMAT_VERSION,
        robot=spec.name,
        robot_interface_hash=builder.interface_hash(),
        task=task.name if task is not None else "",
        task_observation=list(task.observation) if task is not None else [],
        task_goals=dict(task.goals) if task is not None else {},
        env_id="tests/hand-built",
        observation_features=[(name, width) for name, width in builder.layout],
        obs_dim=builder.dim,
        act_dim=spec.num_joints,
        action_names=spec.joint_names,
        action_center=mapper.center.tolist(),
        action_scale=mapper.scale.tolist(),
        control_rate_hz=spec.control_rate_hz,
        normalization=None,
        policy_version=version,
        run_id="tests",
        exporter="tests/policy_files.py",
    )


def write_policy(
    path: str | Path,
    spec: RobotSpec,
    task: TaskInterface | None = None,
    *,
    weights: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    nan: bool = False,
    fails: bool = False,
    version: int = 1,
) -> Path:
    """A linear-tanh policy file (zero weights and bias by default: action 0, the action centre). ``fails``: one
    that loads but raises whenever it runs (a Gather past the end of its input), as a corrupt graph can."""
    contract = contract_for(spec, task, version)
    obs_dim, act_dim = contract.obs_dim, contract.act_dim
    w = np.zeros((obs_dim, act_dim), np.float32) if weights is None else np.asarray(weights, np.float32)
    b = np.zeros(act_dim, np.float32) if bias is None else np.asarray(bias, np.float32)
    nodes = [
        helper.make_node("MatMul", [INPUT_NAME, "W"], ["z"]),
        helper.make_node("Add", ["z", "b"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["squashed" if nan or fails else OUTPUT_NAME]),
    ]
    initializers = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")]
    if fails:
        initializers.append(numpy_helper.from_array(np.arange(act_dim, dtype=np.int64) + 1000, "past_the_end"))
        nodes.append(helper.make_node("Gather", ["squashed", "past_the_end"], [OUTPUT_NAME], axis=1))
    if nan:
        initializers.append(numpy_helper.from_array(np.array([np.nan], np.float32), "nan"))
        nodes.append(helper.make_node("Mul", ["squashed", "nan"], [OUTPUT_NAME]))
    graph = helper.make_graph(
        nodes,
        "policy",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", obs_dim])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", act_dim])],
        initializers,
    )
    # IR 8 / opset 17: well inside what any onnxruntime of the last years loads.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, contract.to_metadata())
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, path)
    return path
