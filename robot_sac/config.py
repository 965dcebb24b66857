"""The training run's typed config: YAML files and ``--set key=value`` overrides load into ``TrainConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_bridge.typed_yaml import ConfigError, apply_overrides, from_mapping, load_yaml

from robot_sac.sac import SACConfig


@dataclass
class TrainConfig:
    env: str = "Pendulum-v1"
    """Gymnasium id; ``robot_sac/...`` ids are the project's robot tasks."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for ``gymnasium.make`` (e.g. ``backend: mujoco``)."""
    total_steps: int = 20_000
    """Environment steps to train for."""
    seed: int = 0
    """Seeds torch, the run's numpy generator and the first reset; evaluation episodes use ``seed + 1000003 + i``."""
    learning_starts: int = 1_000
    """Uniform-random steps collected before the first gradient update."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions; the oldest are overwritten once it is full."""
    eval_interval: int = 1_000
    """Environment steps between deterministic evaluations."""
    eval_episodes: int = 5
    """Episodes per evaluation; ``best.pt`` is picked on them (success rate, then return)."""
    checkpoint_interval: int = 5_000
    """Environment steps between full checkpoints (networks, optimizers, replay, RNG states)."""
    log_interval: int = 250
    """Environment steps between TensorBoard writes of the update statistics."""
    device: str = "auto"
    """``auto`` picks CUDA when present, else CPU; or ``cpu``, ``cuda``, ``cuda:1``."""
    torch_threads: int = 0
    """Intra-op threads for torch on CPU, per pass when the update runs its critic and actor passes on two
    threads (``sac.simultaneous_update``); 0 keeps torch's default (``OMP_NUM_THREADS`` or the physical
    cores), halved per pass on two threads."""
    sac: SACConfig = field(default_factory=SACConfig)


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config a run directory was trained with."""
    path = Path(run_dir) / "config.yaml"
    mapping = load_yaml(path)
    sac = mapping.get("sac")
    if isinstance(sac, dict):
        # Runs written before the option existed took the actor step after the critic step, on one thread.
        sac.setdefault("simultaneous_update", False)
    try:
        return from_mapping(TrainConfig, mapping)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_train_config(path: str | Path | None, overrides: list[str] = (), **direct: Any) -> TrainConfig:
    """Config file (or the defaults), then ``--set`` overrides, then direct options that are not None."""
    mapping = load_yaml(path) if path else {}
    apply_overrides(mapping, overrides)
    mapping.update({key: value for key, value in direct.items() if value is not None})
    try:
        return from_mapping(TrainConfig, mapping)
    except ConfigError as exc:
        raise ConfigError(f"{path or 'config'}: {exc}") from None
