"""Render a :class:`specwise.reporting.report.Report`: ``report.md``, a self-contained
``report.html`` (plots embedded), ``report.json`` (every number) and PNGs, written atomically
as one folder.

PNGs per class: ``survival-<class>.png`` (measured survival before/after with intervals and
the fitted alpha^i), ``speedup-<class>.png`` (predicted speedup vs k before/after),
``alpha-over-time-<class>.png`` (both windows, with the window estimates) and
``alpha-cost-map-<class>.png`` (the (alpha, c) map with the two operating points).
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from specwise.errors import ReportError
from specwise.output import to_json
from specwise.reporting.data import write_report_data
from specwise.reporting.plots import draw_alpha_cost_map, draw_speedup_vs_k
from specwise.reporting.report import AlphaSeries, ClassReport, Report, WindowClass, WindowInfo

__all__ = [
    "render_html",
    "render_markdown",
    "render_pngs",
    "report_to_dict",
    "safe_name",
    "write_report",
]

_COLORS = {"before": "tab:blue", "after": "tab:orange"}


def safe_name(class_name: str) -> str:
    """A file-name-safe form of a class name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", class_name).strip("._") or "class"


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- JSON --------------------------------------------------------------------------------


def _window_class(w: WindowClass | None) -> dict[str, Any] | None:
    if w is None:
        return None
    e, r, d = w.estimate, w.recommendation, w.delta
    lat = w.latency
    return {
        "method": e.method,
        "alpha": e.alpha,
        "alpha_low": e.alpha_low,
        "alpha_high": e.alpha_high,
        "alpha_bracket": list(e.alpha_bracket) if e.alpha_bracket else None,
        "drafts": e.drafts,
        "draft_tokens": e.draft_tokens,
        "accepted": e.accepted,
        "accepted_per_position": list(d.accepted_per_position),
        "series": d.series,
        "restarts": d.restarts,
        "deployed_k": w.deployed_k,
        "mean_acceptance_length": e.mean_acceptance_length,
        "acceptance_rate": e.acceptance_rate,
        "shortfall": e.shortfall,
        "survival": [
            {"position": p.position, "value": p.value, "low": p.low, "high": p.high}
            for p in e.survival
        ],
        "conditional_acceptance": [
            {"position": p.position, "value": p.value, "low": p.low, "high": p.high}
            for p in e.conditional
        ],
        "fit_ok": e.fit.ok,
        "fit_p_value": e.fit.p_value,
        "cost": w.cost,
        "optimal_k": w.optimal_k,
        "speedup_deployed": w.speedup_deployed,
        "speedup_optimal": w.speedup_optimal,
        "speedups_by_k": list(r.speedups),
        "confidence": r.confidence,
        "priced_from": r.priced_from,
        "reason": r.reason,
        "latency": None
        if lat is None
        else {
            "itl_seconds": lat.itl_seconds,
            "events": lat.events,
            "seconds_per_token": lat.seconds_per_token,
            "generation_tokens": lat.generation_tokens,
        },
        "insufficient_reason": e.reason or None,
        "notes": list(dict.fromkeys([*e.notes, *r.notes])),
    }


def _class_dict(c: ClassReport) -> dict[str, Any]:
    ch, lat = c.change, c.latency
    return {
        "class": c.name,
        "presence": c.presence,
        "verdict": c.verdict,
        "before": _window_class(c.before),
        "after": _window_class(c.after),
        "alpha_change": None
        if ch is None
        else {
            "delta": ch.delta,
            "half_width": ch.half_width,
            "low": ch.low,
            "high": ch.high,
            "level": ch.level,
            "p_increase": ch.p_increase,
            "real": ch.real,
        },
        "latency_change": None
        if lat is None
        else {
            "itl_before_seconds": lat.itl_before,
            "itl_after_seconds": lat.itl_after,
            "itl_ratio": lat.itl_ratio,
            "seconds_per_token_before": lat.seconds_per_token_before,
            "seconds_per_token_after": lat.seconds_per_token_after,
            "measured_speedup": lat.measured_speedup,
            "implied_cost_after": lat.implied_cost_after,
            "note": lat.note or None,
        },
    }


def _series_dict(series: Mapping[str, AlphaSeries]) -> dict[str, Any]:
    return {
        name: {"times": list(s.times), "alphas": list(s.alphas), "drafts": list(s.drafts)}
        for name, s in series.items()
    }


def _window_info(w: WindowInfo) -> dict[str, Any]:
    return {
        "label": w.label,
        "source": w.source,
        "start": w.start,
        "end": w.end,
        "start_iso": _iso(w.start),
        "end_iso": _iso(w.end),
        "cost": w.cost,
        "requests": w.requests,
        "notes": list(w.notes),
        "alpha_over_time": _series_dict(w.series),
    }


def report_to_dict(report: Report) -> dict[str, Any]:
    """Every number of the report as plain JSON-ready data."""
    return {
        "created": report.created,
        "created_iso": _iso(report.created),
        "level": report.level,
        "k_max": report.k_max,
        "verify_slope": report.verify_slope,
        "before": _window_info(report.before),
        "after": _window_info(report.after),
        "verdicts": report.verdicts,
        "classes": [_class_dict(c) for c in report.classes],
        "notes": list(report.notes),
    }


# -- PNGs --------------------------------------------------------------------------------


def _windows(c: ClassReport) -> list[tuple[str, WindowClass]]:
    return [(n, w) for n, w in (("before", c.before), ("after", c.after)) if w is not None]


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)


def _plot_survival(c: ClassReport, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, w in _windows(c):
        e = w.estimate
        if not e.survival:
            continue
        xs = [p.position for p in e.survival]
        ys = [p.value for p in e.survival]
        err = [[p.value - p.low for p in e.survival], [p.high - p.value for p in e.survival]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=_COLORS[label],
                    label=f"{label}: measured s_i (k = {e.k})")  # fmt: skip
        if e.alpha is not None:
            fx = list(range(1, max(xs) + 1))
            ax.plot(fx, [e.alpha**i for i in fx], linestyle="--", color=_COLORS[label],
                    label=f"{label}: fitted alpha^i, alpha = {e.alpha:.3f}")  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("draft position i")
    ax.set_ylabel("survival s_i = P(first i drafts accepted)")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{c.name}: survival before / after")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no per-position counters", ha="center", transform=ax.transAxes)
    _save(fig, path)


def _plot_speedup(c: ClassReport, path: Path, k_max: int, verify_slope: float | None) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    vc = None if verify_slope is None else (lambda k: 1.0 + verify_slope * k)
    drawn = False
    for label, w in _windows(c):
        e = w.estimate
        if e.alpha is None:
            continue
        draw_speedup_vs_k(ax, [e.alpha], w.cost, k_max, verify_cost=vc,
                          labels=[f"{label}: alpha {e.alpha:.2f}, c {w.cost:g}"])  # fmt: skip
        r = w.recommendation
        if r.priced_from == "survival" and len(r.speedups) > 1:
            ax.plot(range(len(r.speedups)), r.speedups, marker="D", linestyle=":",
                    color=_COLORS[label], label=f"{label}: priced on the measured survival "
                    f"(best k = {w.optimal_k})")  # fmt: skip
            ax.legend(fontsize=8)
        if w.deployed_k is not None and w.speedup_deployed is not None:
            ax.plot([w.deployed_k], [w.speedup_deployed], marker="s", markersize=9,
                    markerfacecolor="none", color="black")  # fmt: skip
            ax.annotate(f"{label} deployed k = {w.deployed_k}",
                        (w.deployed_k, w.speedup_deployed), textcoords="offset points",
                        xytext=(6, -12), fontsize=8)  # fmt: skip
        drawn = True
    ax.set_title(f"{c.name}: predicted speedup vs k before / after")
    if not drawn:
        ax.text(0.5, 0.5, "not enough data", ha="center", transform=ax.transAxes)
    _save(fig, path)


def _dates(times: Sequence[float]) -> np.ndarray:
    return (np.asarray(times, dtype=float) * 1000.0).astype("datetime64[ms]")


def _plot_alpha_time(c: ClassReport, report: Report, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9.0, 3.8))
    for label, info, w in (
        ("before", report.before, c.before),
        ("after", report.after, c.after),
    ):
        s = info.series.get(c.name)
        color = _COLORS[label]
        t0, t1 = info.start, info.end
        if s is not None and s.times:
            xs = _dates(s.times)
            ys = np.asarray(s.alphas, dtype=float)
            ax.plot(xs, ys, linewidth=0.8, color=color, label=f"{label}: alpha per step")
            t0 = s.times[0] if t0 is None else t0
            t1 = s.times[-1] if t1 is None else t1
        if w is None or w.estimate.alpha is None:
            continue
        e, alpha = w.estimate, w.estimate.alpha
        low = e.alpha_low if e.alpha_low is not None else alpha
        high = e.alpha_high if e.alpha_high is not None else alpha
        if t0 is not None and t1 is not None:
            ends = _dates([t0, t1])
            ax.plot(ends, [alpha, alpha], color=color, linewidth=2.2,
                    label=f"{label} window: {alpha:.3f} [{low:.3f}, {high:.3f}]")  # fmt: skip
            ax.fill_between(ends, low, high, color=color, alpha=0.25)
        else:  # captures: no time axis, one point per window
            x = 0 if label == "before" else 1
            ax.errorbar([x], [alpha], yerr=[[alpha - low], [high - alpha]], marker="o",
                        capsize=4, color=color, label=f"{label} window: {alpha:.3f}")  # fmt: skip
            ax.set_xticks([0, 1], ["before", "after"])
            ax.set_xlim(-0.5, 1.5)
    if report.before.start is not None or c.name in report.before.series:
        fig.autofmt_xdate()
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("alpha (positions MLE)")
    ax.set_title(f"{c.name}: alpha over time, before and after")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)


def _plot_map(c: ClassReport, path: Path, k_max: int, verify_slope: float | None) -> None:
    vc = None if verify_slope is None else (lambda k: 1.0 + verify_slope * k)
    points = []
    for label, w in _windows(c):
        if w.estimate.alpha is not None:
            points.append((w.estimate.alpha, w.cost, f"{label} (k {w.deployed_k})"))
    top = max([0.6, *(p[1] * 1.2 for p in points)])
    fig, ax = plt.subplots(figsize=(6.8, 4.8))
    draw_alpha_cost_map(ax, k_max, verify_cost=vc, points=points, max_cost=top)
    if len(points) == 2:
        (a0, c0, _), (a1, c1, _) = points
        ax.annotate("", xy=(a1, c1), xytext=(a0, c0),
                    arrowprops={"arrowstyle": "->", "color": "red", "lw": 1.5})  # fmt: skip
    ax.set_title(f"{c.name}: operating points on the (alpha, c) map")
    _save(fig, path)


def render_pngs(report: Report, folder: Path) -> dict[str, list[Path]]:
    """Draw every PNG into ``folder``; class name -> its PNG paths (in display order)."""
    out: dict[str, list[Path]] = {}
    for c in report.classes:
        base = safe_name(c.name)
        paths = [
            folder / f"survival-{base}.png",
            folder / f"speedup-{base}.png",
            folder / f"alpha-over-time-{base}.png",
            folder / f"alpha-cost-map-{base}.png",
        ]
        _plot_survival(c, paths[0])
        _plot_speedup(c, paths[1], report.k_max, report.verify_slope)
        _plot_alpha_time(c, report, paths[2])
        _plot_map(c, paths[3], report.k_max, report.verify_slope)
        out[c.name] = paths
    return out


# -- Markdown and HTML -------------------------------------------------------------------


def _f(v: float | None, fmt: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def _rows(c: ClassReport) -> list[tuple[str, str, str]]:
    def get(w: WindowClass | None, what: str) -> str:
        if w is None:
            return "(absent)"
        e = w.estimate
        if what == "alpha":
            if e.alpha is None:
                return f"not enough data ({e.reason})" if e.reason else "-"
            return f"{e.alpha:.3f} [{_f(e.alpha_low)}, {_f(e.alpha_high)}]"
        if what == "mal":
            return _f(e.mean_acceptance_length, ".2f")
        if what == "survival":
            return " ".join(f"{p.value:.2f}" for p in e.survival) or "-"
        if what == "conditional":
            return " ".join(f"{p.value:.2f}" for p in e.conditional) or "-"
        if what == "shortfall":
            return _f(e.shortfall)
        if what == "drafts":
            return f"{e.drafts:,.0f}"
        if what == "cost":
            return f"{w.cost:g}"
        if what == "k":
            return f"{w.deployed_k} -> best {w.optimal_k}"
        if what == "speedup":
            return f"{_f(w.speedup_deployed, '.2f')}x at k = {w.deployed_k}; " + (
                f"{_f(w.speedup_optimal, '.2f')}x at k = {w.optimal_k}"
            )
        if what == "itl":
            lat = w.latency
            if lat is None:
                return "-"
            tok = f", {lat.seconds_per_token * 1000:.2f} ms/token" if lat.seconds_per_token else ""
            return f"{lat.itl_seconds * 1000:.2f} ms/event{tok}"
        return "-"

    names = [
        ("alpha [interval]", "alpha"),
        ("drafts", "drafts"),
        ("mean acceptance length", "mal"),
        ("survival s1..sk", "survival"),
        ("conditional acceptance", "conditional"),
        ("draft-length shortfall T/(kD)", "shortfall"),
        ("draft cost c", "cost"),
        ("k deployed -> optimal", "k"),
        ("predicted speedup", "speedup"),
        ("inter-token latency", "itl"),
    ]
    return [(title, get(c.before, key), get(c.after, key)) for title, key in names]


def _change_lines(c: ClassReport, level: float) -> list[str]:
    out = []
    if c.change is not None:
        ch = c.change
        out.append(
            f"alpha change {ch.delta:+.4f}, {level:.0%} interval [{ch.low:+.4f}, {ch.high:+.4f}], "
            f"P(alpha rose) = {ch.p_increase:.3f}: "
            + ("a real change" if ch.real else "not distinguishable from noise")
        )
    if c.latency is not None:
        lat = c.latency
        txt = (
            f"inter-token latency {lat.itl_before * 1000:.2f} -> {lat.itl_after * 1000:.2f} ms "
            f"per event (x{lat.itl_ratio:.3f})"
        )
        if lat.measured_speedup is not None:
            txt += f"; time per output token {lat.measured_speedup:.3f}x faster after"
        if lat.implied_cost_after is not None:
            txt += f"; implied drafter cost after = {lat.implied_cost_after:.3f}"
        if lat.note:
            txt += f" ({lat.note})"
        out.append(txt)
    return out


def _window_text(w: WindowInfo) -> str:
    span = f"{_iso(w.start)} .. {_iso(w.end)}" if w.start is not None else "captured counters"
    return f"{span} from {w.source}" + (f", drafter cost {w.cost}" if w.cost else "")


def render_markdown(
    report: Report, pngs: Mapping[str, Sequence[Path]], data_files: Sequence[Path] = ()
) -> str:
    """``report.md``: verdicts first, then per class a table, the change and the plots; then
    links to the ``data_files`` (paths relative to the report folder)."""
    lines = ["# specwise before/after report", ""]
    lines.append(f"- before: {_window_text(report.before)}")
    lines.append(f"- after: {_window_text(report.after)}")
    lines.append(f"- created {_iso(report.created)}; k up to {report.k_max}")
    lines += ["", "## Verdicts", ""]
    lines += [f"- {v}" for v in report.verdicts]
    for c in report.classes:
        lines += ["", f"## {c.name}", "", "| | before | after |", "|---|---|---|"]
        for title, b, a in _rows(c):
            lines.append(f"| {title} | {b} | {a} |")
        lines.append("")
        lines += [f"- {x}" for x in _change_lines(c, report.level)]
        lines.append("")
        for p in pngs.get(c.name, ()):
            lines.append(f"![{p.stem}]({p.name})")
    if data_files:
        lines += ["", "## Data", "", _DATA_TEXT, ""]
        lines += [f"- [{p.as_posix()}]({p.as_posix()})" for p in data_files]
    notes = [*report.notes, *report.before.notes, *report.after.notes]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in dict.fromkeys(notes)]
    return "\n".join(lines) + "\n"


_DATA_TEXT = (
    "The numbers above as tables (CSV, UTC times): per class and window, per position, and "
    "each window's per-step series."
)


_CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1300px; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 14px; }
.verdict { font-family: monospace; font-size: 15px; }
.plots img { width: 48%; margin: 0.5%; border: 1px solid #ddd; }
"""


def render_html(
    report: Report, pngs: Mapping[str, Sequence[Path]], data_files: Sequence[Path] = ()
) -> str:
    """``report.html``: one file, no external resources (PNGs as data: URIs); the
    ``data_files`` are linked relative to the report folder."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>specwise before/after report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>specwise before/after report</h1>",
        "<ul>",
        f"<li>before: {esc(_window_text(report.before))}</li>",
        f"<li>after: {esc(_window_text(report.after))}</li>",
        f"<li>created {esc(_iso(report.created) or '')}; k up to {report.k_max}</li>",
        "</ul><h2>Verdicts</h2><ul>",
    ]
    parts += [f'<li class="verdict">{esc(v)}</li>' for v in report.verdicts]
    parts.append("</ul>")
    for c in report.classes:
        parts.append(f'<h2 id="{esc(safe_name(c.name))}">{esc(c.name)}</h2>')
        parts.append("<table><tr><th></th><th>before</th><th>after</th></tr>")
        for title, b, a in _rows(c):
            parts.append(f"<tr><td>{esc(title)}</td><td>{esc(b)}</td><td>{esc(a)}</td></tr>")
        parts.append("</table><ul>")
        parts += [f"<li>{esc(x)}</li>" for x in _change_lines(c, report.level)]
        parts.append('</ul><div class="plots">')
        for p in pngs.get(c.name, ()):
            data = base64.b64encode(p.read_bytes()).decode("ascii")
            parts.append(f'<img alt="{esc(p.stem)}" src="data:image/png;base64,{data}">')
        parts.append("</div>")
    if data_files:
        parts.append(f"<h2>Data</h2><p>{esc(_DATA_TEXT)}</p><ul>")
        for p in data_files:
            parts.append(f'<li><a href="{esc(p.as_posix())}">{esc(p.as_posix())}</a></li>')
        parts.append("</ul>")
    notes = [*report.notes, *report.before.notes, *report.after.notes]
    if notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{esc(n)}</li>" for n in dict.fromkeys(notes)]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- the folder --------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_report(report: Report, out: Path, *, force: bool = False) -> Path:
    """Write the report folder atomically: built in a temporary folder beside ``out``, then
    renamed into place. An existing ``out`` is replaced only with ``force``."""
    out = out.resolve()
    if out.exists() and not force:
        raise ReportError(f"{out} exists; pass --force to replace it or choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old: Path | None = None
    try:
        pngs = render_pngs(report, tmp)
        files = write_report_data(report, tmp)
        (tmp / "report.json").write_text(to_json(report_to_dict(report)) + "\n", "utf-8")
        (tmp / "report.md").write_text(render_markdown(report, pngs, files), "utf-8")
        (tmp / "report.html").write_text(render_html(report, pngs, files), "utf-8")
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a report is not
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists() and (old / out.name).exists():
            os.replace(old / out.name, out)  # put the previous report back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out
