"""Environment steps per second, and env step time over the raw ``mujoco.mj_step`` calls it makes.

For each env: run STEPS env steps with random actions (recording the joint
targets the env sent), then replay the same targets through bare
``mj_step(model, data, nstep=substeps)`` calls on the same model from the same
reset. The ratio is the env's overhead (observation, action mapping, reward,
randomization, Python) on top of physics.

    python benchmarks/sim_speed.py [--steps 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import mujoco
import numpy as np

import sim  # noqa: F401  (registers the env ids)

ENV_IDS = [
    "robot_sac/ClawTurnNominal-v0",
    "robot_sac/ClawTurn-v0",
    "robot_sac/QuadrupedWalkNominal-v0",
    "robot_sac/QuadrupedWalk-v0",
]


def measure(env_id: str, steps: int, seed: int) -> tuple[float, float, int]:
    """(env seconds per step, raw mj_step seconds per step, physics steps per env step)."""
    env = gym.make(env_id)
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

    model, data = backend.model, backend.data
    n = int(round(substeps))
    env.reset(seed=seed)
    targets = [base.action_mapper.unclipped(a) for a in actions]
    act = backend.actuator_ids
    start = time.perf_counter()
    for target in targets:
        data.ctrl[act] = target
        mujoco.mj_step(model, data, nstep=n)
    raw_time = time.perf_counter() - start
    env.close()
    return env_time / steps, raw_time / steps, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="report the fastest of this many runs")
    args = parser.parse_args()
    print(f"{'env':36s} {'substeps':>8s} {'env steps/s':>12s} {'env us/step':>12s} {'raw us/step':>12s} {'ratio':>6s}")
    for env_id in ENV_IDS:
        runs = [measure(env_id, args.steps, seed) for seed in range(args.repeats)]
        env_s = min(r[0] for r in runs)
        raw_s = min(r[1] for r in runs)
        print(
            f"{env_id:36s} {runs[0][2]:8d} {1.0 / env_s:12.0f} {env_s * 1e6:12.1f} {raw_s * 1e6:12.1f} "
            f"{env_s / raw_s:6.2f}"
        )


if __name__ == "__main__":
    main()
