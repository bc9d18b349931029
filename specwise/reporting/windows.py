"""The two windows of a report: time ranges, and what each window holds.

:func:`parse_time` and :func:`parse_range` read RFC 3339 (``2026-05-01T00:00:00Z``), Unix
seconds (``1777593600``), ``now`` or times relative to now (``-30d``, ``-12h``, ``-90m``).
A window's totals come from the collectors: through Prometheus one server-side
``sum by (class labels) (increase(...[window]))`` per counter at the window's end
(:func:`prometheus_window`); from files, two ``/metrics`` captures (their difference), one
capture (counts since the server started) or a vLLM log (:func:`file_window`). Alpha over
time (:func:`alpha_over_time`, :class:`AlphaSeries`) is built on the frames of
:mod:`specwise.reporting.frames`: range queries of per-class increases fetched one
step-aligned chunk (<= 11,000 points) at a time, so long ranges can show progress.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from specwise.collectors.classes import ClassConfig
from specwise.collectors.deltas import (
    latest_per_series,
    since_start,
    window_deltas,
)
from specwise.collectors.logs import log_snapshots
from specwise.collectors.prometheus import PrometheusSource, aligned_chunks
from specwise.collectors.scrape import FileSource
from specwise.collectors.snapshot import CounterDelta, Snapshot
from specwise.config import parse_duration
from specwise.errors import ReportError, SourceError
from specwise.reporting.frames import prometheus_counters, snapshot_counters, with_estimates

__all__ = [
    "AlphaSeries",
    "TimeRange",
    "alpha_frame",
    "alpha_over_time",
    "auto_step",
    "capped_rate_window",
    "file_window",
    "parse_range",
    "parse_time",
    "prometheus_window",
    "series_from_frame",
    "series_from_snapshots",
    "snapshots_frame",
    "window_grid",
]

#: Progress callback: (chunks done, chunks in all, a one-line description).
Progress = Callable[[int, int, str], None]


_RELATIVE = re.compile(r"^-\s*(.+)$")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")


# -- times -------------------------------------------------------------------------------


def parse_time(text: str, *, now: float) -> float:
    """Unix seconds from RFC 3339, Unix seconds, ``now`` or ``-<duration>`` (before now)."""
    raw = text.strip()
    if raw in ("", "now"):
        if raw == "":
            raise ReportError("a time is empty; write RFC 3339, Unix seconds, now or e.g. -30d")
        return now
    m = _RELATIVE.match(raw)
    if m:
        return now - parse_duration(m.group(1).strip(), field=f"time {text!r}")
    if _NUMBER.match(raw):
        return float(raw)
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ReportError(
            f"time {text!r} is not RFC 3339 (2026-05-01T00:00:00Z), Unix seconds, now or a "
            "relative time such as -30d"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass(frozen=True)
class TimeRange:
    """[start, end] in Unix seconds; ``text`` is what the user wrote."""

    start: float
    end: float
    text: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start


def parse_range(text: str, *, now: float) -> TimeRange:
    """``START..END`` (either side as in :func:`parse_time`; an empty END means now)."""
    if ".." not in text:
        raise ReportError(
            f"window {text!r} is not START..END; write e.g. -60d..-30d or "
            "2026-04-01T00:00:00Z..2026-05-01T00:00:00Z"
        )
    left, right = text.split("..", 1)
    start = parse_time(left, now=now)
    end = parse_time(right or "now", now=now)
    if not end > start:
        raise ReportError(f"window {text!r} ends before it starts; swap START and END")
    return TimeRange(start, end, text)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- per window ----------------------------------------------------------------------------


def prometheus_window(source: PrometheusSource, window: TimeRange) -> list[CounterDelta]:
    """Per-class totals over the window: ``sum by (class labels) (increase(...[W]))`` at its
    end, computed per series by the server (restart-safe) and summed per class."""
    return source.increase(window.end, window.seconds)


#: At most this many sub-windows per report window feed the cost side (each one tick's queries).
MAX_LOAD_SUBWINDOWS = 8
#: A sub-window lasts at most this long (long ranges are sampled, not tiled).
LOAD_SUBWINDOW_SECONDS = 1800.0
#: Windows shorter than this are not split.
MIN_LOAD_SUBWINDOW_SECONDS = 300.0


def load_subwindows(
    source: PrometheusSource,
    window: TimeRange,
    *,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[CounterDelta]:
    """Per-class deltas over up to :data:`MAX_LOAD_SUBWINDOWS` sub-windows spread evenly over
    ``window`` (each ending at the end of its share, at most 30 minutes long): the cost side
    fits the step time over the batch sizes they saw (a day's quiet and busy hours) where one
    total over the window would average them away. Empty when the window is too short."""
    n = min(MAX_LOAD_SUBWINDOWS, int(window.seconds // MIN_LOAD_SUBWINDOW_SECONDS))
    if n < 2:
        return []
    share = window.seconds / n
    length = min(share, LOAD_SUBWINDOW_SECONDS)
    out: list[CounterDelta] = []
    for i in range(n):
        end = window.start + (i + 1) * share
        out.extend(source.increase(end, length))
        if progress is not None:
            progress(i + 1, n, f"sub-window ending {_iso(end)}")
    return out


def _is_log(text: str) -> bool:
    return "SpecDecoding metrics:" in text or "Speculative metrics:" in text


def _file_snapshots(path: Path, *, now: float, instance: str, year: int) -> list[Snapshot]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SourceError(
            f"Cannot read {path} ({exc.strerror or exc}); check the path.", url=str(path)
        ) from exc
    if _is_log(text):
        return log_snapshots(text.splitlines(), year=year, source=str(path))
    return FileSource(path, instance=instance).collect(now)


def file_window(
    paths: Sequence[Path], *, now: float, year: int | None = None
) -> tuple[list[CounterDelta], list[Snapshot]]:
    """A window from files: a vLLM log (its intervals), one ``/metrics`` capture (counts since
    the server started) or two captures (start, end: their difference).

    Returns the deltas and the time series of snapshots (non-empty for logs, for
    alpha over time).
    """
    if not 1 <= len(paths) <= 2:
        raise ReportError(
            f"a window takes one log or capture file, or two captures; got {len(paths)}"
        )
    year = year if year is not None else datetime.fromtimestamp(now, UTC).year
    # Label both captures with the end file's name so the same series match.
    instance = str(paths[-1])
    snaps = [_file_snapshots(p, now=now, instance=instance, year=year) for p in paths]
    if len(paths) == 1:
        series = snaps[0]
        return [since_start(s) for s in latest_per_series(series)], (
            series if len({s.timestamp for s in series}) > 1 else []
        )
    if any(len({s.timestamp for s in group}) > 1 for group in snaps):
        raise ReportError("give a log file alone (it covers its window); pair only captures")
    return window_deltas(snaps[0], snaps[1]), []


# -- alpha over time -------------------------------------------------------------------------


@dataclass(frozen=True)
class AlphaSeries:
    """Alpha of one class at each step of a window (NaN where no draft was verified)."""

    class_name: str
    times: tuple[float, ...]
    alphas: tuple[float, ...]
    drafts: tuple[float, ...] = ()
    rate_window: float | None = None  # seconds of increase() behind each point (Prometheus)


def auto_step(window: TimeRange, *, points: int = 1500, minimum: float = 15.0) -> float:
    """A plot-resolution step: about ``points`` points, at least ``minimum`` seconds, whole."""
    return float(max(minimum, math.ceil(window.seconds / points)))


def alpha_frame(
    source: PrometheusSource,
    window: TimeRange,
    *,
    step: float,
    rate_window: float | None = None,
    max_points: int = 11_000,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The per-class frame (:func:`specwise.reporting.frames.prometheus_counters` with
    :func:`~specwise.reporting.frames.with_estimates`) of increases over ``rate_window``
    (default: max(step, 5 min)) every ``step`` seconds over the window, fetched one
    step-aligned chunk of at most ``max_points`` points at a time (``progress`` after each)."""
    return with_estimates(
        prometheus_counters(
            source.client,
            window.start,
            window.end,
            step=step,
            classes=source.classes,
            selector=source.selector,
            rate_window=rate_window,
            context=False,
            max_points=max_points,
            progress=progress,
        )
    )


def _seconds(frame: pd.DataFrame) -> np.ndarray:
    return frame["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9


def series_from_frame(
    frame: pd.DataFrame, *, grid: np.ndarray | None = None
) -> dict[str, AlphaSeries]:
    """Per-class AlphaSeries from a frame with estimates: classes with per-position counters
    and drafts. With ``grid`` (Unix seconds, evenly spaced) each class is laid on it, NaN
    alpha and 0 drafts where it has no row; without, its rows with drafts > 0."""
    out: dict[str, AlphaSeries] = {}
    usable = frame[frame["k"].notna() & frame["drafts"].notna()] if len(frame) else frame
    for name, rows in usable.groupby("class", sort=True):
        t = _seconds(rows)
        alphas = rows["alpha"].to_numpy(dtype=float)
        drafts = rows["drafts"].to_numpy(dtype=float)
        if grid is None:
            keep = drafts > 0
            out[str(name)] = AlphaSeries(
                str(name),
                tuple(t[keep].tolist()),
                tuple(alphas[keep].tolist()),
                tuple(drafts[keep].tolist()),
            )
            continue
        step = float(grid[1] - grid[0]) if len(grid) > 1 else 1.0
        idx = np.rint((t - grid[0]) / step).astype(np.intp)
        ok = (idx >= 0) & (idx < len(grid))
        a = np.full(len(grid), np.nan)
        d = np.zeros(len(grid))
        a[idx[ok]] = alphas[ok]
        d[idx[ok]] = drafts[ok]
        out[str(name)] = AlphaSeries(
            str(name), tuple(grid.tolist()), tuple(a.tolist()), tuple(d.tolist())
        )
    return out


def window_grid(window: TimeRange, *, step: float, max_points: int = 11_000) -> np.ndarray:
    """The step times of a window as its range queries return them (chunk by chunk)."""
    return np.concatenate(
        [
            c0 + step * np.arange(round((c1 - c0) / step) + 1)
            for c0, c1 in aligned_chunks(window.start, window.end, step, max_points=max_points)
        ]
    )


def capped_rate_window(rate_window: float | None, *, step: float, window: TimeRange) -> float:
    """The rate window behind each alpha-over-time point: ``rate_window`` (default
    max(step, 5 min)) capped at the window's length, and at least 1 s."""
    rw = rate_window if rate_window is not None else max(step, 300.0)
    return max(1.0, min(rw, window.seconds))


def alpha_over_time(
    source: PrometheusSource,
    window: TimeRange,
    *,
    step: float,
    rate_window: float | None = None,
    max_points: int = 11_000,
    progress: Progress | None = None,
) -> dict[str, AlphaSeries]:
    """Per-class alpha every ``step`` seconds over the window from range queries of per-class
    increases over ``rate_window`` (default: max(step, 5 min)), one step-aligned chunk of at
    most ``max_points`` points at a time; ``progress`` is called after each chunk. Built on
    :func:`alpha_frame` (k per step, so a k change inside the window is handled).

    The rate window is capped at the window's length: a longer one would reach back before
    the window (a 5 min rate in a 70 s window mostly shows the minutes before it), and with
    the cap the line's last point covers exactly the window the table's alpha comes from."""
    rw = capped_rate_window(rate_window, step=step, window=window)
    frame = alpha_frame(
        source, window, step=step, rate_window=rw, max_points=max_points, progress=progress
    )
    series = series_from_frame(frame, grid=window_grid(window, step=step, max_points=max_points))
    return {name: dataclasses.replace(s, rate_window=rw) for name, s in series.items()}


def snapshots_frame(snapshots: Sequence[Snapshot], *, classes: ClassConfig) -> pd.DataFrame:
    """The per-class frame (with estimates) of the intervals between successive snapshots."""
    return with_estimates(snapshot_counters(snapshots, classes=classes))


def series_from_snapshots(
    snapshots: Sequence[Snapshot], *, classes: ClassConfig
) -> dict[str, AlphaSeries]:
    """Alpha per interval between successive snapshots of a log (per class)."""
    return series_from_frame(snapshots_frame(snapshots, classes=classes))


# -- the report ------------------------------------------------------------------------------
