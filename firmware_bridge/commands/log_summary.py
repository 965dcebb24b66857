"""``firmware-bridge log-summary FILE``: what a tick log recorded, and a PNG of joint trajectories and timings.

Percentiles here are exact (computed from every tick in the file), so they
can differ slightly from the live run's binned ones. Plotting needs
matplotlib (the ``logs`` extra); it is imported only when a plot is drawn,
so the robot computer does not need it to summarize a log.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from firmware_bridge.tick_log import TickLogData, TickLogError, read_tick_log
from firmware_bridge.timing import TIMING_CHANNELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", metavar="FILE", help="MCAP tick log written by `firmware-bridge run --log`")
    parser.add_argument("--plot", metavar="PNG", help="where to draw the plots (default: FILE with .png)")
    parser.add_argument("--no-plot", action="store_true", help="print the summary only")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def summarize(data: TickLogData) -> dict[str, object]:
    def pct(values: np.ndarray) -> dict[str, float]:
        values = values[np.isfinite(values)]
        if values.size == 0:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        p50, p99 = np.percentile(values, [50, 99])
        return {"p50": round(float(p50), 1), "p99": round(float(p99), 1), "max": round(float(values.max()), 1)}

    missed = int(data.missed.sum())
    span = float(data.time_s[-1]) if data.ticks > 1 else 0.0
    stops = [e for e in data.events if e["kind"] == "safety_stop"]
    safe = [e for e in data.events if e["kind"] in ("safe_state", "safe_stop_failed")]
    versions = [int(v) for i, v in enumerate(data.policy_version) if i == 0 or v != data.policy_version[i - 1]]
    travel = np.ptp(data.joint_pos, axis=0) if data.ticks else np.zeros(0)
    return {
        "robot": data.run_info.get("robot"),
        "policy": data.run_info.get("policy"),
        "ticks": data.ticks,
        "missed_deadlines": missed,
        "rate_hz": data.run_info.get("rate_hz"),
        "achieved_rate_hz": round((data.ticks - 1) / span, 3) if span > 0 else 0.0,
        "span_s": round(span, 4),
        **{f"{name}_us": pct(data.timings_us[name]) for name in TIMING_CHANNELS},
        "policy_versions": versions,
        "safety_stop": stops[-1]["detail"] if stops else None,
        "safe_state": safe[-1]["kind"] == "safe_state" if safe else None,
        "joint_travel_rad": dict(zip(data.run_info.get("joint_names", []), np.round(travel, 4).tolist())),
        "events": [{"time_s": round(e["time_s"], 4), "kind": e["kind"], "detail": e["detail"]} for e in data.events
                   if e["kind"] != "summary"],  # fmt: skip
    }


def plot(data: TickLogData, path: Path) -> None:
    """Joint positions (measured, commanded) per joint, the extra sensors (the claw's valve), and histograms
    of period error and latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(data.run_info.get("joint_names", [])) or [f"joint {i}" for i in range(data.joint_pos.shape[1])]
    n = len(names) + len(data.extras)
    cols = 2 if n > 1 else 1
    rows = -(-n // cols)
    fig = plt.figure(figsize=(6 * cols, 2.2 * rows + 3.2), constrained_layout=True)
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[2.2] * rows + [3.0])
    for i, name in enumerate(names):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.plot(data.time_s, data.joint_pos[:, i], label="measured", lw=1)
        ax.plot(data.time_s, data.command[:, i], label="command", lw=1, ls="--")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("rad")
        if i == 0:
            ax.legend(fontsize=7)
    for i, (name, values) in enumerate(data.extras.items(), start=len(names)):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.plot(data.time_s, values, lw=1, color="tab:green")
        ax.set_title(f"{name} (sensor)", fontsize=9)
    ax = fig.add_subplot(grid[rows, :])
    for channel in ("period_error", "latency"):
        values = data.timings_us[channel]
        values = values[np.isfinite(values)]
        if values.size:
            edges = np.geomspace(max(values.min(), 0.5), max(values.max(), 1.0) * 1.01, 80)
            ax.hist(np.maximum(values, 0.5), bins=edges, histtype="step", label=f"{channel} (us)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("microseconds")
    ax.set_ylabel("ticks")
    ax.legend(fontsize=8)
    fig.suptitle(f"{data.run_info.get('robot', '?')}: {data.ticks} ticks at {data.run_info.get('rate_hz', '?')} Hz")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    try:
        data = read_tick_log(args.log)
    except TickLogError as exc:
        print(f"firmware-bridge log-summary: error: {exc}", file=sys.stderr)
        return 2
    summary = summarize(data)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['robot']}: {summary['ticks']} ticks over {summary['span_s']:.2f} s "
              f"({summary['achieved_rate_hz']:.1f} Hz of {summary['rate_hz']}), missed deadlines "
              f"{summary['missed_deadlines']}, policy versions {summary['policy_versions']}")  # fmt: skip
        for name in TIMING_CHANNELS:
            v = summary[f"{name}_us"]
            print(f"  {name:>12} us  p50 {v['p50']:8.1f}  p99 {v['p99']:8.1f}  max {v['max']:8.1f}")
        print(f"  safety stop: {summary['safety_stop'] or 'none'}; safe state reached: {summary['safe_state']}")
        for event in summary["events"]:
            print(f"  {event['time_s']:9.3f} s  {event['kind']}: {event['detail']}")
    if args.no_plot or data.ticks == 0:
        return 0
    target = Path(args.plot) if args.plot else Path(args.log).with_suffix(".png")
    try:
        plot(data, target)
    except ImportError as exc:
        print(f"firmware-bridge log-summary: error: plotting needs matplotlib (pip install "
              f"'robot-sac[logs]'): {exc}", file=sys.stderr)  # fmt: skip
        return 1
    print(f"plots: {target}", file=sys.stderr if args.json else sys.stdout)
    return 0
