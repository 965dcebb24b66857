"""``RobotEnv``: a Gymnasium env built from a task file, one physics backend and the robot contract.

Observations come from ``firmware_bridge``'s ``ObservationBuilder`` applied to
the (noisy) ``RobotState`` the backend reports, and actions go through its
``ActionMapper``: the exact code the robot runs. ``info["privileged"]`` carries what only the simulator knows
(``sim.privileged``), for critics that may see it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from firmware_bridge.action import ActionMapper
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.spec import RobotSpec
from sim.backend import Backend
from sim.perturbations import PERTURBATIONS
from sim.privileged import privileged_observation
from sim.randomization import control_period, corrupt_state, nominal, sample
from sim.rewards import TASK_KINDS, Reward, Transition
from sim.task import TaskSpec


def _mujoco(spec: RobotSpec) -> Backend:
    from sim.mujoco_backend import MujocoBackend

    return MujocoBackend(spec)


def _pybullet(spec: RobotSpec) -> Backend:
    from sim.pybullet_backend import PybulletBackend

    return PybulletBackend(spec)


# Engines are imported only when chosen.
BACKENDS: dict[str, Callable[[RobotSpec], Backend]] = {"mujoco": _mujoco, "pybullet": _pybullet}


def make_backend(name: str, robot_spec: RobotSpec) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r}: unknown (known: {', '.join(BACKENDS)})")
    return BACKENDS[name](robot_spec)


class RobotEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str | TaskSpec = "claw_turn",
        backend: str = "mujoco",
        render_mode: str | None = None,
        randomize: bool = True,
        fixed_goal: bool = False,
    ) -> None:
        """``task``: a task name, path or spec. ``randomize`` False runs the nominal model even where the task
        randomizes; ``fixed_goal`` uses the task's ``goals`` instead of sampling them per episode."""
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode {render_mode!r}: expected None or 'rgb_array'")
        self.task = task if isinstance(task, TaskSpec) else TaskSpec.load(task)
        self.robot_spec = self.task.load_robot()
        self.backend = make_backend(backend, self.robot_spec)
        self.backend_name = backend
        self.observation_builder = ObservationBuilder(self.robot_spec, self.task)
        self.action_mapper = ActionMapper(self.robot_spec)
        self.reward_function = Reward(self.task.kind, self.task.reward)
        self._kind = TASK_KINDS[self.task.kind]
        self.randomize = randomize and self.task.randomization.enabled
        self.fixed_goal = fixed_goal
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.robot_spec.control_rate_hz}
        n = self.robot_spec.num_joints
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.observation_builder.dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n,), np.float32)
        self.params = nominal(len(self.backend.body_names), n)
        self.goals = dict(self.task.goals)
        self.history = self.observation_builder.new_history(self.goals)
        self.true_state = self.backend.state()
        self.observed_state = self.true_state

    def _sample_goals(self) -> dict[str, float]:
        goals = dict(self.task.goals)
        if not self.fixed_goal:
            for name, (low, high) in self.task.goal_sampling.items():
                goals[name] = float(self.np_random.uniform(low, high))
        return goals

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """``options["perturbation"] = (name, severity)`` applies one of ``sim.perturbations.PERTURBATIONS``."""
        super().reset(seed=seed)
        rng = self.np_random
        n, nb = self.robot_spec.num_joints, len(self.backend.body_names)
        params = sample(self.task.randomization, nb, n, rng) if self.randomize else nominal(nb, n)
        perturbation = None
        if options and options.get("perturbation") is not None:
            name, severity = options["perturbation"]
            if name not in PERTURBATIONS:
                raise ValueError(f"perturbation {name!r}: unknown (known: {', '.join(PERTURBATIONS)})")
            perturbation = PERTURBATIONS[name]
            if perturbation.params is not None:
                params = perturbation.params(params, float(severity), rng)
        self.params = params
        state = self.backend.reset(params)
        if perturbation is not None and perturbation.events is not None:
            perturbation.events(self.backend, float(severity), rng)
            state = self.backend.state()
        self.goals = self._sample_goals()
        self.history = self.observation_builder.new_history(self.goals)
        self.action_mapper.reset(state.joint_pos)
        latency_whole = int(params.latency_ticks)
        self._latency_fraction = params.latency_ticks - latency_whole
        # Targets of the last ticks, oldest first: the motors act on a target latency_ticks old.
        start_target = np.clip(state.joint_pos, self.robot_spec.lower, self.robot_spec.upper)
        self._targets = deque([start_target] * (latency_whole + 2), maxlen=latency_whole + 2)
        self.true_state = state
        self.observed_state = corrupt_state(state, params, rng)
        observation = self.observation_builder.build(self.observed_state, self.history)
        info = {
            "dynamics": params.as_dict(),
            "goals": dict(self.goals),
            "privileged": privileged_observation(state, params),
        }
        return observation, info

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action: expected shape {self.action_space.shape}, got {action.shape}")
        action = np.clip(action, -1.0, 1.0)
        self._targets.append(self.action_mapper.map(action))
        period = control_period(self.robot_spec.control_period, self.params, self.np_random)
        state = self.backend.step(
            self._targets[1], period, previous_targets=self._targets[0], switch_after=period * self._latency_fraction
        )
        transition = Transition(
            previous_state=self.true_state,
            state=state,
            action=action,
            previous_action=self.history.last_action,
            goals=self.goals,
            robot=self.robot_spec,
            criteria=self.task.criteria,
        )
        reward, terms = self.reward_function(transition)
        terminated = self._kind.terminated(state, self.task.criteria)
        self.history.record(action, self.observed_state)
        self.true_state = state
        # A lost reading leaves the bridge with the previous one: the policy acts on stale values.
        dropout = self.params.obs_dropout
        if not (dropout and self.np_random.random() < dropout):
            self.observed_state = corrupt_state(state, self.params, self.np_random)
        observation = self.observation_builder.build(self.observed_state, self.history)
        info: dict[str, Any] = {"reward_terms": terms, "privileged": privileged_observation(state, self.params)}
        if self._kind.success is not None:
            info["is_success"] = bool(self._kind.success(state, self.goals, self.task.criteria))
        return observation, reward, bool(terminated), False, info

    def render(self):
        if self.render_mode == "rgb_array":
            return self.backend.render()
        return None

    def close(self) -> None:
        self.backend.close()
