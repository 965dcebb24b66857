"""firmware-bridge: the program on the robot: bring-up checks, the fixed-rate policy loop, its logs."""

from __future__ import annotations

import sys

from firmware_bridge.subcommands import run_command

# Subcommand -> module holding ``add_arguments(parser)`` and ``run(args) -> int``.
SUBCOMMANDS = {
    "check": ("firmware_bridge.commands.check", "bring-up: find the motors, read them, warn about slow settings"),
    "run": ("firmware_bridge.commands.run", "run a policy on the robot at a fixed rate, ending in the safe state"),
    "log-summary": ("firmware_bridge.commands.log_summary", "summarize and plot a tick log written by run --log"),
}


def main(argv: list[str] | None = None) -> int:
    return run_command("firmware-bridge", __doc__, SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
