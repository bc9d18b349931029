"""Tidy pandas DataFrames of vLLM's spec-decode counters: the analysis layer.

Every frame here has one row per workload class and time step, a ``time`` column in UTC
(``datetime64[ns, UTC]``, the end of the interval the row covers) and a ``class`` column, and
is sorted by class, then time. A *counters* frame holds what the counters gained:

=======================  ==========================================================================
``time``                 end of the interval (a step of a Prometheus range, a capture, a log line)
``class``                the workload class (``ClassConfig``: a configured name, else the labels)
``k``                    positions exported at that step (the deployed ``num_speculative_tokens``;
                         ``Int64``, missing without per-position counters)
``interval_s``           seconds the increases cover (the rate window; the time since the
                         previous capture or log line)
``drafts``               drafts verified (NaN where vLLM has no drafts counter: 0.8.4, V0)
``draft_tokens``         draft tokens proposed
``accepted``             draft tokens accepted
``accepted_pos_<i>``     drafts whose accepted prefix reached position i (0-based; NaN beyond the
                         row's ``k``)
``generation_tokens``    output tokens (NaN where not exported; likewise the next three)
``itl_seconds_sum``      inter-token latency sum and count (vLLM's histogram)
``itl_seconds_count``
``running_requests``     requests running at ``time`` (a gauge, not an increase)
``mixed_k``              Prometheus only: engines of the class export different k at that step
                         (a rollout); its positions then pool two k, read as short drafts
=======================  ==========================================================================

:func:`with_estimates` adds ``alpha`` (the positions MLE, or for short drafts the estimator's
short-draft estimator), ``alpha_low``/``alpha_high`` (its equal-tailed Beta credible interval,
exactly as :func:`specwise.estimation.estimator.estimate_counts` computes it),
``mean_acceptance_length`` (1 + accepted / drafts) and ``acceptance_rate`` (accepted / draft
tokens); :func:`survival_frame` is the long form of the
per-position survival, one row per class, time and position.

Handled here, once, for every consumer:

- counter resets: through Prometheus, ``increase()`` is computed per series by the server
  before the per-class sum; from captures and logs, per series by
  :func:`specwise.collectors.deltas.counter_increase` (a drop, a new process start or a new k
  restarts the count);
- series that come and go: a class has a row wherever any of its series had a sample; the
  sums are over the series present at that step, and a column no series exported is NaN;
- k changes inside a range: ``k`` is per row (1 + the highest position reported at that
  step), never one value for the whole range; rows whose rate window straddles a change, or
  whose engines run different k (``mixed_k``, a rollout), pool two k, which shows as short
  drafts and is estimated like them.

Sources: a Prometheus range (:func:`prometheus_counters`, fetched in step-aligned chunks under
the 11,000 points limit and parsed column by column, never point by point), a set of
``/metrics`` captures (:func:`capture_counters`), a vLLM log (:func:`log_counters`), or any
Snapshots (:func:`snapshot_counters`). In a notebook::

    from specwise.reporting.frames import load_prometheus
    df = load_prometheus("http://prom:9090", "-7d..now")
    df.pivot(index="time", columns="class", values="alpha").plot(ylabel="alpha")
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, tzinfo
from pathlib import Path

import numpy as np
import pandas as pd
import requests
from scipy import special

from specwise.collectors.classes import CLASS_LABEL, ClassConfig, Matcher
from specwise.collectors.deltas import sum_by_class, window_deltas
from specwise.collectors.logs import log_snapshots
from specwise.collectors.prometheus import (
    COUNTER_METRICS,
    MAX_POINTS,
    PrometheusClient,
    aligned_chunks,
    metric_selector,
)
from specwise.collectors.scrape import FileSource
from specwise.collectors.snapshot import Snapshot
from specwise.config import format_duration
from specwise.errors import DataError, ReportError, SourceError
from specwise.estimation.estimator import WindowCounts, alpha_trials

__all__ = [
    "COUNTER_COLUMNS",
    "CSV_DATE_FORMAT",
    "ESTIMATE_COLUMNS",
    "capture_counters",
    "check_output",
    "class_name",
    "load_prometheus",
    "log_counters",
    "position_columns",
    "prometheus_counters",
    "range_queries",
    "snapshot_counters",
    "survival_frame",
    "with_estimates",
    "write_frame",
]

#: Fixed columns of a counters frame, in order (``accepted_pos_<i>`` follow ``accepted``).
COUNTER_COLUMNS: tuple[str, ...] = (
    "time",
    "class",
    "k",
    "interval_s",
    "drafts",
    "draft_tokens",
    "accepted",
)
_CONTEXT_COLUMNS: tuple[str, ...] = (
    "generation_tokens",
    "itl_seconds_sum",
    "itl_seconds_count",
    "running_requests",
)
#: Columns :func:`with_estimates` adds.
ESTIMATE_COLUMNS: tuple[str, ...] = (
    "alpha",
    "alpha_low",
    "alpha_high",
    "mean_acceptance_length",
    "acceptance_rate",
)
_POS = re.compile(r"^accepted_pos_(\d+)$")
_CONTEXT_METRICS: dict[str, str] = {
    "generation_tokens": "generation_tokens_total",
    "itl_seconds_sum": "inter_token_latency_seconds_sum",
    "itl_seconds_count": "inter_token_latency_seconds_count",
}
#: V0 exports draft/accepted token counters too, but broken ones, and without ``engine``.
_V1_ONLY = Matcher("engine", "!=", "")
#: The label ``count_values`` gives each engine's k (its number of exported positions).
_K_LABEL = "specwise_k"
#: Progress callback: (chunks done, chunks in all, a one-line description).
Progress = Callable[[int, int, str], None]


def class_name(labels: Mapping[str, str]) -> str:
    """The name of a classified label set (``ClassConfig.classify``'s output)."""
    return labels.get(CLASS_LABEL, "") or "/".join(v for _, v in sorted(labels.items()))


def position_columns(frame: pd.DataFrame) -> list[str]:
    """The ``accepted_pos_<i>`` columns of a frame, by position."""
    cols = [(int(m.group(1)), c) for c in frame.columns if (m := _POS.match(str(c)))]
    return [c for _, c in sorted(cols)]


def _empty_counters() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in COUNTER_COLUMNS})
    frame["time"] = pd.Series(dtype="datetime64[ns, UTC]")
    frame["class"] = pd.Series(dtype="str")
    frame["k"] = pd.Series(dtype="Int64")
    return frame


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    """Types, per-row k, column order and row order of a counters frame."""
    if frame.empty:
        return _empty_counters()
    pos = position_columns(frame)
    if pos:
        seen = frame[pos].notna().to_numpy()
        has = seen.any(axis=1)
        k = np.where(has, seen.shape[1] - np.argmax(seen[:, ::-1], axis=1), 0)
        # positions below a row's k that no series reported counted nothing
        below = np.arange(len(pos))[None, :] < k[:, None]
        values = frame[pos].to_numpy(dtype=float, copy=True)
        values[below & ~seen] = 0.0
        frame[pos] = values
        frame["k"] = pd.array(np.where(has, k, 0), dtype="Int64")
        frame.loc[~has, "k"] = pd.NA
    else:
        frame["k"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    for col in ("drafts", "draft_tokens", "accepted", "interval_s", *_CONTEXT_COLUMNS):
        if col not in frame.columns:
            frame[col] = np.nan
        frame[col] = frame[col].astype("float64")
    frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True).dt.as_unit("ns")
    frame["class"] = frame["class"].astype("str")
    extra = [c for c in frame.columns if c not in (*COUNTER_COLUMNS, *pos, *_CONTEXT_COLUMNS)]
    frame = frame[[*COUNTER_COLUMNS, *pos, *_CONTEXT_COLUMNS, *extra]]
    return frame.sort_values(["class", "time"], kind="stable").reset_index(drop=True)


# -- Prometheus ------------------------------------------------------------------------------


def range_queries(
    classes: ClassConfig,
    rate_window: float,
    *,
    selector: Sequence[Matcher] = (),
    context: bool = True,
) -> dict[str, str]:
    """Column -> PromQL: per-class increases over ``rate_window`` at every step (per-position
    also ``by position``), summed by the server after its per-series ``increase()``."""
    by = ", ".join(classes.by_labels())
    window = format_duration(rate_window)
    out: dict[str, str] = {}
    for fld, name in COUNTER_METRICS.items():
        by_f = f"{by}, position" if fld == "accepted_per_position" else by
        sel = metric_selector(name, (*selector, _V1_ONLY))
        out[fld] = f"sum by ({by_f}) (increase({sel}[{window}]))"
    # how many engines of each class export how many positions (their k) at each step
    sel = metric_selector(COUNTER_METRICS["accepted_per_position"], (*selector, _V1_ONLY))
    out["engine_k"] = (
        f'count_values by ({by}) ("{_K_LABEL}", '
        f"count without (position) (increase({sel}[{window}])))"
    )
    if context:
        for fld, name in _CONTEXT_METRICS.items():
            sel = metric_selector(name, selector)
            out[fld] = f"sum by ({by}) (increase({sel}[{window}]))"
        out["running_requests"] = (
            f"sum by ({by}) ({metric_selector('num_requests_running', selector)})"
        )
    return out


def prometheus_counters(
    client: PrometheusClient,
    start: float,
    end: float,
    *,
    step: float,
    classes: ClassConfig | None = None,
    selector: Sequence[Matcher] = (),
    rate_window: float | None = None,
    context: bool = True,
    max_points: int = MAX_POINTS,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """A counters frame of per-class increases over ``rate_window`` (default
    max(step, 5 min)) every ``step`` seconds over [start, end] (Unix seconds).

    Fetched one step-aligned chunk of at most ``max_points`` points at a time (``progress``
    is called after each), each answer parsed column by column; memory follows the frame.
    ``context`` adds the load and latency families (generation tokens, inter-token latency,
    running requests). ``frame.attrs`` holds ``step``, ``rate_window``, ``requests``, the
    server's ``warnings`` and ``partial`` (some stores did not answer: counts may be low).
    """
    classes = classes or ClassConfig()
    rw = rate_window if rate_window is not None else max(step, 300.0)
    queries = range_queries(classes, rw, selector=selector, context=context)
    chunks = aligned_chunks(start, end, step, max_points=max_points)
    parts: list[pd.DataFrame] = []
    warnings: list[str] = []
    partial = False
    sent = client.requests_sent
    for n, (c0, c1) in enumerate(chunks, 1):
        size = round((c1 - c0) / step) + 1
        grid = c0 + step * np.arange(size)
        sums: dict[str, dict[str, np.ndarray]] = {}
        seen: dict[str, dict[str, np.ndarray]] = {}
        for fld, q in queries.items():
            res = client.query_range_columns(q, start=c0, end=c1, step=step, max_points=max_points)
            warnings.extend(res.warnings)
            partial = partial or res.partial
            for s in res.series:
                col = fld
                labels = s.labels
                if fld == "accepted_per_position":
                    pos = labels.get("position", "")
                    if not pos.isdigit():
                        continue
                    col = f"accepted_pos_{int(pos)}"
                elif fld == "engine_k":
                    col = f"_k{labels.get(_K_LABEL, '')}"
                    labels = {key: v for key, v in labels.items() if key != _K_LABEL}
                name = class_name(classes.classify(labels))
                idx = np.rint((s.times - c0) / step).astype(np.intp)
                ok = (idx >= 0) & (idx < size) & np.isfinite(s.values)
                acc = sums.setdefault(name, {}).setdefault(col, np.zeros(size))
                acc += np.bincount(idx[ok], weights=s.values[ok], minlength=size)
                mark = seen.setdefault(name, {}).setdefault(col, np.zeros(size, dtype=bool))
                mark[idx[ok]] = True
        for name, cols in sums.items():
            rows = seen[name].get("draft_tokens")
            if rows is None or not rows.any():
                continue
            sel = np.flatnonzero(rows)
            data: dict[str, object] = {"time": grid[sel], "class": name, "interval_s": rw}
            ks = np.zeros(len(sel), dtype=int)
            for col, arr in cols.items():
                if col.startswith("_k"):  # one engine-k value seen at these steps
                    ks += seen[name][col][sel]
                    continue
                v = arr[sel]
                v[~seen[name][col][sel]] = np.nan
                data[col] = v
            data["mixed_k"] = ks > 1
            parts.append(pd.DataFrame(data))
        if progress is not None:
            progress(n, len(chunks), f"{_iso(c0)}..{_iso(c1)}")
    frame = _finish(pd.concat(parts, ignore_index=True) if parts else pd.DataFrame())
    frame.attrs.update(
        source=client.base_url,
        step=step,
        rate_window=rw,
        requests=client.requests_sent - sent,
        warnings=list(dict.fromkeys(warnings)),
        partial=partial,
    )
    return frame


def _iso(t: float) -> str:
    return pd.Timestamp(t, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def load_prometheus(
    url: str,
    window: str,
    *,
    step: str | float = "auto",
    rate_window: str | float | None = None,
    classes: ClassConfig | None = None,
    session: requests.Session | None = None,
    timeout: float = 60.0,
    now: float | None = None,
) -> pd.DataFrame:
    """Counters and estimates of a range, for a notebook: ``load_prometheus(url, "-7d..now")``.

    ``window`` is ``START..END`` as ``specwise report`` reads it; ``step`` ``auto`` (about
    1500 points, at least 15 s), seconds or a duration (``1m``).
    """
    import time as _time

    from specwise.config import parse_duration
    from specwise.reporting.windows import auto_step, parse_range

    rng = parse_range(window, now=_time.time() if now is None else now)
    if step == "auto":
        st = auto_step(rng)
    elif isinstance(step, str):
        st = parse_duration(step, field="step")
    else:
        st = float(step)
    rw = (
        parse_duration(rate_window, field="rate_window")
        if isinstance(rate_window, str)
        else (rate_window)
    )
    own = session is None
    sess = session if session is not None else requests.Session()
    try:
        client = PrometheusClient(url, session=sess, timeout=timeout)
        counters = prometheus_counters(
            client, rng.start, rng.end, step=st, classes=classes, rate_window=rw
        )
    finally:
        if own:
            sess.close()
    return with_estimates(counters)


# -- captures and logs -----------------------------------------------------------------------


def _zero(s: Snapshot) -> Snapshot:
    def z(v: float | None) -> float | None:
        return None if v is None else 0.0

    return replace(
        s,
        drafts=z(s.drafts),
        draft_tokens=0.0,
        accepted=0.0,
        accepted_per_position=tuple(0.0 for _ in s.accepted_per_position),
        generation_tokens=z(s.generation_tokens),
        itl_seconds_sum=z(s.itl_seconds_sum),
        itl_seconds_count=z(s.itl_seconds_count),
    )


def snapshot_counters(
    snapshots: Iterable[Snapshot],
    *,
    classes: ClassConfig | None = None,
    from_zero: bool = False,
) -> pd.DataFrame:
    """A counters frame from cumulative Snapshots (captures, log lines, scrapes): one row per
    class at each snapshot time, holding what its series gained since the previous time
    (resets, new processes and k changes restart a series' count). A series' first snapshot
    has no baseline and starts the count, unless ``from_zero`` (log lines: the sums start at
    0, so the first line counts its own interval)."""
    classes = classes or ClassConfig()
    by_time: dict[float, list[Snapshot]] = {}
    for s in snapshots:
        by_time.setdefault(s.timestamp, []).append(s)
    state: dict[tuple[tuple[str, str], ...], Snapshot] = {}
    rows: list[dict[str, object]] = []
    last: float | None = None
    for t in sorted(by_time):
        prev = dict(state)
        for s in by_time[t]:
            state[s.key] = s
            if from_zero and s.key not in prev:
                prev[s.key] = _zero(s)
        if not prev:
            last = t
            continue
        current = [state[key] for key in state if key in prev]
        for d in sum_by_class(window_deltas(list(prev.values()), current), classes):
            if not d.spec_families:
                continue  # engines without speculation: no spec-decode counters to show
            row: dict[str, object] = {
                "time": t,
                "class": class_name(d.labels),
                "interval_s": math.nan if last is None else t - last,
                "drafts": np.nan if d.drafts is None else d.drafts,
                "draft_tokens": d.draft_tokens,
                "accepted": d.accepted,
                "generation_tokens": _nan(d.generation_tokens),
                "itl_seconds_sum": _nan(d.itl_seconds_sum),
                "itl_seconds_count": _nan(d.itl_seconds_count),
                "running_requests": _nan(d.running_requests),
                "restarts": d.restarts,
                "series": d.series,
            }
            for i, v in enumerate(d.accepted_per_position):
                row[f"accepted_pos_{i}"] = v
            rows.append(row)
        last = t
    frame = _finish(pd.DataFrame(rows))
    if "restarts" in frame.columns:
        frame["restarts"] = frame["restarts"].astype("int64")
        frame["series"] = frame["series"].astype("int64")
    return frame


def _nan(v: float | None) -> float:
    return math.nan if v is None else v


def capture_counters(
    paths: Sequence[Path],
    *,
    times: Sequence[float] | None = None,
    classes: ClassConfig | None = None,
    instance: str = "capture",
) -> pd.DataFrame:
    """A counters frame from successive ``/metrics`` captures of the same servers, taken at
    ``times`` (Unix seconds; default: each file's modification time). Every capture's series
    get ``instance`` so the same series match from file to file."""
    if times is not None and len(times) != len(paths):
        raise DataError(f"{len(paths)} captures but {len(times)} times; give one time per capture")
    stamps = list(times) if times is not None else [_mtime(p) for p in paths]
    if len(set(stamps)) < len(stamps):
        raise DataError(
            "two captures have the same time (e.g. files copied together); pass the time "
            "each was taken"
        )
    snaps: list[Snapshot] = []
    for p, t in zip(paths, stamps, strict=True):
        snaps.extend(FileSource(Path(p), instance=instance).collect(t))
    return snapshot_counters(snaps, classes=classes)


def _mtime(path: Path) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError as exc:
        raise SourceError(
            f"Cannot read {path} ({exc.strerror or exc}); check the path.", url=str(path)
        ) from exc


def log_counters(
    path: Path,
    *,
    year: int,
    tz: tzinfo = UTC,
    classes: ClassConfig | None = None,
) -> pd.DataFrame:
    """A counters frame from a vLLM log: one row per class at each ``SpecDecoding metrics``
    line (log times carry no year and no zone: both are parameters)."""
    try:
        with Path(path).open(encoding="utf-8", errors="replace") as fh:
            snaps = log_snapshots(fh, year=year, tz=tz, source=str(path))
    except OSError as exc:
        raise SourceError(
            f"Cannot read log file {path} ({exc.strerror or exc}); check the path.", url=str(path)
        ) from exc
    return snapshot_counters(snaps, classes=classes, from_zero=True)


# -- estimates -------------------------------------------------------------------------------


def _alpha_rows(
    drafts: np.ndarray, tokens: np.ndarray, accepted: np.ndarray, per_pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alpha, successes, failures) per row for one k (columns of ``per_pos`` = rows, rows
    of it = positions), as the estimator's :func:`alpha_trials` gives them: the positions MLE
    for full-length drafts (column-wise), its short-draft estimator where drafts averaged
    fewer than k tokens (row by row); NaN without a verified draft."""
    k = per_pos.shape[0]
    n = drafts.shape[0]
    alpha, succ, fail = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    stopped = np.maximum(0.0, drafts - per_pos[-1])
    r = np.maximum(0.0, np.minimum(stopped, tokens - accepted))
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = accepted / (accepted + r)
    ok = (drafts >= 1.0) & np.isfinite(raw)
    alpha[ok], succ[ok], fail[ok] = raw[ok], accepted[ok], r[ok]
    short = ok & (k * drafts - tokens > 1e-9 * np.maximum(1.0, k * drafts))
    for i in np.flatnonzero(short):
        trials = alpha_trials(
            WindowCounts(
                drafts=float(drafts[i]),
                draft_tokens=float(tokens[i]),
                accepted=float(accepted[i]),
                accepted_per_position=tuple(float(x) for x in per_pos[:, i]),
                k=k,
            )
        )
        if trials is not None and trials[0] + trials[1] > 0:
            succ[i], fail[i] = trials[0], trials[1]
            alpha[i] = trials[0] / (trials[0] + trials[1])
    return alpha, succ, fail


def with_estimates(
    counters: pd.DataFrame, *, level: float = 0.95, prior: tuple[float, float] = (0.5, 0.5)
) -> pd.DataFrame:
    """A copy of a counters frame with ``alpha``, ``alpha_low``, ``alpha_high`` (the
    estimator's: a ``level`` Beta credible interval with ``prior`` on its trials),
    ``mean_acceptance_length`` and ``acceptance_rate`` per row (NaN where a row has no
    verified draft or no per-position counters)."""
    out = counters.copy()
    n = len(out)
    alpha, low, high = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    pos = position_columns(out)
    if n and pos:
        d = out["drafts"].to_numpy(dtype=float)
        t = out["draft_tokens"].to_numpy(dtype=float)
        a = out["accepted"].to_numpy(dtype=float)
        k = out["k"].to_numpy(dtype=float, na_value=0.0).astype(int)
        values = out[pos].to_numpy(dtype=float)
        tail = (1.0 - level) / 2.0
        for kk in np.unique(k[k > 0]):
            rows = np.flatnonzero(k == kk)
            al, succ, fail = _alpha_rows(d[rows], t[rows], a[rows], values[rows, :kk].T)
            alpha[rows] = al
            fin = np.isfinite(al)
            sel = rows[fin]
            low[sel] = special.betaincinv(succ[fin] + prior[0], fail[fin] + prior[1], tail)
            high[sel] = special.betaincinv(succ[fin] + prior[0], fail[fin] + prior[1], 1 - tail)
    out["alpha"] = alpha
    out["alpha_low"] = low
    out["alpha_high"] = high
    with np.errstate(invalid="ignore", divide="ignore"):
        d = out["drafts"].to_numpy(dtype=float) if n else np.empty(0)
        out["mean_acceptance_length"] = np.where(
            d > 0, 1.0 + out["accepted"].to_numpy(dtype=float) / d, np.nan
        )
        t = out["draft_tokens"].to_numpy(dtype=float) if n else np.empty(0)
        out["acceptance_rate"] = np.where(t > 0, out["accepted"].to_numpy(dtype=float) / t, np.nan)
    return out


def survival_frame(counters: pd.DataFrame) -> pd.DataFrame:
    """Per-position survival, long form: one row per class, time and position (1-based, up to
    the row's k) with ``accepted`` (drafts reaching it), ``survival`` (accepted / drafts) and
    ``conditional`` (accepted / accepted at the position before; drafts for position 1)."""
    pos = position_columns(counters)
    cols = ["time", "class", "k", "position", "accepted", "survival", "conditional"]
    if counters.empty or not pos:
        empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
        empty["time"] = pd.Series(dtype="datetime64[ns, UTC]")
        empty["class"] = pd.Series(dtype="str")
        empty["k"] = pd.Series(dtype="Int64")
        empty["position"] = pd.Series(dtype="int64")
        return empty
    long = counters[["time", "class", "k", "drafts", *pos]].melt(
        id_vars=["time", "class", "k", "drafts"],
        value_vars=pos,
        var_name="position",
        value_name="accepted",
    )
    long["position"] = long["position"].str.removeprefix("accepted_pos_").astype("int64") + 1
    long = long[long["position"] <= long["k"].fillna(0)]
    long = long.sort_values(["class", "time", "position"], kind="stable").reset_index(drop=True)
    prev = long.groupby(["class", "time"], sort=False)["accepted"].shift(1)
    reached = prev.where(long["position"] > 1, long["drafts"])
    drafts = long["drafts"].to_numpy(dtype=float)
    acc = long["accepted"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        long["survival"] = np.where(drafts > 0, acc / drafts, np.nan)
        r = reached.to_numpy(dtype=float)
        long["conditional"] = np.where(r > 0, acc / r, np.nan)
    return long[cols]


# -- files -----------------------------------------------------------------------------------

#: How times are written to CSV (RFC 3339, UTC; sub-second steps keep their fraction).
CSV_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def check_output(path: Path) -> str:
    """The format of an output file from its suffix (``.csv``/``.parquet``), checked before
    any work: a ReportError names a bad suffix, or pyarrow missing for Parquet."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ReportError(
            f"output file {str(path)!r} has neither a .csv nor a .parquet suffix; name it "
            "e.g. series.csv or series.parquet"
        )
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ReportError(
            f"writing {str(path)!r} as Parquet needs pyarrow; pip install "
            "specwise[parquet], or write .csv"
        )
    return suffix


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    """Write a frame to ``path`` by its suffix: ``.csv`` (RFC 3339 UTC times) or ``.parquet``
    (needs pyarrow: ``pip install specwise[parquet]``). Written to a temporary file first and
    renamed, so a failed write leaves no partial file."""
    path = Path(path)
    suffix = check_output(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if suffix == ".csv":
            whole = frame["time"].dt.microsecond.eq(0).all() if "time" in frame else True
            fmt = "%Y-%m-%dT%H:%M:%SZ" if whole else CSV_DATE_FORMAT
            frame.to_csv(tmp, index=False, date_format=fmt)
        else:
            frame.to_parquet(tmp, index=False)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReportError(
            f"cannot write {str(path)!r} ({exc.strerror or exc}); check the folder exists and "
            "is writable"
        ) from exc
    return path
