"""Run an exported policy in the control loop: numpy + onnxruntime only.

``PolicyRuntime`` refuses a file that does not fit the robot before a motor moves (one
``PolicyRejectedError`` naming every problem), then answers one observation at a time with as little
work per call as onnxruntime allows: one intra-op thread (two threads on a small computer give
millisecond tails), sequential execution, input and output bound once to preallocated numpy buffers.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from firmware_bridge.observation import TaskObservation
from firmware_bridge.onnx_envelope import check_model_bytes
from firmware_bridge.policy_contract import INPUT_NAME, OUTPUT_NAME, Mismatch, PolicyContract, Problem
from firmware_bridge.spec import RobotSpec


class PolicyRejectedError(ValueError):
    """A policy file the runtime will not run; ``problems`` lists every reason, ``kinds`` their kinds."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {kind.value}: {message}" for kind, message in self.problems)
        super().__init__(f"{source}: policy refused ({len(self.problems)} problem(s)):\n{lines}")

    @property
    def kinds(self) -> set[Mismatch]:
        return {kind for kind, _ in self.problems}


class LatencyRecorder:
    """Per-call durations in a fixed ring buffer (the newest ``capacity`` calls), summarized on demand."""

    def __init__(self, capacity: int = 100_000):
        self._ns = np.zeros(capacity, dtype=np.int64)
        self.count = 0

    def add(self, duration_ns: int) -> None:
        self._ns[self.count % len(self._ns)] = duration_ns
        self.count += 1

    def summary_us(self) -> dict[str, float]:
        """``{calls, p50, p99, max}`` in microseconds over the recorded window (zeros before the first call)."""
        window = self._ns[: min(self.count, len(self._ns))]
        if window.size == 0:
            return {"calls": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
        p50, p99 = np.percentile(window, [50, 99]) / 1e3
        return {"calls": self.count, "p50": float(p50), "p99": float(p99), "max": float(window.max() / 1e3)}

    def clear(self) -> None:
        self.count = 0


def session_options() -> ort.SessionOptions:
    """The control-loop settings: one thread, no inter-op parallelism, full graph optimization."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def _read(policy: str | os.PathLike | bytes) -> tuple[bytes, str]:
    if isinstance(policy, (bytes, bytearray, memoryview)):
        data = bytes(policy)
        return data, f"<{len(data)} policy bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}>"
    path = Path(policy)
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such policy file") from None


def _io_problems(session: ort.InferenceSession, contract: PolicyContract | None) -> list[Problem]:
    """The graph must take ``obs`` float32 [batch, obs_dim] and give ``action`` float32 [batch, act_dim]."""
    problems: list[Problem] = []
    for role, args, name, dim_key in (
        ("input", session.get_inputs(), INPUT_NAME, "obs_dim"),
        ("output", session.get_outputs(), OUTPUT_NAME, "act_dim"),
    ):
        names = [a.name for a in args]
        if names != [name]:
            problems.append((Mismatch.INPUT_OUTPUT, f"graph {role}s are {names}, expected exactly [{name!r}]"))
            continue
        arg = args[0]
        if arg.type != "tensor(float)":
            problems.append((Mismatch.INPUT_OUTPUT, f"{role} {name!r} is {arg.type}, expected tensor(float)"))
        shape = list(arg.shape)
        width = getattr(contract, dim_key) if contract is not None else None
        batch_ok = len(shape) == 2 and (shape[0] is None or isinstance(shape[0], str) or shape[0] == 1)
        width_ok = len(shape) == 2 and isinstance(shape[1], int) and (width is None or shape[1] == width)
        if not (batch_ok and width_ok):
            expected = f"[batch, {width if width is not None else dim_key}]"
            problems.append((Mismatch.INPUT_OUTPUT, f"{role} {name!r} has shape {shape}, expected {expected}"))
    return problems


class PolicyRuntime:
    """A checked, warmed-up policy: ``runtime(obs) -> action``.

    ``policy`` is a path or the file's bytes (as the learner sends them). With ``robot_spec`` the file's
    contract must fit that robot (and ``task``, default the task the file records); without it only the
    file itself is checked (evaluation in simulation, where the env checks dimensions).
    """

    def __init__(
        self,
        policy: str | os.PathLike | bytes,
        robot_spec: RobotSpec | None = None,
        task: TaskObservation | None = None,
        warmup_calls: int = 200,
        latency_window: int = 100_000,
    ):
        if task is not None and robot_spec is None:
            raise ValueError("PolicyRuntime: a task is checked against a robot; pass robot_spec too")
        data, self.source = _read(policy)
        problems = check_model_bytes(data)
        if problems:
            raise PolicyRejectedError(self.source, problems)
        try:
            session = ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind exception types, not one base class
            raise PolicyRejectedError(self.source, [(Mismatch.UNLOADABLE, str(exc).strip())]) from None
        contract, problems = PolicyContract.from_metadata(session.get_modelmeta().custom_metadata_map)
        problems += _io_problems(session, contract)
        if contract is not None and robot_spec is not None:
            problems += contract.mismatches(robot_spec, task)
        if problems:
            raise PolicyRejectedError(self.source, problems)

        self.contract: PolicyContract = contract
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.size_bytes = len(data)
        self.obs_dim, self.act_dim = contract.obs_dim, contract.act_dim
        self._session = session
        # Bound once: each call copies the observation into _obs and onnxruntime writes straight into
        # _action, so no tensor is created or freed per call.
        self._obs = np.zeros((1, self.obs_dim), dtype=np.float32)
        self._action = np.zeros((1, self.act_dim), dtype=np.float32)
        self._binding = session.io_binding()
        self._binding.bind_cpu_input(INPUT_NAME, self._obs)
        self._binding.bind_output(
            OUTPUT_NAME, "cpu", 0, np.float32, list(self._action.shape), self._action.ctypes.data
        )
        self._obs_row, self._action_row = self._obs[0], self._action[0]
        self._obs_shape = (self.obs_dim,)
        self.latency = LatencyRecorder(latency_window)
        zeros = np.zeros(self.obs_dim, dtype=np.float32)
        try:
            for _ in range(warmup_calls):
                self(zeros)
        except Exception as exc:  # onnxruntime's own exception types: a graph that loads can still fail to run
            raise PolicyRejectedError(
                self.source, [(Mismatch.FAILS_TO_RUN, f"on a zero observation: {type(exc).__name__}: {exc}")]
            ) from None
        self.latency.clear()

    @property
    def version(self) -> int:
        return self.contract.policy_version

    def __call__(self, obs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """One observation ``(obs_dim,)`` -> action ``(act_dim,)`` float32 in [-1, 1].

        Returns a new array, or fills ``out`` (float32, ``(act_dim,)``) and returns it, which saves the
        one allocation left per call.
        """
        t0 = time.perf_counter_ns()
        if obs.shape != self._obs_shape:
            raise ValueError(f"policy {self.source}: observation shape {obs.shape}, expected ({self.obs_dim},)")
        np.copyto(self._obs_row, obs, casting="same_kind")
        # No RunOptions: with one, onnxruntime's Python wrapper probes it for a GPU-graph key through a
        # C++ exception, which costs ~40 us per call.
        self._session.run_with_iobinding(self._binding)
        if out is None:
            out = self._action_row.copy()
        else:
            np.copyto(out, self._action_row)
        self.latency.add(time.perf_counter_ns() - t0)
        return out

    def run_batch(self, obs: np.ndarray) -> np.ndarray:
        """``[B, obs_dim]`` -> ``[B, act_dim]`` (checks and evaluation; the loop calls one at a time)."""
        obs = np.ascontiguousarray(obs, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"policy {self.source}: batch shape {obs.shape}, expected (B, {self.obs_dim})")
        return self._session.run([OUTPUT_NAME], {INPUT_NAME: obs})[0]

    def latency_us(self) -> dict[str, float]:
        """``{calls, p50, p99, max}`` of ``__call__`` in microseconds, warm-up excluded."""
        return self.latency.summary_us()
