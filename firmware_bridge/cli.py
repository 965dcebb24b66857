"""The ``firmware-bridge`` command: one subcommand per module, each with ``add_arguments`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand -> module holding ``add_arguments(parser)`` and ``run(args) -> int``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "check": ("firmware_bridge.commands.check", "bring-up: find the motors, read them, warn about slow settings"),
    "run": ("firmware_bridge.commands.run", "run a policy on the robot at a fixed rate, ending in the safe state"),
    "log-summary": ("firmware_bridge.commands.log_summary", "summarize and plot a tick log written by run --log"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="firmware-bridge", description=__doc__)
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
        print(f"firmware-bridge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Only before or after a command's own handlers (run installs its own while the motors are armed).
        print(f"firmware-bridge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
