"""Physics backends, robot tasks, randomization and the virtual robot.

Importing ``sim`` registers the Gymnasium ids in ``sim.registration.ENVS``.
"""

from sim.registration import register_envs

register_envs()
