"""The speedup model: the lab's seven tests, published numbers, and hypothesis invariants."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specwise.errors import ModelInputError, SpecwiseError
from specwise.model import (
    alpha_from_acceptance_length,
    alpha_from_acceptance_rate,
    expected_tokens_from_survival,
    expected_tokens_per_verify,
    expected_tokens_two_state,
    marginal_value,
    mixture_survival,
    optimal_k,
    optimal_k_from_survival,
    saturating_verify_cost,
    speedup,
    speedup_from_survival,
    survival_curve,
    survival_two_state,
    verify_cost_at,
)

alphas = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
open_alphas = st.floats(min_value=0.001, max_value=0.999, allow_nan=False)
ks = st.integers(min_value=0, max_value=24)
costs = st.floats(min_value=0.0, max_value=2.0, allow_nan=False)


# --- the lab's seven tests -------------------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "k", "expected"),
    [
        (0.0, 5, 1.0),
        (1.0, 5, 6.0),
        (1.0, 0, 1.0),
        (0.5, 1, 1.5),
        (0.5, 3, 1.875),
        (0.7, 5, (1 - 0.7**6) / 0.3),
        (0.9, 16, (1 - 0.9**17) / 0.1),
    ],
)
def test_expected_tokens_formula(alpha: float, k: int, expected: float) -> None:
    assert expected_tokens_per_verify(alpha, k) == pytest.approx(expected, rel=1e-12)


def test_expected_tokens_exact_at_the_edges() -> None:
    for k in range(30):
        assert expected_tokens_per_verify(0.0, k) == 1.0
        assert expected_tokens_per_verify(1.0, k) == float(k + 1)


@pytest.mark.parametrize(("alpha", "k"), [(0.3, 3), (0.7, 5), (0.9, 8)])
def test_expected_tokens_matches_simulation(alpha: float, k: int) -> None:
    """200k simulated verify cycles: emitted tokens = accepted prefix + 1, within 1%."""
    rng = np.random.default_rng(20261128)
    accepted = rng.random((200_000, k)) < alpha
    prefix = np.cumprod(accepted, axis=1).sum(axis=1)
    simulated = float(np.mean(prefix + 1))
    assert simulated == pytest.approx(expected_tokens_per_verify(alpha, k), rel=0.01)


@given(alpha=alphas, k=ks)
def test_free_drafter_always_wins(alpha: float, k: int) -> None:
    assert speedup(alpha, k, 0.0) >= 1.0
    assert speedup(alpha, k, 0.0) == pytest.approx(expected_tokens_per_verify(alpha, k))


def test_spec_decode_can_lose() -> None:
    assert speedup(0.2, 5, 0.5) < 1.0
    assert speedup(0.2, 5, 0.5) == pytest.approx(1.24992 / 3.5, rel=1e-9)
    assert optimal_k(0.2, 0.5) == 0


def test_eagle_like_numbers() -> None:
    s = speedup(0.7, 5, 0.05)
    assert s == pytest.approx(2.3529, abs=1e-3)  # "~2.3x", the EAGLE ballpark


def test_optimal_k_grows_with_alpha_and_shrinks_with_cost() -> None:
    by_alpha = [optimal_k(a, 0.05) for a in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)]
    assert by_alpha == sorted(by_alpha)
    assert by_alpha[0] < by_alpha[-1]
    by_cost = [optimal_k(0.8, c) for c in (0.0, 0.01, 0.05, 0.1, 0.3, 0.6)]
    assert by_cost == sorted(by_cost, reverse=True)
    assert by_cost[0] > by_cost[-1]


@pytest.mark.parametrize("alpha", [0.3, 0.6, 0.9])
def test_diminishing_returns_in_k(alpha: float) -> None:
    gains = [
        expected_tokens_per_verify(alpha, k) - expected_tokens_per_verify(alpha, k - 1)
        for k in range(1, 12)
    ]
    for i, gain in enumerate(gains, start=1):
        assert gain == pytest.approx(alpha**i)
        assert gain == pytest.approx(marginal_value(alpha, i))
    ratios = [b / a for a, b in itertools.pairwise(gains)]
    assert ratios == pytest.approx([alpha] * len(ratios))


# --- published numbers one can check by hand ---------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "k", "c", "expected"),
    [
        (0.7, 5, 0.05, 2.941176 / 1.25),  # the seed's EAGLE point
        (0.8, 4, 0.0, 3.3616),  # 1 + .8 + .64 + .512 + .4096
        (0.5, 2, 0.1, 1.75 / 1.2),
        (0.6, 3, 0.2, 2.176 / 1.6),
    ],
)
def test_published_speedups(alpha: float, k: int, c: float, expected: float) -> None:
    assert speedup(alpha, k, c) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("alpha", "ceiling"), [(0.7, 10 / 3), (0.5, 2.0), (0.9, 10.0)])
def test_free_draft_ceiling(alpha: float, ceiling: float) -> None:
    assert expected_tokens_per_verify(alpha, 200) == pytest.approx(ceiling, rel=1e-6)
    assert expected_tokens_per_verify(alpha, 20) < ceiling


def test_design_heterogeneity_example() -> None:
    """docs/design.md: a 50/50 mix of 0.9 and 0.5 gives E(4) = 3.016; one fitted alpha picks
    k = 6 where the true best at c = 0.05 is 11."""
    mix = mixture_survival([0.5, 0.5], [0.9, 0.5], 16)
    e4 = expected_tokens_from_survival(mix, 4)
    assert e4 == pytest.approx(3.0163, abs=1e-4)
    fitted = alpha_from_acceptance_length(e4, 4)
    assert optimal_k(fitted, 0.05) == 6
    assert optimal_k_from_survival(mix, 0.05) == 11


def test_real_vllm_capture_numbers() -> None:
    """The vLLM 0.32 n-gram capture: 2946 drafts, 8255 accepted, k = 4 -> MAL 3.802."""
    mal = 1 + 8255 / 2946
    survival = [2491 / 2946, 2147 / 2946, 1919 / 2946, 1698 / 2946]
    assert expected_tokens_from_survival(survival, 4) == pytest.approx(mal)
    assert 0.0 < alpha_from_acceptance_length(mal, 4) < 1.0


# --- verify cost ---------------------------------------------------------------------------


def test_verify_cost_forms() -> None:
    assert verify_cost_at(3) == 1.0
    assert verify_cost_at(3, 0.1) == pytest.approx(1.3)
    assert verify_cost_at(2, [1.0, 1.05, 1.1]) == pytest.approx(1.1)
    assert verify_cost_at(2, {1: 1.05, 2: 1.2}) == pytest.approx(1.2)
    assert verify_cost_at(0, {1: 1.05}) == 1.0
    assert verify_cost_at(4, lambda k: 1 + 0.5 * k) == pytest.approx(3.0)
    assert speedup(0.7, 5, 0.05, verify_cost=0.1) < speedup(0.7, 5, 0.05)


def test_verify_slope_lowers_optimal_k() -> None:
    assert optimal_k(0.8, 0.05, verify_cost=0.2) < optimal_k(0.8, 0.05)


@pytest.mark.parametrize("table", [[1.0, 1.1], {1: 1.1}])
def test_verify_table_too_short_names_k(table: object) -> None:
    with pytest.raises(ModelInputError, match="k = 3"):
        verify_cost_at(3, table)  # type: ignore[arg-type]


def test_saturating_verify_cost() -> None:
    assert saturating_verify_cost(4, 1, knee_tokens=256) == 1.0  # light load: free
    assert saturating_verify_cost(4, 512, knee_tokens=256) == pytest.approx(5.0)  # saturated
    mid = saturating_verify_cost(4, 64, knee_tokens=256)
    assert mid == pytest.approx(320 / 256)
    ks_light = optimal_k(
        0.7, 0.05, verify_cost=lambda k: saturating_verify_cost(k, 1, knee_tokens=256)
    )
    ks_heavy = optimal_k(
        0.7, 0.05, verify_cost=lambda k: saturating_verify_cost(k, 512, knee_tokens=256)
    )
    assert ks_light > 0
    assert ks_heavy == 0  # "spec decode is a latency tool, not a throughput tool"


# --- inverses ------------------------------------------------------------------------------


@given(alpha=alphas, k=st.integers(min_value=1, max_value=16))
def test_acceptance_length_round_trip(alpha: float, k: int) -> None:
    mal = expected_tokens_per_verify(alpha, k)
    back = alpha_from_acceptance_length(mal, k)
    assert expected_tokens_per_verify(back, k) == pytest.approx(mal, abs=1e-9)
    if alpha > 1e-6:
        assert back == pytest.approx(alpha, abs=1e-6)


@given(alpha=alphas, k=st.integers(min_value=1, max_value=16))
def test_acceptance_rate_round_trip(alpha: float, k: int) -> None:
    rate = (expected_tokens_per_verify(alpha, k) - 1) / k
    back = alpha_from_acceptance_rate(rate, k)
    assert back == pytest.approx(alpha, abs=1e-6)


def test_acceptance_rate_is_not_alpha() -> None:
    """vLLM's A/T falls as k rises even with the same drafter (vLLM #9565)."""
    rates = [(expected_tokens_per_verify(0.7, k) - 1) / k for k in (1, 3, 5, 8)]
    assert rates == sorted(rates, reverse=True)
    assert all(
        alpha_from_acceptance_rate(r, k) == pytest.approx(0.7) for r, k in zip(rates, (1, 3, 5, 8))
    )


# --- survival ------------------------------------------------------------------------------


@given(alpha=alphas, k=st.integers(min_value=0, max_value=16))
def test_survival_of_iid_equals_closed_form(alpha: float, k: int) -> None:
    curve = survival_curve(alpha, 16)
    assert expected_tokens_from_survival(curve, k) == pytest.approx(
        expected_tokens_per_verify(alpha, k)
    )
    assert speedup_from_survival(curve, k, 0.1) == pytest.approx(speedup(alpha, k, 0.1))


def test_survival_beyond_curve_is_refused() -> None:
    with pytest.raises(ModelInputError, match="beyond the measured survival curve"):
        expected_tokens_from_survival([0.8, 0.6], 3)


def test_rising_survival_is_refused() -> None:
    with pytest.raises(ModelInputError, match="rises at position 2"):
        expected_tokens_from_survival([0.5, 0.6], 2)


def test_two_state_reduces_to_iid_when_states_are_independent() -> None:
    # switch probabilities summing to 1 make consecutive states independent
    curve = survival_two_state(
        6, alpha_high=0.9, alpha_low=0.3, p_high_to_low=0.25, p_low_to_high=0.75
    )
    mean = 0.75 * 0.9 + 0.25 * 0.3
    assert curve == pytest.approx(survival_curve(mean, 6))


def test_two_state_matches_markov_simulation() -> None:
    rng = np.random.default_rng(7)
    n, k = 100_000, 5
    ah, al, hl, lh = 0.92, 0.35, 0.1, 0.3
    state_high = rng.random(n) < lh / (hl + lh)
    alive = np.ones(n, dtype=bool)
    survival = []
    for _ in range(k):
        p = np.where(state_high, ah, al)
        alive &= rng.random(n) < p
        survival.append(alive.mean())
        flip = rng.random(n) < np.where(state_high, hl, lh)
        state_high = np.where(flip, ~state_high, state_high)
    model = survival_two_state(k, alpha_high=ah, alpha_low=al, p_high_to_low=hl, p_low_to_high=lh)
    assert model == pytest.approx(survival, abs=0.006)
    e = expected_tokens_two_state(
        k, alpha_high=ah, alpha_low=al, p_high_to_low=hl, p_low_to_high=lh
    )
    assert e == pytest.approx(1 + sum(survival), abs=0.02)
    # correlation: the i.i.d. model with the same first-position acceptance underestimates E
    assert e > expected_tokens_per_verify(model[0], k)


# --- invariants ----------------------------------------------------------------------------


@given(alpha=alphas, k=ks)
def test_expected_tokens_bounds(alpha: float, k: int) -> None:
    e = expected_tokens_per_verify(alpha, k)
    assert 1.0 <= e <= k + 1 + 1e-12
    if alpha < 1.0:
        assert e <= 1.0 / (1.0 - alpha) + 1e-9


@given(a=open_alphas, b=open_alphas, k=st.integers(min_value=1, max_value=16))
def test_expected_tokens_monotone_in_alpha(a: float, b: float, k: int) -> None:
    lo, hi = sorted((a, b))
    assert expected_tokens_per_verify(lo, k) <= expected_tokens_per_verify(hi, k) + 1e-12


@settings(max_examples=60)
@given(alpha=alphas, c=costs, k_max=st.integers(min_value=0, max_value=16))
def test_optimal_k_is_the_argmax_and_never_loses(alpha: float, c: float, k_max: int) -> None:
    best = optimal_k(alpha, c, k_max)
    values = [speedup(alpha, k, c) for k in range(k_max + 1)]
    assert 0 <= best <= k_max
    assert values[best] >= max(values) * (1 - 1e-9)
    assert values[best] >= 1.0
    # ties go to the smaller k
    assert all(v < values[best] * (1 + 1e-12) for v in values[:best])


@settings(max_examples=60)
@given(a=open_alphas, b=open_alphas, c=st.floats(min_value=0.001, max_value=1.0))
def test_optimal_k_monotone_in_alpha(a: float, b: float, c: float) -> None:
    lo, hi = sorted((a, b))
    assert optimal_k(lo, c) <= optimal_k(hi, c)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: expected_tokens_per_verify(1.2, 3), "alpha = 1.2 is outside"),
        (lambda: expected_tokens_per_verify(-0.1, 3), "alpha = -0.1"),
        (lambda: expected_tokens_per_verify(math.nan, 3), "alpha = nan"),
        (lambda: expected_tokens_per_verify(0.5, -1), "k = -1"),
        (lambda: speedup(0.5, 3, -0.2), "c = -0.2"),
        (lambda: optimal_k(0.5, 0.1, -2), "k_max = -2"),
        (lambda: alpha_from_acceptance_length(6.0, 4), "outside \\[1, k \\+ 1\\]"),
        (lambda: alpha_from_acceptance_rate(1.5, 4), "1.5"),
        (lambda: verify_cost_at(2, -0.5), "slope eps = -0.5"),
        (lambda: saturating_verify_cost(2, 0, knee_tokens=256), "batch_size = 0"),
    ],
)
def test_out_of_range_input_names_the_value(call: object, match: str) -> None:
    with pytest.raises(ModelInputError, match=match) as info:
        call()  # type: ignore[operator]
    assert isinstance(info.value, SpecwiseError)
