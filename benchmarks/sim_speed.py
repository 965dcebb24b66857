"""Environment steps per second, and env step time over the raw ``mujoco.mj_step`` calls it makes.

For each env: a first pass records, per env step, the joint targets the env
sent and the physics state at each episode start (random actions; a fallen
quadruped resets). The timed env pass repeats it with the same seed (the env
is deterministic). The raw pass replays the same targets through bare
``mj_step(model, data, nstep=substeps)`` calls from the same states. The ratio
is the env's overhead (observation, action mapping, reward, randomization,
latency, resets, Python) on top of physics. Times are this process's CPU time
(both loops are single-threaded), so other jobs on a shared machine do not
land in one side of the ratio; the best of several repeats is reported.

With ``--backend pybullet`` the states are Bullet's saved states and the raw
pass holds each target with Bullet's own position motors (capped at the
spec's torques) over ``stepSimulation`` calls: our PD law, run in Python at
every physics step, then counts as overhead.

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


class MujocoRaw:
    @staticmethod
    def save(backend):
        saved = mujoco.MjData(backend.model)
        mujoco.mj_copyData(saved, backend.model, backend.data)
        return saved

    @staticmethod
    def restore(backend, saved) -> None:
        mujoco.mj_copyData(backend.data, backend.model, saved)

    @staticmethod
    def step(backend, target: np.ndarray, n: int) -> None:
        backend.data.ctrl[backend.actuator_ids] = target
        mujoco.mj_step(backend.model, backend.data, nstep=n)


class PybulletRaw:
    @staticmethod
    def save(backend):
        return pybullet.saveState(physicsClientId=backend.client)

    @staticmethod
    def restore(backend, saved) -> None:
        pybullet.restoreState(saved, physicsClientId=backend.client)

    @staticmethod
    def step(backend, target: np.ndarray, n: int) -> None:
        spec, client = backend.robot_spec, backend.client
        for i, name in enumerate(spec.joint_names):
            uid, joint = backend.bullet_joint(name)
            pybullet.setJointMotorControl2(uid, joint, pybullet.POSITION_CONTROL, targetPosition=float(target[i]),
                                           force=float(spec.max_torque[i]), physicsClientId=client)
        for _ in range(n):
            pybullet.stepSimulation(physicsClientId=client)


RAW = {"mujoco": MujocoRaw, "pybullet": PybulletRaw}


def _run_env(env, actions, seed, record: bool):
    base = env.unwrapped
    raw = RAW[base.backend_name]
    targets, starts = [], {}
    env.reset(seed=seed)
    if record:
        starts[0] = raw.save(base.backend), 0
    start = time.process_time()
    for i, a in enumerate(actions):
        _, _, terminated, truncated, _ = env.step(a)
        if record:
            targets.append(base._targets[-1 - int(base.params.latency_ticks)].copy())
        if terminated or truncated:
            env.reset()
            if record:
                starts[i + 1] = raw.save(base.backend), 0
    return time.process_time() - start, targets, starts


def measure(env_id: str, steps: int, seed: int, backend_name: str = "mujoco") -> tuple[float, float, int]:
    """(env CPU seconds per step, raw engine CPU seconds per step, physics steps per env step)."""
    env = gym.make(env_id, backend=backend_name)
    raw = RAW[backend_name]
    backend = env.unwrapped.backend
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1.0, 1.0, (steps, env.action_space.shape[0])).astype(np.float32)
    _, targets, starts = _run_env(env, actions, seed, record=True)
    physics0 = backend.physics_steps
    env_time, _, _ = _run_env(env, actions, seed, record=False)
    n = int(round((backend.physics_steps - physics0) / steps))

    raw_time = 0.0
    for i, target in enumerate(targets):
        if i in starts:
            raw.restore(backend, starts[i][0])
        t0 = time.process_time()
        raw.step(backend, target, n)
        raw_time += time.process_time() - t0
    env.close()
    return env_time / steps, raw_time / steps, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="report the fastest of this many runs")
    parser.add_argument("--backend", choices=list(RAW), default="mujoco")
    args = parser.parse_args()
    header = (
        f"{'env':36s} {'substeps':>8s} {'env steps/s':>12s} {'env us/step':>12s} "
        f"{'raw us/step':>12s} {'ratio':>6s}"
    )
    print(header + "   (CPU time)")
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
