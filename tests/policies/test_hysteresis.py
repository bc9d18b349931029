"""The hysteresis gate: gain threshold, confidence, drift, dwell time, changes per hour."""

from __future__ import annotations

import pytest

from specwise.errors import ConfigError
from specwise.policies import (
    HysteresisConfig,
    HysteresisGate,
    HysteresisState,
    Recommendation,
    gate,
)


def rec(k: int, *, cur: int = 4, s_cur: float = 1.5, s_rec: float = 1.8, conf: float = 1.0):  # type: ignore[no-untyped-def]
    return Recommendation(
        class_name="c",
        current_k=cur,
        recommended_k=k,
        predicted_speedup_current=s_cur,
        predicted_speedup_recommended=s_rec,
        confidence=conf,
        change_allowed=k != cur,
        reason="alpha 0.7",
    )


CFG = HysteresisConfig(min_gain=0.05, min_dwell_seconds=1800, max_changes_per_hour=2)


def test_same_k_is_not_a_change() -> None:
    out, state = gate(rec(4, s_rec=1.5), HysteresisState(), now=0.0, config=CFG)
    assert not out.change_allowed
    assert state.current_k == 4
    assert out.reason == "alpha 0.7"


def test_small_gain_is_held() -> None:
    out, state = gate(rec(3, s_rec=1.52), HysteresisState(), now=0.0, config=CFG)
    assert not out.change_allowed
    assert "below the 5% threshold" in out.reason
    assert "hold k = 4" in out.reason
    assert state.last_change is None


def test_low_confidence_and_drift_are_held() -> None:
    out, _ = gate(rec(3, conf=0.5), HysteresisState(), now=0.0, config=CFG)
    assert "confidence 0.50" in out.reason
    out, _ = gate(rec(3), HysteresisState(), now=0.0, config=CFG, drifting=True)
    assert not out.change_allowed
    assert "drifting" in out.reason


def test_dwell_then_cap_per_hour() -> None:
    cfg = HysteresisConfig(min_gain=0.0, min_dwell_seconds=600, max_changes_per_hour=2)
    out, state = gate(rec(3), HysteresisState(current_k=4), now=0.0, config=cfg)
    assert out.change_allowed
    assert state == HysteresisState(current_k=3, last_change=0.0, changes=(0.0,))
    out, state2 = gate(rec(4, cur=3), state, now=300.0, config=cfg)
    assert not out.change_allowed
    assert "dwell 300 s more" in out.reason
    out, state = gate(rec(4, cur=3), state2, now=700.0, config=cfg)
    assert out.change_allowed
    out, state = gate(rec(3, cur=4), state, now=1400.0, config=cfg)
    assert not out.change_allowed
    assert "2 changes in the last hour (cap 2)" in out.reason
    out, state = gate(rec(3, cur=4), state, now=3700.0, config=cfg)
    assert out.change_allowed  # the first change left the hour


def test_gate_object_keeps_state_per_class() -> None:
    g = HysteresisGate(HysteresisConfig(min_gain=0.0, min_dwell_seconds=1000))
    assert g(rec(3), now=0.0).change_allowed
    assert not g(rec(2, cur=3), now=10.0).change_allowed
    assert g.states["c"].current_k == 3


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_changes_per_hour = 0"):
        HysteresisConfig(max_changes_per_hour=0)
    with pytest.raises(ConfigError, match="min_confidence"):
        HysteresisConfig(min_confidence=2.0)


def test_a_small_gain_claimed_for_four_dwells_is_taken() -> None:
    # +3% against a 5% threshold (at least half of it): held, then taken once every
    # recommendation has claimed it for 4 x 1800 s, and only if the other checks pass
    state = HysteresisState(current_k=4)
    t = 0.0
    for _ in range(8):  # ticks every 15 minutes for 2 hours
        out, state = gate(rec(3, s_rec=1.545), state, now=t, config=CFG)
        assert not out.change_allowed
        assert "taken if it holds" in out.reason
        t += 900.0
    out, state = gate(rec(3, s_rec=1.545, conf=0.5), state, now=t, config=CFG)
    assert not out.change_allowed
    assert "confidence 0.50" in out.reason  # the other checks still apply
    out, state = gate(rec(3, s_rec=1.545), state, now=t, config=CFG)
    assert out.change_allowed
    assert "a gain of +3.0%, below the 5% threshold, claimed for 2.0 h" in out.reason
    assert state.current_k == 3


@pytest.mark.parametrize(
    "interrupt",
    [
        {"s_rec": 1.52},  # +1.3%: below half the threshold
        {"k": 4, "s_rec": 1.5},  # the recommendation agrees with what runs
    ],
)
def test_a_small_gain_must_hold_without_a_break(interrupt: dict[str, float]) -> None:
    state = HysteresisState(current_k=4)
    for t in (0.0, 3600.0):
        _, state = gate(rec(3, s_rec=1.545), state, now=t, config=CFG)
    args = {"k": 3, **interrupt}
    _, state = gate(rec(**args), state, now=5400.0, config=CFG)  # type: ignore[arg-type]
    assert state.small_gain_since is None
    out, state = gate(rec(3, s_rec=1.545), state, now=7300.0, config=CFG)
    assert not out.change_allowed  # the clock started again at 7300
    assert state.small_gain_since == 7300.0
