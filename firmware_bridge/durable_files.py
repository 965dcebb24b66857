"""Writes that survive a power loss, not only a killed process: the robot's spool and the learner's checkpoints
promise that what they hold is on the disk itself (the learner tells robots to delete what a checkpoint covers)."""

from __future__ import annotations

import os
from pathlib import Path


def durable_flush(f) -> None:
    """Flush an open file to the disk itself, not just the page cache."""
    f.flush()
    os.fsync(f.fileno())


def sync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (the directory entry is data of its own)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
