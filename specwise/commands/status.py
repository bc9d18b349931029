"""How the controller's state reads on a terminal (shared by ``run`` and ``demo``)."""

from __future__ import annotations

import shutil

from specwise.controller.state import ClassStatus, ControllerState
from specwise.output import format_table

__all__ = ["config_text", "format_status", "k_text", "measured_text", "speedup_text"]


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
    schedule = bool(((c.load or {}).get("recommended") or {}).get("schedule"))
    if (
        c.optimal_k is not None
        and c.recommended_k is not None
        and c.optimal_k != c.recommended_k
        and not schedule  # a schedule's k is its maximum, not the best single k
    ):
        text += f" (max {c.optimal_k})"
    return text


def speedup_text(c: ClassStatus) -> str:
    a, b = c.predicted_speedup_deployed, c.predicted_speedup_recommended
    if a is None and b is None:
        return "-"
    if a is None or b is None or abs(a - b) < 0.005:
        return f"{(a if a is not None else b):.2f}x"
    return f"{a:.2f}x -> {b:.2f}x"


def _schedule_text(schedule: object) -> str:
    """``1-16: 4, 17-256: 0`` from ``[[start, end, k], ...]``."""
    if not isinstance(schedule, list | tuple):
        return ""
    return ", ".join(f"{e[0]}-{e[1]}: {e[2]}" for e in schedule if len(e) == 3)


def _config(k: int | None, schedule: object) -> str:
    if k is None:
        return "?"
    if k == 0:
        return "off"
    bands = _schedule_text(schedule)
    if not bands or (isinstance(schedule, list | tuple) and len(schedule) == 1):
        return f"k={k}"
    return f"k={k} [{bands}]"


def config_text(c: ClassStatus) -> str:
    """The configuration in force -> the recommended one: ``k=4 -> k=4 [1-16: 4, 17-256: 0]``
    (a schedule only where the class is priced with its load)."""
    load = c.load or {}
    rec = load.get("recommended") or {}
    deployed = _config(c.deployed_k, list(c.deployed_schedule) or None)
    if not rec:
        return deployed
    recommended = _config(rec.get("k"), rec.get("schedule"))
    return deployed if recommended == deployed else f"{deployed} -> {recommended}"


def measured_text(c: ClassStatus) -> str:
    """Measured speedup at the deployed configuration with its interval (``-``: none;
    ``n/a`` with the constant-cost model, where the latency families are missing)."""
    load = c.load
    if load is None:
        return "-"
    m = load.get("measured")
    if not m or m.get("value") is None:
        return "-" if load.get("load_aware") else "n/a"
    text = f"{m['value']:.2f}x"
    if m.get("low") is not None and m.get("high") is not None:
        text += f" [{m['low']:.2f}, {m['high']:.2f}]"
    notes = []
    p = load.get("predicted") or {}
    if p.get("value") is not None and p.get("batch") is not None:  # the same windows, priced
        notes.append(f"pred. {p['value']:.2f}x")
    if m.get("basis") == "inferred":
        notes.append("inferred T0")
    return f"{text} ({', '.join(notes)})" if notes else text


def format_status(state: ControllerState, *, width: int | None = None) -> str:
    """One row per class: alpha with interval, k (deployed -> recommended), predicted and
    measured speedup, the configuration (deployed -> recommended), why.

    A class discovered from labels but not in ``[[classes]]`` is flagged "(undeclared)": it
    is observed and reported, never actuated.

    The "why" column is cut to fit the terminal (``width`` characters when given).
    """
    if width is None:
        width = max(60, shutil.get_terminal_size((240, 24)).columns - 110)
    rows = []
    for c in state.classes:
        flag = (" (stale)" if c.stale else "") + ("" if c.declared else " (undeclared)")
        why = c.reason if len(c.reason) <= width else c.reason[: width - 3] + "..."
        rows.append(
            [
                c.name + flag,
                _alpha(c),
                k_text(c),
                speedup_text(c),
                measured_text(c),
                config_text(c),
                why,
            ]
        )
    headers = ["class", "alpha [95% interval]", "k (now -> rec.)", "predicted", "measured"]
    table = format_table([*headers, "configuration", "why"], rows)
    applied = sum(c.changes for c in state.classes)
    proposed = sum(c.proposals for c in state.classes)
    if not applied and not proposed:
        return table
    return f"{table}\nactuator {state.actuator}: {applied} change(s) applied, {proposed} proposed"
