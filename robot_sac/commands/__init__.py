"""Subcommands of ``robot-sac``: each module has ``add_arguments(parser)`` and ``run(args)``."""
