"""Counter deltas (Prometheus increase() on raw samples), validation and per-class sums."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specwise.collectors.classes import ClassConfig
from specwise.collectors.deltas import (
    check_snapshot,
    counter_increase,
    series_deltas,
    sum_by_class,
    window_deltas,
)
from specwise.collectors.exposition import parse_exposition
from specwise.collectors.snapshot import CounterDelta, Snapshot
from specwise.errors import DataError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vllm"


def snap(
    t: float,
    drafts: float,
    tokens: float,
    accepted: float,
    per_pos: tuple[float, ...] = (),
    **labels: str,
) -> Snapshot:
    return Snapshot(
        labels=labels or {"engine": "0", "model_name": "m"},
        timestamp=t,
        drafts=drafts,
        draft_tokens=tokens,
        accepted=accepted,
        accepted_per_position=per_pos,
        k=len(per_pos) or None,
    )


def test_increase_with_reset_matches_prometheus_rule() -> None:
    # 0, 40, 80, restart -> 30, 70: 80 before + 70 after
    assert counter_increase([0, 40, 80, 30, 70]) == (150, 1)
    assert counter_increase([5, 5, 5]) == (0, 0)
    assert counter_increase([]) == (0, 0)


def test_nan_samples_are_skipped() -> None:
    assert counter_increase([0, math.nan, 10, math.nan, 30]) == (30, 0)


def test_forced_reset_from_process_start() -> None:
    a = snap(0, 10, 40, 20, (8, 6, 4, 2))
    b = Snapshot(**{**a.__dict__, "timestamp": 1, "process_start_time": 1.0})
    a2 = Snapshot(**{**a.__dict__, "process_start_time": 0.0})
    # counters grew past the old values after a restart: only start time reveals it
    c = Snapshot(
        **{**b.__dict__, "drafts": 12.0, "draft_tokens": 48.0, "accepted": 24.0,
           "accepted_per_position": (9.0, 7.0, 5.0, 3.0)}
    )  # fmt: skip
    [d] = series_deltas([a2, c])
    assert d.drafts == 12
    assert d.draft_tokens == 48
    assert d.restarts == 1
    assert d.accepted_per_position == (9, 7, 5, 3)


def test_real_captures_delta() -> None:
    names = ["metrics-ngram-0-before-load.txt", "metrics-ngram-5-final.txt"]
    snaps = [
        parse_exposition((FIXTURES / n).read_text(), timestamp=float(i))[0]
        for i, n in enumerate(names)
    ]
    [d] = series_deltas(snaps)
    assert (d.drafts, d.draft_tokens, d.accepted) == (2946, 11252, 8255)
    assert d.accepted_per_position == (2491, 2147, 1919, 1698)
    assert d.generation_tokens is not None
    assert d.restarts == 0
    assert (d.start, d.end) == (0.0, 1.0)


def test_accepted_above_drafted_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"accepted tokens 50 > draft tokens 40"):
        series_deltas([snap(0, 0, 0, 0), snap(1, 10, 40, 50)])
    with pytest.raises(DataError, match="accepted tokens"):
        check_snapshot(snap(0, 10, 40, 50))


def test_rising_positions_is_a_data_error() -> None:
    with pytest.raises(DataError, match="position 2"):
        series_deltas([snap(0, 0, 0, 0, (0, 0, 0)), snap(1, 10, 40, 20, (8, 5, 7))])


def test_negative_delta_is_a_restart_not_counted_twice() -> None:
    s = [snap(0, 100, 400, 200, (80, 60, 40, 20)), snap(1, 10, 40, 20, (8, 6, 4, 2))]
    [d] = series_deltas(s)
    assert d.drafts == 10
    assert d.draft_tokens == 40
    assert d.restarts == 1
    assert d.accepted_per_position == (8, 6, 4, 2)


def test_window_deltas_skip_new_series() -> None:
    prev = [snap(0, 0, 0, 0, (0,), engine="0", model_name="m")]
    cur = [
        snap(1, 5, 5, 3, (3,), engine="0", model_name="m"),
        snap(1, 9, 9, 9, (9,), engine="1", model_name="m"),
    ]
    [d] = window_deltas(prev, cur)
    assert d.labels["engine"] == "0"
    assert d.accepted == 3


def delta(
    labels: dict[str, str], d: float | None, t: float, a: float, pp: tuple[float, ...]
) -> CounterDelta:
    return CounterDelta(
        labels=labels, start=0, end=1, drafts=d, draft_tokens=t, accepted=a,
        accepted_per_position=pp, k=len(pp) or None,
        generation="v1" if d is not None else "v1-0.8.4",
    )  # fmt: skip


def test_sum_by_class_sums_numerators_and_denominators() -> None:
    deltas = [
        delta({"engine": "0", "model_name": "a", "job": "chat"}, 10, 40, 20, (8, 6, 4, 2)),
        delta({"engine": "1", "model_name": "a", "job": "chat"}, 30, 120, 30, (20, 6, 3, 1)),
        delta({"engine": "0", "model_name": "b", "job": "code"}, 5, 20, 10, (5, 3, 2, 0)),
    ]
    by_model = {d.labels["class"]: d for d in sum_by_class(deltas, ClassConfig())}
    assert set(by_model) == {"a", "b"}
    a = by_model["a"]
    assert (a.drafts, a.draft_tokens, a.accepted, a.series) == (40, 160, 50, 2)
    assert a.accepted_per_position == (28, 12, 7, 3)
    assert a.labels == {"class": "a", "model_name": "a"}
    cfg = ClassConfig.from_mapping({"chatty": '{job="chat"}'})
    classes = {d.labels["class"]: d for d in sum_by_class(deltas, cfg)}
    assert classes["chatty"].series == 2
    assert classes["b"].series == 1


def test_sum_by_class_mixed_generations_loses_drafts_and_says_so() -> None:
    deltas = [
        delta({"model_name": "a", "engine": "0"}, 10, 40, 20, (8, 6, 4, 2)),
        delta({"model_name": "a", "engine": "1"}, None, 40, 20, ()),
    ]
    [d] = sum_by_class(deltas, ClassConfig())
    assert d.drafts is None
    assert d.generation == "v1-0.8.4"
    assert d.accepted_per_position == ()
    assert any("0.8.4" in n for n in d.notes)


samples = st.lists(st.one_of(st.floats(min_value=0, max_value=1e9), st.just(math.nan)), max_size=40)


@given(samples)
def test_increase_properties(values: list[float]) -> None:
    total, resets = counter_increase(values)
    clean = [v for v in values if not math.isnan(v)]
    assert total >= 0
    assert resets == sum(1 for a, b in itertools.pairwise(clean) if b < a)
    # without resets the increase telescopes to last - first
    if resets == 0 and clean:
        assert total == pytest.approx(clean[-1] - clean[0], rel=1e-9, abs=1e-6)
    # a split anywhere gives the same total (windows add up, nothing counted twice)
    if len(values) > 2:
        mid = len(values) // 2
        left, _ = counter_increase(values[: mid + 1])
        right, _ = counter_increase(values[mid:])
        if not math.isnan(values[mid]):
            assert left + right == pytest.approx(total, rel=1e-9, abs=1e-6)


def test_k_change_keeps_the_new_positions() -> None:
    """A restart with a larger k: every new position's count is the delta since restart."""
    labels = {"model_name": "code", "engine": "0"}
    before = Snapshot(labels, 100.0, 1000, 3000, 1500, (600, 500, 400), 3)
    after = Snapshot(labels, 200.0, 100, 700, 300, (100, 80, 60, 30, 20, 10, 0), 7)
    (delta,) = window_deltas([before], [after])
    assert delta.k == 7
    assert delta.accepted_per_position == (100, 80, 60, 30, 20, 10, 0)
    assert sum(delta.accepted_per_position) == delta.accepted == 300
    assert delta.restarts == 1


def test_class_mid_rollout_keeps_the_k_with_most_drafts() -> None:
    """Engines of one class at k = 3 and k = 5 (a rolling restart): pooling would bias the
    survival of positions 4-5 low, so the minority k is left out with a note."""
    a = CounterDelta(
        {"model_name": "m", "engine": "0"}, 0, 60, 1000, 3000, 1500, (600, 500, 400), 3
    )
    b = CounterDelta(
        {"model_name": "m", "engine": "1"}, 0, 60, 200, 1000, 520, (150, 130, 110, 80, 50), 5
    )
    (pooled,) = sum_by_class([a, b], ClassConfig())
    assert pooled.k == 3
    assert pooled.drafts == 1000
    assert pooled.accepted_per_position == (600, 500, 400)
    assert pooled.series == 1
    assert any("different k [3, 5]" in n for n in pooled.notes)
