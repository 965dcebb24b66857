"""``robot-sac keys DIR``: CURVE key pairs for the learner and its robots, and the learner's allow-list."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", type=Path, metavar="DIR", help="where the keys go (created)")
    p.add_argument("--client", action="append", default=[], metavar="NAME",
                   help="a robot's key pair name (repeatable; default: one named 'client')")


def run(args: argparse.Namespace) -> int:
    from firmware_bridge.curve_keys import create_keys

    made = create_keys(args.directory, args.client or ["client"])
    for name, path in made.items():
        print(f"{name}: {path}")
    print(f"allow-list: {args.directory / 'allowed'} (the learner accepts these public keys)\n"
          f"on a robot: copy server.key and clients/<name>.key_secret, keep the layout, pass --keys DIR")
    return 0
