"""Milliseconds per SAC update on CUDA, eager against replayed from CUDA graphs (``sac.cuda_graphs``).

    python benchmarks/cuda_graphs.py [--obs-dim 17] [--act-dim 6] [--batches 256 1024 4096] [--updates 400]

Needs a CUDA device. Each cell: a fresh agent, 30 updates of warm-up (the graphs are captured after three), then
``--updates`` timed ones over four resident batches, synchronized before and after.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from robot_sac.replay import Batch
from robot_sac.sac import SAC, SACConfig

WARMUP = 30


def ms_per_update(obs_dim: int, act_dim: int, batch: int, dtype: str, graphs: bool, updates: int) -> float:
    torch.manual_seed(0)
    agent = SAC(obs_dim, act_dim, SACConfig(batch_size=batch, matmul_dtype=dtype, cuda_graphs=graphs), "cuda")
    batches = [
        Batch(obs=torch.randn(batch, obs_dim, device="cuda"), action=torch.rand(batch, act_dim, device="cuda") * 2 - 1,
              reward=torch.randn(batch, device="cuda"), next_obs=torch.randn(batch, obs_dim, device="cuda"),
              terminated=torch.zeros(batch, device="cuda"))
        for _ in range(4)
    ]  # fmt: skip
    for i in range(WARMUP):
        agent.update(batches[i % 4])
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(updates):
        agent.update(batches[i % 4])
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / updates * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--act-dim", type=int, default=6)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--updates", type=int, default=400)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/cuda_graphs.py needs a CUDA device; torch sees none here")

    table = Table(title=f"ms per SAC update on {torch.cuda.get_device_name()} (256x256, obs {args.obs_dim}, "
                        f"act {args.act_dim})")
    for column in ("batch", "precision", "eager", "graphs", "speed-up"):
        table.add_column(column, justify="right")
    for batch in args.batches:
        for dtype in ("float32", "auto"):
            eager = ms_per_update(args.obs_dim, args.act_dim, batch, dtype, False, args.updates)
            graphed = ms_per_update(args.obs_dim, args.act_dim, batch, dtype, True, args.updates)
            table.add_row(str(batch), dtype, f"{eager:.2f}", f"{graphed:.2f}", f"{eager / graphed:.1f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
