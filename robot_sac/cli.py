"""The ``robot-sac`` command: one subcommand per module, each with ``add_arguments`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand -> module holding ``add_arguments(parser)`` and ``run(args) -> int``.
# Modules are imported only when their subcommand runs, so ``robot-sac --help`` stays fast.
SUBCOMMANDS = {
    "train": ("robot_sac.commands.train", "train a SAC policy in simulation or on any Gymnasium env"),
    "virtual-robot": ("robot_sac.commands.virtual_robot", "simulated robot hardware on a pseudo-terminal or ZMQ socket"),
    "robustness": ("robot_sac.commands.robustness", "run a policy.onnx through a grid of perturbations and report"),
    "export": ("robot_sac.commands.export", "export a run's actor to a self-checked policy.onnx"),
    "eval": ("robot_sac.commands.eval", "run a policy.onnx in simulation through the robot's PolicyRuntime"),
    "learner": ("robot_sac.commands.learner", "continue SAC on robots' real transitions and send them new actors"),
    "keys": ("robot_sac.commands.keys", "CURVE key pairs and allow-list for the learner and its robots"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robot-sac", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from firmware_bridge.typed_yaml import ConfigError

    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except ConfigError as exc:
        print(f"robot-sac {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robot-sac {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
