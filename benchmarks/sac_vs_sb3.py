"""Our SAC against Stable-Baselines3's SAC, same hyperparameters, same process, same machine.

Prints, per implementation: environment steps/s once learning has started, gradient updates/s, and the
deterministic evaluation return at equal step counts (mean over seeds), then the ratios. Also prints the
floor: the floating-point work of one update (counted by torch's FlopCounterMode) divided by the
matrix-multiply rate measured here, and how far each update time sits above it.

    python benchmarks/sac_vs_sb3.py [--env Pendulum-v1] [--steps 6000] [--seeds 3] [--matmul-dtype auto]
                                    [--eval-every 1000] [--eval-episodes 5] [--plot returns.png]

``--env`` takes any Gymnasium id with a Box action space (``HalfCheetah-v5``) or a robot task
(``robot_sac/ClawTurn-v0``, ``robot_sac/QuadrupedWalk-v0``).

Ours runs its hidden layers' matrix products in bfloat16 where the CPU has native bfloat16 (``auto``);
``--matmul-dtype float32`` compares at SB3's precision. Ours computes the critic's and the actor's gradients
from the same pre-update networks at once (``sac.simultaneous_update``): the critics' pass in a child process
(``--parallel-update thread``: on a second thread), each pass with half of SB3's torch threads; ``--sequential``
runs SB3's order (actor after the critic step) on one thread with all of them.
Both train on ``robot_sac.envs.make_env(env)``: the robot tasks registered, actions in [-1, 1] (SB3 would
rescale them to the same range itself). SB3 runs with torch's default threads (``OMP_NUM_THREADS`` or the
physical cores), or ``--threads``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from robot_sac.config import TrainConfig
from robot_sac.envs import make_env
from robot_sac.sac import SACConfig, resolve_matmul_dtype, select_device
from robot_sac.trainer import Trainer


def evaluate(act, env: gym.Env, episodes: int, seed: int) -> float:
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + 10_000 + ep)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def run_ours(env_id, steps, seed, learning_starts, eval_at, eval_episodes, utd, args):
    cfg = TrainConfig(
        env=env_id, total_steps=steps, seed=seed, learning_starts=learning_starts, buffer_size=steps,
        eval_interval=10**9, checkpoint_interval=10**9, log_interval=10**9,
        # SB3's threads in all: split between the two passes when ours runs them at once.
        torch_threads=args.sb3_threads if args.sequential else max(1, args.sb3_threads // 2),
        sac=SACConfig(utd=utd, matmul_dtype=args.matmul_dtype, simultaneous_update=not args.sequential,
                      parallel_update=args.parallel_update),
        device=args.device,
    )
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, Path(run_dir), show_progress=False)
        trainer._log_scalars = lambda: None  # timing the algorithm, not TensorBoard
        eval_env = make_env(env_id)
        trainer.train(until=learning_starts)
        train_s, returns = 0.0, {}
        for point in eval_at:
            t0 = time.perf_counter()
            trainer.train(until=point)
            train_s += time.perf_counter() - t0
            returns[point] = evaluate(lambda o: trainer.agent.act(o, deterministic=True), eval_env, eval_episodes, seed)
        updates = trainer.agent.updates
        update_s = trainer.update_wall_s
    return {"steps_per_s": (steps - learning_starts) / train_s, "updates_per_s": updates / update_s,
            "update_ms": 1000 * update_s / updates, "returns": returns}


def run_sb3(env_id, steps, seed, learning_starts, eval_at, eval_episodes, utd, args):
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.logger import Logger

    torch.set_num_threads(args.sb3_threads)  # ours may have changed them
    from stable_baselines3.common.callbacks import BaseCallback

    class UpdateTimer(BaseCallback):
        """SB3 trains in _on_rollout_end -> train(); time the train() calls by wrapping them."""

        update_s = 0.0

        def _on_training_start(self):
            if getattr(self.model, "_timed", False):  # learn() is called once per evaluation chunk
                return
            self.model._timed = True
            original = self.model.train

            def timed(*a, **kw):
                t0 = time.perf_counter()
                original(*a, **kw)
                self.update_s += time.perf_counter() - t0

            self.model.train = timed

        def _on_step(self):
            return True

    model = SB3SAC(
        "MlpPolicy", make_env(env_id), learning_rate=3e-4, buffer_size=steps, learning_starts=learning_starts,
        batch_size=256, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=utd, ent_coef="auto",
        policy_kwargs={"net_arch": [256, 256]}, seed=seed, device=args.device, verbose=0,
    )
    # Without a logger of its own, every learn() call has SB3 create an empty SB3-<time> folder in the temp dir.
    model.set_logger(Logger(folder=None, output_formats=[]))
    timer = UpdateTimer()
    model.learn(learning_starts, callback=timer, reset_num_timesteps=True)
    eval_env = make_env(env_id)
    train_s, returns, done = 0.0, {}, learning_starts
    for point in eval_at:
        t0 = time.perf_counter()
        model.learn(point - done, callback=timer, reset_num_timesteps=False)
        train_s += time.perf_counter() - t0
        done = point
        returns[point] = evaluate(lambda o: model.predict(o, deterministic=True)[0], eval_env, eval_episodes, seed)
    updates = model._n_updates
    return {"steps_per_s": (steps - learning_starts) / train_s, "updates_per_s": updates / timer.update_s,
            "update_ms": 1000 * timer.update_s / updates, "returns": returns}


def update_flops(env_id: str, matmul_dtype: str) -> float:
    """Floating-point operations of one of our updates at batch 256, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from robot_sac.replay import ReplayBuffer
    from robot_sac.sac import SAC

    env = make_env(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    # One thread: torch's dispatch modes (the flop counter) see only the thread that entered them.
    agent = SAC(obs_dim, act_dim, SACConfig(matmul_dtype=matmul_dtype, simultaneous_update=False))
    buf = ReplayBuffer(obs_dim, act_dim, 512)
    rng = np.random.default_rng(0)
    buf.add_batch(rng.normal(size=(512, obs_dim)), rng.uniform(-1, 1, (512, act_dim)), rng.normal(size=512),
                  rng.normal(size=(512, obs_dim)), np.zeros(512))
    batch = buf.sample(rng, 256)
    with FlopCounterMode(display=False) as counter:
        agent.update(batch)
    return float(counter.get_total_flops())


def matmul_rate(dtype: torch.dtype, device: torch.device, n: int = 256, repeats: int = 2000) -> float:
    """Sustained FLOP/s of n x n matrix products in ``dtype`` on ``device``, the shape that dominates an update."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    out = torch.empty(n, n, dtype=dtype, device=device)
    for _ in range(50):
        torch.mm(a, b, out=out)
    _synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b, out=out)
    _synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


MIN_SEEDS_FOR_INTERVAL = 10
"""Below this many seeds a side, a percentile bootstrap's 95% interval is too narrow to trust: on normal samples
with no true difference it left out 0 in 22% of trials at 3 seeds a side, 9% at 8 and 7% at 10 (300 trials each)."""


def bootstrap_difference(ours: list[float], sb3: list[float], resamples: int = 10_000) -> tuple[float, float]:
    """95% interval of mean(ours) - mean(sb3), resampling each side's seeds with replacement (seeds differ in
    kind between the two, so the samples are not paired)."""
    rng = np.random.default_rng(0)
    a, b = np.asarray(ours), np.asarray(sb3)
    diffs = (rng.choice(a, (resamples, a.size)).mean(1) - rng.choice(b, (resamples, b.size)).mean(1))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def plot_returns(path: Path, env_id: str, eval_at: list[int], results: dict[str, list[dict]]) -> None:
    """Evaluation return against steps: each seed thin, the mean over seeds bold, ours and SB3 side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for color, (name, label) in zip(("C0", "C1"), (("ours", "ours"), ("sb3", "Stable-Baselines3"))):
        per_seed = np.array([[r["returns"][point] for point in eval_at] for r in results[name]])
        ax.plot(eval_at, per_seed.T, color=color, lw=0.6, alpha=0.35)
        ax.plot(eval_at, per_seed.mean(0), "-o", color=color, ms=3, lw=2, label=f"{label} (mean of {len(per_seed)})")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("deterministic evaluation return")
    ax.set_title(f"SAC on {env_id}\nours and Stable-Baselines3, same hyperparameters", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--utd", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads in all for each (0: torch's default); ours splits them between its passes")
    parser.add_argument("--sequential", action="store_true",
                        help="ours in SB3's order on one thread (sac.simultaneous_update: false)")
    parser.add_argument("--parallel-update", default="process", choices=["process", "thread"],
                        help="where ours runs the critics' pass beside the actor's (sac.parallel_update)")
    parser.add_argument("--matmul-dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="precision of our hidden layers' matrix products (SB3 always runs float32)")
    parser.add_argument("--plot", type=Path, help="also draw the evaluation returns of every seed to this PNG")
    parser.add_argument("--device", default="auto",
                        help="where both train: auto (CUDA when present), cpu, cuda; the floor is measured there too")
    args = parser.parse_args()
    device = select_device(args.device)
    args.device = str(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.sb3_threads = torch.get_num_threads()
    eval_at = list(range(args.learning_starts + args.eval_every, args.steps + 1, args.eval_every))
    if not eval_at or eval_at[-1] != args.steps:
        eval_at.append(args.steps)
    console = Console()
    dtype = resolve_matmul_dtype(args.matmul_dtype, device)
    ours_threads = "one thread" if args.sequential else f"critic and actor passes at once ({args.parallel_update})"
    console.print(f"[bold]{args.env}[/]: {args.steps} steps, {args.seeds} seeds, UTD {args.utd}, batch 256, "
                  f"256x256, on {device}; SB3 with {args.sb3_threads} torch threads; ours: {ours_threads}, "
                  f"matmuls in {dtype}")

    results = {"ours": [], "sb3": []}
    for seed in range(args.seeds):
        # Alternate the order so neither implementation always runs on a warmer (or busier) machine.
        order = [("ours", run_ours), ("sb3", run_sb3)] if seed % 2 == 0 else [("sb3", run_sb3), ("ours", run_ours)]
        for name, fn in order:
            r = fn(args.env, args.steps, seed, args.learning_starts, eval_at, args.eval_episodes, args.utd, args)
            results[name].append(r)
            console.print(f"  seed {seed} {name:>4}: {r['steps_per_s']:6.1f} steps/s, {r['updates_per_s']:6.1f} "
                          f"updates/s, return at {args.steps}: {r['returns'][args.steps]:8.1f}")

    def med(name, key):
        return statistics.median(r[key] for r in results[name])

    table = Table(title=f"SAC throughput and returns on {args.env} ({args.seeds} seeds; rates: median)")
    table.add_column("metric")
    table.add_column("ours", justify="right")
    table.add_column("SB3", justify="right")
    table.add_column("ours / SB3", justify="right")
    for key, label in (("steps_per_s", "env steps/s (learning)"), ("updates_per_s", "gradient updates/s"),
                       ("update_ms", "ms per update")):
        o, s = med("ours", key), med("sb3", key)
        table.add_row(label, f"{o:.1f}", f"{s:.1f}", f"{o / s:.2f}x")
    for point in eval_at:
        # The median beside the mean: one seed that has not yet swung up moves the mean by tens of points.
        o, s = ([r["returns"][point] for r in results[name]] for name in ("ours", "sb3"))
        cells = [f"{np.mean(x):.1f} ({np.median(x):.1f})" for x in (o, s)]
        difference = f"{np.mean(o) - np.mean(s):+.1f} ({np.median(o) - np.median(s):+.1f})"
        table.add_row(f"eval return @ {point} mean (median)", *cells, difference)
    console.print(table)
    o, s = ([r["returns"][args.steps] for r in results[name]] for name in ("ours", "sb3"))
    if len(o) >= MIN_SEEDS_FOR_INTERVAL:
        low, high = bootstrap_difference(o, s)
        verdict = "spans 0: these seeds do not tell the two apart" if low <= 0 <= high else "excludes 0"
        console.print(f"return @ {args.steps}, ours - SB3: mean {np.mean(o) - np.mean(s):+.1f}, 95% bootstrap "
                      f"interval [{low:+.1f}, {high:+.1f}] over {len(o)} seeds each ({verdict})")
    else:
        console.print(f"return @ {args.steps}, ours - SB3: mean {np.mean(o) - np.mean(s):+.1f} over {len(o)} seeds "
                      f"each; an interval needs --seeds {MIN_SEEDS_FOR_INTERVAL} or more")
    if args.plot:
        plot_returns(args.plot, args.env, eval_at, results)
        console.print(f"returns plot: {args.plot}")

    flops = update_flops(args.env, args.matmul_dtype)
    torch.set_num_threads(args.sb3_threads)
    rate = matmul_rate(dtype, device)
    floor_ms = 1000 * flops / rate
    console.print(f"floor: one update = {flops / 1e6:.1f} MFLOP; {dtype} 256x256 matmul rate here ({device}) "
                  f"{rate / 1e9:.1f} GFLOP/s -> {floor_ms:.2f} ms per update at best "
                  f"(float32: {1000 * flops / matmul_rate(torch.float32, device):.2f} ms)")
    ours_ms, sb3_ms = med("ours", "update_ms"), med("sb3", "update_ms")
    console.print(f"       ours {ours_ms:.2f} ms = {ours_ms / floor_ms:.1f}x the floor; "
                  f"SB3 {sb3_ms:.2f} ms = {sb3_ms / floor_ms:.1f}x")


if __name__ == "__main__":
    main()
