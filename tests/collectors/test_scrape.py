"""Direct scraping of real HTTP servers: a prometheus_client exporter and a fault server."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from specwise.collectors.deltas import window_deltas
from specwise.collectors.scrape import ACCEPT_HEADER, FileSource, ScrapeSource
from specwise.collectors.snapshot import SnapshotSource
from specwise.errors import ParseError, SourceError

try:
    from tests.servers import Exporter, FaultResponse, FaultServer, start_exporter
except ImportError:
    from servers import (  # type: ignore[no-redef]
        Exporter,
        FaultResponse,
        FaultServer,
        start_exporter,
    )

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vllm"
FINAL = (FIXTURES / "metrics-ngram-5-final.txt").read_bytes()


@pytest.fixture
def session() -> requests.Session:
    with requests.Session() as s:
        yield s  # type: ignore[misc]


def test_scrape_real_exporter(vllm_exporter: Exporter, session: requests.Session) -> None:
    labels = {"engine": "0", "model_name": "m"}
    vllm_exporter.collector.add(
        labels, drafts=10, draft_tokens=40, accepted=20, per_position=[8, 6, 4, 2]
    )
    src = ScrapeSource([vllm_exporter.url], session=session, timeout=5)
    assert isinstance(src, SnapshotSource)
    first = src.collect(100.0)
    vllm_exporter.collector.add(
        labels, drafts=5, draft_tokens=20, accepted=5, per_position=[3, 1, 1, 0]
    )
    second = src.collect(110.0)
    [s] = second
    assert s.labels == {**labels, "instance": vllm_exporter.address}
    assert (s.drafts, s.draft_tokens, s.accepted, s.k) == (15, 60, 25, 4)
    [d] = window_deltas(first, second)
    assert (d.drafts, d.draft_tokens, d.accepted) == (5, 20, 5)
    assert d.accepted_per_position == (3, 1, 1, 0)
    assert src.errors == []


def test_two_servers_engine_zero_never_collide(session: requests.Session) -> None:
    a, b = start_exporter(), start_exporter()
    try:
        for exp, n in ((a, 10), (b, 20)):
            exp.collector.add(
                {"engine": "0", "model_name": "m"},
                drafts=n, draft_tokens=n, accepted=n, per_position=[n, 0, 0, 0],
            )  # fmt: skip
        snaps = ScrapeSource([a.url, b.url], session=session).collect(0)
        assert sorted(s.drafts or 0 for s in snaps) == [10, 20]
        assert len({s.key for s in snaps}) == 2
    finally:
        a.stop()
        b.stop()


def test_sends_plain_text_accept(fault_server: FaultServer, session: requests.Session) -> None:
    fault_server.routes["/metrics"] = FaultResponse(body=FINAL)
    [s] = ScrapeSource([fault_server.base_url + "/metrics"], session=session).collect(0)
    assert s.accepted == 8255
    assert fault_server.requests[0][2]["Accept"] == ACCEPT_HEADER


@pytest.mark.parametrize(
    ("response", "error", "match"),
    [
        (FaultResponse(500, b"internal error"), SourceError, "answered HTTP 500"),
        (FaultResponse(body=FINAL, delay=3.0), SourceError, "timed out after 0.5 s"),
        (FaultResponse(body=FINAL[:5000], declared_length=len(FINAL)), ParseError, "cut off"),
        (FaultResponse(body=FINAL[: FINAL.index(b'position="2"')]), ParseError, "truncated"),
    ],
    ids=["500", "timeout", "short-body", "cut-mid-line"],
)
def test_faults_are_clear_errors_and_never_hide_the_good_target(
    fault_server: FaultServer,
    vllm_exporter: Exporter,
    session: requests.Session,
    response: FaultResponse,
    error: type[Exception],
    match: str,
) -> None:
    vllm_exporter.collector.add(
        {"engine": "0", "model_name": "good"},
        drafts=1, draft_tokens=1, accepted=1, per_position=[1, 0, 0, 0],
    )  # fmt: skip
    fault_server.routes["/metrics"] = response
    bad = fault_server.base_url + "/metrics"
    src = ScrapeSource([bad, vllm_exporter.url], session=session, timeout=0.5)
    results = src.scrape(0)
    assert results[0].target == bad
    assert isinstance(results[0].error, error)
    assert results[0].error is not None
    assert match in str(results[0].error)
    assert str(results[0].error).endswith(".")
    [good] = src.collect(0)
    assert good.labels["model_name"] == "good"
    assert len(src.errors) == 1


def test_garbage_body_is_a_parse_error_not_an_empty_page(
    fault_server: FaultServer, session: requests.Session
) -> None:
    """A body with no sample at all is not "speculation off": it is the wrong endpoint."""
    fault_server.routes["/metrics"] = FaultResponse(body=b"\x89PNG\r\n\x1a\n garbage\n")
    with pytest.raises(ParseError, match="holds no Prometheus sample at all"):
        ScrapeSource([fault_server.base_url + "/metrics"], session=session).collect(0)
    # a real vLLM page without speculation is a load-only Snapshot, not an error
    fault_server.routes["/metrics"] = FaultResponse(
        body=(FIXTURES / "metrics-nospec-baseline-after-20req.txt").read_bytes()
    )
    [snap] = ScrapeSource([fault_server.base_url + "/metrics"], session=session).collect(0)
    assert snap.spec_families is False
    assert snap.k == 0
    assert snap.iteration_steps == 1145


def test_all_targets_failing_raises(session: requests.Session) -> None:
    src = ScrapeSource(
        ["http://127.0.0.1:9/metrics", "http://127.0.0.1:9/other"], session=session, timeout=1
    )
    with pytest.raises(SourceError, match="All 2 targets failed"):
        src.collect(0)
    with pytest.raises(SourceError, match="No /metrics URL"):
        ScrapeSource([], session=session)


def test_file_source(tmp_path: Path) -> None:
    [s] = FileSource(FIXTURES / "metrics-ngram-5-final.txt").collect(5.0)
    assert s.accepted == 8255
    assert s.labels["instance"].endswith("metrics-ngram-5-final.txt")
    with pytest.raises(SourceError, match="Cannot read metrics file"):
        FileSource(tmp_path / "nope.txt").collect(0)
