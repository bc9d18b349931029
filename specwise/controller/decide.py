"""Deciding, apart from bookkeeping: one class's evidence in, one decision out.

Pure: no clock, no I/O, no state kept. The controller (:mod:`specwise.controller.loop`)
gathers the evidence (estimate, when counters last arrived, the k they show, the hysteresis
state, drift), calls :func:`decide`, then does the bookkeeping: it stores the new
hysteresis state, calls the actuator when ``act`` is set, and builds the class's status.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from specwise.estimation.estimator import Estimate
from specwise.policies.hysteresis import HysteresisConfig, HysteresisState, gate
from specwise.policies.load_policy import LoadEvidence
from specwise.policies.off import effective_k, off_on_purpose, off_reason
from specwise.policies.speedup_policy import PolicyConfig, Recommendation, recommend

__all__ = ["Decision", "DecisionRules", "Evidence", "decide", "held_because", "load_hold"]

STALE_HOLD = "data is stale: holding the last safe k until the source answers"
UNDECLARED_HOLD = (
    "not declared in [[classes]]: observed, estimated and reported, never actuated "
    "(its drafter cost and speculative config are unknown; declare it to steer it)"
)


def load_hold(error: str) -> str:
    """Why a class whose cost side failed on this tick keeps its configuration."""
    return (
        f"the load-aware pricing failed on this tick ({error}): holding the deployed configuration"
    )


@dataclass(frozen=True)
class DecisionRules:
    """The settings a decision depends on (from ``[policy]`` and ``[controller]``)."""

    policy: PolicyConfig
    hysteresis: HysteresisConfig
    stale_after: float


@dataclass(frozen=True)
class Evidence:
    """What the controller knows about one class at ``now``.

    ``last_seen`` is when the class last had counters; ``observed_k`` the k those counters
    show (their number of positions); ``schedule_off`` whether the config specwise last
    applied turns speculation off through a batch-size schedule; ``sources_answered``
    whether some source answered on this tick.
    """

    name: str
    estimate: Estimate
    now: float
    last_seen: float | None
    observed_k: int | None
    gate_state: HysteresisState
    sources_answered: bool
    drifting: bool = False
    schedule_off: bool = False
    declared: bool = True
    #: when every series of the class seen on this tick last restarted (empty: none seen)
    restarted_at: tuple[float, ...] = ()
    #: the cost side: fitted step time, batch-size distribution, measured speedup (None:
    #: no latency families, the constant-cost model prices k)
    load: LoadEvidence | None = None
    #: the cost side failed on this tick (one sentence): nothing changes on its account
    load_error: str = ""


@dataclass(frozen=True)
class Decision:
    """The verdict for one class.

    ``before`` is the hysteresis state to keep when the change is not applied (the
    actuator failed or refused); ``after`` the state once the decision stands. ``deployed``
    is the k in force as the decision saw it; ``act`` whether to call the actuator.
    """

    recommendation: Recommendation
    deployed: int | None
    before: HysteresisState
    after: HysteresisState
    act: bool
    stale: bool
    hold: str
    reason: str


def held_because(rec: Recommendation) -> str:
    """The hysteresis gate's reason for holding k, when it held a different recommendation."""
    if rec.change_allowed or rec.current_k == rec.recommended_k:
        return ""
    _, sep, why = rec.reason.rpartition("; hold ")
    return f"hold {why}" if sep else ""


def _adopt_observed(ev: Evidence, rules: DecisionRules) -> tuple[HysteresisState, int | None]:
    """The hysteresis state with the k the counters show, when they are the truth."""
    state = ev.gate_state
    # the counters show the deployed k only while they arrive: after a restart without
    # speculation the spec families vanish and the last k seen is history, not the truth
    observed = (
        effective_k(ev.observed_k, schedule_off=ev.schedule_off) if ev.last_seen == ev.now else None
    )
    stale = ev.last_seen is None or ev.now - ev.last_seen > rules.stale_after
    if (
        observed is not None
        and not stale
        and observed != state.current_k
        and (
            state.last_change is None
            or ev.now - state.last_change > rules.hysteresis.min_dwell_seconds
            or _all_restarted_since(ev.restarted_at, state.last_change)
        )
    ):
        # someone else changed k, or our change took effect: the counters are the truth.
        # Within min_dwell of our own change the counters may still come from engines that
        # have not restarted yet (the old k); once every series restarted after the change,
        # what they show is the k in force, whoever set it.
        # (a k someone else deployed comes with a schedule specwise does not know)
        state = dataclasses.replace(state, current_k=observed, current_schedule=None)
    return state, observed


def _all_restarted_since(restarted_at: tuple[float, ...], when: float) -> bool:
    return bool(restarted_at) and min(restarted_at) > when


def decide(ev: Evidence, rules: DecisionRules) -> Decision:
    """Price k for one class, gate the change, and say why."""
    now, estimate = ev.now, ev.estimate
    before, observed = _adopt_observed(ev, rules)
    stale = ev.last_seen is None or now - ev.last_seen > rules.stale_after
    deployed = before.current_k if before.current_k is not None else observed
    if stale and off_on_purpose(deployed, sources_answered=ev.sources_answered):
        stale = False
    # the deployed configuration: k and, when specwise deployed one with it, its schedule
    schedule = before.current_schedule if deployed == before.current_k else None
    rec = recommend(
        estimate,
        config=rules.policy,
        current_k=deployed,
        load=ev.load,
        current_schedule=schedule,
    )
    rec, after = gate(rec, before, now=now, config=rules.hysteresis, drifting=ev.drifting)
    hold = ""
    if not ev.declared:
        hold = UNDECLARED_HOLD
    elif rec.change_allowed and ev.load_error:
        hold = load_hold(ev.load_error)
    elif rec.change_allowed and stale:
        hold = STALE_HOLD
    if hold:
        after = before
        rec = dataclasses.replace(rec, change_allowed=False, reason=f"{rec.reason}; {hold}")
    reason = off_reason(
        rec.reason, deployed=deployed, evidence=estimate.ok, recommended_k=rec.recommended_k
    )
    if reason is None:
        reason = rec.reason
        if stale and ev.last_seen is not None and not hold:
            reason = f"stale: no new counters for {now - ev.last_seen:.0f} s; {reason}"
    return Decision(
        recommendation=rec,
        deployed=deployed,
        before=before,
        after=after,
        act=rec.change_allowed,
        stale=stale,
        hold=hold or held_because(rec),
        reason=reason,
    )
