"""vLLM log lines: every format, the real 0.32 log, D recovery, engines, years."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from specwise.collectors.deltas import series_deltas
from specwise.collectors.exposition import parse_exposition
from specwise.collectors.logs import (
    LogSource,
    log_snapshots,
    parse_log_lines,
    per_position_slack,
    recover_drafts,
)
from specwise.errors import ParseError, SourceError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vllm"

EXAMPLES = {
    "v0-05x": "INFO 07-24 04:00:31 metrics.py:316] Speculative metrics: Draft acceptance rate: 0.000, System efficiency: 0.059, Number of speculative tokens: 16, Number of accepted tokens: 0, Number of draft tokens tokens: 42272, Number of emitted tokens tokens: 2642.",  # noqa: E501
    "v0-06": "INFO 10-16 19:05:47 metrics.py:367] Speculative metrics: Draft acceptance rate: 0.642, System efficiency: 0.598, Number of speculative tokens: 3, Number of accepted tokens: 8547, Number of draft tokens: 13311, Number of emitted tokens: 10616.",  # noqa: E501
    "v1-dev": "Speculative metrics: Draft acceptance rate: 1.000, Number of accepted tokens: 66, Number of draft tokens: 66, ",  # noqa: E501
    "v1-084": "SpecDecoding metrics: Draft acceptance rate: 38.8%, Accepted: 150 tokens, Drafted: 387 tokens",  # noqa: E501
    "v1-085": "INFO 06-06 14:20:34 [metrics.py:86] SpecDecoding metrics: Draft acceptance rate: 38.8%, Mean acceptance length: 2.16, Accepted: 150 tokens, Drafted: 387 tokens, Per-position acceptance rate: 0.543, 0.357, 0.264",  # noqa: E501
    "v1-032": "vllm_gb10_server  | (APIServer pid=11197) INFO 11-28 16:59:37 [metrics.py:120] SpecDecoding metrics: Mean acceptance length: 3.75, Accepted throughput: 0.24 tokens/s, Drafted throughput: 0.33 tokens/s, Accepted: 11 tokens, Drafted: 15 tokens, Per-position acceptance rate: 1.000, 0.750, 0.500, 0.500, Avg Draft acceptance rate: 73.3%",  # noqa: E501
}


@pytest.mark.parametrize(
    ("key", "gen", "drafts", "tokens", "accepted", "per_pos", "k"),
    [
        ("v0-05x", "v0", None, 42272, 0, (), 16),
        ("v0-06", "v0", None, 13311, 8547, (), 3),
        ("v1-dev", "v1-0.8.4", None, 66, 66, (), None),
        ("v1-084", "v1-0.8.4", None, 387, 150, (), None),
        ("v1-085", "v1", 129, 387, 150, (70, 46, 34), 3),
        ("v1-032", "v1", 4, 15, 11, (4, 3, 2, 2), 4),
    ],
)
def test_every_format(
    key: str,
    gen: str,
    drafts: int | None,
    tokens: int,
    accepted: int,
    per_pos: tuple[int, ...],
    k: int | None,
) -> None:
    [it] = parse_log_lines([EXAMPLES[key]], year=2025)
    assert (it.generation, it.drafts, it.draft_tokens, it.accepted) == (
        gen,
        drafts,
        tokens,
        accepted,
    )
    assert it.accepted_per_position == per_pos
    assert it.k == k
    assert it.cumulative == (gen == "v0")
    if gen == "v0":
        assert any("since the engine started" in n for n in it.notes)


def test_real_log_sums_to_final_counters() -> None:
    log = (FIXTURES / "server-ngram.log").read_text().splitlines()
    snaps = log_snapshots(log, year=2026)
    final = parse_exposition((FIXTURES / "metrics-ngram-5-final.txt").read_text(), timestamp=0)[0]
    last = snaps[-1]
    assert len(snaps) == 5
    assert last.labels == {"engine": "0", "model_name": "tiny-llama"}
    assert (last.drafts, last.draft_tokens, last.accepted) == (2946, 11252, 8255)
    assert last.accepted_per_position == final.accepted_per_position
    assert snaps[0].timestamp == datetime(2026, 11, 28, 16, 59, 37, tzinfo=UTC).timestamp()
    [d] = series_deltas(snaps)
    assert d.accepted == 8255 - 11


def test_recover_drafts_checks_rates() -> None:
    assert recover_drafts(11, 3.75, [1.0, 0.75, 0.5, 0.5]) == (4, [4, 3, 2, 2])
    assert recover_drafts(0, 1.0, [0.0, 0.0]) is None
    assert recover_drafts(10, 9.99, [0.9, 0.1]) is None


def test_zero_accepted_interval_estimates_drafts_and_says_so() -> None:
    line = "SpecDecoding metrics: Mean acceptance length: 1.00, Accepted throughput: 0.00 tokens/s, Drafted throughput: 1.00 tokens/s, Accepted: 0 tokens, Drafted: 30 tokens, Per-position acceptance rate: 0.000, 0.000, 0.000, Avg Draft acceptance rate: 0.0%"  # noqa: E501
    [it] = parse_log_lines([line], year=2025)
    assert it.drafts == 10
    assert it.accepted_per_position == (0, 0, 0)
    assert any("estimated" in n for n in it.notes)


def test_inconsistent_line_is_a_parse_error() -> None:
    bad = "SpecDecoding metrics: Mean acceptance length: 9.00, Accepted: 10 tokens, Drafted: 20 tokens, Per-position acceptance rate: 0.100, 0.100"  # noqa: E501
    with pytest.raises(ParseError, match="Line 1"):
        parse_log_lines([bad], year=2025)


def test_engine_index_from_preceding_engine_line_and_timezone() -> None:
    lines = [
        "(APIServer pid=1) INFO 12-31 23:59:59 [loggers.py:123] Engine 001: Avg prompt throughput: 0.0 tokens/s, GPU KV cache usage: 0.0%",  # noqa: E501
        EXAMPLES["v1-032"].replace("11-28 16:59:37", "12-31 23:59:59"),
        "(APIServer pid=1) INFO 01-01 00:00:09 [loggers.py:123] Engine 000: Avg prompt throughput: 0.0 tokens/s",  # noqa: E501
        EXAMPLES["v1-032"].replace("11-28 16:59:37", "01-01 00:00:09"),
    ]
    tz = timezone(timedelta(hours=2))
    snaps = log_snapshots(lines, year=2025, tz=tz, labels={"job": "vllm"})
    assert [s.labels["engine"] for s in snaps] == ["1", "0"]
    assert snaps[0].labels["job"] == "vllm"
    assert snaps[1].timestamp == datetime(2026, 1, 1, 0, 0, 9, tzinfo=tz).timestamp()


def test_log_source_file_and_stdin(tmp_path: Path) -> None:
    src = LogSource(str(FIXTURES / "server-ngram.log"), year=2026)
    assert src.collect(0)[-1].accepted == 8255
    stdin = io.StringIO(EXAMPLES["v1-032"] + "\n")
    assert LogSource("-", year=2026, stdin=stdin).collect(0)[0].accepted == 11
    with pytest.raises(SourceError, match="Cannot read log file"):
        LogSource(str(tmp_path / "missing.log"), year=2026).collect(0)


def test_drafts_recovered_within_the_drafted_tokens_bound() -> None:
    """Real vLLM 0.32 lines of a random draft model (k = 3, almost nothing accepted): the
    rounded rates fit many drafts counts, but no draft holds more than k tokens, so
    D >= Drafted / k; the lines add up to the server's counters (found by the e2e suite)."""
    prefix = "(APIServer pid=24890) INFO 11-28 18:24:{s} [metrics.py:120] SpecDecoding metrics: "
    lines = [
        prefix.format(s=20) + "Mean acceptance length: 1.00, Accepted throughput: 0.16 tokens/s, "
        "Drafted throughput: 141.55 tokens/s, Accepted: 1 tokens, Drafted: 867 tokens, "
        "Per-position acceptance rate: 0.003, 0.000, 0.000, Avg Draft acceptance rate: 0.1%",
        prefix.format(s=25) + "Mean acceptance length: 1.00, Accepted throughput: 0.20 tokens/s, "
        "Drafted throughput: 958.46 tokens/s, Accepted: 1 tokens, Drafted: 4794 tokens, "
        "Per-position acceptance rate: 0.001, 0.000, 0.000, Avg Draft acceptance rate: 0.0%",
        prefix.format(s=30) + "Mean acceptance length: 1.00, Accepted throughput: 0.60 tokens/s, "
        "Drafted throughput: 679.05 tokens/s, Accepted: 3 tokens, Drafted: 3396 tokens, "
        "Per-position acceptance rate: 0.003, 0.000, 0.000, Avg Draft acceptance rate: 0.1%",
    ]
    last = log_snapshots(lines, year=2026)[-1]
    assert last.k == 3
    assert last.draft_tokens == 9057
    assert last.accepted == 5
    assert last.drafts == 3019  # vllm:spec_decode_num_drafts_total on the same server
    assert last.draft_tokens <= last.k * last.drafts


def _line(drafts: int, per_pos: tuple[int, ...], drafted: int) -> str:
    """A vLLM 0.32 SpecDecoding line for these true counts, rounded as vLLM prints them."""
    accepted = sum(per_pos)
    rates = ", ".join(f"{p / drafts:.3f}" for p in per_pos)
    return (
        "(APIServer pid=1) INFO 11-28 16:59:37 [metrics.py:120] SpecDecoding metrics: "
        f"Mean acceptance length: {1 + accepted / drafts:.2f}, Accepted throughput: 0.10 "
        f"tokens/s, Drafted throughput: 100.00 tokens/s, Accepted: {accepted} tokens, "
        f"Drafted: {drafted} tokens, Per-position acceptance rate: {rates}, "
        f"Avg Draft acceptance rate: {100 * accepted / drafted:.1f}%"
    )


def test_rounded_rates_4_1_0_against_5_0_0_stay_within_the_stated_bound() -> None:
    # The e2e random drafter (k = 3): 2,670 drafts accepting 4 first tokens print
    # "0.001, 0.000, 0.000", which (4, 0, 0), (3, 1, 0) and (2, 1, 1) all reproduce; with
    # a second line (1, 0, 0) the log reads (4, 1, 0) where the counters say (5, 0, 0).
    lines = [_line(2670, (4, 0, 0), 8010), _line(349, (1, 0, 0), 1047)]
    first, second = parse_log_lines(lines, year=2026)
    assert first.drafts == 2670
    assert first.per_position_range == ((2, 4), (0, 1), (0, 1))
    assert second.per_position_range == ((1, 1), (0, 0), (0, 0))  # determined exactly
    [*_, total] = log_snapshots(lines, year=2026)
    truth = (5, 0, 0)
    assert total.accepted == 5
    assert total.drafts == 2670 + 349
    slack = per_position_slack([first, second])
    assert slack == (2, 1, 1)
    for got, true, bound in zip(total.accepted_per_position, truth, slack, strict=True):
        assert abs(got - true) <= bound
    pos = total.accepted_per_position
    assert all(pos[i + 1] <= pos[i] for i in range(len(pos) - 1))


def test_recovered_counts_keep_the_prefix_order() -> None:
    # 1,252 drafts with (3, 2, 0) print "0.002, 0.002, 0.000"; the former split broke the
    # prefix order with (2, 3, 0): more drafts past position 1 than past position 0. With
    # the order, the line determines the split exactly.
    [it] = parse_log_lines([_line(1252, (3, 2, 0), 3756)], year=2026)
    assert it.accepted_per_position == (3, 2, 0)
    assert it.per_position_range == ((3, 3), (2, 2), (0, 0))
    assert per_position_slack([it]) == (0, 0, 0)
