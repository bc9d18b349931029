"""The estimator on simulated draft outcomes (fixed seeds) and on a real vLLM capture."""

from __future__ import annotations

import math

import numpy as np
import pytest

from specwise.collectors.snapshot import CounterDelta
from specwise.errors import ConfigError, DataError
from specwise.estimation.estimator import (
    EstimatorConfig,
    WindowCounts,
    alpha_trials,
    estimate_counts,
    estimate_delta,
    short_draft_alpha,
)
from specwise.estimation.fit import check_iid_fit, tail_lengths
from specwise.estimation.rolling import RollingEstimator

# --- simulated draft outcomes ------------------------------------------------------------


def iid_positions(rng: np.random.Generator, alpha: float, k: int, drafts: np.ndarray) -> np.ndarray:
    """Per-position counts P_i for full-length i.i.d. drafts, one row per trial.

    Drafts reaching position i that also pass position i+1 are Binomial(P_i, alpha): the
    exact distribution of the counters, vectorized over trials.
    """
    out = np.empty((len(drafts), k), dtype=np.int64)
    reached = drafts.astype(np.int64)
    for i in range(k):
        reached = rng.binomial(reached, alpha)
        out[:, i] = reached
    return out


def two_state_positions(
    rng: np.random.Generator, k: int, n: int, *, ah: float, al: float, hl: float, lh: float
) -> np.ndarray:
    """P_i of n drafts with correlated acceptance (two-state Markov chain over positions)."""
    high = rng.random(n) < lh / (hl + lh)
    alive = np.ones(n, dtype=bool)
    out = np.empty(k, dtype=np.int64)
    for i in range(k):
        p = np.where(high, ah, al)
        alive &= rng.random(n) < p
        out[i] = alive.sum()
        u = rng.random(n)
        high = np.where(high, u >= hl, u < lh)
    return out


def counts_of(
    pos: np.ndarray, drafts: float, k: int, draft_tokens: float | None = None
) -> WindowCounts:
    return WindowCounts(
        drafts=float(drafts),
        draft_tokens=float(k * drafts if draft_tokens is None else draft_tokens),
        accepted=float(pos.sum()),
        accepted_per_position=tuple(float(x) for x in pos),
        k=k,
        start=0.0,
        end=60.0,
    )


CFG = EstimatorConfig(min_drafts=50)

# --- a real capture, checked by hand -------------------------------------------------------

NGRAM = CounterDelta(
    labels={"engine": "0", "model_name": "tiny-llama"},
    start=0.0,
    end=600.0,
    drafts=2946,
    draft_tokens=11252,
    accepted=8255,
    accepted_per_position=(2491, 2147, 1919, 1698),
    k=4,
)


def test_ngram_capture_by_hand() -> None:
    est = estimate_delta("tiny-llama", NGRAM, now=660.0)
    assert est.method == "positions-mle"
    assert est.mean_acceptance_length == pytest.approx(1 + 8255 / 2946)
    assert est.shortfall == pytest.approx(11252 / (4 * 2946))
    assert est.survival_values == pytest.approx(
        (2491 / 2946, 2147 / 2946, 1919 / 2946, 1698 / 2946)
    )
    assert [p.value for p in est.conditional] == pytest.approx(
        [2491 / 2946, 2147 / 2491, 1919 / 2147, 1698 / 1919]
    )
    # Counting every short draft as a rejection gives the textbook MLE A / (A + D - P_3);
    # short drafts are not rejections: alpha solves sum_j P_(j-1) / alpha^j = T.
    naive = 8255 / (8255 + 2946 - 1698)
    assert est.alpha is not None
    assert est.alpha_low is not None
    assert est.alpha_high is not None
    root = est.alpha
    assert sum(p / root ** (j + 1) for j, p in enumerate(NGRAM.accepted_per_position)) == (
        pytest.approx(11252, rel=1e-12)
    )
    assert naive < est.alpha_low < est.alpha < est.alpha_high < 0.9
    assert est.alpha_bracket is None
    assert est.data_age == 60.0
    # Conditional acceptance 1919 / 2147 = 0.894 > alpha 0.880: checked, within noise.
    assert est.fit.tested
    assert est.fit_ok
    assert any("shortfall" in n for n in est.notes)
    assert any("P_(j-1) / alpha^j = T" in n for n in est.notes)
    for p in est.survival:
        assert p.low < p.value < p.high


def test_full_length_mle_is_successes_over_trials() -> None:
    c = counts_of(np.array([700, 490, 343]), 1000, 3)
    est = estimate_counts("c", c, now=60.0, config=CFG)
    assert est.alpha == pytest.approx(1533 / (1533 + 1000 - 343))
    assert est.shortfall == pytest.approx(1.0)
    assert est.alpha_bracket is None
    assert est.fit_ok


# --- statistics ----------------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "k", "d"), [(0.7, 4, 500), (0.3, 3, 300), (0.92, 6, 1000)])
def test_credible_interval_coverage(alpha: float, k: int, d: int) -> None:
    rng = np.random.default_rng(20240401)
    trials = 1000
    pos = iid_positions(rng, alpha, k, np.full(trials, d))
    covered = 0
    for row in pos:
        est = estimate_counts("c", counts_of(row, d, k), now=60.0, config=CFG)
        assert est.alpha_low is not None
        assert est.alpha_high is not None
        covered += est.alpha_low <= alpha <= est.alpha_high
    assert covered / trials >= 0.93, f"95% interval covered alpha in {covered}/{trials}"


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.7, 0.9])
def test_alpha_error_below_001_with_10000_drafts(alpha: float) -> None:
    rng = np.random.default_rng(7)
    pos = iid_positions(rng, alpha, 4, np.full(300, 10_000))
    errors = np.array(
        [
            abs(estimate_counts("c", counts_of(r, 10_000, 4), now=0.0).alpha - alpha)  # type: ignore[operator]
            for r in pos
        ]
    )
    assert np.mean(errors < 0.01) >= 0.99
    assert errors.mean() < 0.004


def test_fit_passes_iid_streams_at_its_nominal_rate() -> None:
    rng = np.random.default_rng(11)
    pos = iid_positions(rng, 0.75, 5, np.full(500, 5000))
    fails = sum(
        not estimate_counts("c", counts_of(r, 5000, 5), now=0.0, config=CFG).fit_ok for r in pos
    )
    assert fails / 500 <= 0.03


def test_fit_flags_a_workload_mix() -> None:
    rng = np.random.default_rng(12)
    trials, d, k = 200, 5000, 5
    n_hi = rng.binomial(d, 0.5, size=trials)
    pos = iid_positions(rng, 0.9, k, n_hi) + iid_positions(rng, 0.5, k, d - n_hi)
    flagged = sum(
        not estimate_counts("c", counts_of(r, d, k), now=0.0, config=CFG).fit_ok for r in pos
    )
    assert flagged / trials >= 0.95


def test_fit_flags_correlated_acceptance() -> None:
    rng = np.random.default_rng(13)
    flagged = 0
    for _ in range(100):
        pos = two_state_positions(rng, 5, 4000, ah=0.95, al=0.3, hl=0.1, lh=0.3)
        flagged += not estimate_counts("c", counts_of(pos, 4000, 5), now=0.0, config=CFG).fit_ok
    assert flagged >= 95


def test_fit_untested_at_k1_and_infinite_for_impossible_cells() -> None:
    assert not check_iid_fit([10.0], 20.0, 20.0, 0.5).tested
    fit = check_iid_fit([10.0, 10.0], 20.0, 40.0, 0.0)  # alpha 0 cannot accept anything
    assert fit.statistic == math.inf
    assert fit.p_value == 0.0
    assert not fit.ok


# --- short drafts ---------------------------------------------------------------------------


def test_short_drafts_are_not_counted_as_rejections() -> None:
    """Drafts with random lengths 1..k (independent of acceptance): the interval covers alpha
    where the textbook MLE, which counts short fully accepted drafts as rejections, is low."""
    rng = np.random.default_rng(21)
    alpha, k, d = 0.8, 4, 3000
    covered = 0
    naive_low = 0
    for _ in range(200):
        lengths = np.where(rng.random(d) < 0.15, rng.integers(1, k, size=d), k)
        accept = rng.random((d, k)) < alpha
        prefix = np.cumprod(accept, axis=1).sum(axis=1)
        prefix = np.minimum(prefix, lengths)
        pos = np.array([(prefix > i).sum() for i in range(k)])
        c = counts_of(pos, d, k, draft_tokens=float(lengths.sum()))
        est = estimate_counts("c", c, now=0.0, config=CFG)
        assert est.alpha_low is not None
        assert est.alpha_high is not None
        covered += est.alpha_low <= alpha <= est.alpha_high
        naive = pos.sum() / (pos.sum() + d - pos[-1])
        naive_low += naive < alpha
    assert covered >= 190
    assert naive_low >= 195  # the bias the correction avoids


def test_tail_lengths_takes_missing_tokens_from_the_end() -> None:
    assert tail_lengths(10, 40, 4) == [10, 10, 10, 10, 0]
    assert tail_lengths(10, 37, 4) == [10, 10, 10, 7, 0]
    assert tail_lengths(10, 25, 4) == [10, 10, 5, 0, 0]


def test_alpha_trials_short_drafts_are_effective_trials_of_the_root() -> None:
    c = counts_of(np.array([800, 600, 400]), 1000, 3, draft_tokens=2700)
    trials = alpha_trials(c)
    assert trials is not None
    s, r, r_min, r_max = trials
    assert r_min == r == r_max
    root = short_draft_alpha((800, 600, 400), 2700)
    assert s / (s + r) == pytest.approx(root, rel=1e-12)
    assert 800 / root + 600 / root**2 + 400 / root**3 == pytest.approx(2700, rel=1e-12)


# --- fallbacks and evidence -----------------------------------------------------------------


def test_not_enough_data_says_so() -> None:
    c = counts_of(np.array([60, 40]), 80, 2)
    est = estimate_counts("c", c, now=0.0, config=EstimatorConfig(min_drafts=100))
    assert est.method == "insufficient"
    assert est.alpha is None
    assert not est.ok
    assert "not enough data" in est.reason
    assert "80" in est.reason


def test_fallback_inverts_mean_acceptance_length() -> None:
    rng = np.random.default_rng(3)
    pos = iid_positions(rng, 0.6, 3, np.array([20_000]))[0]
    c = WindowCounts(drafts=20_000.0, draft_tokens=60_000.0, accepted=float(pos.sum()), k=3)
    est = estimate_counts("c", c, now=0.0)
    assert est.method == "acceptance-length"
    assert est.alpha == pytest.approx(0.6, abs=0.01)
    assert est.alpha_low < 0.6 < est.alpha_high  # type: ignore[operator]
    assert not est.fit.tested
    assert len(est.alpha_samples) == 9


def test_fallback_0_8_4_needs_k() -> None:
    c = WindowCounts(drafts=None, draft_tokens=9000.0, accepted=5000.0, generation="v1-0.8.4")
    est = estimate_counts("c", c, now=0.0)
    assert est.method == "insufficient"
    assert "k" in est.reason
    est = estimate_counts("c", c, now=0.0, k=3)
    assert est.method == "acceptance-rate"
    assert est.alpha is not None
    assert 0.0 < est.alpha < 1.0


def test_v0_uses_per_token_rate() -> None:
    c = WindowCounts(drafts=None, draft_tokens=13311.0, accepted=8547.0, k=3, generation="v0")
    est = estimate_counts("c", c, now=0.0)
    assert est.method == "per-token-rate"
    assert est.alpha == pytest.approx(0.642, abs=1e-3)


@pytest.mark.parametrize(
    ("delta", "needle"),
    [
        (dict(draft_tokens=10, accepted=11, accepted_per_position=(6, 5)), "exceed draft tokens"),
        (dict(draft_tokens=20, accepted=11, accepted_per_position=(5, 6)), "cannot rise"),
        (dict(draft_tokens=20, accepted=10, accepted_per_position=(6, 5)), "sum to 11"),
        (dict(draft_tokens=-1, accepted=0, accepted_per_position=(0, 0)), "negative"),
    ],
)
def test_contradictory_counters_raise_one_sentence(delta: dict[str, object], needle: str) -> None:
    d = CounterDelta(labels={"model_name": "m"}, start=0, end=1, drafts=10, k=2, **delta)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=needle) as info:
        estimate_delta("m", d)
    assert 'model_name="m"' in str(info.value)


def test_config_errors_name_the_value() -> None:
    with pytest.raises(ConfigError, match="window_seconds = -1"):
        EstimatorConfig(window_seconds=-1)
    with pytest.raises(ConfigError, match="mode"):
        EstimatorConfig(mode="daily")  # type: ignore[arg-type]


# --- rolling windows ------------------------------------------------------------------------


def _delta(t: float, pos: tuple[int, ...], drafts: int, k: int | None = None) -> CounterDelta:
    kk = len(pos) if k is None else k
    return CounterDelta(
        labels={"model_name": "m"},
        start=t - 60,
        end=t,
        drafts=drafts,
        draft_tokens=kk * drafts,
        accepted=sum(pos),
        accepted_per_position=pos,
        k=kk,
    )


def test_sliding_window_forgets_old_deltas() -> None:
    est = RollingEstimator(EstimatorConfig(window_seconds=300, min_drafts=10))
    est.update("m", _delta(60, (90, 81), 100))  # alpha 0.9
    for t in range(120, 600, 60):
        est.update("m", _delta(t, (50, 25), 100))  # alpha 0.5
    early = est.estimate("m", now=300)
    late = est.estimate("m", now=540)
    assert early.alpha is not None
    assert late.alpha is not None
    assert early.alpha > 0.5
    assert late.alpha == pytest.approx(0.5)
    assert late.window_start == 300 - 60
    assert late.drafts == 500


def test_ewma_weighs_recent_deltas_more() -> None:
    est = RollingEstimator(EstimatorConfig(mode="ewma", half_life_seconds=60, min_drafts=1))
    est.update("m", _delta(60, (900, 810), 1000))
    est.update("m", _delta(600, (500, 250), 1000))
    e = est.estimate("m", now=600)
    assert e.alpha is not None
    assert abs(e.alpha - 0.5) < 0.01
    assert e.drafts == pytest.approx(1000 + 1000 * 2 ** (-9))
    later = est.estimate("m", now=660)
    assert later.drafts == pytest.approx(e.drafts / 2)


def test_k_change_restarts_the_window() -> None:
    est = RollingEstimator(EstimatorConfig(min_drafts=1))
    est.update("m", _delta(60, (90, 81), 100))
    est.update("m", _delta(120, (50, 25, 12), 100))
    e = est.estimate("m", now=120)
    assert e.k == 3
    assert e.drafts == 100
    assert any("restarted" in n for n in e.notes)


def test_unknown_class_is_insufficient() -> None:
    e = RollingEstimator().estimate("nope", now=0.0)
    assert not e.ok
    assert "no data" in e.reason
