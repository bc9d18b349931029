"""Options shared by every data command."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

__all__ = ["json_option"]

F = TypeVar("F", bound=Callable[..., object])


def json_option(func: F) -> F:
    """``--json``: print machine-readable JSON instead of the table."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        default=False,
        help="Print JSON instead of a table (default: table).",
    )(func)
