"""The simulator's cost side: load-varying classes, their vLLM V1 load and latency families,
schedules deployed, and closed-loop scoring against the truth (simulated time throughout)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from specwise.controller.actuators import FileActuator
from specwise.model import survival_curve
from specwise.sim.closed_loop import (
    best_static_k,
    best_static_schedule,
    run_config,
    run_oracle,
)
from specwise.sim.fleet import FileWatcher, SimActuator, SimFleet, SimServer, SimSource
from specwise.sim.load_truth import batch_pmf, load_rates
from specwise.sim.scenarios import (
    EAGLE_ON_BUSY_GPU,
    SCENARIOS,
    ClassScenario,
    Scenario,
    busy_hour,
    const,
    day_shape,
    get_scenario,
    iid,
)
from specwise.step_cost import BatchDistribution, SpecConfig, config_speedup

HOUR = 3600.0
SCHEDULE = ((1, 8, 4), (9, 256, 1))


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _load_class(mean: float = 8.0, k: int = 3, **kw: object) -> ClassScenario:
    fields: dict[str, object] = {
        "step_cost": EAGLE_ON_BUSY_GPU,
        "batch": const(mean),
        "batch_dispersion": 0.0,
    }
    fields.update(kw)
    return ClassScenario("chat", iid(const(0.8)), 0.2, k, **fields)  # type: ignore[arg-type]


def _scenario(*classes: ClassScenario, duration: float = HOUR) -> Scenario:
    return Scenario("t", "test", duration, classes)


def _families(page: bytes) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(page.decode()):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k in ("le", "position")))
            out.setdefault(s.name, {})[labels] = s.value
    return out


def _one(fams: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> float:
    return fams[name][()]


def test_families_are_consistent_with_the_true_step_time() -> None:
    """T_obs = ITL sum / count is T(k, B); B_obs = ITL count / iteration steps is B; tokens
    per request-step are 1 + accepted / drafts; time per output token = T_obs / that."""
    clock = Clock()
    fleet = SimFleet(_scenario(_load_class(8.0, 3)), clock=clock, seed=4)
    with SimServer(fleet) as server:
        clock.t += 1800
        resp = requests.get(server.urls[0], timeout=5)
    assert resp.status_code == 200
    fams = _families(resp.content)
    itl_sum = _one(fams, "vllm:inter_token_latency_seconds_sum")
    itl_count = _one(fams, "vllm:inter_token_latency_seconds_count")
    steps = _one(fams, "vllm:iteration_tokens_total_count")
    truth = EAGLE_ON_BUSY_GPU.step_time(3, 8)
    assert itl_sum / itl_count == pytest.approx(truth, rel=1e-9)  # every step takes T(3, 8)
    assert itl_count / steps == pytest.approx(8.0)
    # one engine step after another: steps x T(3, 8) fill the half hour (Poisson noise)
    assert steps * truth == pytest.approx(1800.0, rel=0.02)
    generated = _one(fams, "vllm:generation_tokens_total")
    drafts = _one(fams, "vllm:spec_decode_num_drafts_total")
    accepted = _one(fams, "vllm:spec_decode_num_accepted_tokens_total")
    assert drafts == itl_count  # one draft per request per step
    assert generated / itl_count == pytest.approx(1.0 + accepted / drafts)
    assert generated / itl_count == pytest.approx(1 + 0.8 + 0.64 + 0.512, rel=0.01)
    assert _one(fams, "vllm:iteration_tokens_total_sum") == pytest.approx(generated)
    tpot = _one(fams, "vllm:request_time_per_output_token_seconds_sum") / _one(
        fams, "vllm:request_time_per_output_token_seconds_count"
    )
    assert tpot == pytest.approx(truth / (generated / itl_count), rel=1e-3)
    decode_count = _one(fams, "vllm:request_decode_time_seconds_count")
    assert decode_count == pytest.approx(generated / 256, rel=0.05)
    # histograms: cumulative buckets ending at _count, and vLLM 0.32's bucket bounds
    for name in (
        "vllm:inter_token_latency_seconds",
        "vllm:iteration_tokens_total",
        "vllm:request_time_per_output_token_seconds",
        "vllm:request_decode_time_seconds",
    ):
        buckets = fams[f"{name}_bucket"]
        values = [v for _, v in sorted(buckets.items(), key=lambda kv: float(kv[0][0][1]))]
        assert values == sorted(values)
        assert values[-1] == _one(fams, f"{name}_count")
        assert f"{name}_created" in fams
    assert (("le", "16384.0"),) in fams["vllm:iteration_tokens_total_bucket"]
    assert (("le", "0.01"),) in fams["vllm:inter_token_latency_seconds_bucket"]
    assert (("le", "7680.0"),) in fams["vllm:request_decode_time_seconds_bucket"]


def test_spread_batches_and_a_schedule_match_the_truth() -> None:
    """Poisson batch sizes around 6 and a schedule (k = 4 up to 8, then 1): B_obs and T_obs
    from the counters equal the truth's step-weighted batch and request-weighted step."""
    cls = _load_class(6.0, 4, batch_dispersion=1.0, initial_schedule=SCHEDULE)
    clock = Clock()
    fleet = SimFleet(_scenario(cls), clock=clock, seed=2)
    clock.t += 3600
    fleet.advance()
    e = fleet.engines[0]
    rates = cls.rates_at(1800.0, SpecConfig(4, SCHEDULE))
    b_truth = float(np.sum(rates.steps * rates.sizes) / np.sum(rates.steps))
    t_truth = float(
        np.sum(rates.steps * rates.sizes * rates.step_seconds) / np.sum(rates.steps * rates.sizes)
    )
    assert e.itl_count / e.iteration.count == pytest.approx(b_truth, rel=0.01)
    assert e.itl_sum / e.itl_count == pytest.approx(t_truth, rel=0.01)
    # drafts at k = 1 (batch > 8) and at k = 4: between 1 and 4 draft tokens per draft
    assert 1.0 < e.draft_tokens / e.drafts < 4.0
    assert e.per_pos[0] > e.per_pos[1] / 0.8 * 1.05  # position 2 is reached only at k = 4
    assert e.stats.flap_seconds > 0.0  # batch sizes 8 and 9 are both visited


def test_batch_observed_tracks_the_schedule() -> None:
    """A busy hour (3 -> 48 running requests): B_obs per window and the running gauge
    follow the schedule."""
    cls = _load_class(
        k=0, batch=busy_hour(3.0, 48.0, start=HOUR, end=2 * HOUR, ramp=60.0), batch_dispersion=1.0
    )
    clock = Clock()
    fleet = SimFleet(_scenario(cls, duration=3 * HOUR), clock=clock, seed=1)
    source = SimSource(fleet)
    observed: list[float] = []
    running: list[float] = []
    last = None
    for minutes in (40, 50, 90, 100):
        clock.t = fleet.t0 + minutes * 60
        (snap,) = source.collect(clock.t)
        if minutes in (50, 100) and last is not None:
            r = snap.itl_seconds_count - last.itl_seconds_count  # type: ignore[operator]
            steps = snap.iteration_steps - last.iteration_steps  # type: ignore[operator]
            observed.append(r / steps)
        last = snap
        assert snap.running_requests is not None
        running.append(snap.running_requests)
    quiet, busy = observed
    # step-weighted mean batch given a busy engine: 3 / (1 - e^-3) when quiet
    assert quiet == pytest.approx(3.0 / (1.0 - math.exp(-3.0)), rel=0.05)
    assert busy == pytest.approx(48.0, rel=0.03)
    assert max(running[:2]) < 15
    assert min(running[2:]) > 25


def test_k_zero_engines_serve_load_families_and_load_only_snapshots() -> None:
    clock = Clock()
    fleet = SimFleet(_scenario(_load_class(8.0, 0)), clock=clock, seed=3)
    clock.t += 600
    page = fleet.render(0)
    assert page is not None
    assert b"spec_decode" not in page
    fams = _families(page)
    for name in (
        "vllm:num_requests_running",
        "vllm:generation_tokens_total",
        "vllm:iteration_tokens_total_count",
        "vllm:inter_token_latency_seconds_count",
        "vllm:request_time_per_output_token_seconds_count",
        "vllm:request_decode_time_seconds_count",
    ):
        assert name in fams, name
    itl = _one(fams, "vllm:inter_token_latency_seconds_sum") / _one(
        fams, "vllm:inter_token_latency_seconds_count"
    )
    assert itl == pytest.approx(EAGLE_ON_BUSY_GPU.step_time(0, 8))
    (snap,) = SimSource(fleet).collect(clock.t)
    assert snap.spec_families is False
    assert snap.k == 0
    assert (snap.drafts, snap.draft_tokens, snap.accepted) == (0.0, 0.0, 0.0)
    assert snap.iteration_steps
    assert snap.decode_seconds_count
    assert snap.generation_tokens == pytest.approx(snap.itl_seconds_count)


def test_constant_load_classes_keep_their_page() -> None:
    """Classes without ``batch`` keep today's page: no iteration or per-request families."""
    fleet = SimFleet(get_scenario("steady"), clock=Clock(), seed=0)
    page = fleet.render(0, fleet.t0 + 60)
    assert page is not None
    assert b"iteration_tokens" not in page
    assert b"request_decode_time" not in page
    assert b'vllm:num_requests_running{engine="0",model_name="code"} 8.0' in page


def test_schedule_deployed_through_the_actuator_and_band_edge_restarts() -> None:
    clock = Clock()
    fleet = SimFleet(_scenario(_load_class(6.0, 3)), clock=clock, restart_delay=60)
    actuator = SimActuator(fleet)
    spec = {"method": "eagle", "num_speculative_tokens": 4}
    table = [list(e) for e in SCHEDULE]
    actuator.apply(
        "chat",
        4,
        speculative_config={**spec, "num_speculative_tokens_per_batch_size": table},
        reason="t",
        now=clock.t,
    )
    assert fleet.deployed_config("chat") == SpecConfig(4, SCHEDULE)
    clock.t += 120
    fleet.advance()
    assert fleet.engines[0].config == SpecConfig(4, SCHEDULE)
    # the same configuration again: no restart; only the edge moved: a band-edge restart
    actuator.apply(
        "chat",
        4,
        speculative_config={**spec, "num_speculative_tokens_per_batch_size": table},
        reason="t",
        now=clock.t,
    )
    moved = [[1, 12, 4], [13, 256, 1]]
    actuator.apply(
        "chat",
        4,
        speculative_config={**spec, "num_speculative_tokens_per_batch_size": moved},
        reason="t",
        now=clock.t,
    )
    stats = fleet.engines[0].stats
    assert (stats.restarts, stats.schedule_restarts) == (2, 1)
    actuator.apply("chat", 0, speculative_config=None, reason="t", now=clock.t)
    assert fleet.deployed_config("chat") == SpecConfig(0)
    assert (stats.restarts, stats.schedule_restarts) == (3, 1)


def test_schedule_deployed_through_the_file_watcher(tmp_path: Path) -> None:
    clock = Clock()
    fleet = SimFleet(_scenario(_load_class(6.0, 3)), clock=clock, restart_delay=0)
    out = tmp_path / "configs"
    FileActuator(out).apply(
        "chat",
        4,
        speculative_config={
            "method": "eagle",
            "num_speculative_tokens": 4,
            "num_speculative_tokens_per_batch_size": [list(e) for e in SCHEDULE],
        },
        reason="t",
        now=clock.t,
    )
    assert FileWatcher(fleet, out).poll() == [("chat", 4)]
    assert fleet.deployed_config("chat") == SpecConfig(4, SCHEDULE)
    written = json.loads((out / "chat.json").read_text())
    assert written["speculative_config"]["num_speculative_tokens_per_batch_size"] == [
        list(e) for e in SCHEDULE
    ]


def test_bad_schedule_in_a_file_is_skipped_with_a_reason(tmp_path: Path) -> None:
    fleet = SimFleet(_scenario(_load_class(6.0, 3)), clock=Clock(), restart_delay=0)
    out = tmp_path / "configs"
    out.mkdir()
    (out / "chat.json").write_text(
        json.dumps(
            {
                "class": "chat",
                "speculative_config": {
                    "num_speculative_tokens": 2,
                    "num_speculative_tokens_per_batch_size": [[1, 8, 4]],
                },
            }
        )
    )
    watcher = FileWatcher(fleet, out)
    assert watcher.poll() == []
    assert "skipped until it changes" in watcher.skipped[0]
    assert fleet.deployed_config("chat") == SpecConfig(3)


def test_static_score_is_config_speedup_of_the_truth() -> None:
    """On a flat load a static configuration scores exactly ``config_speedup`` of the truth
    over the batch-size distribution (flapping priced apart: none here)."""
    survival = survival_curve(0.8, 8)
    single = _scenario(_load_class(8.0, 3), duration=HOUR)
    result = run_config(single, SpecConfig(3))
    expected = config_speedup(
        survival, SpecConfig(3), BatchDistribution.single(8), EAGLE_ON_BUSY_GPU
    )
    assert result.tokens_per_target_time == pytest.approx(expected, rel=1e-9)
    spread = _scenario(_load_class(6.0, 4, batch_dispersion=1.0, flap_penalty=0.0))
    pmf = batch_pmf(6.0)
    sizes = [b for b in range(1, pmf.size) if pmf[b] > 1e-9]
    dist = BatchDistribution(tuple(sizes), tuple(pmf[sizes] / pmf[sizes].sum()))
    for config in (SpecConfig(2), SpecConfig(4, SCHEDULE)):
        got = run_config(spread, config).tokens_per_target_time
        want = config_speedup(survival, config, dist, EAGLE_ON_BUSY_GPU)
        assert got == pytest.approx(want, rel=1e-6)
    # with flapping priced, the schedule's edge at 8/9 costs a little
    flapping = _scenario(_load_class(6.0, 4, batch_dispersion=1.0, flap_penalty=2.0))
    assert run_config(flapping, SpecConfig(4, SCHEDULE)).tokens_per_target_time < want


def test_flap_overhead_follows_the_share_at_the_edge() -> None:
    pmf = batch_pmf(8.5)
    survival = survival_curve(0.8, 4)
    edge = load_rates(pmf, SpecConfig(4, SCHEDULE), survival, EAGLE_ON_BUSY_GPU, flap_penalty=2.0)
    far = load_rates(
        pmf,
        SpecConfig(4, ((1, 30, 4), (31, 256, 1))),
        survival,
        EAGLE_ON_BUSY_GPU,
        flap_penalty=2.0,
    )
    assert edge.flap_overhead > 0.05
    assert far.flap_overhead < 1e-6


def test_oracle_beats_every_static_configuration() -> None:
    """A quiet hour, a busy half hour and quiet again: the oracle (alpha and B known,
    free restarts) is above every single k and the best static schedule, which beats the
    best single k."""
    cls = _load_class(
        k=4, batch=busy_hour(3.0, 24.0, start=HOUR, end=1.5 * HOUR), batch_dispersion=1.0
    )
    scenario = _scenario(cls, duration=2 * HOUR)
    oracle = run_oracle(scenario).tokens_per_target_time
    singles = {k: run_config(scenario, SpecConfig(k)).tokens_per_target_time for k in range(9)}
    best_k = best_static_k(scenario)
    schedule = best_static_schedule(scenario)
    # the hindsight search integrates the truth on a 5-minute grid: near-ties may swap
    assert best_k.tokens_per_target_time == pytest.approx(max(singles.values()), rel=2e-3)
    assert all(v <= oracle * (1 + 1e-9) for v in singles.values())
    assert schedule.tokens_per_target_time <= oracle * (1 + 1e-9)
    assert schedule.tokens_per_target_time > 1.02 * best_k.tokens_per_target_time
    ((_, config),) = schedule.configs
    assert config.schedule is not None
    assert config.k == 4
    assert (schedule.restarts, best_k.restarts) == (0, 0)


def test_load_scenarios_have_the_promised_shape() -> None:
    """peak-hours: best k 4 at batch 2 and 0 from 64; its day is quiet at night and busy
    in the afternoon; existing scenarios keep no load."""
    survival = survival_curve(0.8, 8)

    def best(batch: int) -> int:
        from specwise.step_cost import speedup_at_batch

        return max(range(9), key=lambda k: speedup_at_batch(survival, k, batch, EAGLE_ON_BUSY_GPU))

    assert best(2) == 4
    assert all(best(b) == 0 for b in (64, 96, 128, 256))
    peak = get_scenario("peak-hours").classes[0]
    assert peak.batch is not None
    assert peak.batch(3 * HOUR) < 5
    assert peak.batch(14 * HOUR) > 45
    assert get_scenario("heavy-drafter").classes[0].truth_cost.implied_draft_cost(1) == (
        pytest.approx(3 * 0.05, rel=0.01)
    )
    for name in ("steady", "drift", "drafter-failure", "losing", "ngram", "correlated"):
        assert all(c.batch is None for c in SCENARIOS[name].classes)
    demo = [c for c in get_scenario("demo").classes if c.batch is not None]
    assert [c.name for c in demo] == ["docs"]
    docs = demo[0]
    quiet = max(range(9), key=lambda k: docs.config_speedup_at(10 * 60, SpecConfig(k)))
    busy = max(range(9), key=lambda k: docs.config_speedup_at(70 * 60, SpecConfig(k)))
    assert (quiet, busy) == (4, 0)


def test_day_shape_is_a_repeating_day() -> None:
    shape = day_shape(2.0, 50.0, peaks=(14.0,), width=2.0)
    assert shape(3 * HOUR) == pytest.approx(2.0, abs=0.01)
    assert shape(14 * HOUR) == pytest.approx(50.0)
    assert shape(14 * HOUR + 24 * HOUR) == pytest.approx(50.0)


def test_static_configuration_per_class_leaves_others_alone() -> None:
    scenario = dataclasses.replace(
        get_scenario("demo"), duration=600.0
    )  # three constant-load classes and the load-varying one
    result = run_config(scenario, {"docs": SpecConfig(2)})
    configs = dict(result.configs)
    assert configs["docs"] == SpecConfig(2)
    assert configs["code"] == SpecConfig(3)
    assert result.tokens_per_target_time > 1.0


def test_plain_replicas_stay_plain_and_are_not_scored() -> None:
    """A baseline replica without speculation: it serves load-only snapshots of the same
    class, configuration changes leave it alone, and the score counts only the others."""
    cls = _load_class(8.0, 3, plain_replicas=1)
    clock = Clock()
    fleet = SimFleet(_scenario(cls), clock=clock, restart_delay=0)
    assert fleet.set_config("chat", SpecConfig(4, SCHEDULE)) == 1
    assert [e.managed for e in fleet.engines] == [True, False]
    assert fleet.engines[1].target_config == SpecConfig(0)
    clock.t += 600
    snaps = SimSource(fleet).collect(clock.t)
    assert [s.labels["model_name"] for s in snaps] == ["chat", "chat"]
    assert [s.spec_families for s in snaps] == [True, False]
    alone = run_config(_scenario(_load_class(8.0, 3)), SpecConfig(3))
    with_plain = run_config(_scenario(cls), SpecConfig(3))
    assert with_plain.tokens_per_target_time == pytest.approx(alone.tokens_per_target_time)


@pytest.mark.parametrize("config", [SpecConfig(0), SpecConfig(3), SpecConfig(4, SCHEDULE)])
def test_speculative_config_round_trip(config: SpecConfig) -> None:
    from specwise.sim.fleet import config_from_speculative, speculative_config_of

    assert config_from_speculative(speculative_config_of(config, "eagle")) == config
