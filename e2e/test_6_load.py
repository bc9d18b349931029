"""Scenario 6, load: specwise's measured speedup against client-side throughput.

The same tiny target is served three ways, one server at a time and always under the same
served model name (one class across the restarts): without speculation, with n-gram prompt
lookup (k = 4) and with a drafter identical to the target (k = 3), then without speculation
again (the plain phases before and after the speculative ones, pooled: contention that
comes and goes between restarts hits the baseline on both sides). Each is warmed up, then
loaded at concurrency 1, 4 and 16 (greedy, 64-token completions, repetitive prompts, each
phase a bounded number of requests for PHASE_SECONDS). For each (server, concurrency) the
test measures the generated tokens per second itself, client-side, and scrapes /metrics
just before and just after the phase: the client and the counters see exactly the same
requests, so contention from whatever else runs on the machine hits both alike.

From the counter gains of each phase (plan identities, docs/design.md#the-cost-side):
R = ITL count (request-steps), T_obs = ITL sum / R (the step time requests see),
B_obs = R / engine steps (``vllm:iteration_tokens_total`` count), G / R (tokens per
request-step). specwise's measured speedup of a speculative phase is its throughput
measure (docs/design.md#the-cost-side): the tokens a request gets per second in the engine,
prefill included (``vllm:request_generation_tokens`` / ``vllm:request_inference_time_seconds``
of the finished requests), against the plain phases' at a comparable load (requests decoding),
computed by specwise's own library (``observation_from_delta``, ``fit_step_cost``,
``measured_speedup``) and read from ``specwise run``'s /recommendations.

Like with like: the client-side throughput ratio at one concurrency equals (requests in the
engine, speculative / plain) x (per-request token rate ratio), the first factor being
Little's law on the engine's inference time. specwise measures the second. Where the two
servers held a different number of requests in the engine at the same client concurrency
(on this 2-core machine the API server, not the engine, limits the plain server at 8 or
more clients), the client ratio answers another question and the level is reported, not
asserted (COMPARABLE_LOAD).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import CACHE, CLASS_MATCH, ROOT, SERVED_NAME, VLLMServer, report
from prometheus_client.parser import text_string_to_metric_families

from specwise.collectors.classes import ClassConfig
from specwise.collectors.deltas import sum_by_class, window_deltas
from specwise.collectors.exposition import parse_exposition
from specwise.collectors.snapshot import CounterDelta
from specwise.estimation.step_fit import (
    StepObservation,
    fit_step_cost,
    measured_speedup,
    observation_from_delta,
)
from specwise.policies.presets import drafter_cost

pytestmark = pytest.mark.timeout(900)

MAX_TOKENS = 64
REPEAT = 4  # prompt text repeated: n-gram lookup finds matches
#: (concurrency, at most this many requests): each phase sends requests for PHASE_SECONDS.
#: The server runs at most 8 requests at once (--max-num-seqs 8): at 16, 8 more wait in its
#: queue, so every server decodes a full batch whatever its frontend and the client take
LEVELS: tuple[tuple[int, int], ...] = ((1, 300), (4, 800), (16, 1200))
PHASE_SECONDS = 20.0
WARMUP: tuple[tuple[int, int], ...] = ((8, 24), (1, 4))
#: the families read from each scrape (summed over the page's series)
FAMILIES = {
    "itl_sum": "vllm:inter_token_latency_seconds_sum",
    "itl_count": "vllm:inter_token_latency_seconds_count",
    "steps": "vllm:iteration_tokens_total_count",
    "step_tokens": "vllm:iteration_tokens_total_sum",
    "generation": "vllm:generation_tokens_total",
    "prompt": "vllm:prompt_tokens_total",
    "e2e_sum": "vllm:e2e_request_latency_seconds_sum",
    "e2e_count": "vllm:e2e_request_latency_seconds_count",
    "decode_sum": "vllm:request_decode_time_seconds_sum",
    "prefill_sum": "vllm:request_prefill_time_seconds_sum",
    "prefill_count": "vllm:request_prefill_time_seconds_count",
    "inference_sum": "vllm:request_inference_time_seconds_sum",
    "inference_count": "vllm:request_inference_time_seconds_count",
    "decode_count": "vllm:request_decode_time_seconds_count",
    "request_tokens": "vllm:request_generation_tokens_sum",
    "queue_sum": "vllm:request_queue_time_seconds_sum",
    "drafts": "vllm:spec_decode_num_drafts_total",
    "draft_tokens": "vllm:spec_decode_num_draft_tokens_total",
    "accepted": "vllm:spec_decode_num_accepted_tokens_total",
}


@dataclass(frozen=True)
class ServerCase:
    name: str
    k: int
    spec: Callable[[VLLMServer], dict[str, Any] | None]
    preset: str  # the drafter preset whose c is the fit's prior


SERVERS = (
    ServerCase("plain", 0, lambda v: None, "ngram"),
    ServerCase("ngram-k4", 4, lambda v: v.ngram(4), "ngram"),
    ServerCase("identical-k3", 3, lambda v: v.identical(3), "draft_model"),
    ServerCase("plain", 0, lambda v: None, "ngram"),  # the baseline again, after
)
SPEC_SERVERS = tuple(c for c in SERVERS if c.k > 0)
CLASSES = ClassConfig.from_mapping({"tiny": CLASS_MATCH})
#: specwise's measured speedup must be within this of the client-side ratio, and its
#: verdict must match wherever the client-side ratio is this far from 1
TOLERANCE = 0.10
#: specwise run's estimator window: its measured speedup covers the windows of this span
RECENT = 22.0
#: The client-side ratio at one concurrency is the ratio of requests in the engine (Little:
#: inference seconds / phase length) times the per-request rate ratio specwise measures: a
#: level is asserted where the two servers held requests in the engine within this factor.
COMPARABLE_LOAD = 1.1


def families(text: str) -> dict[str, float]:
    """The FAMILIES of one /metrics page, each summed over its series (0 when absent)."""
    wanted = {v: k for k, v in FAMILIES.items()}
    out = dict.fromkeys(FAMILIES, 0.0)
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            key = wanted.get(sample.name)
            if key is not None:
                out[key] += float(sample.value)
    return out


def running(text: str) -> float | None:
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == "vllm:num_requests_running":
                return float(sample.value)
    return None


@dataclass
class Phase:
    """One load phase: what the client saw and the two scrapes around it."""

    server: str
    k: int
    concurrency: int
    requests: int
    tokens: int
    seconds: float  # first request sent .. last response received
    latency: float  # sum over requests of (response received - request sent), client-side
    before_text: str = field(repr=False)
    after_text: str = field(repr=False)
    t_before: float
    t_after: float
    running_samples: list[float] = field(default_factory=list)
    #: specwise run's ``load`` block from its first tick after the phase
    controller_load: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def client_tps(self) -> float:
        return self.tokens / self.seconds

    def gains(self) -> dict[str, float]:
        a, b = families(self.before_text), families(self.after_text)
        return {key: b[key] - a[key] for key in FAMILIES}

    def class_delta(self) -> CounterDelta:
        """The phase's gains as specwise's collectors see them: the two pages parsed, the
        window delta, summed into the class (load-only for the plain server)."""
        before = parse_exposition(self.before_text, timestamp=self.t_before)
        after = parse_exposition(self.after_text, timestamp=self.t_after)
        (delta,) = sum_by_class(window_deltas(before, after), CLASSES)
        return delta

    def observation(self) -> StepObservation:
        delta = self.class_delta()
        assert delta.spec_families == (self.k > 0), delta
        obs = observation_from_delta(delta, None)
        assert obs is not None, f"no step observation from {delta}"
        assert obs.k == self.k
        return obs

    def identities(self) -> dict[str, float]:
        """The plan's identities on this phase's counter gains, computed here directly."""
        g = self.gains()
        r, steps, gen = g["itl_count"], g["steps"], g["generation"]
        t_obs = g["itl_sum"] / r
        b_obs = r / steps
        tps = gen / r
        out = {
            "R": r,
            "steps": steps,
            "G": gen,
            "T_obs_ms": 1e3 * t_obs,
            "B_obs": b_obs,
            "G_per_R": tps,
            # tokens per second while decoding, as the counters say: B (G / R) / T_obs
            "counter_tps": b_obs * tps / t_obs,
            # the engine's own view of the phase's throughput: G over the scrape window
            "window_tps": gen / (self.t_after - self.t_before),
            # mean requests in decode over the phase (ITL time / phase length)
            "decode_concurrency": g["itl_sum"] / self.seconds,
            # Little's law: mean requests in the engine, per its e2e latency
            "e2e_concurrency": g["e2e_sum"] / self.seconds,
            # tokens per second per request in the engine (e2e latency, not decode only)
            "tokens_per_e2e_second": gen / g["e2e_sum"] if g["e2e_sum"] > 0 else math.nan,
            # Little's law on the engine: mean requests in it (inference = prefill + decode)
            "engine_load": g["inference_sum"] / self.seconds,
            # tokens per second a request gets in the engine, prefill included
            "tokens_per_inference_second": (
                g["request_tokens"] / g["inference_sum"] if g["inference_sum"] > 0 else math.nan
            ),
            "prefill_ms_per_request": 1e3 * g["prefill_sum"] / max(g["e2e_count"], 1.0),
            "queue_ms_per_request": 1e3 * g["queue_sum"] / max(g["e2e_count"], 1.0),
            "e2e_ms_per_request": 1e3 * g["e2e_sum"] / max(g["e2e_count"], 1.0),
            "client_ms_per_request": 1e3 * self.seconds * self.concurrency / self.requests,
        }
        if self.running_samples:
            out["running_mean"] = sum(self.running_samples) / len(self.running_samples)
        if g["drafts"] > 0:
            out["mean_acceptance_length"] = 1.0 + g["accepted"] / g["drafts"]
        return out


def _prompt(i: int, seed: int) -> str:
    from conftest import PROMPTS

    base = PROMPTS[(i + seed) % len(PROMPTS)]
    return f"{' '.join([base] * REPEAT)} {i + seed}"


def load(
    server: VLLMServer, n: int, concurrency: int, seed: int, seconds: float | None = None
) -> tuple[int, int, float, float]:
    """Greedy completions of MAX_TOKENS from ``concurrency`` clients, each sending its next
    request when its last one returned, until ``n`` were sent or ``seconds`` passed: (requests,
    tokens, seconds from the first request sent to the last response received, the sum of
    the requests' latencies as the client saw them). Every
    request is bounded (120 s), and so is their number."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=concurrency)
    session.mount("http://", adapter)
    lock = threading.Lock()
    counter = itertools.count()
    start = time.monotonic()
    done: list[tuple[int, float, float]] = []

    def one(i: int) -> tuple[int, float, float]:
        body = {
            "model": SERVED_NAME,
            "prompt": _prompt(i, seed),
            "max_tokens": MAX_TOKENS,
            "temperature": 0.0,
            "ignore_eos": True,
        }
        sent = time.monotonic()
        with session.post(f"{server.url}/v1/completions", json=body, timeout=120) as resp:
            resp.raise_for_status()
            tokens = int(resp.json()["usage"]["completion_tokens"])
        return tokens, sent, time.monotonic()

    def client() -> None:
        while True:
            with lock:
                i = next(counter)
            if i >= n or (seconds is not None and time.monotonic() - start > seconds):
                return
            result = one(i)
            with lock:
                done.append(result)

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            for f in [pool.submit(client) for _ in range(concurrency)]:
                f.result()
    finally:
        session.close()
    tokens = sum(d[0] for d in done)
    span = max(d[2] for d in done) - min(d[1] for d in done)
    return len(done), tokens, span, sum(d[2] - d[1] for d in done)


@contextlib.contextmanager
def sampling_running(server: VLLMServer, every: float = 0.5) -> Iterator[list[float]]:
    """Sample ``vllm:num_requests_running`` every ``every`` seconds while the block runs (an
    independent check of B_obs); the sampler stops with the block."""
    samples: list[float] = []
    stop = threading.Event()

    def run() -> None:
        with requests.Session() as session:
            while not stop.wait(every):
                try:
                    with session.get(server.metrics_url, timeout=5) as resp:
                        value = running(resp.text)
                except requests.RequestException:
                    continue
                if value is not None:
                    samples.append(value)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=10)


def settled_page(server: VLLMServer, before: str, tokens: int, timeout: float = 15.0) -> str:
    """The /metrics page once its generation counter has gained the ``tokens`` the client
    received (stats of the last step may land just after its response): bounded wait."""
    want = families(before)["generation"] + tokens
    deadline = time.monotonic() + timeout
    while True:
        text = server.metrics_text()
        got = families(text)["generation"]
        if got >= want:
            assert got == want, f"the counters gained {got - want:g} tokens nobody asked for"
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"generation tokens reached {got:g}, not {want:g}, within {timeout:g} s")
        time.sleep(0.2)


class ControllerRun:
    """``specwise run`` (dry-run actuator) as a user starts it, running across the servers'
    restarts; its ``/recommendations`` is read after each phase. Its estimator window is
    the span the measured speedup is taken over, so the test leaves that long idle before
    each speculative phase: the measurement then covers that phase's load alone."""

    def __init__(self, server: VLLMServer, workdir: Path) -> None:
        from tests.servers import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "specwise.toml"
        config.write_text(
            f"""
[controller]
interval = "1s"
listen = "127.0.0.1:{self.port}"
stale_after = "10m"
state_file = {json.dumps(str(workdir / "state.json"))}

[source]
kind = "scrape"
urls = [{json.dumps(server.metrics_url)}]
timeout = "10s"

[estimator]
window = "{RECENT:g}s"
min_drafts = 50

[[classes]]
name = "tiny"
match = {json.dumps(CLASS_MATCH)}
cost = 0.3
"""
        )
        self.state_file = workdir / "state.json"
        self.log = workdir / "specwise-run.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "specwise", "run", "--config", str(config), "--nl"],
                stdout=subprocess.DEVNULL,
                stderr=out,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )
        self.status(after=0.0)  # up and ticking

    def status(self, *, after: float, timeout: float = 60.0) -> dict[str, Any]:
        """The state of the first tick that ended after ``after`` (Unix seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"specwise run exited: {self.log.read_text()[-2000:]}")
            try:
                with requests.get(f"{self.url}/recommendations", timeout=5) as resp:
                    state: dict[str, Any] = resp.json() if resp.status_code == 200 else {}
            except (requests.RequestException, ValueError):
                state = {}
            if (state.get("updated_at") or 0.0) > after:
                return state
            if time.monotonic() > deadline:
                pytest.fail(f"no controller tick after {after:.1f} within {timeout:g} s")
            time.sleep(0.5)

    def measured(self, after: float) -> dict[str, Any]:
        """The class's ``load`` block from the first tick after ``after``."""
        state = self.status(after=after)
        (tiny,) = [c for c in state["classes"] if c["class"] == "tiny"]
        load: dict[str, Any] = tiny.get("load") or {}
        return load

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def run_phase(server: VLLMServer, case: ServerCase, concurrency: int, n: int) -> Phase:
    t_before = time.time()
    before = server.metrics_text()
    with sampling_running(server) as samples:
        n, tokens, seconds, latency = load(
            server, n, concurrency, seed=1000 * concurrency, seconds=PHASE_SECONDS
        )
    after = settled_page(server, before, tokens)
    t_after = time.time()
    assert tokens == n * MAX_TOKENS
    return Phase(
        server=case.name,
        k=case.k,
        concurrency=concurrency,
        requests=n,
        tokens=tokens,
        seconds=seconds,
        latency=latency,
        before_text=before,
        after_text=after,
        t_before=t_before,
        t_after=t_after,
        running_samples=list(samples),
    )


@pytest.fixture(scope="module")
def phases(vllm: VLLMServer, tmp_path_factory: pytest.TempPathFactory) -> list[Phase]:
    """Every (server, concurrency) phase, the servers one after the other, with specwise run
    watching all of them (plain first) as one class."""
    out: list[Phase] = []
    vllm.ensure(SERVERS[0].spec(vllm))
    controller = ControllerRun(vllm, tmp_path_factory.mktemp("specwise-run"))
    try:
        for case in SERVERS:
            started = time.monotonic()
            vllm.ensure(case.spec(vllm))
            ready = time.monotonic() - started
            for concurrency, n in WARMUP:
                load(vllm, n, concurrency, seed=7)  # warm-up
            last_load = time.time()
            for concurrency, n in LEVELS:
                if case.k > 0:  # the controller's recent windows: this phase's alone
                    idle = last_load + RECENT + 1.0 - time.time()
                    if idle > 0:
                        time.sleep(idle)
                phase = run_phase(vllm, case, concurrency, n)
                last_load = time.time()
                if case.k > 0:
                    phase.controller_load = controller.measured(after=phase.t_after)
                out.append(phase)
                print(
                    f"{case.name} c={concurrency}: client {phase.client_tps:.0f} tok/s "
                    f"(ready after {ready:.0f} s)",
                    json.dumps({k: round(v, 4) for k, v in phase.identities().items()}),
                    json.dumps((phase.controller_load or {}).get("measured")),
                    flush=True,
                )
    finally:
        controller.stop()
    # the raw pages and client numbers, to replay specwise's side offline, and specwise
    # run's state file (its load window: the 1 s windows it priced, saved once a minute)
    stamp = int(time.time())
    text = json.dumps([dataclasses.asdict(p) for p in out]) + "\n"
    (CACHE / "load-phases.json").write_text(text)
    (CACHE / f"load-phases-{stamp}.json").write_text(text)
    if controller.state_file.exists():
        (CACHE / f"load-controller-{stamp}.json").write_bytes(controller.state_file.read_bytes())
    return out


def _interp_t0(plain: list[Phase], batch: float) -> float:
    """T(0, B) from the plain phases, linear in B between them (flat outside)."""
    pts = sorted((p.identities()["B_obs"], p.identities()["T_obs_ms"]) for p in plain)
    if batch <= pts[0][0]:
        return pts[0][1]
    for (b0, t0), (b1, t1) in itertools.pairwise(pts):
        if batch <= b1:
            return t0 + (t1 - t0) * (batch - b0) / (b1 - b0)
    return pts[-1][1]


@dataclass(frozen=True)
class Baseline:
    """The plain phases of one concurrency pooled (before and after the speculative ones)."""

    tps: float  # client-side tokens per second
    engine_load: float  # requests in the engine (Little)
    spread: float  # the plain phases' client tok/s, max / min - 1 (contention between them)


def baseline(phases: list[Phase], concurrency: int) -> Baseline:
    mine = [p for p in phases if p.k == 0 and p.concurrency == concurrency]
    assert mine, concurrency
    tps = sum(p.tokens for p in mine) / sum(p.seconds for p in mine)
    inference = sum(p.gains()["inference_sum"] for p in mine)
    each = [p.client_tps for p in mine]
    return Baseline(tps, inference / sum(p.seconds for p in mine), max(each) / min(each) - 1)


def test_identities_on_real_counters(phases: list[Phase]) -> None:
    plain = [p for p in phases if p.k == 0]
    rows: list[dict[str, Any]] = []
    for p in phases:
        ident = p.identities()
        client_ratio = p.client_tps / baseline(phases, p.concurrency).tps
        direct = ident["G_per_R"] / ident["T_obs_ms"] * _interp_t0(plain, ident["B_obs"])
        rows.append(
            {
                "server": p.server,
                "concurrency": p.concurrency,
                "client_tps": round(p.client_tps, 1),
                "client_ratio": round(client_ratio, 4),
                "direct_measured": round(direct, 4),
                **{k: round(v, 4) for k, v in ident.items()},
            }
        )
    for row in rows:
        print(json.dumps(row))
    for p, row in zip(phases, rows, strict=True):
        where = f"{p.server} at concurrency {p.concurrency}"
        g = p.gains()
        # every token is a request's first (no inter-token observation) or comes with one
        # observation per request-step, plus the drafts accepted in those steps; the n-gram
        # drafter's accepted tokens past max_tokens are counted but not delivered
        assert g["generation"] == p.tokens, where
        excess = g["itl_count"] + p.requests + g["accepted"] - g["generation"]
        assert 0 <= excess <= p.requests * p.k, (where, excess, g)
        row["accepted_past_max_tokens"] = excess
        assert (g["drafts"] > 0) == (p.k > 0), where
        # the per-request families the throughput measure reads: every request of the phase
        # finished inside it, with its tokens, and inference = prefill + decode
        assert g["inference_count"] == p.requests, (where, g)
        assert g["request_tokens"] == p.tokens, (where, g)
        parts = g["prefill_sum"] + g["decode_sum"]
        assert abs(g["inference_sum"] - parts) <= 0.01 * parts + 1e-3 * p.requests, (where, g)
        # requests per engine step: about 1 alone (prefill steps carry no decode), at most
        # the concurrency; with several clients usually above 1, but by how much depends on
        # how much CPU the API server gets (1.39 at 4 clients in a busy run, 0.99 in a run
        # with a benchmark beside it: the starved API server fed the engine one at a time)
        b = row["B_obs"]
        assert 0.85 < b <= (1.0 if p.concurrency == 1 else p.concurrency), (where, b)
        # tokens per second while decoding, B (G / R) / T_obs, against the client's: the
        # client's also spans prefill and the time between a response and the next request,
        # which a starved API server stretches without bound (1.52x in a busy run), so only
        # from below; Little's law below is the exact check
        assert row["counter_tps"] / row["client_tps"] > 0.7, (where, row)
        # Little's law: the client's tokens per second = requests in the engine x the rate
        # one request gets there (the two factors of the client-side ratio)
        little = row["engine_load"] * row["tokens_per_inference_second"]
        assert abs(little / row["client_tps"] - 1) < 0.02, (where, row)
    report("load identities", phases=rows)


def specwise_speedups(phases: list[Phase]) -> list[dict[str, Any]]:
    """specwise's measured speedup per speculative (server, concurrency), through its library:
    the class deltas of the phases, step observations, the step-cost fit over the plain
    server's windows (before and after) and that server's, and ``measured_speedup`` of each
    phase's window against the plain windows of the same concurrency (those the client-side
    ratio divides by)."""
    plain = [p for p in phases if p.k == 0]
    plain_obs = [p.observation() for p in plain]
    rows: list[dict[str, Any]] = []
    for case in SPEC_SERVERS:
        mine = [p for p in phases if p.server == case.name]
        obs = [p.observation() for p in mine]
        fit = fit_step_cost([*plain_obs, *obs], prior_cost=drafter_cost(case.preset))
        assert fit is not None
        assert fit.plain_observed
        for phase, o in zip(mine, obs, strict=True):
            same = [po for q, po in zip(plain, plain_obs, strict=True)
                    if q.concurrency == phase.concurrency]  # fmt: skip
            got = measured_speedup([*same, o], fit)
            assert got is not None, (case.name, phase.concurrency)
            assert got.k == case.k
            base = baseline(phases, phase.concurrency)
            before = next(q for q in plain if q.concurrency == phase.concurrency)
            ident = phase.identities()
            ctl = (phase.controller_load or {}).get("measured") or {}
            rows.append(
                {
                    "server": case.name,
                    "concurrency": phase.concurrency,
                    "client_tps": round(phase.client_tps, 1),
                    "plain_client_tps": round(base.tps, 1),
                    "plain_spread": round(base.spread, 4),
                    "client_ratio": round(phase.client_tps / base.tps, 4),
                    # against the plain phase before (the only one specwise run had seen)
                    "client_ratio_before": round(phase.client_tps / before.client_tps, 4),
                    "measured": round(got.value, 4),
                    "measured_interval": [round(got.low, 4), round(got.high, 4)],
                    "measure": got.measure,
                    "decode_only": round(got.decode_value or math.nan, 4),
                    "basis": got.basis,
                    "batch": round(got.batch, 3),
                    "engine_load": round(ident["engine_load"], 3),
                    "plain_engine_load": round(base.engine_load, 3),
                    "tokens_per_step": round(o.tokens_per_step or 0.0, 4),
                    "step_ms": round(1e3 * o.step_seconds, 3),
                    "prefill_ms": round(ident["prefill_ms_per_request"], 2),
                    "controller": ctl.get("value"),
                    "controller_measure": ctl.get("measure"),
                    "controller_basis": ctl.get("basis"),
                    "controller_batch": ctl.get("batch"),
                }
            )
    return rows


def test_measured_speedup_matches_client_side(phases: list[Phase]) -> None:
    rows = specwise_speedups(phases)
    problems = []
    for row in rows:
        where = f"{row['server']} at concurrency {row['concurrency']}"
        ratio = row["engine_load"] / row["plain_engine_load"]
        # one client too: the engine holds its one request except while the API server and
        # the client handle it (5-8% of the time here, 32% for the drafter's server in a
        # run at load average 6.5, whose API server got little CPU)
        row["comparable"] = 1 / COMPARABLE_LOAD <= ratio <= COMPARABLE_LOAD
        print(json.dumps(row))
        if not row["comparable"]:
            print(
                f"{where}: not comparable (the engine held {row['engine_load']} requests vs "
                f"plain {row['plain_engine_load']}: the client ratio is mostly that), not asserted"
            )
            continue
        assert row["basis"] == "baseline", row
        assert row["measure"] == "throughput", row
        # each surface against the client-side ratio over the same plain phases: specwise's
        # measurement of the phase (its collectors and estimation on the pages around it)
        # takes both plain phases (before and after), like the client ratio; specwise run had
        # seen the one before. The measurement must agree within TOLERANCE with the same
        # verdict. specwise run prices its own 1 s windows over the minutes it saw, and on
        # this VM plain decoding's rate swings by 30% from one second to the next and by up
        # to 2x between minutes (plain at 1 client: 370-728 tok/s across runs), so its value
        # is reported against the client's, and its verdict asserted
        for surface, client, strict in (
            ("measured", row["client_ratio"], True),
            ("controller", row["client_ratio_before"], False),
        ):
            measured = row[surface]
            if measured is None:
                problems.append(f"{where}: no measured speedup from the {surface}")
                continue
            off = abs(measured / client - 1.0)
            row[f"{surface}_vs_client"] = round(measured / client, 4)
            if off > TOLERANCE:
                text = f"{where}: {surface} {measured:.3f} vs client-side {client:.3f}"
                if strict:
                    problems.append(text)
                else:
                    print(f"{text} ({off:.0%} apart; reported, not asserted)")
            if abs(client - 1.0) > TOLERANCE and (measured > 1.0) != (client > 1.0):
                problems.append(f"{where}: {surface} says {measured:.3f}, client-side {client:.3f}")
    report("load: measured vs client-side speedup", rows=rows)
    compared = [r for r in rows if r["comparable"]]
    assert compared, "no level compared: every engine load differed by more than 10%"
    assert not problems, problems
