"""Physics backends, robot tasks, randomization and the virtual robot."""
