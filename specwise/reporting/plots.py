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

from specwise.model import RECOMMENDED_K_TOLERANCE, VerifyCost, optimal_k, recommended_k, speedup

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["draw_alpha_cost_map", "draw_speedup_vs_k", "k_label", "plot_model"]


def k_label(recommended: int, optimal: int | None) -> str:
    """``rec. k = 5, max 6``: the recommended k, with the exact maximiser where it differs."""
    if optimal is None or optimal == recommended:
        return f"rec. k = {recommended}"
    return f"rec. k = {recommended}, max {optimal}"


def draw_speedup_vs_k(
    ax: Axes,
    alphas: Sequence[float],
    cost: float,
    k_max: int,
    *,
    verify_cost: VerifyCost = None,
    labels: Sequence[str] | None = None,
    tolerance: float = RECOMMENDED_K_TOLERANCE,
    colors: Sequence[str] | None = None,
) -> None:
    """One curve of S(alpha, k, c) over k = 0..k_max per alpha; the recommended k of each
    (:func:`specwise.model.recommended_k`) starred, the exact maximiser named beside it."""
    ks = list(range(k_max + 1))
    for i, a in enumerate(alphas):
        ys = [speedup(a, k, cost, verify_cost=verify_cost) for k in ks]
        rec = recommended_k(a, cost, tolerance=tolerance, k_max=k_max, verify_cost=verify_cost)
        best = optimal_k(a, cost, k_max, verify_cost=verify_cost)
        label = labels[i] if labels else f"alpha = {a:.2f}"
        (line,) = ax.plot(
            ks,
            ys,
            marker="o",
            markersize=3,
            label=f"{label} ({k_label(rec, best)})",
            color=colors[i] if colors else None,
        )
        ax.plot([rec], [ys[rec]], marker="*", markersize=14, color=line.get_color())
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("draft length k (num_speculative_tokens)")
    ax.set_ylabel("predicted speedup over plain decoding")
    ax.set_title(f"Speedup vs k at draft cost c = {cost:g} (star: recommended k)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def draw_alpha_cost_map(
    ax: Axes,
    k_max: int,
    *,
    verify_cost: VerifyCost = None,
    points: Sequence[tuple[float, float, str]] = (),
    max_cost: float = 0.6,
    tolerance: float = RECOMMENDED_K_TOLERANCE,
    point_colors: Sequence[str] | None = None,
) -> None:
    """The (alpha, c) plane: the recommended k as colour, its speedup as contours, points
    marked (each point's label goes to the legend, so close points never overlap)."""
    alphas = np.linspace(0.0, 0.98, 99)
    costs = np.linspace(0.0, max_cost, 61)
    best_k = np.zeros((len(costs), len(alphas)))
    best_s = np.zeros_like(best_k)
    for j, c in enumerate(costs):
        for i, a in enumerate(alphas):
            k = recommended_k(
                float(a), float(c), tolerance=tolerance, k_max=k_max, verify_cost=verify_cost
            )
            best_k[j, i] = k
            best_s[j, i] = speedup(float(a), k, float(c), verify_cost=verify_cost)
    mesh = ax.pcolormesh(alphas, costs, best_k, shading="auto", cmap="viridis")
    plt.colorbar(mesh, ax=ax, label="recommended k (0 = turn speculation off)")
    contours = ax.contour(
        alphas, costs, best_s, levels=[1.01, 1.25, 1.5, 2.0, 3.0, 4.0], colors="white"
    )
    ax.clabel(contours, fmt=lambda v: f"{v:.2f}x", fontsize=8)
    markers = ("X", "P", "D", "o")
    for i, (a, c, label) in enumerate(points):
        color = point_colors[i] if point_colors else "red"
        ax.plot([a], [c], marker=markers[i % len(markers)], markersize=11, color=color,
                markeredgecolor="white", linestyle="none", label=label, clip_on=False,
                zorder=5)  # fmt: skip
    if points:
        ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
    ax.set_xlabel("acceptance rate alpha")
    ax.set_ylabel("draft cost c (drafter step / target step)")
    ax.set_title("Recommended k and its speedup over (alpha, c)")


def plot_model(
    path: Path,
    *,
    alpha: float,
    cost: float,
    k_max: int,
    verify_cost: VerifyCost = None,
    tolerance: float = RECOMMENDED_K_TOLERANCE,
) -> Path:
    """Speedup vs k for several alphas (the asked one included) beside the (alpha, c) map."""
    alphas = sorted({0.3, 0.5, 0.7, 0.9, round(alpha, 3)})
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    try:
        draw_speedup_vs_k(left, alphas, cost, k_max, verify_cost=verify_cost, tolerance=tolerance)
        draw_alpha_cost_map(
            right,
            k_max,
            verify_cost=verify_cost,
            tolerance=tolerance,
            points=[(alpha, cost, f"alpha {alpha:g}, c {cost:g}")],
            max_cost=max(0.6, cost * 1.2),
        )
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path
