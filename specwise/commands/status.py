"""How the controller's state reads on a terminal (shared by ``run`` and ``demo``)."""

from __future__ import annotations

import shutil

from specwise.controller.state import ClassStatus, ControllerState
from specwise.output import format_table

__all__ = ["format_status", "k_text", "speedup_text"]


def _alpha(c: ClassStatus) -> str:
    if c.alpha is None:
        return "-"
    if c.alpha_low is None or c.alpha_high is None:
        return f"{c.alpha:.3f}"
    return f"{c.alpha:.3f} [{c.alpha_low:.3f}, {c.alpha_high:.3f}]"


def k_text(c: ClassStatus) -> str:
    deployed = "?" if c.deployed_k is None else str(c.deployed_k)
    rec = "?" if c.recommended_k is None else str(c.recommended_k)
    return deployed if deployed == rec else f"{deployed} -> {rec}"


def speedup_text(c: ClassStatus) -> str:
    a, b = c.predicted_speedup_deployed, c.predicted_speedup_recommended
    if a is None and b is None:
        return "-"
    if a is None or b is None or abs(a - b) < 0.005:
        return f"{(a if a is not None else b):.2f}x"
    return f"{a:.2f}x -> {b:.2f}x"


def format_status(state: ControllerState, *, width: int | None = None) -> str:
    """One row per class: alpha with interval, k (deployed -> recommended), speedup, why.

    A class discovered from labels but not in ``[[classes]]`` is flagged "(undeclared)": it
    is observed and reported, never actuated.

    The "why" column is cut to fit the terminal (``width`` characters when given).
    """
    if width is None:
        width = max(60, shutil.get_terminal_size((200, 24)).columns - 70)
    rows = []
    for c in state.classes:
        flag = (" (stale)" if c.stale else "") + ("" if c.declared else " (undeclared)")
        why = c.reason if len(c.reason) <= width else c.reason[: width - 3] + "..."
        rows.append([c.name + flag, _alpha(c), k_text(c), speedup_text(c), why])
    table = format_table(
        ["class", "alpha [95% interval]", "k (now -> rec.)", "speedup", "why"], rows
    )
    applied = sum(c.changes for c in state.classes)
    proposed = sum(c.proposals for c in state.classes)
    if not applied and not proposed:
        return table
    return f"{table}\nactuator {state.actuator}: {applied} change(s) applied, {proposed} proposed"
