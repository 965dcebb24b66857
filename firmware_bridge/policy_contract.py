"""The policy contract: what a ``policy.onnx`` file says about itself, and how it is checked against a robot.

Export (``robot_sac.export``) writes a ``PolicyContract`` into the ONNX model's ``metadata_props``, one key
per field, each value JSON text (so numbers and lists round-trip exactly). The robot reads it back and
compares it with its own spec before a motor moves; ``mismatches`` names every difference at once.

A policy trained on a plain Gymnasium env (Pendulum-v1) has no robot: ``robot``, ``robot_interface_hash``
and ``task`` are empty, the observation is one feature named ``observation``, and the action scaling is the
env's own action bounds. Such a file loads without a robot spec (for evaluation) and is refused by a robot.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, fields

import numpy as np

from firmware_bridge import typed_yaml
from firmware_bridge.action import ActionMapper
from firmware_bridge.observation import ObservationBuilder, TaskObservation
from firmware_bridge.spec import RobotSpec
from firmware_bridge.task import TaskInterface
from firmware_bridge.typed_yaml import ConfigError

FORMAT_VERSION = 1
"""Bumped when a key changes meaning; a runtime refuses a format it does not know."""

INPUT_NAME = "obs"
OUTPUT_NAME = "action"


class Mismatch(str, enum.Enum):
    """Why a policy file is refused; ``PolicyRejectedError.kinds`` holds these."""

    NOT_ONNX = "not an ONNX model"
    TRUNCATED = "truncated file"
    UNLOADABLE = "onnxruntime cannot load it"
    FAILS_TO_RUN = "onnxruntime loads it, but running it fails"
    MISSING_METADATA = "missing metadata"
    BAD_METADATA = "malformed metadata"
    FORMAT_VERSION = "unknown policy format version"
    INPUT_OUTPUT = "wrong graph inputs or outputs"
    ROBOT = "wrong robot"
    TASK = "wrong task"
    INTERFACE_HASH = "robot interface hash differs"
    OBSERVATION_LAYOUT = "observation layout differs"
    OBS_DIM = "observation dimension differs"
    ACT_DIM = "action dimension differs"
    ACTION_NAMES = "action names differ"
    ACTION_SCALING = "action scaling differs"
    CONTROL_RATE = "control rate differs"


Problem = tuple[Mismatch, str]


@dataclass(frozen=True)
class Normalization:
    """The observation normalization folded into the graph, recorded for inspection:
    ``clip((obs - mean) / sqrt(var + eps), -clip, clip)``."""

    mean: list[float]
    var: list[float]
    clip: float
    eps: float


@dataclass(frozen=True)
class PolicyContract:
    policy_format: int
    """``FORMAT_VERSION`` of the writer."""
    robot: str
    """Robot name from the robot spec; empty for a non-robot env."""
    robot_interface_hash: str
    """``ObservationBuilder.interface_hash()`` at export: joints, limits, observation layout, action mapping,
    control rate. Empty for a non-robot env."""
    task: str
    """Task name; empty for a non-robot env."""
    task_observation: list[str]
    """Features the task appends after the robot's own (so a robot can build the observation without the
    task file)."""
    task_goals: dict[str, float]
    """The task's fixed goals, the values a robot uses unless told otherwise."""
    env_id: str
    """Gymnasium id the policy was trained on."""
    observation_features: list[tuple[str, int]]
    """The observation layout: feature names and widths, in order."""
    obs_dim: int
    act_dim: int
    action_names: list[str]
    """Joint names in action order (``a0``, ``a1``... for a non-robot env)."""
    action_center: list[float]
    """Target for action 0, per action [rad for a robot; env units otherwise]."""
    action_scale: list[float]
    """Half-range that action +/-1 spans around the centre."""
    control_rate_hz: float
    """Policy rate; 0 where the env does not define one."""
    normalization: Normalization | None
    """Observation statistics folded into the graph, or None when the policy takes raw observations."""
    policy_version: int
    """Monotonic within a run: the training step at export, or the learner's version counter."""
    run_id: str
    """The training run (its directory name)."""
    exporter: str
    """Software that wrote the file: robot_sac, torch and opset versions."""

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_metadata(self) -> dict[str, str]:
        """ONNX ``metadata_props``: one key per field, the value as JSON text."""
        mapping = typed_yaml.to_mapping(self)
        return {key: json.dumps(mapping[key], sort_keys=True, separators=(",", ":")) for key in self.keys()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> tuple[PolicyContract | None, list[Problem]]:
        """Parse ``metadata_props``; returns the contract, or None and the problems that prevent reading it."""
        missing = [key for key in cls.keys() if key not in metadata]
        if missing:
            return None, [(Mismatch.MISSING_METADATA, f"metadata key(s) missing: {', '.join(missing)}")]
        decoded, problems = {}, []
        for key in cls.keys():
            try:
                decoded[key] = json.loads(metadata[key])
            except json.JSONDecodeError as exc:
                problems.append((Mismatch.BAD_METADATA, f"metadata {key!r} is not JSON ({exc}): {metadata[key]!r:.80}"))
        if problems:
            return None, problems
        if decoded["policy_format"] != FORMAT_VERSION:
            found = decoded["policy_format"]
            return None, [(Mismatch.FORMAT_VERSION, f"policy_format {found!r}, this runtime reads {FORMAT_VERSION}")]
        try:
            contract = typed_yaml.from_mapping(cls, decoded, "metadata")
        except ConfigError as exc:
            return None, [(Mismatch.BAD_METADATA, str(exc))]
        return contract, contract._self_consistency()

    def _self_consistency(self) -> list[Problem]:
        problems = []
        width = sum(w for _, w in self.observation_features)
        if width != self.obs_dim:
            problems.append(
                (Mismatch.BAD_METADATA, f"observation_features add up to {width}, obs_dim says {self.obs_dim}")
            )
        for key in ("action_names", "action_center", "action_scale"):
            if len(getattr(self, key)) != self.act_dim:
                problems.append(
                    (Mismatch.BAD_METADATA, f"{key} has {len(getattr(self, key))} entries, act_dim says {self.act_dim}")
                )
        return problems

    def task_interface(self) -> TaskInterface | None:
        """The task part a robot needs to build this policy's observation; None for a non-robot policy."""
        if not self.robot:
            return None
        return TaskInterface(name=self.task, robot=self.robot, observation=self.task_observation, goals=self.task_goals)

    def mismatches(self, robot_spec: RobotSpec, task: TaskObservation | None = None) -> list[Problem]:
        """Every way this policy does not fit ``robot_spec`` (and ``task``; default: the task recorded in the
        policy). Empty when the robot may run it."""
        if not self.robot:
            return [(Mismatch.ROBOT, f"policy was trained on env {self.env_id!r}, not on a robot; "
                                     f"robot {robot_spec.name!r} cannot run it")]
        problems: list[Problem] = []
        if self.robot != robot_spec.name:
            problems.append((Mismatch.ROBOT, f"policy is for robot {self.robot!r}, this robot is {robot_spec.name!r}"))
        if task is not None and task.name != self.task:
            problems.append((Mismatch.TASK, f"policy is for task {self.task!r}, asked to run task {task.name!r}"))
        try:
            builder = ObservationBuilder(robot_spec, task if task is not None else self.task_interface())
        except ConfigError as exc:
            problems.append((Mismatch.OBSERVATION_LAYOUT, f"this robot cannot build the policy's observation: {exc}"))
            # Still hash the robot's joints, limits and action mapping, over the policy's own layout.
            robot_hash = robot_spec.interface_hash([name for name, _ in self.observation_features])
        else:
            expected = [(name, width) for name, width in builder.layout]
            if expected != self.observation_features:
                problems.append((Mismatch.OBSERVATION_LAYOUT, _layout_diff(self.observation_features, expected)))
            if builder.dim != self.obs_dim:
                problems.append((Mismatch.OBS_DIM, f"policy takes {self.obs_dim} observation values, "
                                                   f"this robot builds {builder.dim}"))
            robot_hash = builder.interface_hash()
        if robot_hash != self.robot_interface_hash:
            problems.append((Mismatch.INTERFACE_HASH,
                             f"policy {self.robot_interface_hash[:12]}, robot {robot_hash[:12]}: joints, limits, "
                             f"motor ids, observation layout, action mapping or control rate changed since export"))
        if self.act_dim != robot_spec.num_joints:
            problems.append((Mismatch.ACT_DIM, f"policy outputs {self.act_dim} actions, "
                                               f"robot {robot_spec.name!r} has {robot_spec.num_joints} joints"))
        if self.action_names != robot_spec.joint_names:
            problems.append((Mismatch.ACTION_NAMES, f"policy acts on {self.action_names}, "
                                                    f"robot joints are {robot_spec.joint_names}"))
        mapper = ActionMapper(robot_spec)
        for key, robot_value in (("center", mapper.center), ("scale", mapper.scale)):
            policy_value = np.asarray(getattr(self, f"action_{key}"), dtype=np.float64)
            if policy_value.shape != robot_value.shape or not np.allclose(policy_value, robot_value, rtol=0, atol=1e-9):
                problems.append((Mismatch.ACTION_SCALING, f"action {key}: policy {policy_value.tolist()}, "
                                                          f"robot {robot_value.tolist()}"))
        if self.control_rate_hz != robot_spec.control_rate_hz:
            problems.append((Mismatch.CONTROL_RATE, f"policy runs at {self.control_rate_hz} Hz, "
                                                    f"robot {robot_spec.name!r} at {robot_spec.control_rate_hz} Hz"))
        return problems


def _layout_diff(policy: list[tuple[str, int]], robot: list[tuple[str, int]]) -> str:
    def show(item: tuple[str, int] | None) -> str:
        return "nothing" if item is None else f"{item[0]}({item[1]})"

    diffs = []
    for i in range(max(len(policy), len(robot))):
        p = policy[i] if i < len(policy) else None
        r = robot[i] if i < len(robot) else None
        if p != r:
            diffs.append(f"feature {i}: policy {show(p)}, robot {show(r)}")
    return "; ".join(diffs)

