"""Load and time families through deltas (#14): restart-safe gains, batch samples, and
load-only deltas (engines without speculation) kept apart per class."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from specwise.collectors.classes import ClassConfig
from specwise.collectors.deltas import (
    batch_samples,
    series_deltas,
    since_start,
    sum_by_class,
    window_deltas,
)
from specwise.collectors.exposition import parse_exposition
from specwise.collectors.snapshot import CounterDelta, Snapshot
from specwise.estimation.estimator import WindowCounts

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vllm"


def page(name: str, t: float, instance: str = "a:8000") -> list[Snapshot]:
    return parse_exposition(
        (FIXTURES / name).read_text(), timestamp=t, extra_labels={"instance": instance}
    )


def snap(t: float, **kw: float | None) -> Snapshot:
    values: dict[str, object] = {
        "labels": {"model_name": "m", "engine": "0"},
        "timestamp": t,
        "drafts": 0.0,
        "draft_tokens": 0.0,
        "accepted": 0.0,
        "accepted_per_position": (0.0, 0.0),
        "k": 2,
    }
    values.update(kw)
    return Snapshot(**values)  # type: ignore[arg-type]


def test_real_captures_load_gains() -> None:
    [d] = window_deltas(page("metrics-ngram-1-after-20req.txt", 0), page(
        "metrics-ngram-2-after-40req.txt", 60
    ))  # fmt: skip
    assert d.spec_families is True
    assert d.iteration_steps == 1470 - 747
    assert d.iteration_tokens == 3050 - 1547
    assert d.generation_tokens == 2322 - 1177
    assert d.itl_seconds_count == 1429 - 726
    assert d.itl_seconds_sum == pytest.approx(3.2916648279999094 - 1.6904638739998177)
    assert d.tpot_seconds_count == 20
    assert d.tpot_seconds_sum == pytest.approx(0.0606986055022269 - 0.031882077455861135)
    assert d.decode_seconds_count == 20
    assert d.decode_seconds_sum == pytest.approx(3.2916648279999094 - 1.6904638739998177)
    assert d.batch_samples == (0.0,)  # the end scrape's running requests
    # per finished request: 20 requests, inference = prefill + decode, their tokens
    assert (d.inference_seconds_count, d.prefill_seconds_count, d.request_tokens_count) == (
        20,
        20,
        20,
    )
    assert d.inference_seconds_sum == pytest.approx(5.0691839180000215 - 3.403188213999897)
    assert d.request_tokens_sum == 2322 - 1177
    assert d.inference_seconds_sum == pytest.approx(d.prefill_seconds_sum + d.decode_seconds_sum)
    # the plan's identities hold on the real server: tokens per request-step = 1 + A/D-ish
    assert d.generation_tokens / d.itl_seconds_count > 1.0


def test_load_gains_are_restart_safe() -> None:
    snaps = [
        snap(0, iteration_steps=100, iteration_tokens=400, running_requests=3),
        snap(10, iteration_steps=150, iteration_tokens=600, running_requests=5),
        # counters dropped: the process restarted; the value after the drop is the gain
        snap(20, iteration_steps=30, iteration_tokens=90, running_requests=2),
        snap(30, iteration_steps=70, iteration_tokens=200, running_requests=4),
    ]
    [d] = series_deltas(snaps)
    assert d.iteration_steps == 50 + 30 + 40
    assert d.iteration_tokens == 200 + 90 + 110
    assert d.restarts >= 1
    assert d.batch_samples == (5, 2, 4)
    # a new process_start_time is a restart even when the counters grew past the old values
    grown = [
        snap(0, tpot_seconds_count=10, tpot_seconds_sum=1.0, process_start_time=1.0),
        snap(10, tpot_seconds_count=15, tpot_seconds_sum=1.5, process_start_time=5.0),
    ]
    [g] = series_deltas(grown)
    assert g.tpot_seconds_count == 15
    assert g.tpot_seconds_sum == 1.5


def test_missing_families_stay_none() -> None:
    [d] = series_deltas([snap(0), snap(10, drafts=5.0, draft_tokens=10.0, accepted=4.0,
                                       accepted_per_position=(3.0, 1.0))])  # fmt: skip
    for f in ("iteration_steps", "iteration_tokens", "decode_seconds_sum", "tpot_seconds_count",
              "generation_tokens", "itl_seconds_count"):  # fmt: skip
        assert getattr(d, f) is None, f
    assert d.batch_samples == ()
    [c] = sum_by_class([d], ClassConfig())
    assert c.iteration_steps is None
    assert c.batch_samples == ()


def test_windowed_samples_win_over_the_gauge_and_repeats_add_nothing() -> None:
    a = snap(0, running_requests=1)
    b = snap(10, running_requests=9, batch_samples=(2.0, math.nan, 4.0))
    c = dataclasses.replace(b)  # the same reading returned again (same timestamp)
    assert batch_samples([a, b, c]) == (2.0, 4.0)
    [d] = series_deltas([a, b, c])
    assert d.batch_samples == (2.0, 4.0)
    assert d.running_requests == 9


def test_sum_by_class_keeps_spec_and_load_only_apart() -> None:
    spec = window_deltas(page("metrics-ngram-1-after-20req.txt", 0, "a:1"), page(
        "metrics-ngram-2-after-40req.txt", 60, "a:1"))  # fmt: skip
    plain_end = page("metrics-nospec-baseline-after-20req.txt", 60, "b:1")[0]
    plain_start = dataclasses.replace(
        plain_end,
        timestamp=0,
        generation_tokens=145.0,
        iteration_steps=145.0,
        iteration_tokens=203.0,
        itl_seconds_count=125.0,
        itl_seconds_sum=0.5,
    )
    plain = window_deltas([plain_start], [dataclasses.replace(plain_end, running_requests=3)])
    assert plain[0].spec_families is False
    other = dataclasses.replace(spec[0], labels={**spec[0].labels, "instance": "a:2"},
                                batch_samples=(6.0, 7.0))  # fmt: skip
    out = sum_by_class([*spec, other, *plain], ClassConfig())
    assert len(out) == 2
    s, p = out
    assert s.spec_families is True
    assert s.labels == p.labels  # the same class
    assert s.series == 2
    assert s.k == 4
    assert s.iteration_steps == 2 * (1470 - 747)
    assert s.generation_tokens == 2 * (2322 - 1177)
    assert sorted(s.batch_samples) == [0.0, 6.0, 7.0]  # pooled over the class's engines
    assert s.drafts == 2 * (416 - 210)
    assert s.inference_seconds_count == 2 * 20  # the per-request families sum too
    assert s.request_tokens_sum == 2 * (2322 - 1177)
    assert p.spec_families is False
    assert (p.k, p.drafts, p.draft_tokens, p.accepted) == (0, 0, 0, 0)
    assert p.series == 1
    assert p.iteration_steps == 1000
    assert p.iteration_tokens == 1300
    assert p.itl_seconds_count == 1000
    assert p.batch_samples == (3.0,)


def test_engine_restarted_without_speculation_gives_a_load_only_delta() -> None:
    before = page("metrics-ngram-5-final.txt", 0)[0]
    after = page("metrics-nospec-baseline-after-20req.txt", 60)[0]
    [d] = window_deltas([before], [after])
    assert d.spec_families is False
    assert d.k == 0
    assert d.draft_tokens == 0
    assert d.restarts >= 1
    assert d.iteration_steps == 1145  # counted from the restart, not 1145 - 2191
    # and back: the spec engine's counters count from its restart
    [e] = window_deltas([after], [dataclasses.replace(before, timestamp=120)])
    assert e.spec_families is True
    assert e.drafts == 2946
    assert e.iteration_steps == 2191


def test_speculation_turned_back_on_keeps_the_positions() -> None:
    """A probe (#15) re-enables speculation on an engine that ran without it: the window from
    the load-only snapshot to the new engine's counts every position (was: 0 at each, and
    the estimator rejected the window, 'per-position counts sum to 0 but accepted is N')."""
    off = page("metrics-nospec-baseline-after-20req.txt", 0)[0]
    on = page("metrics-ngram-5-final.txt", 60)[0]
    assert off.spec_families is False
    assert off.accepted_per_position == ()
    [d] = window_deltas([off], [on])
    assert d.spec_families is True
    assert d.k == on.k
    assert d.restarts >= 1
    assert d.drafts == on.drafts
    assert d.accepted == on.accepted
    assert d.accepted_per_position == on.accepted_per_position
    assert math.fsum(d.accepted_per_position) == pytest.approx(d.accepted)
    WindowCounts.from_delta(d)  # the estimator takes it: no DataError


def test_since_start_carries_the_load_families() -> None:
    [s] = page("metrics-nospec-baseline-after-20req.txt", 60)
    d = since_start(s)
    assert isinstance(d, CounterDelta)
    assert d.spec_families is False
    assert (d.iteration_steps, d.generation_tokens, d.decode_seconds_count) == (1145, 1145, 20)
    assert d.batch_samples == (0.0,)
