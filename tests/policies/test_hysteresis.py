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
