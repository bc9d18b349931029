"""Running probes in the controller (#15): bookkeeping around the pure planner.

The planner (:mod:`specwise.policies.probes`) says when a class should be probed, how, and
when the probe ends. :class:`Prober` is called from one hook in the controller's decision
(:meth:`Prober.before_actuation`): it gathers the planner's view of the class, applies a
probe through the controller's own actuation path (like a k change: a dry-run actuator only
proposes it, a failing actuator is retried later), holds the policy while a probe runs, and
hands the class back to the policy once the probe ended on its own rules. Manual triggers
(``specwise probe CLASS``, ``POST /probe?class=NAME``) arrive through :meth:`request` from
the HTTP thread. The probe history lives in the state file (``"probes"``) across restarts,
the status (running, planned, results) in each class's ``probe`` field of
``/recommendations``, and the metrics in :func:`probe_families`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from specwise.collectors.classes import CLASS_LABEL
from specwise.collectors.snapshot import labels_key
from specwise.controller.decide import Decision, Evidence
from specwise.controller.state import ClassStatus, ControllerState
from specwise.model import speedup_from_survival, survival_curve
from specwise.policies.hysteresis import HysteresisState
from specwise.policies.probes import (
    DAY,
    ClassView,
    Outcome,
    ProbeEvidence,
    ProbePlan,
    ProbeRecord,
    ProbeSettings,
    ProbeState,
    plan,
    probe_seconds_in_day,
    trigger,
)
from specwise.policies.speedup_policy import Recommendation
from specwise.step_cost import SpecConfig

if TYPE_CHECKING:  # the controller imports this module; no cycle at runtime
    from specwise.controller.loop import Controller

__all__ = ["Prober", "load_probe_states", "probe_families", "probe_trigger", "replica_id"]

log = logging.getLogger("specwise.probes")
changes_log = logging.getLogger("specwise.changes")


def replica_id(labels: Mapping[str, str]) -> str:
    """One replica of a class: its ``instance`` label (a vLLM server; "" when unlabelled)."""
    return labels.get("instance", "")


Loaded = tuple[dict[str, ProbeState], Counter[str], dict[str, tuple[str, ...]]]


def load_probe_states(path: Path | None) -> Loaded:
    """The ``"probes"`` section of a state file: per class its planner state, the counts of
    results and restarts, its replicas last seen (absent or unreadable: a fresh history)."""
    if path is None:
        return {}, Counter(), {}
    try:
        data = json.loads(path.read_text(encoding="utf-8")).get("probes") or {}
        states = {str(n): ProbeState.from_json(s) for n, s in data.get("classes", {}).items()}
        counts = Counter({str(k): int(v) for k, v in data.get("counts", {}).items()})
        replicas = {str(n): tuple(map(str, r)) for n, r in data.get("replicas", {}).items()}
        return states, counts, replicas
    except FileNotFoundError:
        return {}, Counter(), {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("state file %s: probe history unreadable (%s); starting it afresh", path, exc)
        return {}, Counter(), {}


def _count_key(name: str, kind: str, outcome: str) -> str:
    return f"{name}\x1f{kind}\x1f{outcome}"


class Prober:
    """Per class: the planner's state, the last plan, manual triggers and counts."""

    def __init__(self, settings: ProbeSettings, *, state_path: Path | None = None) -> None:
        self.settings = settings
        self.states, counts, replicas = load_probe_states(state_path)
        #: (class, kind, outcome) -> probes ended so; restarts made for probes, per class
        self.counts: Counter[str] = Counter()
        self.restarts: Counter[str] = Counter()
        for key, n in counts.items():
            name, kind, outcome = ([*key.split("\x1f"), "", ""])[:3]
            if kind == "*" and outcome == "restarts":
                self.restarts[name] = n
            elif outcome:
                self.counts[key] = n
        self.replicas_seen: dict[str, tuple[str, ...]] = dict(replicas)
        #: (class, instance) -> its engine labels ("0", or "0,1" for several), for {engine}
        self.engines_seen: dict[tuple[str, str], str] = {}
        self.plans: dict[str, ProbePlan] = {}
        self._requests: dict[str, str] = {}
        self._lock = threading.Lock()
        self._plain_start: dict[str, float] = {}
        #: (class, probe start) -> series -> (generation tokens, ITL seconds) at the start
        #: of the canary comparison
        self._cmp_start: dict[tuple[str, float], dict[Any, tuple[float, float]]] = {}

    # ------------------------------------------------------------------ triggers
    def request(self, name: str, why: str = "requested (specwise probe)") -> None:
        """A manual trigger, from any thread: probe ``name`` as soon as its budget allows."""
        with self._lock:
            self._requests[name] = why

    def _take_request(self, name: str) -> str:
        with self._lock:
            return self._requests.pop(name, "")

    # ------------------------------------------------------------------ the hook
    def before_actuation(
        self, ctl: Controller, name: str, ev: Evidence, decision: Decision, now: float
    ) -> Decision:
        """Plan probes for ``name``; run one through the actuator; hold the policy while a
        probe runs. Returns the decision the controller goes on with. A failure here (a
        bug) is counted like the controller's own and never blocks the policy's decision."""
        try:
            return self._before_actuation(ctl, name, ev, decision, now)
        except Exception as exc:
            ctl._internal_error(f"probing class {name!r}", exc)
            return decision

    def _before_actuation(
        self, ctl: Controller, name: str, ev: Evidence, decision: Decision, now: float
    ) -> Decision:
        state = self.states.get(name, ProbeState())
        why = self._take_request(name)
        if why:
            state = trigger(state, why)
        view = self._view(ctl, name, ev, decision, now)
        running = state.running
        if running is not None and not running.instance and not self._deployed(ctl, name, running):
            # the actuator did not apply the probe (failed, or still in flight)
            if name in ctl._in_flight:
                ctl.gate.states[name] = decision.before
                return self._hold(decision, f"{running.kind} probe starting (actuator in flight)")
            state = self._abort(name, state, now, "the actuator did not apply it")
            running = None
        evidence = self._evidence(ctl, name, ev, decision, running) if running else None
        p = plan(state, view, self.settings, now=now, evidence=evidence)
        self.states[name], self.plans[name] = p.state, p
        try:
            return self._act(ctl, name, decision, p, now)
        finally:
            if p.action != "none" or why or running is not p.state.running:
                ctl._persist()  # the probe history survives a controller restart

    def _act(
        self, ctl: Controller, name: str, decision: Decision, p: ProbePlan, now: float
    ) -> Decision:
        if p.action == "start" or p.state.running is not None or p.apply_k is not None:
            # the probe owns the class now: a change the gate allowed this tick is not made
            before = decision.before
            canary = p.probe if p.probe is not None and p.probe.instance else None
            if canary is not None:
                # the class's k is the others' (the counters may show the canary's alone)
                before = dataclasses.replace(before, current_k=canary.previous_k)
                decision = dataclasses.replace(decision, before=before)
            ctl.gate.states[name] = before
        if p.action == "start" and p.probe is not None:
            return self._start(ctl, name, decision, p, now)
        if p.action == "end" and p.probe is not None:
            self.counts[_count_key(name, p.probe.kind, p.probe.outcome)] += 1
            changes_log.info("class %s: %s", name, p.reason)
            self._cmp_start.pop((name, p.probe.started), None)
            mark = f"{name}\x1f{p.probe.started}\x1f"
            for key in [k for k in self._plain_start if k.startswith(mark)]:
                del self._plain_start[key]
            if p.apply_k is not None:
                back = p.probe.previous_schedule if p.apply_k == p.probe.previous_k else ()
                self._apply(ctl, name, decision, p.apply_k, p.instance, p.reason, now, back)
                return self._hold(decision, p.reason)
            return decision
        if p.state.running is not None:
            return self._hold(decision, p.reason)
        return decision

    def _hold(self, decision: Decision, why: str) -> Decision:
        rec = dataclasses.replace(decision.recommendation, change_allowed=False)
        return dataclasses.replace(
            decision, recommendation=rec, act=False, after=decision.before, hold=why
        )

    def _deployed(self, ctl: Controller, name: str, probe: ProbeRecord) -> bool:
        return ctl.gate.states.get(name, HysteresisState()).current_k == probe.k

    def _abort(self, name: str, state: ProbeState, now: float, why: str) -> ProbeState:
        probe = state.running
        assert probe is not None
        ended = dataclasses.replace(probe, ended=now, outcome="aborted", result=why)
        self.counts[_count_key(name, probe.kind, "aborted")] += 1
        return dataclasses.replace(
            state, running=None, history=(*state.history, ended)[-20:], attempts=state.attempts + 1
        )

    def _start(
        self, ctl: Controller, name: str, decision: Decision, p: ProbePlan, now: float
    ) -> Decision:
        probe = p.probe
        assert probe is not None
        assert p.apply_k is not None
        schedule = ctl.gate.states.get(name, HysteresisState()).current_schedule
        if schedule and not probe.instance:  # restored with previous_k when the probe ends
            probe = dataclasses.replace(probe, previous_schedule=tuple(schedule))
            self.states[name] = dataclasses.replace(self.states[name], running=probe)
        applied = self._apply(ctl, name, decision, p.apply_k, p.instance, p.reason, now)
        if not applied:
            # dry-run: proposed, never run; failed: retried after the next backoff step.
            # Either way the attempt is history, so proposals are paced by the backoff.
            outcome: Outcome = "proposed" if ctl.actuator.kind == "dry-run" else "aborted"
            ended = dataclasses.replace(
                probe,
                ended=now,
                outcome=outcome,
                result=(
                    "proposed by a dry-run controller, not run"
                    if outcome == "proposed"
                    else "the actuator did not apply it"
                ),
            )
            st = self.states[name]
            self.states[name] = dataclasses.replace(
                st,
                running=None,
                history=(*st.history, ended)[-20:],
                attempts=st.attempts + 1,
            )
            self.counts[_count_key(name, probe.kind, outcome)] += 1
            return self._hold(decision, p.reason)  # one proposal (or failure) per tick
        if probe.kind in ("re-enable", "explore"):
            ctl.estimator.reset(name)  # the verdict rests on the probe's own drafts
        return self._hold(decision, p.reason)

    def _apply(
        self,
        ctl: Controller,
        name: str,
        decision: Decision,
        k: int,
        instance: str,
        reason: str,
        now: float,
        schedule: tuple[tuple[int, int, int], ...] = (),
    ) -> bool:
        """Deploy k (on one replica when ``instance``) through the controller's actuation
        path; True when applied (or started in the background). A probe deploys a single k,
        never the policy's schedule; its end restores the schedule in force before it."""
        rec: Recommendation = dataclasses.replace(
            decision.recommendation,
            recommended_k=k,
            schedule=schedule or None,
            config=SpecConfig(k, schedule or None),
            off_mode="restart" if k == 0 else None,
            reason=f"probe: {reason}",
            change_allowed=True,
        )
        before = ctl.gate.states.get(name, HysteresisState())
        if instance:
            apply_one = getattr(ctl.actuator, "apply_instance", None)
            if not callable(apply_one):  # pragma: no cover - the view offers no replicas then
                return False
            try:
                result = apply_one(
                    name,
                    instance,
                    k,
                    speculative_config=ctl._speculative_config(name, rec),
                    reason=rec.reason,
                    now=now,
                    engine=self.engines_seen.get((name, instance), ""),
                )
            except Exception as exc:
                log.error("probe on %s of class %s failed: %s", instance, name, exc)
                return False
            if result.applied:
                self.restarts[name] += 1
                recent = tuple(t for t in before.changes if now - t < 3600.0)
                ctl.gate.states[name] = dataclasses.replace(
                    before, last_change=now, changes=(*recent, now), proposed=False
                )
            return bool(result.applied or result.pending)
        recent = tuple(t for t in before.changes if now - t < 3600.0)
        ctl.gate.states[name] = HysteresisState(
            current_k=k,
            last_change=now,
            changes=(*recent, now),
            current_schedule=schedule or None,
        )
        ctl._actuate(name, rec, before, now)
        after = ctl.gate.states.get(name, HysteresisState())
        applied = after.current_k == k and not after.proposed
        if applied and ctl.actuator.kind != "dry-run":
            self.restarts[name] += 1
        return applied

    # ------------------------------------------------------------------ inputs
    def _replicas(self, ctl: Controller, name: str, now: float) -> tuple[str, ...]:
        """The class's replicas (instances) now, or as last seen: a class at k = 0 exports
        no spec-decode series, and its replicas are still the ones it ran on."""
        if not self.settings.canary or not callable(getattr(ctl.actuator, "apply_instance", None)):
            return ()
        out: set[str] = set()
        for snap in list(ctl._last.values()):
            if now - snap.timestamp > ctl.config.controller.stale_after:
                continue
            if ctl.classes.classify(snap.labels)[CLASS_LABEL] != name:
                continue
            rid = replica_id(snap.labels)
            if rid:
                out.add(rid)
                engines = {
                    *self.engines_seen.get((name, rid), "").split(","),
                    snap.labels.get("engine", ""),
                }
                self.engines_seen[(name, rid)] = ",".join(sorted(e for e in engines if e))
        running = self.states.get(name, ProbeState()).running
        if out and (running is None or not running.instance):
            self.replicas_seen[name] = tuple(sorted(out))
        return self.replicas_seen.get(name, ())

    def _fingerprint(self, ctl: Controller, name: str) -> str:
        settings = ctl.config.class_settings(name)
        spec = dict(settings.speculative_config) if settings else {}
        return json.dumps(spec, sort_keys=True, default=str)

    def _label_values(self, ctl: Controller, name: str) -> tuple[str, ...]:
        values = {f"{k}={v}" for labels in ctl._series.of(name) for k, v in labels.items()}
        return tuple(sorted(values))

    def _view(
        self, ctl: Controller, name: str, ev: Evidence, decision: Decision, now: float
    ) -> ClassView:
        gate = ctl.gate.states.get(name, HysteresisState())
        rec = decision.recommendation
        deployed = decision.deployed if gate.current_k is None else gate.current_k
        probe_k = min(self.settings.probe_k, ctl.config.policy.k_max)
        speedups = rec.speedups
        expected = None
        if deployed == 0 and len(speedups) > probe_k:
            expected = speedups[probe_k]
        elif deployed and rec.predicted_speedup_current is not None:
            expected = rec.predicted_speedup_current
        explore = None
        if (
            deployed
            and rec.optimal_k is not None
            and rec.optimal_k > deployed
            and not rec.change_allowed
            and ("confidence" in rec.reason or "step bound" in " ".join(rec.notes))
        ):
            explore = rec.optimal_k
        return ClassView(
            name=name,
            declared=ev.declared,
            deployed_k=deployed,
            stale=decision.stale,
            k_max=ctl.config.policy.k_max,
            changes=gate.changes,
            last_change=None if gate.proposed else gate.last_change,
            max_changes_per_hour=ctl.gate.config.max_changes_per_hour,
            min_dwell=ctl.gate.config.min_dwell_seconds,
            fingerprint=self._fingerprint(ctl, name),
            label_values=self._label_values(ctl, name),
            replicas=self._replicas(ctl, name, now),
            expected_speedup=expected,
            explore_k=explore,
            has_baseline=self._has_baseline(ctl, name, now),
        )

    def _has_baseline(self, ctl: Controller, name: str, now: float) -> bool:
        """Plain-decoding windows of the class within the load horizon (the load tracker's
        k = 0 observations: before/after windows, or a replica running without speculation):
        then a baseline probe has nothing to add."""
        classes = getattr(getattr(ctl, "load", None), "_classes", None) or {}
        tracked = classes.get(name)
        if tracked is None:
            return False
        return any(o.k == 0 for o in tracked.window.observations(now))

    def _evidence(
        self,
        ctl: Controller,
        name: str,
        ev: Evidence,
        decision: Decision,
        probe: ProbeRecord,
    ) -> ProbeEvidence:
        est = ev.estimate
        ratio = self._canary_ratio(ctl, name, probe) if probe.instance else None
        if probe.kind == "baseline":
            return ProbeEvidence(
                plain_steps=self._plain_steps(ctl, name, probe),
                # the others' speculation against the canary's plain decoding
                speedup=None if not ratio else 1.0 / ratio,
                canary_ratio=ratio,
            )
        rec = decision.recommendation
        speedups = rec.speedups
        if not est.ok or len(speedups) < 2:
            return ProbeEvidence(drafts=est.drafts, canary_ratio=ratio)
        best = max(range(1, len(speedups)), key=lambda k: speedups[k])
        low = high = None
        if est.alpha_low is not None and est.alpha_high is not None:
            pol = ctl._policy(name)
            low, high = (
                speedup_from_survival(
                    survival_curve(a, best), best, pol.cost, verify_cost=pol.verify_cost
                )
                for a in (est.alpha_low, est.alpha_high)
            )
        return ProbeEvidence(
            drafts=est.drafts, speedup=speedups[best], low=low, high=high, canary_ratio=ratio
        )

    def _canary_ratio(self, ctl: Controller, name: str, probe: ProbeRecord) -> float | None:
        """The canary's tokens per second of request time (generation tokens over the
        inter-token-latency sum) over the other replicas', both counted from the first tick
        the canary answered after its restart: the same minutes, the same traffic."""
        snaps = [
            s
            for s in list(ctl._last.values())
            if s.generation_tokens is not None
            and s.itl_seconds_sum is not None
            and s.timestamp > probe.started
            and ctl.classes.classify(s.labels)[CLASS_LABEL] == name
        ]
        if not any(replica_id(s.labels) == probe.instance for s in snaps):
            return None  # the canary is still restarting
        start = self._cmp_start.setdefault((name, probe.started), {})
        sums = {True: [0.0, 0.0], False: [0.0, 0.0]}
        for s in snaps:
            key = labels_key(s.labels)
            tokens, seconds = s.generation_tokens or 0.0, s.itl_seconds_sum or 0.0
            base = start.setdefault(key, (tokens, seconds))
            if tokens < base[0] or seconds < base[1]:  # a restart: count from here
                base = start[key] = (tokens, seconds)
            group = sums[replica_id(s.labels) == probe.instance]
            group[0] += tokens - base[0]
            group[1] += seconds - base[1]
        (ct, cs), (ot, os_) = sums[True], sums[False]
        if cs <= 0 or os_ <= 0 or ct <= 0 or ot <= 0:
            return None
        return (ct / cs) / (ot / os_)

    def _plain_steps(self, ctl: Controller, name: str, probe: ProbeRecord) -> float:
        """Request-steps (ITL observations) of the class's engines running without
        speculation since the probe started (load-only snapshots)."""
        total = 0.0
        for snap in list(ctl._last.values()):
            if snap.spec_families or snap.itl_seconds_count is None:
                continue
            if ctl.classes.classify(snap.labels)[CLASS_LABEL] != name:
                continue
            if probe.instance and replica_id(snap.labels) != probe.instance:
                continue
            key = f"{name}\x1f{probe.started}\x1f{sorted(snap.labels.items())}"
            first = self._plain_start.setdefault(key, snap.itl_seconds_count)
            total += max(0.0, snap.itl_seconds_count - first)
        return total

    # ------------------------------------------------------------------ outputs
    def persisted(self) -> dict[str, Any]:
        """The ``"probes"`` section of the state file."""
        counts = dict(self.counts)
        for name, n in self.restarts.items():
            counts[_count_key(name, "*", "restarts")] = n
        return {
            "classes": {n: s.to_json() for n, s in sorted(self.states.items())},
            "counts": counts,
            "replicas": {n: list(r) for n, r in sorted(self.replicas_seen.items())},
        }

    def status(self, name: str, now: float) -> dict[str, Any]:
        """What ``/recommendations`` and the status table show for one class."""
        st = self.states.get(name, ProbeState())
        p = self.plans.get(name)
        planned = None
        if p is not None and p.next_kind is not None and p.next_at is not None:
            planned = {
                "kind": p.next_kind,
                "at": p.next_at if math.isfinite(p.next_at) else None,
                "reason": p.reason,
            }
        return {
            "enabled": self.settings.enabled,
            "running": None if st.running is None else st.running.to_json(),
            "planned": planned,
            "reason": "" if p is None else p.reason,
            "results": [r.to_json() for r in st.history[-5:]],
            "restarts_used": self.restarts[name],
            "seconds_last_day": probe_seconds_in_day(
                (*st.history, *(() if st.running is None else (st.running,))), now
            ),
            "counts": [
                [kind, outcome, n]
                for key, n in sorted(self.counts.items())
                for cls, kind, outcome in [key.split("\x1f")]
                if cls == name
            ],
            "budget_seconds": self.settings.max_probe_fraction * DAY,
        }

    def annotate(self, name: str, status: ClassStatus, now: float) -> ClassStatus:
        probe = self.status(name, now)
        reason = status.reason
        if probe["running"] is not None or (
            self.plans.get(name) is not None and self.plans[name].action == "end"
        ):
            reason = f"{self.plans[name].reason}; {reason}" if name in self.plans else reason
        return dataclasses.replace(status, probe=probe, reason=reason)


def probe_trigger(ctl: Controller) -> Callable[[str], tuple[int, str]]:
    """``POST /probe?class=NAME`` and ``specwise probe CLASS``: (HTTP status, one sentence)."""

    def trigger_class(name: str) -> tuple[int, str]:
        declared = [c.name for c in ctl.config.classes]
        if name not in declared:
            known = ", ".join(declared) or "none are declared"
            return 404, (
                f"class {name!r} is not declared in [[classes]] (only declared classes are "
                f"probed); probe one of: {known}"
            )
        if not ctl.probes.settings.enabled:
            return 409, "probes are disabled ([probes] enabled = false); enable them to probe"
        ctl.probes.request(name, "requested (specwise probe / POST /probe)")
        how = "proposed (dry-run)" if ctl.actuator.kind == "dry-run" else "run"
        return 202, (
            f"probe of class {name!r} requested: {how} on the next tick when its budget and "
            "restart limits allow; see /recommendations"
        )

    return trigger_class


def probe_families(st: ControllerState) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """``specwise_probe_*`` from the classes' ``probe`` status."""
    running = GaugeMetricFamily(
        "specwise_probe_running",
        "1 while a probe runs on the class (kind: re-enable, baseline, explore; instance: "
        "the canary replica, empty for the whole class).",
        labels=["class", "kind", "instance"],
    )
    planned = GaugeMetricFamily(
        "specwise_probe_planned_timestamp_seconds",
        "Unix time the class's next probe is planned for (due now when in the past).",
        labels=["class", "kind"],
    )
    results = CounterMetricFamily(
        "specwise_probe_results",
        "Probes ended, by kind and outcome (pays, loses, unclear, measured, no-data, aborted, "
        "proposed).",
        labels=["class", "kind", "outcome"],
    )
    restarts = CounterMetricFamily(
        "specwise_probe_restarts",
        "Restarts specwise made for probes (into a probe and back out).",
        labels=["class"],
    )
    used = GaugeMetricFamily(
        "specwise_probe_seconds",
        "Class-seconds spent probing in the last 24 h (a canary counts by its replica share).",
        labels=["class"],
    )
    budget = GaugeMetricFamily(
        "specwise_probe_budget_seconds",
        "Probe budget per rolling day: [probes] max_probe_fraction x 24 h.",
        labels=["class"],
    )
    last = GaugeMetricFamily(
        "specwise_probe_last_speedup_ratio",
        "Speedup measured by the class's last probe that measured one.",
        labels=["class", "kind"],
    )
    for c in st.classes:
        probe = c.probe
        if not probe:
            continue
        run = probe.get("running")
        if run:
            running.add_metric([c.name, run["kind"], run.get("instance", "")], 1.0)
        plan_ = probe.get("planned")
        if plan_ and plan_.get("at") is not None:
            planned.add_metric([c.name, plan_["kind"]], float(plan_["at"]))
        for kind, outcome, n in probe.get("counts", ()):
            results.add_metric([c.name, kind, outcome], float(n))
        restarts.add_metric([c.name], float(probe.get("restarts_used", 0)))
        used.add_metric([c.name], float(probe.get("seconds_last_day", 0.0)))
        budget.add_metric([c.name], float(probe.get("budget_seconds", 0.0)))
        for r in reversed(probe.get("results", ())):
            if r.get("speedup") is not None:
                last.add_metric([c.name, r["kind"]], float(r["speedup"]))
                break
    yield from (running, planned, results, restarts, used, budget, last)
