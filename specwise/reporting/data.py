"""The frames behind a before/after report, as tidy pandas DataFrames and ``data/*.csv``.

``specwise report`` writes them next to ``report.md`` so its numbers can be taken further (a
notebook, a spreadsheet):

- ``data/classes.csv``: one row per class and window: the window's counters, alpha with its
  interval, mean acceptance length, the deployed and optimal k, the predicted speedups, the
  measured inter-token latency and the verdict;
- ``data/survival.csv``: one row per class, window and position: survival and conditional
  acceptance with their intervals;
- ``data/series-before.csv``, ``data/series-after.csv``: the per-class series over each
  window (for Prometheus the counters frame of :mod:`specwise.reporting.frames`, with alpha
  and its interval per step; for a log, alpha per line).

Parquet copies (``*.parquet``) are written too when pyarrow is installed
(``pip install specwise[parquet]``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from specwise.reporting.frames import write_frame
from specwise.reporting.report import Report, WindowClass, WindowInfo

__all__ = ["DATA_DIR", "report_frames", "write_report_data"]

#: The report folder's subfolder for the data files.
DATA_DIR = "data"


def _utc(t: float | None) -> pd.Timestamp | None:
    return None if t is None else pd.Timestamp(t, unit="s", tz="UTC").as_unit("ns")


def _class_row(
    name: str, window: str, info: WindowInfo, w: WindowClass | None, verdict: str
) -> dict[str, object]:
    row: dict[str, object] = {
        "class": name,
        "window": window,
        "start": _utc(info.start),
        "end": _utc(info.end),
        "present": w is not None,
    }
    if w is not None:
        e, d, lat = w.estimate, w.delta, w.latency
        row.update(
            method=e.method,
            deployed_k=w.deployed_k,
            drafts=d.drafts,
            draft_tokens=d.draft_tokens,
            accepted=d.accepted,
            series=d.series,
            restarts=d.restarts,
            alpha=e.alpha,
            alpha_low=e.alpha_low,
            alpha_high=e.alpha_high,
            mean_acceptance_length=e.mean_acceptance_length,
            acceptance_rate=e.acceptance_rate,
            shortfall=e.shortfall,
            cost=w.cost,
            optimal_k=w.optimal_k,
            speedup_deployed=w.speedup_deployed,
            speedup_optimal=w.speedup_optimal,
            itl_seconds=None if lat is None else lat.itl_seconds,
            seconds_per_token=None if lat is None else lat.seconds_per_token,
        )
    row["verdict"] = verdict
    return row


_INT_COLUMNS = ("deployed_k", "optimal_k", "series", "restarts")
_FLOAT_COLUMNS = (
    "drafts", "draft_tokens", "accepted", "alpha", "alpha_low", "alpha_high",
    "mean_acceptance_length", "acceptance_rate", "shortfall", "cost", "speedup_deployed",
    "speedup_optimal", "itl_seconds", "seconds_per_token",
)  # fmt: skip


def _classes_frame(report: Report) -> pd.DataFrame:
    rows = []
    for c in report.classes:
        rows.append(_class_row(c.name, "before", report.before, c.before, c.verdict))
        rows.append(_class_row(c.name, "after", report.after, c.after, c.verdict))
    frame = pd.DataFrame(rows)
    for col in _INT_COLUMNS:
        if col not in frame.columns:
            frame[col] = pd.NA
        frame[col] = frame[col].astype("Int64")
    for col in _FLOAT_COLUMNS:
        if col not in frame.columns:
            frame[col] = np.nan
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    if "method" not in frame.columns:
        frame["method"] = None
    order = ["class", "window", "start", "end", "present", "method", *_INT_COLUMNS[:1]]
    rest = [c for c in frame.columns if c not in order and c != "verdict"]
    return frame[[*order, *rest, "verdict"]]


def _survival_frame(report: Report) -> pd.DataFrame:
    rows = []
    for c in report.classes:
        for window, w in (("before", c.before), ("after", c.after)):
            if w is None:
                continue
            cond = {p.position: p for p in w.estimate.conditional}
            for p in w.estimate.survival:
                q = cond.get(p.position)
                rows.append(
                    {
                        "class": c.name,
                        "window": window,
                        "position": p.position,
                        "survival": p.value,
                        "survival_low": p.low,
                        "survival_high": p.high,
                        "conditional": np.nan if q is None else q.value,
                        "conditional_low": np.nan if q is None else q.low,
                        "conditional_high": np.nan if q is None else q.high,
                    }
                )
    cols = ["class", "window", "position", "survival", "survival_low", "survival_high",
            "conditional", "conditional_low", "conditional_high"]  # fmt: skip
    frame = pd.DataFrame(rows, columns=cols)
    frame["position"] = frame["position"].astype("int64")
    return frame


def _series_frame(info: WindowInfo) -> pd.DataFrame:
    """Alpha per class and step from the window's AlphaSeries (when no frame was kept)."""
    parts = []
    for name, s in info.series.items():
        n = len(s.times)
        parts.append(
            pd.DataFrame(
                {
                    "time": pd.to_datetime(np.asarray(s.times, dtype=float), unit="s", utc=True),
                    "class": name,
                    "drafts": np.asarray(s.drafts, dtype=float) if s.drafts else np.full(n, np.nan),
                    "alpha": np.asarray(s.alphas, dtype=float),
                }
            )
        )
    if not parts:
        return pd.DataFrame(
            {
                "time": pd.Series(dtype="datetime64[ns, UTC]"),
                "class": pd.Series(dtype="str"),
                "drafts": pd.Series(dtype="float64"),
                "alpha": pd.Series(dtype="float64"),
            }
        )
    frame = pd.concat(parts, ignore_index=True)
    frame["time"] = frame["time"].dt.as_unit("ns")
    return frame


def report_frames(
    report: Report, *, series: Mapping[str, pd.DataFrame] | None = None
) -> dict[str, pd.DataFrame]:
    """The report's numbers as frames, by file stem: ``classes``, ``survival``,
    ``series-before``, ``series-after``: each window's per-step frame (``series``, by window
    label, else ``WindowInfo.frame``), or its AlphaSeries tabulated when it has none."""
    out = {"classes": _classes_frame(report), "survival": _survival_frame(report)}
    for label, info in (("before", report.before), ("after", report.after)):
        given = (series or {}).get(label)
        if given is None:
            given = info.frame if info.frame is not None else _series_frame(info)
        out[f"series-{label}"] = given
    return out


def write_report_data(
    report: Report, folder: Path, *, series: Mapping[str, pd.DataFrame] | None = None
) -> list[Path]:
    """Write :func:`report_frames` to ``folder/data/<stem>.csv`` (and ``.parquet`` when
    pyarrow is installed); returns the CSV paths, relative to ``folder``."""
    data = Path(folder) / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    parquet = importlib.util.find_spec("pyarrow") is not None
    written = []
    for stem, frame in report_frames(report, series=series).items():
        write_frame(frame, data / f"{stem}.csv")
        if parquet:
            write_frame(frame, data / f"{stem}.parquet")
        written.append(Path(DATA_DIR) / f"{stem}.csv")
    return written
