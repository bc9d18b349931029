"""Shared output for data commands: a readable table on a terminal, JSON for machines."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["format_table", "to_json", "to_json_line"]


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, floats to three decimals."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in cells:
        lines.append("  ".join(t.ljust(w) for t, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    """JSON has no NaN/Infinity: write them as null so every parser accepts the output."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def to_json(value: Any) -> str:
    """Strict JSON (NaN and infinities become null), indented, keys in insertion order."""
    return json.dumps(_clean(value), indent=2, allow_nan=False)


def to_json_line(value: Any) -> str:
    """Strict JSON on one line, for ``--nl`` streams (one object per line)."""
    return json.dumps(_clean(value), allow_nan=False, separators=(",", ":"))
