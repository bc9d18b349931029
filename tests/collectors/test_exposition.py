"""Parsing vLLM /metrics text: real 0.32 captures, every generation and spelling, traps."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from specwise.collectors.exposition import filter_exposition, parse_exposition
from specwise.errors import ParseError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vllm"


def read(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_real_final_capture() -> None:
    [s] = parse_exposition(read("metrics-ngram-5-final.txt"), timestamp=10.0, source="cap")
    assert dict(s.labels) == {"engine": "0", "model_name": "tiny-llama"}
    assert (s.drafts, s.draft_tokens, s.accepted) == (2946, 11252, 8255)
    assert s.accepted_per_position == (2491, 2147, 1919, 1698)
    assert s.k == 4
    assert s.generation == "v1"
    assert s.running_requests == 0
    assert s.generation_tokens == 13854
    assert s.itl_seconds_count == 5593
    assert s.itl_seconds_sum == pytest.approx(18.31472114799982)
    assert s.process_start_time == pytest.approx(1.79588506168e09)
    assert s.mean_acceptance_length == pytest.approx(1 + 8255 / 2946)
    assert s.timestamp == 10.0
    assert s.source == "cap"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("metrics-ngram-0-before-load.txt", (0, 0, 0, (0, 0, 0, 0))),
        ("metrics-ngram-5-final.txt", (2946, 11252, 8255, (2491, 2147, 1919, 1698))),
    ],
)
def test_real_captures(name: str, expected: tuple[float, ...]) -> None:
    [s] = parse_exposition(read(name), timestamp=0.0)
    assert (s.drafts, s.draft_tokens, s.accepted, s.accepted_per_position) == expected


def test_captures_grow_monotonically() -> None:
    snaps = [
        parse_exposition(read(n), timestamp=float(i))[0]
        for i, n in enumerate(
            [
                "metrics-ngram-0-before-load.txt",
                "metrics-ngram-1-after-20req.txt",
                "metrics-ngram-2-after-40req.txt",
                "metrics-ngram-5-final.txt",
            ]
        )
    ]
    for a, b in itertools.pairwise(snaps):
        assert b.drafts is not None
        assert a.drafts is not None
        assert b.drafts >= a.drafts
        assert b.accepted >= a.accepted


def test_no_speculation_gives_a_load_only_snapshot() -> None:
    # regression (#14): a vLLM page without spec-decode families used to yield nothing; its
    # load families now make a load-only Snapshot (k = 0, spec counters 0)
    [s] = parse_exposition(read("metrics-nospec-baseline-after-20req.txt"), timestamp=5.0)
    assert dict(s.labels) == {"engine": "0", "model_name": "tiny-llama"}
    assert s.spec_families is False
    assert (s.k, s.drafts, s.draft_tokens, s.accepted) == (0, 0, 0, 0)
    assert s.accepted_per_position == ()
    assert s.generation == "v1"
    assert (s.running_requests, s.generation_tokens) == (0, 1145)
    assert (s.iteration_steps, s.iteration_tokens) == (1145, 1503)
    assert (s.itl_seconds_count, s.itl_seconds_sum) == (1125, pytest.approx(1.6668552890002957))
    assert (s.tpot_seconds_count, s.tpot_seconds_sum) == (20, pytest.approx(0.029952995969483406))
    assert (s.decode_seconds_count, s.decode_seconds_sum) == (20, pytest.approx(1.6668552890002957))
    assert s.process_start_time is not None


def test_page_with_neither_family_gives_nothing() -> None:
    assert parse_exposition("", timestamp=0) == []
    page = "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 5.0\nfoo 1\n"
    assert parse_exposition(page, timestamp=0) == []
    other = '# TYPE vllm:num_preemptions_total counter\nvllm:num_preemptions_total{engine="0"} 3\n'
    assert parse_exposition(other, timestamp=0) == []


def test_real_capture_load_and_time_families() -> None:
    [s] = parse_exposition(read("metrics-ngram-5-final.txt"), timestamp=0.0)
    assert s.spec_families is True
    assert (s.iteration_steps, s.iteration_tokens) == (2191, 15292)
    assert (s.tpot_seconds_count, s.tpot_seconds_sum) == (81, pytest.approx(0.15680081736124898))
    assert (s.decode_seconds_count, s.decode_seconds_sum) == (81, pytest.approx(18.31472114799982))
    # per finished request: prefill, inference (= prefill + decode) and generated tokens
    assert (s.prefill_seconds_count, s.prefill_seconds_sum) == (
        81,
        pytest.approx(2.0144296189997135),
    )
    assert (s.inference_seconds_count, s.inference_seconds_sum) == (
        81,
        pytest.approx(20.329150766999533),
    )
    assert (s.request_tokens_count, s.request_tokens_sum) == (81, 13854)


def test_request_families_of_a_plain_server() -> None:
    [s] = parse_exposition(read("metrics-nospec-baseline-after-20req.txt"), timestamp=5.0)
    assert (s.inference_seconds_count, s.inference_seconds_sum) == (
        20,
        pytest.approx(1.744809164000344),
    )
    assert (s.prefill_seconds_count, s.prefill_seconds_sum) == (
        20,
        pytest.approx(0.07795387500004836),
    )
    assert (s.request_tokens_count, s.request_tokens_sum) == (20, 1145)


def test_load_families_both_spellings_and_histogram_named_total() -> None:
    page = (
        "# TYPE vllm:iteration_tokens_total histogram\n"
        'vllm_iteration_tokens_total_bucket{engine="0",model_name="m",le="1.0"} 3\n'
        'vllm_iteration_tokens_total_count{engine="0",model_name="m"} 7\n'
        'vllm_iteration_tokens_total_sum{engine="0",model_name="m"} 30\n'
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm_num_requests_running{engine="0",model_name="m"} 4\n'
    )
    [s] = parse_exposition(page, timestamp=0.0)
    assert (s.iteration_steps, s.iteration_tokens, s.running_requests) == (7, 30, 4)
    assert s.spec_families is False
    assert s.generation_tokens is None  # a family the page lacks stays None
    # a counter named like the histogram's samples is not read as one
    counter = (
        "# TYPE vllm:iteration_tokens_total counter\n"
        'vllm:iteration_tokens_total{engine="0",model_name="m"} 9\n'
        'vllm:num_requests_running{engine="0",model_name="m"} 1\n'
    )
    [c] = parse_exposition(counter, timestamp=0.0)
    assert c.iteration_steps is None
    assert c.iteration_tokens is None


def test_prefilter_equals_full_parse_on_real_page() -> None:
    text = read("metrics-ngram-5-final.txt")
    full = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if "spec_decode" in s.name and not s.name.endswith("_created")
    }
    kept = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(filter_exposition(text))
        for s in f.samples
        if "spec_decode" in s.name
    }
    assert kept == full
    assert "_created" not in filter_exposition(text)
    assert len(filter_exposition(text)) < len(text) / 10


UNDERSCORE = """\
# HELP vllm:spec_decode_num_drafts Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts counter
vllm_spec_decode_num_drafts_total{engine="0",model_name="m"} 10.0
vllm_spec_decode_num_drafts_created{engine="0",model_name="m"} 1.7e9
# TYPE vllm:spec_decode_num_draft_tokens counter
vllm_spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 40.0
# TYPE vllm:spec_decode_num_accepted_tokens counter
vllm_spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 6.491797e+00
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos counter
vllm_spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="1"} 2.0
vllm_spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 4.0
# EOF
"""


def test_underscore_spelling_openmetrics_and_created_skipped() -> None:
    [s] = parse_exposition(UNDERSCORE, timestamp=0)
    assert s.drafts == 10
    assert s.draft_tokens == 40
    assert s.accepted == pytest.approx(6.491797)
    assert s.accepted_per_position == (4.0, 2.0)
    assert s.k == 2


V084 = """\
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 387.0
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 150.0
"""

V0 = """\
# HELP vllm:spec_decode_draft_acceptance_rate Speulative token acceptance rate.
# TYPE vllm:spec_decode_draft_acceptance_rate gauge
vllm:spec_decode_draft_acceptance_rate{model_name="m"} 0.642
# HELP vllm:spec_decode_efficiency Speculative decoding system efficiency.
# TYPE vllm:spec_decode_efficiency gauge
vllm:spec_decode_efficiency{model_name="m"} 0.598
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{model_name="m"} 123456.0
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{model_name="m"} 999999.0
# TYPE vllm:spec_decode_num_emitted_tokens_total counter
vllm:spec_decode_num_emitted_tokens_total{model_name="m"} 5.0
"""


def test_v1_084() -> None:
    [s] = parse_exposition(V084, timestamp=0)
    assert s.generation == "v1-0.8.4"
    assert s.drafts is None
    assert s.k is None
    assert s.accepted_per_position == ()
    assert (s.draft_tokens, s.accepted) == (387, 150)
    assert s.mean_acceptance_length is None


def test_v0_uses_gauges_and_says_so() -> None:
    [s] = parse_exposition(V0, timestamp=0)
    assert s.generation == "v0"
    assert s.v0_acceptance_rate == 0.642
    assert s.v0_efficiency == 0.598
    assert math.isnan(s.draft_tokens)
    assert math.isnan(s.accepted)
    assert any("PR #15415" in n for n in s.notes)


def test_histogram_named_total_is_not_a_counter() -> None:
    text = (
        "# TYPE vllm:spec_decode_num_drafts_total histogram\n"
        'vllm:spec_decode_num_drafts_total_count{engine="0",model_name="m"} 3.0\n'
        'vllm:spec_decode_num_drafts_total_sum{engine="0",model_name="m"} 3.0\n'
        "# TYPE vllm:spec_decode_num_draft_tokens_total gauge\n"
        'vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 3.0\n'
    )
    assert parse_exposition(text, timestamp=0) == []


def test_engines_and_extra_labels() -> None:
    text = V084 + V084.replace('engine="0"', 'engine="1"').replace("# TYPE", "# HELP x")
    snaps = parse_exposition(text, timestamp=0, extra_labels={"instance": "h:1"})
    assert sorted(s.labels["engine"] for s in snaps) == ["0", "1"]
    assert all(s.labels["instance"] == "h:1" for s in snaps)


def test_truncated_page_is_a_parse_error() -> None:
    text = read("metrics-ngram-5-final.txt")
    cut = text[: text.index('position="2"')]
    with pytest.raises(ParseError, match="truncated"):
        parse_exposition(cut, timestamp=0, source="http://x/metrics")


def test_incomplete_series_is_a_parse_error() -> None:
    text = (
        "# TYPE vllm:spec_decode_num_drafts_total counter\n"
        'vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 3.0\n'
    )
    with pytest.raises(ParseError, match="draft_tokens, accepted"):
        parse_exposition(text, timestamp=0)


@pytest.mark.parametrize(
    "body",
    [
        "<html><body>Bad gateway</body></html>\n",
        "\x00\x01\x02 garbage\n",
        'vllm:spec_decode_num_drafts_total{engine="0" 12\n',
        'vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",position="x"} 1\n'
        'vllm:spec_decode_num_drafts_total{engine="0"} 1\n',
    ],
)
def test_garbage_never_crashes(body: str) -> None:
    message = ""
    try:
        snaps = parse_exposition(body, timestamp=0)
    except ParseError as exc:
        message, snaps = str(exc), []
    assert snaps == []
    assert not message or message.endswith(".")


def test_nan_values_are_kept_as_nan() -> None:
    [s] = parse_exposition(V084.replace("150.0", "NaN"), timestamp=0)
    assert math.isnan(s.accepted)


counts = st.integers(min_value=0, max_value=10**9)


@given(
    drafts=counts,
    tokens=counts,
    accepted=counts,
    per_pos=st.lists(counts, min_size=1, max_size=8),
    model=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20),
    sep=st.sampled_from([":", "_"]),
)
def test_roundtrip_any_values_and_label_text(
    drafts: int, tokens: int, accepted: int, per_pos: list[int], model: str, sep: str
) -> None:
    esc = model.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    lab = f'engine="0",model_name="{esc}"'
    lines = [
        f"vllm{sep}spec_decode_num_drafts_total{{{lab}}} {drafts}",
        f"vllm{sep}spec_decode_num_draft_tokens_total{{{lab}}} {tokens:e}",
        f"vllm{sep}spec_decode_num_accepted_tokens_total{{{lab}}} {accepted}.0",
    ] + [
        f'vllm{sep}spec_decode_num_accepted_tokens_per_pos_total{{{lab},position="{i}"}} {v}'
        for i, v in enumerate(per_pos)
    ]
    [s] = parse_exposition("\n".join(lines) + "\n", timestamp=0)
    assert s.labels["model_name"] == model
    assert s.drafts == drafts
    assert s.accepted == accepted
    assert s.draft_tokens == pytest.approx(float(f"{tokens:e}"))
    assert s.accepted_per_position == tuple(float(v) for v in per_pos)
    assert s.k == len(per_pos)
