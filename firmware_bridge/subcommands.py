"""A command line made of subcommands, each a module with ``add_arguments(parser)`` and ``run(args) -> int``.

Both console commands (``firmware-bridge`` and ``robot-sac``) are built this way; library code raises, and
this layer turns a config error into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from firmware_bridge.typed_yaml import ConfigError

Table = dict[str, tuple[str, str]]
"""Subcommand name -> (module, one-line help)."""


def build_parser(prog: str, description: str, table: Table) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in table.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def run_command(prog: str, description: str, table: Table, argv: list[str] | None) -> int:
    args = build_parser(prog, description, table).parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except ConfigError as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Only outside a command's own handlers (run installs its own while the motors are armed).
        print(f"{prog} {args.command}: interrupted", file=sys.stderr)
        return 130
