"""robot-sac: train SAC policies in simulation, export them to ONNX, evaluate and stress them, serve a
virtual robot, and keep training from a robot's real transitions."""

from __future__ import annotations

import sys

from firmware_bridge.subcommands import run_command

# Subcommand -> module holding ``add_arguments(parser)`` and ``run(args) -> int``.
SUBCOMMANDS = {
    "train": ("robot_sac.commands.train", "train a SAC policy in simulation or on any Gymnasium env"),
    "virtual-robot": (
        "robot_sac.commands.virtual_robot",
        "simulated robot hardware on a pseudo-terminal or ZMQ socket",
    ),
    "robustness": ("robot_sac.commands.robustness", "run a policy.onnx through a grid of perturbations and report"),
    "export": ("robot_sac.commands.export", "export a run's actor to a self-checked policy.onnx"),
    "eval": ("robot_sac.commands.eval", "run a policy.onnx in simulation through the robot's PolicyRuntime"),
    "learner": ("robot_sac.commands.learner", "continue SAC on robots' real transitions and send them new actors"),
    "keys": ("robot_sac.commands.keys", "CURVE key pairs and allow-list for the learner and its robots"),
}


def main(argv: list[str] | None = None) -> int:
    return run_command("robot-sac", __doc__, SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
