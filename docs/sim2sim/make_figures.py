"""Collect the ``robot-sac eval`` summaries of the sim-to-sim study into results.json, the tables of
docs/sim2sim.md (printed) and transfer.png.

    python docs/sim2sim/make_figures.py EVAL_DIR

EVAL_DIR holds one ``<policy>__<backend>__<nominal|randomized>/summary.json`` per evaluation (the layout the
commands in docs/sim2sim.md write)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
# policy file stem -> (task, engine it was trained in, randomized during training, training steps)
POLICIES = {
    "claw_nom_15k": ("claw_turn", "mujoco", False, 15_000),
    "claw_rand_15k": ("claw_turn", "mujoco", True, 15_000),
    "claw_nom_30k": ("claw_turn", "mujoco", False, 30_000),
    "claw_rand_30k": ("claw_turn", "mujoco", True, 30_000),
    "claw_nom_50k": ("claw_turn", "mujoco", False, 50_000),
    "claw_rand_50k": ("claw_turn", "mujoco", True, 50_000),
    "pb_claw_nom_15k": ("claw_turn", "pybullet", False, 15_000),
    "pb_claw_rand_15k": ("claw_turn", "pybullet", True, 15_000),
    "pb_claw_nom_30k": ("claw_turn", "pybullet", False, 30_000),
    "pb_claw_rand_30k": ("claw_turn", "pybullet", True, 30_000),
    "quad_nom_80k": ("quadruped_walk", "mujoco", False, 80_000),
    "quad_rand_80k": ("quadruped_walk", "mujoco", True, 80_000),
    "pb_quad_nom_40k": ("quadruped_walk", "pybullet", False, 40_000),
    "pb_quad_nom_60k": ("quadruped_walk", "pybullet", False, 60_000),
}
# the idle reference (robot_sac.robustness.runner.HoldStart: holds the start pose), same seeds: the floor
BASELINES = {"claw_idle": "claw_turn", "quad_idle": "quadruped_walk"}
ENGINES = ("mujoco", "pybullet")
LABEL = {"mujoco": "MuJoCo", "pybullet": "PyBullet"}


def collect(eval_dir: Path) -> dict:
    results = {}
    for summary in sorted(eval_dir.glob("*__*__*/summary.json")):
        policy, backend, model = summary.parent.name.split("__")
        if policy not in POLICIES and policy not in BASELINES:
            continue
        s = json.loads(summary.read_text())
        assert s["backend"] == backend and s["randomized"] == (model == "randomized"), summary
        lengths = s["episode_lengths"]
        results.setdefault(policy, {}).setdefault(backend, {})[model] = {
            "episodes": s["episodes"],
            "seed": s["seed"],
            "return_mean": round(s["return_mean"], 2),
            "return_std": round(s["return_std"], 2),
            "success_rate": s.get("success_rate"),
            "length_mean": s["length_mean"],
            # the quadruped's episodes end early only on a fall
            "falls": sum(1 for n in lengths if n < 1000) if s["task"] == "quadruped_walk" else None,
            "policy_sha256": s["policy_sha256"],
            "returns": [round(x, 2) for x in s["returns"]],
        }
    return results


def cell(r: dict | None) -> str:
    if r is None:
        return "-"
    text = f"{r['success_rate']:.0%} / {r['return_mean']:.0f}"
    if r["falls"] is not None:
        text += f" / {r['falls']}"
    return text


def other(engine: str) -> str:
    return ENGINES[1 - ENGINES.index(engine)]


def tables(results: dict) -> str:
    lines = []
    for task in ("claw_turn", "quadruped_walk"):
        what = "success / mean return" + (" / falls of 20" if task == "quadruped_walk" else "")
        lines.append(f"### {task} ({what})\n")
        lines.append("| policy | trained in | randomized in training | steps | nominal model: native engine "
                     "| nominal model: other engine | randomized model: native engine "
                     "| randomized model: other engine |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, (t, engine, rand, steps) in POLICIES.items():
            if t != task or name not in results:
                continue
            r = results[name]
            row = [f"`{name}`", LABEL[engine], "yes" if rand else "no", f"{steps // 1000}k"]
            for model in ("nominal", "randomized"):
                row += [cell(r.get(engine, {}).get(model)), cell(r.get(other(engine), {}).get(model))]
            lines.append("| " + " | ".join(row) + " |")
        for name, t in BASELINES.items():
            if t != task or name not in results:
                continue
            r = results[name]
            row = [f"`{name}` (idle reference)", "-", "-", "-"]
            for model in ("nominal", "randomized"):
                row += [f"MuJoCo: {cell(r.get('mujoco', {}).get(model))}",
                        f"PyBullet: {cell(r.get('pybullet', {}).get(model))}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def gaps(results: dict) -> str:
    """Other engine minus native engine, episode by episode (both engines reset episode i with the same seed:
    same goal, same sampled dynamics and noise): the mean return change with a 95% interval."""
    lines = ["| policy | trained in | model | success change (points) | return change, other - native (95% CI) |",
             "|---|---|---|---|---|"]
    for name, (task, engine, rand, steps) in POLICIES.items():
        for model in ("nominal", "randomized"):
            nat = results.get(name, {}).get(engine, {}).get(model)
            oth = results.get(name, {}).get(other(engine), {}).get(model)
            if not nat or not oth:
                continue
            d = np.array(oth["returns"]) - np.array(nat["returns"])
            half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
            if np.ptp(nat["returns"]) == 0 and np.ptp(oth["returns"]) == 0:
                spread = "deterministic: every episode the same"
            else:
                spread = f"{d.mean() - half:+.0f} .. {d.mean() + half:+.0f}"
            lines.append(f"| `{name}` | {LABEL[engine]} | {model} | "
                         f"{(oth['success_rate'] - nat['success_rate']) * 100:+.0f} | {d.mean():+.0f} ({spread}) |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    tasks = ("claw_turn", "quadruped_walk")
    fig, axes = plt.subplots(2, 2, figsize=(15, 8.5), gridspec_kw={"width_ratios": [3, 1.3]})
    bars = [("nominal", "native", "#1f77b4"), ("nominal", "other", "#9ecae1"),
            ("randomized", "native", "#d62728"), ("randomized", "other", "#fcae91")]
    for col, task in enumerate(tasks):
        names = [n for n, (t, *_) in POLICIES.items() if t == task and n in results]
        for row, (metric, ylabel) in enumerate((("success_rate", "success rate"), ("return_mean", "mean return"))):
            ax = axes[row, col]
            width = 0.2
            for k, (model, kind, color) in enumerate(bars):
                xs, ys = [], []
                for i, name in enumerate(names):
                    engine = POLICIES[name][1]
                    r = results[name].get(engine if kind == "native" else other(engine), {}).get(model)
                    if r is not None:
                        xs.append(i + (k - 1.5) * width)
                        ys.append(r[metric])
                ax.bar(xs, ys, width, color=color, label=f"{kind} engine, {model} model")
            for base, t in BASELINES.items():
                idle = results.get(base, {}).get("mujoco", {}).get("nominal")
                if t == task and idle is not None:
                    ax.axhline(idle[metric], color="gray", ls="--", lw=1, label="idle reference, nominal model")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels([f"{LABEL[POLICIES[n][1]]}\n{'rand' if POLICIES[n][2] else 'nom'} "
                                f"{POLICIES[n][3] // 1000}k" for n in names], fontsize=7)
            ax.set_xlabel("trained in, randomized (rand) or not (nom), steps", fontsize=8)
            ax.set_ylabel(ylabel)
            ax.axhline(0, color="k", lw=0.5)
            if row == 0:
                ax.set_ylim(0, 1.05)
                ax.set_title(task)
            ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper left", ncol=2)
    fig.suptitle("sim-to-sim transfer: each policy in the engine it was trained in (native) and in the other engine")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    results = collect(Path(sys.argv[1]))
    text = json.dumps(results, indent=1)
    # one line per list of per-episode returns
    text = re.sub(
        r"\[\s*([-0-9.,\s]+?)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text
    )
    (HERE / "results.json").write_text(text + "\n")
    print(tables(results))
    print(gaps(results))
    plot(results, HERE / "transfer.png")


if __name__ == "__main__":
    main()
