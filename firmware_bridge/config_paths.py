"""Find the ``configs/`` directory and resolve ``--robot`` / ``--task`` arguments (a name or a path)."""

from __future__ import annotations

import os
from pathlib import Path

from firmware_bridge.typed_yaml import ConfigError

# Set this to use a configs directory outside the repository (e.g. on a robot computer without a checkout).
CONFIGS_ENV = "ROBOT_SAC_CONFIGS"


def configs_dir() -> Path:
    """The configs directory: ``$ROBOT_SAC_CONFIGS``, else the repository's (editable install), else ``./configs``."""
    override = os.environ.get(CONFIGS_ENV)
    if override:
        path = Path(override)
        if not path.is_dir():
            raise ConfigError(f"{CONFIGS_ENV}={override}: not a directory")
        return path
    # An editable install leaves this file in <repo>/firmware_bridge/, next to <repo>/configs.
    for candidate in (Path(__file__).resolve().parent.parent / "configs", Path.cwd() / "configs"):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"no configs directory found; set {CONFIGS_ENV} to one")


def _resolve(kind: str, name_or_path: str | os.PathLike) -> Path:
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or os.sep in text or "/" in text:
        if not path.is_file():
            raise ConfigError(f"{text}: no such {kind[:-1]} file")
        return path
    candidate = configs_dir() / kind / f"{text}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in (configs_dir() / kind).glob("*.yaml"))
        raise ConfigError(f"unknown {kind[:-1]} {text!r} (known: {', '.join(known) or 'none'})")
    return candidate


def resolve_robot(name_or_path: str | os.PathLike) -> Path:
    """``quadruped`` -> ``configs/robots/quadruped.yaml``; a path is returned as is if it exists."""
    return _resolve("robots", name_or_path)


def resolve_task(name_or_path: str | os.PathLike) -> Path:
    """``claw_turn`` -> ``configs/tasks/claw_turn.yaml``; a path is returned as is if it exists."""
    return _resolve("tasks", name_or_path)
