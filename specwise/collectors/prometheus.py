"""Read spec-decode counters through the Prometheus HTTP API (Prometheus, VictoriaMetrics,
Thanos, Mimir/Cortex).

``PrometheusClient`` is a small client on requests: form-encoded POSTs, the response envelope
and errors mapped to ``QueryError`` (a ``SourceError`` with ``status_code``, ``url``,
``error_type``), warnings/infos/``isPartial`` surfaced, bearer/basic auth, CA bundle and client
certificate passed per request, ``X-Scope-OrgID``; range queries split under the 11,000
points-per-series limit on step-aligned boundaries.

``PrometheusSource`` asks the server to aggregate: one ``sum by (<class labels>)
(increase(...[W]))`` per counter (per-position also ``by position``), matching both metric
spellings, so the number of queries per tick does not depend on the number of engines. The
rows it returns are already classified (``classified=True``): ``sum_by_class`` keeps them.
One more query counts the positions each engine exports (its k) per class: a class whose
engines run different k (a rollout) is re-read per series for that window and keeps the k
that carries the most drafts, as the direct scrape does, with a note.

With ``context`` (the default) two more queries read the load and time families
(:mod:`specwise.collectors.prom_load`): every load gain and the running gauge per class in
one instant query, split between engines with and without spec-decode counters in the
window, and the batch-size samples from one bounded range query of
``vllm:num_requests_running``. A class's engines without speculation give it a second,
load-only delta (``spec_families=False``, k = 0).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests

from specwise.collectors.classes import CLASS_LABEL, ClassConfig, Matcher
from specwise.collectors.deltas import check_delta, sum_by_class
from specwise.collectors.matrix import ColumnResult, ColumnSeries, parse_matrix_columns
from specwise.collectors.prom_load import (
    LOAD_METRICS,
    LOAD_ONLY_LABEL,
    batch_grid,
    batch_query,
    cap_samples,
    load_query,
    split_batch_row,
    split_load_row,
)
from specwise.collectors.snapshot import CounterDelta, Generation, Snapshot, labels_key
from specwise.collectors.urls import (
    basic_auth_from,
    check_bearer_token,
    check_http_url,
    check_timeout,
)
from specwise.errors import ParseError, SourceError

__all__ = [
    "COUNTER_METRICS",
    "MAX_POINTS",
    "PromSeries",
    "PrometheusClient",
    "PrometheusSource",
    "QueryError",
    "QueryResult",
    "aligned_chunks",
    "metric_selector",
]

#: Prometheus, Thanos and Mimir reject more than 11,000 steps per series.
MAX_POINTS = 11_000

#: CounterDelta field -> sample name (without the ``vllm:``/``vllm_`` prefix).
COUNTER_METRICS: dict[str, str] = {
    "drafts": "spec_decode_num_drafts_total",
    "draft_tokens": "spec_decode_num_draft_tokens_total",
    "accepted": "spec_decode_num_accepted_tokens_total",
    "accepted_per_position": "spec_decode_num_accepted_tokens_per_pos_total",
}
#: V0 exports draft/accepted token counters too, but broken ones, and without ``engine``.
_V1_ONLY = Matcher("engine", "!=", "")
#: The label ``count_values`` gives each engine's k (its number of exported positions).
_K_LABEL = "specwise_k"


class QueryError(SourceError):
    """A Prometheus-compatible server refused or failed a query."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status_code: int | None = None,
        error_type: str | None = None,
        query: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, url=url, status_code=status_code, retryable=retryable)
        self.error_type = error_type
        self.query = query


@dataclass(frozen=True)
class PromSeries:
    """One result series: its labels and (timestamp, value) points (one for a vector)."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]

    @property
    def value(self) -> float:
        return self.points[-1][1] if self.points else math.nan


@dataclass(frozen=True)
class QueryResult:
    """A parsed ``data`` plus what the server said about it."""

    result_type: str
    series: tuple[PromSeries, ...]
    warnings: tuple[str, ...] = ()
    infos: tuple[str, ...] = ()
    partial: bool = False
    requests: int = 1


def metric_selector(name: str, matchers: Sequence[Matcher] = ()) -> str:
    """``{__name__=~"vllm[:_]<name>",...}``: both spellings of a vLLM sample name."""
    parts = [f'__name__=~"vllm[:_]{name}"'] + [m.promql() for m in matchers]
    return "{" + ",".join(parts) + "}"


def aligned_chunks(
    start: float, end: float, step: float, *, max_points: int = MAX_POINTS
) -> list[tuple[float, float]]:
    """Step-aligned [start, end] pieces of at most ``max_points`` points each, covering the
    range with no point twice (start floored, end ceiled to multiples of ``step``)."""
    if step <= 0:
        raise ValueError(f"step {step} must be > 0")
    first = math.floor(start / step + 1e-9)
    last = math.ceil(end / step - 1e-9)
    chunks = []
    i = first
    while i <= last:
        j = min(i + max_points - 1, last)
        chunks.append((i * step, j * step))
        i = j + 1
    return chunks


def _fmt_time(t: float) -> str:
    return f"{t:.3f}"


def _range_params(expr: str, start: float, end: float, step: float) -> dict[str, str]:
    """The form of one ``/api/v1/query_range`` request."""
    step_text = repr(float(step))
    return {"query": expr, "start": _fmt_time(start), "end": _fmt_time(end), "step": step_text}


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


_SUCCESS = re.compile(rb'\s*\{\s*"status"\s*:\s*"success"')


class PrometheusClient:
    """Minimal Prometheus HTTP API client (``/api/v1/query`` and ``/api/v1/query_range``).

    ``base_url`` is everything before ``/api/v1`` (``http://prom:9090``,
    ``https://mimir/prometheus``). ``verify`` (True, False or a CA bundle path) and ``cert``
    are passed on every request, so ``REQUESTS_CA_BUNDLE`` cannot override them.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: requests.Session,
        timeout: float = 30.0,
        bearer_token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        tenant: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra_params: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = check_http_url(base_url, what="Prometheus URL").rstrip("/")
        self.session = session
        self.timeout = check_timeout(timeout)
        self.basic_auth = basic_auth_from(basic_auth)
        self.verify = verify
        self.cert = cert
        self.extra_params = dict(extra_params or {})
        self.headers: dict[str, str] = dict(headers or {})
        if bearer_token:
            self.headers["Authorization"] = f"Bearer {check_bearer_token(bearer_token)}"
        if tenant:
            self.headers["X-Scope-OrgID"] = tenant
        #: HTTP requests sent so far (one per query, one per range chunk).
        self.requests_sent = 0

    def _post(self, path: str, params: dict[str, str], query: str) -> dict[str, Any]:
        return self._envelope(self._send(path, params, query), query, self.base_url + path)

    def _post_raw(self, path: str, params: dict[str, str], query: str) -> bytes:
        """The body of a successful answer as bytes, not decoded (errors raise as ``_post``)."""
        resp = self._send(path, params, query)
        body = resp.content
        if resp.status_code == 200 and _SUCCESS.match(body):
            return body
        self._envelope(resp, query, self.base_url + path)  # raises for every error answer
        return body

    def _send(self, path: str, params: dict[str, str], query: str) -> requests.Response:
        url = f"{self.base_url}{path}"
        self.requests_sent += 1
        try:
            resp = self.session.post(
                url,
                data={**self.extra_params, **params},
                headers=self.headers,
                auth=self.basic_auth,
                timeout=self.timeout,
                verify=self.verify,
                cert=self.cert,
            )
        except requests.exceptions.Timeout as exc:
            raise QueryError(
                f"Prometheus at {self.base_url} did not answer within {self.timeout:g} s for "
                f"query {query!r}; raise the timeout or query a shorter window.",
                url=url,
                query=query,
                retryable=True,
            ) from exc
        except requests.exceptions.SSLError as exc:
            raise QueryError(
                f"TLS to Prometheus at {self.base_url} failed ({exc.__class__.__name__}); pass "
                "the server's CA bundle and, if it requires one, a client certificate.",
                url=url,
                query=query,
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise QueryError(
                f"Cannot reach Prometheus at {self.base_url} ({exc.__class__.__name__}); check "
                "the URL and that the server is up.",
                url=url,
                query=query,
                retryable=True,
            ) from exc
        return resp

    def _envelope(self, resp: requests.Response, query: str, url: str) -> dict[str, Any]:
        body: object = None
        if "json" in resp.headers.get("Content-Type", "") or resp.text.lstrip().startswith("{"):
            try:
                body = resp.json()
            except (json.JSONDecodeError, ValueError):
                body = None
        if isinstance(body, dict) and body.get("status") == "error":
            etype = str(body.get("errorType", ""))
            fix = {
                "bad_data": "check the query and the class label names in the config",
                "timeout": "query a shorter window or a coarser step",
                "execution": "check for duplicate series of one class (relabel conflicts)",
                "422": "check the query and the class label names in the config",
            }.get(etype, "check the server logs")
            raise QueryError(
                f"Prometheus at {self.base_url} answered {resp.status_code} for query "
                f"{query!r}: {etype}: {body.get('error', '')}; {fix}.",
                url=url,
                status_code=resp.status_code,
                error_type=etype,
                query=query,
                retryable=etype == "timeout" or resp.status_code in (429, 502, 504),
            )
        if resp.status_code != 200 or not isinstance(body, dict):
            text = resp.text[:120].strip().replace("\n", " ")
            if resp.status_code in (401, 403):
                fix = "check the bearer token, basic-auth user/password or tenant"
            elif resp.status_code == 404:
                fix = "check the base URL (Mimir and VictoriaMetrics cluster need a path prefix)"
            elif resp.status_code == 200:
                fix = "check that the URL is a Prometheus-compatible API"
            else:
                fix = "retry later or check the server"
            cls = ParseError if resp.status_code == 200 else QueryError
            msg = (
                f"Prometheus at {self.base_url} answered {resp.status_code} "
                f"({text or 'empty body'!r}) for query {query!r}; {fix}."
            )
            if cls is ParseError:
                raise ParseError(msg, url=url)
            raise QueryError(
                msg,
                url=url,
                status_code=resp.status_code,
                query=query,
                retryable=resp.status_code in (429, 502, 503, 504),
            )
        if body.get("status") != "success" or not isinstance(body.get("data"), dict):
            raise ParseError(
                f"Prometheus at {self.base_url} sent an envelope without status success and "
                f"data for query {query!r}; check that the URL is a Prometheus-compatible API.",
                url=url,
            )
        return body

    def _parse(self, body: dict[str, Any], query: str) -> QueryResult:
        data = body["data"]
        rtype = str(data.get("resultType", ""))
        raw = data.get("result")
        series: list[PromSeries] = []
        try:
            if rtype == "vector":
                for item in raw:
                    ts, val = item["value"]
                    series.append(PromSeries(dict(item["metric"]), ((float(ts), float(val)),)))
            elif rtype == "matrix":
                for item in raw:
                    pts = tuple((float(t), float(v)) for t, v in item["values"])
                    series.append(PromSeries(dict(item["metric"]), pts))
            elif rtype == "scalar":
                ts, val = raw
                series.append(PromSeries({}, ((float(ts), float(val)),)))
            else:
                raise ValueError(f"resultType {rtype!r}")
        except (TypeError, ValueError, KeyError) as exc:
            raise ParseError(
                f"Prometheus at {self.base_url} sent an unreadable result for query {query!r} "
                f"({exc}); check that the URL is a Prometheus-compatible API.",
                url=self.base_url,
            ) from exc
        return QueryResult(
            result_type=rtype,
            series=tuple(series),
            warnings=tuple(str(w) for w in body.get("warnings") or ()),
            infos=tuple(str(i) for i in body.get("infos") or ()),
            partial=bool(body.get("isPartial", False)),
        )

    def query(self, expr: str, *, time: float | None = None) -> QueryResult:
        """Instant query at ``time`` (Unix seconds; server's now when None)."""
        params = {"query": expr}
        if time is not None:
            params["time"] = _fmt_time(time)
        return self._parse(self._post("/api/v1/query", params, expr), expr)

    def query_range(
        self,
        expr: str,
        *,
        start: float,
        end: float,
        step: float,
        max_points: int = MAX_POINTS,
    ) -> QueryResult:
        """Range query, split into step-aligned chunks under ``max_points`` points and merged."""
        if end < start:
            raise QueryError(f"Range end {end} is before start {start}; swap them.", query=expr)
        merged: dict[tuple[tuple[str, str], ...], dict[float, float]] = defaultdict(dict)
        labels: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}
        warnings: list[str] = []
        infos: list[str] = []
        partial = False
        chunks = aligned_chunks(start, end, step, max_points=max_points)
        for c_start, c_end in chunks:
            params = _range_params(expr, c_start, c_end, step)
            part = self._parse(self._post("/api/v1/query_range", params, expr), expr)
            warnings.extend(part.warnings)
            infos.extend(part.infos)
            partial = partial or part.partial
            for s in part.series:
                key = labels_key(s.labels)
                labels[key] = s.labels
                merged[key].update(s.points)
        return QueryResult(
            result_type="matrix",
            series=tuple(
                PromSeries(labels[k], tuple(sorted(merged[k].items()))) for k in sorted(merged)
            ),
            warnings=tuple(dict.fromkeys(warnings)),
            infos=tuple(dict.fromkeys(infos)),
            partial=partial,
            requests=len(chunks),
        )

    def query_range_columns(
        self,
        expr: str,
        *,
        start: float,
        end: float,
        step: float,
        max_points: int = MAX_POINTS,
    ) -> ColumnResult:
        """``query_range`` parsed column by column (:func:`parse_matrix_columns`): the same
        step-aligned chunks, each series' chunks concatenated in time order."""
        if end < start:
            raise QueryError(f"Range end {end} is before start {start}; swap them.", query=expr)
        parts: dict[tuple[tuple[str, str], ...], list[ColumnSeries]] = defaultdict(list)
        warnings: list[str] = []
        infos: list[str] = []
        partial = False
        chunks = aligned_chunks(start, end, step, max_points=max_points)
        for c_start, c_end in chunks:
            params = _range_params(expr, c_start, c_end, step)
            body = self._post_raw("/api/v1/query_range", params, expr)
            part = parse_matrix_columns(body, url=self.base_url, query=expr)
            del body
            warnings.extend(part.warnings)
            infos.extend(part.infos)
            partial = partial or part.partial
            for s in part.series:
                parts[labels_key(s.labels)].append(s)
        out = []
        for key in sorted(parts):
            group = parts[key]
            if len(group) == 1:
                out.append(group[0])
                continue
            out.append(
                ColumnSeries(
                    group[0].labels,
                    np.concatenate([g.times for g in group]),
                    np.concatenate([g.values for g in group]),
                )
            )
        return ColumnResult(
            tuple(out),
            tuple(dict.fromkeys(warnings)),
            tuple(dict.fromkeys(infos)),
            partial,
            len(chunks),
        )


@dataclass
class _ClassAcc:
    labels: dict[str, str]
    values: dict[str, float] = field(default_factory=dict)
    per_pos: dict[int, float] = field(default_factory=dict)
    engine_ks: set[int] = field(default_factory=set)
    rows: int = 0
    #: load gains and running requests of the class's engines without spec counters
    plain: dict[str, float] = field(default_factory=dict)
    #: (running value, engines at it) per part, from the batch-sample range query
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


class PrometheusSource:
    """Per-class spec-decode counters aggregated server-side; satisfies ``SnapshotSource``.

    ``increase(now, window_s)`` gives per-class deltas over ``[now - window_s, now]``.
    ``collect(now)`` accumulates successive increases into running cumulative totals per
    class (seeded with ``initial_window_s`` on the first call; a call less than
    ``min_window_s`` after the last one returns the previous totals unchanged, because
    increase() needs two samples in its window). Totals inherit Prometheus' extrapolation,
    so they are not integers. Each total carries only what the latest window showed: its k
    is that window's k, and a class absent from the latest answer is dropped (the controller
    then sees no data for it and it ages into stale), never carried forward. A total that
    starts afresh (first sight, a class back after an absence, a new k) gets a new
    ``process_start_time`` (the start of its first window), which readers take as a restart.
    ``latest(now)`` reads the raw counters summed per class (exact, but not restart-safe).
    """

    def __init__(
        self,
        client: PrometheusClient,
        *,
        classes: ClassConfig | None = None,
        selector: Sequence[Matcher] = (),
        context: bool = True,
        initial_window_s: float = 300.0,
        min_window_s: float = 60.0,
    ) -> None:
        self.client = client
        self.classes = classes or ClassConfig()
        self.selector = tuple(selector)
        self.context = context
        self.initial_window_s = initial_window_s
        self.min_window_s = min_window_s
        self.warnings: list[str] = []
        self.partial = False
        self._last: float | None = None
        self._totals: list[Snapshot] = []

    # -- query building ------------------------------------------------------------------
    def _by(self, *extra: str) -> str:
        return ", ".join([*self.classes.by_labels(), *extra])

    def queries(self, window: str) -> dict[str, str]:
        """Field -> PromQL for one tick (the same count for 1 or 10,000 engines)."""
        out: dict[str, str] = {}
        for fld, name in COUNTER_METRICS.items():
            matchers = (*self.selector, _V1_ONLY)
            by = self._by("position") if fld == "accepted_per_position" else self._by()
            sel = metric_selector(name, matchers)
            out[fld] = f"sum by ({by}) (increase({sel}[{window}]))"
        # how many engines of each class export how many positions (their k) in the window
        sel = metric_selector(COUNTER_METRICS["accepted_per_position"], (*self.selector, _V1_ONLY))
        out["engine_k"] = (
            f'count_values by ({self._by()}) ("{_K_LABEL}", '
            f"count without (position) (increase({sel}[{window}])))"
        )
        if self.context:  # every load gain and the running gauge, spec and plain engines apart
            out["load"] = load_query(self._by(), self._selector, window)
        return out

    def _selector(self, name: str) -> str:
        return metric_selector(name, self.selector)

    def batch_query(self) -> str:
        """The range query of the batch-size samples (see :mod:`prom_load`)."""
        return batch_query(self._by(), self._selector)

    def latest_queries(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for fld, name in COUNTER_METRICS.items():
            by = self._by("position") if fld == "accepted_per_position" else self._by()
            sel = metric_selector(name, (*self.selector, _V1_ONLY))
            out[fld] = f"sum by ({by}) ({sel})"
        return out

    # -- result folding ------------------------------------------------------------------
    def _fold(
        self, results: Mapping[str, QueryResult]
    ) -> dict[tuple[tuple[str, str], ...], _ClassAcc]:
        accs: dict[tuple[tuple[str, str], ...], _ClassAcc] = {}
        for fld, res in results.items():
            self.warnings.extend(res.warnings)
            self.partial = self.partial or res.partial
            for s in res.series:
                if fld == "load":
                    row = split_load_row(s.labels)
                    if row is None or math.isnan(s.value):
                        continue
                    part, name, rest = row
                    cl = self.classes.classify(rest)
                    acc = accs.setdefault(labels_key(cl), _ClassAcc(cl))
                    target = acc.values if part == "spec" else acc.plain
                    target[name] = target.get(name, 0.0) + s.value
                    continue
                if fld == "engine_k":
                    raw = s.labels.get(_K_LABEL, "")
                    labels = {n: v for n, v in s.labels.items() if n != _K_LABEL}
                    cl = self.classes.classify(labels)
                    if raw.isdigit():
                        accs.setdefault(labels_key(cl), _ClassAcc(cl)).engine_ks.add(int(raw))
                    continue
                cl = self.classes.classify(s.labels)
                acc = accs.setdefault(labels_key(cl), _ClassAcc(cl))
                v = s.value
                if math.isnan(v):
                    continue
                if fld == "accepted_per_position":
                    pos = s.labels.get("position", "")
                    if not pos.isdigit():
                        continue
                    acc.per_pos[int(pos)] = acc.per_pos.get(int(pos), 0.0) + v
                else:
                    acc.values[fld] = acc.values.get(fld, 0.0) + v
                    if fld == "draft_tokens":
                        acc.rows += 1
        return accs

    def _run(self, queries: Mapping[str, str], now: float) -> dict[str, QueryResult]:
        self.warnings = []
        self.partial = False
        return {f: self.client.query(q, time=now) for f, q in queries.items()}

    def _class_matchers(self, labels: Mapping[str, str]) -> tuple[Matcher, ...]:
        """Matchers narrowing a per-series query to one class's candidate series."""
        if set(labels) == {CLASS_LABEL}:
            for c in self.classes.classes:
                if c.name == labels[CLASS_LABEL]:
                    return c.matchers
        return tuple(Matcher(g, "=", labels.get(g, "")) for g in self.classes.group_by)

    def _per_series(
        self, acc: _ClassAcc, now: float, window_s: float
    ) -> tuple[CounterDelta | None, list[str]]:
        """A mixed-k class re-read per series and summed as the scrape path does (the k with
        the most drafts kept, the other series left out of this window, with a note)."""
        window = _duration(window_s)
        matchers = (*self.selector, _V1_ONLY, *self._class_matchers(acc.labels))
        rows: dict[tuple[tuple[str, str], ...], dict[str, float]] = defaultdict(dict)
        pos: dict[tuple[tuple[str, str], ...], dict[int, float]] = defaultdict(dict)
        ids: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        warnings: list[str] = []
        for fld, name in COUNTER_METRICS.items():
            q = f"increase({metric_selector(name, matchers)}[{window}])"
            res = self.client.query(q, time=now)
            warnings.extend(res.warnings)
            for s in res.series:
                if math.isnan(s.value) or labels_key(self.classes.classify(s.labels)) != (
                    labels_key(acc.labels)
                ):
                    continue
                ident = {n: v for n, v in s.labels.items() if n not in ("position", "__name__")}
                key = labels_key(ident)
                ids[key] = ident
                if fld == "accepted_per_position":
                    p = s.labels.get("position", "")
                    if p.isdigit():
                        pos[key][int(p)] = s.value
                else:
                    rows[key][fld] = s.value
        series = []
        for key, vals in sorted(rows.items()):
            if "draft_tokens" not in vals:
                continue
            pp = pos.get(key, {})
            k = max(pp) + 1 if pp else None
            series.append(
                CounterDelta(
                    labels=ids[key],
                    start=now - window_s,
                    end=now,
                    drafts=vals.get("drafts"),
                    draft_tokens=vals["draft_tokens"],
                    accepted=vals.get("accepted", 0.0),
                    accepted_per_position=tuple(pp.get(i, 0.0) for i in range(k or 0)),
                    k=k,
                    generation="v1" if "drafts" in vals else "v1-0.8.4",
                )
            )
        summed = sum_by_class(series, self.classes)
        return (summed[0] if summed else None), warnings

    def increase(self, now: float, window_s: float) -> list[CounterDelta]:
        """Per-class deltas over ``[now - window_s, now]``, aggregated by the server: each
        class's spec delta, then (with ``context``) a load-only delta of its engines without
        spec-decode counters, where it has any."""
        window = _duration(window_s)
        queries = self.queries(window)
        accs = self._fold(self._run(queries, now))
        for _ in range(_REREADS):
            if not any(_torn(acc) for acc in accs.values()):
                break
            # a scrape stamped before ``now`` was committed between two of this tick's
            # queries: each query is consistent, the set is not; read them again
            accs = self._fold(self._run(queries, now))
        batch_warnings: list[str] = []
        if self.context and any(_has_load(acc) for acc in accs.values()):
            # (no load family in the window: no batch-size samples either, no query)
            batch_warnings = self._batch_samples(accs, now, window_s)
        out: list[CounterDelta] = []
        notes = tuple(f"server warning: {w}" for w in dict.fromkeys(self.warnings))
        notes += tuple(f"server warning: {w}" for w in dict.fromkeys(batch_warnings))
        if self.partial:
            notes += ("partial response: some stores did not answer, counts may be low",)
        for _, acc in sorted(accs.items()):
            if "draft_tokens" in acc.values:
                out.append(self._spec_delta(acc, now, window_s, notes))
            if acc.plain:
                out.append(self._plain_delta(acc, now, window_s, notes))
        return out

    def _spec_delta(
        self, acc: _ClassAcc, now: float, window_s: float, notes: tuple[str, ...]
    ) -> CounterDelta:
        k = max(acc.per_pos) + 1 if acc.per_pos else None
        per_pos = tuple(acc.per_pos.get(i, 0.0) for i in range(k)) if k else ()
        drafts = acc.values.get("drafts")
        gen: Generation = "v1" if drafts is not None else "v1-0.8.4"
        delta = _with_load(
            CounterDelta(
                labels=acc.labels,
                start=now - window_s,
                end=now,
                drafts=drafts,
                draft_tokens=acc.values["draft_tokens"],
                accepted=acc.values.get("accepted", 0.0),
                accepted_per_position=per_pos,
                k=k,
                generation=gen,
                series=acc.rows,
                batch_samples=cap_samples(acc.samples.get("spec", ())),
                partial=self.partial,
                notes=notes,
                classified=True,
            ),
            acc.values,
        )
        if len(acc.engine_ks) > 1:
            mixed, warned = self._per_series(acc, now, window_s)
            if mixed is not None:
                extra = tuple(f"server warning: {w}" for w in dict.fromkeys(warned))
                delta = dataclasses.replace(
                    _with_load(mixed, _load_of(delta)),
                    labels=acc.labels,
                    start=now - window_s,
                    end=now,
                    batch_samples=delta.batch_samples,
                    partial=self.partial,
                    notes=tuple(dict.fromkeys((*notes, *extra, *mixed.notes))),
                    classified=True,
                )
        check_delta(delta, rel_tolerance=0.01)
        return delta

    def _plain_delta(
        self, acc: _ClassAcc, now: float, window_s: float, notes: tuple[str, ...]
    ) -> CounterDelta:
        """The load-only delta of a class's engines without spec-decode counters."""
        return _with_load(
            CounterDelta(
                labels=acc.labels,
                start=now - window_s,
                end=now,
                drafts=0.0,
                draft_tokens=0.0,
                accepted=0.0,
                k=0,
                series=0,
                batch_samples=cap_samples(acc.samples.get("plain", ())),
                spec_families=False,
                partial=self.partial,
                notes=notes,
                classified=True,
            ),
            acc.plain,
        )

    def _batch_samples(
        self, accs: dict[tuple[tuple[str, str], ...], _ClassAcc], now: float, window_s: float
    ) -> list[str]:
        """Fill each class's running-request samples from one bounded range query; returns
        the server's warnings. A failing query leaves the samples empty (the gains stand)."""
        start, end, step = batch_grid(now, window_s)
        try:
            res = self.client.query_range(self.batch_query(), start=start, end=end, step=step)
        except SourceError as exc:
            return [f"batch-size samples not read: {exc}"]
        for s in res.series:
            row = split_batch_row(s.labels)
            if row is None:
                continue
            part, value, rest = row
            cl = self.classes.classify(rest)
            acc = accs.get(labels_key(cl))
            if acc is None:
                continue  # a class without gains in the window: no delta to carry them
            acc.samples.setdefault(part, []).extend((value, n) for _, n in s.points)
        self.partial = self.partial or res.partial
        return list(res.warnings)

    def latest(self, now: float) -> list[Snapshot]:
        """Raw cumulative counters summed per class at ``now`` (exact; not restart-safe)."""
        accs = self._fold(self._run(self.latest_queries(), now))
        snaps = []
        for _, acc in sorted(accs.items()):
            if "draft_tokens" not in acc.values:
                continue
            k = max(acc.per_pos) + 1 if acc.per_pos else None
            drafts = acc.values.get("drafts")
            snaps.append(
                Snapshot(
                    labels=acc.labels,
                    timestamp=now,
                    drafts=drafts,
                    draft_tokens=acc.values["draft_tokens"],
                    accepted=acc.values.get("accepted", 0.0),
                    accepted_per_position=(
                        tuple(acc.per_pos.get(i, 0.0) for i in range(k)) if k else ()
                    ),
                    k=k,
                    generation="v1" if drafts is not None else "v1-0.8.4",
                    source=self.client.base_url,
                    classified=True,
                )
            )
        return snaps

    def collect(self, now: float) -> list[Snapshot]:
        """Running per-class cumulative totals built from successive increases (see the
        class docstring: the latest window decides k and which classes are present)."""
        if self._last is not None and now - self._last < self.min_window_s:
            return list(self._totals)
        window = self.initial_window_s if self._last is None else now - self._last
        deltas = self.increase(now, window)
        previous = {s.key: s for s in self._totals}
        totals = [
            _add(previous.get(labels_key(_total_labels(d))), d, now, self.client.base_url)
            for d in deltas
        ]
        self._totals = sorted(totals, key=lambda s: s.key)
        self._last = now
        return list(self._totals)

    def increase_range(
        self, start: float, end: float, *, step: float, window_s: float
    ) -> dict[str, QueryResult]:
        """Range versions of the tick queries (chunked under the points limit): field ->
        matrix of per-class-label rows over [start, end] every ``step`` seconds."""
        return {
            f: self.client.query_range(q, start=start, end=end, step=step)
            for f, q in self.queries(_duration(window_s)).items()
            if f not in ("engine_k", "load")
        }


_REREADS = 3


def _torn(acc: _ClassAcc) -> bool:
    """The per-position counts and accepted tokens of one class disagree: they were read
    from different scrapes (the estimator would reject the window)."""
    accepted = acc.values.get("accepted")
    if not acc.per_pos or accepted is None:
        return False
    return abs(math.fsum(acc.per_pos.values()) - accepted) > max(1e-6 * accepted, 0.5 + 1e-9)


def _has_load(acc: _ClassAcc) -> bool:
    return bool(acc.plain) or "running_requests" in acc.values


def _opt_add(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _load_of(d: CounterDelta) -> dict[str, float | None]:
    """The load gains and running gauge of a delta, by field."""
    return {
        "running_requests": d.running_requests,
        **{f: getattr(d, f) for f in LOAD_METRICS},
    }


def _with_load(delta: CounterDelta, values: Mapping[str, float | None]) -> CounterDelta:
    """``delta`` with the load gains and running gauge of ``values`` (absent: None)."""
    return dataclasses.replace(
        delta,
        running_requests=values.get("running_requests"),
        generation_tokens=values.get("generation_tokens"),
        itl_seconds_sum=values.get("itl_seconds_sum"),
        itl_seconds_count=values.get("itl_seconds_count"),
        iteration_steps=values.get("iteration_steps"),
        iteration_tokens=values.get("iteration_tokens"),
        decode_seconds_sum=values.get("decode_seconds_sum"),
        decode_seconds_count=values.get("decode_seconds_count"),
        tpot_seconds_sum=values.get("tpot_seconds_sum"),
        tpot_seconds_count=values.get("tpot_seconds_count"),
    )


def _total_labels(d: CounterDelta) -> dict[str, str]:
    """A running total's labels: a load-only total is kept apart from the class's spec one."""
    return dict(d.labels) if d.spec_families else {**d.labels, LOAD_ONLY_LABEL: "true"}


def _add(prev: Snapshot | None, d: CounterDelta, now: float, source: str) -> Snapshot:
    """``prev`` (the running total) plus one window; a new total when there is none or the
    window's k differs from it (positions of another k are not the same counters)."""
    load = _load_of(d)
    if prev is None or prev.k != d.k:
        return Snapshot(
            labels=_total_labels(d),
            timestamp=now,
            drafts=d.drafts,
            draft_tokens=d.draft_tokens,
            accepted=d.accepted,
            accepted_per_position=d.accepted_per_position,
            k=d.k,
            generation=d.generation,
            source=source,
            running_requests=d.running_requests,
            generation_tokens=load["generation_tokens"],
            itl_seconds_sum=load["itl_seconds_sum"],
            itl_seconds_count=load["itl_seconds_count"],
            iteration_steps=load["iteration_steps"],
            iteration_tokens=load["iteration_tokens"],
            decode_seconds_sum=load["decode_seconds_sum"],
            decode_seconds_count=load["decode_seconds_count"],
            tpot_seconds_sum=load["tpot_seconds_sum"],
            tpot_seconds_count=load["tpot_seconds_count"],
            # the total starts here: a reader holding an older total takes it as a restart
            process_start_time=d.start,
            spec_families=d.spec_families,
            batch_samples=d.batch_samples,
            notes=d.notes,
            classified=True,
        )
    total = {f: _opt_add(getattr(prev, f), load[f]) for f in LOAD_METRICS}
    return Snapshot(
        labels=_total_labels(d),
        timestamp=now,
        drafts=_opt_add(prev.drafts, d.drafts),
        draft_tokens=prev.draft_tokens + d.draft_tokens,
        accepted=prev.accepted + d.accepted,
        accepted_per_position=tuple(
            a + b for a, b in zip(prev.accepted_per_position, d.accepted_per_position, strict=True)
        ),
        k=d.k,
        generation=d.generation,
        source=source,
        running_requests=d.running_requests,
        generation_tokens=total["generation_tokens"],
        itl_seconds_sum=total["itl_seconds_sum"],
        itl_seconds_count=total["itl_seconds_count"],
        iteration_steps=total["iteration_steps"],
        iteration_tokens=total["iteration_tokens"],
        decode_seconds_sum=total["decode_seconds_sum"],
        decode_seconds_count=total["decode_seconds_count"],
        tpot_seconds_sum=total["tpot_seconds_sum"],
        tpot_seconds_count=total["tpot_seconds_count"],
        process_start_time=prev.process_start_time,
        spec_families=d.spec_families,
        batch_samples=d.batch_samples,
        notes=d.notes,
        classified=True,
    )
