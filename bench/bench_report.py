"""Benchmark: ``specwise report`` data fetch from a real Prometheus over long windows.

Backfills (promtool) a before and an after window of ``--days`` days each at 15 s for
``--classes`` classes (one engine each, k = 2), starts Prometheus 2.42 on it, then times the
report's fetch path (window totals + alpha over time in step-aligned chunks of <= 11,000
points) at 15 s and at the auto step, with peak memory, against the same data fetched through
a naive single unsplit range request per query (the baseline; it fails beyond 11,000 points).

    .venv/bin/python bench/bench_report.py                  # the issue's 30 + 30 days, 20 classes
    .venv/bin/python bench/bench_report.py --days 2          # a quick run
"""

from __future__ import annotations

import argparse
import math
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from specwise.collectors.prometheus import PrometheusClient, PrometheusSource
from specwise.errors import SpecwiseError
from specwise.reporting.report import TimeRange, alpha_over_time, auto_step, prometheus_window
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


def measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(seconds, peak traced MiB, result) of ``fn()``: timed without tracing (tracemalloc
    slows allocation-heavy JSON parsing several-fold), then run again traced for the peak."""
    t = time.perf_counter()
    try:
        result = fn()
    except SpecwiseError as exc:
        return time.perf_counter() - t, math.nan, exc
    elapsed = time.perf_counter() - t
    del result
    tracemalloc.start()
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return elapsed, peak, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=30.0, help="days per window (default 30)")
    ap.add_argument("--classes", type=int, default=20, help="classes (default 20)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        t0 = math.floor((time.time() - 2 * args.days * 86400 - 7200) / 86400) * 86400.0
        mid, end = t0 + args.days * 86400, t0 + 2 * args.days * 86400
        t = time.perf_counter()
        samples = write_history(work / "in.om", days=args.days, classes=args.classes, t0=t0)
        gen = time.perf_counter() - t
        t = time.perf_counter()
        blocks = servers.backfill_openmetrics(
            (work / "in.om").read_text(), work / "blocks", workdir=work / "bf",
            max_block_duration="744h", timeout=3600,
        )  # fmt: skip
        (work / "in.om").unlink()
        fill = time.perf_counter() - t
        print(f"history: {samples:,} samples ({args.classes} classes x 2 x {args.days:g} days "
              f"at 15 s), generated in {gen:.1f} s, promtool {fill:.1f} s")  # fmt: skip
        prom = servers.start_prometheus(work / "prom", blocks=blocks, ready_timeout=120)
        try:
            with requests.Session() as session:
                client = PrometheusClient(prom.base_url, session=session, timeout=600)
                source = PrometheusSource(client)
                windows = [TimeRange(t0, mid), TimeRange(mid, end)]
                for label, step, max_points in (
                    ("report path, 15 s steps, chunked", STEP, 11_000),
                    ("naive single request, 15 s steps", STEP, 10**9),
                    ("report path, auto step, chunked", None, 11_000),
                    ("naive single request, auto step", None, 10**9),
                ):
                    sent = client.requests_sent

                    def fetch(step: float | None = step, mp: int = max_points) -> Any:
                        out = []
                        for w in windows:
                            out.append(prometheus_window(source, w))
                            st = step if step is not None else auto_step(w)
                            out.append(alpha_over_time(source, w, step=st, max_points=mp))
                        return out

                    secs, peak, result = measure(fetch)
                    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                    if isinstance(result, SpecwiseError):
                        print(f"{label:38s} FAILED after {secs:6.2f} s: {str(result)[:150]}")
                        continue
                    points = sum(len(s.times) for r in result[1::2] for s in r.values())
                    print(f"{label:38s} {secs:7.2f} s  peak {peak:7.1f} MiB traced "
                          f"(process max RSS {rss:.0f} MiB)  {client.requests_sent - sent} "
                          f"requests  {points:,} alpha points")  # fmt: skip
        finally:
            prom.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
