"""Shared pieces of the learner tests: synthetic ticks and batches for a robot spec."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from firmware_bridge.learner_wire import TransitionBatch, TransitionLayout
from firmware_bridge.state import RobotState
from firmware_bridge.transitions import Transition

HASH = "ab" * 32


def batch(layout: TransitionLayout, n: int, first_seq: int = 0, extras=("valve_angle",), **fields) -> TransitionBatch:
    rng = np.random.default_rng(first_seq)
    arrays = {}
    for name, dtype, width in layout.arrays(len(extras)):
        shape = (n, width) if width else (n,)
        arrays[name] = (rng.standard_normal(shape) if dtype == "float32" else np.zeros(shape)).astype(dtype)
    arrays["dt"][:] = 0.1  # the claw's control period
    defaults = dict(robot="claw-1", spool="00aa11bb22cc33dd", first_seq=first_seq, lowest_held=first_seq,
                    interface_hash=HASH, goals={"valve_angle": 1.0}, extras=list(extras), arrays=arrays)
    defaults.update(fields)
    return TransitionBatch(**defaults)


def tick(i: int, num_joints: int, obs_dim: int, version: int = 1, extras=None) -> Transition:
    """Tick ``i`` whose observation starts with ``i`` (so a replay buffer shows which ticks it holds)."""
    obs = np.full(obs_dim, 0.01, dtype=np.float32)
    obs[0] = i
    state = RobotState(timestamp=0.1 * i, joint_pos=np.full(num_joints, 0.001 * i), joint_vel=np.zeros(num_joints),
                       joint_current=np.zeros(num_joints), extras=dict(extras or {"valve_angle": 0.01 * i,
                                                                                  "valve_velocity": 0.0}))
    action = np.full(num_joints, 0.1, dtype=np.float32)
    return Transition(i, 0.1 * i, state, obs, action, action.astype(np.float64), version, {}, 0)


def make_claw_run(run_dir, steps: int = 60, **sac):
    """A small simulation run of the claw task (random actions, tiny networks): what a learner continues;
    ``sac`` adds SAC settings."""
    from firmware_bridge.typed_yaml import from_mapping
    from robot_sac.config import TrainConfig
    from robot_sac.trainer import Trainer

    cfg = from_mapping(TrainConfig, {
        "env": "robot_sac/ClawTurnFixed-v0", "total_steps": steps, "learning_starts": steps, "buffer_size": 1000,
        "eval_interval": 10**6, "eval_episodes": 1, "checkpoint_interval": 10**6, "log_interval": 10**6,
        "device": "cpu", "torch_threads": 1,
        "sac": {"batch_size": 32, "actor_hidden": [32, 32], "critic_hidden": [32, 32], **sac},
    })  # fmt: skip
    Trainer(cfg, run_dir, show_progress=False).train()
    return run_dir


class LearnerProcess:
    """``robot-sac learner`` in its own process (as on its own machine): started, killed, restarted."""

    def __init__(self, run_dir, out_dir, port: int, *extra: str):
        self.args = [sys.executable, "-m", "robot_sac.cli", "learner", "--from", str(run_dir), "--out", str(out_dir),
                     "--bind", f"tcp://127.0.0.1:{port}", "--set", "device=cpu", "--set", "torch_threads=1",
                     "--report-every", "1", *extra]  # fmt: skip
        self.out_dir = Path(out_dir)
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.out_dir.parent / f"{self.out_dir.name}.log"

    def start(self, timeout: float = 120.0) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while b"learner: tcp://" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"learner did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> dict:
        """SIGTERM: the learner checkpoints, writes summary.json and exits."""
        self.proc.send_signal(signal.SIGTERM)
        if self.proc.wait(120) != 0:
            raise RuntimeError(f"learner exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        return json.loads((self.out_dir / "summary.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
