"""Load from vLLM's ``Engine NNN: Avg prompt throughput: ...`` log lines (#14): batch-size
samples and generation tokens; engines without speculation give load-only Snapshots; logs
have no step times, and say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from specwise.collectors.classes import ClassConfig
from specwise.collectors.deltas import series_deltas, since_start, sum_by_class
from specwise.collectors.exposition import parse_exposition
from specwise.collectors.logs import (
    LOG_LOAD_NOTE,
    LogSource,
    log_interval,
    log_snapshots,
    parse_engine_lines,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vllm"
LOG = FIXTURES / "server-ngram.log"

PREFIX = "(APIServer pid=7) INFO 11-28 17:{mm:02d}:{ss:02d} [loggers.py:335] "
ENGINE = (
    "Engine {e:03d}: Avg prompt throughput: 1.0 tokens/s, Avg generation throughput: {g} "
    "tokens/s, Running: {r} reqs, Waiting: {w} reqs, CPU KV cache usage: 1.0%, Prefix cache "
    "hit rate: 0.0%"
)
SPEC = (
    "(APIServer pid=7) INFO 11-28 17:{mm:02d}:{ss:02d} [metrics.py:120] SpecDecoding metrics: "
    "Mean acceptance length: 3.75, Accepted throughput: 0.24 tokens/s, Drafted throughput: "
    "0.33 tokens/s, Accepted: 11 tokens, Drafted: 15 tokens, Per-position acceptance rate: "
    "1.000, 0.750, 0.500, 0.500, Avg Draft acceptance rate: 73.3%"
)


def engine_line(t: int, e: int, g: float, r: int, w: int = 0) -> str:
    return PREFIX.format(mm=t // 60, ss=t % 60) + ENGINE.format(e=e, g=g, r=r, w=w)


def test_real_log_generation_tokens_match_the_counters() -> None:
    lines = LOG.read_text().splitlines()
    engine = parse_engine_lines(lines, year=2026)
    assert len(engine) == 9
    assert log_interval(e.timestamp for e in engine) == 5.0
    assert engine[1].generation_throughput == 228.9
    assert (engine[1].running, engine[1].waiting, engine[1].engine) == (0, 0, "0")
    snaps = log_snapshots(lines, year=2026)
    assert all(s.spec_families for s in snaps)
    # throughput x interval, summed, against the /metrics captures taken at those points
    for n, name in ((1, "metrics-ngram-1-after-20req.txt"), (2, "metrics-ngram-2-after-40req.txt"),
                    (-1, "metrics-ngram-5-final.txt")):  # fmt: skip
        [page] = parse_exposition((FIXTURES / name).read_text(), timestamp=0)
        assert snaps[n].drafts == page.drafts
        assert snaps[n].generation_tokens == pytest.approx(page.generation_tokens, abs=2)
    assert all(s.running_requests == 0 for s in snaps)
    assert snaps[2].batch_samples == (0.0, 0.0)  # two engine lines since the previous one
    # no step times in a log: the latency and iteration families stay None, with a note
    last = snaps[-1]
    assert last.itl_seconds_count is None
    assert last.iteration_steps is None
    assert LOG_LOAD_NOTE in last.notes


def test_engine_without_speculation_gives_load_only_snapshots() -> None:
    lines = [
        engine_line(0, 0, 50.0, 2),
        engine_line(10, 0, 100.0, 4, w=1),
        engine_line(20, 0, 80.5, 3),
        # an idle gap (lines not printed): the next interval is still one log interval
        engine_line(60, 0, 20.0, 1),
    ]
    snaps = log_snapshots(lines, year=2026)
    assert len(snaps) == 4
    assert all(not s.spec_families for s in snaps)
    assert all((s.k, s.drafts, s.draft_tokens) == (0, 0, 0) for s in snaps)
    assert [s.running_requests for s in snaps] == [2, 4, 3, 1]
    assert snaps[-1].generation_tokens == pytest.approx((50 + 100 + 80.5 + 20) * 10)
    [d] = series_deltas(snaps)
    assert d.spec_families is False
    assert d.generation_tokens == pytest.approx((100 + 80.5 + 20) * 10)
    assert d.batch_samples == (4, 3, 1)
    [c] = sum_by_class([d], ClassConfig())
    assert c.spec_families is False
    assert LOG_LOAD_NOTE in c.notes


def test_dp_engines_and_spec_lines_carry_their_own_samples() -> None:
    lines = [
        engine_line(0, 0, 10.0, 1),
        engine_line(0, 1, 30.0, 7),
        SPEC.format(mm=0, ss=0),  # engine 1's (the last Engine line before it)
        engine_line(5, 0, 10.0, 2),
        engine_line(5, 1, 30.0, 8),
        SPEC.format(mm=0, ss=5),
        engine_line(10, 1, 40.0, 9),
        SPEC.format(mm=0, ss=10),
    ]
    snaps = log_snapshots(lines, year=2026)
    spec = [s for s in snaps if s.spec_families]
    plain = [s for s in snaps if not s.spec_families]
    assert {s.labels["engine"] for s in spec} == {"1"}
    assert {s.labels["engine"] for s in plain} == {"0"}
    assert [s.batch_samples for s in spec] == [(7.0,), (8.0,), (9.0,)]
    assert spec[-1].generation_tokens == pytest.approx((30 + 30 + 40) * 5)
    assert spec[-1].drafts == 3 * 4
    [d] = series_deltas(spec)
    assert d.batch_samples == (8.0, 9.0)
    assert d.generation_tokens == pytest.approx((30 + 40) * 5)
    # one capture's worth (since start): the last snapshot's samples
    assert since_start(spec[-1]).batch_samples == (9.0,)


def test_v0_engine_line_and_single_line_has_no_interval(tmp_path: Path) -> None:
    v0 = (
        "INFO 10-16 19:05:47 metrics.py:341] Avg prompt throughput: 0.0 tokens/s, Avg "
        "generation throughput: 12.5 tokens/s, Running: 6 reqs, Swapped: 0 reqs, Pending: 2 "
        "reqs, GPU KV cache usage: 1.2%, CPU KV cache usage: 0.0%."
    )
    log = tmp_path / "v0.log"
    log.write_text(v0 + "\n")
    [s] = LogSource(str(log), year=2026).collect(0)
    assert s.spec_families is False
    assert s.running_requests == 6
    assert s.labels["engine"] == "0"
    assert s.generation_tokens is None  # one line: no interval to turn tok/s into tokens
    [e] = parse_engine_lines([v0], year=2026)
    assert e.waiting == 2
