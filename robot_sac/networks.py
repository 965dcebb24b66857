"""The networks SAC trains: a squashed-Gaussian actor, a fused critic ensemble, an observation normalizer.

Shapes: observations ``[B, obs_dim]``, actions ``[B, act_dim]`` in [-1, 1]; critic values ``[E, B]`` for an
ensemble of ``E`` critics (two for the paper's twin critics).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0
_LOG2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def tanh_log_det(pre_tanh: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(u)^2) elementwise, written as 2 (log 2 - u - softplus(-2u)).

    The naive form returns -inf once tanh(u) rounds to +-1 near the action bounds.
    """
    return 2.0 * (_LOG2 - pre_tanh - F.softplus(-2.0 * pre_tanh))


def squashed_gaussian_log_prob(noise: torch.Tensor, log_std: torch.Tensor, pre_tanh: torch.Tensor) -> torch.Tensor:
    """log pi(tanh(u)) for u = mean + exp(log_std) * noise, summed over the action dimensions -> ``[B]``.

    Taking the standard-normal ``noise`` rather than the mean spares the sampler a division and its backward
    pass: the sampler drew the noise itself.
    """
    normal_lp = -0.5 * noise.square() - log_std - _HALF_LOG_2PI
    return (normal_lp - tanh_log_det(pre_tanh)).sum(-1)


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(_relu())
    return nn.Sequential(*layers)


def _relu() -> nn.ReLU:
    # In place: the linear and layer-norm backward passes need their inputs, not their outputs, so ReLU may
    # overwrite them, which saves allocating (and page-faulting) a fresh activation buffer per layer.
    return nn.ReLU(inplace=True)


def float32_layer(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in float32 even inside a bfloat16 autocast region.

    The networks' outputs are computed in full precision: in bfloat16 a Q-value of 300 rounds to steps of
    2, coarser than the TD errors the critics learn from. Output layers are a sliver of
    the work, so this costs little.
    """
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy over normalized observations."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.trunk = mlp([obs_dim, *hidden])
        self.trunk.append(_relu())
        self.head = nn.Linear(hidden[-1], 2 * act_dim)
        self.act_dim = act_dim

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[B, A]`` and clamped log-std ``[B, A]`` of the pre-tanh Gaussian."""
        mean, log_std = float32_layer(self.head, self.trunk(obs)).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized action ``[B, A]`` in (-1, 1) and its log-probability ``[B]``.

        ``noise``: the standard-normal draw ``[B, A]``; drawn here when not given.
        """
        mean, log_std, noise, pre_tanh = self._draw(obs, noise)
        return torch.tanh(pre_tanh), squashed_gaussian_log_prob(noise, log_std, pre_tanh)

    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """A sampled action ``[B, A]`` in (-1, 1), drawn as ``sample`` draws it, without the log-probability
        that only the losses need: acting in the environment happens once per step."""
        return torch.tanh(self._draw(obs, None)[3])

    def _draw(self, obs: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        mean, log_std = self(obs)
        if noise is None:
            noise = torch.randn_like(mean)
        return mean, log_std, noise, torch.addcmul(mean, log_std.exp(), noise)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """The action a deployed policy takes: tanh of the mean."""
        return torch.tanh(self(obs)[0])


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers evaluated at once: one batched matrix product (with one output, a
    multiply and a sum)."""

    def __init__(self, ensemble: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_features))
        # The same distribution as nn.Linear's default, so a fused critic starts like two separate ones.
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[E, B, in]`` (or ``[B, in]``, shared by all members) -> ``[E, B, out]``."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.weight.shape[0], -1, -1)
        if self.weight.shape[-1] == 1:
            # A critic's output layer. A batched matrix product with one output column falls off the BLAS
            # fast path (float32 [2, 256, 256] x [2, 256, 1]: 140 us here); the same dot products as a
            # multiply and a sum take 20 us, and their backward is as cheap.
            return (x * self.weight.mT).sum(-1, keepdim=True) + self.bias
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """Layer norm with a separate affine transform per ensemble member."""

    def __init__(self, ensemble: int, features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ensemble, 1, features))
        self.bias = nn.Parameter(torch.zeros(ensemble, 1, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, F.layer_norm(x, x.shape[-1:]), self.weight)


class CriticEnsemble(nn.Module):
    """``E`` soft Q networks fused into one: Q(s, a) for all members in one pass.

    With ``dropout > 0`` and ``layer_norm`` this is the DroQ critic (Hiraoka et al., 2022), which stays
    stable at high update-to-data ratios.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: tuple[int, ...] = (256, 256),
        ensemble: int = 2,
        dropout: float = 0.0,
        layer_norm: bool = False,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        sizes = [obs_dim + act_dim, *hidden]
        for i in range(len(hidden)):
            layers.append(EnsembleLinear(ensemble, sizes[i], sizes[i + 1]))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            if layer_norm:
                layers.append(EnsembleLayerNorm(ensemble, sizes[i + 1]))
            layers.append(_relu())
        self.net = nn.Sequential(*layers)
        self.head = EnsembleLinear(ensemble, hidden[-1], 1)
        self.ensemble = ensemble

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q-values ``[E, B]``."""
        return float32_layer(self.head, self.net(torch.cat([obs, action], dim=-1))).squeeze(-1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before the output layer became ``head`` hold it as the last entry of ``net``.
        old = f"{prefix}net.{len(self.net)}."
        for name in ("weight", "bias"):
            if old + name in state_dict:
                state_dict[f"{prefix}head.{name}"] = state_dict.pop(old + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ObservationNormalizer(nn.Module):
    """Running mean and variance of observations; the statistics are buffers, so export folds them in."""

    def __init__(self, obs_dim: int, enabled: bool = True, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.register_buffer("mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(0.0, dtype=torch.float64))
        # What forward applies, in float32, rewritten in place whenever the statistics change: a CUDA graph
        # of the update reads them at fixed addresses. Derived, so not saved.
        self.register_buffer("loc", torch.zeros(obs_dim), persistent=False)
        self.register_buffer("inv_scale", torch.ones(obs_dim), persistent=False)
        self.enabled = enabled
        self.clip = clip
        self.eps = eps
        self._refresh()

    def update(self, batch: np.ndarray | torch.Tensor) -> None:
        """Merge a batch ``[B, obs_dim]`` (or one observation ``[obs_dim]``) into the statistics (Chan et al.'s
        parallel variance).

        The arithmetic runs in NumPy on the host: the trainer merges one observation per environment step, and
        torch's per-operation overhead made that about 57 us a call. For one observation the float64 operations
        are the ones torch ran before, in the same order, so the statistics are the same bit for bit. No
        buffer requires a gradient, so no gradient mode is needed either.
        """
        if not self.enabled:
            return
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().to("cpu", torch.float64).numpy()
        rows = np.asarray(batch, dtype=np.float64)
        dim = self.mean.shape[0]
        if rows.shape[-1:] != (dim,):
            raise ValueError(f"observation normalizer: observations of {dim} values expected, got shape {rows.shape}")
        rows = rows.reshape(-1, dim)
        n = rows.shape[0]
        if n == 0:
            return
        # Views of the buffers on the CPU, copies of them on a GPU.
        mean, var, count = self.mean.cpu().numpy(), self.var.cpu().numpy(), float(self.count)
        b_mean = rows.mean(0) if n > 1 else rows[0]
        b_var = rows.var(0) if n > 1 else 0.0
        total = count + n
        delta = b_mean - mean
        new_mean = mean + delta * n / total
        new_var = (var * count + b_var * n + delta**2 * count * n / total) / total
        self.mean.copy_(torch.from_numpy(new_mean))
        self.var.copy_(torch.from_numpy(new_var))
        self.count.fill_(total)
        self._set_applied(new_mean, new_var)

    def _refresh(self) -> None:
        self._set_applied(self.mean.cpu().numpy(), self.var.cpu().numpy())

    def _set_applied(self, mean: np.ndarray, var: np.ndarray) -> None:
        """Write what forward applies from float64 statistics: in place, at the buffers' fixed addresses."""
        self.loc.copy_(torch.from_numpy(mean))
        self.inv_scale.copy_(torch.from_numpy(1.0 / np.sqrt(var + self.eps)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return obs
        return ((obs - self.loc) * self.inv_scale).clamp(-self.clip, self.clip)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._refresh()
