"""A small served fleet with load: vLLM V1 families consistent with a ground-truth T(k, B).

Each engine runs a configuration (k, an optional schedule, or no speculation at all) at a
batch size the test sets; ``advance(dt)`` adds what dt seconds of decoding at that batch
size produce to the engine's cumulative counters (deterministic: expected values, no
noise), and a prometheus_client collector serves them in vLLM 0.32 format from a real HTTP
server on 127.0.0.1. An engine without speculation serves no spec-decode families at all,
like vLLM started without ``--speculative-config``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from specwise.step_cost import SpecConfig, StepCost

Metric = CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily


@dataclass
class LoadEngine:
    """One engine (one vLLM server) of a model, its deployed config and cumulative counters."""

    model: str
    engine: str
    alpha: float
    cost: StepCost
    config: SpecConfig
    batch: float = 1.0
    drafts: float = 0.0
    draft_tokens: float = 0.0
    accepted: float = 0.0
    per_position: list[float] = field(default_factory=list)
    generation_tokens: float = 0.0
    steps: float = 0.0
    step_tokens: float = 0.0
    itl_sum: float = 0.0
    itl_count: float = 0.0
    latency_families: bool = True

    def advance(self, dt: float) -> None:
        b = max(1, round(self.batch))
        k = self.config.k_at(b)
        t = self.cost.step_time(k, b)
        steps = dt / t
        request_steps = steps * b
        survival = [self.alpha**i for i in range(1, k + 1)]
        tokens = 1.0 + sum(survival)
        self.steps += steps
        self.step_tokens += steps * b * (k + 1)
        self.itl_count += request_steps
        self.itl_sum += request_steps * t
        self.generation_tokens += request_steps * tokens
        if self.config.k > 0:
            if len(self.per_position) < self.config.k:
                self.per_position += [0.0] * (self.config.k - len(self.per_position))
            if k > 0:
                self.drafts += request_steps
                self.draft_tokens += request_steps * k
                self.accepted += request_steps * (tokens - 1.0)
                for i, s in enumerate(survival):
                    self.per_position[i] += request_steps * s

    def deploy(self, config: SpecConfig) -> None:
        """A restart with a new configuration: counters start from zero again."""
        self.config = config
        self.drafts = self.draft_tokens = self.accepted = 0.0
        self.per_position = []
        self.generation_tokens = self.steps = self.step_tokens = 0.0
        self.itl_sum = self.itl_count = 0.0


class LoadFleetCollector(Collector):
    def __init__(self, engines: Sequence[LoadEngine]) -> None:
        self.engines = list(engines)
        self.lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []

    def advance(self, dt: float) -> None:
        with self.lock:
            for e in self.engines:
                e.advance(dt)

    def collect(self) -> Iterator[Metric]:
        names = ["engine", "model_name"]
        with self.lock:
            engines = [(e, list(e.per_position)) for e in self.engines]
        drafts = CounterMetricFamily("vllm:spec_decode_num_drafts", "Drafts.", labels=names)
        dtok = CounterMetricFamily("vllm:spec_decode_num_draft_tokens", "Draft tok.", labels=names)
        acc = CounterMetricFamily("vllm:spec_decode_num_accepted_tokens", "Accepted.", labels=names)
        pos = CounterMetricFamily(
            "vllm:spec_decode_num_accepted_tokens_per_pos",
            "Accepted per position.",
            labels=[*names, "position"],
        )
        running = GaugeMetricFamily("vllm:num_requests_running", "Running.", labels=names)
        gen = CounterMetricFamily("vllm:generation_tokens", "Generated.", labels=names)
        iters = HistogramMetricFamily(
            "vllm:iteration_tokens_total", "Tokens per engine step.", labels=names
        )
        itl = HistogramMetricFamily(
            "vllm:inter_token_latency_seconds", "Inter-token latency.", labels=names
        )
        for e, pp in engines:
            v = [e.engine, e.model]
            running.add_metric(v, e.batch)
            gen.add_metric(v, e.generation_tokens)
            if e.latency_families:
                iters.add_metric(v, [("+Inf", e.steps)], e.step_tokens)
                itl.add_metric(v, [("+Inf", e.itl_count)], e.itl_sum)
            if e.config.k > 0:
                drafts.add_metric(v, e.drafts)
                dtok.add_metric(v, e.draft_tokens)
                acc.add_metric(v, e.accepted)
                for i, x in enumerate(pp):
                    pos.add_metric([*v, str(i)], x)
        yield from (drafts, dtok, acc, pos, running, gen, iters, itl)


class LoadFleet:
    """The collector served on a free 127.0.0.1 port; ``url`` is its /metrics."""

    def __init__(self, engines: Sequence[LoadEngine]) -> None:
        self.collector = LoadFleetCollector(engines)
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        self.server, self.thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"

    @property
    def engines(self) -> list[LoadEngine]:
        return self.collector.engines

    def advance(self, dt: float) -> None:
        self.collector.advance(dt)

    def set_batch(self, model: str, batch: float) -> None:
        with self.collector.lock:
            for e in self.engines:
                if e.model == model:
                    e.batch = batch

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def __enter__(self) -> LoadFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
