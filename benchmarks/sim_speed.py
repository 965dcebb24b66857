"""Environment steps per second, and env step time over the raw engine steps it makes.

For each env: run STEPS env steps with random actions (recording the joint
targets the env sent), then replay the same targets through bare
``mj_step(model, data, nstep=substeps)`` calls on the same model from the same
reset. The ratio is the env's overhead (observation, action mapping, reward,
randomization, Python) on top of physics. With ``--backend pybullet`` the raw
figure is bare ``stepSimulation`` calls, as many as the env made: our PD loop
(torques set and joints read every physics step in Python) counts as overhead.

    python benchmarks/sim_speed.py [--steps 2000] [--repeats 3] [--backend mujoco|pybullet]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import mujoco
import numpy as np
import pybullet

import sim  # noqa: F401  (registers the env ids)

ENV_IDS = [
    "robot_sac/ClawTurnNominal-v0",
    "robot_sac/ClawTurn-v0",
    "robot_sac/QuadrupedWalkNominal-v0",
    "robot_sac/QuadrupedWalk-v0",
]


def raw_mujoco(backend, targets: list[np.ndarray], n: int) -> float:
    model, data, act = backend.model, backend.data, backend.actuator_ids
    start = time.perf_counter()
    for target in targets:
        data.ctrl[act] = target
        mujoco.mj_step(model, data, nstep=n)
    return time.perf_counter() - start


def raw_pybullet(backend, targets: list[np.ndarray], n: int) -> float:
    client = backend.client
    start = time.perf_counter()
    for _ in targets:
        for _ in range(n):
            pybullet.stepSimulation(physicsClientId=client)
    return time.perf_counter() - start


RAW_STEPS = {"mujoco": raw_mujoco, "pybullet": raw_pybullet}


def measure(env_id: str, steps: int, seed: int, backend_name: str = "mujoco") -> tuple[float, float, int]:
    """(env seconds per step, raw engine seconds per step, physics steps per env step)."""
    env = gym.make(env_id, backend=backend_name)
    base = env.unwrapped
    backend = base.backend
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1.0, 1.0, (steps, base.action_space.shape[0])).astype(np.float32)
    env.reset(seed=seed)
    # Random actions topple the quadruped; a fall ends the episode and the reset is part of the env's cost.
    physics0 = backend.physics_steps
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    env_time = time.perf_counter() - start
    substeps = (backend.physics_steps - physics0) / steps

    n = int(round(substeps))
    env.reset(seed=seed)
    targets = [base.action_mapper.unclipped(a) for a in actions]
    raw_time = RAW_STEPS[backend_name](backend, targets, n)
    env.close()
    return env_time / steps, raw_time / steps, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="report the fastest of this many runs")
    parser.add_argument("--backend", choices=list(RAW_STEPS), default="mujoco")
    args = parser.parse_args()
    print(f"{'env':36s} {'substeps':>8s} {'env steps/s':>12s} {'env us/step':>12s} {'raw us/step':>12s} {'ratio':>6s}")
    for env_id in ENV_IDS:
        runs = [measure(env_id, args.steps, seed, args.backend) for seed in range(args.repeats)]
        env_s = min(r[0] for r in runs)
        raw_s = min(r[1] for r in runs)
        print(
            f"{env_id:36s} {runs[0][2]:8d} {1.0 / env_s:12.0f} {env_s * 1e6:12.1f} {raw_s * 1e6:12.1f} "
            f"{env_s / raw_s:6.2f}"
        )


if __name__ == "__main__":
    main()
