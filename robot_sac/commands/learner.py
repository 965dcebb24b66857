"""``robot-sac learner``: continue a simulation run's SAC on robots' transitions and send actors back.

Stops on Ctrl-C or SIGTERM with a final checkpoint; started again with the same ``--out`` it resumes from
that directory's checkpoint (after a crash too: robots resend whatever the checkpoint does not hold).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="from_dir", type=Path, required=True, metavar="RUN_DIR",
                   help="simulation run to continue (config.yaml, checkpoints/last.pt and the replay file it names)")
    p.add_argument("--bind", default="tcp://0.0.0.0:5555", help="address the robots connect to")
    p.add_argument("--keys", type=Path, metavar="DIR", help="CURVE keys from `robot-sac keys`: authenticate robots")
    p.add_argument("--out", type=Path, metavar="RUN_DIR2", help="learner run directory (default RUN_DIR/learner)")
    p.add_argument("--push-every", type=int, metavar="N_UPDATES", help="updates between actors sent (default 1000)")
    p.add_argument("--utd", type=float, help="updates per real transition (default 1)")
    p.add_argument("--checkpoint-every", type=float, metavar="S", help="seconds between checkpoints (default 30)")
    p.add_argument("--empty-replay", action="store_true", help="do not sample the simulation run's replay buffer")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a learner config key, e.g. --set real_fraction=0.25 (repeatable)")
    p.add_argument("--max-updates", type=int, help="stop after this many updates in this session")
    p.add_argument("--report-every", type=float, default=10.0, metavar="S", help="seconds between status lines")
    p.add_argument("--release-robot", action="append", default=[], metavar="ID",
                   help="with --keys: let the next allowed key to speak for robot ID take it (it moved to a new "
                        "key); by default an id stays with the first key that used it, across restarts")


def run(args: argparse.Namespace) -> int:
    from firmware_bridge.typed_yaml import apply_overrides, from_mapping
    from robot_sac.learner import Learner, LearnerConfig

    mapping: dict = {}
    apply_overrides(mapping, args.overrides)
    direct = {"push_every": args.push_every, "utd": args.utd, "checkpoint_every_s": args.checkpoint_every,
              "seed_replay": False if args.empty_replay else None}
    mapping.update({k: v for k, v in direct.items() if v is not None})
    cfg = from_mapping(LearnerConfig, mapping, "learner")
    out = args.out or args.from_dir / "learner"
    if args.release_robot and args.keys is None:
        print("robot-sac learner: error: --release-robot frees a CURVE key binding; it needs --keys", file=sys.stderr)
        return 2
    learner = Learner(args.from_dir, out, cfg, args.bind, args.keys)
    try:
        for robot in args.release_robot:
            learner.release_robot(robot)
    except ValueError as exc:
        print(f"robot-sac learner: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    endpoint = learner.start()
    print(f"learner: {endpoint} ({'CURVE, ' + str(args.keys) if args.keys else 'no authentication'}), "
          f"device {learner.device}, out {out}", flush=True)
    try:
        learner.run(stop, max_updates=args.max_updates, on_report=_status, report_every_s=args.report_every)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        learner.close()
    print(json.dumps(learner.write_summary(), indent=2))
    return 0


def _status(report: dict) -> None:
    robots = ", ".join(
        f"{robot}: {r['transitions_received']} received, {r['duplicates_dropped']} duplicates, "
        f"versions sent {r['policy_versions_sent'][-3:]}"
        for robot, r in report["robots"].items()
    )
    print(f"updates {report['updates']} ({report['updates_per_s']} /s), transitions {report['transitions']}; "
          f"{robots or 'no robot yet'}; dropped {report['link']}", file=sys.stdout, flush=True)
