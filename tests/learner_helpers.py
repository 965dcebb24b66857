"""Shared pieces of the learner tests: synthetic ticks and batches for a robot spec."""

from __future__ import annotations

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
