"""Closed-loop runs of a scenario: specwise, fixed k, and the oracle, scored alike.

Every run drives the same simulated fleet in simulated time and scores it by the tokens the
deployed k yields per unit of target time (in expectation, so sampling noise in the counters
drives the controller but not the score), relative to plain decoding. The oracle knows the
true survival curve at every moment and restarts for free; fixed-k runs never restart.

Load-varying classes (``ClassScenario.batch``) are scored with the cost side's truth: plain
decoding's tokens are the integral of B / T(0, B) over the run (restart downtime included,
so restarts cost what they cost), the configuration's expected tokens come from
:mod:`specwise.sim.load_truth` (schedules, k = 0 bands and flapping included). There the
oracle knows alpha and the batch-size spread at every moment and deploys the best
configuration for it (any single k, the per-batch-size best schedule, or the best static
schedule) for free; :func:`run_config` runs one configuration for the whole run, and
:func:`best_static_k` / :func:`best_static_schedule` find the best ones in hindsight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from specwise.config import PolicySettings, SpecwiseConfig, parse_config
from specwise.controller.loop import Controller, class_config_from
from specwise.policies.schedule import compress_schedule
from specwise.sim.fleet import SimActuator, SimFleet, SimSource
from specwise.sim.load_truth import step_times
from specwise.sim.scenarios import ClassScenario, Scenario
from specwise.step_cost import SpecConfig

__all__ = [
    "RunResult",
    "best_static_k",
    "best_static_schedule",
    "closed_loop_config",
    "run_config",
    "run_fixed",
    "run_oracle",
    "run_specwise",
]

T0 = 1_800_000_000.0


@dataclass(frozen=True)
class RunResult:
    """``tokens_per_target_time``: tokens per plain-decode token slot (1.0 = no speculation)."""

    label: str
    tokens_per_target_time: float
    restarts: int
    hours: float
    #: restarts that changed only the batch-size schedule (band-edge moves)
    schedule_restarts: int = 0
    #: the configuration of each class at the end of the run (static runs: the one run)
    configs: tuple[tuple[str, SpecConfig], ...] = ()

    @property
    def restarts_per_hour(self) -> float:
        return self.restarts / self.hours if self.hours else 0.0

    @property
    def restarts_per_day(self) -> float:
        return 24.0 * self.restarts_per_hour

    @property
    def schedule_restarts_per_day(self) -> float:
        return 24.0 * self.schedule_restarts / self.hours if self.hours else 0.0

    def describe(self) -> str:
        """The configurations, one ``class: config`` each."""
        return "; ".join(f"{name}: {config.describe()}" for name, config in self.configs)


class _Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def _score(label: str, fleet: SimFleet, scenario: Scenario) -> RunResult:
    engines = [e for e in fleet.engines if e.managed]  # plain baseline replicas are not scored
    tokens = sum(e.stats.expected_tokens for e in engines)
    # plain decoding yields one token per slot of a constant-load class (the load of the
    # suite's classes is constant), and B / T(0, B) per second of a load-varying one
    slots = sum(
        e.stats.plain_tokens
        if e.spec.batch is not None
        else e.spec.load(0.0) * e.stats.target_seconds
        for e in engines
    )
    restarts = sum(e.stats.restarts for e in engines)
    schedule_restarts = sum(e.stats.schedule_restarts for e in engines)
    configs = tuple((c.name, fleet.deployed_config(c.name)) for c in scenario.classes)
    return RunResult(
        label,
        tokens / slots,
        restarts,
        scenario.duration / 3600.0,
        schedule_restarts=schedule_restarts,
        configs=configs,
    )


def closed_loop_config(scenario: Scenario, **overrides: Any) -> SpecwiseConfig:
    """The controller settings the benchmark runs with (durations in simulated seconds)."""
    data: dict[str, Any] = {
        "controller": {"interval": "1m", "stale_after": "5m"},
        "source": {"urls": ["http://127.0.0.1:1/metrics"]},  # replaced by the in-process source
        "estimator": {"window": "10m", "min_drafts": 500},
        "policy": {"k_max": 8, "min_gain": 0.03, "min_dwell": "20m", "max_changes_per_hour": 2},
        "classes": [
            {
                "name": c.name,
                "cost": c.cost,
                "k": c.initial_k,
                "speculative_config": {"method": "x"},
            }
            for c in scenario.classes
        ],
    }
    if any(c.batch is not None for c in scenario.classes):
        # the load-aware [policy] keys, where this build has them (docs: config reference)
        known = {f.name for f in dataclasses.fields(PolicySettings)}
        wanted: dict[str, Any] = {
            "schedules": True,
            "max_batch_size": max(c.max_batch for c in scenario.classes),
            "load_horizon": "24h",
        }
        data["policy"].update({key: v for key, v in wanted.items() if key in known})
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return parse_config(data)


def run_specwise(
    scenario: Scenario,
    *,
    seed: int = 0,
    tick: float = 60.0,
    restart_delay: float = 120.0,
    config: SpecwiseConfig | None = None,
) -> RunResult:
    """The controller steering the fleet, one tick every ``tick`` simulated seconds."""
    clock = _Clock()
    fleet = SimFleet(scenario, clock=clock, seed=seed, restart_delay=restart_delay)
    cfg = config or closed_loop_config(scenario)
    controller = Controller(
        cfg,
        source=SimSource(fleet),
        actuator=SimActuator(fleet),
        clock=clock,
        classes=class_config_from(cfg),
    )
    end = T0 + scenario.duration
    while clock.t < end:
        clock.t = min(end, clock.t + tick)
        controller.step()
    fleet.advance(end)
    return _score("specwise", fleet, scenario)


def run_fixed(scenario: Scenario, k: int, *, seed: int = 0) -> RunResult:
    """Every class at a fixed k for the whole run (k = 0: no speculation)."""
    fixed = dataclasses.replace(
        scenario, classes=tuple(dataclasses.replace(c, initial_k=k) for c in scenario.classes)
    )
    clock = _Clock()
    fleet = SimFleet(fixed, clock=clock, seed=seed)
    fleet.advance(T0 + scenario.duration)
    return _score(f"fixed k={k}", fleet, fixed)


def run_oracle(
    scenario: Scenario, *, k_max: int = 8, seed: int = 0, tick: float = 60.0
) -> RunResult:
    """Knows the true survival curve (and, for load-varying classes, the batch-size spread)
    every ``tick`` and restarts for free. A load-varying class gets the best of: every
    single k, the best k per batch size at that moment as a schedule, and the best static
    schedule in hindsight (so the oracle is never below a static configuration)."""
    clock = _Clock()
    fleet = SimFleet(scenario, clock=clock, seed=seed, restart_delay=0.0)
    static = (
        _hindsight(scenario, k_max, 300.0, schedules=True)
        if any(c.batch is not None for c in scenario.classes)
        else {}
    )
    end = T0 + scenario.duration
    while clock.t < end:
        mid = clock.t - T0 + tick / 2
        for spec in scenario.classes:
            if spec.batch is None:
                best = max(range(k_max + 1), key=lambda k: spec.speedup_at(mid, k))
                fleet.set_k(spec.name, best, clock.t)
                continue
            candidates = {SpecConfig(k) for k in range(k_max + 1)}
            candidates.add(static[spec.name])
            candidates.add(_moment_schedule(spec, mid, k_max))
            choice = max(candidates, key=lambda c: spec.config_speedup_at(mid, c))
            fleet.set_config(spec.name, choice, clock.t)
        clock.t = min(end, clock.t + tick)
        fleet.advance(clock.t)
    result = _score("oracle", fleet, scenario)
    return dataclasses.replace(result, restarts=0, schedule_restarts=0)


def _moment_schedule(spec: ClassScenario, t: float, k_max: int) -> SpecConfig:
    """The best k at each batch size at time t, as a schedule (flapping not priced)."""
    grid = _Grid(
        np.asarray([t]),
        1.0,
        spec.batch_pmf_at(t)[None, :],
        np.asarray([spec.survival(t, k_max)], dtype=float),
    )
    table = _per_batch_table(spec, grid, k_max)
    share = grid.pmfs[0]
    visited = [b for b in range(1, table.shape[0]) if share[b] > 1e-6]
    if not visited:
        return SpecConfig(0)
    best_k = [0] * (table.shape[0] - 1)
    last = int(np.argmax(table[visited[0]]))
    for b in range(1, table.shape[0]):
        if share[b] > 1e-6:
            last = int(np.argmax(table[b]))
        best_k[b - 1] = last
    return _schedule_from(best_k)


ConfigChoice = SpecConfig | Mapping[str, SpecConfig]


def _static(scenario: Scenario, config: ConfigChoice) -> Scenario:
    def pick(c: ClassScenario) -> SpecConfig:
        return config if isinstance(config, SpecConfig) else config.get(c.name, c.initial_config)

    return dataclasses.replace(
        scenario,
        classes=tuple(
            dataclasses.replace(c, initial_k=pick(c).k, initial_schedule=pick(c).schedule)
            for c in scenario.classes
        ),
    )


def run_config(
    scenario: Scenario, config: ConfigChoice, *, seed: int = 0, label: str | None = None
) -> RunResult:
    """One configuration for the whole run, never restarted: the same for every class, or
    one per class name (classes not named keep their starting configuration)."""
    fixed = _static(scenario, config)
    clock = _Clock()
    fleet = SimFleet(fixed, clock=clock, seed=seed)
    fleet.advance(T0 + scenario.duration)
    if label is None:
        label = config.describe() if isinstance(config, SpecConfig) else "static"
    return _score(label, fleet, fixed)


# -- hindsight: the truth integrated over the run, per class (no sampling) -----------------


@dataclass(frozen=True)
class _Grid:
    """A load-varying class sampled every ``tick`` seconds of the run."""

    times: np.ndarray  # mid-points, seconds since the start
    dt: float
    pmfs: np.ndarray  # (times, max_batch + 1)
    survival: np.ndarray  # (times, k_max): s_1..s_kmax at each time


def _grid(spec: ClassScenario, duration: float, k_max: int, tick: float) -> _Grid:
    n = max(1, round(duration / tick))
    dt = duration / n
    times = (np.arange(n) + 0.5) * dt
    pmfs = np.stack([spec.batch_pmf_at(float(t)) for t in times])
    survival = np.asarray([spec.survival(float(t), k_max) for t in times], dtype=float)
    return _Grid(times, dt, pmfs, survival)


def _class_score(spec: ClassScenario, grid: _Grid, config: SpecConfig) -> tuple[float, float]:
    """(expected tokens, plain tokens) of a static configuration over the grid."""
    tokens = plain = 0.0
    for t in grid.times:
        rates = spec.rates_at(float(t), config)
        tokens += rates.tokens * grid.dt
        plain += rates.plain * grid.dt
    return tokens, plain


def _per_batch_table(spec: ClassScenario, grid: _Grid, k_max: int) -> np.ndarray:
    """tokens[b, k] over the run when batch size b runs k (column 0: a k = 0 band under a
    loaded drafter), ignoring flapping: sum_t dt p_t(b) b E_t(k) / T(k, b)."""
    sizes = np.arange(grid.pmfs.shape[1], dtype=np.int64)
    sizes[0] = 1  # batch size 0 delivers nothing; any step time will do
    cost = spec.truth_cost
    weights = grid.pmfs * grid.dt  # (times, sizes): seconds at each size
    weights[:, 0] = 0.0
    expected = np.concatenate(
        (np.ones((grid.times.size, 1)), 1.0 + np.cumsum(grid.survival, axis=1)), axis=1
    )  # (times, k_max + 1)
    table = np.zeros((sizes.size, k_max + 1))
    t0 = step_times(cost, np.zeros_like(sizes), sizes)
    table[:, 0] = weights.sum(axis=0) * sizes / (t0 * (1.0 + spec.off_overhead))
    for k in range(1, k_max + 1):
        tk = step_times(cost, np.full_like(sizes, k), sizes)
        table[:, k] = (weights * expected[:, k : k + 1]).sum(axis=0) * sizes / tk
    return table


def _schedule_from(best_k: list[int]) -> SpecConfig:
    top = max(best_k)
    if top == 0:
        return SpecConfig(0)
    entries = compress_schedule(best_k)
    if len(entries) == 1:
        return SpecConfig(top)
    return SpecConfig(top, entries)


def _best_schedule_for(
    spec: ClassScenario, grid: _Grid, k_max: int, *, min_share: float = 1e-4
) -> SpecConfig:
    """The best static configuration of one class in hindsight: the per-batch-size best k
    over the run, then bands merged greedily while that gains (flapping, overhead), compared
    with every single k and with no speculation."""
    table = _per_batch_table(spec, grid, k_max)
    share = grid.pmfs.sum(axis=0)
    share = share / share.sum()
    best_k: list[int] = []
    for b in range(1, table.shape[0]):
        if share[b] < min_share and best_k:
            best_k.append(best_k[-1])  # sizes the run never visits follow their neighbour
        else:
            best_k.append(int(np.argmax(table[b])))
    # sizes below the first visited one follow it
    first = next((b for b in range(1, table.shape[0]) if share[b] >= min_share), 1)
    best_k[: first - 1] = [best_k[first - 1]] * (first - 1)

    def value(config: SpecConfig) -> float:
        tokens, plain = _class_score(spec, grid, config)
        return tokens / plain if plain > 0 else 1.0

    candidates = {SpecConfig(k) for k in range(k_max + 1)}
    current = _schedule_from(best_k)
    current_value = value(current)
    improved = True
    while improved and current.schedule:
        improved = False
        entries = list(current.schedule)
        trials: list[SpecConfig] = []
        for i in range(len(entries)):  # merge band i into a neighbour
            for j in (i - 1, i + 1):
                if 0 <= j < len(entries):
                    ks = [e[2] for e in entries]
                    ks[i] = ks[j]
                    trials.append(
                        _schedule_from(
                            [ks[n] for n, e in enumerate(entries) for _ in range(e[0], e[1] + 1)]
                        )
                    )
        for trial in trials:
            v = value(trial)
            if v > current_value + 1e-12:
                current, current_value, improved = trial, v, True
    scored = {c: value(c) for c in candidates}
    scored[current] = current_value
    return max(scored, key=lambda c: scored[c])


@lru_cache(maxsize=32)
def _hindsight(
    scenario: Scenario, k_max: int, tick: float, *, schedules: bool
) -> dict[str, SpecConfig]:
    """The best static configuration per class (single k only unless ``schedules``)."""
    out: dict[str, SpecConfig] = {}
    for spec in scenario.classes:
        if spec.batch is None:  # constant load: the best k by the true speedup over time
            n = max(1, round(scenario.duration / tick))
            times = [(i + 0.5) * scenario.duration / n for i in range(n)]
            k = max(
                range(k_max + 1),
                key=lambda k: sum(spec.speedup_at(t, k) * spec.load(t) for t in times),
            )
            out[spec.name] = SpecConfig(k)
            continue
        grid = _grid(spec, scenario.duration, k_max, tick)
        if schedules:
            out[spec.name] = _best_schedule_for(spec, grid, k_max)
        else:

            def value(k: int, spec: ClassScenario = spec, grid: _Grid = grid) -> float:
                tokens, plain = _class_score(spec, grid, SpecConfig(k))
                return tokens / plain if plain > 0 else 1.0

            out[spec.name] = SpecConfig(max(range(k_max + 1), key=value))
    return out


def best_static_k(
    scenario: Scenario, *, k_max: int = 8, seed: int = 0, tick: float = 300.0
) -> RunResult:
    """The best single k per class in hindsight (knowing the whole run), run as one
    static configuration; label ``best static k``."""
    configs = dict(_hindsight(scenario, k_max, tick, schedules=False))
    return run_config(scenario, configs, seed=seed, label="best static k")


def best_static_schedule(
    scenario: Scenario, *, k_max: int = 8, seed: int = 0, tick: float = 300.0
) -> RunResult:
    """The best static configuration per class in hindsight, a batch-size schedule allowed
    (a single k or no speculation where that is better), run for the whole run."""
    configs = dict(_hindsight(scenario, k_max, tick, schedules=True))
    return run_config(scenario, configs, seed=seed, label="best static schedule")
