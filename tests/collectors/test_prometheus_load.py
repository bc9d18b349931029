"""The load and time families through a real Prometheus 2.42 (#14): per-class gains summed by
the server, engines with and without speculation apart, batch-size samples from one bounded
range query; exact against client-side deltas over the same backfilled samples, and live
against V1-format pages served over HTTP and scraped every second."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from specwise.collectors.classes import ClassConfig
from specwise.collectors.deltas import series_deltas, sum_by_class, window_deltas
from specwise.collectors.prom_load import (
    LOAD_ONLY_LABEL,
    MAX_BATCH_SAMPLES,
    batch_grid,
    cap_samples,
)
from specwise.collectors.prometheus import PrometheusClient, PrometheusSource
from specwise.collectors.snapshot import CounterDelta, Snapshot

try:
    from tests.servers import ManagedProcess, openmetrics_text, vm_import
except ImportError:
    from servers import ManagedProcess, openmetrics_text, vm_import  # type: ignore[no-redef]

STEP = 15.0
N_STEPS = 240  # 1 h of 15 s samples
RESTART_AT = 200  # the plain engine of "m" restarts (counters from 0) at this step
T0 = math.floor((time.time() - 6 * 3600) / 3600) * 3600.0
T_END = T0 + N_STEPS * STEP
WINDOW = 1800.0

#: per-step increments of each engine's load counters
SPEC_INC = {
    "generation_tokens": 28,
    "iteration_steps": 10,
    "iteration_tokens": 30,
    "itl_seconds_count": 10,
    "itl_seconds_sum": 0.25,
    "tpot_seconds_count": 1,
    "tpot_seconds_sum": 0.02,
    "decode_seconds_count": 1,
    "decode_seconds_sum": 0.3,
    "prefill_seconds_count": 1,
    "prefill_seconds_sum": 0.05,
    "inference_seconds_count": 1,
    "inference_seconds_sum": 0.35,
    "request_tokens_count": 1,
    "request_tokens_sum": 24,
}
PLAIN_INC = {
    "generation_tokens": 10,
    "iteration_steps": 10,
    "iteration_tokens": 12,
    "itl_seconds_count": 10,
    "itl_seconds_sum": 0.1,
    "tpot_seconds_count": 1,
    "tpot_seconds_sum": 0.01,
    "decode_seconds_count": 1,
    "decode_seconds_sum": 0.1,
}
#: an older vLLM: no TPOT / decode-time families
OLD_INC = {
    "generation_tokens": 5,
    "iteration_steps": 5,
    "iteration_tokens": 6,
    "itl_seconds_count": 5,
    "itl_seconds_sum": 0.05,
}
SAMPLE_NAMES = {
    "generation_tokens": "generation_tokens_total",
    "iteration_steps": "iteration_tokens_total_count",
    "iteration_tokens": "iteration_tokens_total_sum",
    "itl_seconds_count": "inter_token_latency_seconds_count",
    "itl_seconds_sum": "inter_token_latency_seconds_sum",
    "tpot_seconds_count": "request_time_per_output_token_seconds_count",
    "tpot_seconds_sum": "request_time_per_output_token_seconds_sum",
    "decode_seconds_count": "request_decode_time_seconds_count",
    "decode_seconds_sum": "request_decode_time_seconds_sum",
    "prefill_seconds_count": "request_prefill_time_seconds_count",
    "prefill_seconds_sum": "request_prefill_time_seconds_sum",
    "inference_seconds_count": "request_inference_time_seconds_count",
    "inference_seconds_sum": "request_inference_time_seconds_sum",
    "request_tokens_count": "request_generation_tokens_count",
    "request_tokens_sum": "request_generation_tokens_sum",
}


def _running_spec(i: int) -> float:
    return float(i % 7)


def _running_plain(i: int) -> float:
    return 3.0 + i % 2


def _running_old(i: int) -> float:
    return 1.0


# (prefix, labels, spec?, load increments, running(i), restart step)
ENGINES = [
    ("vllm:", {"engine": "0", "model_name": "m", "instance": "a:8000", "job": "vllm"}, True,
     SPEC_INC, _running_spec, None),
    ("vllm:", {"engine": "0", "model_name": "m", "instance": "b:8000", "job": "vllm"}, False,
     PLAIN_INC, _running_plain, RESTART_AT),
    ("vllm_", {"engine": "0", "model_name": "p", "instance": "c:8000", "job": "vllm"}, False,
     OLD_INC, _running_old, None),
]  # fmt: skip


def history() -> tuple[
    dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]], list[Snapshot]
]:
    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = {}
    snaps: list[Snapshot] = []

    def put(name: str, labels: dict[str, str], ts: float, v: float) -> None:
        series.setdefault((name, tuple(sorted(labels.items()))), []).append((ts, v))

    for prefix, labels, spec, inc, running, restart in ENGINES:
        for i in range(N_STEPS + 1):
            n = i - restart if restart is not None and i >= restart else i
            ts = T0 + i * STEP
            load = {f: n * v for f, v in inc.items()}
            for f, v in load.items():
                put(prefix + SAMPLE_NAMES[f], labels, ts, float(v))
            put(prefix + "num_requests_running", labels, ts, running(i))
            if spec:
                put(prefix + "spec_decode_num_drafts_total", labels, ts, 10.0 * n)
                put(prefix + "spec_decode_num_draft_tokens_total", labels, ts, 20.0 * n)
                put(prefix + "spec_decode_num_accepted_tokens_total", labels, ts, 8.0 * n)
                for pos, per in enumerate((5, 3)):
                    put(prefix + "spec_decode_num_accepted_tokens_per_pos_total",
                        {**labels, "position": str(pos)}, ts, float(per * n))  # fmt: skip
            snaps.append(
                Snapshot(
                    labels=labels,
                    timestamp=ts,
                    drafts=10.0 * n if spec else 0.0,
                    draft_tokens=20.0 * n if spec else 0.0,
                    accepted=8.0 * n if spec else 0.0,
                    accepted_per_position=(5.0 * n, 3.0 * n) if spec else (),
                    k=2 if spec else 0,
                    running_requests=running(i),
                    spec_families=spec,
                    **load,  # type: ignore[arg-type]
                )
            )
    return series, snaps


SERIES, SNAPSHOTS = history()


@pytest.fixture(scope="module")
def blocks(backfill: Callable[[str, str], Path]) -> Path:
    types = {
        **{
            f"vllm:spec_decode_{n}": "counter"
            for n in (
                "num_drafts",
                "num_draft_tokens",
                "num_accepted_tokens",
                "num_accepted_tokens_per_pos",
            )
        },
        "vllm:generation_tokens": "counter",
        "vllm:num_requests_running": "gauge",
    }
    return backfill(openmetrics_text(SERIES, types=types), "load-history")


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def _expected() -> dict[tuple[str, bool], CounterDelta]:
    window = [s for s in SNAPSHOTS if s.timestamp >= T_END - WINDOW]
    return {
        (d.labels["class"], d.spec_families): d
        for d in sum_by_class(series_deltas(window), ClassConfig())
    }


def _grid_samples(running: Callable[[int], float]) -> list[float]:
    start, end, step = batch_grid(T_END, WINDOW)
    n = round((end - start) / step) + 1
    return sorted(running(math.floor((start + j * step - T0) / STEP)) for j in range(n))


def test_server_side_load_gains_equal_client_deltas(
    start_prometheus: Callable[..., ManagedProcess], blocks: Path, session: requests.Session
) -> None:
    prom = start_prometheus(blocks=blocks)
    client = PrometheusClient(prom.base_url, session=session)
    src = PrometheusSource(client)
    got = {(d.labels["class"], d.spec_families): d for d in src.increase(T_END, WINDOW)}
    want = _expected()
    assert set(got) == set(want) == {("m", True), ("m", False), ("p", False)}
    fields = ("generation_tokens", "iteration_steps", "iteration_tokens", "itl_seconds_sum",
              "itl_seconds_count", "tpot_seconds_sum", "tpot_seconds_count",
              "decode_seconds_sum", "decode_seconds_count", "draft_tokens", "accepted",
              "inference_seconds_sum", "request_tokens_sum")  # fmt: skip
    for key, w in want.items():
        g = got[key]
        for f in fields:
            if getattr(w, f) is None:
                assert getattr(g, f) is None, (key, f)  # older vLLM: the family stays None
            else:
                assert getattr(g, f) == pytest.approx(getattr(w, f), rel=1e-9), (key, f)
    spec, plain, old = got[("m", True)], got[("m", False)], got[("p", False)]
    # the spec engine's gains only, not its class-mate's without speculation
    assert spec.generation_tokens == pytest.approx(28 * WINDOW / STEP)
    assert spec.k == 2
    assert spec.drafts == pytest.approx(10 * WINDOW / STEP)
    # the plain engine restarted inside the window: nothing lost, nothing doubled
    assert plain.iteration_steps == pytest.approx(10 * (WINDOW / STEP - 1))
    assert (plain.k, plain.drafts, plain.draft_tokens) == (0, 0, 0)
    assert plain.spec_families is False
    assert old.tpot_seconds_count is None
    # running gauges at the window's end, per part
    assert spec.running_requests == _running_spec(N_STEPS)
    assert plain.running_requests == _running_plain(N_STEPS)
    # batch samples: every step of the bounded range, per engine, pooled per class and part
    assert sorted(spec.batch_samples) == _grid_samples(_running_spec)
    assert sorted(plain.batch_samples) == _grid_samples(_running_plain)
    assert sorted(old.batch_samples) == _grid_samples(_running_old)
    assert len(spec.batch_samples) <= MAX_BATCH_SAMPLES
    # queries: the four spec counters, k per engine, one for every load family, one range
    before = client.requests_sent
    src.increase(T_END, WINDOW)
    assert client.requests_sent - before == 7


def test_collect_keeps_spec_and_load_only_totals_apart(
    start_prometheus: Callable[..., ManagedProcess], blocks: Path, session: requests.Session
) -> None:
    prom = start_prometheus(blocks=blocks)
    src = PrometheusSource(
        PrometheusClient(prom.base_url, session=session), initial_window_s=600, min_window_s=60
    )
    first = src.collect(T_END - 600)
    second = src.collect(T_END)
    keys = {s.key for s in second}
    assert len(keys) == len(second) == 3  # m spec, m load-only, p load-only
    load_only = [s for s in second if not s.spec_families]
    assert {s.labels["class"] for s in load_only} == {"m", "p"}
    assert all(s.labels[LOAD_ONLY_LABEL] == "true" for s in load_only)
    # what the controller does with them: deltas per total, then per class, apart
    out = sum_by_class(window_deltas(first, second), ClassConfig())
    by = {(d.labels["class"], d.spec_families): d for d in out}
    assert set(by) == {("m", True), ("m", False), ("p", False)}
    assert by[("m", True)].iteration_steps == pytest.approx(10 * 600 / STEP)
    assert by[("m", False)].iteration_steps == pytest.approx(10 * 600 / STEP)
    assert by[("m", True)].drafts == pytest.approx(10 * 600 / STEP)
    assert by[("m", False)].k == 0
    assert len(by[("m", True)].batch_samples) > 0
    assert set(by[("m", False)].batch_samples) <= {3.0, 4.0}


def test_cap_samples_keeps_the_distribution() -> None:
    assert cap_samples([(3.0, 2), (1.0, 1)]) == (1.0, 3.0, 3.0)
    assert cap_samples([(5.0, 0), (2.0, math.nan)]) == ()
    many = cap_samples([(1.0, 3000), (8.0, 1000)])
    assert len(many) == MAX_BATCH_SAMPLES
    assert many.count(1.0) == 180  # 3/4 of the pool
    assert many.count(8.0) == 60
    start, end, step = batch_grid(1_000_000.0, 86_400.0)
    assert (end - start) / step + 1 == MAX_BATCH_SAMPLES
    assert end <= 1_000_000.0
    assert end % step == 0


# -- live: V1 pages served over HTTP, scraped by Prometheus every second -------------------


class _Engine:
    """One vLLM engine's V1 page; every scrape advances its counters by one step."""

    def __init__(self, spec: bool) -> None:
        self.spec = spec
        self.n = 0
        self.lock = threading.Lock()

    def page(self) -> bytes:
        with self.lock:
            self.n += 1
            n = self.n
        lab = '{engine="0",model_name="live"}'
        inc = SPEC_INC if self.spec else PLAIN_INC
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{lab} {4.0 if self.spec else 2.0}",
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{lab} {n * inc['generation_tokens']:.1f}",
            "# HELP vllm:iteration_tokens_total Histogram of number of tokens per engine_step.",
            "# TYPE vllm:iteration_tokens_total histogram",
            f'vllm:iteration_tokens_total_bucket{{engine="0",le="+Inf",model_name="live"}} '
            f"{n * inc['iteration_steps']:.1f}",
            f"vllm:iteration_tokens_total_count{lab} {n * inc['iteration_steps']:.1f}",
            f"vllm:iteration_tokens_total_sum{lab} {n * inc['iteration_tokens']:.1f}",
            "# HELP vllm:inter_token_latency_seconds Histogram of inter-token latency in seconds.",
            "# TYPE vllm:inter_token_latency_seconds histogram",
            f"vllm:inter_token_latency_seconds_count{lab} {n * inc['itl_seconds_count']:.1f}",
            f"vllm:inter_token_latency_seconds_sum{lab} {n * inc['itl_seconds_sum']!r}",
        ]
        if self.spec:
            lines += [
                "# TYPE vllm:spec_decode_num_drafts_total counter",
                f"vllm:spec_decode_num_drafts_total{lab} {10.0 * n}",
                "# TYPE vllm:spec_decode_num_draft_tokens_total counter",
                f"vllm:spec_decode_num_draft_tokens_total{lab} {20.0 * n}",
                "# TYPE vllm:spec_decode_num_accepted_tokens_total counter",
                f"vllm:spec_decode_num_accepted_tokens_total{lab} {8.0 * n}",
                "# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter",
                f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="0",'
                f'model_name="live",position="0"}} {5.0 * n}',
                f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="0",'
                f'model_name="live",position="1"}} {3.0 * n}',
            ]
        return ("\n".join(lines) + "\n").encode()


def _serve(engine: _Engine) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = engine.page()
            self.send_response(200)
            # vLLM's /metrics never negotiates: classic text, colons kept
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_live_class_with_a_spec_and_a_plain_engine(
    start_prometheus: Callable[..., ManagedProcess], session: requests.Session
) -> None:
    """One model served by an engine with n-gram-like speculation and a replica without:
    the class gets a spec delta and a load-only delta, each with its own engine's numbers."""
    spec, plain = _Engine(spec=True), _Engine(spec=False)
    servers = [_serve(spec), _serve(plain)]
    try:
        targets = [f"127.0.0.1:{s.server_address[1]}" for s in servers]
        config = {
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{"job_name": "vllm", "static_configs": [{"targets": targets}]}],
        }
        prom = start_prometheus(config=config)
        src = PrometheusSource(PrometheusClient(prom.base_url, session=session))
        deadline = time.monotonic() + 60
        by: dict[bool, CounterDelta] = {}
        while time.monotonic() < deadline:
            deltas = src.increase(time.time(), 20)
            by = {d.spec_families: d for d in deltas if d.labels.get("class") == "live"}
            if (
                len(by) == 2
                and (by[True].itl_seconds_count or 0) > 0
                and (by[False].itl_seconds_count or 0) > 0
                and by[True].batch_samples
                and by[False].batch_samples
            ):
                break
            time.sleep(0.5)
        assert set(by) == {True, False}, f"no spec and load-only deltas within 60 s: {by}"
        s, p = by[True], by[False]
        # one scrape = one step of each engine: the ratios are exact whatever increase()
        # extrapolates (every counter of one target is scraped at the same instant)
        assert s.generation_tokens is not None
        assert s.iteration_steps is not None
        assert s.itl_seconds_count is not None
        assert s.generation_tokens / s.itl_seconds_count == pytest.approx(2.8, rel=1e-6)
        assert s.iteration_steps / s.draft_tokens == pytest.approx(0.5, rel=1e-6)
        assert p.iteration_tokens is not None
        assert p.iteration_steps is not None
        assert p.generation_tokens is not None
        assert p.iteration_tokens / p.iteration_steps == pytest.approx(1.2, rel=1e-6)
        assert p.generation_tokens / p.iteration_steps == pytest.approx(1.0, rel=1e-6)
        assert (p.k, p.draft_tokens) == (0, 0)
        assert set(s.batch_samples) == {4.0}
        assert set(p.batch_samples) == {2.0}
        assert s.running_requests == 4.0
        assert p.running_requests == 2.0
        assert s.k == 2
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_victoria_metrics_answers_the_same_queries(
    start_victoria_metrics: Callable[..., ManagedProcess], session: requests.Session
) -> None:
    """MetricsQL runs the load and batch queries too, with the same gains here (its window
    is left-open and it adds the sample before it: the same 120 steps)."""

    server = start_victoria_metrics()
    lines = []
    for (name, labels), points in SERIES.items():
        lab = ",".join(f'{k}="{v}"' for k, v in labels)
        lines.extend(f"{name}{{{lab}}} {v} {round(ts * 1000)}" for ts, v in points)
    vm_import(server.base_url, lines)
    src = PrometheusSource(PrometheusClient(server.base_url, session=session))
    got = {(d.labels["class"], d.spec_families): d for d in src.increase(T_END, WINDOW)}
    assert set(got) == {("m", True), ("m", False), ("p", False)}
    spec, plain = got[("m", True)], got[("m", False)]
    steps = WINDOW / STEP
    assert spec.generation_tokens == pytest.approx(28 * steps)
    assert spec.iteration_steps == pytest.approx(10 * steps)
    assert plain.generation_tokens == pytest.approx(10 * (steps - 1))  # restarted inside
    assert got[("p", False)].tpot_seconds_count is None
    assert sorted(spec.batch_samples) == _grid_samples(_running_spec)
    assert set(plain.batch_samples) == {3.0, 4.0}


@given(
    st.lists(st.tuples(st.integers(0, 512).map(float), st.integers(0, 400).map(float)), max_size=30)
)
def test_cap_samples_properties(counts: list[tuple[float, float]]) -> None:
    out = cap_samples(counts)
    total = sum(int(n) for _, n in counts)
    assert len(out) == min(total, MAX_BATCH_SAMPLES)
    assert list(out) == sorted(out)
    assert set(out) <= {v for v, n in counts if n > 0}
    if total <= MAX_BATCH_SAMPLES:  # a small pool is kept whole
        assert list(out) == sorted(v for v, n in counts for _ in range(int(n)))
    else:  # a large one by even ranks: each value within one pick of its share
        for v in {v for v, _ in counts}:
            share = sum(n for w, n in counts if w == v) / total
            assert abs(out.count(v) - share * MAX_BATCH_SAMPLES) <= 1.0 + 1e-9
