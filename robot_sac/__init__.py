"""robot-sac: Soft Actor-Critic for sim-to-real robot control."""

__version__ = "0.1.0"
