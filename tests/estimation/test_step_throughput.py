"""The measured speedup's throughput measure: per-request tokens per second in the engine,
prefill included, against plain windows at a comparable load (docs/design.md#the-cost-side)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from specwise.collectors.snapshot import CounterDelta
from specwise.estimation.load_window import LoadWindow
from specwise.estimation.step_fit import (
    StepObservation,
    fit_step_cost,
    measured_speedup,
    observation_from_delta,
)
from specwise.estimation.step_speedup import MeasuredSpeedup, load_level

# vLLM 0.32 CPU, the e2e load scenario (e2e/test_6_load.py), concurrency 1, one phase each:
# the plain server (54 requests) and a drafter identical to the target, k = 3 (64 requests).
# Client-side: 3456 tokens in 7.048 s and 4096 in 7.038 s, a ratio of 1.187. The draft
# model's prefill (9.2 ms a request against 5.7 ms) is what decode-only pricing misses.
PLAIN_C1 = StepObservation(
    0, 0.9844, 0.0017933, 3402.0, 1.0159, 1000.0, 1007.1, 6.4095, 3456.0, 54.0
)
IDENTICAL_C1 = StepObservation(
    3, 0.9412, 0.005383, 1024.0, 4.0, 2000.0, 2007.1, 6.1015, 4096.0, 64.0
)
CLIENT_RATIO = (4096 / 7.038) / (3456 / 7.048)


def _measure(obs: list[StepObservation], prior: float = 0.3) -> MeasuredSpeedup:
    fit = fit_step_cost(obs, prior_cost=prior)
    assert fit is not None
    m = measured_speedup(obs, fit)
    assert m is not None
    return m


def test_real_vllm_phases_agree_with_the_client_side() -> None:
    # regression: the decode-only measure read 1.31 here against 1.19 client-side
    m = _measure([PLAIN_C1, IDENTICAL_C1])
    assert m.measure == "throughput"
    assert m.basis == "baseline"
    assert m.value == pytest.approx((4096 / 6.1015) / (3456 / 6.4095), rel=1e-9)
    assert abs(m.value / CLIENT_RATIO - 1) < 0.06
    assert m.decode_value is not None
    assert m.decode_value > 1.3 > m.value  # the decode-only measure, kept for reference
    assert m.low < m.value < m.high
    assert m.load == pytest.approx(6.1015 / 7.1, rel=1e-3)  # requests in the engine
    assert m.plain_load == pytest.approx(6.4095 / 7.1, rel=1e-3)


def _window(
    k: int, i: int, *, step: float, tps: float, load: float, prefill: float, tokens: int = 64
) -> StepObservation:
    """A 10 s window of ``load`` requests decoding at ``step`` seconds a step, each request
    ``tokens`` long (``tps`` tokens per step) with ``prefill`` seconds before its decode."""
    span = 10.0
    r = load * span / step  # request-steps
    g = r * tps
    n = g / tokens  # requests finished (steady state)
    return StepObservation(
        k=k,
        batch=load,
        step_seconds=step,
        weight=r,
        tokens_per_step=tps,
        start=span * i,
        end=span * (i + 1),
        request_seconds=load * span + n * prefill,
        request_tokens=g,
        requests=n,
    )


@pytest.mark.parametrize("load", [1.0, 4.0, 16.0])
def test_prefill_counts_on_both_sides(load: float) -> None:
    plain = [_window(0, i, step=0.010, tps=1.0, load=load, prefill=0.005) for i in range(6)]
    spec = [_window(3, 10 + i, step=0.020, tps=2.5, load=load, prefill=0.050) for i in range(6)]
    m = _measure([*plain, *spec])
    # per request: 64 tokens in 64 steps of 10 ms + 5 ms, against 25.6 steps of 20 ms + 50 ms
    want = (0.64 + 0.005) / (25.6 * 0.020 + 0.050)
    assert m.measure == "throughput"
    assert m.value == pytest.approx(want, rel=1e-6)
    assert m.decode_value == pytest.approx(2.5 * 0.010 / 0.020, rel=1e-2)
    assert m.low <= want <= m.high


def test_plain_rate_taken_at_the_speculative_load() -> None:
    # plain decoding slows with load; the speculative windows ran at 4 requests: priced
    # against the plain windows at 4, not the ones at 1 or 16
    plain = [
        _window(0, i, step=0.010 * (1 + b / 8), tps=1.0, load=b, prefill=0.0)
        for i, b in enumerate((1.0, 4.0, 16.0, 1.0, 4.0, 16.0))
    ]
    spec = [_window(2, 10, step=0.018, tps=2.0, load=4.0, prefill=0.0)]
    m = _measure([*plain, *spec])
    assert m.measure == "throughput"
    assert m.value == pytest.approx(2.0 * 0.015 / 0.018, rel=1e-6)


def test_plain_rate_taken_at_the_speculative_batch_too() -> None:
    # two kinds of plain windows at one load level (about 1 request decoding): one request
    # at a time (B 1) and bursts of 2 with idle gaps (B 2), each request slower there; the
    # speculative windows ran one at a time, so only the B 1 windows are their baseline
    alone = [_window(0, i, step=0.010, tps=1.0, load=1.0, prefill=0.0) for i in range(4)]
    bursts = [
        dataclasses.replace(
            _window(0, 4 + i, step=0.016, tps=1.0, load=1.0, prefill=0.0), batch=2.0
        )
        for i in range(8)
    ]
    spec = [_window(2, 20 + i, step=0.018, tps=2.0, load=1.0, prefill=0.0) for i in range(2)]
    m = _measure([*alone, *bursts, *spec])
    assert m.value == pytest.approx(2.0 * 0.010 / 0.018, rel=1e-6)
    # without the B 1 windows, the load level alone matches the bursts
    far = _measure([*bursts, *spec])
    assert far.value == pytest.approx(2.0 * 0.016 / 0.018, rel=1e-6)


def test_falls_back_to_decode_only_without_the_families_or_a_comparable_load() -> None:
    plain = [_window(0, i, step=0.010, tps=1.0, load=1.0, prefill=0.005) for i in range(4)]
    spec = [_window(3, 10 + i, step=0.020, tps=2.5, load=1.0, prefill=0.05) for i in range(4)]
    bare = [
        dataclasses.replace(o, request_seconds=None, request_tokens=None, requests=None)
        for o in plain
    ]
    m = _measure([*bare, *spec])
    assert m.measure == "decode"
    assert m.decode_value == m.value
    assert m.load is None
    # plain windows only at a load 4x the speculative one: no comparable baseline
    far = [_window(0, i, step=0.010, tps=1.0, load=4.0, prefill=0.005) for i in range(4)]
    m = _measure([*far, *spec])
    assert m.measure == "decode"


def test_observation_carries_the_finished_requests() -> None:
    delta = CounterDelta(
        labels={},
        start=0.0,
        end=10.0,
        drafts=100.0,
        draft_tokens=300.0,
        accepted=150.0,
        k=3,
        generation_tokens=640.0,
        itl_seconds_sum=9.0,
        itl_seconds_count=400.0,
        iteration_steps=400.0,
        inference_seconds_sum=9.5,
        inference_seconds_count=10.0,
        request_tokens_sum=640.0,
    )
    o = observation_from_delta(delta)
    assert o is not None
    assert (o.request_seconds, o.request_tokens, o.requests) == (9.5, 640.0, 10.0)
    assert o.load == pytest.approx(0.95)
    assert load_level(o) == pytest.approx(0.9)  # requests decoding: ITL sum / span
    # without vllm:request_generation_tokens the generation counter stands in
    o2 = observation_from_delta(dataclasses.replace(delta, request_tokens_sum=None))
    assert o2 is not None
    assert o2.request_tokens == 640.0
    # no request finished: nothing per request, the step observation stays
    o3 = observation_from_delta(dataclasses.replace(delta, inference_seconds_count=0.0))
    assert o3 is not None
    assert o3.request_seconds is None
    assert o3.load is None


def test_load_window_state_keeps_the_request_fields() -> None:
    win = LoadWindow()
    win.add_observation(IDENTICAL_C1)
    win.add_observation(dataclasses.replace(PLAIN_C1, request_seconds=None, request_tokens=None,
                                            requests=None))  # fmt: skip
    back = LoadWindow.from_json(win.to_json())
    got = back.observations(now=3000.0)
    assert got[0] == IDENTICAL_C1
    assert got[1].request_seconds is None
    # an older state file's rows (7 items) still load
    old = win.to_json()
    old["observations"] = [row[:7] for row in old["observations"]]
    assert LoadWindow.from_json(old).observations(now=3000.0)[0].request_seconds is None


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf, 0.0])
def test_broken_request_fields_are_skipped_not_fatal(bad: float) -> None:
    plain = [_window(0, i, step=0.010, tps=1.0, load=1.0, prefill=0.005) for i in range(4)]
    spec = [_window(3, 10 + i, step=0.020, tps=2.5, load=1.0, prefill=0.05) for i in range(4)]
    broken = dataclasses.replace(plain[0], request_seconds=bad)
    m = _measure([broken, *plain[1:], *spec])
    assert m.measure == "throughput"
    assert math.isfinite(m.value)
    assert m.value == pytest.approx(_measure([*plain[1:], *spec]).value)
