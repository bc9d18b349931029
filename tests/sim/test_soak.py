"""Fault soak (default suite, about a minute): the controller against a served fleet that
injects every kind of fault at random; every tick's invariants must hold (see
:mod:`specwise.sim.soak`). The long run with figures is ``bench/bench_soak.py``."""

from __future__ import annotations

import pytest

from specwise.sim.soak import run_soak

pytestmark = pytest.mark.slow

KINDS = {
    "counter_reset",
    "foreign_k",
    "vanish",
    "http_5xx",
    "timeout",
    "garbage",
    "nan",
    "accepted_gt_drafted",
    "slow_actuator",
    "failing_actuator",
}


def test_soak_holds_every_invariant_under_random_faults() -> None:
    result = run_soak(ticks=1200, seed=7, interval=60.0, fault_rate=0.1)
    assert not result.violations, "\n".join(result.violations[:20])
    assert {kind for kind, n in result.faults.items() if n > 0} >= KINDS, result.faults
    # the invariants were really exercised, not vacuously true
    assert result.checked_deployed > 500
    assert result.checked_stale > 0
    assert sum(result.actuations.values()) > 0
    assert "stray" not in result.actuations
