"""The controller: one testable ``step(now)`` and a loop around it.

Each tick: collect -> deltas -> estimate -> decide (:mod:`specwise.controller.decide`, pure)
-> actuate -> publish -> alert. This module is the bookkeeping around the decision: deltas,
the hysteresis states, actuation records (:mod:`specwise.controller.records`), status.
Nothing a source or an actuator does can stop the loop: a failing source makes its classes
stale (no actuation on stale data, the last safe k is held), bad counters are skipped with
a recorded error, a failing actuator is reported and retried on a later tick, and any other
failure is counted and exported while the tick still publishes its state.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from specwise.collectors.classes import CLASS_LABEL, ClassConfig, resolve_classes
from specwise.collectors.deltas import sum_by_class, window_deltas
from specwise.collectors.snapshot import CounterDelta, Snapshot, SnapshotSource, labels_key
from specwise.config import SpecwiseConfig
from specwise.controller.actuators import (
    ActuationResult,
    Actuator,
    PollingActuator,
    write_atomically,
)
from specwise.controller.decide import Decision, DecisionRules, Evidence, decide
from specwise.controller.load import LoadTracker, load_status
from specwise.controller.records import ActuationRecords, SeriesLabels
from specwise.controller.state import (
    ClassStatus,
    ControllerState,
    PersistedClass,
    load_persisted,
    persisted_json,
)
from specwise.controller.tracking import SourceTrack
from specwise.errors import ActuatorError, DataError, SpecwiseError
from specwise.estimation.drift import DriftConfig, DriftDetector, DriftStatus
from specwise.estimation.estimator import Estimate
from specwise.estimation.rolling import RollingEstimator
from specwise.estimation.settings import estimator_config
from specwise.policies.hysteresis import HysteresisConfig, HysteresisGate, HysteresisState
from specwise.policies.load_policy import LoadEvidence
from specwise.policies.off import deployment_config, is_schedule_off
from specwise.policies.schedule import ScheduleEntry, validate_schedule
from specwise.policies.settings import policy_config
from specwise.policies.speedup_policy import PolicyConfig, Recommendation
from specwise.step_cost import SpecConfig

__all__ = ["Controller", "class_config_from"]

log = logging.getLogger("specwise.controller")
#: one line per applied change (file written, command run); ``specwise run`` shows it at INFO
changes_log = logging.getLogger("specwise.changes")
AlertSink = Callable[[ControllerState, float], None]
#: how often the state file is rewritten for the load windows alone (controller clock)
LOAD_PERSIST_SECONDS = 300.0
SCHEDULE_KEY = "num_speculative_tokens_per_batch_size"


def _declared_schedule(spec: Mapping[str, Any]) -> tuple[ScheduleEntry, ...] | None:
    """The schedule a class's declared ``speculative_config`` deploys (None: none, or one
    that does not validate: the policy then prices the class as a single k)."""
    raw = spec.get(SCHEDULE_KEY)
    if not raw:
        return None
    try:
        return validate_schedule(raw, spec.get("num_speculative_tokens"))
    except (SpecwiseError, TypeError, ValueError):
        return None


def _deployed_schedule(spec: Mapping[str, Any] | None) -> tuple[ScheduleEntry, ...] | None:
    """The schedule a speculative config deploys (None: none, or k = 0 in schedule form)."""
    if spec is None or is_schedule_off(spec):
        return None
    return _declared_schedule(spec)


def class_config_from(config: SpecwiseConfig) -> ClassConfig:
    """Workload classes from config (``resolve_classes``, the resolver every command uses)."""
    return resolve_classes(config)


class Controller:
    """Steers k per workload class; read ``state()`` at any time (thread-safe)."""

    def __init__(
        self,
        config: SpecwiseConfig,
        *,
        source: SnapshotSource,
        actuator: Actuator,
        clock: Callable[[], float] = time.time,
        classes: ClassConfig | None = None,
        state_path: Path | None = None,
        alert_sink: AlertSink | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.actuator = actuator
        self.clock = clock
        self.classes = classes or class_config_from(config)
        self.alert_sink = alert_sink
        est = config.estimator
        self.estimator = RollingEstimator(
            estimator_config(config), k={c.name: c.k for c in config.classes if c.k is not None}
        )
        self.drift = DriftDetector(DriftConfig(window_seconds=est.window))
        pol = config.policy
        self.gate = HysteresisGate(
            HysteresisConfig(
                min_gain=pol.min_gain,
                min_dwell_seconds=pol.min_dwell,
                max_changes_per_hour=pol.max_changes_per_hour,
            )
        )
        self._policies: dict[str, PolicyConfig] = {}
        self._last: dict[tuple[tuple[str, str], ...], Snapshot] = {}
        self._sources: dict[str, SourceTrack] = {}
        self._seen: dict[str, float] = {}
        self._observed_k: dict[str, int] = {}
        self._series_now: dict[str, list[tuple[tuple[str, str], ...]]] = {}
        self._restarted: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._drifting: dict[str, bool] = {}  # the window after a drift alarm (exported)
        self._drift_suspected: dict[str, bool] = {}  # past the thresholds, not yet an alarm
        self._records = ActuationRecords()
        self._errors: Counter[str] = Counter()  # the controller's own failures, by kind
        self._last_error = ""
        self._unmatched_warned: set[str] = set()
        #: the last tick's per-series load-only deltas (engines without speculation)
        self._load_deltas: list[CounterDelta] = []
        # the alert rules' class labels (e.g. model_name) of each class's series
        self._series = SeriesLabels(
            config.alerts.class_labels or config.source.group_by, self.classes
        )
        # class -> (gate state before, gate state after, deployed config, recommendation) of a
        # run the actuator has in flight (a background command)
        self._in_flight: dict[
            str, tuple[HysteresisState, HysteresisState, dict[str, Any] | None, Recommendation]
        ] = {}
        # the cost side: per class a load window and the last step-time fit
        self.load = LoadTracker(
            horizon=config.policy.load_horizon, recent=est.window, max_observations=2000
        )
        self._load_errors: dict[str, str] = {}  # class -> this tick's load-path failure
        self._load_notes: dict[str, str] = {}  # class -> why it is not priced with its load
        self._load_persisted_at = float("-inf")
        self._lock = threading.Lock()
        self._started = clock()
        self._ticks = 0
        self._state = ControllerState(self._started, None, 0, actuator=actuator.kind)
        self.state_path = state_path or (
            Path(config.controller.state_file) if config.controller.state_file else None
        )
        for c in config.classes:
            if c.k is not None:
                self.gate.states[c.name] = HysteresisState(
                    current_k=c.k, current_schedule=_declared_schedule(c.speculative_config)
                )
        if self.state_path is not None:
            for name, p in load_persisted(self.state_path).items():
                last = max(p.change_times) if p.change_times else None
                self.gate.states[name] = HysteresisState(
                    p.deployed_k, last, p.change_times, current_schedule=p.deployed_schedule
                )
                if p.off_by_specwise:
                    self._records.turned_off.add(name)
                for labels in p.series_labels:
                    self._series.add(name, labels)
                if p.load_window is not None:
                    try:
                        self.load.restore(name, p.load_window)
                    except Exception as exc:  # an old or damaged window: start it afresh
                        log.warning(
                            "class %s: the state file's load window is unusable (%s); "
                            "collecting the load afresh",
                            name,
                            exc,
                        )

    # ----------------------------------------------------------------------------- state
    def state(self) -> ControllerState:
        with self._lock:
            return self._state

    def healthy(self) -> tuple[bool, str]:
        """Healthy once a tick has run and some source answered within ``stale_after``."""
        st = self.state()
        if st.updated_at is None:
            return True, "starting: no tick yet"
        fresh = [
            s
            for s in st.sources
            if s.last_success is not None
            and st.updated_at - s.last_success <= self.config.controller.stale_after
        ]
        if not fresh:
            return False, "no source answered within [controller] stale_after"
        return True, f"ok: {len(fresh)}/{len(st.sources)} sources fresh, tick {st.ticks}"

    # ----------------------------------------------------------------------------- collect
    def _track(self, name: str) -> SourceTrack:
        return self._sources.setdefault(name, SourceTrack(name))

    def _collect(self, now: float) -> list[Snapshot]:
        scrape = getattr(self.source, "scrape", None)
        if callable(scrape):  # direct scrape: one status per target
            snaps: list[Snapshot] = []
            try:
                results = list(scrape(now))
            except Exception as exc:  # one no layer mapped: every target failed this tick
                for url in self.config.source.urls or ("scrape",):
                    self._track(url).fail(now, exc)
                log.warning("scrape failed: %r", exc)
                return []
            for result in results:
                track = self._track(result.target)
                if result.error is None:
                    track.ok(now)
                    snaps.extend(result.snapshots)
                else:
                    track.fail(now, result.error)
                    log.warning("source %s: %s", result.target, result.error)
            return snaps
        name = str(getattr(self.source, "name", type(self.source).__name__))
        track = self._track(name)
        try:
            got = list(self.source.collect(now))
        except Exception as exc:  # a SpecwiseError, or one no layer mapped (a source error too)
            track.fail(now, exc)
            log.warning("source %s: %s", name, exc if isinstance(exc, SpecwiseError) else repr(exc))
            return []
        track.ok(now)
        return got

    def _fresh_at_first_sight(self, snap: Snapshot, now: float) -> bool:
        """Whether a series' first counters are a window's worth of fresh evidence.

        Direct scrape reads counters since the engine started: evidence only when it started
        within the estimation window; otherwise the first tick is a baseline, so a fresh
        controller never prices k from an engine's lifetime counters.
        """
        if snap.process_start_time is not None:
            return now - snap.process_start_time <= self.config.estimator.window
        return not callable(getattr(self.source, "scrape", None))

    def _deltas(self, snapshots: Sequence[Snapshot], now: float) -> list[CounterDelta]:
        out: list[CounterDelta] = []
        for snap in snapshots:
            prev = self._last.get(snap.key)
            if prev is None and not self._fresh_at_first_sight(snap, now):
                prev = snap  # a baseline: counters older than a window are history, not evidence
            elif prev is None:
                # first sight of counters that span at most one window (an engine started
                # within it, or a windowed source): evidence nobody counted yet
                prev = dataclasses.replace(
                    snap,
                    timestamp=snap.process_start_time or now - self.config.estimator.window,
                    drafts=None if snap.drafts is None else 0.0,
                    draft_tokens=0.0,
                    accepted=0.0,
                    accepted_per_position=(0.0,) * len(snap.accepted_per_position),
                    generation_tokens=None,
                    itl_seconds_sum=None,
                    itl_seconds_count=None,
                )
            try:
                out.extend(window_deltas([prev], [snap]))
            except DataError as exc:
                # skip this sample; the next good one spans both intervals (nothing lost)
                self._track(snap.source or "data").fail(now, exc)
                log.warning("skipping counters: %s", exc)
                continue
            self._last[snap.key] = snap
        return out

    # ----------------------------------------------------------------------------- decide
    def _policy(self, name: str) -> PolicyConfig:
        cfg = self._policies.get(name)
        if cfg is None:
            cfg = self._policies[name] = policy_config(self.config, name)
        return cfg

    def _speculative_config(self, name: str, rec: Recommendation) -> dict[str, Any] | None:
        """The ``--speculative-config`` that deploys the recommendation; a configuration
        with a batch-size schedule carries it as ``num_speculative_tokens_per_batch_size``
        with its maximum k as ``num_speculative_tokens``."""
        settings = self.config.class_settings(name)
        spec = deployment_config(
            settings.speculative_config if settings else {},
            k=rec.recommended_k,
            off_mode=rec.off_mode,
            schedule=rec.schedule,
            keep_k=self._observed_k.get(name) or self.config.policy.k_max,
        )
        config = rec.config
        if spec is not None and config is not None and config.k > 0 and config.schedule:
            spec["num_speculative_tokens"] = config.k
            spec[SCHEDULE_KEY] = [list(e) for e in validate_schedule(config.schedule, config.k)]
        return spec

    def _actuate(self, name: str, rec: Recommendation, before: HysteresisState, now: float) -> None:
        """The one call into the actuator; what it did is recorded by ``_record``."""
        spec = self._speculative_config(name, rec)
        if name in self.gate.states:  # the schedule in force once applied: the one deployed
            self.gate.states[name] = dataclasses.replace(
                self.gate.states[name], current_schedule=_deployed_schedule(spec)
            )
        try:
            result: ActuationResult = self.actuator.apply(
                name, rec.recommended_k, speculative_config=spec, reason=rec.reason, now=now
            )
        except Exception as exc:  # ActuatorError, or a failure the actuator did not map
            self.gate.states[name] = before  # not applied: retry on a later tick
            self._records.failed(name, str(exc) or type(exc).__name__)
            if not isinstance(exc, ActuatorError):
                self._errors["actuator"] += 1
            log.error("actuator failed for class %s: %s", name, exc)
            return
        self._record(name, rec, spec, before, result)

    def _record(
        self,
        name: str,
        rec: Recommendation,
        spec: dict[str, Any] | None,
        before: HysteresisState,
        result: ActuationResult,
    ) -> None:
        """Bookkeeping of one actuation: applied changes and dry-run proposals apart."""
        if result.pending:
            # started in the background: the change counts for dwell and budget from now;
            # its outcome arrives through poll() on a later tick (_actuations_finished)
            started = self.gate.states.get(name, HysteresisState())
            self._in_flight[name] = (before, started, spec, rec)
            self._records.refused(name, result.detail)
            log.info(
                "class %s: k -> %d (%s): %s", name, rec.recommended_k, result.detail, rec.reason
            )
        elif not result.applied and self.actuator.kind != "dry-run":
            self.gate.states[name] = before  # rate-limited or in flight: try again later
            # keep the last failure visible while the retry waits
            error = self._records.outcome.get(name, ("", ""))[1]
            self._records.outcome[name] = (result.detail, error)
            log.info("class %s: k = %d not applied: %s", name, rec.recommended_k, result.detail)
            return
        elif not result.applied:  # dry-run: proposed, not deployed; re-proposed after the dwell
            after = self.gate.states.get(name, HysteresisState())
            self.gate.states[name] = dataclasses.replace(
                after,
                current_k=before.current_k,
                current_schedule=before.current_schedule,
                proposed=True,
            )
            self._records.proposed(name, result)
            log.info("class %s: proposed k -> %d: %s", name, rec.recommended_k, rec.reason)
        else:
            self._applied(name, result, spec, rec, before)
        self._persist()

    def _applied(
        self,
        name: str,
        result: ActuationResult,
        spec: dict[str, Any] | None,
        rec: Recommendation,
        before: HysteresisState,
    ) -> None:
        detail = self._records.applied(name, result, spec)
        changes_log.info(
            "class %s: k = %d applied: %s; was k = %s: %s",
            name,
            result.k,
            detail,
            "?" if before.current_k is None else before.current_k,
            rec.reason,
        )

    def _actuations_finished(self, results: Sequence[ActuationResult]) -> None:
        """Record background runs that finished: a success is a change; a failure restores
        the gate state from before the run (unless something moved it since) for a retry."""
        for result in results:
            name = result.class_name
            flight = self._in_flight.pop(name, None)
            if result.applied:
                if flight is None:
                    self._records.applied(name, result, None)
                else:
                    self._applied(name, result, flight[2], flight[3], flight[0])
                continue
            if flight is not None and self.gate.states.get(name) == flight[1]:
                self.gate.states[name] = flight[0]  # not applied: retry on a later tick
            self._records.failed(name, result.error or result.detail)
            log.error("actuator failed for class %s: %s", name, result.error or result.detail)
        if results:
            self._persist()

    def close(self, timeout: float | None = None) -> None:
        """Stop: wait up to ``timeout`` s (None: the actuator's own bound) for runs in
        flight, kill what is left, record the outcomes. Safe to call more than once."""
        if isinstance(self.actuator, PollingActuator):
            self._actuations_finished(self.actuator.close(timeout))
        self._persist()  # the load windows too, whatever the last periodic save

    def _persist(self) -> None:
        if self.state_path is None:
            return
        names = set(self.gate.states) | set(self.load.classes())
        data = {
            name: PersistedClass(
                st.current_k,
                st.changes,
                name in self._records.turned_off,
                self._series.of(name),
                st.current_schedule,
                self._load_window_json(name),
            )
            for name in names
            for st in (self.gate.states.get(name, HysteresisState()),)
        }
        try:
            write_atomically(self.state_path, persisted_json(data))
        except OSError as exc:
            log.error("cannot write state file %s: %s", self.state_path, exc)

    def _load_window_json(self, name: str) -> dict[str, Any] | None:
        try:
            return self.load.to_json(name)
        except Exception as exc:  # the state file still keeps k; the window is rebuilt
            self._load_failed(name, "saving the load window", exc)
            return None

    def _persist_load(self, now: float) -> None:
        """Save the load windows at most every LOAD_PERSIST_SECONDS (they change every tick)."""
        if self.state_path is not None and now - self._load_persisted_at >= LOAD_PERSIST_SECONDS:
            self._load_persisted_at = now
            self._persist()

    def _load_failed(self, name: str, where: str, exc: BaseException) -> None:
        """A failure of the cost side for one class: counted (kind "load"), exported, logged;
        the class keeps its configuration this tick (see ``decide.load_hold``)."""
        self._errors["load"] += 1
        text = f"{where}: {type(exc).__name__}: {exc}"
        self._load_errors[name] = text
        self._last_error = f"class {name!r}: {text}"
        log.error("class %s: %s; holding the deployed configuration", name, text)
        log.debug("traceback of the failure", exc_info=exc)

    def _deployed_config(self, name: str) -> SpecConfig | None:
        st = self.gate.states.get(name, HysteresisState())
        k = st.current_k if st.current_k is not None else self._observed_k.get(name)
        if k is None:
            return None
        return SpecConfig(k, st.current_schedule if k and st.current_schedule else None)

    def _load_evidence(self, name: str, estimate: Estimate, now: float) -> LoadEvidence | None:
        """The cost side of one class on this tick (None: constant-cost; failures recorded)."""
        try:
            survival = tuple(p.value for p in estimate.survival) if estimate.ok else None
            evidence, note = self.load.evidence(
                name,
                now,
                prior_cost=self._policy(name).cost,
                survival=survival or None,
                deployed=self._deployed_config(name),
            )
        except Exception as exc:
            self._load_failed(name, "pricing with the load", exc)
            return None
        self._load_notes[name] = note
        return evidence

    def _class_names(self) -> list[str]:
        names = {c.name for c in self.config.classes}
        names.update(self._seen)
        names.update(self.estimator.classes())
        return sorted(names)

    def _evidence(self, name: str, now: float) -> Evidence:
        estimate = self.estimator.estimate(name, now=now)
        load = self._load_evidence(name, estimate, now)
        return Evidence(
            name=name,
            estimate=estimate,
            now=now,
            last_seen=self._seen.get(name),
            observed_k=self._observed_k.get(name),
            gate_state=self.gate.states.get(name, HysteresisState()),
            sources_answered=any(s.last_success == now for s in self._sources.values()),
            declared=self.config.class_settings(name) is not None,
            drifting=self._drift_suspected.get(name, False),
            schedule_off=name in self._records.schedule_off,
            restarted_at=tuple(
                self._restarted.get((name, key), float("-inf"))
                for key in self._series_now.get(name, ())
            ),
            load=load,
            load_error=self._load_errors.get(name, ""),
        )

    def _rules(self, name: str) -> DecisionRules:
        return DecisionRules(
            policy=self._policy(name),
            hysteresis=self.gate.config,
            stale_after=self.config.controller.stale_after,
        )

    def _decide(self, name: str, now: float) -> ClassStatus:
        ev = self._evidence(name, now)
        decision = decide(ev, self._rules(name))
        self.gate.states[name] = decision.after
        if decision.act:
            self._actuate(name, decision.recommendation, decision.before, now)
        status = self._status(ev, decision)
        unmatched = self._unmatched(name, ev)
        if unmatched:
            status = dataclasses.replace(
                status, reason=f"{unmatched}; {status.reason}", notes=(unmatched, *status.notes)
            )
        return status

    def _unmatched(self, name: str, ev: Evidence) -> str:
        """A warning for a declared class whose ``match`` matched no series yet, while the
        sources answer (an engine known to run k = 0 exports no spec counters: no warning)."""
        settings = self.config.class_settings(name)
        if (
            settings is None
            or ev.last_seen is not None
            or not ev.sources_answered
            or ev.gate_state.current_k == 0
        ):
            return ""
        selector = settings.match or f'{{model_name="{name}"}}'
        text = (
            f"match {selector} matches no series the sources return; check [[classes]] "
            "match against the engines' labels"
        )
        if name not in self._unmatched_warned:
            self._unmatched_warned.add(name)
            log.warning("class %s: %s", name, text)
        return text

    def _status(self, ev: Evidence, decision: Decision) -> ClassStatus:
        name, estimate, rec = ev.name, ev.estimate, decision.recommendation
        deployed = decision.deployed
        after = self.gate.states.get(name, HysteresisState())
        actuation, actuation_error = self._records.outcome.get(name, ("", ""))
        settings = self.config.class_settings(name)
        surv = estimate.survival
        return ClassStatus(
            name=name,
            declared=ev.declared,
            cost=settings.cost if settings else self._policy(name).cost,
            deployed_k=after.current_k if after.current_k is not None else deployed,
            # with no evidence and no known deployed k there is nothing to recommend
            recommended_k=None if deployed is None and not estimate.ok else rec.recommended_k,
            optimal_k=rec.optimal_k if estimate.ok else None,
            alpha=estimate.alpha,
            alpha_low=estimate.alpha_low,
            alpha_high=estimate.alpha_high,
            method=estimate.method,
            drafts=estimate.drafts,
            mean_acceptance_length=estimate.mean_acceptance_length,
            survival=tuple(p.value for p in surv),
            survival_low=tuple(p.low for p in surv),
            survival_high=tuple(p.high for p in surv),
            predicted_speedup_deployed=rec.predicted_speedup_current,
            predicted_speedup_recommended=rec.predicted_speedup_recommended,
            paying_off=(
                None
                if rec.predicted_speedup_current is None or deployed in (None, 0)
                else rec.predicted_speedup_current > 1.0
            ),
            fit_ok=estimate.fit_ok if estimate.ok else None,
            drift=self._drifting.get(name, False),
            stale=decision.stale,
            last_data_at=ev.last_seen,
            data_age=None if ev.last_seen is None else ev.now - ev.last_seen,
            reason=decision.reason,
            change_allowed=rec.change_allowed,
            hold_reason=decision.hold,
            last_change_at=None if after.proposed else after.last_change,
            changes=self._records.changes[name],
            proposals=self._records.proposals[name],
            off_by_specwise=self._records.off_by_specwise(name, after.current_k),
            series_labels=self._series.of(name),
            last_proposal_at=self._records.last_proposal.get(name),
            actuation=actuation,
            actuation_error=actuation_error,
            speculative_config=self._speculative_config(name, rec) if rec.recommended_k else None,
            schedule=tuple(rec.schedule or ()),
            notes=rec.notes,
            load=self._load_block(ev, rec),
            deployed_schedule=tuple(after.current_schedule or ()) if after.current_k else (),
        )

    def _load_block(self, ev: Evidence, rec: Recommendation) -> dict[str, Any] | None:
        """The ``load`` block of the status (a failure to render it is a load failure)."""
        try:
            return load_status(
                evidence=ev.load,
                recommendation=rec.load,
                note=self._load_notes.get(ev.name, ""),
                error=ev.load_error,
                batches=None if ev.load is not None else self.load.batches(ev.name, ev.now),
                deployed_k=ev.gate_state.current_k,
            )
        except Exception as exc:
            self._load_failed(ev.name, "rendering the load status", exc)
            return {"load_aware": False, "note": "", "error": self._load_errors[ev.name]}

    # ----------------------------------------------------------------------------- tick
    def _ingest(self, snapshots: Sequence[Snapshot], t: float) -> None:
        raw = self._deltas(snapshots, t)
        # Load-only deltas (engines without speculation, spec_families=False) carry no
        # acceptance evidence: they must not reach the estimator, mark a class seen or set its
        # observed k (k = 0 there). Their baselines are still kept in self._last by _deltas.
        # They feed the class's load window as plain steps (T(0, B) at the same batch sizes).
        self._load_deltas = [d for d in raw if not d.spec_families]
        raw = [d for d in raw if d.spec_families]
        for delta in sum_by_class(self._load_deltas, self.classes):
            self._add_load(delta.labels.get(CLASS_LABEL, ""), delta)
        self._series.note(raw, lambda labels: self.classes.classify(labels)[CLASS_LABEL])
        self._note_restarts(raw, t)
        for delta in sum_by_class(raw, self.classes):
            name = delta.labels.get(CLASS_LABEL, "")
            self._add_load(name, delta)
            self._seen[name] = t
            if delta.k is not None:
                self._observed_k[name] = delta.k
            self._records.check_schedule_off(name, delta, min_dwell=self.config.policy.min_dwell)
            if delta.draft_tokens <= 0 and not delta.drafts:
                continue
            try:
                status = self.drift.update(name, delta)
                if status.alarm:
                    # a new regime: forget the old one, so the estimate (and k) follow now
                    # instead of after a whole window of mixed evidence
                    self.estimator.reset(name)
                    log.warning("class %s: %s; estimating afresh", name, status.reason)
                self.estimator.update(name, delta)
            except DataError as exc:  # inconsistent sums: skip this tick's delta, keep going
                self._track("data").fail(t, exc)
                log.warning("class %s: %s", name, exc)
                continue
            self._drifting[name] = status.drifting
            self._drift_suspected[name] = self._suspected(status)

    def _add_load(self, name: str, delta: CounterDelta) -> None:
        """Every class delta feeds the class's load window: with speculation at its k, and
        load-only ones (engines of the class running without it) as plain steps, k = 0."""
        try:
            if delta.spec_families:
                deployed = self._deployed_config(name)
                if name in self._records.schedule_off:  # off through a k = 0 schedule entry
                    deployed = SpecConfig(0)
                elif deployed is not None and deployed.k == 0:
                    deployed = None  # spec counters again: someone turned it on; k unknown
                self.load.add(name, delta, delta.k, deployed=deployed)
            else:
                self.load.add(name, delta, 0)
        except Exception as exc:
            self._load_failed(name, "adding to the load window", exc)

    def _suspected(self, status: DriftStatus) -> bool:
        """alpha has moved past the drift thresholds but not yet for ``persist_ticks``: the
        rolling window mixes the old and the new regime. Once the alarm is declared the
        estimator restarts on the new regime alone, so the gate need not wait any longer."""
        cfg = self.drift.config
        ref, rec = status.alpha_reference, status.alpha_recent
        return (
            not status.alarm
            and status.z is not None
            and ref is not None
            and rec is not None
            and abs(status.z) > cfg.z_threshold
            and abs(rec - ref) > cfg.min_shift
        )

    def _note_restarts(self, raw: Sequence[CounterDelta], t: float) -> None:
        """Which series each class has on this tick, and when each last restarted."""
        self._series_now = {}
        for delta in raw:
            labels = delta.labels
            name = (
                labels.get(CLASS_LABEL, "")
                if delta.classified
                else self.classes.classify(labels)[CLASS_LABEL]
            )
            key = labels_key(labels)
            self._series_now.setdefault(name, []).append(key)
            if delta.restarts:
                self._restarted[(name, key)] = t

    def _internal_error(self, where: str, exc: BaseException) -> None:
        """A failure no layer mapped (a bug, a library error): counted, exported, logged."""
        self._errors["internal"] += 1
        self._last_error = f"{where}: {type(exc).__name__}: {exc}"
        log.error("%s failed (%s: %s); holding the last k", where, type(exc).__name__, exc)
        log.debug("traceback of the failure", exc_info=exc)

    def step(self, now: float | None = None) -> ControllerState:
        """One tick; never raises: any failure is recorded and exported, and k is held."""
        t = self.clock() if now is None else now
        self._load_errors = {}
        try:
            if isinstance(self.actuator, PollingActuator):
                self._actuations_finished(self.actuator.poll(t))
        except Exception as exc:
            self._internal_error("reading finished actuations", exc)
        try:
            self._ingest(self._collect(t), t)
        except Exception as exc:  # the tick goes on: decisions on what the estimator holds
            self._internal_error("collecting counters", exc)
        previous = {c.name: c for c in self.state().classes}
        statuses: list[ClassStatus] = []
        for name in self._class_names():
            try:
                statuses.append(self._decide(name, t))
            except Exception as exc:
                self._internal_error(f"deciding class {name!r}", exc)
                if name in previous:
                    statuses.append(previous[name])
        try:
            self._persist_load(t)
        except Exception as exc:
            self._internal_error("saving the load windows", exc)
        self._ticks += 1
        state = ControllerState(
            started_at=self._started,
            updated_at=t,
            ticks=self._ticks,
            classes=tuple(statuses),
            sources=tuple(s.status() for s in self._sources.values()),
            actuator=self.actuator.kind,
            errors=dict(self._errors),
            last_error=self._last_error,
        )
        with self._lock:
            self._state = state
        if self.alert_sink is not None:
            try:
                self.alert_sink(state, t)
            except SpecwiseError as exc:
                log.error("alert delivery failed: %s", exc)
            except Exception as exc:
                self._internal_error("alert delivery", exc)
        return state

    def run(
        self, stop: threading.Event, *, on_tick: Callable[[ControllerState], None] | None = None
    ) -> None:
        """Tick every ``[controller] interval`` until ``stop`` is set (SIGTERM/SIGINT set it)."""
        interval = self.config.controller.interval
        while not stop.is_set():
            started = time.monotonic()
            try:
                state = self.step()
            except Exception:  # the loop must survive a bug in one tick; it is logged in full
                log.exception("controller tick failed; holding the last k and retrying")
            else:
                if on_tick is not None:
                    on_tick(state)
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
        self.close()
