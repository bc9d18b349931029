"""The controller's own Prometheus metrics, `/healthz` and `/recommendations`.

A custom collector reads the controller's current state at scrape time (no stale gauges to
forget); it is registered on a registry passed in, never the global one. The HTTP server
binds 127.0.0.1 by default.
"""

from __future__ import annotations

import errno
import json
import math
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from specwise.controller.probing import probe_families
from specwise.controller.state import ControllerState
from specwise.errors import ConfigError

__all__ = [
    "METRIC_NAMES",
    "ControllerCollector",
    "ExporterServer",
    "controller_registry",
    "make_app",
]

StateFn = Callable[[], ControllerState]
Metric = GaugeMetricFamily | CounterMetricFamily

#: Every metric family the controller exports (rules and dashboards refer only to these).
METRIC_NAMES = (
    "specwise_alpha_ratio",
    "specwise_alpha_lower_ratio",
    "specwise_alpha_upper_ratio",
    "specwise_mean_acceptance_length_tokens",
    "specwise_survival_ratio",
    "specwise_window_drafts",
    "specwise_deployed_k",
    "specwise_recommended_k",
    "specwise_predicted_speedup_ratio",
    "specwise_paying_off",
    "specwise_fit_ok",
    "specwise_drift_detected",
    "specwise_stale",
    "specwise_data_age_seconds",
    "specwise_class_last_data_timestamp_seconds",
    "specwise_changes_total",
    "specwise_proposals_total",
    "specwise_off_by_specwise",
    "specwise_source_up",
    "specwise_source_last_success_timestamp_seconds",
    "specwise_source_errors_total",
    "specwise_ticks_total",
    "specwise_controller_errors_total",
    "specwise_last_tick_timestamp_seconds",
    # the cost side (#14): what the engine delivers, the fitted step time, the load
    "specwise_measured_speedup_ratio",
    "specwise_measured_speedup_lower_ratio",
    "specwise_measured_speedup_upper_ratio",
    "specwise_inferred_speedup_ratio",
    "specwise_band_measured_speedup_ratio",
    "specwise_band_predicted_speedup_ratio",
    "specwise_band_share_ratio",
    "specwise_band_k",
    "specwise_step_cost_seconds",
    "specwise_implied_draft_cost_ratio",
    "specwise_implied_verify_cost_ratio",
    "specwise_batch_size",
    "specwise_batch_size_mean",
    "specwise_load_aware",
)


class ControllerCollector(Collector):
    """Yields the state as gauge/counter families on every scrape."""

    def __init__(self, state: StateFn) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        st = self.state()
        cls = ["class"]

        def gauge(name: str, doc: str, labels: list[str] = cls) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        alpha = gauge("specwise_alpha_ratio", "Estimated per-token acceptance rate alpha.")
        low = gauge("specwise_alpha_lower_ratio", "Lower end of alpha's 95% credible interval.")
        high = gauge("specwise_alpha_upper_ratio", "Upper end of alpha's 95% credible interval.")
        mal = gauge(
            "specwise_mean_acceptance_length_tokens",
            "Mean acceptance length over the window (vLLM's 1 + accepted/drafts).",
        )
        surv = gauge(
            "specwise_survival_ratio",
            "Measured survival s_(position+1): share of drafts whose first position+1 tokens "
            "were accepted; position is 0-based like vLLM's per-position counter (0 = s_1).",
            [*cls, "position"],
        )
        drafts = gauge("specwise_window_drafts", "Drafts in the estimation window (evidence).")
        deployed = gauge("specwise_deployed_k", "num_speculative_tokens deployed now (0 = off).")
        recommended = gauge("specwise_recommended_k", "num_speculative_tokens recommended.")
        speed = gauge(
            "specwise_predicted_speedup_ratio",
            "Predicted speedup over plain decoding, at the deployed or the recommended k.",
            [*cls, "k_kind"],
        )
        paying = gauge(
            "specwise_paying_off",
            "1 when spec decode at the deployed k is predicted faster than plain decoding.",
        )
        fit = gauge("specwise_fit_ok", "1 when one i.i.d. alpha fits the survival curve.")
        drift = gauge("specwise_drift_detected", "1 when a sustained change of alpha is flagged.")
        stale = gauge("specwise_stale", "1 when the class has no fresh data (no actuation).")
        age = gauge("specwise_data_age_seconds", "Seconds since the class last got new counters.")
        last = gauge(
            "specwise_class_last_data_timestamp_seconds",
            "Unix time of the class's last new counters.",
        )
        changes = CounterMetricFamily(
            "specwise_changes", "k changes applied (file written, command run).", labels=cls
        )
        proposals = CounterMetricFamily(
            "specwise_proposals",
            "k changes proposed by the dry-run actuator (nothing deployed).",
            labels=cls,
        )
        for c in st.classes:
            v = [c.name]
            if c.alpha is not None:
                alpha.add_metric(v, c.alpha)
            if c.alpha_low is not None:
                low.add_metric(v, c.alpha_low)
            if c.alpha_high is not None:
                high.add_metric(v, c.alpha_high)
            if c.mean_acceptance_length is not None:
                mal.add_metric(v, c.mean_acceptance_length)
            for i, s in enumerate(c.survival):  # 0-based, as vLLM's position label
                surv.add_metric([c.name, str(i)], s)
            drafts.add_metric(v, c.drafts)
            if c.deployed_k is not None:
                deployed.add_metric(v, c.deployed_k)
            if c.recommended_k is not None:
                recommended.add_metric(v, c.recommended_k)
            if c.predicted_speedup_deployed is not None:
                speed.add_metric([c.name, "deployed"], c.predicted_speedup_deployed)
            if c.predicted_speedup_recommended is not None:
                speed.add_metric([c.name, "recommended"], c.predicted_speedup_recommended)
            if c.paying_off is not None:
                paying.add_metric(v, 1.0 if c.paying_off else 0.0)
            if c.fit_ok is not None:
                fit.add_metric(v, 1.0 if c.fit_ok else 0.0)
            drift.add_metric(v, 1.0 if c.drift else 0.0)
            stale.add_metric(v, 1.0 if c.stale else 0.0)
            if c.data_age is not None:
                age.add_metric(v, c.data_age)
            if c.last_data_at is not None:
                last.add_metric(v, c.last_data_at)
            changes.add_metric(v, c.changes)
            proposals.add_metric(v, c.proposals)
        yield from (alpha, low, high, mal, surv, drafts, deployed, recommended, speed)
        yield from (paying, fit, drift, stale, age, last, changes, proposals)
        yield _off_by_specwise(st)
        yield from _load_families(st)

        up = gauge("specwise_source_up", "1 when the source answered on the last tick.", ["source"])
        ok_at = gauge(
            "specwise_source_last_success_timestamp_seconds",
            "Unix time of the source's last successful collection.",
            ["source"],
        )
        errors = CounterMetricFamily(
            "specwise_source_errors",
            "Collection errors by source and kind.",
            labels=["source", "kind"],
        )
        for src in st.sources:
            up.add_metric([src.name], 1.0 if src.up else 0.0)
            if src.last_success is not None:
                ok_at.add_metric([src.name], src.last_success)
            for kind, n in sorted(src.errors.items()):
                errors.add_metric([src.name, kind], n)
        yield from (up, ok_at, errors)
        ticks = CounterMetricFamily("specwise_ticks", "Controller ticks run.")
        ticks.add_metric([], st.ticks)
        yield ticks
        internal = CounterMetricFamily(
            "specwise_controller_errors",
            "The controller's own failures by kind (internal, actuator, load: the cost side "
            "failed for a class); k is held.",
            labels=["kind"],
        )
        for kind in ("internal", "actuator", "load"):
            internal.add_metric([kind], st.errors.get(kind, 0))
        yield internal
        yield from probe_families(st)  # specwise_probe_* (#15)
        if st.updated_at is not None:
            tick_at = GaugeMetricFamily(
                "specwise_last_tick_timestamp_seconds", "Unix time of the last controller tick."
            )
            tick_at.add_metric([], st.updated_at)
            yield tick_at


def _off_by_specwise(st: ControllerState) -> GaugeMetricFamily:
    """1 per series label set (e.g. model_name) of each class specwise itself turned off:
    SpecDecodeMetricsAbsent joins on those labels, whatever the class is called."""
    join = sorted({label for c in st.classes for labels in c.series_labels for label in labels})
    fam = GaugeMetricFamily(
        "specwise_off_by_specwise",
        "1 while the class runs k = 0 by specwise's own applied decision; labelled with the "
        "alert rules' class labels (e.g. model_name) of its vLLM series.",
        labels=["class", *join],
    )
    for c in st.classes:
        if c.off_by_specwise:
            for labels in c.series_labels or ({},):
                fam.add_metric([c.name, *(labels.get(label, "") for label in join)], 1.0)
    return fam


#: ``specwise_step_cost_seconds`` parts, from the ``costs`` block of a class's load status
STEP_COST_PARTS = ("base", "per_token", "knee_tokens", "draft_base", "draft_per_seq")


def _number(value: Any) -> float | None:
    """A finite float, or None (JSON null, a missing key, an infinite knee)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _load_families(st: ControllerState) -> Iterator[GaugeMetricFamily]:
    """The cost side of each class (its ``load`` block, :mod:`specwise.controller.load`)."""
    cls = ["class"]
    band = [*cls, "band"]
    measured = GaugeMetricFamily(
        "specwise_measured_speedup_ratio",
        "Measured speedup at the deployed configuration: tokens per second of target time "
        "over plain decoding at the same batch size.",
        labels=cls,
    )
    m_low = GaugeMetricFamily(
        "specwise_measured_speedup_lower_ratio",
        "Lower end of the measured speedup's 90% interval.",
        labels=cls,
    )
    m_high = GaugeMetricFamily(
        "specwise_measured_speedup_upper_ratio",
        "Upper end of the measured speedup's 90% interval.",
        labels=cls,
    )
    inferred = GaugeMetricFamily(
        "specwise_inferred_speedup_ratio",
        "Speedup at the deployed configuration against plain decoding inferred from the fit "
        "(no plain window measured it: one k, no k = 0 period or replica); not a measurement, "
        "so not in specwise_measured_speedup_ratio or its alert.",
        labels=cls,
    )
    b_measured = GaugeMetricFamily(
        "specwise_band_measured_speedup_ratio",
        "Measured speedup per batch-size band of the deployed schedule (band = start-end).",
        labels=band,
    )
    b_predicted = GaugeMetricFamily(
        "specwise_band_predicted_speedup_ratio",
        "Predicted speedup per batch-size band of the recommended configuration.",
        labels=band,
    )
    b_share = GaugeMetricFamily(
        "specwise_band_share_ratio",
        "Share of busy time the batch size spent in each band of the recommended configuration.",
        labels=band,
    )
    b_k = GaugeMetricFamily(
        "specwise_band_k",
        "k of the recommended configuration per batch-size band (0: no drafts there).",
        labels=band,
    )
    costs = GaugeMetricFamily(
        "specwise_step_cost_seconds",
        "Fitted engine step time T(k, B) parameters: base, per_token and the drafter's "
        "draft_base and draft_per_seq in seconds; knee_tokens in tokens per step.",
        labels=[*cls, "part"],
    )
    implied_c = GaugeMetricFamily(
        "specwise_implied_draft_cost_ratio",
        "Drafter cost c implied by the fit at the mean batch size (one drafter step over a "
        "plain step).",
        labels=cls,
    )
    implied_v = GaugeMetricFamily(
        "specwise_implied_verify_cost_ratio",
        "Verify cost v(k) implied by the fit at the deployed k and the mean batch size (in "
        "plain steps).",
        labels=cls,
    )
    quantiles = GaugeMetricFamily(
        "specwise_batch_size",
        "Running batch size (requests) quantiles over the load horizon, busy time only.",
        labels=[*cls, "quantile"],
    )
    mean = GaugeMetricFamily(
        "specwise_batch_size_mean",
        "Mean running batch size (requests) over the load horizon, busy time only.",
        labels=cls,
    )
    aware = GaugeMetricFamily(
        "specwise_load_aware",
        "1 when the class is priced from its measured step times and batch sizes, 0 when "
        "its latency families are missing (constant-cost model).",
        labels=cls,
    )
    for c in st.classes:
        load = c.load
        if load is None:
            continue
        v = [c.name]
        aware.add_metric(v, 1.0 if load.get("load_aware") else 0.0)
        m = load.get("measured") or {}
        if m.get("basis") == "inferred":  # plain decoding from the fit, not from windows
            x = _number(m.get("value"))
            if x is not None:
                inferred.add_metric(v, x)
        else:
            for fam, key in ((measured, "value"), (m_low, "low"), (m_high, "high")):
                x = _number(m.get(key))
                if x is not None:
                    fam.add_metric(v, x)
        for b in load.get("bands_measured") or ():
            x = _number(b.get("value"))
            if x is not None and b.get("basis") != "inferred":
                b_measured.add_metric([c.name, str(b.get("band", ""))], x)
        for b in load.get("bands") or ():
            name = [c.name, str(b.get("band", ""))]
            for fam, key in ((b_predicted, "speedup"), (b_share, "share"), (b_k, "k")):
                x = _number(b.get(key))
                if x is not None:
                    fam.add_metric(name, x)
        cost = load.get("costs") or {}
        for part in STEP_COST_PARTS:
            x = _number(cost.get(part))
            if x is not None:
                costs.add_metric([c.name, part], x)
        for fam, key in ((implied_c, "implied_draft_cost"), (implied_v, "implied_verify_cost")):
            x = _number(cost.get(key))
            if x is not None:
                fam.add_metric(v, x)
        batch = load.get("batch") or {}
        for q, key in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99")):
            x = _number(batch.get(key))
            if x is not None:
                quantiles.add_metric([c.name, q], x)
        x = _number(batch.get("mean"))
        if x is not None:
            mean.add_metric(v, x)
    yield from (measured, m_low, m_high, inferred, b_measured, b_predicted, b_share, b_k)
    yield from (costs, implied_c, implied_v, quantiles, mean, aware)


def controller_registry(state: StateFn) -> CollectorRegistry:
    """A fresh registry holding only the controller's collector (never the global one)."""
    registry = CollectorRegistry()
    registry.register(ControllerCollector(state))
    return registry


def make_app(
    registry: CollectorRegistry,
    state: StateFn,
    healthy: Callable[[], tuple[bool, str]],
    *,
    probe: ProbeTrigger | None = None,
) -> Callable[..., Iterable[bytes]]:
    """WSGI app: ``/metrics`` (prometheus_client), ``/healthz``, ``/recommendations`` (JSON);
    with ``probe``, ``POST /probe?class=NAME`` triggers a probe (#15)."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/probe" and probe is not None:
            return _probe_endpoint(environ, start_response, probe)
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            ok, detail = healthy()
            body = (detail + "\n").encode()
            start_response(
                "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
            )
            return [body]
        if path == "/recommendations":
            body = json.dumps(state().to_json(), indent=2, allow_nan=False).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not Found: try /metrics, /healthz or /recommendations\n"]

    return app


#: ``class name -> (HTTP status, one sentence)`` (:func:`specwise.controller.probing.probe_trigger`)
ProbeTrigger = Callable[[str], tuple[int, str]]
_REASONS = {202: "202 Accepted", 400: "400 Bad Request", 404: "404 Not Found", 409: "409 Conflict"}


def _probe_endpoint(
    environ: dict[str, Any], start_response: Callable[..., Any], probe: ProbeTrigger
) -> Iterable[bytes]:
    """``POST /probe?class=NAME``: one sentence back, 202 when the probe was requested."""
    if environ.get("REQUEST_METHOD", "GET") != "POST":
        start_response(
            "405 Method Not Allowed", [("Content-Type", "text/plain"), ("Allow", "POST")]
        )
        return [b"use POST /probe?class=NAME to request a probe\n"]
    names = parse_qs(environ.get("QUERY_STRING", "")).get("class", [])
    if len(names) != 1 or not names[0]:
        code, text = 400, "name one class, as in POST /probe?class=code"
    else:
        code, text = probe(names[0])
    start_response(_REASONS.get(code, f"{code} Error"), [("Content-Type", "text/plain")])
    return [(text + "\n").encode()]


class _SilentHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class _ThreadingWSGIServer6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class ExporterServer:
    """Serves the app on host:port (port 0 picks a free one) in a daemon thread.

    ``host`` may be an IPv6 address (``::1``, without brackets). A port already in use or an
    address the machine does not have raises a ``ConfigError`` naming it.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], host: str = "127.0.0.1", port: int = 0):
        server_class = _ThreadingWSGIServer6 if ":" in host else ThreadingWSGIServer
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.httpd = make_server(host, port, app, server_class, handler_class=_SilentHandler)
        except OSError as exc:
            fix = (
                "another process holds that port: stop it or set [controller] listen to a free port"
                if exc.errno == errno.EADDRINUSE
                else "set [controller] listen to an address of this machine, e.g. 127.0.0.1:9464"
            )
            raise ConfigError(
                f"Cannot listen on {shown} ({exc.strerror or exc}); {fix}",
                field="[controller] listen",
            ) from exc
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{text}]" if ":" in text else text
        return f"http://{shown}:{port}"

    def start(self) -> ExporterServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)
