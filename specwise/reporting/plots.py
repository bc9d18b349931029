"""Plots a person would rather look at than read: speedup vs k, the (alpha, c) map.

matplotlib with the Agg backend (no display needed); every function takes the output path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from specwise.model import VerifyCost, optimal_k, speedup

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["draw_alpha_cost_map", "draw_speedup_vs_k", "plot_model"]


def draw_speedup_vs_k(
    ax: Axes,
    alphas: Sequence[float],
    cost: float,
    k_max: int,
    *,
    verify_cost: VerifyCost = None,
    labels: Sequence[str] | None = None,
) -> None:
    """One curve of S(alpha, k, c) over k = 0..k_max per alpha, the optimum of each marked."""
    ks = list(range(k_max + 1))
    for i, a in enumerate(alphas):
        ys = [speedup(a, k, cost, verify_cost=verify_cost) for k in ks]
        best = optimal_k(a, cost, k_max, verify_cost=verify_cost)
        label = labels[i] if labels else f"alpha = {a:.2f}"
        (line,) = ax.plot(ks, ys, marker="o", markersize=3, label=f"{label} (best k = {best})")
        ax.plot([best], [ys[best]], marker="*", markersize=14, color=line.get_color())
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("draft length k (num_speculative_tokens)")
    ax.set_ylabel("predicted speedup over plain decoding")
    ax.set_title(f"Speedup vs k at draft cost c = {cost:g}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def draw_alpha_cost_map(
    ax: Axes,
    k_max: int,
    *,
    verify_cost: VerifyCost = None,
    points: Sequence[tuple[float, float, str]] = (),
    max_cost: float = 0.6,
) -> None:
    """The (alpha, c) plane: optimal k as colour, best speedup as contours, points marked."""
    alphas = np.linspace(0.0, 0.98, 99)
    costs = np.linspace(0.0, max_cost, 61)
    best_k = np.zeros((len(costs), len(alphas)))
    best_s = np.zeros_like(best_k)
    for j, c in enumerate(costs):
        for i, a in enumerate(alphas):
            k = optimal_k(float(a), float(c), k_max, verify_cost=verify_cost)
            best_k[j, i] = k
            best_s[j, i] = speedup(float(a), k, float(c), verify_cost=verify_cost)
    mesh = ax.pcolormesh(alphas, costs, best_k, shading="auto", cmap="viridis")
    plt.colorbar(mesh, ax=ax, label="optimal k (0 = turn speculation off)")
    contours = ax.contour(
        alphas, costs, best_s, levels=[1.01, 1.25, 1.5, 2.0, 3.0, 4.0], colors="white"
    )
    ax.clabel(contours, fmt=lambda v: f"{v:.2f}x", fontsize=8)
    for a, c, label in points:
        ax.plot([a], [c], marker="X", markersize=11, color="red")
        ax.annotate(label, (a, c), textcoords="offset points", xytext=(6, 6), color="red")
    ax.set_xlabel("acceptance rate alpha")
    ax.set_ylabel("draft cost c (drafter step / target step)")
    ax.set_title("Optimal k and best speedup over (alpha, c)")


def plot_model(
    path: Path,
    *,
    alpha: float,
    cost: float,
    k_max: int,
    verify_cost: VerifyCost = None,
) -> Path:
    """Speedup vs k for several alphas (the asked one included) beside the (alpha, c) map."""
    alphas = sorted({0.3, 0.5, 0.7, 0.9, round(alpha, 3)})
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    try:
        draw_speedup_vs_k(left, alphas, cost, k_max, verify_cost=verify_cost)
        draw_alpha_cost_map(
            right,
            k_max,
            verify_cost=verify_cost,
            points=[(alpha, cost, f"alpha {alpha:g}, c {cost:g}")],
            max_cost=max(0.6, cost * 1.2),
        )
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path
