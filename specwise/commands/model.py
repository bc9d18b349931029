"""``specwise model``: the speedup table for one (alpha, c), and its plots."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import click

from specwise.commands.model_batch import (
    DEFAULT_BASE_MS,
    DEFAULT_KNEE_TOKENS,
    DEFAULT_MAX_BATCH_SIZE,
    batch_columns,
    batch_map,
    step_cost_from_flags,
)
from specwise.commands.options import check_k_max, json_option
from specwise.errors import SpecwiseError
from specwise.model import (
    MAX_K,
    RECOMMENDED_K_TOLERANCE,
    VerifyCost,
    expected_tokens_per_verify,
    optimal_k,
    recommended_k,
    speedup,
    survival_curve,
)
from specwise.output import format_table, to_json, to_json_line
from specwise.policies.presets import DRAFTER_COSTS, drafter_cost
from specwise.step_cost import SCHEDULE_OFF_OVERHEAD

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


class _CostType(click.ParamType[tuple[float, str | None]]):
    """A draft cost: a number (checked by the model, so -1 names c), or a preset name."""

    name = "COST"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[float, str | None]:
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        try:
            return float(text), None
        except ValueError:
            pass
        try:
            return drafter_cost(text), text.lower()
        except SpecwiseError as exc:
            self.fail(str(exc), param, ctx)


@click.command(
    "model",
    epilog="""\b
Examples:
  specwise model --alpha 0.7 --cost 0.05
  specwise model --alpha 0.2 --cost 0.5            # recommends k = 0
  specwise model --alpha 0.8 --cost 0.1 --verify-slope 0.02 --json
  specwise model --alpha 0.7 --cost 0.05 --plot speedup.png
  specwise model --alpha 0.7 --cost eagle --batch          # k by batch size, a schedule
  specwise model --alpha 0.7 --batch --base-ms 12 --knee-tokens 128 --draft-ms 1.5 --json
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
    type=_CostType(),
    default=None,
    help="Draft cost c = drafter step time / target step time, >= 0, or a method preset "
    "(ngram 0, eagle/eagle3/mtp 0.05, draft_model 0.3). Required without --batch; with "
    "--batch default 0.05 (used as --draft-ms = c x --base-ms).",
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
@click.option(
    "--batch",
    is_flag=True,
    default=False,
    help="Price k by batch size with the step-time model T(k, B): the speedup map, the best "
    "k per batch size and a num_speculative_tokens_per_batch_size schedule (default: off, "
    "the constant-cost table).",
)
@click.option(
    "--base-ms",
    type=float,
    default=DEFAULT_BASE_MS,
    show_default=True,
    help="With --batch: the target's memory-bound decode step, in ms.",
)
@click.option(
    "--knee-tokens",
    type=float,
    default=DEFAULT_KNEE_TOKENS,
    show_default=True,
    help="With --batch: tokens per step (B x (k+1)) where the step turns compute-bound "
    "(inf: never).",
)
@click.option(
    "--per-token-us",
    type=float,
    default=None,
    help="With --batch: microseconds per verified token past the knee (default: "
    "base / knee, a continuous roofline; 78 us at the defaults).",
)
@click.option(
    "--draft-ms",
    type=float,
    default=None,
    help="With --batch: one drafter step, in ms (default: --cost x --base-ms).",
)
@click.option(
    "--draft-per-seq-us",
    type=float,
    default=0.0,
    show_default=True,
    help="With --batch: drafter step growth per running request, in us (a draft model's "
    "step grows with B; heads and n-gram barely do).",
)
@click.option(
    "--max-batch-size",
    type=click.IntRange(1, 65536),
    default=DEFAULT_MAX_BATCH_SIZE,
    show_default=True,
    help="With --batch: the server's max_num_seqs; the schedule covers 1..this.",
)
@click.option(
    "--off-overhead",
    type=click.FloatRange(0.0, 10.0),
    default=SCHEDULE_OFF_OVERHEAD,
    show_default=True,
    help="With --batch: how much slower a k = 0 schedule band runs than plain decoding "
    "(KV lookahead slots stay reserved under a drafter, vLLM #49548).",
)
@click.option(
    "--method",
    default=None,
    help="With --batch: speculative_config method in the printed JSON (default: the "
    "--cost preset's name, else eagle).",
)
@json_option
def model_command(
    alpha: float,
    cost: tuple[float, str | None] | None,
    k_max: int,
    verify_slope: float | None,
    plot_path: Path | None,
    tolerance: float,
    batch: bool,
    base_ms: float,
    knee_tokens: float,
    per_token_us: float | None,
    draft_ms: float | None,
    draft_per_seq_us: float,
    max_batch_size: int,
    off_overhead: float,
    method: str | None,
    as_json: bool,
) -> None:
    """Price every k for one drafter: expected tokens per verify, speedup, marginal value.

    The model: E = 1 + a + ... + a^k tokens per verify; speedup = E / (k*c + v(k)); k = 0
    is plain decoding (speedup 1). The recommended k (the smallest within --tolerance of the
    best speedup, as the controller picks it) is marked, and the exact maximiser beside it when
    they differ; k = 0 means turn speculation off.

    With --batch the cost depends on load: one engine step drafting k tokens for B running
    requests takes T(k, B) = base + per_token x max(0, B(k+1) - knee) + k x (draft +
    draft_per_seq x B), so S(k, B) = E(k) T(0, B) / T(k, B). At small B the step is
    memory-bound and drafts are nearly free; past the knee verifying k drafts per request
    costs, and the best k falls (to 0 at peak).
    """
    if batch:
        if plot_path is not None:
            raise click.UsageError("--plot draws the constant-cost view; drop it with --batch")
        _batch_view(
            alpha=alpha,
            cost=cost,
            k_max=k_max,
            verify_slope=verify_slope,
            tolerance=tolerance,
            base_ms=base_ms,
            knee_tokens=knee_tokens,
            per_token_us=per_token_us,
            draft_ms=draft_ms,
            draft_per_seq_us=draft_per_seq_us,
            max_batch_size=max_batch_size,
            off_overhead=off_overhead,
            method=method,
            as_json=as_json,
        )
        return
    if cost is None:
        raise click.UsageError("Missing option '--cost' (e.g. --cost 0.05 or --cost eagle).")
    _table_view(
        alpha=alpha,
        cost=cost[0],
        k_max=k_max,
        verify_slope=verify_slope,
        plot_path=plot_path,
        tolerance=tolerance,
        as_json=as_json,
    )


def _table_view(
    *,
    alpha: float,
    cost: float,
    k_max: int,
    verify_slope: float | None,
    plot_path: Path | None,
    tolerance: float,
    as_json: bool,
) -> None:
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


def _batch_view(
    *,
    alpha: float,
    cost: tuple[float, str | None] | None,
    k_max: int,
    verify_slope: float | None,
    tolerance: float,
    base_ms: float,
    knee_tokens: float,
    per_token_us: float | None,
    draft_ms: float | None,
    draft_per_seq_us: float,
    max_batch_size: int,
    off_overhead: float,
    method: str | None,
    as_json: bool,
) -> None:
    c, preset = cost if cost is not None else (DRAFTER_COSTS["eagle"], None)
    _check_alpha_and_cost(alpha, c)
    step = step_cost_from_flags(
        cost=c,
        base_ms=base_ms,
        knee_tokens=knee_tokens,
        per_token_us=per_token_us,
        draft_ms=draft_ms,
        draft_per_seq_us=draft_per_seq_us,
        verify_slope=verify_slope or 0.0,
    )
    survival = survival_curve(alpha, k_max)
    bm = batch_map(
        survival,
        step,
        k_max=k_max,
        max_batch_size=max_batch_size,
        tolerance=tolerance,
        off_overhead=off_overhead,
    )
    name = method or preset or "eagle"
    columns = batch_columns(max_batch_size)
    spec_json = bm.speculative_config(name)
    if as_json:
        payload = {"alpha": alpha, "cost": c, "method": name, "tolerance": tolerance}
        payload.update(bm.to_dict(columns, name))
        click.echo(to_json(payload))
        return
    click.echo(
        f"Step time T(k, B): base {step.base * 1e3:g} ms, knee {step.knee:g} tokens, "
        f"{step.per_token * 1e6:.3g} us per token past it, drafter "
        f"{step.draft_base * 1e3:.3g} ms + {step.draft_per_seq * 1e6:g} us x B per step; "
        f"alpha {alpha:g}."
    )
    click.echo("")
    rows: list[list[object]] = []
    for k in range(k_max + 1):
        rows.append([k, *(f"{bm.speedup(k, b):.2f}x" for b in columns)])
    rows.append(["best k", *(bm.best_k[b - 1] for b in columns)])
    rows.append(["schedule k", *(bm.config.k_at(b) for b in columns)])
    click.echo(format_table(["k \\ B", *(str(b) for b in columns)], rows))
    click.echo("")
    if spec_json is None:
        click.echo("Recommended: off: run without --speculative-config.")
    else:
        click.echo(f"Recommended: {bm.config.describe()}.")
        click.echo(f"--speculative-config '{to_json_line(spec_json)}'")
    for note in bm.notes:
        click.echo(f"Note: {note}")


def _check_alpha_and_cost(alpha: float, cost: float) -> None:
    speedup(alpha, 1, cost)  # raises the model's one-sentence error for a bad alpha or c
