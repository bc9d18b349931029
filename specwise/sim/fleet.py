"""A simulated vLLM fleet that serves `/metrics` in vLLM's exact V1 format.

Each replica of each scenario class is one "vLLM server" with one engine: it samples the
spec-decode counters (drafts, draft tokens, accepted, accepted per position) from the
scenario's true survival curve, exposes them with prometheus_client's classic text format
(colons, `_created` gauges, every position present from start-up, as vLLM 0.32 does), and
accepts k changes: a change restarts the engine (it serves nothing for ``restart_delay``
seconds) and resets its counters, exactly like restarting vLLM with a new
``--speculative-config``. k = 0 means restarted without speculation: the spec-decode
families disappear from the page.

Load-varying classes (``ClassScenario.batch``) run the cost side's ground truth
(:mod:`specwise.sim.load_truth`): engines deploy a whole :class:`SpecConfig` (k plus a
``num_speculative_tokens_per_batch_size`` schedule), per-step batch sizes spread around the
scenario's mean, steps take T(k_B, B), and the page carries vLLM 0.32's load and time
families consistent with it: ``vllm:num_requests_running``, ``vllm:iteration_tokens_total``
(a histogram despite its name: one observation per engine step), ``vllm:generation_tokens``,
``vllm:inter_token_latency_seconds`` (one observation per request per step: the step time),
``vllm:request_time_per_output_token_seconds`` and ``vllm:request_decode_time_seconds`` (per
finished request), also at k = 0.

The clock is passed in, so tests and the benchmark drive simulated time directly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from specwise.collectors.snapshot import Snapshot
from specwise.controller.actuators import ActuationResult
from specwise.errors import ConfigError
from specwise.policies.schedule import ScheduleEntry, validate_schedule
from specwise.sim.scenarios import ClassScenario, Scenario
from specwise.step_cost import SpecConfig

__all__ = [
    "EngineStats",
    "FileWatcher",
    "SimActuator",
    "SimEngine",
    "SimFleet",
    "SimServer",
    "SimSource",
    "config_from_speculative",
    "scaled_clock",
    "speculative_config_of",
]

Clock = Callable[[], float]
_SPEC_HELP = {
    "drafts": "Number of spec decoding drafts.",
    "draft_tokens": "Number of draft tokens.",
    "accepted": "Number of accepted tokens.",
    "per_pos": "Accepted tokens per draft position.",
}
#: vLLM 0.32's default histogram buckets (as on its /metrics page)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
TPOT_BUCKETS = ITL_BUCKETS
ITERATION_BUCKETS = tuple(float(x) for x in (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
                                             8192, 16384))  # fmt: skip
DECODE_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                  60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip


def _bucket_index(bounds: tuple[float, ...], values: np.ndarray) -> np.ndarray:
    """Index of the first bucket whose upper bound is >= each value (len(bounds): +Inf)."""
    return np.searchsorted(np.asarray(bounds), values, side="left")


class _Histogram:
    """A cumulative Prometheus histogram: per-bucket counts (not cumulative), sum, count."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = np.zeros(len(bounds) + 1)
        self.sum = 0.0

    @property
    def count(self) -> float:
        return float(self.counts.sum())

    def observe(self, values: np.ndarray, weights: np.ndarray) -> None:
        """``weights[i]`` observations of ``values[i]`` each."""
        np.add.at(self.counts, _bucket_index(self.bounds, values), weights)
        self.sum += float(np.dot(values, weights))

    def buckets(self) -> list[tuple[str, float]]:
        cum = np.cumsum(self.counts)
        out = [(repr(float(b)), float(c)) for b, c in zip(self.bounds, cum[:-1], strict=True)]
        out.append(("+Inf", float(cum[-1])))
        return out


@dataclass
class EngineStats:
    """Ground truth the benchmark scores against (never exported)."""

    target_seconds: float = 0.0  # seconds the engine was asked to serve
    down_seconds: float = 0.0  # seconds lost to restarts
    expected_tokens: float = 0.0  # tokens the deployed k yields, in expectation
    restarts: int = 0  # configuration changes (each a restart)
    crashes: int = 0  # scenario-driven restarts at the same k
    #: restarts that changed only the schedule (the same num_speculative_tokens): band-edge
    #: moves, counted in ``restarts`` too
    schedule_restarts: int = 0
    #: plain decoding's tokens over the same seconds, up or down (load-varying classes)
    plain_tokens: float = 0.0
    #: seconds lost to k flapping at band edges, in expectation (load-varying classes)
    flap_seconds: float = 0.0


@dataclass
class SimEngine:
    """One vLLM engine (one server, data-parallel rank 0) of one class."""

    spec: ClassScenario
    replica: int
    t0: float
    restart_delay: float
    rng: np.random.Generator
    k: int = 0
    last: float = 0.0
    up_at: float = 0.0
    pending_k: int | None = None
    schedule: tuple[ScheduleEntry, ...] | None = None
    pending_schedule: tuple[ScheduleEntry, ...] | None = None
    started_at: float = 0.0
    next_crash: float | None = None
    drafts: float = 0.0
    draft_tokens: float = 0.0
    accepted: float = 0.0
    per_pos: list[float] = field(default_factory=list)
    generation_tokens: float = 0.0
    itl_sum: float = 0.0
    itl_count: float = 0.0
    stats: EngineStats = field(default_factory=EngineStats)
    #: load-varying classes only: the running batch at the last step, and the histograms
    running: float = 0.0
    #: False for a replica served without speculation that the class's configuration
    #: changes leave alone (``ClassScenario.plain_replicas``); not scored
    managed: bool = True
    itl: _Histogram = field(default_factory=lambda: _Histogram(ITL_BUCKETS))
    iteration: _Histogram = field(default_factory=lambda: _Histogram(ITERATION_BUCKETS))
    tpot: _Histogram = field(default_factory=lambda: _Histogram(TPOT_BUCKETS))
    decode: _Histogram = field(default_factory=lambda: _Histogram(DECODE_BUCKETS))

    def __post_init__(self) -> None:
        self.k = self.spec.initial_k if self.managed else 0
        if self.spec.initial_schedule and self.k > 0:
            self.schedule = validate_schedule(self.spec.initial_schedule, self.k)
        self.last = self.started_at = self.up_at = self.t0
        self.per_pos = [0.0] * self.k
        if self.spec.restart_every:
            # stagger replicas so they do not all restart at once
            self.next_crash = self.t0 + self.spec.restart_every * (1.0 + 0.37 * self.replica)

    @property
    def name(self) -> str:
        return f"{self.spec.name}-{self.replica}" if self.managed else f"{self.spec.name}-plain"

    def is_up(self, now: float) -> bool:
        return now >= self.up_at

    @property
    def config(self) -> SpecConfig:
        """The configuration running now (the old one while a restart is pending)."""
        return SpecConfig(self.k, self.schedule if self.k > 0 else None)

    @property
    def target_config(self) -> SpecConfig:
        """The configuration deployed: the pending one while the engine restarts."""
        if self.pending_k is not None:
            return SpecConfig(self.pending_k, self.pending_schedule if self.pending_k else None)
        return self.config

    def set_k(self, k: int, now: float) -> bool:
        """Restart with a new k (no-op when it is already deployed); True if it restarts."""
        return self.set_config(SpecConfig(k), now)

    def set_config(self, config: SpecConfig, now: float) -> bool:
        """Restart with a new configuration (no-op when it is already deployed); True if it
        restarts. A change of the schedule alone is a restart too (vLLM reads it at start-up),
        counted in ``stats.schedule_restarts``."""
        k = config.k
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(f"k = {k!r} for {self.name} must be a whole number >= 0", field="k")
        schedule = validate_schedule(config.schedule, k) if config.schedule and k > 0 else None
        wanted = SpecConfig(k, schedule)
        self.advance(now)
        current = self.target_config
        if wanted == current:
            return False
        self.pending_k = k
        self.pending_schedule = schedule
        self.up_at = now + self.restart_delay
        self.stats.restarts += 1
        if k == current.k and k > 0:
            self.stats.schedule_restarts += 1
        return True

    def _restart_now(
        self, at: float, k: int, schedule: tuple[ScheduleEntry, ...] | None = None
    ) -> None:
        if schedule is None:  # a restart at the deployed configuration keeps its schedule
            if self.pending_k is not None and k == self.pending_k:
                schedule = self.pending_schedule
            elif self.pending_k is None and k == self.k:
                schedule = self.schedule
        self.k = k
        self.schedule = schedule if k > 0 else None
        self.pending_k = None
        self.pending_schedule = None
        self.started_at = at
        self.drafts = self.draft_tokens = self.accepted = 0.0
        self.generation_tokens = self.itl_sum = self.itl_count = 0.0
        self.per_pos = [0.0] * k
        self.itl = _Histogram(ITL_BUCKETS)
        self.iteration = _Histogram(ITERATION_BUCKETS)
        self.tpot = _Histogram(TPOT_BUCKETS)
        self.decode = _Histogram(DECODE_BUCKETS)

    def advance(self, now: float, *, max_step: float | None = None) -> None:
        """Sample the counters up to ``now`` in steps of at most ``max_step`` seconds (10;
        30 for a load-varying class, whose truth moves slowly and costs more to sample)."""
        if max_step is None:
            max_step = 10.0 if self.spec.batch is None else 30.0
        while self.last < now:
            t = min(now, self.last + max_step)
            if self.next_crash is not None and self.last < self.next_crash <= t:
                t = self.next_crash
            self._advance_interval(self.last, t)
            self.last = t
            if self.next_crash is not None and t >= self.next_crash and self.is_up(t):
                self.up_at = t + min(self.restart_delay, 30.0)
                self.pending_k = self.k
                self.pending_schedule = self.schedule
                self.stats.crashes += 1
                assert self.spec.restart_every is not None
                self.next_crash = t + self.spec.restart_every

    def _advance_interval(self, a: float, b: float) -> None:
        dt = b - a
        self.stats.target_seconds += dt
        if self.spec.batch is not None:
            self._advance_load(a, b)
            return
        if b <= self.up_at:
            self.stats.down_seconds += dt
            return
        if a < self.up_at:  # came back up inside this interval
            self.stats.down_seconds += self.up_at - a
            if self.pending_k is not None:
                self._restart_now(self.up_at, self.pending_k)
            a = self.up_at
            dt = b - a
        elif self.pending_k is not None:
            self._restart_now(self.up_at, self.pending_k)
        t_mid = 0.5 * (a + b) - self.t0
        load = self.spec.load(t_mid) * dt  # plain-decode token slots in this interval
        step = self.spec.target_step_seconds
        if self.k == 0:
            self.stats.expected_tokens += load
            n_steps = float(self.rng.poisson(load))
            self.generation_tokens += n_steps
            self.itl_count += n_steps
            self.itl_sum += n_steps * step
            return
        k, cost = self.k, self.spec.cost
        survival = self.spec.survival(t_mid, k)
        lengths = self.spec.draft_lengths(k) if self.spec.draft_lengths else [0.0] * k + [1.0]
        mean_cost = sum(p * (n * cost + 1.0) for n, p in enumerate(lengths))
        self.stats.expected_tokens += load * self.spec.speedup_at(t_mid, k)
        n = int(self.rng.poisson(load / mean_cost))
        if n == 0:
            return
        _, tokens, accepted = self._sample_drafts(n, k, survival)
        self.generation_tokens += n + accepted
        self.itl_count += n
        self.itl_sum += (n + tokens * cost) * step

    def _sample_drafts(self, n: int, k: int, survival: Sequence[float]) -> tuple[int, float, float]:
        """Sample ``n`` request-steps drafting up to k tokens (proposal lengths from the
        scenario) into the spec-decode counters; returns (drafts, draft tokens, accepted)."""
        lengths = self.spec.draft_lengths(k) if self.spec.draft_lengths else [0.0] * k + [1.0]
        if self.spec.draft_lengths is None:  # every step drafts k tokens
            per_length = np.zeros(k + 1, dtype=np.int64)
            per_length[k] = n
        else:
            per_length = self.rng.multinomial(n, np.asarray(lengths) / sum(lengths))
        s = [1.0, *survival]
        reached = np.zeros(k + 1)  # reached[j] = drafts whose accepted prefix is >= j
        for length, count in enumerate(per_length):
            if length == 0 or count == 0:
                continue  # a step that proposed nothing is no draft
            # P(L = j) for a draft of ``length`` tokens: rejected at j + 1, or all accepted
            pmf = np.clip([s[j] - s[j + 1] for j in range(length)] + [s[length]], 0.0, None)
            hist = self.rng.multinomial(int(count), pmf / pmf.sum())
            reached[: length + 1] += np.cumsum(hist[::-1])[::-1]
        drafted = int(n - per_length[0])
        accepted = float(reached[1:].sum())
        tokens = float(np.dot(np.arange(k + 1), per_length))
        self.drafts += drafted
        self.draft_tokens += tokens
        self.accepted += accepted
        for i in range(k):
            self.per_pos[i] += float(reached[i + 1])
        return drafted, tokens, accepted

    def _advance_load(self, a: float, b: float) -> None:
        """A load-varying class: the cost side's truth (module docstring)."""
        spec = self.spec
        dt = b - a
        self.stats.plain_tokens += spec.plain_rate_at(0.5 * (a + b) - self.t0) * dt
        if b <= self.up_at:
            self.stats.down_seconds += dt
            return
        if a < self.up_at:  # came back up inside this interval
            self.stats.down_seconds += self.up_at - a
            if self.pending_k is not None:
                self._restart_now(self.up_at, self.pending_k)
            a = self.up_at
            dt = b - a
        elif self.pending_k is not None:
            self._restart_now(self.up_at, self.pending_k)
        t_mid = 0.5 * (a + b) - self.t0
        config = self.config
        rates = spec.rates_at(t_mid, config)
        self.stats.expected_tokens += rates.tokens * dt
        self.stats.flap_seconds += rates.flap_overhead * dt
        pmf = spec.batch_pmf_at(b - self.t0)
        self.running = float(self.rng.choice(pmf.size, p=pmf))
        if rates.sizes.size == 0:
            return
        steps = self.rng.poisson(rates.steps * dt).astype(np.float64)
        req_steps = steps * rates.sizes  # one inter-token observation per request per step
        total = float(req_steps.sum())
        if total <= 0:
            return
        accepted_total = 0.0
        per_step_tokens = rates.sizes.astype(np.float64).copy()  # plain: one token each
        if config.k > 0:
            survival = spec.survival(t_mid, config.k)
            for kb in sorted({int(x) for x in rates.ks if x > 0}):
                group = rates.ks == kb
                n = int(req_steps[group].sum())
                if n == 0:
                    continue
                _, _, accepted = self._sample_drafts(n, kb, survival[:kb])
                accepted_total += accepted
                per_step_tokens[group] = rates.sizes[group] * (1.0 + accepted / n)
        generated = total + accepted_total
        self.generation_tokens += generated
        self.itl_count += total
        self.itl_sum += float(np.dot(req_steps, rates.step_seconds))
        self.itl.observe(rates.step_seconds, req_steps)
        self.iteration.observe(per_step_tokens, steps)
        # finished requests: decode time = (output tokens - 1) / tokens per request-step
        # x the mean step the requests saw; time per output token = that over (tokens - 1)
        finished = float(self.rng.poisson(generated / max(1, spec.output_tokens)))
        if finished > 0 and spec.output_tokens > 1:
            per_req_step = generated / total
            mean_step = float(np.dot(req_steps, rates.step_seconds)) / total
            tpot = mean_step / per_req_step
            decode = tpot * (spec.output_tokens - 1)
            self.tpot.observe(np.asarray([tpot]), np.asarray([finished]))
            self.decode.observe(np.asarray([decode]), np.asarray([finished]))


class _EngineCollector(Collector):
    """Renders one engine's counters as vLLM 0.32's V1 metric families."""

    def __init__(self, engine: SimEngine, model_name: str) -> None:
        self.engine = engine
        self.model_name = model_name

    def describe(self) -> list[object]:
        return []

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        e = self.engine
        base = ["engine", "model_name"]
        values = ["0", self.model_name]
        created = e.started_at
        start = GaugeMetricFamily(  # prometheus_client's process collector, as on vLLM's page
            "process_start_time_seconds", "Start time of the process since unix epoch in seconds."
        )
        start.add_metric([], e.started_at)
        yield start
        running = GaugeMetricFamily(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            labels=base,
        )
        load = e.spec.batch is not None
        running.add_metric(values, e.running if load else 8.0)
        yield running
        gen = CounterMetricFamily(
            "vllm:generation_tokens", "Number of generation tokens processed.", labels=base
        )
        gen.add_metric(values, e.generation_tokens, created=created)
        yield gen
        if load:
            yield from _histogram(
                "vllm:iteration_tokens_total",
                "Histogram of number of tokens per engine_step.",
                values,
                e.iteration,
                created,
            )
        itl = HistogramMetricFamily(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            labels=base,
        )
        if load:
            itl.add_metric(values, buckets=e.itl.buckets(), sum_value=e.itl.sum)
            yield itl
            yield _created("vllm:inter_token_latency_seconds", itl.documentation, values, created)
            yield from _histogram(
                "vllm:request_time_per_output_token_seconds",
                "Histogram of time_per_output_token_seconds per request.",
                values,
                e.tpot,
                created,
            )
            yield from _histogram(
                "vllm:request_decode_time_seconds",
                "Histogram of time spent in DECODE phase for request.",
                values,
                e.decode,
                created,
            )
        else:
            itl.add_metric(values, buckets=[("+Inf", e.itl_count)], sum_value=e.itl_sum)
            yield itl
        if e.k == 0:
            return  # started without --speculative-config: no spec-decode families at all
        for key, value in (
            ("drafts", e.drafts),
            ("draft_tokens", e.draft_tokens),
            ("accepted", e.accepted),
        ):
            name = {"drafts": "num_drafts", "draft_tokens": "num_draft_tokens"}.get(
                key, "num_accepted_tokens"
            )
            fam = CounterMetricFamily(f"vllm:spec_decode_{name}", _SPEC_HELP[key], labels=base)
            fam.add_metric(values, value, created=created)
            yield fam
        pos = CounterMetricFamily(
            "vllm:spec_decode_num_accepted_tokens_per_pos",
            _SPEC_HELP["per_pos"],
            labels=[*base, "position"],
        )
        for i, value in enumerate(e.per_pos):
            pos.add_metric([*values, str(i)], value, created=created)
        yield pos


def _histogram(
    name: str, documentation: str, values: list[str], hist: _Histogram, created: float
) -> list[HistogramMetricFamily | GaugeMetricFamily]:
    fam = HistogramMetricFamily(name, documentation, labels=["engine", "model_name"])
    fam.add_metric(values, buckets=hist.buckets(), sum_value=hist.sum)
    # vLLM's page has each histogram's _created as a gauge family of its own
    return [fam, _created(name, documentation, values, created)]


def _created(name: str, documentation: str, values: list[str], created: float) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(f"{name}_created", documentation, labels=["engine", "model_name"])
    fam.add_metric(values, created)
    return fam


class SimFleet:
    """Every engine of a scenario, advanced lazily to the clock on each read."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        clock: Clock,
        seed: int = 0,
        restart_delay: float = 120.0,
    ) -> None:
        self.scenario = scenario
        self.clock = clock
        self.lock = threading.Lock()
        t0 = clock()
        self.t0 = t0
        rng = np.random.default_rng(seed)
        self.engines: list[SimEngine] = []
        for spec in scenario.classes:
            for r in range(spec.replicas + spec.plain_replicas):
                self.engines.append(
                    SimEngine(
                        spec,
                        r,
                        t0,
                        restart_delay,
                        np.random.default_rng(rng.integers(2**32)),
                        managed=r < spec.replicas,
                    )
                )

    def engines_of(self, class_name: str) -> list[SimEngine]:
        found = [e for e in self.engines if e.spec.name == class_name]
        if not found:
            names = sorted({e.spec.name for e in self.engines})
            raise ConfigError(
                f"the simulated fleet has no class {class_name!r}; it has {', '.join(names)}",
                field="class",
            )
        return found

    def managed_of(self, class_name: str) -> list[SimEngine]:
        """The engines of a class that its configuration changes restart (no plain replicas)."""
        return [e for e in self.engines_of(class_name) if e.managed]

    def advance(self, now: float | None = None) -> float:
        t = self.clock() if now is None else now
        with self.lock:
            for e in self.engines:
                e.advance(t)
        return t

    def set_k(self, class_name: str, k: int, now: float | None = None) -> int:
        """Deploy k on every engine of a class (each restarts); returns how many restarted."""
        t = self.clock() if now is None else now
        with self.lock:
            return sum(e.set_k(k, t) for e in self.managed_of(class_name))

    def set_config(self, class_name: str, config: SpecConfig, now: float | None = None) -> int:
        """Deploy a configuration (k plus an optional batch-size schedule) on every engine of
        a class (each restarts unless it already runs it); returns how many restarted."""
        t = self.clock() if now is None else now
        with self.lock:
            return sum(e.set_config(config, t) for e in self.managed_of(class_name))

    def deployed_k(self, class_name: str) -> int:
        e = self.managed_of(class_name)[0]
        return e.pending_k if e.pending_k is not None else e.k

    def deployed_config(self, class_name: str) -> SpecConfig:
        """The configuration deployed on a class's first engine (pending restarts included)."""
        return self.managed_of(class_name)[0].target_config

    def render(self, index: int, now: float | None = None) -> bytes | None:
        """The /metrics page of engine ``index``; None while it is restarting."""
        t = self.advance(now)
        with self.lock:
            engine = self.engines[index]
            if not engine.is_up(t):
                return None
            registry = CollectorRegistry()
            registry.register(_EngineCollector(engine, engine.spec.name))
            return generate_latest(registry)

    def apply_file(self, path: Path, now: float | None = None) -> int | None:
        """Apply a file actuator's output (``{"class": ..., "speculative_config": {...}}``).

        Returns the k applied, or None if the file does not name a class of this fleet.
        """
        data = json.loads(path.read_text())
        class_name = data.get("class")
        config = config_from_speculative(data.get("speculative_config"))
        if not isinstance(class_name, str) or class_name not in {e.spec.name for e in self.engines}:
            return None
        self.set_config(class_name, config, now)
        return config.k


def config_from_speculative(speculative_config: Mapping[str, Any] | None) -> SpecConfig:
    """The :class:`SpecConfig` a ``--speculative-config`` object runs (None: no speculation):
    ``num_speculative_tokens`` and ``num_speculative_tokens_per_batch_size`` when present."""
    if speculative_config is None:
        return SpecConfig(0)
    k = int(speculative_config.get("num_speculative_tokens", 0))
    table = speculative_config.get("num_speculative_tokens_per_batch_size")
    if not table or k == 0:
        return SpecConfig(k)
    return SpecConfig(k, validate_schedule([tuple(int(v) for v in e) for e in table], k))


def speculative_config_of(config: SpecConfig, method: str = "x") -> dict[str, Any] | None:
    """The ``--speculative-config`` object for a configuration (None: run without one)."""
    if config.k == 0:
        return None
    out: dict[str, Any] = {"method": method, "num_speculative_tokens": config.k}
    if config.schedule:
        out["num_speculative_tokens_per_batch_size"] = [list(e) for e in config.schedule]
    return out


class FileWatcher:
    """Applies the file actuator's output to a fleet: the closed loop without a deploy tool.

    ``poll()`` applies every ``*.json`` in ``directory`` that changed since the last poll
    and returns the (class, k) pairs applied; unreadable files and files naming a class the
    fleet does not serve are skipped until they change, each with a line in ``skipped``.
    """

    def __init__(self, fleet: SimFleet, directory: Path) -> None:
        self.fleet = fleet
        self.directory = directory
        self._seen: dict[Path, float] = {}
        #: Why files were skipped by the last ``poll()`` (one sentence each).
        self.skipped: list[str] = []

    def poll(self) -> list[tuple[str, int]]:
        applied: list[tuple[str, int]] = []
        self.skipped = []
        if not self.directory.is_dir():
            return applied
        for path in sorted(self.directory.glob("*.json")):
            try:
                mtime = path.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if self._seen.get(path) == mtime:
                continue
            self._seen[path] = mtime
            try:
                k = self.fleet.apply_file(path)
                data = json.loads(path.read_text())
            except (OSError, ValueError, TypeError, AttributeError, ConfigError) as exc:
                self.skipped.append(
                    f"{path} is not a file actuator output ({exc.__class__.__name__}); it is "
                    "skipped until it changes"
                )
                continue
            if k is None:
                names = ", ".join(sorted({e.spec.name for e in self.fleet.engines}))
                self.skipped.append(
                    f"{path} is for class {data.get('class')!r}, which this fleet does not "
                    f"serve (its classes: {names}); name one of them in the controller's "
                    "[[classes]]"
                )
            else:
                applied.append((str(data["class"]), k))
        return applied


class SimSource:
    """The fleet as an in-process ``SnapshotSource`` (no HTTP): for benchmarks and long runs.

    Engines that are restarting are skipped, as their /metrics would answer 503.
    """

    name = "sim"

    def __init__(self, fleet: SimFleet) -> None:
        self.fleet = fleet

    def collect(self, now: float) -> list[Snapshot]:
        self.fleet.advance(now)
        out: list[Snapshot] = []
        with self.fleet.lock:
            for i, e in enumerate(self.fleet.engines):
                if not e.is_up(now):
                    continue
                load = e.spec.batch is not None
                load_fields: dict[str, Any] = {}
                if load:
                    load_fields = {
                        "iteration_steps": e.iteration.count,
                        "iteration_tokens": e.iteration.sum,
                        "decode_seconds_sum": e.decode.sum,
                        "decode_seconds_count": e.decode.count,
                        "tpot_seconds_sum": e.tpot.sum,
                        "tpot_seconds_count": e.tpot.count,
                    }
                out.append(
                    Snapshot(
                        labels={"engine": "0", "model_name": e.spec.name, "instance": f"sim-{i}"},
                        timestamp=now,
                        drafts=e.drafts,
                        draft_tokens=e.draft_tokens,
                        accepted=e.accepted,
                        accepted_per_position=tuple(e.per_pos),
                        k=e.k,
                        source="sim",
                        running_requests=e.running if load else 8.0,
                        generation_tokens=e.generation_tokens,
                        itl_seconds_sum=e.itl_sum,
                        itl_seconds_count=e.itl_count,
                        process_start_time=e.started_at,
                        # k = 0: started without --speculative-config, a load-only snapshot
                        spec_families=e.k > 0,
                        **load_fields,
                    )
                )
        return out


class SimActuator:
    """Applies k straight to the fleet (the closed loop without files); k changes restart.

    The schedule rides in ``speculative_config["num_speculative_tokens_per_batch_size"]``
    (as vLLM reads it); a change of the schedule alone is a restart too."""

    kind = "sim"

    def __init__(self, fleet: SimFleet) -> None:
        self.fleet = fleet

    def apply(
        self,
        class_name: str,
        k: int,
        *,
        speculative_config: Mapping[str, Any] | None,
        reason: str,
        now: float,
    ) -> ActuationResult:
        config = config_from_speculative(speculative_config) if k > 0 else SpecConfig(0)
        if config.k != k:  # the controller's k wins over a config without the key
            config = SpecConfig(k, config.schedule if config.schedule and k > 0 else None)
        restarted = self.fleet.set_config(class_name, config, now)
        return ActuationResult(class_name, k, True, now, f"{restarted} engine(s) restarting")


def scaled_clock(speed: float, *, start: float | None = None) -> Clock:
    """A clock that runs ``speed`` times faster than the wall clock, from ``start``."""
    import time

    wall0 = time.monotonic()
    origin = time.time() if start is None else start
    return lambda: origin + (time.monotonic() - wall0) * speed


class _Handler(BaseHTTPRequestHandler):
    fleet: SimFleet
    index: int

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/health":
            self._send(200, b"", "text/plain")
            return
        if self.path.split("?")[0] != "/metrics":
            self._send(404, b"Not Found\n", "text/plain")
            return
        body = self.fleet.render(self.index)
        if body is None:
            self._send(503, b"engine restarting\n", "text/plain")
            return
        # vLLM's /metrics route never negotiates: classic text, colons kept (docs/vllm-metrics.md)
        self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class SimServer:
    """One HTTP server on 127.0.0.1 per engine, like one vLLM server per replica."""

    def __init__(self, fleet: SimFleet, *, host: str = "127.0.0.1", ports: Sequence[int] = ()):
        self.fleet = fleet
        self.servers: list[ThreadingHTTPServer] = []
        self.threads: list[threading.Thread] = []
        for i in range(len(fleet.engines)):
            handler = type("SimHandler", (_Handler,), {"fleet": fleet, "index": i})
            port = ports[i] if i < len(ports) else 0
            server = ThreadingHTTPServer((host, port), handler)
            server.daemon_threads = True
            self.servers.append(server)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{s.server_address[1]}/metrics" for s in self.servers]

    def targets(self) -> list[tuple[str, str]]:
        """(class name, /metrics URL) for every engine."""
        return [(e.spec.name, url) for e, url in zip(self.fleet.engines, self.urls)]

    def start(self) -> SimServer:
        for server in self.servers:
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join(timeout=5)
        self.threads.clear()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
