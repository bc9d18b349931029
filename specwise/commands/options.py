"""Options shared by every data command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from specwise.model import MAX_K

__all__ = ["check_k_hint", "check_k_max", "estimation_options", "json_option"]

F = TypeVar("F", bound=Callable[..., object])


def json_option(func: F) -> F:
    """``--json``: print machine-readable JSON instead of the table."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        default=False,
        help="Print JSON instead of the human-readable output (default: human-readable).",
    )(func)


def check_k_max(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """``--k-max`` in 1..MAX_K (k = 0, speculation off, is always priced)."""
    if value is not None and not 1 <= value <= MAX_K:
        raise click.UsageError(
            f"--k-max {value} must be between 1 and {MAX_K} (vLLM verifies at most {MAX_K} "
            "draft tokens; k = 0, speculation off, is always priced), e.g. --k-max 8",
            ctx=ctx,
        )
    return value


def check_k_hint(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """``--k``: a deployed num_speculative_tokens, 1..MAX_K."""
    if value is not None and not 1 <= value <= MAX_K:
        raise click.UsageError(
            f"--k {value} must be the deployed num_speculative_tokens, between 1 and {MAX_K}",
            ctx=ctx,
        )
    return value


def estimation_options(func: F) -> F:
    """``--config``, ``--k-max``, ``--verify-slope``, ``--min-drafts``, ``--k``: how counters
    become an estimate and a recommendation (shared by ``recommend`` and ``report``)."""
    decorators = [
        click.option(
            "--config",
            "config_path",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            default=None,
            help="specwise TOML config: classes, per-class cost and k, estimator and policy "
            "settings (default: none).",
        ),
        click.option(
            "--k-max",
            type=int,
            default=None,
            callback=check_k_max,
            help=f"Largest k to consider, 1..{MAX_K} (default: 8).",
        ),
        click.option(
            "--verify-slope",
            type=float,
            default=None,
            help="Verify cost v(k) = 1 + EPS*k (default: 0, i.e. v = 1: light load).",
        ),
        click.option(
            "--min-drafts",
            type=float,
            default=None,
            help="Drafts a window needs before alpha is reported (default: 200).",
        ),
        click.option(
            "--k",
            "k_hint",
            type=int,
            default=None,
            callback=check_k_hint,
            help="Deployed k when the counters do not show it (vLLM 0.8.4; default: from "
            "counters).",
        ),
    ]
    for decorate in reversed(decorators):
        func = decorate(func)
    return func
