"""The Prometheus collector against real Prometheus 2.42 and VictoriaMetrics 1.79.

History is backfilled once per session with promtool (two engines of model "m", one of which
restarts halfway, and model "n" stored under the ``vllm_`` spelling), then read back through
server-side aggregated instant queries and range queries longer than 11,000 steps.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from specwise.collectors.classes import ClassConfig
from specwise.collectors.deltas import counter_increase, series_deltas, sum_by_class
from specwise.collectors.prometheus import (
    MAX_POINTS,
    PrometheusClient,
    PrometheusSource,
    PromSeries,
    QueryError,
    QueryResult,
    aligned_chunks,
)
from specwise.collectors.snapshot import Snapshot, SnapshotSource
from specwise.errors import ParseError

try:
    from tests.servers import (
        Exporter,
        FaultResponse,
        FaultServer,
        ManagedProcess,
        openmetrics_text,
        vm_import,
    )
except ImportError:
    from servers import (  # type: ignore[no-redef]
        Exporter,
        FaultResponse,
        FaultServer,
        ManagedProcess,
        openmetrics_text,
        vm_import,
    )

STEP = 15.0
N_STEPS = 960  # 4 h of 15 s samples
RESTART_AT = 480
T0 = math.floor((time.time() - 6 * 3600) / 3600) * 3600.0
T_END = T0 + N_STEPS * STEP

# (prefix, labels, per-step increments (drafts, draft tokens, accepted, per position), restart)
ENGINES = [
    ("vllm:", {"engine": "0", "model_name": "m", "instance": "a:8000", "job": "vllm"},
     (10, 36, 20, (8, 6, 4, 2)), None),
    ("vllm:", {"engine": "1", "model_name": "m", "instance": "a:8000", "job": "vllm"},
     (5, 18, 10, (4, 3, 2, 1)), RESTART_AT),
    ("vllm_", {"engine": "0", "model_name": "n", "instance": "b:8000", "job": "vllm"},
     (7, 14, 3, (2, 1, 0, 0)), None),
]  # fmt: skip
NAMES = ("num_drafts", "num_draft_tokens", "num_accepted_tokens")


def history() -> tuple[
    dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]], list[Snapshot]
]:
    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = {}
    snaps: list[Snapshot] = []
    for prefix, labels, (d, t, a, pp), restart in ENGINES:
        for i in range(N_STEPS + 1):
            n = i - restart if restart is not None and i >= restart else i
            ts = T0 + i * STEP
            values = (n * d, n * t, n * a)
            for name, v in zip(NAMES, values, strict=True):
                key = (f"{prefix}spec_decode_{name}_total", tuple(sorted(labels.items())))
                series.setdefault(key, []).append((ts, float(v)))
            for pos, inc in enumerate(pp):
                key = (
                    f"{prefix}spec_decode_num_accepted_tokens_per_pos_total",
                    tuple(sorted({**labels, "position": str(pos)}.items())),
                )
                series.setdefault(key, []).append((ts, float(n * inc)))
            snaps.append(
                Snapshot(labels=labels, timestamp=ts, drafts=n * d, draft_tokens=n * t,
                         accepted=n * a, accepted_per_position=tuple(n * x for x in pp), k=4)
            )  # fmt: skip
    return series, snaps


SERIES, SNAPSHOTS = history()


@pytest.fixture(scope="module")
def blocks(backfill: Callable[[str, str], Path]) -> Path:
    types = {f"vllm:spec_decode_{n}": "counter" for n in (*NAMES, "num_accepted_tokens_per_pos")}
    return backfill(openmetrics_text(SERIES, types=types), "spec-history")


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.fixture
def prom(start_prometheus: Callable[..., ManagedProcess], blocks: Path) -> ManagedProcess:
    return start_prometheus(blocks=blocks)


@pytest.fixture
def vm(start_victoria_metrics: Callable[..., ManagedProcess]) -> ManagedProcess:
    server = start_victoria_metrics()
    lines = []
    for (name, labels), points in SERIES.items():
        lab = ",".join(f'{k}="{v}"' for k, v in labels)
        lines.extend(f"{name}{{{lab}}} {v} {round(ts * 1000)}" for ts, v in points)
    vm_import(server.base_url, lines)
    return server


def expected_class_deltas() -> dict[str, tuple[float | None, ...]]:
    out = {}
    for d in sum_by_class(series_deltas(SNAPSHOTS), ClassConfig()):
        out[d.labels["class"]] = (d.drafts, d.draft_tokens, d.accepted, *d.accepted_per_position)
    return out


@pytest.mark.parametrize("backend", ["prometheus", "victoria-metrics"])
def test_server_side_increase_equals_client_deltas(
    backend: str, request: pytest.FixtureRequest, session: requests.Session
) -> None:
    server: ManagedProcess = request.getfixturevalue("prom" if backend == "prometheus" else "vm")
    client = PrometheusClient(server.base_url, session=session)
    src = PrometheusSource(client, context=False)
    deltas = src.increase(T_END, T_END - T0)
    got = {
        d.labels["class"]: (d.drafts, d.draft_tokens, d.accepted, *d.accepted_per_position)
        for d in deltas
    }
    want = expected_class_deltas()
    assert set(got) == set(want) == {"m", "n"}
    for cls, values in want.items():
        assert got[cls] == pytest.approx(values, rel=1e-9), cls
    # engine 1 restarted: the counts before the restart are still in (nothing lost or doubled)
    m = next(d for d in deltas if d.labels["class"] == "m")
    assert m.drafts == 10 * N_STEPS + 5 * (RESTART_AT - 1) + 5 * (N_STEPS - RESTART_AT)
    assert m.k == 4
    assert client.requests_sent == 5  # 4 counters and the positions (k) per engine


@pytest.mark.parametrize("backend", ["prometheus", "victoria-metrics"])
def test_range_query_longer_than_11000_steps(
    backend: str, request: pytest.FixtureRequest, session: requests.Session
) -> None:
    server: ManagedProcess = request.getfixturevalue("prom" if backend == "prometheus" else "vm")
    client = PrometheusClient(server.base_url, session=session)
    # never sum before increase(): a restart of one engine would look like a reset of all
    expr = 'sum by (model_name, engine) ({__name__=~"vllm[:_]spec_decode_num_drafts_total"})'
    res = client.query_range(expr, start=T0, end=T_END, step=1.0)
    assert res.requests == len(aligned_chunks(T0, T_END, 1.0)) == 2
    by_series = {(s.labels["model_name"], s.labels["engine"]): s for s in res.series}
    assert set(by_series) == {("m", "0"), ("m", "1"), ("n", "0")}
    m = by_series[("m", "1")]
    times = [t for t, _ in m.points]
    assert len(times) == len(set(times)) == N_STEPS * 15 + 1
    assert times[0] == T0
    assert times[-1] == T_END
    # values at the original sample times are the raw samples: client-side deltas match
    raw = [v for t, v in m.points if (t - T0) % STEP == 0]
    assert len(raw) == N_STEPS + 1
    total, resets = counter_increase(raw)
    assert resets == 1
    assert total == 5 * (N_STEPS - 1)


def test_instant_increase_range_matches_increase(
    prom: ManagedProcess, session: requests.Session
) -> None:
    client = PrometheusClient(prom.base_url, session=session)
    src = PrometheusSource(client, context=False)
    start = T0 + 3600
    ranged = src.increase_range(start, start + 11_500, step=1.0, window_s=300)
    assert ranged["drafts"].requests == 2
    series = {s.labels["model_name"]: s for s in ranged["drafts"].series}
    at = dict(series["m"].points)
    [inst] = [d for d in src.increase(start + 6000, 300) if d.labels["class"] == "m"]
    assert at[start + 6000] == pytest.approx(inst.drafts)


def test_real_errors_from_prometheus_and_victoria_metrics(
    prom: ManagedProcess, vm: ManagedProcess, session: requests.Session
) -> None:
    p = PrometheusClient(prom.base_url, session=session)
    with pytest.raises(QueryError, match="answered 400") as exc:
        p.query("sum((")
    assert exc.value.error_type == "bad_data"
    assert exc.value.status_code == 400
    with pytest.raises(QueryError, match="exceeded maximum resolution"):
        p.query_range("up", start=T0, end=T0 + 20_000, step=1, max_points=20_001)
    v = PrometheusClient(vm.base_url, session=session)
    with pytest.raises(QueryError, match="answered 422") as exc:
        v.query("sum((")
    assert exc.value.error_type == "422"
    with pytest.raises(QueryError, match="404"):
        PrometheusClient(prom.base_url + "/nope", session=session).query("up")


def test_live_prometheus_scraping_exporter(
    vllm_exporter: Exporter,
    start_prometheus: Callable[..., ManagedProcess],
    session: requests.Session,
) -> None:
    coll = vllm_exporter.collector
    for engine, n in (("0", 3), ("1", 4)):
        coll.add(
            {"engine": engine, "model_name": "live"},
            drafts=10 * n,
            draft_tokens=40 * n,
            accepted=20 * n,
            per_position=[8 * n, 6 * n, 4 * n, 2 * n],
        )
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": "vllm", "static_configs": [{"targets": [vllm_exporter.address]}]}
        ],
    }
    server = start_prometheus(config=config)
    client = PrometheusClient(server.base_url, session=session)
    src = PrometheusSource(client, classes=ClassConfig(group_by=("model_name", "job")))
    assert isinstance(src, SnapshotSource)
    deadline = time.monotonic() + 30
    latest: list[Snapshot] = []
    while time.monotonic() < deadline:
        latest = src.latest(time.time())
        if latest:
            break
        time.sleep(0.5)
    [s] = latest
    assert s.labels == {"class": "live/vllm", "model_name": "live", "job": "vllm"}
    assert (s.drafts, s.draft_tokens, s.accepted) == (70, 280, 140)
    assert s.accepted_per_position == (56, 42, 28, 14)
    # Prometheus 2.42 negotiated OpenMetrics: prometheus_client 0.26 escaped the names
    names = client.query('count by (__name__) ({__name__=~"vllm.spec_decode.*"})')
    assert {r.labels["__name__"] for r in names.series} >= {"vllm_spec_decode_num_drafts_total"}
    # queries per tick: constant, whatever the number of engines (the spec counters, k per
    # engine, every load family in one, and the batch-size samples' range query)
    before = client.requests_sent
    src.increase(time.time(), 60)
    assert client.requests_sent - before == len(src.queries("1m")) + 1 == 7


def ok_body(result: list[object], **extra: object) -> bytes:
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": result}, **extra}
    ).encode()


VECTOR = [{"metric": {"model_name": "m"}, "value": [100, "40"]}]


@pytest.mark.parametrize(
    ("response", "error", "match"),
    [
        (
            FaultResponse(400, b'{"status":"error","errorType":"bad_data","error":"parse error"}',
                          content_type="application/json"),
            QueryError, "bad_data: parse error; check the query",
        ),
        (
            FaultResponse(422, b'{"status":"error","errorType":"422","error":"cannot parse"}',
                          content_type="application/json"),
            QueryError, "answered 422",
        ),
        (FaultResponse(401, b"Unauthorized\n"), QueryError, "check the bearer token"),
        (
            FaultResponse(503, b'{"status":"error","errorType":"timeout","error":"timed out"}',
                          content_type="application/json"),
            QueryError, "shorter window",
        ),
        (FaultResponse(502, b"<html>bad gateway</html>"), QueryError, "answered 502"),
        (FaultResponse(200, b"<html>login</html>", content_type="text/html"), ParseError,
         "Prometheus-compatible API"),
        (FaultResponse(200, b'{"status":"success","data":{"resultType":"vector","result":[{}]}}',
                       content_type="application/json"), ParseError, "unreadable result"),
        (FaultResponse(200, b"{}", delay=3), QueryError, "did not answer within 0.5 s"),
    ],
    ids=["400", "422-vm", "401-text", "503-timeout", "502-html", "html", "bad-result", "hang"],
)  # fmt: skip
def test_client_fault_injection(
    fault_server: FaultServer,
    session: requests.Session,
    response: FaultResponse,
    error: type[Exception],
    match: str,
) -> None:
    fault_server.routes["/api/v1/query"] = response
    client = PrometheusClient(fault_server.base_url, session=session, timeout=0.5)
    with pytest.raises(error, match=match) as exc:
        client.query("up")
    assert str(exc.value).endswith(".")


def test_post_form_auth_headers_warnings_and_partial(
    fault_server: FaultServer, session: requests.Session
) -> None:
    fault_server.routes["/prom/api/v1/query"] = FaultResponse(
        body=ok_body(VECTOR, warnings=["store b down"], isPartial=True),
        content_type="application/json",
    )
    client = PrometheusClient(
        fault_server.base_url + "/prom/",
        session=session,
        bearer_token="tok",
        tenant="team-a",
        extra_params={"partial_response": "true"},
    )
    res = client.query("up", time=123.5)
    assert res.warnings == ("store b down",)
    assert res.partial
    method, path, headers = fault_server.requests[-1]
    assert (method, path) == ("POST", "/prom/api/v1/query")
    assert headers["Authorization"] == "Bearer tok"
    assert headers["X-Scope-OrgID"] == "team-a"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert fault_server.bodies[-1] == b"partial_response=true&query=up&time=123.500"
    basic = PrometheusClient(fault_server.base_url + "/prom", session=session,
                             basic_auth=("u", "p"))  # fmt: skip
    basic.query("up")
    assert fault_server.requests[-1][2]["Authorization"] == "Basic dTpw"


def test_source_surfaces_warnings_and_partial(
    fault_server: FaultServer, session: requests.Session
) -> None:
    fault_server.routes["/api/v1/query"] = FaultResponse(
        body=ok_body(VECTOR, warnings=["store b down"], isPartial=True),
        content_type="application/json",
    )
    src = PrometheusSource(PrometheusClient(fault_server.base_url, session=session))
    [d] = src.increase(100.0, 300)
    assert d.partial
    assert any("store b down" in n for n in d.notes)


def test_collect_accumulates_increases(
    fault_server: FaultServer, session: requests.Session
) -> None:
    fault_server.routes["/api/v1/query"] = FaultResponse(
        body=ok_body(VECTOR), content_type="application/json"
    )
    src = PrometheusSource(PrometheusClient(fault_server.base_url, session=session), context=False)
    first = src.collect(1000.0)
    assert first[0].draft_tokens == 40
    assert src.collect(1010.0) == first  # under min_window_s: unchanged, no query
    sent = src.client.requests_sent
    second = src.collect(1100.0)
    assert second[0].draft_tokens == 80
    assert second[0].timestamp == 1100.0
    assert src.client.requests_sent - sent == 5
    bodies = [b.decode() for b in fault_server.bodies[-5:]]
    assert all("100000ms" in b for b in bodies)


def test_accepted_above_drafted_from_server_is_a_data_error(
    fault_server: FaultServer, session: requests.Session
) -> None:
    from specwise.errors import DataError

    class Route(FaultResponse):
        pass

    # every query answers the same value: accepted == draft tokens is fine, so make the
    # per-position counts rise instead (position 1 > position 0)
    rows = [
        {"metric": {"model_name": "m", "position": "0"}, "value": [1, "1"]},
        {"metric": {"model_name": "m", "position": "1"}, "value": [1, "5"]},
    ]
    fault_server.routes["/api/v1/query"] = Route(
        body=ok_body(rows), content_type="application/json"
    )
    src = PrometheusSource(PrometheusClient(fault_server.base_url, session=session), context=False)
    with pytest.raises(DataError, match="position 1"):
        src.increase(100.0, 60)


def test_aligned_chunks() -> None:
    chunks = aligned_chunks(7.0, 30_007.0, 1.0)
    assert chunks[0] == (7.0, 11_006.0)
    assert all((e - s) / 1.0 + 1 <= MAX_POINTS for s, e in chunks)
    assert chunks[-1][1] == 30_007.0
    assert aligned_chunks(7.0, 68.0, 15.0) == [(0.0, 75.0)]


class _TornThenWhole:
    """Fault injection: the first tick's queries straddle a scrape being committed (the
    per-position increases already include it, accepted does not); the next read agrees."""

    base_url = "http://fault-injection.invalid"

    def __init__(self) -> None:
        self.reads = 0

    def query(self, expr: str, *, time: float | None = None) -> QueryResult:
        if "per_pos" in expr and "count_values" not in expr:
            self.reads += 1
            pp = (60.0, 30.0) if self.reads > 1 else (61.0, 31.0)
            series = tuple(
                PromSeries({"model_name": "m", "position": str(i)}, ((0.0, v),))
                for i, v in enumerate(pp)
            )
            return QueryResult("vector", series)
        if "count_values" in expr:
            return QueryResult("vector", (PromSeries({"model_name": "m", "k": "2"}, ((0, 1),)),))
        value = {"drafts": 100.0, "draft_tokens": 200.0, "accepted": 90.0}
        for fld, name in (
            ("drafts", "num_drafts_total"),
            ("draft_tokens", "num_draft_tokens_total"),
            ("accepted", "num_accepted_tokens_total"),
        ):
            if name in expr:
                return QueryResult("vector", (PromSeries({"model_name": "m"}, ((0, value[fld]),)),))
        return QueryResult("vector", ())


def test_a_tick_whose_queries_straddle_a_scrape_is_read_again() -> None:
    client = _TornThenWhole()
    source = PrometheusSource(client, classes=ClassConfig())  # type: ignore[arg-type]
    (d,) = source.increase(1_800_000_000.0, 60.0)
    assert client.reads == 2
    assert d.accepted_per_position == (60.0, 30.0)
    assert sum(d.accepted_per_position) == d.accepted
