"""Single-observation policy latency: PolicyRuntime vs onnxruntime's plain ``run`` vs torch eager vs plain
numpy matrix products.

For the quadruped and the claw actors (dimensions from configs/robots and configs/tasks, 256x256 hidden,
observation normalization on), one observation at a time as the control loop calls it. Each method runs
``--calls`` timed calls per round, the methods taking turns in blocks of 1,000; the table holds the median
over rounds of each percentile, in microseconds, and the ratios to numpy.

    python benchmarks/policy_latency.py [--calls 20000] [--rounds 3]

Targets: the runtime's p50 within 1.5x of numpy, its p99 under 30 us.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch

from firmware_bridge.policy_contract import INPUT_NAME, OUTPUT_NAME
from firmware_bridge.policy_runtime import PolicyRuntime, session_options
from firmware_bridge.task import TaskInterface
from robot_sac.export import ExportedPolicy, TorchPolicy, build_contract, robot_interface, to_onnx
from robot_sac.networks import Actor, ObservationNormalizer

TASKS = ("quadruped_walk", "claw_turn")
HIDDEN = (256, 256)
PERCENTILES = (50.0, 99.0, 99.9)
BLOCK = 1_000
"""Timed calls per method before the next method takes its turn."""
WARMUP = 50


def make_actor(obs_dim: int, act_dim: int, seed: int) -> tuple[Actor, ObservationNormalizer]:
    torch.manual_seed(seed)
    actor = Actor(obs_dim, act_dim, HIDDEN).eval()
    normalizer = ObservationNormalizer(obs_dim, enabled=True)
    normalizer.update(torch.randn(1000, obs_dim, dtype=torch.float64) * 2.0 + 0.5)
    return actor, normalizer.eval()


def numpy_policy(actor: Actor, normalizer: ObservationNormalizer) -> Callable[[np.ndarray], np.ndarray]:
    """The same policy as float32 numpy: normalize, clip, three matrix products, ReLU, tanh."""
    act_dim = actor.act_dim
    linears = [m for m in actor.trunk if isinstance(m, torch.nn.Linear)]
    (w1, b1), (w2, b2) = [(np.ascontiguousarray(m.weight.detach().numpy().T), m.bias.detach().numpy()) for m in linears]
    w3 = np.ascontiguousarray(actor.head.weight.detach()[:act_dim].numpy().T)
    b3 = actor.head.bias.detach()[:act_dim].numpy().copy()
    loc = normalizer.mean.numpy().astype(np.float32)
    inv = (1.0 / np.sqrt(normalizer.var.numpy() + normalizer.eps)).astype(np.float32)
    clip = np.float32(normalizer.clip)

    def policy(obs: np.ndarray) -> np.ndarray:
        x = np.clip((obs - loc) * inv, -clip, clip)
        h = np.maximum(x @ w1 + b1, 0.0)
        h = np.maximum(h @ w2 + b2, 0.0)
        return np.tanh(h @ w3 + b3)

    return policy


def torch_policy(actor: Actor, normalizer: ObservationNormalizer) -> Callable[[np.ndarray], np.ndarray]:
    module = TorchPolicy(actor, normalizer)

    def policy(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(obs).unsqueeze(0))[0].numpy()

    return policy


def session_run_policy(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """onnxruntime's plain ``run`` with a feed dict (same session options): what IO binding saves."""
    session = ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])

    def policy(obs: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: obs[None]})[0][0]

    return policy


def time_calls(policy: Callable[[np.ndarray], np.ndarray], observations: np.ndarray) -> np.ndarray:
    """Microseconds per call, one observation at a time."""
    durations = np.empty(len(observations), dtype=np.int64)
    clock = time.perf_counter_ns
    for i, obs in enumerate(observations):
        t0 = clock()
        policy(obs)
        durations[i] = clock() - t0
    return durations / 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000, help="timed calls per method per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    for t, task_name in enumerate(TASKS):
        task = TaskInterface.load(task_name)
        robot = task.load_robot()
        interface = robot_interface(robot, task)
        obs_dim, act_dim = interface["obs_dim"], interface["act_dim"]
        actor, normalizer = make_actor(obs_dim, act_dim, seed=t)
        contract = build_contract(interface, f"benchmark/{task_name}", normalizer, 0, "benchmark")
        data = to_onnx(ExportedPolicy(actor, normalizer), contract)
        runtime = PolicyRuntime(data, robot, task)
        methods = {
            "PolicyRuntime": runtime,
            "ort session.run": session_run_policy(data),
            "torch eager": torch_policy(actor, normalizer),
            "numpy float32": numpy_policy(actor, normalizer),
        }
        check = rng.standard_normal((16, obs_dim)).astype(np.float32)
        reference = np.stack([methods["torch eager"](o) for o in check])
        for name, policy in methods.items():
            diff = np.abs(np.stack([policy(o) for o in check]) - reference).max()
            if diff > 1e-5:
                raise SystemExit(f"{name} differs from torch by {diff:.2e} on {task_name}: not the same policy")
        per_round: dict[str, list[np.ndarray]] = {name: [] for name in methods}
        for _ in range(args.rounds):
            observations = rng.standard_normal((args.calls, obs_dim)).astype(np.float32)
            timed: dict[str, list[np.ndarray]] = {name: [] for name in methods}
            # Methods take turns in blocks, so a burst of load from other processes hits them all alike.
            for start in range(0, args.calls, BLOCK):
                block = observations[start : start + BLOCK]
                for name, policy in methods.items():
                    time_calls(policy, block[:WARMUP])  # warm the caches the other methods just used
                    timed[name].append(time_calls(policy, block))
            for name, durations in timed.items():
                per_round[name].append(np.percentile(np.concatenate(durations), PERCENTILES))
        medians = {name: np.median(np.stack(p), axis=0) for name, p in per_round.items()}
        for name, values in medians.items():
            rows.append({
                "actor": f"{task_name} {obs_dim}-256-256-{act_dim}",
                "method": name,
                **{f"p{q:g}_us": round(float(v), 2) for q, v in zip(PERCENTILES, values)},
                "p50_vs_numpy": round(float(values[0] / medians["numpy float32"][0]), 2),
                "p99_vs_numpy": round(float(values[1] / medians["numpy float32"][1]), 2),
            })
        rows[-len(methods)]["runtime_own_latency_us"] = runtime.latency_us()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'actor':<30} {'method':<16} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'p50/np':>7} {'p99/np':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['actor']:<30} {r['method']:<16} {r['p50_us']:>8.1f} {r['p99_us']:>8.1f} {r['p99.9_us']:>9.1f} "
              f"{r['p50_vs_numpy']:>7.2f} {r['p99_vs_numpy']:>7.2f}")
    for r in rows:
        if r["method"] == "PolicyRuntime":
            ok50 = r["p50_vs_numpy"] <= 1.5
            ok99 = r["p99_us"] < 30.0
            print(f"{r['actor']}: runtime p50 {r['p50_vs_numpy']:.2f}x numpy "
                  f"({'meets' if ok50 else 'misses'} <= 1.5x), p99 {r['p99_us']:.1f} us "
                  f"({'meets' if ok99 else 'misses'} < 30 us); "
                  f"runtime's own figures {r['runtime_own_latency_us']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
