"""Past the largest batch size the traffic reached, k steps down where the fit says the
verify saturates (guard bands), and band edges judged by the denser of the day's and the
recent load."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from specwise.policies.load_policy import (
    HOVER_DENSE,
    TAIL_REACH,
    LoadEvidence,
    _hover,
    _shape_bands,
    recommend_config,
)
from specwise.step_cost import SpecConfig, StepCost
from tests.policies.test_load_policy import (
    KNEE,
    N,
    check_valid,
    cost_draws,
    fit,
    mixture,
    run,
    survival,
)


def test_guard_bands_step_k_down_past_the_largest_batch_seen() -> None:
    # the traffic has reached B = 16 (k = 4 pays throughout); the knee (64 tokens) is
    # crossed by k = 4 from B = 13, so past 16 the fit's best k falls
    night = mixture([(1.0, 8, 2.5)], top=16)
    out = run(night, alpha=0.8)
    assert out.kind == "schedule"
    top = 16
    assert out.config.k_at(top) == out.config.k_at(1)
    tail = [out.config.k_at(b) for b in range(top + 1, N + 1)]
    assert min(tail) < out.config.k_at(top)
    assert all(a >= b for a, b in itertools.pairwise(tail))  # only steps down
    # the guard ends at TAIL_REACH x the largest size seen; its last band runs on
    reach = int(np.ceil(TAIL_REACH * top))
    assert out.config.k_at(N) == out.config.k_at(reach)
    assert "past batch size 16, the largest the traffic reached" in out.reason
    # where the traffic is, the guard changes nothing: the same predicted speedup
    without = run(night, alpha=0.8, schedules=False)
    assert without.kind == "single"
    assert out.speedup == without.speedup
    assert without.config.k == out.config.k


def test_no_guard_without_a_saturating_verify_or_schedules() -> None:
    flat = StepCost(base=0.02, draft_base=0.001)
    night = mixture([(1.0, 8, 2.5)], top=16)
    assert run(night, cost=flat, alpha=0.8).kind == "single"
    assert run(night, alpha=0.8, schedules=False).config.schedule is None


def test_a_guard_does_not_make_a_restart_worthwhile() -> None:
    # deployed: the single k the guard extends; the recommendation prices them alike
    night = mixture([(1.0, 8, 2.5)], top=16)
    out = run(night, alpha=0.8)
    assert out.guard_from is not None
    again = run(night, alpha=0.8, current=SpecConfig(out.single_k))
    assert again.current_speedup == pytest.approx(again.speedup)


def test_an_edge_where_the_night_sits_is_moved_even_during_a_peak() -> None:
    # the blended share thins the night's density at B 2-3 by half while a peak runs; the
    # edge is judged by the denser load (the night's) and moves away from where it sits
    n = 64
    best = [4, 4] + [3] * 40 + [1] * 22
    day = np.zeros(n)
    day[[1, 2, 3]] = [0.2, 0.25, 0.4]
    day[40:50] = 0.015
    recent = np.zeros(n)
    recent[44:52] = 1 / 8
    blend = 0.5 * day + 0.5 * recent
    rel = np.ones((5, n))
    w = blend.copy()
    assert _hover(3, 0.25, blend) <= HOVER_DENSE < _hover(3, 0.25, day)
    kept, _ = _shape_bands(best, blend, min_share=0.0, margin=0.25, rel=rel, w=w)
    assert kept[0][1] == 2  # judged by the blend alone, the edge at 3 stays
    bands, notes = _shape_bands(
        best, blend, min_share=0.0, margin=0.25, rel=rel, w=w, hover_share=np.maximum(day, recent)
    )
    assert all(_hover(a, 0.25, day) <= HOVER_DENSE for a, _b, _k in bands[1:])
    assert notes


def test_a_peak_now_still_gets_its_band_with_a_guard() -> None:
    day = mixture([(0.95, 4, 1), (0.05, 40, 3)], top=48)
    peak = mixture([(1.0, 40, 3)], top=48)
    out = recommend_config(
        survival(0.75),
        LoadEvidence(fit(KNEE, cost_draws(KNEE)), day, recent_batches=peak),
        k_max=8,
        plateau=0.01,
        min_gain=0.05,
        current=SpecConfig(4),
        max_batch_size=N,
        edge_margin=0.25,
        off_overhead=0.14,
    )
    check_valid(out, N)
    assert out.kind == "schedule"
    assert out.config.k_at(4) >= 3
    assert out.config.k_at(40) < out.config.k_at(4)
    assert out.config.k_at(N) <= out.config.k_at(48)
