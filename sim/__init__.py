"""Physics backends, robot tasks, randomization and the virtual robot.

Importing ``sim`` registers the Gymnasium ids in ``sim.registration.ENVS``.
"""

import os

# Headless machines (training boxes, CI) have no display for MuJoCo's default GLFW; EGL renders offscreen.
# Set here, in the package init, because mujoco reads it when first imported.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

from sim.registration import register_envs  # noqa: E402

register_envs()
