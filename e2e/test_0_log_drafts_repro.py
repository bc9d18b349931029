"""Regression test (no vLLM needed) for a log-collector bug the end-to-end suite found.

Three real ``SpecDecoding metrics:`` lines from vLLM 0.32.0 (CPU) serving the tiny target with
an independently random draft model at k = 3, and the server's /metrics counters after them
(the lines add up to the counters: 867 + 4794 + 3396 = 9057 draft tokens, 1 + 1 + 3 = 5
accepted). A draft model always proposes k tokens, so the true drafts per interval are
Drafted / 3 = 289, 1598 and 1132: 3019, as ``vllm:spec_decode_num_drafts_total`` says.

``specwise.collectors.logs.recover_drafts`` used to ignore the line's ``Drafted: T`` count:
with few accepted tokens the ``%.3f`` rates fit many D, and it took the one nearest
A / sum(rates) (333, 1000, 1000 = 2333), which breaks T <= k * D (4794 > 3 * 1000): 23% too
few drafts. Fixed in fc910cd (D >= ceil(T / k), preferring the bound when the rates allow it);
this was a strict xfail until then.
"""

from __future__ import annotations

from specwise.collectors.logs import log_snapshots

PREFIX = "(APIServer pid=24890) INFO 11-28 18:24:{s} [metrics.py:120] SpecDecoding metrics: "
LINES = [
    PREFIX.format(s=20) + "Mean acceptance length: 1.00, Accepted throughput: 0.16 tokens/s, "
    "Drafted throughput: 141.55 tokens/s, Accepted: 1 tokens, Drafted: 867 tokens, "
    "Per-position acceptance rate: 0.003, 0.000, 0.000, Avg Draft acceptance rate: 0.1%",
    PREFIX.format(s=25) + "Mean acceptance length: 1.00, Accepted throughput: 0.20 tokens/s, "
    "Drafted throughput: 958.46 tokens/s, Accepted: 1 tokens, Drafted: 4794 tokens, "
    "Per-position acceptance rate: 0.001, 0.000, 0.000, Avg Draft acceptance rate: 0.0%",
    PREFIX.format(s=30) + "Mean acceptance length: 1.00, Accepted throughput: 0.60 tokens/s, "
    "Drafted throughput: 679.05 tokens/s, Accepted: 3 tokens, Drafted: 3396 tokens, "
    "Per-position acceptance rate: 0.003, 0.000, 0.000, Avg Draft acceptance rate: 0.1%",
]
# /metrics right after the last line (same server)
COUNTERS = {"drafts": 3019.0, "draft_tokens": 9057.0, "accepted": 5.0, "per_pos": (5.0, 0.0, 0.0)}


def test_log_totals_match_what_the_lines_say() -> None:
    last = log_snapshots(LINES, year=2026)[-1]
    assert last.draft_tokens == COUNTERS["draft_tokens"]
    assert last.accepted == COUNTERS["accepted"]
    assert last.accepted_per_position == COUNTERS["per_pos"]


def test_recovered_drafts_respect_drafted_tokens() -> None:
    last = log_snapshots(LINES, year=2026)[-1]
    assert last.drafts is not None
    assert last.k == 3
    assert last.draft_tokens <= last.k * last.drafts  # was 9057 <= 3 * 2333
    assert last.drafts == COUNTERS["drafts"]
