"""Learning-curve figure for a run directory (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_learning_curve(
    path: Path, title: str, episode_returns: list[tuple[int, float]], evals: list[dict[str, float]]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if episode_returns:
        steps, returns = np.array(episode_returns, dtype=float).T
        ax.plot(steps, returns, ".", color="0.7", ms=3, label="training episodes")
        window = max(1, min(20, len(returns) // 5))
        if window > 1:
            smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, color="0.4", lw=1, label=f"training (mean of {window})")
    if evals:
        s = np.array([e["step"] for e in evals])
        m = np.array([e["return_mean"] for e in evals])
        sd = np.array([e["return_std"] for e in evals])
        ax.plot(s, m, "-o", color="C0", ms=3, label="deterministic evaluation")
        ax.fill_between(s, m - sd, m + sd, color="C0", alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
