"""How the controller's state reads on a terminal (shared by ``run`` and ``demo``)."""

from __future__ import annotations

import shutil
import time

from specwise.controller.state import ClassStatus, ControllerState
from specwise.output import format_table

__all__ = ["format_status", "k_text", "probe_lines", "speedup_text"]


def _alpha(c: ClassStatus) -> str:
    if c.alpha is None:
        return "-"
    if c.alpha_low is None or c.alpha_high is None:
        return f"{c.alpha:.3f}"
    return f"{c.alpha:.3f} [{c.alpha_low:.3f}, {c.alpha_high:.3f}]"


def k_text(c: ClassStatus) -> str:
    """``3 -> 5``: deployed -> recommended, with ``(max 6)`` when the exact maximiser differs."""
    deployed = "?" if c.deployed_k is None else str(c.deployed_k)
    rec = "?" if c.recommended_k is None else str(c.recommended_k)
    text = deployed if deployed == rec else f"{deployed} -> {rec}"
    if c.optimal_k is not None and c.recommended_k is not None and c.optimal_k != c.recommended_k:
        text += f" (max {c.optimal_k})"
    return text


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
    table += "".join(f"\n{line}" for line in probe_lines(state))  # probes (#15)
    applied = sum(c.changes for c in state.classes)
    proposed = sum(c.proposals for c in state.classes)
    if not applied and not proposed:
        return table
    return f"{table}\nactuator {state.actuator}: {applied} change(s) applied, {proposed} proposed"


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def probe_lines(state: ControllerState) -> list[str]:
    """One line per class with a probe running, planned, or a result (README "Probes")."""
    out = []
    for c in state.classes:
        p = c.probe
        if not p:
            continue
        run, planned, results = p.get("running"), p.get("planned"), p.get("results") or []
        parts = []
        if run:
            where = f" on {run['instance']} (canary)" if run.get("instance") else ""
            parts.append(f"{run['kind']} probe running at k = {run['k']}{where}")
        elif planned and planned.get("at") is not None:
            parts.append(f"next: {planned['kind']} probe at {_clock(planned['at'])}")
        if results:
            last = results[-1]
            parts.append(f"last: {last['kind']} {last['outcome']} ({last['result']})")
        if parts:
            out.append(f"probe {c.name}: " + "; ".join(parts))
    return out
