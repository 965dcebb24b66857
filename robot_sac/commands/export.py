"""``robot-sac export``: write a run's actor as a self-describing, self-checked ``policy.onnx``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="training run directory")
    p.add_argument("--checkpoint", default="best", metavar="best|last|PATH",
                   help="checkpoints/best.pt (default), checkpoints/last.pt, or a checkpoint file")
    p.add_argument("--out", type=Path, help="policy file to write (default RUN_DIR/policy.onnx)")
    p.add_argument("--policy-version", type=int, help="version recorded in the file (default: the training step)")


def run(args: argparse.Namespace) -> int:
    from robot_sac.export import ExportError, export_run

    try:
        result = export_run(args.run_dir, args.checkpoint, args.policy_version)
    except (ExportError, FileNotFoundError, ValueError) as exc:
        print(f"robot-sac export: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.run_dir / "policy.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(result.data)
    tmp.replace(out)
    contract = result.contract
    print(json.dumps({
        "policy": str(out),
        "bytes": len(result.data),
        "robot": contract.robot or None,
        "task": contract.task or None,
        "env": contract.env_id,
        "obs_dim": contract.obs_dim,
        "act_dim": contract.act_dim,
        "normalized": contract.normalization is not None,
        "policy_version": contract.policy_version,
        "run_id": contract.run_id,
        "max_abs_diff_onnxruntime_vs_torch": result.max_abs_diff,
    }, indent=2))
    return 0
