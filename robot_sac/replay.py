"""Replay buffer: preallocated contiguous arrays, O(1) insert, vectorized sampling, saved with the checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from firmware_bridge.durable_files import durable_flush, sync_directory


@dataclass
class Batch:
    """A sampled minibatch on the training device. ``terminated`` is 1.0 where the bootstrap stops."""

    obs: torch.Tensor  # [B, obs_dim]
    action: torch.Tensor  # [B, act_dim]
    reward: torch.Tensor  # [B]
    next_obs: torch.Tensor  # [B, obs_dim]
    terminated: torch.Tensor  # [B]
    privileged: torch.Tensor | None = None  # [B, privileged_dim], for an asymmetric critic
    next_privileged: torch.Tensor | None = None  # [B, privileged_dim]


class ReplayBuffer:
    """A ring buffer of transitions.

    Only terminations are stored, never time-limit truncations: a transition cut by the time limit still
    bootstraps from its next observation (the state did not end, the episode did). With ``privileged_dim`` > 0
    each transition also holds the simulator's privileged observation before and after (``sim.privileged``).
    """

    def __init__(
        self, obs_dim: int, act_dim: int, capacity: int, device: torch.device | str = "cpu", privileged_dim: int = 0
    ):
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.obs = np.zeros((self.capacity, obs_dim), dtype=np.float32)
        self.action = np.zeros((self.capacity, act_dim), dtype=np.float32)
        self.reward = np.zeros(self.capacity, dtype=np.float32)
        self.next_obs = np.zeros((self.capacity, obs_dim), dtype=np.float32)
        self.terminated = np.zeros(self.capacity, dtype=np.float32)
        self.fields: tuple[str, ...] = ("obs", "action", "reward", "next_obs", "terminated")
        """The stored arrays' names (attributes of this buffer, keys of ``Batch`` and of the saved file)."""
        if privileged_dim > 0:
            self.privileged = np.zeros((self.capacity, privileged_dim), dtype=np.float32)
            self.next_privileged = np.zeros((self.capacity, privileged_dim), dtype=np.float32)
            self.fields += ("privileged", "next_privileged")
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def privileged_dim(self) -> int:
        return self.privileged.shape[1] if "privileged" in self.fields else 0

    def add(
        self, obs, action, reward: float, next_obs, terminated: bool, privileged=None, next_privileged=None
    ) -> None:
        self._check_privileged(privileged, next_privileged, rows=())
        i = self.pos
        self.obs[i] = obs
        self.action[i] = action
        self.reward[i] = reward
        self.next_obs[i] = next_obs
        self.terminated[i] = float(terminated)
        if self.privileged_dim:
            self.privileged[i] = privileged
            self.next_privileged[i] = next_privileged
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def add_batch(self, obs, action, reward, next_obs, terminated, privileged=None, next_privileged=None) -> None:
        """Insert ``N`` transitions at once (vectorized collection, transitions from a robot)."""
        n = len(reward)
        if n > self.capacity:
            raise ValueError(f"batch of {n} transitions exceeds the buffer capacity {self.capacity}")
        self._check_privileged(privileged, next_privileged, rows=(n,))
        idx = (self.pos + np.arange(n)) % self.capacity
        self.obs[idx] = obs
        self.action[idx] = action
        self.reward[idx] = reward
        self.next_obs[idx] = next_obs
        self.terminated[idx] = np.asarray(terminated, dtype=np.float32)
        if self.privileged_dim:
            self.privileged[idx] = privileged
            self.next_privileged[idx] = next_privileged
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def _check_privileged(self, privileged, next_privileged, rows: tuple[int, ...]) -> None:
        """Refuse privileged observations that this buffer cannot store as given, before anything is written."""
        for name, value in (("privileged", privileged), ("next_privileged", next_privileged)):
            if self.privileged_dim == 0 and value is not None:
                raise ValueError(f"{name}: this buffer has no room for it (privileged_dim 0)")
            if self.privileged_dim == 0:
                continue
            if value is None:
                raise ValueError(f"{name}: this buffer stores it, and it is missing")
            expected = (*rows, self.privileged_dim)
            if np.shape(value) != expected:
                raise ValueError(f"{name}: shape {np.shape(value)}, expected {expected}")

    def sample_indices(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return rng.integers(0, self.size, size=batch_size)

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        idx = self.sample_indices(rng, batch_size)
        to = lambda a: torch.from_numpy(a[idx]).to(self.device, non_blocking=True)  # noqa: E731
        return Batch(**{name: to(getattr(self, name)) for name in self.fields})

    def save(self, path: str | Path) -> None:
        """Write the filled part and the write position; the file is replaced atomically."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(
                f,
                pos=self.pos,
                size=self.size,
                capacity=self.capacity,
                **{name: getattr(self, name)[: self.size] for name in self.fields},
            )
            durable_flush(f)
        tmp.replace(path)
        sync_directory(path.parent)

    def load(self, path: str | Path) -> None:
        with np.load(path) as data:
            if int(data["capacity"]) != self.capacity:
                raise ValueError(f"{path}: buffer capacity {int(data['capacity'])} != configured {self.capacity}")
            size, pos = int(data["size"]), int(data["pos"])
            if not 0 <= size <= self.capacity:
                raise ValueError(f"{path}: size {size} is outside [0, {self.capacity}]")
            if not 0 <= pos < self.capacity or (size < self.capacity and pos != size):
                raise ValueError(f"{path}: write position {pos} does not fit size {size} of {self.capacity}")
            # Every field is checked before any is written: a refused file leaves the buffer as it was.
            for name in ("privileged", "next_privileged"):
                if name in data and name not in self.fields:
                    raise ValueError(f"{path}: field {name} is stored, and this buffer has no room for it "
                                     "(saved by a run with sac.privileged_critic)")
            for name in self.fields:
                if name not in data:
                    hint = " (saved by a run without sac.privileged_critic)" if "privileged" in name else ""
                    raise ValueError(f"{path}: no field {name}{hint}")
                rows, *stored = _stored_shape(data, name)
                own = list(getattr(self, name).shape[1:])
                if stored != own:
                    raise ValueError(f"{path}: field {name} has shape {tuple(stored)}, expected {tuple(own)}")
                if rows != size:
                    raise ValueError(f"{path}: field {name} has {rows} rows, the file's size is {size}")
            for name in self.fields:
                getattr(self, name)[:size] = data[name]
            self.size = size
            self.pos = pos


def _stored_shape(data: np.lib.npyio.NpzFile, name: str) -> tuple[int, ...]:
    """An array's shape from its header alone: ``data[name]`` would read (and a check would then read again) a
    buffer-sized array."""
    with data.zip.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(f)
    return shape
