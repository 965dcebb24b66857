"""Robustness suites: ``configs/robustness/<suite>.yaml``, read strictly.

A suite fixes what a robustness run sweeps: episodes per cell, whether the
episodes also draw the task's training randomization, and per task the
severities of each perturbation (names from ``sim.perturbations.PERTURBATIONS``),
mildest first. A task the suite does not list sweeps its own task file's
``perturbations`` grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge import typed_yaml
from firmware_bridge.config_paths import configs_dir
from firmware_bridge.typed_yaml import ConfigError
from sim.perturbations import PERTURBATIONS
from sim.task import TaskSpec


@dataclass(frozen=True)
class Suite:
    episodes: int = 10
    """Episodes per cell. Episode i of every cell is reset with the same seed (seed + i): the same goal and
    start, so cells differ only by their perturbation."""
    randomize_dynamics: bool = False
    """True: episodes also draw the task's training randomization; False: the task's nominal model."""
    tasks: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """Task name -> perturbation -> severities, mildest first (the order the verdict reads them in)."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes: need at least 1, got {self.episodes}")
        for task, grid in self.tasks.items():
            for name, severities in grid.items():
                if name not in PERTURBATIONS:
                    raise ConfigError(
                        f"tasks.{task}.{name}: unknown perturbation (known: {', '.join(PERTURBATIONS)})"
                    )
                if not severities:
                    raise ConfigError(f"tasks.{task}.{name}: no severities")

    def grid(self, task: TaskSpec) -> dict[str, list[float]]:
        """The perturbations and severities this suite runs on ``task``."""
        grid = self.tasks.get(task.name, task.perturbations)
        if not grid:
            raise ConfigError(f"task {task.name}: neither the suite nor the task file lists perturbations")
        return {name: [float(s) for s in severities] for name, severities in grid.items()}


def resolve_suite(name_or_path: str | os.PathLike) -> Path:
    """``quick`` -> ``configs/robustness/quick.yaml``; a path is returned as is if it exists."""
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or "/" in text or os.sep in text:
        if not path.is_file():
            raise ConfigError(f"{text}: no such suite file")
        return path
    candidate = configs_dir() / "robustness" / f"{text}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in (configs_dir() / "robustness").glob("*.yaml"))
        raise ConfigError(f"unknown robustness suite {text!r} (known: {', '.join(known) or 'none'})")
    return candidate


def load_suite(name_or_path: str | os.PathLike) -> Suite:
    """Load a suite by name (``default``, ``quick``) or path; errors name the file and the key."""
    return typed_yaml.load(Suite, resolve_suite(name_or_path))
