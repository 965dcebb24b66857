"""Action mapping: policy output in [-1, 1] -> joint position targets, on the robot and in the simulator.

Scaling follows the robot spec's ``action`` section; targets are always
clipped to the joint limits and their change per tick is limited, whatever
the policy outputs. A non-finite output raises: the caller goes to its safe
state instead of sending it to a motor.
"""

from __future__ import annotations

import numpy as np

from firmware_bridge.spec import RobotSpec


class NonFiniteActionError(ValueError):
    """The policy produced NaN or infinity."""


class ActionMapper:
    def __init__(self, robot_spec: RobotSpec) -> None:
        self.robot_spec = robot_spec
        lower, upper = robot_spec.lower, robot_spec.upper
        action = robot_spec.action
        self.center = robot_spec.start if action.center == "start" else (lower + upper) / 2.0
        if action.scale is None:
            self.scale = (upper - lower) / 2.0
        else:
            self.scale = np.broadcast_to(np.asarray(action.scale, dtype=np.float64), lower.shape).copy()
        self.lower, self.upper = lower, upper
        rate = robot_spec.max_velocity if action.max_rate is None else np.full_like(lower, action.max_rate)
        self.max_step = np.minimum(rate, robot_spec.max_velocity) * robot_spec.control_period
        """(n,) largest change of a target in one tick [rad]."""
        self._previous: np.ndarray | None = None

    def reset(self, current: np.ndarray) -> None:
        """Start rate limiting from ``current`` joint positions (n,), e.g. the measured pose at episode start."""
        current = np.asarray(current, dtype=np.float64)
        if current.shape != self.lower.shape:
            raise ValueError(f"ActionMapper.reset: expected shape {self.lower.shape}, got {current.shape}")
        self._previous = np.clip(current, self.lower, self.upper)

    def unclipped(self, policy_output: np.ndarray) -> np.ndarray:
        """The target the scaling alone gives, before limits and rate limiting (for reports and export)."""
        return self.center + self.scale * np.minimum(np.maximum(policy_output, -1.0), 1.0)

    def map(self, policy_output: np.ndarray) -> np.ndarray:
        """(n,) in [-1, 1] -> (n,) float64 joint position targets [rad]. Rate limiting runs from the pose given
        to ``reset``; call it with the measured pose before the first tick."""
        a = np.asarray(policy_output, dtype=np.float64)
        if a.shape != self.lower.shape:
            raise ValueError(f"action: expected shape {self.lower.shape}, got {a.shape}")
        finite = np.isfinite(a)
        if not finite.all():
            bad = [self.robot_spec.joint_names[i] for i in np.flatnonzero(~finite)]
            raise NonFiniteActionError(f"action: non-finite policy output for joint(s) {', '.join(bad)}")
        # The joint limits and this tick's rate window, intersected first: one clip instead of three.
        if self._previous is None:
            low, high = self.lower, self.upper
        else:
            low = np.maximum(self.lower, self._previous - self.max_step)
            high = np.minimum(self.upper, self._previous + self.max_step)
        # np.minimum/np.maximum rather than np.clip: a third of the cost on arrays this small.
        target = np.minimum(np.maximum(self.unclipped(a), low), high)
        self._previous = target
        return target.copy()
