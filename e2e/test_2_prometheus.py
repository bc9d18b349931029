"""Scenario 3, through Prometheus: a real Prometheus scrapes the live vLLM every second; the
Prometheus collector's alpha over a window equals the direct scrape's over the same load.

The server runs ngram prompt lookup (k = 4): an intermediate alpha and drafts shorter than k,
so the comparison is not between two alphas pinned at 0 or 1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import CLASS_MATCH, VLLMServer, report, specwise_cli

from specwise.collectors.classes import ClassConfig
from specwise.collectors.deltas import sum_by_class, window_deltas
from specwise.collectors.prometheus import PrometheusClient, PrometheusSource
from specwise.collectors.scrape import ScrapeSource
from specwise.collectors.snapshot import Snapshot
from specwise.estimation.estimator import EstimatorConfig, estimate_delta
from tests.servers import ManagedProcess, start_prometheus

pytestmark = pytest.mark.timeout(600)

CLASSES = ClassConfig.from_mapping({"tiny": CLASS_MATCH})


@pytest.fixture
def prometheus(vllm: VLLMServer, tmp_path: Path) -> Iterator[ManagedProcess]:
    vllm.ensure(vllm.ngram(4))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "vllm",
                "static_configs": [{"targets": [f"127.0.0.1:{vllm.port}"]}],
            }
        ],
    }
    prom = start_prometheus(tmp_path / "prometheus", config=config)
    try:
        yield prom
    finally:
        prom.stop()


def _wait_for_series(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    query = 'count_over_time({__name__=~"vllm[:_]spec_decode_num_drafts_total"}[1m])'
    while time.monotonic() < deadline:
        with requests.get(f"{base}/api/v1/query", params={"query": query}, timeout=5) as r:
            result = r.json()["data"]["result"]
        if result and float(result[0]["value"][1]) >= 3:
            return
        time.sleep(0.5)
    pytest.fail("Prometheus did not scrape vLLM's spec-decode counters in time")


QUIET = 12


def _quiet_counters(scrape: ScrapeSource, timeout: float = 120.0) -> list[Snapshot]:
    """The counters once they have not moved for QUIET seconds (bounded wait)."""
    deadline = time.time() + timeout
    last = scrape.collect(time.time())
    while time.time() < deadline:
        time.sleep(QUIET)
        now = scrape.collect(time.time())
        if [s.draft_tokens for s in now] == [s.draft_tokens for s in last]:
            return now
        last = now
    pytest.fail(f"vLLM's spec-decode counters kept moving for {timeout:.0f} s with no load")


def test_prometheus_alpha_equals_direct_scrape(
    vllm: VLLMServer, prometheus: ManagedProcess
) -> None:
    _wait_for_series(prometheus.base_url)
    est = EstimatorConfig(min_drafts=100)
    with requests.Session() as session:
        scrape = ScrapeSource([vllm.metrics_url], session=session, timeout=10)
        # the counters must be flat for QUIET seconds before t0: the CLI below starts its
        # window QUIET / 2 earlier, to cover the load whatever its own start-up takes, yet
        # after the series' first samples (increase() extrapolates unevenly across a start)
        before = _quiet_counters(scrape)
        t0 = time.time()
        load = vllm.drive(64, max_tokens=128, repeat=6, seed=100)
        time.sleep(4)  # a few scrapes of the final (now flat) counters
        t1 = time.time()
        after = scrape.collect(t1)
        (direct,) = sum_by_class(window_deltas(before, after), CLASSES)
        time.sleep(2)
        now = time.time()
        window = now - t0 + 1.0  # covers the load; the counters were flat just before t0
        client = PrometheusClient(prometheus.base_url, session=session, timeout=30)
        source = PrometheusSource(client, classes=CLASSES)
        (via_prom,) = source.increase(now, window)
        (latest,) = source.latest(now)
    d = estimate_delta("tiny", direct, now=t1, config=est)
    p = estimate_delta("tiny", via_prom, now=now, config=est)
    assert direct.drafts is not None
    assert direct.drafts >= 300
    assert d.alpha is not None
    assert p.alpha is not None
    # increase() extrapolates to the window's edges: every counter of one scrape by the same
    # factor (the samples share timestamps), so counts differ by that factor and alpha not
    factor = via_prom.draft_tokens / direct.draft_tokens
    assert 0.8 < factor < 1.5
    assert via_prom.drafts is not None
    assert via_prom.drafts / direct.drafts == pytest.approx(factor, rel=1e-6)
    assert via_prom.accepted / direct.accepted == pytest.approx(factor, rel=1e-6)
    for got, want in zip(via_prom.accepted_per_position, direct.accepted_per_position):
        assert got == pytest.approx(want * factor, rel=1e-6, abs=1e-9)
    assert p.alpha == pytest.approx(d.alpha, abs=1e-3)
    assert via_prom.k == direct.k == 4
    # the raw counters Prometheus stored are the very values of the direct scrape
    (final,) = after  # one server, one engine, one model: one series
    assert latest.drafts == final.drafts
    assert latest.draft_tokens == final.draft_tokens
    assert latest.accepted == final.accepted
    assert latest.accepted_per_position == final.accepted_per_position
    # and the CLI over Prometheus agrees with the library's direct estimate
    (cli,) = specwise_cli(
        [
            "recommend",
            "--prometheus",
            prometheus.base_url,
            "--window",
            f"{int(time.time() - t0) + QUIET // 2}s",
            "--cost",
            "0.3",
        ]
    )
    assert cli["alpha"] == pytest.approx(d.alpha, abs=1e-3)
    report(
        "prometheus vs direct scrape",
        requests=load.requests,
        direct_drafts=direct.drafts,
        direct_draft_tokens=direct.draft_tokens,
        prometheus_draft_tokens=via_prom.draft_tokens,
        direct_alpha=d.alpha,
        prometheus_alpha=p.alpha,
        cli_prometheus_alpha=cli["alpha"],
        window_seconds=round(window, 1),
        extrapolation_factor=round(factor, 4),
        direct_interval=[d.alpha_low, d.alpha_high],
        prometheus_interval=[p.alpha_low, p.alpha_high],
    )
