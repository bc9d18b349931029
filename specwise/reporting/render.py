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
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from specwise.config import format_duration
from specwise.errors import ReportError
from specwise.output import to_json
from specwise.reporting.cost import cost_lines
from specwise.reporting.data import write_report_data
from specwise.reporting.plots import draw_alpha_cost_map, k_label
from specwise.reporting.report import ClassReport, Report, WindowClass, WindowInfo, latency_text
from specwise.reporting.windows import AlphaSeries

__all__ = [
    "map_figure",
    "render_html",
    "render_markdown",
    "render_pngs",
    "report_to_dict",
    "safe_name",
    "speedup_figure",
    "write_report",
]

_COLORS = {"before": "tab:blue", "after": "tab:orange"}
#: One size for every figure, so the HTML grid's cells line up (inches at 90 dpi).
_FIGSIZE = (7.2, 4.6)


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
        "recommended_k": w.recommended_k,
        "optimal_k": w.optimal_k,
        "speedup_deployed": w.speedup_deployed,
        "speedup_recommended": w.speedup_recommended,
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
        # the cost side (#14): measured vs predicted speedup, fitted costs, batch sizes,
        # the recommended configuration and its bands
        "configuration": None
        if r.config is None
        else {
            "k": r.config.k,
            "schedule": [list(x) for x in r.config.schedule] if r.config.schedule else None,
            "describe": r.config.describe(),
        },
        "load": None if w.cost_side is None else w.cost_side.to_dict(r.load),
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
        name: {
            "times": list(s.times),
            "alphas": list(s.alphas),
            "drafts": list(s.drafts),
            "rate_window_seconds": s.rate_window,
        }
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


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)


def _plot_survival(c: ClassReport, path: Path) -> None:
    fig, ax = plt.subplots(figsize=_FIGSIZE)
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


def _plot_speedup(c: ClassReport, path: Path) -> None:
    _save(speedup_figure(c), path)


def speedup_figure(c: ClassReport) -> Figure:
    """The speedups the table's k come from (the policy's priced curve per window), the
    recommended k starred and the deployed k boxed; every label in the legend, so the two
    windows' marks never overlap."""
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    drawn = False
    for label, w in _windows(c):
        e, r = w.estimate, w.recommendation
        if not e.ok or len(r.speedups) < 2:
            continue
        color = _COLORS[label]
        ks = list(range(len(r.speedups)))
        basis = "measured survival" if r.priced_from == "survival" else f"alpha {e.alpha:.2f}"
        ax.plot(ks, r.speedups, marker="D" if r.priced_from == "survival" else "o",
                markersize=3, linestyle=":" if r.priced_from == "survival" else "-",
                color=color, label=f"{label}: {basis}, c {w.cost:g} "
                f"({k_label(r.recommended_k, r.optimal_k)})")  # fmt: skip
        rk = r.recommended_k
        ax.plot([rk], [r.speedups[rk]], marker="*", markersize=15, color=color,
                markeredgecolor="black", linestyle="none")  # fmt: skip
        if w.deployed_k is not None and w.speedup_deployed is not None:
            ax.plot([w.deployed_k], [w.speedup_deployed], marker="s", markersize=10,
                    markerfacecolor="none", markeredgewidth=1.8, color=color,
                    linestyle="none", label=f"{label}: deployed k = {w.deployed_k}, "
                    f"{w.speedup_deployed:.2f}x")  # fmt: skip
        drawn = True
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("draft length k (num_speculative_tokens)")
    ax.set_ylabel("predicted speedup over plain decoding")
    ax.set_title(f"{c.name}: predicted speedup vs k (star: recommended)")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8, loc="best", framealpha=0.9)
    else:
        ax.text(0.5, 0.5, "not enough data", ha="center", transform=ax.transAxes)
    return fig


def _dates(times: Sequence[float]) -> np.ndarray:
    return (np.asarray(times, dtype=float) * 1000.0).astype("datetime64[ms]")


def _plot_alpha_time(c: ClassReport, report: Report, path: Path) -> None:
    fig, ax = plt.subplots(figsize=_FIGSIZE)
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
            per = "alpha per step"
            if s.rate_window is not None:
                per = f"alpha over the last {format_duration(s.rate_window)} at each step"
            ax.plot(xs, ys, linewidth=0.8, color=color, alpha=0.55, label=f"{label}: {per}")
            t0 = s.times[0] if t0 is None else t0
            t1 = s.times[-1] if t1 is None else t1
        if w is None or w.estimate.alpha is None:
            continue
        e, alpha = w.estimate, w.estimate.alpha
        low = e.alpha_low if e.alpha_low is not None else alpha
        high = e.alpha_high if e.alpha_high is not None else alpha
        if t0 is not None and t1 is not None:
            ends = _dates([t0, t1])
            ax.plot(ends, [alpha, alpha], color=color, linewidth=2.6, zorder=3,
                    path_effects=[patheffects.withStroke(linewidth=4.5, foreground="black")],
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
    _save(map_figure(c, k_max, verify_slope), path)


def map_figure(c: ClassReport, k_max: int, verify_slope: float | None) -> Figure:
    """The (alpha, c) map with each window's operating point, labelled in the legend."""
    vc = None if verify_slope is None else (lambda k: 1.0 + verify_slope * k)
    points, colors = [], []
    for label, w in _windows(c):
        if w.estimate.alpha is not None:
            text = f"{label}: alpha {w.estimate.alpha:.2f}, c {w.cost:g}, deployed k "
            text += f"{w.deployed_k}, {k_label(w.recommendation.recommended_k, w.optimal_k)}"
            points.append((w.estimate.alpha, w.cost, text))
            colors.append(_COLORS[label])
    top = max([0.6, *(p[1] * 1.2 for p in points)])
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    draw_alpha_cost_map(ax, k_max, verify_cost=vc, points=points, max_cost=top, point_colors=colors)
    if len(points) == 2:
        (a0, c0, _), (a1, c1, _) = points
        if abs(a1 - a0) > 0.01 or abs(c1 - c0) > 0.01 * top:
            ax.annotate("", xy=(a1, c1), xytext=(a0, c0),
                        arrowprops={"arrowstyle": "->", "color": "red", "lw": 1.5})  # fmt: skip
    ax.set_title(f"{c.name}: operating points on the (alpha, c) map")
    return fig


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
        _plot_speedup(c, paths[1])
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
            top = "" if w.optimal_k == w.recommended_k else f" (exact max {w.optimal_k})"
            return f"{w.deployed_k} -> {w.recommended_k}{top}"
        if what == "speedup":
            return (
                f"{_f(w.speedup_deployed, '.2f')}x at deployed k = {w.deployed_k}; "
                f"{_f(w.speedup_recommended, '.2f')}x at recommended k = {w.recommended_k}"
            )
        if what == "measured":
            m = w.cost_side.measured if w.cost_side is not None else None
            if m is None:
                return "-" if w.cost_side is None else w.cost_side.note or "-"
            return (
                f"{m.value:.2f}x [{m.low:.2f}, {m.high:.2f}] at k = {m.k}, B = {m.batch:.1f} "
                f"({'plain baseline' if m.basis == 'baseline' else 'T(0, B) inferred'})"
                + (f"; predicted {m.predicted:.2f}x" if m.predicted is not None else "")
            )
        if what == "config":
            cfg = w.recommendation.config
            return "-" if cfg is None else cfg.describe()
        if what == "step":
            fit = w.cost_side.fit if w.cost_side is not None else None
            if fit is None:
                return "-"
            c = fit.cost
            knee = f"knee {c.knee:.0f} tok" if math.isfinite(c.knee) else "no knee"
            return (
                f"base {c.base * 1e3:.3g} ms, {knee}, drafter {c.draft_base * 1e3:.3g} ms; "
                f"implied c = {c.implied_draft_cost(fit.typical_batch):.3f}"
            )
        if what == "batch":
            b = w.cost_side.batches if w.cost_side is not None else None
            if b is None:
                return "-"
            return f"mean {b.mean:.1f}, p50 {b.quantile(0.5)}, p90 {b.quantile(0.9)}"
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
        ("k deployed -> recommended", "k"),
        ("predicted speedup", "speedup"),
        ("measured speedup [90%]", "measured"),
        ("recommended configuration", "config"),
        ("fitted step cost", "step"),
        ("batch size", "batch"),
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
        out.append(latency_text(c.latency))
    for label, w in (("before", c.before), ("after", c.after)):
        if w is not None and w.cost_side is not None:
            out += [f"{label}: {x}" for x in cost_lines(w.cost_side, w.recommendation.load)]
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
.plots { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 14px;
         margin: 0.8em 0 2em 0; }
.plots figure { margin: 0; border: 1px solid #ddd; padding: 6px; background: #fff; }
.plots img { width: 100%; height: auto; display: block; }
.plots figcaption { font-size: 13px; color: #555; padding-top: 4px; }
@media (max-width: 1000px) { .plots { grid-template-columns: 1fr; } }
"""


_CAPTIONS = {
    "survival": "Measured survival s_i per draft position, with intervals and the fitted alpha^i",
    "speedup": "Predicted speedup vs k as the table prices it: star = recommended k, "
    "box = deployed k",
    "alpha-over-time": "Alpha over time in both windows; the thick line is each window's "
    "estimate with its interval",
    "alpha-cost-map": "The recommended k over (alpha, c), with both windows' operating points",
}


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
            caption = _CAPTIONS.get(p.stem.split(f"-{safe_name(c.name)}")[0], p.stem)
            parts.append(
                f'<figure><img alt="{esc(p.stem)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
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
