"""Probes: bounded experiments that measure what is not deployed, so "off" is never forever.

Once a class runs k = 0 its engines export no acceptance counters, and nothing measures it
again. A probe is an experiment the controller runs on purpose, each with a declared cost
(restarts, seconds, the expected share of the class's throughput lost) and a budget:

- ``re-enable``: a class at k = 0 runs ``probe_k`` until ``min_drafts`` drafts are measured
  (or ``max_duration`` passes); then the policy decides with the new evidence;
- ``baseline``: a class with speculation runs without it (on one replica when it has
  several: a canary) to measure the plain-decoding step at the batch sizes traffic visits;
- ``explore``: a k beyond the measured positions, when the model says it may pay and only
  its uncertainty keeps the policy from moving there.

When: on a backoff schedule (``backoff`` after the class settled, then doubling, capped at
``cap``: 6 h, 12 h, 24 h, 24 h ...), or at once on a trigger (the drafter or the model
changed: a new speculative config or new label values; ``specwise probe CLASS``; an HTTP
POST), and only while the class's probing time stays within ``max_probe_fraction`` of a
rolling day and the restart budget it shares with the hysteresis limits
(``max_changes_per_hour``, ``min_dwell``) allows both of its restarts. A probe ends early
once the evidence is decisive either way.

Pure: a class's :class:`ProbeState` and a :class:`ClassView` in, a :class:`ProbePlan` out;
the clock is the ``now`` passed in. :mod:`specwise.controller.probing` runs the plans.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from specwise.errors import ConfigError

__all__ = [
    "DAY",
    "PROBE_KINDS",
    "ClassView",
    "Outcome",
    "ProbeCost",
    "ProbeEvidence",
    "ProbeKind",
    "ProbePlan",
    "ProbeRecord",
    "ProbeSettings",
    "ProbeState",
    "backoff_delay",
    "evaluate",
    "plan",
    "probe_seconds_in_day",
    "trigger",
]

ProbeKind = Literal["re-enable", "baseline", "explore"]
Outcome = Literal[
    "running", "pays", "loses", "unclear", "measured", "no-data", "aborted", "proposed"
]
PROBE_KINDS: tuple[ProbeKind, ...] = ("re-enable", "baseline", "explore")
#: the rolling period ``max_probe_fraction`` is counted over
DAY = 86400.0
#: how many finished probes a class keeps (state file, /recommendations)
HISTORY = 20
#: share of ``min_drafts`` after which a clear verdict ends a probe early
EARLY_SHARE = 0.25


def _h(seconds: float) -> str:
    """A duration as written in the config: minutes below 2 h, else hours."""
    return f"{seconds / 60:g} min" if seconds < 7200 else f"{seconds / 3600:g} h"


@dataclass(frozen=True)
class ProbeSettings:
    """``[probes]`` (see config/specwise.example.toml); defaults are safe for a fleet."""

    enabled: bool = True
    kinds: tuple[ProbeKind, ...] = ("re-enable",)
    backoff: float = 6 * 3600.0
    cap: float = 24 * 3600.0
    max_probe_fraction: float = 0.05
    probe_k: int = 2
    max_duration: float = 1800.0
    min_duration: float = 300.0
    min_drafts: float = 2000.0
    min_gain: float = 0.05
    canary: bool = True

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in PROBE_KINDS]
        if bad:
            raise ConfigError(
                f"[probes] kinds has unknown kind {bad[0]!r}; use some of {', '.join(PROBE_KINDS)}",
                field="[probes] kinds",
            )
        if not 0 < self.backoff <= self.cap:
            raise ConfigError(
                f"[probes] backoff = {_h(self.backoff)} must be > 0 and at most cap = "
                f"{_h(self.cap)}; e.g. backoff = '6h', cap = '24h'",
                field="[probes] backoff",
            )
        if not 0 <= self.max_probe_fraction <= 0.5:
            raise ConfigError(
                f"[probes] max_probe_fraction = {self.max_probe_fraction!r} must lie in "
                "[0, 0.5], e.g. 0.05 (5% of each class's day)",
                field="[probes] max_probe_fraction",
            )
        if not 0 < self.min_duration <= self.max_duration:
            raise ConfigError(
                f"[probes] min_duration = {_h(self.min_duration)} must be > 0 and at most "
                f"max_duration = {_h(self.max_duration)}",
                field="[probes] min_duration",
            )
        if self.max_probe_fraction and self.max_duration > self.max_probe_fraction * DAY:
            raise ConfigError(
                f"[probes] max_duration = {_h(self.max_duration)} exceeds the daily budget "
                f"max_probe_fraction x 24 h = {_h(self.max_probe_fraction * DAY)}; shorten "
                "max_duration or raise max_probe_fraction",
                field="[probes] max_duration",
            )


@dataclass(frozen=True)
class ProbeCost:
    """What a probe declares before it starts."""

    restarts: int  # into the probe and back out (of one replica for a canary)
    seconds: float  # at most
    expected_loss: float  # share of the class's throughput expected lost while it runs
    replica_share: float = 1.0  # the share of the class's engines that run it

    def describe(self) -> str:
        who = "" if self.replica_share >= 1 else f" on {self.replica_share:.0%} of the engines"
        return (
            f"{self.restarts} restarts, up to {self.seconds / 60:.0f} min{who}, expected loss "
            f"{self.expected_loss:.1%} of the class's throughput while it runs"
        )


@dataclass(frozen=True)
class ProbeRecord:
    """One probe: planned settings, and its result once ended."""

    kind: ProbeKind
    k: int  # the k the probe runs
    previous_k: int  # the k in force before it (restored unless the result says keep)
    started: float
    trigger: str
    cost: ProbeCost
    instance: str = ""  # the canary replica ("" = the whole class)
    ended: float | None = None
    outcome: Outcome = "running"
    speedup: float | None = None
    low: float | None = None
    high: float | None = None
    drafts: float = 0.0
    result: str = ""  # one sentence
    canary_ratio: float | None = None  # see ProbeEvidence
    #: the batch-size schedule in force before the probe (restored with previous_k)
    previous_schedule: tuple[tuple[int, int, int], ...] = ()

    @property
    def seconds(self) -> float:
        return 0.0 if self.ended is None else self.ended - self.started

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cost"] = dataclasses.asdict(self.cost)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProbeRecord:
        d = dict(data)
        d["cost"] = ProbeCost(**d["cost"])
        d["previous_schedule"] = tuple(
            (int(a), int(b), int(k)) for a, b, k in d.get("previous_schedule", ())
        )
        return cls(**d)


@dataclass(frozen=True)
class ProbeState:
    """One class's probe bookkeeping (persisted in the state file)."""

    #: since when the class is in its current regime (its k = 0, or its k > 0): the backoff
    #: counts from here, or from the last probe's end
    settled_at: float | None = None
    settled_k: int | None = None
    attempts: int = 0  # probes since the regime began (the backoff step)
    running: ProbeRecord | None = None
    history: tuple[ProbeRecord, ...] = ()
    trigger: str = ""  # a pending trigger: probe as soon as the budget allows
    fingerprint: str = ""  # the drafter's identity last seen (its speculative config)
    label_values: tuple[str, ...] = ()  # the series' label values seen ("model_name=x")

    def to_json(self) -> dict[str, Any]:
        return {
            "settled_at": self.settled_at,
            "settled_k": self.settled_k,
            "attempts": self.attempts,
            "running": None if self.running is None else self.running.to_json(),
            "history": [r.to_json() for r in self.history],
            "trigger": self.trigger,
            "fingerprint": self.fingerprint,
            "label_values": list(self.label_values),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProbeState:
        run = data.get("running")
        return cls(
            settled_at=None if data.get("settled_at") is None else float(data["settled_at"]),
            settled_k=None if data.get("settled_k") is None else int(data["settled_k"]),
            attempts=int(data.get("attempts", 0)),
            running=None if run is None else ProbeRecord.from_json(run),
            history=tuple(ProbeRecord.from_json(r) for r in data.get("history", ())),
            trigger=str(data.get("trigger", "")),
            fingerprint=str(data.get("fingerprint", "")),
            label_values=tuple(str(v) for v in data.get("label_values", ())),
        )


@dataclass(frozen=True)
class ClassView:
    """What the planner needs to know about one class at ``now``."""

    name: str
    declared: bool
    deployed_k: int | None
    stale: bool
    k_max: int
    changes: tuple[float, ...] = ()  # the hysteresis gate's change times
    last_change: float | None = None
    max_changes_per_hour: int = 2
    min_dwell: float = 1800.0
    fingerprint: str = ""  # the drafter's identity: its speculative config
    #: the label values of the class's series ("model_name=x", "version=2"): a value not
    #: seen before (a new model version) is a trigger
    label_values: tuple[str, ...] = ()
    replicas: tuple[str, ...] = ()  # instance ids of the class's engines
    #: the policy's last known speedup at the probe k (re-enable) or at the deployed k
    #: (baseline): prices the expected loss
    expected_speedup: float | None = None
    #: a k the model says may pay beyond the measured positions, held by uncertainty
    explore_k: int | None = None
    #: plain-decoding windows of this class seen within the last day
    has_baseline: bool = False


@dataclass(frozen=True)
class ProbeEvidence:
    """What has been measured since the probe started."""

    drafts: float = 0.0  # drafts counted at the probe's k
    speedup: float | None = None  # the policy's speedup of the best k >= 1 under it
    low: float | None = None
    high: float | None = None
    plain_steps: float = 0.0  # request-steps measured at k = 0 (baseline)
    #: a canary's tokens per second of request time over the other replicas', measured over
    #: the same minutes (None: the others exported no comparable counters)
    canary_ratio: float | None = None


@dataclass(frozen=True)
class ProbePlan:
    """The planner's answer: what to do now, what comes next, and the new state."""

    action: Literal["none", "start", "end"]
    state: ProbeState
    probe: ProbeRecord | None = None  # started, running or ended
    apply_k: int | None = None  # the k to deploy now (start: the probe's; end: the revert)
    instance: str = ""  # where to deploy it: one replica (a canary), "" = the whole class
    next_at: float | None = None  # when the next probe is planned (None: none planned)
    next_kind: ProbeKind | None = None
    reason: str = ""


def backoff_delay(attempts: int, settings: ProbeSettings) -> float:
    """The wait before probe number ``attempts`` + 1 of a regime: backoff x 2^n, capped."""
    return min(settings.backoff * 2.0 ** min(attempts, 60), settings.cap)


def probe_seconds_in_day(history: Sequence[ProbeRecord], now: float) -> float:
    """Class-seconds spent probing in the last 24 h (a canary counts by its replica share)."""
    total = 0.0
    for r in history:
        end = now if r.ended is None else r.ended
        overlap = min(end, now) - max(r.started, now - DAY)
        if overlap > 0:
            total += overlap * r.cost.replica_share
    return total


def _measured_baseline(history: Sequence[ProbeRecord], now: float) -> bool:
    """A baseline probe measured plain decoding within the last day."""
    return any(
        r.kind == "baseline"
        and r.outcome == "measured"
        and r.ended is not None
        and now - r.ended < DAY
        for r in history
    )


def _kind(
    view: ClassView, settings: ProbeSettings, history: Sequence[ProbeRecord] = (), now: float = 0.0
) -> tuple[ProbeKind, int] | None:
    if view.deployed_k == 0:
        if "re-enable" in settings.kinds:
            return "re-enable", min(settings.probe_k, view.k_max)
        return None
    if (
        "explore" in settings.kinds
        and view.explore_k is not None
        and view.explore_k > (view.deployed_k or 0)
    ):
        return "explore", min(view.explore_k, view.k_max)
    if (
        "baseline" in settings.kinds
        and not view.has_baseline
        and not _measured_baseline(history, now)
    ):
        return "baseline", 0
    return None


def _cost(kind: ProbeKind, view: ClassView, settings: ProbeSettings, share: float) -> ProbeCost:
    s = view.expected_speedup
    if kind == "baseline":
        # plain decoding gives up what speculation gains: 1 - 1/s of the throughput
        loss = 0.0 if s is None or s <= 1 else 1.0 - 1.0 / s
    elif kind == "re-enable":
        # a drafter turned off because it lost: expect its last measured loss (or 15%)
        loss = 0.15 if s is None else max(0.0, 1.0 - s)
    else:
        loss = 0.0 if s is None else max(0.0, 1.0 - s)
    return ProbeCost(2, settings.max_duration, round(loss * share, 4), share)


def _restart_budget(view: ClassView, now: float) -> str:
    """Why the restart budget shared with the hysteresis gate cannot take 2 restarts now."""
    recent = [t for t in view.changes if now - t < 3600.0]
    if len(recent) + 2 > view.max_changes_per_hour:
        return (
            f"{len(recent)} changes in the last hour; a probe needs 2 within the cap of "
            f"{view.max_changes_per_hour}"
        )
    if view.last_change is not None and now - view.last_change < view.min_dwell:
        return f"last change {now - view.last_change:.0f} s ago (min_dwell {view.min_dwell:.0f} s)"
    return ""


def _settle(state: ProbeState, view: ClassView, now: float) -> ProbeState:
    """Track the regime (the k in force) and the drafter identity; note triggers."""
    if state.running is not None or view.deployed_k is None:
        return state
    if state.settled_k != view.deployed_k or state.settled_at is None:
        # a new regime, decided on current evidence: the backoff starts again, and a
        # pending trigger is answered by it
        state = dataclasses.replace(
            state, settled_at=now, settled_k=view.deployed_k, attempts=0, trigger=""
        )
    if view.fingerprint and view.fingerprint != state.fingerprint:
        if state.fingerprint:  # not the first sight: the drafter changed
            state = dataclasses.replace(
                state, trigger="the drafter changed (a new speculative config)", attempts=0
            )
        state = dataclasses.replace(state, fingerprint=view.fingerprint)
    new = sorted(set(view.label_values) - set(state.label_values))
    if new:
        if state.label_values:  # not the first sight: e.g. a new model version
            state = dataclasses.replace(
                state, trigger=f"new label values ({', '.join(new[:3])})", attempts=0
            )
        state = dataclasses.replace(state, label_values=tuple(sorted({*state.label_values, *new})))
    return state


def trigger(state: ProbeState, why: str) -> ProbeState:
    """A manual trigger (``specwise probe CLASS``, ``POST /probe``): probe when allowed."""
    return dataclasses.replace(state, trigger=why, attempts=0)


def plan(
    state: ProbeState,
    view: ClassView,
    settings: ProbeSettings,
    *,
    now: float,
    evidence: ProbeEvidence | None = None,
) -> ProbePlan:
    """What to do about probes for one class at ``now``."""
    if state.running is not None:
        return _continue(state, view, settings, now, evidence or ProbeEvidence())
    state = _settle(state, view, now)
    if not settings.enabled:
        return ProbePlan("none", state, reason="probes are disabled ([probes] enabled = false)")
    if not view.declared:
        return ProbePlan("none", state, reason="not declared in [[classes]]: never probed")
    chosen = _kind(view, settings, state.history, now)
    if chosen is None or state.settled_at is None:
        why = (
            f"nothing to probe at k = {view.deployed_k} with [probes] kinds "
            f"{', '.join(settings.kinds) or '(none)'}"
        )
        if state.trigger:
            why += f"; trigger ({state.trigger}) dropped"
            state = dataclasses.replace(state, trigger="")
        return ProbePlan("none", state, reason=why)
    kind, k = chosen
    ref = state.settled_at
    if state.history and state.history[-1].ended is not None:
        ref = max(ref, state.history[-1].ended)
    due = now if state.trigger else ref + backoff_delay(state.attempts, settings)
    used = probe_seconds_in_day(state.history, now)
    # a canary: one replica runs the probe while the others keep the configuration (an
    # explore probe runs on the whole class: its k would mix with the others' in one estimate)
    canary = settings.canary and len(view.replicas) > 1 and kind != "explore"
    share = 1.0 / len(view.replicas) if canary else 1.0
    room = settings.max_probe_fraction * DAY - used
    if room < settings.max_duration * share:
        # budget frees as old probe time leaves the rolling day
        due = max(due, _budget_free_at(state.history, now, settings, share))
    why = state.trigger or f"backoff step {state.attempts + 1}"
    if now < due:
        return ProbePlan(
            "none", state, next_at=due, next_kind=kind, reason=f"{kind} probe planned ({why})"
        )
    blocked = "the class's data is stale" if view.stale else _restart_budget(view, now)
    if blocked:
        return ProbePlan(
            "none",
            state,
            next_at=now,
            next_kind=kind,
            reason=f"{kind} probe due ({why}) but waiting: {blocked}",
        )
    instance = sorted(view.replicas)[0] if share < 1 else ""
    record = ProbeRecord(
        kind=kind,
        k=k,
        previous_k=view.deployed_k or 0,
        started=now,
        trigger=why,
        cost=_cost(kind, view, settings, share),
        instance=instance,
    )
    state = dataclasses.replace(state, running=record, trigger="")
    where = f" on replica {instance} (canary)" if instance else ""
    return ProbePlan(
        "start",
        state,
        probe=record,
        apply_k=k,
        instance=instance,
        reason=f"{kind} probe at k = {k}{where} ({why}); declared cost: {record.cost.describe()}",
    )


def _budget_free_at(
    history: Sequence[ProbeRecord], now: float, settings: ProbeSettings, share: float
) -> float:
    """The first time the rolling day has room for a whole probe again (bounded search)."""
    need = settings.max_duration * share
    limit = settings.max_probe_fraction * DAY
    if need > limit:
        return math.inf
    edges = sorted({r.ended + DAY for r in history if r.ended is not None and r.ended + DAY > now})
    for t in edges:
        if limit - probe_seconds_in_day(history, t) >= need:
            return t
    return now + DAY


def evaluate(
    probe: ProbeRecord, evidence: ProbeEvidence, settings: ProbeSettings, now: float
) -> tuple[Outcome, str] | None:
    """The probe's verdict if it should end now (decisive or out of time), else None."""
    elapsed = now - probe.started
    out_of_time = elapsed >= settings.max_duration
    if probe.instance and evidence.canary_ratio is None and elapsed < settings.min_duration:
        # a canary says how it compares with the other replicas over the same minutes: its
        # first window may already decide, but the comparison needs a second one
        return None
    if probe.kind == "baseline":
        if evidence.plain_steps > 0 and elapsed >= settings.min_duration:
            return "measured", f"plain decoding measured over {elapsed / 60:.0f} min"
        if out_of_time:
            return "no-data", f"no plain-decoding steps within {elapsed / 60:.0f} min"
        return None
    s, lo, hi = evidence.speedup, evidence.low, evidence.high
    enough = evidence.drafts >= settings.min_drafts
    some = evidence.drafts >= EARLY_SHARE * settings.min_drafts
    if s is not None and (enough or out_of_time or some):
        where = f"{evidence.drafts:.0f} drafts"
        if lo is not None and lo > 1.0 + settings.min_gain and some:
            return "pays", f"{where}: speculation pays ({s:.2f}x, low {lo:.2f}x)"
        if hi is not None and hi < 1.0 and some:
            return "loses", f"{where}: speculation loses ({s:.2f}x, high {hi:.2f}x)"
        if enough or out_of_time:
            if s > 1.0 + settings.min_gain:
                return "pays", f"{where}: speculation pays ({s:.2f}x)"
            if s < 1.0:
                return "loses", f"{where}: speculation loses ({s:.2f}x)"
            return "unclear", f"{where}: {s:.2f}x is within min_gain of plain decoding"
    if out_of_time:
        return "no-data", f"only {evidence.drafts:.0f} drafts within {elapsed / 60:.0f} min"
    return None


def _continue(
    state: ProbeState,
    view: ClassView,
    settings: ProbeSettings,
    now: float,
    evidence: ProbeEvidence,
) -> ProbePlan:
    probe = state.running
    assert probe is not None
    verdict = evaluate(probe, evidence, settings, now)
    if verdict is None and not view.declared:
        verdict = ("aborted", "the class is no longer declared in [[classes]]")
    if verdict is None and not settings.enabled:
        verdict = ("aborted", "probes were disabled")
    if verdict is None:
        left = settings.max_duration - (now - probe.started)
        return ProbePlan(
            "none",
            state,
            probe=probe,
            reason=(
                f"{probe.kind} probe at k = {probe.k} running: {evidence.drafts:.0f} drafts, "
                f"ends by {left / 60:.0f} min"
            ),
        )
    outcome, result = verdict
    keep = outcome == "pays" and probe.kind != "baseline"
    # a canary that pays is rolled out to every replica; one that does not is reverted alone
    apply_k = (probe.k if probe.instance else None) if keep else probe.previous_k
    instance = "" if keep else probe.instance
    ended = dataclasses.replace(
        probe,
        ended=now,
        outcome=outcome,
        speedup=evidence.speedup,
        low=evidence.low,
        high=evidence.high,
        drafts=evidence.drafts,
        canary_ratio=evidence.canary_ratio,
        result=result
        + (
            ("; rolled out to every replica" if probe.instance else "; kept")
            + ", the policy decides from here"
            if keep
            else f"; back to k = {probe.previous_k}"
        ),
    )
    if probe.instance:
        n = round(1 / probe.cost.replica_share) if probe.cost.replica_share > 0 else 0
        r = evidence.canary_ratio
        side = (
            f"; it delivered {r:.2f}x their tokens per second of request time"
            if r is not None
            else "; they exported no counters to compare it with"
        )
        ended = dataclasses.replace(
            ended,
            result=f"canary {probe.instance} (1 of {n} replicas; the others kept "
            f"k = {probe.previous_k} over the same minutes{side}): {ended.result}",
        )
    history = (*state.history, ended)[-HISTORY:]
    new = dataclasses.replace(
        state,
        running=None,
        history=history,
        attempts=0 if keep else state.attempts + 1,
        settled_at=now if keep else state.settled_at,
        settled_k=probe.k if keep else state.settled_k,
    )
    return ProbePlan(
        "end",
        new,
        probe=ended,
        apply_k=apply_k,
        instance=instance,
        reason=f"{probe.kind} probe ended: {ended.result}",
    )
