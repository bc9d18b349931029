"""specwise.controller.decide: one class's evidence in, one decision out (pure)."""

from __future__ import annotations

import dataclasses

from specwise.controller.decide import DecisionRules, Evidence, decide
from specwise.estimation.estimator import Estimate, WindowCounts, estimate_counts
from specwise.policies.hysteresis import HysteresisConfig, HysteresisState
from specwise.policies.speedup_policy import PolicyConfig

NOW = 1_800_000_000.0
RULES = DecisionRules(
    policy=PolicyConfig(cost=0.05),
    hysteresis=HysteresisConfig(min_dwell_seconds=600.0),
    stale_after=300.0,
)


def _estimate(alpha: float, k: int = 3, drafts: float = 20_000.0) -> Estimate:
    per_pos = tuple(drafts * alpha ** (i + 1) for i in range(k))
    counts = WindowCounts(drafts, k * drafts, sum(per_pos), per_pos, k, end=NOW)
    return estimate_counts("code", counts, now=NOW)


def _evidence(**kw: object) -> Evidence:
    base = Evidence(
        name="code",
        estimate=_estimate(0.82),
        now=NOW,
        last_seen=NOW,
        observed_k=3,
        gate_state=HysteresisState(current_k=3),
        sources_answered=True,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_a_declared_fresh_class_acts() -> None:
    d = decide(_evidence(), RULES)
    assert d.act
    assert d.recommendation.recommended_k > 3
    assert d.after.current_k == d.recommendation.recommended_k
    assert d.before.current_k == 3


def test_holds_name_why() -> None:
    cases = {
        "never actuated": _evidence(declared=False),
        "alpha is drifting": _evidence(drifting=True),
        "data is stale": _evidence(last_seen=NOW - 900),
        "load-aware pricing failed": _evidence(load_error="pricing with the load: boom"),
    }
    for why, ev in cases.items():
        d = decide(ev, RULES)
        assert not d.act, why
        assert why in d.hold, (why, d.hold)
        assert d.after == d.before


def test_schedule_off_reads_the_exported_positions_as_k_zero() -> None:
    ev = _evidence(
        estimate=_estimate(0.3),
        gate_state=HysteresisState(current_k=0, last_change=NOW - 3600),
        schedule_off=True,
    )
    losing = dataclasses.replace(RULES, policy=PolicyConfig(cost=0.4, off="schedule"))
    d = decide(ev, losing)
    assert d.deployed == 0  # not the 3 positions the engine still exports
    assert d.recommendation.recommended_k == 0
    assert not d.act
    assert "speculation is off (k = 0)" in d.reason
    d = decide(dataclasses.replace(ev, schedule_off=False), losing)
    assert d.deployed == 3  # the same counters without a schedule-form k = 0: k = 3 runs


def test_a_k_set_by_someone_else_within_dwell_is_adopted_once_every_series_restarted() -> None:
    # specwise set k = 7 two minutes ago; the engines now show k = 2 (someone else's change)
    changed = NOW - 120
    gate = HysteresisState(current_k=7, last_change=changed, changes=(changed,))
    after_change = _evidence(
        observed_k=2, gate_state=gate, restarted_at=(changed + 60, changed + 90)
    )
    assert decide(after_change, RULES).deployed == 2
    # one series has not restarted since our change: its positions may be the old k
    pending = dataclasses.replace(after_change, restarted_at=(changed + 60, changed - 300))
    assert decide(pending, RULES).deployed == 7
    # no series seen on this tick: nothing to adopt
    assert decide(dataclasses.replace(after_change, restarted_at=()), RULES).deployed == 7


def test_a_schedule_deployed_by_specwise_is_the_current_configuration() -> None:
    """The gate compares configurations: k = 3 with a schedule in force is passed to the
    policy as the current schedule; a foreign k seen in the counters forgets it."""
    schedule = ((1, 16, 3), (17, 256, 0))
    ev = _evidence(gate_state=HysteresisState(current_k=3, current_schedule=schedule))
    d = decide(ev, RULES)
    assert d.before.current_schedule == schedule
    foreign = _evidence(
        gate_state=HysteresisState(current_k=3, current_schedule=schedule), observed_k=5
    )
    d = decide(foreign, RULES)
    assert d.before.current_k == 5
    assert d.before.current_schedule is None
