"""recommend(..., load=...) speaks configurations; without load it is today's policy plus a
note; hysteresis holds schedule-only changes below min_gain."""

from __future__ import annotations

import math

import pytest

from specwise.estimation.estimator import Estimate, WindowCounts, estimate_counts
from specwise.estimation.step_fit import MeasuredSpeedup, StepCostFit
from specwise.model import recommended_k
from specwise.policies import (
    HysteresisConfig,
    HysteresisState,
    PolicyConfig,
    Recommendation,
    gate,
    recommend,
    validate_schedule,
)
from specwise.policies.load_policy import LoadEvidence
from specwise.policies.speedup_policy import CONSTANT_COST_NOTE
from specwise.step_cost import BatchDistribution, SpecConfig, StepCost

KNEE = StepCost(base=0.02, per_token=0.02 / 64, knee=64, draft_base=0.001, draft_per_seq=2e-5)


def fit(cost: StepCost, samples: tuple[StepCost, ...] = ()) -> StepCostFit:
    return StepCostFit(
        cost=cost,
        samples=samples,
        n_observations=100,
        ks=(0, 4),
        batch_range=(1.0, 128.0),
        plain_observed=True,
        prior_cost=0.05,
    )


def est(alpha: float, k: int = 4, drafts: float = 5000.0) -> Estimate:
    pos = tuple(drafts * alpha**i for i in range(1, k + 1))
    counts = WindowCounts(
        drafts=drafts,
        draft_tokens=k * drafts,
        accepted=sum(pos),
        accepted_per_position=pos,
        k=k,
        start=0.0,
        end=60.0,
    )
    return estimate_counts("c", counts, now=60.0)


def day() -> BatchDistribution:
    sizes = list(range(1, 201))
    w = [
        0.7 / 2 * math.exp(-0.5 * ((b - 6) / 2) ** 2)
        + 0.3 / 8 * math.exp(-0.5 * ((b - 64) / 8) ** 2)
        for b in sizes
    ]
    return BatchDistribution.from_samples(sizes, w)


def test_without_load_the_constant_cost_policy_is_unchanged_and_says_so() -> None:
    e = est(0.7)
    rec = recommend(e, config=PolicyConfig(cost=0.05))
    assert rec.config is None
    assert rec.load is None
    assert rec.measured is None
    assert CONSTANT_COST_NOTE in rec.notes
    assert CONSTANT_COST_NOTE == (
        "no latency families: priced with the constant-cost model (draft cost c from the preset)"
    )
    assert rec.recommended_k == recommended_k(0.7, 0.05, k_max=8) == 5
    assert rec.optimal_k == 6


def test_a_load_independent_fit_gives_the_constant_cost_answer() -> None:
    e = est(0.7)
    cfg = PolicyConfig(cost=0.05)
    plain = recommend(e, config=cfg)
    load = LoadEvidence(fit(StepCost.constant(0.05)), day())
    rec = recommend(e, config=cfg, load=load)
    assert rec.config == SpecConfig(plain.recommended_k)
    assert rec.load is not None
    assert rec.load.kind == "single"
    assert rec.recommended_k == plain.recommended_k
    assert rec.predicted_speedup_recommended == pytest.approx(
        plain.predicted_speedup_recommended, rel=1e-6
    )
    assert CONSTANT_COST_NOTE not in rec.notes


def test_with_load_the_recommendation_is_a_configuration() -> None:
    e = est(0.75)
    measured = MeasuredSpeedup(0.91, 0.88, 0.94, batch=20.0, k=4, basis="baseline")
    load = LoadEvidence(fit(KNEE), day(), measured=measured)
    rec = recommend(e, config=PolicyConfig(cost=0.05, min_gain=0.05), load=load)
    assert rec.load is not None
    assert rec.load.kind == "schedule"
    assert rec.config is not None
    assert rec.config == rec.load.config
    assert rec.recommended_k == rec.config.k
    assert rec.schedule == rec.config.schedule
    assert rec.schedule is not None
    validate_schedule(rec.schedule, rec.recommended_k)
    assert rec.schedule[-1][1] == 256
    assert rec.speedups == rec.load.speedups
    assert rec.speedups[0] == 1.0
    assert rec.measured is measured
    assert rec.predicted_speedup_recommended == rec.load.speedup
    assert rec.predicted_speedup_current == rec.load.current_speedup
    assert rec.gain is not None
    assert rec.gain > 0.05
    assert rec.change_allowed
    assert any("k = 0 band" in n for n in rec.notes)
    assert "fitted step cost" in rec.reason
    # the deployed configuration, priced with its schedule
    same = recommend(
        e,
        config=PolicyConfig(cost=0.05),
        load=load,
        current_k=rec.recommended_k,
        current_schedule=rec.schedule,
    )
    assert same.config == rec.config
    assert not same.change_allowed
    assert same.predicted_speedup_current == pytest.approx(rec.predicted_speedup_recommended)


def test_with_load_schedules_off_gives_a_single_k() -> None:
    load = LoadEvidence(fit(KNEE), day())
    rec = recommend(est(0.75), config=PolicyConfig(schedules=False), load=load)
    assert rec.load is not None
    assert rec.load.kind == "single"
    assert rec.schedule is None


def test_with_load_a_losing_drafter_is_off_by_restart() -> None:
    heavy = StepCost(base=0.02, per_token=0.02 / 64, knee=64, draft_base=0.012, draft_per_seq=1e-4)
    load = LoadEvidence(fit(heavy), BatchDistribution((4, 48), (0.5, 0.5)))
    rec = recommend(est(0.3), config=PolicyConfig(), load=load)
    assert rec.recommended_k == 0
    assert rec.config == SpecConfig(0)
    assert rec.off_mode == "restart"
    assert "no acceptance counters" in rec.off_cost
    assert rec.predicted_speedup_current is not None
    assert rec.predicted_speedup_current < 1.0


def test_without_evidence_load_changes_nothing() -> None:
    empty = estimate_counts("c", WindowCounts(0.0, 0.0, 0.0, (0.0,) * 4, 4, 0.0, 60.0), now=60.0)
    rec = recommend(empty, load=LoadEvidence(fit(KNEE), day()))
    assert rec.recommended_k == 4
    assert rec.config is None


# -- hysteresis over configurations --------------------------------------------------------

CFG = HysteresisConfig(min_gain=0.05, min_dwell_seconds=0, max_changes_per_hour=10)
OLD = ((1, 16, 4), (17, 256, 0))


def conf_rec(schedule: tuple[tuple[int, int, int], ...] | None, s_rec: float, k: int = 4):  # type: ignore[no-untyped-def]
    return Recommendation(
        class_name="c",
        current_k=4,
        recommended_k=k,
        predicted_speedup_current=1.20,
        predicted_speedup_recommended=s_rec,
        confidence=1.0,
        schedule=schedule,
        change_allowed=True,
        reason="r",
        config=SpecConfig(k, schedule),
    )


def test_a_small_edge_move_is_held() -> None:
    state = HysteresisState(current_k=4, current_schedule=OLD)
    moved = ((1, 20, 4), (21, 256, 0))
    out, after = gate(conf_rec(moved, 1.22), state, now=100.0, config=CFG)
    assert not out.change_allowed
    assert "hold k = 4 with its batch-size schedule" in out.reason
    assert "below the 5% threshold" in out.reason
    assert after.current_schedule == OLD
    assert after.last_change is None


def test_a_big_schedule_gain_passes_and_is_remembered() -> None:
    state = HysteresisState(current_k=4, current_schedule=OLD)
    moved = ((1, 40, 4), (41, 256, 0))
    out, after = gate(conf_rec(moved, 1.40), state, now=100.0, config=CFG)
    assert out.change_allowed
    assert after.current_k == 4
    assert after.current_schedule == moved
    assert after.last_change == 100.0
    # the same configuration again is not a change
    again, _ = gate(conf_rec(moved, 1.40), after, now=200.0, config=CFG)
    assert not again.change_allowed


def test_a_schedule_to_single_k_change_needs_min_gain() -> None:
    state = HysteresisState(current_k=4, current_schedule=OLD)
    held, _ = gate(conf_rec(None, 1.21), state, now=0.0, config=CFG)
    assert not held.change_allowed
    passed, after = gate(conf_rec(None, 1.30), state, now=0.0, config=CFG)
    assert passed.change_allowed
    assert after.current_schedule is None
    # a one-k "schedule" is the same configuration as that k
    same, _ = gate(conf_rec(((1, 256, 4),), 1.5), after, now=10.0, config=CFG)
    assert not same.change_allowed


def test_an_unpriced_schedule_change_is_held() -> None:
    rec = conf_rec(((1, 40, 4), (41, 256, 0)), 1.4)
    rec = Recommendation(**{**rec.__dict__, "predicted_speedup_current": None})
    out, _ = gate(rec, HysteresisState(current_k=4, current_schedule=OLD), now=0.0, config=CFG)
    assert not out.change_allowed
    assert "unpriced" in out.reason


def test_a_recommendation_without_configuration_ignores_schedules() -> None:
    """The constant-cost path (no config) gates on k alone, as before."""
    rec = Recommendation(
        class_name="c",
        current_k=4,
        recommended_k=4,
        predicted_speedup_current=1.2,
        predicted_speedup_recommended=1.2,
        confidence=1.0,
        schedule=((1, 8, 4), (9, 256, 2)),
        reason="r",
    )
    out, after = gate(rec, HysteresisState(current_k=4), now=0.0, config=CFG)
    assert not out.change_allowed
    assert after.current_schedule is None


def test_with_load_one_change_moves_at_most_max_step_past_the_measured_positions() -> None:
    load = LoadEvidence(fit(StepCost.constant(0.01)), day())
    rec = recommend(est(0.9, k=2), config=PolicyConfig(cost=0.01, max_step=2), load=load)
    assert rec.recommended_k == 4
    assert any("step bound applied: k priced up to 4" in n for n in rec.notes)
    free = recommend(est(0.9, k=2), config=PolicyConfig(cost=0.01, max_step=None), load=load)
    assert free.recommended_k > 4


def test_with_load_off_mode_schedule_is_respected_and_priced() -> None:
    heavy = StepCost(base=0.02, per_token=0.02 / 64, knee=64, draft_base=0.012, draft_per_seq=1e-4)
    load = LoadEvidence(fit(heavy), BatchDistribution((4, 48), (0.5, 0.5)))
    rec = recommend(est(0.3), config=PolicyConfig(off="schedule"), load=load)
    assert rec.recommended_k == 0
    assert rec.off_mode == "schedule"
    assert rec.predicted_speedup_recommended == pytest.approx(0.86)
    assert "6-22% slower" in rec.off_cost


def test_a_one_k_current_schedule_is_that_k() -> None:
    load = LoadEvidence(fit(KNEE), BatchDistribution((24,), (1.0,)))
    plain = recommend(est(0.75), config=PolicyConfig(schedules=False), load=load)
    k = plain.recommended_k
    same = recommend(
        est(0.75),
        config=PolicyConfig(schedules=False),
        load=load,
        current_k=k,
        current_schedule=((1, 256, k),),
    )
    assert same.config == SpecConfig(k)
    assert not same.change_allowed
