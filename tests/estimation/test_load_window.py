"""The per-class rolling load store (docs/design.md#the-cost-side)."""

from __future__ import annotations

import json

import pytest

from specwise.collectors.snapshot import CounterDelta
from specwise.errors import DataError
from specwise.estimation.load_window import LoadWindow
from specwise.estimation.step_fit import StepObservation


def delta(start: float, end: float, samples: tuple[float, ...], **kw: object) -> CounterDelta:
    base: dict[str, object] = {
        "labels": {"model": "m"},
        "start": start,
        "end": end,
        "drafts": 100.0,
        "draft_tokens": 300.0,
        "accepted": 150.0,
        "k": 3,
        "generation_tokens": 2500.0,
        "itl_seconds_sum": 30.0,
        "itl_seconds_count": 1000.0,
        "iteration_steps": 125.0,
        "batch_samples": samples,
    }
    base.update(kw)
    return CounterDelta(**base)  # type: ignore[arg-type]


def test_keeps_observations_and_time_weighted_batches() -> None:
    w = LoadWindow(horizon=3600.0)
    w.add(delta(0.0, 10.0, (4.0, 4.0)), None)  # 10 s at B = 4
    w.add(delta(10.0, 40.0, (16.0, 0.0, 16.0)), None)  # 20 s at 16, 10 s idle
    obs = w.observations(40.0)
    assert [o.end for o in obs] == [10.0, 40.0]
    assert obs[0].batch == pytest.approx(8.0)
    dist = w.batches(40.0)
    assert dist is not None
    assert dist.sizes == (4, 16)
    assert dist.shares == pytest.approx((1 / 3, 2 / 3))
    assert dist.idle_share == pytest.approx(0.25)


def test_forgets_what_left_the_horizon() -> None:
    w = LoadWindow(horizon=600.0)
    w.add(delta(0.0, 60.0, (2.0,)), None)
    w.add(delta(1000.0, 1060.0, (30.0,)), None)
    assert [o.end for o in w.observations(1060.0)] == [1060.0]
    dist = w.batches(1060.0)
    assert dist is not None
    assert dist.sizes == (30,)
    assert w.batches(5000.0) is None
    assert w.observations(5000.0) == []


def test_memory_is_bounded() -> None:
    w = LoadWindow(horizon=1e9, max_observations=50)
    for i in range(500):
        w.add(delta(10.0 * i, 10.0 * i + 10.0, tuple(float(x) for x in range(1, 241))), None)
    assert len(w) == 50
    state = w.to_json()
    assert len(state["observations"]) == 50
    # one histogram per time bucket, not one entry per sample
    assert sum(len(h) for _, h in state["batches"]) <= 96 * 241


def test_missing_families_keep_batches_and_say_why() -> None:
    w = LoadWindow()
    w.add(delta(0.0, 10.0, (5.0,), itl_seconds_sum=None, itl_seconds_count=None), None)
    assert w.observations(10.0) == []
    assert w.last_problem is not None
    assert "no latency families" in w.last_problem
    dist = w.batches(10.0)
    assert dist is not None
    assert dist.sizes == (5,)


def test_without_samples_the_window_batch_stands_in() -> None:
    w = LoadWindow()
    w.add(delta(0.0, 10.0, ()), None)
    dist = w.batches(10.0)
    assert dist is not None
    assert dist.sizes == (8,)


def test_nothing_busy_gives_none() -> None:
    w = LoadWindow()
    assert w.batches(0.0) is None
    w.add(delta(0.0, 10.0, (0.0, 0.0), itl_seconds_count=0.0), None)
    assert w.batches(10.0) is None


def test_state_round_trips_through_json() -> None:
    w = LoadWindow(horizon=7200.0)
    w.add(delta(0.0, 10.0, (4.0, 6.0)), None)
    w.add(delta(10.0, 20.0, (9.0,), spec_families=False, k=None), None)
    w.add_observation(StepObservation(2, 3.0, 0.02, 10.0, None, 20.0, 30.0))
    back = LoadWindow.from_json(json.loads(json.dumps(w.to_json())))
    assert back.horizon == 7200.0
    assert back.observations(30.0) == w.observations(30.0)
    assert back.batches(30.0) == w.batches(30.0)


def test_bad_state_rows_are_skipped() -> None:
    state = {
        "horizon": 3600.0,
        "observations": [
            [3, 8.0, 0.03, 1000.0, 2.5, 0.0, 10.0],
            ["x"],
            [3, -1.0, 0.03, 1000.0, 2.5, 0.0, 10.0],
            None,
        ],
        "batches": [[0, [[4, 10.0], ["y", 1.0]]], "junk"],
    }
    w = LoadWindow.from_json(state)
    assert len(w.observations(10.0)) == 1
    dist = w.batches(10.0)
    assert dist is not None
    assert dist.sizes == (4,)
    with pytest.raises(DataError, match="not an object"):
        LoadWindow.from_json([1, 2])


def test_bad_construction_says_so() -> None:
    with pytest.raises(DataError, match="horizon"):
        LoadWindow(horizon=0.0)
    with pytest.raises(DataError, match="max_observations"):
        LoadWindow(max_observations=0)


def test_a_schedule_prices_each_window_at_its_band() -> None:
    from specwise.step_cost import SpecConfig

    config = SpecConfig(4, ((1, 4, 4), (5, 16, 2), (17, 512, 0)))
    w = LoadWindow()
    w.add(delta(0.0, 10.0, (3.0,), iteration_steps=1000.0 / 3.0), 4, config=config)  # B = 3
    w.add(delta(10.0, 20.0, (8.0,)), 4, config=config)  # B = 8: the k = 2 band
    w.add(delta(20.0, 30.0, (40.0,), iteration_steps=25.0), 4, config=config)  # B = 40: k = 0
    assert [o.k for o in w.observations(30.0)] == [4, 2]
    assert w.last_problem is not None
    assert "k = 0 band" in w.last_problem
    dist = w.batches(30.0)
    assert dist is not None
    assert dist.sizes == (3, 8, 40)  # the batch samples still count
