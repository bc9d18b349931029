"""Column-wise parsing of range answers (specwise.collectors.matrix) against the point-wise
parser: generated answers in every JSON layout, a real VictoriaMetrics, and error answers
injected by a fault server."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

import specwise.collectors.matrix as matrix
from specwise.collectors.matrix import parse_matrix_columns
from specwise.collectors.prometheus import PrometheusClient, QueryError
from specwise.errors import ParseError

try:
    from tests.servers import FaultResponse, FaultServer, ManagedProcess, vm_import
except ImportError:
    from servers import FaultResponse, FaultServer, ManagedProcess, vm_import  # type: ignore[no-redef]


def prom_value(x: float) -> str:
    """A sample value as Prometheus writes it."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


label_text = st.text(max_size=12)  # any unicode, quotes, brackets, '"values":['
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=0, max_value=10**15).map(float),
)
series_st = st.fixed_dictionaries(
    {
        "metric": st.dictionaries(st.sampled_from(["a", "b", "position", "__name__"]), label_text),
        "values": st.lists(
            st.tuples(st.integers(min_value=0, max_value=2 * 10**9), st.integers(0, 999), values),
            max_size=30,
        ),
    }
)


def document(result: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    out = []
    for s in result:
        pts = sorted({t: (t, ms, v) for t, ms, v in s["values"]}.values())
        out.append(
            {
                "metric": s["metric"],
                "values": [[t + ms / 1000 if ms else t, prom_value(v)] for t, ms, v in pts],
            }
        )
    return {"status": "success", "data": {"resultType": "matrix", "result": out}, **extra}


def reference(doc: dict[str, Any]) -> list[tuple[dict[str, str], list[float], list[float]]]:
    """What the point-wise parser makes of the same answer."""
    res = PrometheusClient("http://x", session=requests.Session())._parse(doc, "q")
    return [
        (dict(s.labels), [p[0] for p in s.points], [p[1] for p in s.points]) for s in res.series
    ]


def same(a: list[float], b: np.ndarray) -> bool:
    return len(a) == len(b) and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b)
    )


@settings(max_examples=150, deadline=None)
@given(
    result=st.lists(series_st, max_size=5),
    warnings=st.lists(st.text(max_size=8), max_size=2),
    partial=st.booleans(),
    layout=st.sampled_from(["compact", "spaced", "indented", "utf8"]),
    piece=st.sampled_from([1 << 18, 24]),
    small=st.sampled_from([0, 1 << 13]),  # pandas' parser for every batch, or numpy's
)
def test_column_parse_equals_point_parse(
    result: list[dict[str, Any]],
    warnings: list[str],
    partial: bool,
    layout: str,
    piece: int,
    small: int,
) -> None:
    extra: dict[str, Any] = {"warnings": warnings} if warnings else {}
    if partial:
        extra["isPartial"] = True
    doc = document(result, extra)
    text = {
        "compact": json.dumps(doc, separators=(",", ":")),
        "spaced": json.dumps(doc),
        "indented": json.dumps(doc, indent=2),
        "utf8": json.dumps(doc, separators=(",", ":"), ensure_ascii=False),
    }[layout]
    old, old_small, general = matrix._PIECE, matrix._SMALL, matrix._columns_general
    matrix._PIECE = piece  # small pieces: a values array split across many parser calls
    matrix._SMALL = small
    if layout != "indented":  # Prometheus' own layouts never fall back to json.loads

        def no_fallback(body: bytes) -> matrix.ColumnResult:
            raise AssertionError(f"fell back to json.loads on {body[:200]!r}")

        matrix._columns_general = no_fallback
    try:
        cols = parse_matrix_columns(text.encode())
    finally:
        matrix._PIECE, matrix._SMALL, matrix._columns_general = old, old_small, general
    ref = reference(json.loads(text))
    assert len(cols.series) == len(ref)
    for (labels, times, vals), c in zip(ref, cols.series, strict=True):
        assert dict(c.labels) == labels
        assert same(times, c.times)
        assert same(vals, c.values)
        assert c.times.dtype == np.float64
    assert cols.warnings == tuple(warnings)
    assert cols.partial == partial


@pytest.mark.parametrize(
    "body",
    [
        b'{"status":"success","data":{"resultType":"vector","result":[]}}',
        b'{"status":"success","data":{"resultType":"matrix","result":[{"values":[[1,"2"]]}]}}',
        b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},'
        b'"values":[[1,"x"]]}]}}',
        b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},'
        b'"values":[[1,"2"],[3',
    ],
    ids=["vector", "no-metric", "bad-number", "truncated"],
)
def test_unreadable_answers_are_parse_errors(body: bytes) -> None:
    with pytest.raises(ParseError, match="unreadable range result for query 'q'"):
        parse_matrix_columns(body, url="http://prom:9090", query="q")


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.mark.parametrize(
    ("response", "error", "match"),
    [
        (FaultResponse(400, b'{"status":"error","errorType":"bad_data","error":"parse error"}',
                       content_type="application/json"),
         QueryError, "bad_data: parse error; check the query"),
        (FaultResponse(401, b"Unauthorized\n"), QueryError, "check the bearer token"),
        (FaultResponse(502, b"<html>bad gateway</html>"), QueryError, "answered 502"),
        (FaultResponse(200, b"<html>login</html>", content_type="text/html"), ParseError,
         "Prometheus-compatible API"),
        (FaultResponse(200, b'{"status":"success","data":{"resultType":"matrix","result":[{}]}}',
                       content_type="application/json"), ParseError, "unreadable range result"),
    ],
    ids=["400", "401-text", "502-html", "html", "bad-result"],
)  # fmt: skip
def test_query_range_columns_errors(
    fault_server: FaultServer,
    session: requests.Session,
    response: FaultResponse,
    error: type[Exception],
    match: str,
) -> None:
    fault_server.routes["/api/v1/query_range"] = response
    client = PrometheusClient(fault_server.base_url, session=session, timeout=5)
    with pytest.raises(error, match=match) as exc:
        client.query_range_columns("up", start=0, end=60, step=15)
    assert str(exc.value).endswith(".")


def test_query_range_columns_on_victoria_metrics(
    start_victoria_metrics: Callable[..., ManagedProcess], session: requests.Session
) -> None:
    vm = start_victoria_metrics()
    t0 = 1_700_000_000
    name = "vllm:spec_decode_num_drafts_total"
    lines = [
        f'{name}{{model_name="{m}",engine="0"}} {v} {(t0 + 15 * i) * 1000}'
        for m, rate in (("a", 7), ("b", 3))
        for i, v in enumerate(rate * np.arange(400) // 1 + (np.arange(400) > 200) * -50)
    ]
    vm_import(vm.base_url, lines)
    client = PrometheusClient(vm.base_url, session=session)
    q = "sum by (model_name) (increase(vllm:spec_decode_num_drafts_total[2m]))"
    kwargs = {"start": t0 + 300.0, "end": t0 + 5700.0, "step": 60.0, "max_points": 40}
    points = client.query_range(q, **kwargs)  # type: ignore[arg-type]
    cols = client.query_range_columns(q, **kwargs)  # type: ignore[arg-type]
    assert cols.requests == points.requests >= 3
    assert [dict(s.labels) for s in cols.series] == [{"model_name": "a"}, {"model_name": "b"}]
    for p, c in zip(points.series, cols.series, strict=True):
        arr = np.asarray(p.points)
        assert len(arr) > 80
        assert np.array_equal(arr[:, 0], c.times)
        assert np.array_equal(arr[:, 1], c.values)
