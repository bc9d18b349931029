"""A fault soak: the controller against a served fleet that misbehaves at random.

The fleet is the simulated one (:mod:`specwise.sim.fleet`), served over real HTTP on
127.0.0.1 (one port per engine, as one vLLM server per replica), and read by the real
:class:`~specwise.collectors.scrape.ScrapeSource`. Time is simulated: every tick advances the
clock by the controller's interval, so thousands of ticks take seconds. At random the soak
injects, per tick:

- into the fleet: counter resets (an engine crashes and restarts at the same k), k changes
  made by someone else, classes whose targets vanish for a while and return;
- into the HTTP answers: 5xx, timeouts (the answer arrives after the source's timeout),
  garbage bodies, NaN counters, accepted tokens above draft tokens;
- into the actuator: slow deploys (the k lands several ticks later) and failing ones.

and checks, after every tick, the invariants a platform team relies on:

1. no actuation of an undeclared class, nor of a class the controller shows as stale;
2. never two actuations of one class in flight;
3. actuations per class within ``[policy] max_changes_per_hour`` in any hour;
4. no exception escapes the loop;
5. the exported state matches the fleet's truth within one tick of the evidence: when a
   declared class's engines have all served clean pages at one k > 0 for the last two ticks,
   ``specwise_deployed_k`` is that k; when a class's targets have been gone for longer than
   ``stale_after`` plus a tick, ``specwise_stale`` is 1 (for a class specwise itself turned
   off, which exports no counters by design, its targets' ``specwise_source_up`` is 0).

:func:`run_soak` returns the counts (ticks, faults by kind, actuations) and every violation.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import numpy as np
import requests

from specwise.collectors.scrape import ScrapeSource
from specwise.config import SpecwiseConfig, parse_config
from specwise.controller.actuators import ActuationResult
from specwise.controller.exporter import controller_registry
from specwise.controller.loop import Controller, class_config_from
from specwise.errors import ActuatorError
from specwise.sim.fleet import SimFleet, _Handler
from specwise.sim.scenarios import HOUR, ClassScenario, Scenario, const, iid

__all__ = [
    "HTTP_FAULTS",
    "SoakResult",
    "run_soak",
    "soak_config",
    "soak_scenario",
]

T0 = 1_800_000_000.0
HTTP_FAULTS = ("http_5xx", "timeout", "garbage", "nan", "accepted_gt_drafted")
FLEET_FAULTS = ("counter_reset", "foreign_k", "vanish")
ACTUATOR_FAULTS = ("slow_actuator", "failing_actuator")
UNDECLARED = "stray"


def soak_scenario() -> Scenario:
    """Three declared classes (one winning, one middling, one losing) and an undeclared one."""
    return Scenario(
        "soak",
        "Faults at random against code (0.82), chat (0.6), summarize (0.3 at cost 0.4) and an "
        "undeclared stray class.",
        1000 * HOUR,
        (
            ClassScenario("code", iid(const(0.82)), cost=0.05, initial_k=3, replicas=2),
            ClassScenario("chat", iid(const(0.6)), cost=0.05, initial_k=5, replicas=2),
            ClassScenario("summarize", iid(const(0.3)), cost=0.4, initial_k=3),
            ClassScenario(UNDECLARED, iid(const(0.5)), cost=0.4, initial_k=2),
        ),
    )


def soak_config(interval: float = 30.0, **overrides: Any) -> SpecwiseConfig:
    """Controller settings for the soak: durations in simulated seconds."""
    data: dict[str, Any] = {
        "controller": {"interval": f"{interval:g}s", "stale_after": "5m"},
        "source": {"urls": ["http://127.0.0.1:1/metrics"], "timeout": "1s"},
        "estimator": {"window": "10m", "min_drafts": 300},
        "policy": {"k_max": 8, "min_gain": 0.03, "min_dwell": "20m", "max_changes_per_hour": 2},
        "classes": [
            {
                "name": c.name,
                "cost": c.cost,
                "k": c.initial_k,
                "speculative_config": {"method": "x"},
            }
            for c in soak_scenario().classes
            if c.name != UNDECLARED
        ],
    }
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return parse_config(data)


@dataclass
class SoakResult:
    ticks: int
    simulated_hours: float
    faults: Counter[str] = field(default_factory=Counter)
    actuations: Counter[str] = field(default_factory=Counter)
    actuator_failures: int = 0
    violations: list[str] = field(default_factory=list)
    checked_deployed: int = 0
    checked_stale: int = 0


class _Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


_ACCEPTED = re.compile(r"^(vllm:spec_decode_num_accepted_tokens_total\{[^}]*\}) (\S+)$", re.M)
_COUNTER = re.compile(r"^(vllm:spec_decode_\w+_total(?:\{[^}]*\})?) (\S+)$", re.M)


class _Faults:
    """The faults in force this tick, per engine index; read by the HTTP handler."""

    def __init__(self, timeout_delay: float) -> None:
        self.lock = threading.Lock()
        self.http: dict[int, str] = {}
        self.gone: set[int] = set()
        self.timeout_delay = timeout_delay

    def transform(self, index: int, body: bytes | None) -> tuple[int, bytes]:
        with self.lock:
            fault = self.http.get(index)
            gone = index in self.gone
        if gone:
            return 404, b"Not Found\n"
        if body is None:
            return 503, b"engine restarting\n"
        if fault == "http_5xx":
            return 500, b"internal server error\n"
        if fault == "timeout":
            time.sleep(self.timeout_delay)
            return 200, body
        if fault == "garbage":
            return 200, bytes(range(256)) * 4
        text = body.decode()
        if fault == "nan":
            text = _COUNTER.sub(lambda m: f"{m.group(1)} NaN", text)
        elif fault == "accepted_gt_drafted":
            text = _ACCEPTED.sub(lambda m: f"{m.group(1)} {float(m.group(2)) * 10 + 1e6}", text)
        return 200, text.encode()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that timed out and hung up is an injected fault, not news


def _serve(fleet: SimFleet, faults: _Faults) -> list[_QuietServer]:
    servers = []
    for i in range(len(fleet.engines)):

        def do_get(handler: _Handler, index: int = i) -> None:
            if handler.path.split("?")[0] != "/metrics":
                handler._send(404, b"Not Found\n", "text/plain")
                return
            status, body = faults.transform(index, fleet.render(index))
            handler._send(status, body, "text/plain; version=0.0.4; charset=utf-8")

        handler = type("SoakHandler", (_Handler,), {"fleet": fleet, "index": i, "do_GET": do_get})
        server = _QuietServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    return servers


class _SoakActuator:
    """Applies k to the fleet, sometimes slowly (lands later) or not at all (fails)."""

    kind = "soak"

    def __init__(self, fleet: SimFleet, clock: _Clock, rng: np.random.Generator) -> None:
        self.fleet = fleet
        self.clock = clock
        self.rng = rng
        self.p_slow = 0.0
        self.p_fail = 0.0
        self.pending: dict[str, tuple[float, int]] = {}
        self.in_flight: dict[str, int] = defaultdict(int)
        self.attempts: list[tuple[float, str, int]] = []  # every call, failed ones too
        self.calls: list[tuple[float, str, int]] = []  # the deploys that went ahead
        self.failures = 0
        self.faults: Counter[str] = Counter()
        self.overlaps: list[str] = []

    def apply(
        self,
        class_name: str,
        k: int,
        *,
        speculative_config: Mapping[str, Any] | None,
        reason: str,
        now: float,
    ) -> ActuationResult:
        self.attempts.append((now, class_name, k))
        if self.in_flight[class_name] or class_name in self.pending:
            self.overlaps.append(f"class {class_name}: k = {k} applied while a deploy is in flight")
        self.in_flight[class_name] += 1
        try:
            if self.rng.random() < self.p_fail:
                self.failures += 1
                self.faults["failing_actuator"] += 1
                raise ActuatorError(f"soak: the deploy of {class_name} failed (injected)")
            if self.rng.random() < self.p_slow:
                self.faults["slow_actuator"] += 1
                self.pending[class_name] = (now + float(self.rng.uniform(60, 300)), k)
                self.calls.append((now, class_name, k))
                return ActuationResult(class_name, k, True, now, "soak: deploy started (slow)")
            self.fleet.set_k(class_name, k, now)
            self.calls.append((now, class_name, k))
            return ActuationResult(class_name, k, True, now, "soak: deployed")
        finally:
            self.in_flight[class_name] -= 1

    def land(self, now: float) -> None:
        for name, (at, k) in list(self.pending.items()):
            if at <= now:
                self.fleet.set_k(name, k, at)
                del self.pending[name]


def _sample(registry: Any, name: str, cls: str) -> float | None:
    value = registry.get_sample_value(name, {"class": cls})
    return None if value is None or math.isnan(value) else float(value)


def run_soak(
    *,
    ticks: int = 2000,
    seed: int = 0,
    interval: float = 30.0,
    fault_rate: float = 0.08,
    config: SpecwiseConfig | None = None,
) -> SoakResult:
    """Run ``ticks`` controller ticks against the faulty served fleet; never raises for a
    violation (they are returned), only for a broken harness."""
    rng = np.random.default_rng(seed)
    quiet = [logging.getLogger(n) for n in ("specwise", "urllib3")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.CRITICAL)
    clock = _Clock()
    scenario = soak_scenario()
    fleet = SimFleet(scenario, clock=clock, seed=seed, restart_delay=90.0)
    cfg = config or soak_config(interval)
    faults = _Faults(timeout_delay=cfg.source.timeout + 0.2)
    servers = _serve(fleet, faults)
    urls = [f"http://127.0.0.1:{s.server_address[1]}/metrics" for s in servers]
    session = requests.Session()
    source = ScrapeSource(urls, session=session, timeout=cfg.source.timeout)
    actuator = _SoakActuator(fleet, clock, np.random.default_rng(seed + 1))
    # deploys are rare (a few a day per class), so each one is likelier to misbehave
    actuator.p_slow = min(0.3, 3 * fault_rate)
    actuator.p_fail = min(0.3, 3 * fault_rate)
    controller = Controller(
        cfg, source=source, actuator=actuator, clock=clock, classes=class_config_from(cfg)
    )
    registry = controller_registry(controller.state)
    declared = {c.name for c in cfg.classes}
    max_per_hour = cfg.policy.max_changes_per_hour
    result = SoakResult(ticks=ticks, simulated_hours=ticks * interval / 3600.0)
    engines_of = {
        name: [i for i, e in enumerate(fleet.engines) if e.spec.name == name]
        for name in sorted({e.spec.name for e in fleet.engines})
    }
    gone_until: dict[str, float] = {}
    gone_since: dict[str, float] = {}
    clean_k: dict[str, list[int | None]] = defaultdict(list)
    try:
        for _ in range(ticks):
            clock.t += interval
            now = clock.t
            actuator.land(now)
            # fleet faults
            for name, idx in engines_of.items():
                if gone_until.get(name, 0.0) <= now and name in gone_since:
                    del gone_since[name]
                if rng.random() < fault_rate / 10:
                    result.faults["counter_reset"] += 1
                    e = fleet.engines[int(rng.choice(idx))]
                    e.advance(now)
                    e._restart_now(now, e.pending_k if e.pending_k is not None else e.k)
                if rng.random() < fault_rate / 20:
                    result.faults["foreign_k"] += 1
                    fleet.set_k(name, int(rng.integers(0, 7)), now)
                if name not in gone_since and rng.random() < fault_rate / 20:
                    result.faults["vanish"] += 1
                    gone_since[name] = now
                    gone_until[name] = now + float(rng.uniform(60, 900))
            # http faults
            with faults.lock:
                faults.gone = {i for n in gone_since for i in engines_of[n]}
                faults.http = {}
                for i in range(len(fleet.engines)):
                    if rng.random() < fault_rate:
                        kind = str(rng.choice(HTTP_FAULTS, p=[0.3, 0.01, 0.23, 0.23, 0.23]))
                        faults.http[i] = kind
                        result.faults[kind] += 1
            http_now = dict(faults.http)
            before, attempts_before = len(actuator.calls), len(actuator.attempts)
            try:
                state = controller.step()
            except Exception as exc:  # invariant 4: nothing escapes the loop
                result.violations.append(f"t={now - T0:.0f}: step raised {exc!r}")
                continue
            by_name = {c.name: c for c in state.classes}
            # invariants 1-3 (1 on every attempt, 3 on the deploys that went ahead)
            for t, name, k in actuator.attempts[attempts_before:]:
                if name not in declared:
                    result.violations.append(f"t={t - T0:.0f}: undeclared class {name!r} got k={k}")
                status = by_name.get(name)
                if status is not None and status.stale:
                    result.violations.append(f"t={t - T0:.0f}: stale class {name!r} got k={k}")
            for t, name, _k in actuator.calls[before:]:
                result.actuations[name] += 1
                recent = [c for c in actuator.calls if c[1] == name and 0 <= t - c[0] < 3600.0]
                if len(recent) > max_per_hour:
                    result.violations.append(
                        f"t={t - T0:.0f}: {name!r} actuated {len(recent)} times within an hour"
                    )
            result.violations.extend(actuator.overlaps)
            actuator.overlaps.clear()
            # invariant 5: exported state vs the fleet's truth
            for name in declared:
                idx = engines_of[name]
                es = [fleet.engines[i] for i in idx]
                clean = (
                    name not in gone_since
                    and all(i not in http_now for i in idx)
                    and all(e.is_up(now) and e.pending_k is None for e in es)
                    and len({e.k for e in es}) == 1
                    and name not in actuator.pending
                )
                history = clean_k[name]
                history.append(es[0].k if clean else None)
                del history[:-3]
                if len(history) == 3 and history[0] == history[1] == history[2]:
                    truth = history[-1]
                    if truth is not None and truth > 0:
                        result.checked_deployed += 1
                        exported = _sample(registry, "specwise_deployed_k", name)
                        if exported != truth:
                            result.violations.append(
                                f"t={now - T0:.0f}: {name!r} exports deployed_k {exported}, "
                                f"the fleet runs k={truth}"
                            )
                since = gone_since.get(name)
                if since is not None and now - since > cfg.controller.stale_after + interval:
                    result.checked_stale += 1
                    status = by_name.get(name)
                    if status is not None and status.off_by_specwise:
                        # off on purpose: no counters are expected, so the class is not stale;
                        # its vanished targets must show as down instead
                        down = [
                            registry.get_sample_value("specwise_source_up", {"source": urls[i]})
                            for i in idx
                        ]
                        if any(v != 0.0 for v in down):
                            result.violations.append(
                                f"t={now - T0:.0f}: {name!r} (off) gone for {now - since:.0f}s, "
                                f"its targets not down: {down}"
                            )
                    elif _sample(registry, "specwise_stale", name) != 1.0:
                        result.violations.append(
                            f"t={now - T0:.0f}: {name!r} gone for {now - since:.0f}s, not stale"
                        )
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        session.close()
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    result.faults.update(actuator.faults)
    result.actuator_failures = actuator.failures
    return result
