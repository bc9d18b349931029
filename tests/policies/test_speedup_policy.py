"""The k policy: expected speedup under the posterior, k = 0 and its off modes, no flapping."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specwise.errors import ConfigError
from specwise.estimation.estimator import EstimatorConfig, WindowCounts, estimate_counts
from specwise.estimation.rolling import RollingEstimator
from specwise.model import mixture_survival, saturating_verify_cost, speedup, speedup_from_survival
from specwise.policies import (
    HysteresisConfig,
    HysteresisGate,
    PolicyConfig,
    recommend,
    validate_schedule,
)


def expected_counts(alpha: float, k: int, drafts: float = 5000.0) -> WindowCounts:
    """Counts exactly at their expectation under i.i.d. alpha (no sampling noise)."""
    pos = tuple(drafts * alpha**i for i in range(1, k + 1))
    return WindowCounts(
        drafts=drafts,
        draft_tokens=k * drafts,
        accepted=sum(pos),
        accepted_per_position=pos,
        k=k,
        start=0.0,
        end=60.0,
    )


def est(alpha: float, k: int = 4, drafts: float = 5000.0):  # type: ignore[no-untyped-def]
    return estimate_counts("c", expected_counts(alpha, k, drafts), now=60.0)


@settings(max_examples=150, deadline=None)
@given(
    alpha=st.floats(0.0, 0.99),
    cost=st.floats(0.0, 1.5),
    k=st.integers(1, 6),
    k_max=st.integers(1, 10),
    slope=st.one_of(st.none(), st.floats(0.0, 0.5)),
)
def test_never_recommends_a_losing_k(
    alpha: float, cost: float, k: int, k_max: int, slope: float | None
) -> None:
    rec = recommend(est(alpha, k), config=PolicyConfig(cost=cost, k_max=k_max, verify_cost=slope))
    assert rec.predicted_speedup_recommended is not None
    if rec.recommended_k >= 1:
        assert rec.predicted_speedup_recommended > 1.0
    else:
        assert all(s <= 1.0 for s in rec.speedups[1:])
        assert rec.off_mode in ("restart", "schedule")
    assert 0.0 <= rec.confidence <= 1.0


def test_losing_regime_recommends_zero_and_names_the_off() -> None:
    e = est(0.2, k=5)
    rec = recommend(e, config=PolicyConfig(cost=0.5))
    assert rec.recommended_k == 0
    assert rec.off_mode == "restart"
    assert "every k >= 1 loses" in rec.reason
    assert "recommend 0 (restart without speculation)" in rec.reason
    assert "current k = 5" in rec.reason
    assert rec.predicted_speedup_current is not None
    assert rec.predicted_speedup_current < 1.0
    assert rec.change_allowed
    assert "no acceptance counters" in rec.off_cost
    in_place = recommend(e, config=PolicyConfig(cost=0.5, off="schedule"))
    assert in_place.off_mode == "schedule"
    assert in_place.predicted_speedup_recommended == pytest.approx(0.86)
    assert "6-22%" in in_place.off_cost


def test_seed_lab_numbers() -> None:
    """EAGLE-like alpha 0.7, c 0.05: k = 5 gives about 2.3x (docs/design.md)."""
    rec = recommend(est(0.7, k=5, drafts=50_000), config=PolicyConfig(cost=0.05), current_k=5)
    assert rec.predicted_speedup_current == pytest.approx(speedup(0.7, 5, 0.05), rel=2e-3)
    assert rec.speedups[5] == pytest.approx(2.3, abs=0.1)


def test_expected_speedup_is_the_posterior_mean() -> None:
    e = est(0.6, k=4, drafts=300)
    rec = recommend(e, config=PolicyConfig(cost=0.1, k_max=6))
    for k in range(1, 7):
        mean = np.mean([speedup(a, k, 0.1) for a in e.alpha_samples])
        assert rec.speedups[k] == pytest.approx(mean, rel=1e-9)


def test_plateau_prefers_the_smaller_k() -> None:
    e = est(0.95, k=8)
    unbounded = {"max_step": None}  # the plateau alone, without the one-step bound
    strict = recommend(e, config=PolicyConfig(cost=0.02, k_max=16, plateau=0.0, **unbounded))
    loose = recommend(e, config=PolicyConfig(cost=0.02, k_max=16, plateau=0.05, **unbounded))
    assert loose.recommended_k < strict.recommended_k
    best = max(strict.speedups)
    assert loose.speedups[loose.recommended_k] >= 0.95 * best
    assert "the smaller k wins" in loose.reason


def test_uncertainty_lowers_confidence() -> None:
    near_tie = 0.5  # k = 1 vs 2 at c = 0.1 are close
    few = recommend(est(near_tie, drafts=300), config=PolicyConfig(cost=0.1, plateau=0.0))
    many = recommend(est(near_tie, drafts=300_000), config=PolicyConfig(cost=0.1, plateau=0.0))
    assert few.confidence < many.confidence
    assert few.recommended_low is not None
    assert few.recommended_high is not None
    assert few.recommended_low < few.predicted_speedup_recommended < few.recommended_high  # type: ignore[operator]


def test_misfit_prices_from_the_measured_curve_with_a_conservative_tail() -> None:
    """A 50/50 mix of alpha 0.9 and 0.5 (docs/design.md): priced from the measured survival up to
    the deployed k, beyond it with a geometric tail at the last conditional acceptance, which
    under-prices a mix: it goes past the deployed k but not past the true best (11)."""
    d, k = 20_000.0, 4
    pos = tuple(d * (0.5 * 0.9**i + 0.5 * 0.5**i) for i in range(1, k + 1))
    counts = WindowCounts(
        drafts=d, draft_tokens=k * d, accepted=sum(pos), accepted_per_position=pos, k=k
    )
    e = estimate_counts("mix", counts, now=0.0)
    assert not e.fit_ok
    rec = recommend(e, config=PolicyConfig(cost=0.05, k_max=12))
    assert rec.priced_from == "survival"
    assert 4 < rec.recommended_k <= 11
    assert rec.extrapolated
    assert len(rec.speedups) == 13
    # up to the deployed k the price is the measured one
    assert rec.speedups[4] == pytest.approx((1 + sum(pos) / d) / 1.2, rel=1e-3)
    true_curve = mixture_survival([0.5, 0.5], [0.9, 0.5], 12)
    for j in range(5, 13):
        assert rec.speedups[j] <= speedup_from_survival(true_curve, j, 0.05) * (1 + 1e-3)
    assert "geometric tail" in rec.reason


def test_not_enough_data_keeps_the_current_k() -> None:
    e = estimate_counts("c", expected_counts(0.7, 3, 50), now=0.0)
    rec = recommend(e)
    assert rec.recommended_k == 3
    assert not rec.change_allowed
    assert "not enough data" in rec.reason
    assert rec.predicted_speedup_recommended is None


def test_batch_size_schedule_steps_down_with_load() -> None:
    cfg = PolicyConfig(
        cost=0.05,
        max_batch_size=128,
        batch_verify_cost=lambda k, b: saturating_verify_cost(k, b, knee_tokens=64),
    )
    rec = recommend(est(0.8, k=6), config=cfg)
    assert rec.schedule is not None
    validate_schedule(rec.schedule, rec.recommended_k)
    ks = [e[2] for e in rec.schedule]
    assert ks == sorted(ks, reverse=True)
    assert rec.schedule[0][0] == 1
    assert rec.schedule[-1] == (rec.schedule[-1][0], 128, 0)
    assert "by batch size" in rec.reason


def test_policy_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"draft cost = -0\.1"):
        PolicyConfig(cost=-0.1)
    with pytest.raises(ConfigError, match="k_max = 0"):
        PolicyConfig(k_max=0)


@pytest.mark.slow
def test_no_flapping_on_a_noisy_stationary_stream() -> None:
    """Alpha sits where k = 3 and k = 4 are nearly tied; noise flips the raw choice, the
    hysteresis does not. 3,000 ticks of 30 s (25 hours)."""
    rng = np.random.default_rng(99)
    alpha, k_dep, cost = 0.685, 4, 0.12
    estimator = RollingEstimator(EstimatorConfig(window_seconds=600))
    hyst = HysteresisGate(HysteresisConfig())
    cfg = PolicyConfig(cost=cost, k_max=6, plateau=0.0)
    current = 4
    changes = 0
    raw_flips = 0
    last_raw = None
    for tick in range(3000):
        now = 30.0 * (tick + 1)
        drafts = 60
        reached = drafts
        pos = []
        for _ in range(k_dep):
            reached = int(rng.binomial(reached, alpha))
            pos.append(float(reached))
        estimator.update(
            "c",
            WindowCounts(
                drafts=float(drafts),
                draft_tokens=float(k_dep * drafts),
                accepted=sum(pos),
                accepted_per_position=tuple(pos),
                k=k_dep,
                start=now - 30,
                end=now,
            ),
        )
        rec = recommend(estimator.estimate("c", now=now), config=cfg, current_k=current)
        if last_raw is not None and rec.recommended_k != last_raw:
            raw_flips += 1
        last_raw = rec.recommended_k
        gated = hyst(rec, now=now)
        if gated.change_allowed:
            current = gated.recommended_k
            changes += 1
    print(f"raw recommendation flips: {raw_flips}; changes after hysteresis: {changes}")
    assert raw_flips > 10  # the stream is noisy enough to matter
    assert changes <= 1


def test_one_change_goes_at_most_two_positions_past_the_measured_ones() -> None:
    """Issue 11: from k = 1 the fitted alpha 0.85 prices k = 8 best, but nothing past
    position 1 was measured; a drafter whose acceptance falls with depth would be
    overpriced by that tail. The step stops at k = 3 and the reason says why."""
    e = est(0.85, k=1)
    rec = recommend(e, config=PolicyConfig(cost=0.02, k_max=8))
    free = recommend(e, config=PolicyConfig(cost=0.02, k_max=8, max_step=None))
    assert free.recommended_k == 8  # the former single jump from 1 to k_max
    assert rec.recommended_k == 3
    assert "at most 2 positions past the 1 measured" in rec.reason
    assert "k = 8 is priced best" in rec.reason
    assert any("step bound applied" in n for n in rec.notes)
    assert rec.predicted_speedup_recommended == rec.speedups[3]
    assert rec.confidence > 0.9  # judged among the k this change may reach
    # once k = 3 is deployed and measured, the next step reaches 5, then 7 or 8
    assert recommend(est(0.85, k=3), config=PolicyConfig(cost=0.02)).recommended_k == 5
    assert recommend(est(0.85, k=6), config=PolicyConfig(cost=0.02)).recommended_k == 8
    # within the bound nothing changes and nothing is said
    near = recommend(est(0.85, k=7), config=PolicyConfig(cost=0.02, k_max=8))
    assert near.recommended_k == 8
    assert "positions past" not in near.reason
    # going down is never bounded
    assert recommend(est(0.3, k=8), config=PolicyConfig(cost=0.02)).recommended_k <= 2


def test_max_step_must_be_a_positive_whole_number() -> None:
    with pytest.raises(ConfigError, match="max_step"):
        PolicyConfig(max_step=0)
