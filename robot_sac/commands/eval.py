"""``robot-sac eval``: run an exported policy file in simulation through the robot's own PolicyRuntime."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("policy", type=Path, metavar="POLICY.onnx", help="policy file from robot-sac export")
    p.add_argument("--task", required=True,
                   help="task name or task file (claw_turn, configs/tasks/x.yaml), or a Gymnasium id (Pendulum-v1)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="episode i is reset with seed S + i")
    p.add_argument("--backend", choices=["mujoco", "pybullet"],
                   help="physics backend for a robot task (default mujoco)")
    p.add_argument("--nominal", action="store_true", help="no dynamics randomization (the task's nominal model)")
    p.add_argument("--out", type=Path, help="directory for summary.json (default: print only)")


def run(args: argparse.Namespace) -> int:
    from firmware_bridge.policy_runtime import PolicyRejectedError, PolicyRuntime
    from robot_sac.evaluation import make_task_env, run_episodes

    try:
        env = make_task_env(args.task, args.backend, randomize=not args.nominal)
    except ValueError as exc:
        print(f"robot-sac eval: error: {exc}", file=sys.stderr)
        return 2
    try:
        base = env.unwrapped
        robot_spec = getattr(base, "robot_spec", None)
        try:
            runtime = PolicyRuntime(args.policy, robot_spec, base.task if robot_spec is not None else None)
        except (PolicyRejectedError, FileNotFoundError) as exc:
            print(f"robot-sac eval: error: {exc}", file=sys.stderr)
            return 2
        dims = (env.observation_space.shape[0], env.action_space.shape[0])
        if (runtime.obs_dim, runtime.act_dim) != dims:
            raise SystemExit(f"robot-sac eval: {args.policy} maps {runtime.obs_dim} -> {runtime.act_dim} values, "
                             f"{args.task} has {dims[0]} observations and {dims[1]} actions")
        results = run_episodes(env, runtime, args.episodes, args.seed)
    finally:
        env.close()
    summary = {
        "policy": str(args.policy),
        "policy_version": runtime.version,
        "policy_sha256": runtime.sha256,
        "task": args.task,
        "backend": getattr(base, "backend_name", "gymnasium"),
        "randomized": bool(getattr(base, "randomize", False)),
        "seed": args.seed,
        **results.summary(),
        "policy_latency_us": runtime.latency_us(),
    }
    text = json.dumps(summary, indent=2)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(text + "\n")
    print(text)
    return 0
