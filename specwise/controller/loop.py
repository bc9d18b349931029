"""The controller: one testable ``step(now)`` and a loop around it.

Each tick: collect -> deltas -> estimate -> recommend -> export -> actuate -> alert.
Nothing a source or an actuator does can stop the loop: a failing source makes its classes
stale (no actuation on stale data, the last safe k is held), bad counters are skipped with
a recorded error, a failing actuator is reported and retried on a later tick.
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
from specwise.collectors.snapshot import CounterDelta, Snapshot, SnapshotSource
from specwise.config import SpecwiseConfig
from specwise.controller.actuators import (
    ActuationResult,
    Actuator,
    PollingActuator,
    speculative_config_for,
    write_atomically,
)
from specwise.controller.state import (
    ClassStatus,
    ControllerState,
    PersistedClass,
    SourceStatus,
    load_persisted,
    persisted_json,
)
from specwise.errors import ActuatorError, DataError, ParseError, SourceError, SpecwiseError
from specwise.estimation.drift import DriftConfig, DriftDetector
from specwise.estimation.estimator import Estimate
from specwise.estimation.rolling import RollingEstimator
from specwise.estimation.settings import estimator_config
from specwise.policies.hysteresis import HysteresisConfig, HysteresisGate, HysteresisState
from specwise.policies.settings import policy_config
from specwise.policies.speedup_policy import PolicyConfig, Recommendation, recommend

__all__ = ["Controller", "class_config_from"]

log = logging.getLogger("specwise.controller")
AlertSink = Callable[[ControllerState, float], None]


def class_config_from(config: SpecwiseConfig) -> ClassConfig:
    """Workload classes from config (``resolve_classes``, the resolver every command uses)."""
    return resolve_classes(config)


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, ParseError):
        return "parse"
    if isinstance(exc, DataError):
        return "data"
    if isinstance(exc, SourceError) and exc.status_code is not None:
        return "http"
    return "unreachable"


def _outcome(result: ActuationResult) -> str:
    """What an actuation did, with the command's exit status and last line when it ran one."""
    if result.exit_status is None:
        return result.detail
    line = result.last_line
    return f"{result.detail} (exit {result.exit_status}){': ' + line if line else ''}"


def _held_because(rec: Recommendation) -> str:
    """The hysteresis gate's reason for holding k, when it held a different recommendation."""
    if rec.change_allowed or rec.current_k == rec.recommended_k:
        return ""
    _, sep, why = rec.reason.rpartition("; hold ")
    return f"hold {why}" if sep else ""


class _SourceTrack:
    def __init__(self, name: str) -> None:
        self.name = name
        self.last_attempt: float | None = None
        self.last_success: float | None = None
        self.errors: Counter[str] = Counter()
        self.last_error = ""

    def ok(self, now: float) -> None:
        self.last_attempt = self.last_success = now

    def fail(self, now: float, exc: BaseException) -> None:
        self.last_attempt = now
        self.errors[_error_kind(exc)] += 1
        self.last_error = str(exc)

    def status(self) -> SourceStatus:
        return SourceStatus(
            self.name, self.last_attempt, self.last_success, dict(self.errors), self.last_error
        )


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
        self._sources: dict[str, _SourceTrack] = {}
        self._seen: dict[str, float] = {}
        self._observed_k: dict[str, int] = {}
        self._drifting: dict[str, bool] = {}
        self._actuation: dict[str, tuple[str, str]] = {}
        # class -> (gate state before, gate state after) of a run the actuator has in flight
        self._in_flight: dict[str, tuple[HysteresisState, HysteresisState]] = {}
        self._changes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._started = clock()
        self._ticks = 0
        self._state = ControllerState(self._started, None, 0, actuator=actuator.kind)
        self.state_path = state_path or (
            Path(config.controller.state_file) if config.controller.state_file else None
        )
        for c in config.classes:
            if c.k is not None:
                self.gate.states[c.name] = HysteresisState(current_k=c.k)
        if self.state_path is not None:
            for name, p in load_persisted(self.state_path).items():
                last = max(p.change_times) if p.change_times else None
                self.gate.states[name] = HysteresisState(p.deployed_k, last, p.change_times)

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
    def _track(self, name: str) -> _SourceTrack:
        return self._sources.setdefault(name, _SourceTrack(name))

    def _collect(self, now: float) -> list[Snapshot]:
        scrape = getattr(self.source, "scrape", None)
        if callable(scrape):  # direct scrape: one status per target
            snaps: list[Snapshot] = []
            for result in scrape(now):
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
        except SpecwiseError as exc:
            track.fail(now, exc)
            log.warning("source %s: %s", name, exc)
            return []
        track.ok(now)
        return got

    def _deltas(self, snapshots: Sequence[Snapshot], now: float) -> list[CounterDelta]:
        out: list[CounterDelta] = []
        for snap in snapshots:
            prev = self._last.get(snap.key)
            if prev is None:
                # first sight (controller start, new engine): the counters since the
                # engine started are evidence nobody counted yet
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
        settings = self.config.class_settings(name)
        template: Mapping[str, Any] = settings.speculative_config if settings else {}
        if rec.recommended_k == 0 and rec.off_mode == "schedule":
            keep = self._observed_k.get(name) or self.config.policy.k_max
            spec = speculative_config_for(template, keep) or {}
            spec["num_speculative_tokens_per_batch_size"] = [[1, 1 << 20, 0]]
            return spec
        if rec.schedule is not None and rec.recommended_k > 0:
            spec = speculative_config_for(template, max(e[2] for e in rec.schedule)) or {}
            spec["num_speculative_tokens_per_batch_size"] = [list(e) for e in rec.schedule]
            return spec
        return speculative_config_for(template, rec.recommended_k)

    def _actuate(self, name: str, rec: Recommendation, before: HysteresisState, now: float) -> None:
        spec = self._speculative_config(name, rec)
        try:
            result: ActuationResult = self.actuator.apply(
                name, rec.recommended_k, speculative_config=spec, reason=rec.reason, now=now
            )
        except ActuatorError as exc:
            self.gate.states[name] = before  # not applied: retry on a later tick
            self._actuation[name] = ("", str(exc))
            log.error("actuator failed for class %s: %s", name, exc)
            return
        if result.pending:
            # started in the background: the change counts for dwell and budget from now;
            # its outcome arrives through poll() on a later tick (_actuations_finished)
            self._in_flight[name] = (before, self.gate.states.get(name, HysteresisState()))
            self._actuation[name] = (result.detail, "")
            log.info(
                "class %s: k -> %d (%s): %s", name, rec.recommended_k, result.detail, rec.reason
            )
            self._persist()
            return
        if not result.applied and self.actuator.kind != "dry-run":
            self.gate.states[name] = before  # rate-limited or in flight: try again later
            # keep the last failure visible while the retry waits
            self._actuation[name] = (result.detail, self._actuation.get(name, ("", ""))[1])
            log.info("class %s: k = %d not applied: %s", name, rec.recommended_k, result.detail)
            return
        if not result.applied:  # dry-run: proposed, not deployed; re-proposed after the dwell
            after = self.gate.states.get(name, HysteresisState())
            self.gate.states[name] = dataclasses.replace(after, current_k=before.current_k)
        self._changes[name] += 1
        self._actuation[name] = (_outcome(result), "")
        log.info("class %s: k -> %d (%s): %s", name, rec.recommended_k, result.detail, rec.reason)
        self._persist()

    def _actuations_finished(self, results: Sequence[ActuationResult]) -> None:
        """Record background runs that finished: a success is a change; a failure restores
        the gate state from before the run (unless something moved it since) for a retry."""
        for result in results:
            name = result.class_name
            before, started = self._in_flight.pop(name, (None, None))
            if result.applied:
                self._changes[name] += 1
                self._actuation[name] = (_outcome(result), "")
                log.info("class %s: k = %d applied: %s", name, result.k, _outcome(result))
                continue
            if before is not None and self.gate.states.get(name) == started:
                self.gate.states[name] = before  # not applied: retry on a later tick
            self._actuation[name] = ("", result.error or result.detail)
            log.error("actuator failed for class %s: %s", name, result.error or result.detail)
        if results:
            self._persist()

    def close(self, timeout: float | None = None) -> None:
        """Stop: wait up to ``timeout`` s (None: the actuator's own bound) for runs in
        flight, kill what is left, record the outcomes. Safe to call more than once."""
        if isinstance(self.actuator, PollingActuator):
            self._actuations_finished(self.actuator.close(timeout))

    def _persist(self) -> None:
        if self.state_path is None:
            return
        data = {
            name: PersistedClass(st.current_k, st.changes) for name, st in self.gate.states.items()
        }
        try:
            write_atomically(self.state_path, persisted_json(data))
        except OSError as exc:
            log.error("cannot write state file %s: %s", self.state_path, exc)

    def _class_names(self) -> list[str]:
        names = {c.name for c in self.config.classes}
        names.update(self._seen)
        names.update(self.estimator.classes())
        return sorted(names)

    def _decide(self, name: str, now: float) -> ClassStatus:
        estimate: Estimate = self.estimator.estimate(name, now=now)
        seen = self._seen.get(name)
        stale = seen is None or now - seen > self.config.controller.stale_after
        gate_state = self.gate.states.get(name, HysteresisState())
        # the counters show the deployed k only while they arrive: after a restart without
        # speculation the spec families vanish and the last k seen is history, not the truth
        observed = self._observed_k.get(name) if seen == now else None
        if (
            observed is not None
            and not stale
            and observed != gate_state.current_k
            and (
                gate_state.last_change is None
                or now - gate_state.last_change > self.config.policy.min_dwell
            )
        ):
            # someone else changed k, or our change took effect: the counters are the truth
            gate_state = dataclasses.replace(gate_state, current_k=observed)
            self.gate.states[name] = gate_state
        deployed = gate_state.current_k if gate_state.current_k is not None else observed
        if stale and deployed == 0 and any(s.last_success == now for s in self._sources.values()):
            stale = False  # off on purpose: the sources answer, they just carry no spec counters
        rec = recommend(estimate, config=self._policy(name), current_k=deployed)
        before = self.gate.states.get(name, HysteresisState())
        rec = self.gate(rec, now=now)
        hold = ""
        if rec.change_allowed and stale:
            self.gate.states[name] = before
            hold = "data is stale: holding the last safe k until the source answers"
            rec = dataclasses.replace(rec, change_allowed=False, reason=f"{rec.reason}; {hold}")
        if rec.change_allowed:
            self._actuate(name, rec, before, now)
        after = self.gate.states.get(name, HysteresisState())
        actuation, actuation_error = self._actuation.get(name, ("", ""))
        settings = self.config.class_settings(name)
        reason = rec.reason
        if deployed == 0 and estimate.ok and rec.recommended_k == 0:
            reason = f"speculation is off (k = 0), as the last evidence says: {reason}"
        elif deployed == 0 and not estimate.ok:
            reason = (
                "speculation is off (k = 0): vLLM exports no acceptance counters, so there is "
                "nothing to re-check; re-enable on a canary to measure alpha again"
            )
        elif stale and seen is not None and not hold:
            reason = f"stale: no new counters for {now - (seen or now):.0f} s; {reason}"
        surv = estimate.survival
        return ClassStatus(
            name=name,
            cost=settings.cost if settings else self._policy(name).cost,
            deployed_k=after.current_k if after.current_k is not None else deployed,
            # with no evidence and no known deployed k there is nothing to recommend
            recommended_k=None if deployed is None and not estimate.ok else rec.recommended_k,
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
            stale=stale,
            last_data_at=seen,
            data_age=None if seen is None else now - seen,
            reason=reason,
            change_allowed=rec.change_allowed,
            hold_reason=hold or _held_because(rec),
            last_change_at=after.last_change,
            changes=self._changes[name],
            actuation=actuation,
            actuation_error=actuation_error,
            speculative_config=self._speculative_config(name, rec) if rec.recommended_k else None,
            schedule=tuple(rec.schedule or ()),
            notes=rec.notes,
        )

    # ----------------------------------------------------------------------------- tick
    def step(self, now: float | None = None) -> ControllerState:
        """One tick; never raises for a source, data or actuator failure."""
        t = self.clock() if now is None else now
        if isinstance(self.actuator, PollingActuator):
            self._actuations_finished(self.actuator.poll(t))
        snapshots = self._collect(t)
        for delta in sum_by_class(self._deltas(snapshots, t), self.classes):
            name = delta.labels.get(CLASS_LABEL, "")
            self._seen[name] = t
            if delta.k is not None:
                self._observed_k[name] = delta.k
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
        statuses = tuple(self._decide(name, t) for name in self._class_names())
        self._ticks += 1
        state = ControllerState(
            started_at=self._started,
            updated_at=t,
            ticks=self._ticks,
            classes=statuses,
            sources=tuple(s.status() for s in self._sources.values()),
            actuator=self.actuator.kind,
        )
        with self._lock:
            self._state = state
        if self.alert_sink is not None:
            try:
                self.alert_sink(state, t)
            except SpecwiseError as exc:
                log.error("alert delivery failed: %s", exc)
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
