"""The ``firmware-bridge run`` options for continued training, kept apart from the uplink so that building
the command's parser imports neither ZeroMQ nor onnxruntime."""

from __future__ import annotations

import argparse
import re
import socket
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("continued training (robot-sac learner)")
    group.add_argument("--learner", metavar="ADDR", help="stream transitions to this learner, e.g. tcp://gpu:5555")
    group.add_argument("--keys", metavar="DIR", help="CURVE keys from `robot-sac keys` (server.key, clients/)")
    group.add_argument("--key-name", default="client", help="this robot's key pair under DIR/clients (default client)")
    group.add_argument("--robot-id", help="this robot's id at the learner (default: <robot>-<hostname>)")
    group.add_argument(
        "--spool", metavar="DIR", help="unacknowledged transitions (default ~/.cache/robot-sac/spool/ID)"
    )


def uplink_from_args(args: argparse.Namespace, builder, policy, goals: dict[str, float]):
    """The ``LearnerUplink`` that ``--learner`` asks for, or None; ``attach`` it to the loop once the loop exists."""
    if not args.learner:
        return None
    from firmware_bridge.learner_uplink import LearnerUplink, UplinkConfig

    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40]
    robot_id = args.robot_id or f"{builder.robot_spec.name}-{host}"
    spool = Path(args.spool) if args.spool else Path.home() / ".cache" / "robot-sac" / "spool" / robot_id
    config = UplinkConfig(args.learner, robot_id, spool, Path(args.keys) if args.keys else None, args.key_name)
    return LearnerUplink(config, builder, policy, goals=goals)
