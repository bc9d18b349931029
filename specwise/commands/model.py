"""``specwise model``: the speedup table for one (alpha, c), and its plots."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import click

from specwise.commands.options import check_k_max, json_option
from specwise.model import (
    MAX_K,
    RECOMMENDED_K_TOLERANCE,
    VerifyCost,
    expected_tokens_per_verify,
    optimal_k,
    recommended_k,
    speedup,
)
from specwise.output import format_table, to_json

__all__ = ["ModelRow", "model_command", "model_rows", "verdict"]


@dataclass(frozen=True)
class ModelRow:
    """One k of the speedup table; ``marginal`` is the tokens position k adds (alpha^k)."""

    k: int
    expected_tokens: float
    speedup: float
    marginal: float


def model_rows(alpha: float, cost: float, k_max: int, verify_cost: VerifyCost) -> list[ModelRow]:
    """Rows k = 0..k_max of expected tokens per verify, speedup and marginal value."""
    rows = []
    previous = 0.0
    for k in range(k_max + 1):
        e = expected_tokens_per_verify(alpha, k)
        rows.append(
            ModelRow(
                k=k,
                expected_tokens=e,
                speedup=speedup(alpha, k, cost, verify_cost=verify_cost),
                marginal=e - previous if k > 0 else 0.0,
            )
        )
        previous = e
    return rows


def _pct(gain: float) -> str:
    return f"{gain:.2%}" if gain >= 5e-5 else "<0.01%"


def verdict(
    alpha: float,
    cost: float,
    best_k: int,
    rows: list[ModelRow],
    *,
    optimal: int | None = None,
    tolerance: float = RECOMMENDED_K_TOLERANCE,
) -> str:
    """One line a human can check against the table.

    ``best_k`` is the recommended k (:func:`specwise.model.recommended_k`); ``optimal`` the
    exact maximiser, named beside it when they differ.
    """
    if best_k == 0:
        best_spec = max(rows[1:], key=lambda r: r.speedup) if len(rows) > 1 else None
        detail = (
            f" (the best, k = {best_spec.k}, reaches only {best_spec.speedup:.2f}x)"
            if best_spec
            else ""
        )
        return (
            f"Turn speculation off (k = 0): at alpha {alpha:g} and draft cost {cost:g} every "
            f"k >= 1 is slower than plain decoding{detail}."
        )
    row = rows[best_k]
    ceiling = (
        f"the free-draft ceiling at alpha {alpha:g} is {1.0 / (1.0 - alpha):.2f} tokens"
        if alpha < 1.0
        else "at alpha 1 every draft is accepted, so only k_max limits it"
    )
    line = (
        f"Use k = {best_k}: predicted {row.speedup:.2f}x over plain decoding "
        f"({row.expected_tokens:.2f} tokens per verify; {ceiling})."
    )
    if optimal is not None and optimal != best_k:
        gain = rows[optimal].speedup / row.speedup - 1.0
        line += (
            f" The exact maximum, k = {optimal}, is only {_pct(gain)} faster (within "
            f"{tolerance * 100:g}%), so the smaller k is recommended."
        )
    return line


@click.command(
    "model",
    epilog="""\b
Examples:
  specwise model --alpha 0.7 --cost 0.05
  specwise model --alpha 0.2 --cost 0.5            # recommends k = 0
  specwise model --alpha 0.8 --cost 0.1 --verify-slope 0.02 --json
  specwise model --alpha 0.7 --cost 0.05 --plot speedup.png
""",
)
@click.option(
    "--alpha",
    type=float,
    required=True,
    help="Per-token acceptance probability alpha, in [0, 1] (required).",
)
@click.option(
    "--cost",
    type=float,
    required=True,
    help="Draft cost c = drafter step time / target step time, >= 0 (required; n-gram ~0, "
    "EAGLE heads ~0.05, a small draft model 0.2-0.5).",
)
@click.option(
    "--k-max",
    type=int,
    default=16,
    show_default=True,
    callback=check_k_max,
    help=f"Largest k to consider, 1..{MAX_K} (vLLM verifies at most {MAX_K} draft tokens).",
)
@click.option(
    "--verify-slope",
    type=float,
    default=None,
    help="Verify cost grows as v(k) = 1 + EPS*k (default: v = 1, verify is free at light load).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a PNG: speedup vs k for several alphas and the (alpha, c) map "
    "(default: no plot).",
)
@click.option(
    "--tolerance",
    type=float,
    default=RECOMMENDED_K_TOLERANCE,
    show_default=True,
    help="The recommended k is the smallest within this fraction of the best speedup "
    "(the controller's plateau); 0 recommends the exact maximiser.",
)
@json_option
def model_command(
    alpha: float,
    cost: float,
    k_max: int,
    verify_slope: float | None,
    plot_path: Path | None,
    tolerance: float,
    as_json: bool,
) -> None:
    """Price every k for one drafter: expected tokens per verify, speedup, marginal value.

    The model: E = 1 + a + ... + a^k tokens per verify; speedup = E / (k*c + v(k)); k = 0
    is plain decoding (speedup 1). The recommended k (the smallest within --tolerance of the
    best speedup, as the controller picks it) is marked, and the exact maximiser beside it when
    they differ; k = 0 means turn speculation off.
    """
    verify_cost: VerifyCost = verify_slope
    best = optimal_k(alpha, cost, k_max, verify_cost=verify_cost)
    rec = recommended_k(alpha, cost, tolerance=tolerance, k_max=k_max, verify_cost=verify_cost)
    rows = model_rows(alpha, cost, k_max, verify_cost)
    line = verdict(alpha, cost, rec, rows, optimal=best, tolerance=tolerance)
    if plot_path is not None:
        from specwise.reporting.plots import plot_model

        plot_model(
            plot_path,
            alpha=alpha,
            cost=cost,
            k_max=k_max,
            verify_cost=verify_cost,
            tolerance=tolerance,
        )
    if as_json:
        payload = {
            "alpha": alpha,
            "cost": cost,
            "k_max": k_max,
            "verify_slope": verify_slope,
            "tolerance": tolerance,
            "recommended_k": rec,
            "recommended_speedup": rows[rec].speedup,
            "optimal_k": best,
            "optimal_speedup": rows[best].speedup,
            "turn_off": rec == 0,
            "verdict": line,
            "rows": [asdict(r) for r in rows],
        }
        if plot_path is not None:
            payload["plot"] = str(plot_path)
        click.echo(to_json(payload))
        return

    def mark(k: int) -> str:
        if k == rec:
            return "<- recommended" + (" (exact max)" if k == best and k > 0 else "")
        if k == best:
            return f"<- exact max (+{_pct(rows[best].speedup / rows[rec].speedup - 1)})"
        return ""

    table = format_table(
        ["k", "expected tokens", "speedup", "marginal", ""],
        [
            [
                r.k,
                r.expected_tokens,
                f"{r.speedup:.3f}x",
                r.marginal if r.k else None,
                mark(r.k),
            ]
            for r in rows
        ],
    )
    click.echo(table)
    click.echo("")
    click.echo(line)
    if verify_slope is None:
        click.echo(
            "Note: verify cost taken as 1 target step (light load); pass --verify-slope "
            "for busy servers, where the best k is smaller."
        )
    if plot_path is not None:
        click.echo(f"Plot written to {plot_path}")
