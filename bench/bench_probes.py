"""Probes (#15): their cost where nothing changes, their gain where something did.

Each scenario runs twice in simulated time, the same seed: specwise with the default
``[probes]`` (re-enable probes, backoff 6 h -> 12 h -> 24 h, 5% of a day at most) and
today's behaviour (``[probes] enabled = false``: a class turned off stays off). Both are
scored against the oracle that knows the truth every minute and restarts for free.

Targets: where nothing changes, probing loses <= 1% of oracle against never probing; on
"repair", >= 0.90 of oracle over the day and the class back on within the first backoff
step (6 h) after the fix. Run: ``.venv/bin/python bench/bench_probes.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from specwise.controller.loop import Controller, class_config_from
from specwise.sim.closed_loop import T0, _score, closed_loop_config, run_oracle
from specwise.sim.fleet import SimActuator, SimFleet, SimSource
from specwise.sim.scenarios import (
    HOUR,
    PROBE_SCENARIOS,
    SCENARIOS,
    ClassScenario,
    Scenario,
    const,
    iid,
    step,
)

DAY = 24 * HOUR
#: when the drafter is fixed or replaced in each probe scenario (seconds from the start)
FIXED_AT = {"repair": 5 * HOUR, "new-drafter": 3 * HOUR, "replicas": 5 * HOUR}
BACKOFF = 6 * HOUR


def unchanged() -> dict[str, Scenario]:
    """Scenarios where nothing changes for the better: a probe can only cost."""
    return {
        "steady": SCENARIOS["steady"],
        "broken-for-good": Scenario(
            "broken-for-good",
            "drafter-failure over a day: broken after one hour, never fixed",
            DAY,
            (ClassScenario("code", iid(step(0.75, 0.02, HOUR)), cost=0.05, initial_k=5),),
        ),
        "losing-day": Scenario(
            "losing-day",
            "losing over a day: a small draft model at alpha 0.25, cost 0.4",
            DAY,
            (ClassScenario("summarize", iid(const(0.25)), cost=0.4, initial_k=3),),
        ),
    }


@dataclass(frozen=True)
class Run:
    ratio: float  # tokens per target time over the oracle's
    restarts: int
    probes: int
    back_on: float | None  # seconds after FIXED_AT until every replica runs k > 0


def run(scenario: Scenario, *, probes: bool, oracle: float, seed: int) -> Run:
    t = [T0]
    fleet = SimFleet(scenario, clock=lambda: t[0], seed=seed, restart_delay=120.0)
    cfg = closed_loop_config(scenario, probes={"enabled": probes})
    ctl = Controller(
        cfg,
        source=SimSource(fleet),
        actuator=SimActuator(fleet),
        clock=lambda: t[0],
        classes=class_config_from(cfg),
    )
    fixed = FIXED_AT.get(scenario.name)
    name = scenario.classes[0].name
    back_on = None
    end = T0 + scenario.duration
    while t[0] < end:
        t[0] = min(end, t[0] + 60.0)
        ctl.step()
        since = t[0] - T0 - (fixed or 0.0)
        if fixed is not None and back_on is None and since >= 0 < min(fleet.deployed_ks(name)):
            back_on = since
    fleet.advance(end)
    score = _score("specwise", fleet, scenario)
    n = sum(len(s.history) for s in ctl.probes.states.values())
    return Run(score.tokens_per_target_time / oracle, score.restarts, n, back_on)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    header = (
        f"{'scenario':<16} {'probes':>7} {'never':>7} {'gain':>7} {'back on':>9} "
        f"{'probes':>6} {'restarts':>8}  verdict"
    )
    print(
        "specwise with [probes] defaults vs never probing (today), both / oracle; "
        "back on: hours from the fix until every replica runs k > 0"
    )
    print(header)
    print("-" * len(header))
    failures = 0
    cases = [(s, False) for s in unchanged().values()]
    cases += [(s, True) for s in PROBE_SCENARIOS.values()]
    for scenario, changed in cases:
        started = time.perf_counter()
        oracle = run_oracle(scenario, seed=args.seed).tokens_per_target_time
        with_probes = run(scenario, probes=True, oracle=oracle, seed=args.seed)
        never = run(scenario, probes=False, oracle=oracle, seed=args.seed)
        gain = with_probes.ratio - never.ratio  # < 0: what probing cost
        back = "-" if with_probes.back_on is None else f"{with_probes.back_on / HOUR:.1f} h"
        if changed:
            ok = with_probes.ratio >= 0.90 and (
                with_probes.back_on is not None and with_probes.back_on <= BACKOFF
            )
            note = "repaired class back on within the first backoff step, >= 0.90 of oracle"
        else:
            ok = gain >= -0.01
            note = "probing costs <= 1% of oracle"
        failures += not ok
        print(
            f"{scenario.name:<16} {with_probes.ratio:>7.3f} {never.ratio:>7.3f} {gain:>+7.3f} "
            f"{back:>9} {with_probes.probes:>6} {with_probes.restarts:>8}  "
            f"{'ok' if ok else 'MISSED'}: {note} ({time.perf_counter() - started:.0f} s)"
        )
    print(f"\n{len(cases) - failures}/{len(cases)} scenarios meet their targets")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
