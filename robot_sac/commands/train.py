"""``robot-sac train``: train SAC from a config file, an env id, or resume a run directory."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="training config YAML (configs/train/<name>.yaml)")
    p.add_argument("--env", help="Gymnasium id, e.g. Pendulum-v1 or robot_sac/ClawTurn-v0 (overrides the config)")
    p.add_argument("--steps", type=int, help="total environment steps (overrides the config)")
    p.add_argument("--seed", type=int, help="random seed (overrides the config)")
    p.add_argument("--out", type=Path, help="run directory (default runs/<env>-<seed>-<time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set sac.utd=4 (repeatable)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from robot_sac.config import load_train_config
    from robot_sac.trainer import Trainer

    show = not args.no_progress
    if args.resume:
        if args.config or args.env or args.seed is not None or args.overrides or args.out:
            raise SystemExit("robot-sac train: --resume takes only --steps (the run's config.yaml is used)")
        trainer = Trainer.resume(args.resume, total_steps=args.steps, show_progress=show)
    else:
        cfg = load_train_config(args.config, args.overrides, env=args.env, total_steps=args.steps, seed=args.seed)
        out = args.out or Path("runs") / f"{cfg.env.replace('/', '_')}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (out / "checkpoints" / "last.pt").exists():
            raise SystemExit(f"robot-sac train: {out} already holds a run; use --resume {out} or another --out")
        trainer = Trainer(cfg, out, show_progress=show)
    summary = trainer.train()
    if not trainer.evals or trainer.evals[-1]["step"] != trainer.step:
        # A run always ends evaluated, so summary.json has final figures and export has a best.pt.
        trainer.evaluate()
        summary = trainer.write_summary()
    brief = {k: summary[k] for k in ("steps", "wall_s", "steps_per_s", "updates_per_s", "eval_return_final",
                                     "eval_return_best") if k in summary}
    if "success_rate_final" in summary:
        brief["success_rate_final"] = summary["success_rate_final"]
    print(json.dumps(brief, indent=2))
    print(f"run directory: {trainer.run_dir}  (curve.png, summary.json, checkpoints/, tb/)")
    return 0
