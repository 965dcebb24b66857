"""Writing checkpoints so that a crash never leaves a half-written one, and the random states they carry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from firmware_bridge.durable_files import durable_flush, sync_directory


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, flushed to disk, then renamed over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        durable_flush(f)
    tmp.replace(path)
    sync_directory(path.parent)


def rng_states(rng: np.random.Generator) -> dict[str, Any]:
    """``rng``'s state with torch's CPU and (where present) CUDA generators', for ``restore_rng_states``."""
    return {
        "numpy": rng.bit_generator.state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng_states(rng: np.random.Generator, states: dict[str, Any]) -> None:
    rng.bit_generator.state = states["numpy"]
    # map_location moved the RNG states to the training device too; torch takes them only on the CPU.
    torch.set_rng_state(states["torch"].cpu())
    cuda = states.get("cuda")  # learner checkpoints from before it was saved have none
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
