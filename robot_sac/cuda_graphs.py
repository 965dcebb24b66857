"""SAC updates replayed from CUDA graphs.

With 256-unit layers and a batch of a few hundred, one update is about 220 kernels that compute for well under a
millisecond on a datacenter GPU, while launching them one by one from Python takes several: the GPU waits on the
CPU. A CUDA graph records the whole update (forward and backward passes, both optimizer steps, the target
networks' averaging and the actor's, when on) once and replays it with one launch.

A graph reads and writes fixed addresses, so everything it touches stays in place: the batch and the random draws
are copied into tensors held here, the optimizers are capturable (their step counts on the GPU), the
normalizer rewrites its statistics in place, and replacing the optimizers' state (a checkpoint load) calls for
new graphs. Dropout (DroQ) draws inside the graph from the generator's current offset at each replay, as eager
kernels do.

What a capture fixes, and what would therefore need new graphs if it ever changed during training: the Python
numbers in the update (learning rates, tau, gamma, the reward scale, the target entropy, the normalizer's clip),
the modules' train/eval mode and ``requires_grad``, and the tensors' addresses (a ``.to()`` move, an
``assign=True`` load). With ``actor_update_every > 1`` each kind of update has its own gradient buffers, so the
parameters' ``.grad`` shows the last captured kind, not the last replayed one; nothing reads it.
"""

from __future__ import annotations

import dataclasses

import torch

from robot_sac.replay import Batch

EAGER_UPDATES = 3
"""Updates run eagerly on a side stream before a capture: they create the optimizers' state and let the
libraries pick their kernels and workspaces, which must not happen during one."""


class GraphedUpdate:
    """``agent._update`` as CUDA graphs, one per kind of update (critic only, or critic and actor)."""

    def __init__(self, agent) -> None:
        self.agent = agent
        self.static: Batch | None = None
        self.draws: dict[bool, tuple] = {}
        self.graphs: dict[bool, tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor]]] = {}
        self.eager_left = {True: EAGER_UPDATES, False: EAGER_UPDATES}

    def __call__(self, batch: Batch, actor_due: bool) -> dict[str, torch.Tensor]:
        """One update on ``batch``: its loss values, in tensors that the next update overwrites."""
        self._stage(batch, actor_due)
        if actor_due in self.graphs:
            graph, info = self.graphs[actor_due]
            graph.replay()
            return info
        if self.eager_left[actor_due] > 0:
            self.eager_left[actor_due] -= 1
            side = torch.cuda.Stream(self.agent.device)
            side.wait_stream(torch.cuda.current_stream(self.agent.device))
            with torch.cuda.stream(side):
                info = self.agent._update(self.static, actor_due, *self.draws[actor_due])
            torch.cuda.current_stream(self.agent.device).wait_stream(side)
            return info
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            info = self.agent._update(self.static, actor_due, *self.draws[actor_due])
        self.graphs[actor_due] = (graph, info)
        graph.replay()  # the capture only recorded this update
        return info

    def _stage(self, batch: Batch, actor_due: bool) -> None:
        """Copy the batch and this update's random draws into the tensors the graphs read."""
        given = _fields(batch)
        if self.static is None:
            self.static = Batch(**{name: torch.empty_like(t) for name, t in given.items()})
        held = _fields(self.static)
        if batch.obs.shape != self.static.obs.shape:
            raise ValueError(f"batch of {batch.obs.shape[0]} rows; the CUDA graphs were captured for "
                             f"{self.static.obs.shape[0]}")
        if given.keys() != held.keys():
            raise ValueError(f"batch fields {sorted(given)}; the CUDA graphs were captured for {sorted(held)}")
        for name, tensor in given.items():
            held[name].copy_(tensor, non_blocking=True)
        draws = self.agent._draws(batch.obs.shape[0], actor_due)
        if actor_due not in self.draws:
            self.draws[actor_due] = tuple(d.clone() if isinstance(d, torch.Tensor) else d for d in draws)
        else:
            for held, new in zip(self.draws[actor_due], draws):
                if isinstance(held, torch.Tensor):
                    held.copy_(new)


def _fields(batch: Batch) -> dict[str, torch.Tensor]:
    """The batch's tensors by name; the privileged observations where the batch has them."""
    return {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch) if getattr(batch, f.name) is not None}
