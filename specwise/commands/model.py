"""``specwise model``: the speedup table for one (alpha, c), and its plots."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import click

from specwise.commands.options import check_k_max, json_option
from specwise.model import (
    MAX_K,
    VerifyCost,
    expected_tokens_per_verify,
    optimal_k,
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


def verdict(alpha: float, cost: float, best_k: int, rows: list[ModelRow]) -> str:
    """One line a human can check against the table."""
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
    return (
        f"Use k = {best_k}: predicted {row.speedup:.2f}x over plain decoding "
        f"({row.expected_tokens:.2f} tokens per verify; {ceiling})."
    )


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
@json_option
def model_command(
    alpha: float,
    cost: float,
    k_max: int,
    verify_slope: float | None,
    plot_path: Path | None,
    as_json: bool,
) -> None:
    """Price every k for one drafter: expected tokens per verify, speedup, marginal value.

    The model: E = 1 + a + ... + a^k tokens per verify; speedup = E / (k*c + v(k)); k = 0
    is plain decoding (speedup 1). The optimal k is marked; k = 0 means turn speculation off.
    """
    verify_cost: VerifyCost = verify_slope
    best = optimal_k(alpha, cost, k_max, verify_cost=verify_cost)
    rows = model_rows(alpha, cost, k_max, verify_cost)
    line = verdict(alpha, cost, best, rows)
    if plot_path is not None:
        from specwise.reporting.plots import plot_model

        plot_model(plot_path, alpha=alpha, cost=cost, k_max=k_max, verify_cost=verify_cost)
    if as_json:
        payload = {
            "alpha": alpha,
            "cost": cost,
            "k_max": k_max,
            "verify_slope": verify_slope,
            "optimal_k": best,
            "optimal_speedup": rows[best].speedup,
            "turn_off": best == 0,
            "verdict": line,
            "rows": [asdict(r) for r in rows],
        }
        if plot_path is not None:
            payload["plot"] = str(plot_path)
        click.echo(to_json(payload))
        return
    table = format_table(
        ["k", "expected tokens", "speedup", "marginal", ""],
        [
            [
                r.k,
                r.expected_tokens,
                f"{r.speedup:.3f}x",
                r.marginal if r.k else None,
                "<- optimal" if r.k == best else "",
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
