"""``robot-sac robustness``: a policy file through a grid of perturbations, into summary.json, report.md
and heatmaps."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("policy", type=Path, metavar="POLICY.onnx", help="policy file from robot-sac export")
    p.add_argument("--task", required=True, help="task name or task file (claw_turn, configs/tasks/x.yaml)")
    p.add_argument("--backend", default="mujoco", help="physics backend, or 'all' for every backend (default mujoco)")
    p.add_argument("--suite", default="default", help="suite name or file (configs/robustness/<suite>.yaml)")
    p.add_argument("--episodes", type=int, help="episodes per cell (overrides the suite)")
    p.add_argument("--seed", type=int, default=0, help="episode i of every cell is reset with seed S + i")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--compare", type=Path, nargs="+", default=[], metavar="OTHER.onnx",
                   help="more policy files, run on the same grid and shown side by side")
    p.add_argument("--out", type=Path, required=True, metavar="REPORT_DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _backends(choice: str) -> list[str]:
    from sim.env import BACKENDS

    if choice == "all":
        return list(BACKENDS)
    if choice not in BACKENDS:
        raise SystemExit(f"robot-sac robustness: --backend {choice!r}: unknown (known: {', '.join(BACKENDS)}, all)")
    return [choice]


def run(args: argparse.Namespace) -> int:
    from firmware_bridge.policy_runtime import PolicyRejectedError, PolicyRuntime
    from robot_sac.robustness.figures import write_figures
    from robot_sac.robustness.report import write_report
    from robot_sac.robustness.study import run_study
    from robot_sac.robustness.suite import load_suite, resolve_suite
    from sim.task import TaskSpec

    suite = load_suite(args.suite)
    if args.episodes is not None:
        suite = dataclasses.replace(suite, episodes=args.episodes)
    backends = _backends(args.backend)
    task = TaskSpec.load(args.task)
    robot_spec = task.load_robot()
    policies = [args.policy, *args.compare]
    # Refuse a wrong file here, with the runtime's reasons, before any worker starts.
    for policy in policies:
        try:
            PolicyRuntime(policy, robot_spec, task, warmup_calls=0)
        except (PolicyRejectedError, FileNotFoundError) as exc:
            print(f"robot-sac robustness: error: {exc}", file=sys.stderr)
            return 2
    suite_path = resolve_suite(args.suite).resolve()
    # Relative where possible: the report names the suite the same way from any checkout.
    suite_name = str(suite_path.relative_to(Path.cwd()) if suite_path.is_relative_to(Path.cwd()) else suite_path)
    summary = run_study(policies, args.task, backends, suite, args.seed, args.workers,
                        progress=not args.no_progress, suite_name=suite_name)
    figures = write_figures(args.out, summary)
    write_report(args.out, summary, figures)
    for name, by_backend in summary["verdicts"].items():
        for backend, verdict in by_backend.items():
            print(f"{verdict['text']}" + (f" [{backend}]" if len(backends) > 1 else ""))
    print(f"{len(summary['cells'])} cells x {suite.episodes} episodes in {summary['wall_s']:.1f} s; "
          f"report: {args.out / 'report.md'}")
    return 0
