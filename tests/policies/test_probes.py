"""The probe planner: pure, clock passed in."""

from __future__ import annotations

import json

import pytest

from specwise.errors import ConfigError
from specwise.policies.probes import (
    DAY,
    ClassView,
    ProbeEvidence,
    ProbeRecord,
    ProbeSettings,
    ProbeState,
    backoff_delay,
    evaluate,
    plan,
    probe_seconds_in_day,
    trigger,
)

H = 3600.0
S = ProbeSettings()


def view(**kw: object) -> ClassView:
    base: dict[str, object] = {"name": "code", "declared": True, "deployed_k": 0, "stale": False}
    base.update(kw)
    base.setdefault("k_max", 8)
    return ClassView(**base)  # type: ignore[arg-type]


def settled(now: float = 0.0, k: int = 0) -> ProbeState:
    return plan(ProbeState(), view(deployed_k=k), S, now=now).state


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, S) / H for n in range(5)] == [6, 12, 24, 24, 24]


def test_off_class_is_probed_after_the_first_backoff_step_not_before() -> None:
    st = settled(0.0)
    early = plan(st, view(), S, now=6 * H - 1)
    assert early.action == "none"
    assert early.next_at == 6 * H
    assert early.next_kind == "re-enable"
    due = plan(early.state, view(), S, now=6 * H)
    assert due.action == "start"
    assert due.apply_k == S.probe_k
    assert due.probe is not None
    assert due.probe.kind == "re-enable"
    assert due.probe.previous_k == 0
    assert due.probe.cost.restarts == 2
    assert due.probe.cost.seconds == S.max_duration
    assert "declared cost" in due.reason


def test_probe_that_loses_reverts_and_the_next_waits_twice_as_long() -> None:
    st = plan(settled(0.0), view(), S, now=6 * H).state
    ev = ProbeEvidence(drafts=5000, speedup=0.8, low=0.75, high=0.85)
    end = plan(st, view(deployed_k=2), S, now=6 * H + 600, evidence=ev)
    assert end.action == "end"
    assert end.apply_k == 0
    assert end.probe is not None
    assert end.probe.outcome == "loses"
    assert end.state.running is None
    nxt = plan(end.state, view(), S, now=6 * H + 700)
    assert nxt.action == "none"
    assert nxt.next_at == pytest.approx(6 * H + 600 + 12 * H)


def test_probe_that_pays_keeps_the_k_and_the_policy_decides() -> None:
    st = plan(settled(0.0), view(), S, now=6 * H).state
    ev = ProbeEvidence(drafts=600, speedup=1.6, low=1.4, high=1.8)  # decisive early
    end = plan(st, view(deployed_k=2), S, now=6 * H + 400, evidence=ev)
    assert end.action == "end"
    assert end.apply_k is None
    assert end.probe is not None
    assert end.probe.outcome == "pays"
    assert "policy decides" in end.probe.result
    assert end.state.settled_k == 2
    assert end.state.attempts == 0


def test_early_end_needs_decisive_evidence_else_runs_to_min_drafts_or_cap() -> None:
    st = plan(settled(0.0), view(), S, now=6 * H).state
    unclear = ProbeEvidence(drafts=1000, speedup=1.02, low=0.9, high=1.1)
    assert plan(st, view(deployed_k=2), S, now=6 * H + 400, evidence=unclear).action == "none"
    assert evaluate(st.running, unclear, S, 6 * H + S.max_duration) == (  # type: ignore[arg-type]
        "unclear",
        "1000 drafts: 1.02x is within min_gain of plain decoding",
    )
    few = ProbeEvidence(drafts=10, speedup=2.0, low=1.5, high=2.5)  # too few drafts
    assert plan(st, view(deployed_k=2), S, now=6 * H + 400, evidence=few).action == "none"
    nothing = plan(st, view(deployed_k=2), S, now=6 * H + S.max_duration, evidence=None)
    assert nothing.action == "end"
    assert nothing.probe is not None
    assert nothing.probe.outcome == "no-data"
    assert nothing.apply_k == 0


def test_triggers_probe_at_once_and_reset_the_backoff() -> None:
    st = plan(ProbeState(), view(fingerprint="eagle-v1"), S, now=0.0).state
    assert st.fingerprint == "eagle-v1"
    assert not st.trigger
    changed = plan(st, view(fingerprint="eagle-v2"), S, now=60.0)
    assert changed.action == "start"
    assert "the drafter changed" in changed.reason
    manual = plan(trigger(settled(0.0), "specwise probe"), view(), S, now=60.0)
    assert manual.action == "start"
    assert manual.probe is not None
    assert manual.probe.trigger == "specwise probe"


def test_undeclared_disabled_and_stale_classes_are_not_probed() -> None:
    st = trigger(settled(0.0), "manual")
    assert plan(st, view(declared=False), S, now=10.0).action == "none"
    off = ProbeSettings(enabled=False)
    assert "disabled" in plan(st, view(), off, now=10.0).reason
    stale = plan(st, view(stale=True), S, now=10.0)
    assert stale.action == "none"
    assert "stale" in stale.reason


def test_restart_budget_is_shared_with_the_hysteresis_limits() -> None:
    st = trigger(settled(0.0), "manual")
    now = 10 * H
    busy = plan(st, view(changes=(now - 600,), last_change=now - 600), S, now=now)
    assert busy.action == "none"
    assert "a probe needs 2" in busy.reason
    dwell = plan(st, view(max_changes_per_hour=4, last_change=now - 600), S, now=now)
    assert dwell.action == "none"
    assert "min_dwell" in dwell.reason


def test_max_probe_fraction_bounds_the_time_spent_probing() -> None:
    s = ProbeSettings(max_probe_fraction=0.03, max_duration=1800.0)  # 43 min a day
    cost = plan(trigger(settled(0.0), "m"), view(), s, now=0.0).probe
    assert cost is not None
    done = ProbeRecord(
        kind="re-enable", k=2, previous_k=0, started=0.0, trigger="m", cost=cost.cost, ended=1800.0
    )
    st = ProbeState(settled_at=0.0, settled_k=0, history=(done,), trigger="manual")
    blocked = plan(st, view(), s, now=2000.0)
    assert blocked.action == "none"
    assert blocked.next_at == pytest.approx(1800.0 + DAY)
    assert probe_seconds_in_day((done,), 2000.0) == 1800.0
    assert probe_seconds_in_day((done,), 1800.0 + DAY) == 0.0


def test_baseline_runs_on_one_replica_and_always_reverts() -> None:
    s = ProbeSettings(kinds=("baseline",))
    v = view(deployed_k=4, replicas=("a:8000", "b:8000", "c:8000", "d:8000"), expected_speedup=1.5)
    st = trigger(plan(ProbeState(), v, s, now=0.0).state, "manual")
    start = plan(st, v, s, now=10.0)
    assert start.action == "start"
    assert start.apply_k == 0
    assert start.instance == "a:8000"
    assert start.probe is not None
    assert start.probe.cost.replica_share == 0.25
    assert start.probe.cost.expected_loss == pytest.approx((1 - 1 / 1.5) * 0.25, abs=1e-4)
    end = plan(start.state, v, s, now=10.0 + s.min_duration, evidence=ProbeEvidence(plain_steps=50))
    assert end.action == "end"
    assert end.apply_k == 4
    assert end.instance == "a:8000"
    assert end.probe is not None
    assert end.probe.outcome == "measured"


def test_canary_that_pays_is_rolled_out_to_every_replica() -> None:
    v = view(replicas=("a", "b"))
    start = plan(trigger(settled(0.0), "m"), v, S, now=10.0)
    assert start.instance == "a"
    assert start.apply_k == 2
    ev = ProbeEvidence(drafts=S.min_drafts, speedup=1.5, low=1.3, high=1.7)
    end = plan(start.state, v, S, now=700.0, evidence=ev)
    assert end.apply_k == 2
    assert end.instance == ""
    assert "rolled out" in end.reason


def test_a_canary_waits_for_its_comparison_up_to_min_duration() -> None:
    """Decisive drafts in the canary's first window do not end it before the side-by-side
    comparison with the other replicas (a second window) or min_duration."""
    v = view(replicas=("a", "b"))
    start = plan(trigger(settled(0.0), "m"), v, S, now=10.0)
    assert start.probe is not None
    decisive = ProbeEvidence(drafts=S.min_drafts, speedup=1.5, low=1.3, high=1.7)
    assert evaluate(start.probe, decisive, S, 10.0 + S.min_duration - 1) is None
    compared = ProbeEvidence(drafts=S.min_drafts, speedup=1.5, low=1.3, high=1.7, canary_ratio=1.4)
    assert evaluate(start.probe, compared, S, 70.0) is not None
    assert evaluate(start.probe, decisive, S, 10.0 + S.min_duration) is not None  # bounded
    whole = plan(trigger(settled(0.0), "m"), view(), S, now=10.0).probe
    assert whole is not None
    assert evaluate(whole, decisive, S, 70.0) is not None  # no replicas: no comparison


def test_explore_when_the_model_says_a_longer_k_may_pay() -> None:
    s = ProbeSettings(kinds=("explore",))
    v = view(deployed_k=2, explore_k=4, expected_speedup=1.3)
    st = trigger(plan(ProbeState(), v, s, now=0.0).state, "m")
    start = plan(st, v, s, now=10.0)
    assert start.action == "start"
    assert start.apply_k == 4
    assert start.probe is not None
    assert start.probe.kind == "explore"
    assert start.probe.previous_k == 2
    assert plan(st, view(deployed_k=2), s, now=10.0).action == "none"  # no hint: nothing


def test_state_round_trips_through_json() -> None:
    st = plan(trigger(settled(0.0), "m"), view(replicas=("a", "b")), S, now=10.0).state
    end = plan(st, view(), S, now=S.max_duration + 10, evidence=ProbeEvidence()).state
    again = plan(end, view(), S, now=S.max_duration + 20).state
    for s in (st, end, again):
        assert ProbeState.from_json(json.loads(json.dumps(s.to_json()))) == s


@pytest.mark.parametrize(
    ("kw", "word"),
    [
        ({"kinds": ("bogus",)}, "kinds"),
        ({"backoff": 2 * DAY, "cap": DAY}, "backoff"),
        ({"max_probe_fraction": 0.9}, "max_probe_fraction"),
        ({"min_duration": 4000.0, "max_duration": 3000.0}, "min_duration"),
        ({"max_probe_fraction": 0.01, "max_duration": 3600.0}, "max_duration"),
    ],
)
def test_bad_settings_are_one_sentence(kw: dict[str, object], word: str) -> None:
    with pytest.raises(ConfigError, match=word) as info:
        ProbeSettings(**kw)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_new_label_values_trigger_but_first_sight_does_not() -> None:
    st = plan(settled(0.0), view(label_values=("model_name=code",)), S, now=10.0).state
    assert not st.trigger
    assert plan(st, view(label_values=("model_name=code",)), S, now=20.0).action == "none"
    bumped = view(label_values=("model_name=code", "version=2"))
    got = plan(st, bumped, S, now=30.0)
    assert got.action == "start"
    assert "new label values (version=2)" in got.reason


def test_a_new_regime_answers_a_pending_trigger_and_no_kind_drops_it() -> None:
    st = trigger(settled(0.0), "manual")
    moved = plan(st, view(deployed_k=3), S, now=10.0)  # the policy turned it back on
    assert moved.state.trigger == ""
    assert moved.state.settled_k == 3
    on = plan(trigger(moved.state, "manual"), view(deployed_k=3), S, now=20.0)
    assert on.action == "none"
    assert "nothing to probe at k = 3 with [probes] kinds re-enable" in on.reason
    assert "dropped" in on.reason
    assert on.state.trigger == ""


def test_a_canary_result_says_how_it_compared_with_the_others() -> None:
    v = view(replicas=("a", "b", "c", "d"))
    start = plan(trigger(settled(0.0), "m"), v, S, now=10.0)
    ev = ProbeEvidence(drafts=S.min_drafts, speedup=0.8, low=0.7, high=0.9, canary_ratio=0.82)
    end = plan(start.state, v, S, now=700.0, evidence=ev)
    assert end.probe is not None
    assert end.probe.canary_ratio == 0.82
    assert end.probe.result.startswith(
        "canary a (1 of 4 replicas; the others kept k = 0 over the same minutes; it delivered "
        "0.82x their tokens per second of request time): "
    )
    assert end.apply_k == 0
    assert end.instance == "a"


def test_a_measured_baseline_holds_for_a_day() -> None:
    s = ProbeSettings(kinds=("baseline",))
    v = view(deployed_k=3)
    st = trigger(plan(ProbeState(), v, s, now=0.0).state, "m")
    start = plan(st, v, s, now=10.0)
    end = plan(start.state, view(deployed_k=0), s, now=400.0, evidence=ProbeEvidence(plain_steps=9))
    assert end.probe is not None
    assert end.probe.outcome == "measured"
    again = plan(trigger(end.state, "m"), v, s, now=500.0)
    assert again.action == "none"
    assert "nothing to probe" in again.reason
    later = plan(trigger(end.state, "m"), v, s, now=400.0 + DAY)
    assert later.action == "start"
