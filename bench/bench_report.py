"""Benchmark: the report's range fetch from a real Prometheus, point by point vs column-wise.

Backfills (promtool, from a file written as a stream) a before and an after window of
``--days`` days each at 15 s for ``--classes`` classes (one engine each, k = 2) and starts
Prometheus 2.42 on it. Then, in one run:

1. parsing: the report's range queries at 15 s steps are fetched once (step-aligned chunks
   of <= 11,000 points) and their response bodies kept; the old point-by-point parse
   (``json.loads``, a tuple per point, merged per series, then ``np.asarray``) and the
   column-wise parse (``parse_matrix_columns``) are timed on the same bodies, so the
   server's time is out of the ratio, and their peak traced memory is compared with the
   response bytes (targets: >= 5x faster, peak <= the response bytes);
2. end to end at 15 s steps: the old ``alpha_over_time`` against the frames
   (``prometheus_counters`` + ``with_estimates``), server time included.

    .venv/bin/python bench/bench_report.py --days 3 --classes 4   # minutes, a few GB free
    .venv/bin/python bench/bench_report.py                        # 30 + 30 days x 20 classes
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from specwise.collectors.classes import ClassConfig
from specwise.collectors.matrix import parse_matrix_columns
from specwise.collectors.prometheus import (
    PrometheusClient,
    PrometheusSource,
    aligned_chunks,
)
from specwise.collectors.snapshot import labels_key
from specwise.reporting.frames import (
    class_name,
    prometheus_counters,
    range_queries,
    with_estimates,
)
from specwise.reporting.windows import TimeRange
from tests import servers

STEP = 15.0
K = 2


def write_history(path: Path, *, days: float, classes: int, t0: float, seed: int = 1) -> int:
    """OpenMetrics for promtool, series by series (sorted), alpha 0.6 then 0.7; samples."""
    rng = np.random.default_rng(seed)
    n = int(2 * days * 86400 / STEP) + 1
    times = t0 + STEP * np.arange(n)
    mid = t0 + days * 86400
    written = 0
    with path.open("w") as fh:
        for c in range(classes):
            alpha = np.where(times <= mid, 0.6, 0.7) + 0.01 * (c % 5)
            pvals = np.stack([1 - alpha, alpha * (1 - alpha), alpha**2], axis=1)
            counts = rng.multinomial(20, pvals)
            counts[0] = 0
            drafts = np.full(n, 20.0)
            drafts[0] = 0.0
            acc = (counts * np.arange(K + 1)).sum(axis=1)
            cols = {
                "vllm:spec_decode_num_drafts_total": np.cumsum(drafts),
                "vllm:spec_decode_num_draft_tokens_total": np.cumsum(K * drafts),
                "vllm:spec_decode_num_accepted_tokens_total": np.cumsum(acc),
            }
            lab = f'engine="0",instance="c{c}:8000",job="vllm",model_name="class{c:02d}"'
            heads = {name: f"{name}{{{lab}}}" for name in cols}
            for j in range(K):
                name = "vllm:spec_decode_num_accepted_tokens_per_pos_total"
                heads[f"{name}{j}"] = f'{name}{{{lab},position="{j}"}}'
                cols[f"{name}{j}"] = np.cumsum(counts[:, j + 1 :].sum(axis=1))
            ts = [f"{t:.0f}" for t in times]
            for key, values in cols.items():
                head = heads[key]
                fh.writelines(f"{head} {v:.0f} {t}\n" for v, t in zip(values, ts, strict=True))
                written += n
        fh.write("# EOF\n")
    return written


def capture(
    client: PrometheusClient, windows: list[TimeRange], step: float
) -> list[tuple[str, bytes]]:
    """The report's range queries over both windows, chunked: (query, response body)."""
    queries = range_queries(ClassConfig(), max(step, 300.0), context=False)
    bodies = []
    for w in windows:
        for c0, c1 in aligned_chunks(w.start, w.end, step):
            for q in queries.values():
                params = {"query": q, "start": f"{c0:.3f}", "end": f"{c1:.3f}",
                          "step": repr(float(step))}  # fmt: skip
                bodies.append((q, client._post_raw("/api/v1/query_range", params, q)))
    return bodies


def parse_points(client: PrometheusClient, bodies: list[tuple[str, bytes]]) -> list[Any]:
    """The old path per chunk: json.loads, a PromSeries of tuples per series, query_range's
    per-series merge and sort, then the array alpha_over_time built from the points."""
    out = []
    for q, body in bodies:
        res = client._parse(json.loads(body), q)
        merged: dict[Any, dict[float, float]] = defaultdict(dict)
        for s in res.series:
            merged[labels_key(s.labels)].update(s.points)
        for key in sorted(merged):
            out.append(np.asarray(tuple(sorted(merged[key].items())), dtype=float))
    return out


def old_alpha_over_time(
    source: PrometheusSource, window: TimeRange, *, step: float
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The report's alpha over time before the frames (0.1): point-by-point range queries,
    summed per class into per-chunk arrays, k fixed per chunk (its per-point short-draft
    correction left out: the drafts here are full). Kept here as the baseline."""
    queries = range_queries(source.classes, max(step, 300.0), context=False)
    out: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for c0, c1 in aligned_chunks(window.start, window.end, step):
        size = round((c1 - c0) / step) + 1
        fields: dict[str, dict[str, np.ndarray]] = {}
        per_pos: dict[str, dict[int, np.ndarray]] = {}
        for fld, q in queries.items():
            res = source.client.query_range(q, start=c0, end=c1, step=step)
            for s in res.series:
                name = class_name(source.classes.classify(s.labels))
                if not s.points:
                    continue
                pts = np.asarray(s.points, dtype=float)
                idx = np.rint((pts[:, 0] - c0) / step).astype(int)
                keep = (idx >= 0) & (idx < size) & np.isfinite(pts[:, 1])
                if fld == "accepted_per_position":
                    pos = s.labels.get("position", "")
                    if not pos.isdigit():
                        continue
                    arr = per_pos.setdefault(name, {}).setdefault(int(pos), np.zeros(size))
                else:
                    arr = fields.setdefault(name, {}).setdefault(fld, np.zeros(size))
                np.add.at(arr, idx[keep], pts[keep, 1])
        for name, f in fields.items():
            if "drafts" not in f or name not in per_pos:
                continue
            pp = per_pos[name]
            stack = np.vstack([pp.get(i, np.zeros(size)) for i in range(max(pp) + 1)])
            d, t, a = f["drafts"], f.get("draft_tokens", np.zeros(size)), f["accepted"]
            r = np.maximum(0.0, np.minimum(np.maximum(0.0, d - stack[-1]), t - a))
            with np.errstate(invalid="ignore", divide="ignore"):
                alpha = np.where(d >= 1, a / (a + r), np.nan)
            times, alphas = out.setdefault(name, ([], []))
            times.append(c0 + step * np.arange(size))
            alphas.append(alpha)
    return {n: (np.concatenate(t), np.concatenate(a)) for n, (t, a) in out.items()}


def parse_columns(bodies: list[tuple[str, bytes]]) -> list[Any]:
    """The frame path: each body straight into float64 columns."""
    return [parse_matrix_columns(body, query=q) for q, body in bodies]


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(best seconds of ``repeat`` untraced runs, peak traced MiB of one more run): tracing
    slows allocation-heavy code several-fold, so time and memory are separate runs."""
    best = math.inf
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
        del result
    gc.collect()
    tracemalloc.start()
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    del result
    return best, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=30.0, help="days per window (default 30)")
    ap.add_argument("--classes", type=int, default=20, help="classes (default 20)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per parser (default 3)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        t0 = math.floor((time.time() - 2 * args.days * 86400 - 7200) / 86400) * 86400.0
        mid, end = t0 + args.days * 86400, t0 + 2 * args.days * 86400
        t = time.perf_counter()
        samples = write_history(work / "in.om", days=args.days, classes=args.classes, t0=t0)
        gen = time.perf_counter() - t
        t = time.perf_counter()
        blocks = servers.backfill_openmetrics_file(
            work / "in.om", work / "blocks", max_block_duration="744h", timeout=3600
        )
        (work / "in.om").unlink()
        fill = time.perf_counter() - t
        print(f"history: {samples:,} samples ({args.classes} classes x 2 x {args.days:g} days "
              f"at 15 s), streamed to a file in {gen:.1f} s, promtool {fill:.1f} s")  # fmt: skip
        prom = servers.start_prometheus(work / "prom", blocks=blocks, ready_timeout=120)
        try:
            with requests.Session() as session:
                client = PrometheusClient(prom.base_url, session=session, timeout=600)
                windows = [TimeRange(t0, mid), TimeRange(mid, end)]
                bodies = capture(client, windows, STEP)
                size = sum(len(b) for _, b in bodies) / 2**20
                points = sum(s.times.size for r in parse_columns(bodies) for s in r.series)
                print(f"responses: {len(bodies)} bodies, {size:.1f} MiB, {points:,} points "
                      "(15 s steps, both windows)")  # fmt: skip
                old_s, old_peak = timed(lambda: parse_points(client, bodies), args.repeat)
                new_s, new_peak = timed(lambda: parse_columns(bodies), args.repeat)
                print(f"parse, point by point: {old_s:7.3f} s  {1e6 * old_s / points:6.2f} us/point"
                      f"  peak {old_peak:7.2f} MiB traced")  # fmt: skip
                print(f"parse, column-wise:    {new_s:7.3f} s  {1e6 * new_s / points:6.2f} us/point"
                      f"  peak {new_peak:7.2f} MiB traced")  # fmt: skip
                ratio = old_s / new_s
                print(f"parse speedup {ratio:.1f}x (target >= 5x: "
                      f"{'met' if ratio >= 5 else 'NOT met'}); column-wise peak "
                      f"{new_peak:.2f} MiB vs {size:.2f} MiB of responses (target <=: "
                      f"{'met' if new_peak <= size else 'NOT met'}); point-by-point peak is "
                      f"{old_peak / size:.1f}x the responses")  # fmt: skip
                bodies.clear()
                source = PrometheusSource(client)
                for label, fetch in (
                    ("end to end, old alpha_over_time", lambda w: old_alpha_over_time(
                        source, w, step=STEP)),
                    ("end to end, frames", lambda w: with_estimates(prometheus_counters(
                        client, w.start, w.end, step=STEP, context=False))),
                ):  # fmt: skip
                    secs, peak = timed(lambda f=fetch: [f(w) for w in windows], 1)
                    print(f"{label:34s} {secs:7.2f} s  peak {peak:7.1f} MiB traced "
                          "(server time included)")  # fmt: skip
        finally:
            prom.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
