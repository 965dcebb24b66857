"""Subcommands of ``firmware-bridge``: each module has ``add_arguments(parser)`` and ``run(args)``."""
