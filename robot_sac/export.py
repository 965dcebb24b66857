"""Export a trained actor to ONNX: one self-describing ``policy.onnx`` the robot can check before it runs it.

The graph is ``ExportedPolicy``: observation normalization, the actor's mean head and tanh, nothing else
(the robot never samples). Its metadata is a ``firmware_bridge.policy_contract.PolicyContract``. Export
checks its own output: ``onnx.checker``, then ``PolicyRuntime`` (the robot's loader, with the env's robot
spec) against the torch actor on random and on real observations.
"""

from __future__ import annotations

import copy
import logging
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

import robot_sac
from firmware_bridge.action import ActionMapper
from firmware_bridge.observation import ObservationBuilder, TaskObservation
from firmware_bridge.policy_contract import FORMAT_VERSION, INPUT_NAME, OUTPUT_NAME, Normalization, PolicyContract
from firmware_bridge.policy_runtime import PolicyRuntime
from firmware_bridge.spec import RobotSpec
from firmware_bridge.typed_yaml import ConfigError, from_mapping
from robot_sac.config import TrainConfig
from robot_sac.envs import make_env
from robot_sac.networks import Actor, ObservationNormalizer
from robot_sac.trainer import CHECKPOINT_VERSION

OPSET = 20
"""The newest opset onnxruntime 1.17 (the base install's floor) runs."""
TOLERANCE = 1e-4
"""Largest accepted |onnxruntime - torch| over the check observations, in action units ([-1, 1]).

The two runtimes sum the layers' products in different orders, and in float32 that alone moves an action by up
to 1.3e-5 on the random check observations (three times the visited spread) of a claw policy trained 100k steps
(2e-6 on the visited ones); at 1e-5 that policy's export was refused. 1e-4 of the claw's widest joint range is
0.16 mrad, a tenth of a Dynamixel encoder step; a wrong weight or a missing normalization moves actions by 1e-2
or more."""


class ExportError(RuntimeError):
    """The exported file failed its own checks."""


class ExportedPolicy(nn.Module):
    """The deployed policy as one module: ``[B, obs_dim]`` raw observations -> ``[B, act_dim]`` in [-1, 1].

    Only the mean rows of the actor's head are kept: the robot acts deterministically, and the log-std half
    would cost a matrix product per tick for nothing.
    """

    def __init__(self, actor: Actor, normalizer: ObservationNormalizer):
        super().__init__()
        act_dim = actor.act_dim
        self.trunk = copy.deepcopy(actor.trunk)
        self.mean = nn.Linear(actor.head.in_features, act_dim)
        with torch.no_grad():
            self.mean.weight.copy_(actor.head.weight[:act_dim])
            self.mean.bias.copy_(actor.head.bias[:act_dim])
        self.normalize = normalizer.enabled
        self.clip = float(normalizer.clip)
        if self.normalize:
            # The same float64 -> float32 arithmetic as ObservationNormalizer.forward, so training and the
            # robot normalize to the same bits.
            self.register_buffer("obs_loc", normalizer.mean.detach().to(torch.float32).clone())
            inv_scale = (normalizer.var.detach() + normalizer.eps).sqrt().reciprocal().to(torch.float32)
            self.register_buffer("obs_inv_scale", inv_scale.clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            obs = ((obs - self.obs_loc) * self.obs_inv_scale).clamp(-self.clip, self.clip)
        return torch.tanh(self.mean(self.trunk(obs)))


def normalization_record(normalizer: ObservationNormalizer) -> Normalization | None:
    if not normalizer.enabled:
        return None
    return Normalization(
        mean=normalizer.mean.tolist(), var=normalizer.var.tolist(), clip=float(normalizer.clip), eps=normalizer.eps
    )


def robot_interface(robot_spec: RobotSpec, task: TaskObservation) -> dict[str, Any]:
    """The contract fields that describe a robot and task: spec, observation layout, action mapping."""
    builder = ObservationBuilder(robot_spec, task)
    mapper = ActionMapper(robot_spec)
    return {
        "robot": robot_spec.name,
        "robot_interface_hash": builder.interface_hash(),
        "task": task.name,
        "task_observation": list(task.observation),
        "task_goals": dict(task.goals),
        "observation_features": [(name, width) for name, width in builder.layout],
        "obs_dim": builder.dim,
        "act_dim": robot_spec.num_joints,
        "action_names": robot_spec.joint_names,
        "action_center": mapper.center.tolist(),
        "action_scale": mapper.scale.tolist(),
        "control_rate_hz": float(robot_spec.control_rate_hz),
    }


def env_interface(env) -> dict[str, Any]:
    """The contract fields that describe the env's robot, task, observation and action (no versions).

    A robot env (``sim.env.RobotEnv``) contributes its robot spec and task. Any other Gymnasium env gets
    empty robot fields, one ``observation`` feature, actions named ``a0``... and the scaling of its own
    action bounds (``make_env`` rescales them to [-1, 1]).
    """
    base = env.unwrapped
    if getattr(base, "robot_spec", None) is not None:
        return robot_interface(base.robot_spec, base.task)
    obs_dim = int(env.observation_space.shape[0])
    low, high = base.action_space.low.astype(np.float64), base.action_space.high.astype(np.float64)
    dt = getattr(base, "dt", None)
    return {
        "robot": "",
        "robot_interface_hash": "",
        "task": "",
        "task_observation": [],
        "task_goals": {},
        "observation_features": [("observation", obs_dim)],
        "obs_dim": obs_dim,
        "act_dim": int(low.shape[0]),
        "action_names": [f"a{i}" for i in range(low.shape[0])],
        "action_center": ((low + high) / 2).tolist(),
        "action_scale": ((high - low) / 2).tolist(),
        "control_rate_hz": float(1.0 / dt) if dt else 0.0,
    }


def exporter_version() -> str:
    return f"robot_sac {robot_sac.__version__}, torch {torch.__version__}, onnx opset {OPSET}"


def build_contract(
    interface: dict[str, Any], env_id: str, normalizer: ObservationNormalizer, policy_version: int, run_id: str
) -> PolicyContract:
    """``interface`` from ``robot_interface`` or ``env_interface``, plus what identifies this policy."""
    return PolicyContract(
        policy_format=FORMAT_VERSION,
        env_id=env_id,
        normalization=normalization_record(normalizer),
        policy_version=policy_version,
        run_id=run_id,
        exporter=exporter_version(),
        **interface,
    )


def _strip_trace_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node annotations: they hold source paths and line numbers, so the same actor
    exported from another checkout would give other bytes."""
    graph = model.graph
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for values in (graph.input, graph.output, graph.value_info, graph.initializer):
        for value in values:
            del value.metadata_props[:]
    del graph.metadata_props[:]


def to_onnx(policy: ExportedPolicy, contract: PolicyContract) -> bytes:
    """Serialize ``policy`` with ``contract`` in its metadata; deterministic for the same weights."""
    policy = policy.eval()
    batch = torch.export.Dim("batch")
    example = (torch.zeros(1, contract.obs_dim),)
    # The exporter logs missing optional packages (torchvision) and deprecations on every call.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                policy, example, None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes={"obs": {0: batch}}, opset_version=OPSET, dynamo=True, verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    model = program.model_proto
    _strip_trace_metadata(model)
    model.producer_name = "robot_sac"
    model.producer_version = robot_sac.__version__
    model.model_version = contract.policy_version
    model.doc_string = (
        f"robot-sac policy for {contract.robot or contract.env_id}: obs float32 [batch, {contract.obs_dim}] -> "
        f"action float32 [batch, {contract.act_dim}] in [-1, 1]"
    )
    del model.metadata_props[:]
    for key, value in contract.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def verify(
    data: bytes,
    reference: nn.Module,
    observations: dict[str, np.ndarray],
    robot_spec: RobotSpec | None = None,
    task: TaskObservation | None = None,
) -> dict[str, float]:
    """Max |runtime - torch| per observation set; raises ``ExportError`` above ``TOLERANCE``.

    The file goes through ``PolicyRuntime`` (with the robot spec for a robot env), so a file that passes
    here is one the robot accepts. Both the batched path and the control loop's one-at-a-time path are
    compared.
    """
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    runtime = PolicyRuntime(data, robot_spec=robot_spec, task=task, warmup_calls=1)
    diffs = {}
    with torch.no_grad():
        for name, obs in observations.items():
            obs = np.ascontiguousarray(obs, dtype=np.float32)
            expected = reference(torch.from_numpy(obs)).numpy()
            batched = runtime.run_batch(obs)
            single = np.stack([runtime(o) for o in obs[:64]])
            diffs[name] = float(max(np.abs(batched - expected).max(), np.abs(single - expected[:64]).max()))
    bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
    if bad:
        raise ExportError(f"onnxruntime differs from torch by {bad} (tolerance {TOLERANCE})")
    return diffs


class TorchPolicy(nn.Module):
    """The training-side deterministic policy, as ``SAC.act(..., deterministic=True)`` computes it."""

    def __init__(self, actor: Actor, normalizer: ObservationNormalizer):
        super().__init__()
        self.actor, self.normalizer = actor, normalizer

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.deterministic(self.normalizer(obs))


def check_observations(env, policy: nn.Module, seed: int, real: int = 256, random: int = 256) -> dict[str, np.ndarray]:
    """Observations to compare on: ``real`` ones visited by the policy in ``env``, and ``random`` ones spread
    to three times the real spread (so the normalizer's clip is exercised too)."""
    rows = []
    obs, _ = env.reset(seed=seed)
    with torch.no_grad():
        while len(rows) < real:
            rows.append(np.asarray(obs, dtype=np.float32))
            action = policy(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))[0].numpy()
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset()
    visited = np.stack(rows)
    rng = np.random.default_rng(seed)
    spread = visited.std(0) + 1.0
    randoms = visited.mean(0) + 3.0 * spread * rng.standard_normal((random, visited.shape[1]))
    return {"real": visited, "random": randoms.astype(np.float32)}


@dataclass
class LoadedPolicy:
    config: TrainConfig
    actor: Actor
    normalizer: ObservationNormalizer
    step: int
    checkpoint: Path


def load_policy(run_dir: str | Path, checkpoint: str = "best") -> LoadedPolicy:
    """Actor and normalizer from ``checkpoints/best.pt`` (``best``), ``checkpoints/last.pt`` (``last``) or a
    checkpoint path, sized from the stored weights."""
    path = Path(run_dir) / "checkpoints" / f"{checkpoint}.pt" if checkpoint in ("best", "last") else Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    # Our own file (trainer.py); last.pt holds numpy RNG states, which weights_only cannot load.
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(f"{path}: not a torch checkpoint ({exc})") from None
    if not isinstance(state, dict) or "config" not in state:
        raise ValueError(f"{path}: not a robot-sac checkpoint (no 'config')")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {state.get('version')}, this exporter reads {CHECKPOINT_VERSION}")
    if "agent" in state:
        # The averaged actor is the one the run evaluated and deploys (sac.actor_average_tau).
        agent = state["agent"]
        weights, step = {**agent, "actor": agent.get("actor_average", agent["actor"])}, state["counters"]["step"]
    elif "actor" in state:
        weights, step = state, state["step"]
    else:
        raise ValueError(f"{path}: checkpoint holds neither 'actor' nor 'agent'")
    try:
        config = from_mapping(TrainConfig, state["config"])
    except ConfigError as exc:
        raise ConfigError(f"{path}: config: {exc}") from None
    obs_dim = weights["normalizer"]["mean"].shape[0]
    act_dim = weights["actor"]["head.bias"].shape[0] // 2
    actor = Actor(obs_dim, act_dim, tuple(config.sac.actor_hidden))
    actor.load_state_dict(weights["actor"])
    normalizer = ObservationNormalizer(obs_dim, enabled=config.sac.normalize_observations)
    normalizer.load_state_dict(weights["normalizer"])
    return LoadedPolicy(config, actor.eval(), normalizer.eval(), int(step), path)


@dataclass
class ExportResult:
    data: bytes
    contract: PolicyContract
    max_abs_diff: dict[str, float]


def export_run(run_dir: str | Path, checkpoint: str = "best", policy_version: int | None = None) -> ExportResult:
    """Export a training run's actor; ``policy_version`` defaults to the checkpoint's training step."""
    run_dir = Path(run_dir)
    loaded = load_policy(run_dir, checkpoint)
    env = make_env(loaded.config.env, loaded.config.env_kwargs)
    try:
        interface = env_interface(env)
        if interface["obs_dim"] != loaded.actor.trunk[0].in_features or interface["act_dim"] != loaded.actor.act_dim:
            raise ExportError(
                f"{loaded.checkpoint}: actor is {loaded.actor.trunk[0].in_features} -> {loaded.actor.act_dim}, "
                f"env {loaded.config.env} is {interface['obs_dim']} -> {interface['act_dim']}"
            )
        version = loaded.step if policy_version is None else policy_version
        contract = build_contract(interface, loaded.config.env, loaded.normalizer, version, run_dir.resolve().name)
        data = to_onnx(ExportedPolicy(loaded.actor, loaded.normalizer), contract)
        reference = TorchPolicy(loaded.actor, loaded.normalizer)
        observations = check_observations(env, reference, seed=loaded.config.seed + 7)
        base = env.unwrapped
        robot_spec = getattr(base, "robot_spec", None)
        diffs = verify(data, reference, observations, robot_spec, base.task if robot_spec is not None else None)
    finally:
        env.close()
    return ExportResult(data, contract, diffs)
