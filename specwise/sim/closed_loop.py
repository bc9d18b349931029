"""Closed-loop runs of a scenario: specwise, fixed k, and the oracle, scored alike.

Every run drives the same simulated fleet in simulated time and scores it by the tokens the
deployed k yields per unit of target time (in expectation, so sampling noise in the counters
drives the controller but not the score), relative to plain decoding. The oracle knows the
true survival curve at every moment and restarts for free; fixed-k runs never restart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from specwise.config import SpecwiseConfig, parse_config
from specwise.controller.loop import Controller, class_config_from
from specwise.sim.fleet import SimActuator, SimFleet, SimSource
from specwise.sim.scenarios import Scenario

__all__ = ["RunResult", "closed_loop_config", "run_fixed", "run_oracle", "run_specwise"]

T0 = 1_800_000_000.0


@dataclass(frozen=True)
class RunResult:
    """``tokens_per_target_time``: tokens per plain-decode token slot (1.0 = no speculation)."""

    label: str
    tokens_per_target_time: float
    restarts: int
    hours: float

    @property
    def restarts_per_hour(self) -> float:
        return self.restarts / self.hours if self.hours else 0.0


class _Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def _score(label: str, fleet: SimFleet, scenario: Scenario) -> RunResult:
    tokens = sum(e.stats.expected_tokens for e in fleet.engines)
    slots = sum(
        e.spec.load(0.0) * e.stats.target_seconds for e in fleet.engines
    )  # loads are constant in the suite; plain decoding yields one token per slot
    restarts = sum(e.stats.restarts for e in fleet.engines)
    return RunResult(label, tokens / slots, restarts, scenario.duration / 3600.0)


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
    """Knows the true survival curve every ``tick`` and restarts for free."""
    clock = _Clock()
    fleet = SimFleet(scenario, clock=clock, seed=seed, restart_delay=0.0)
    end = T0 + scenario.duration
    while clock.t < end:
        mid = clock.t - T0 + tick / 2
        for spec in scenario.classes:
            best = max(range(k_max + 1), key=lambda k: spec.speedup_at(mid, k))
            fleet.set_k(spec.name, best, clock.t)
        clock.t = min(end, clock.t + tick)
        fleet.advance(clock.t)
    result = _score("oracle", fleet, scenario)
    return dataclasses.replace(result, restarts=0)
