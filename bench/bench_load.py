"""Load-aware control quality: specwise vs static configurations and the oracle, over a day.

For the four load-varying scenarios (a simulated day each: peak-hours, heavy-drafter,
flat-load, schedule-flapping) it prints, as ratios to the oracle measured in the same run
(which knows alpha and the batch-size spread at every moment and restarts for free), the
tokens delivered per plain-decoding token by specwise in closed loop, the configuration the
engines start with, the best single k and the best static batch-size schedule in hindsight;
then restarts and band-edge (schedule-only) restarts per day. Targets (issue 14): >= 0.97 of
the oracle on every scenario; >= +10% over the best static k on peak-hours; >= 0.99 of the
best static k on flat-load; <= 1 band-edge restart per day on schedule-flapping. Exits 1
when one is missed.

``--plain-replicas N`` adds N replicas per class served without speculation and left alone
by the controller (a baseline pool: their windows measure plain decoding's T(0, B), which
specwise otherwise gets only from k = 0 windows of the class itself); they are not scored.

    .venv/bin/python bench/bench_load.py [--seed N] [--scenario NAME ...] [--plain-replicas N]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from specwise.sim.closed_loop import (
    RunResult,
    best_static_k,
    best_static_schedule,
    run_config,
    run_oracle,
    run_specwise,
)
from specwise.sim.scenarios import SCENARIOS

LOAD_SCENARIOS = ("peak-hours", "heavy-drafter", "flat-load", "schedule-flapping")


def _checks(
    name: str, sw: RunResult, best_k: RunResult, oracle: RunResult
) -> list[tuple[bool, str]]:
    o = oracle.tokens_per_target_time
    ratio = sw.tokens_per_target_time / o
    out = [(ratio >= 0.97, f"{ratio:.3f} of oracle (>= 0.97)")]
    vs_k = sw.tokens_per_target_time / best_k.tokens_per_target_time - 1.0
    if name == "peak-hours":
        out.append((vs_k >= 0.10, f"{vs_k:+.1%} vs best static k (>= +10%)"))
    if name == "flat-load":
        out.append((vs_k >= -0.01, f"{vs_k:+.1%} vs best static k (>= -1%)"))
    if name == "schedule-flapping":
        per_day = sw.schedule_restarts_per_day
        out.append((per_day <= 1.0, f"{per_day:.1f} band-edge restarts/day (<= 1)"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", action="append", choices=LOAD_SCENARIOS)
    parser.add_argument(
        "--plain-replicas",
        type=int,
        default=0,
        help="replicas per class without speculation (a baseline pool; default 0)",
    )
    args = parser.parse_args()
    names = args.scenario or list(LOAD_SCENARIOS)
    header = (
        f"{'scenario':<18} {'specwise':>8} {'start':>6} {'best k':>6} {'best sched':>10} "
        f"{'oracle':>6} {'restarts/d':>10} {'edge/d':>6}  verdict"
    )
    print(header)
    print("-" * len(header))
    failures = 0
    details: list[str] = []
    for name in names:
        scenario = SCENARIOS[name]
        if args.plain_replicas:
            scenario = dataclasses.replace(
                scenario,
                classes=tuple(
                    dataclasses.replace(c, plain_replicas=args.plain_replicas)
                    for c in scenario.classes
                ),
            )
        started = time.perf_counter()
        oracle = run_oracle(scenario, seed=args.seed)
        sw = run_specwise(scenario, seed=args.seed)
        start = run_config(
            scenario, {c.name: c.initial_config for c in scenario.classes}, seed=args.seed
        )
        best_k = best_static_k(scenario, seed=args.seed)
        best_sched = best_static_schedule(scenario, seed=args.seed)
        o = oracle.tokens_per_target_time

        def r(x: RunResult, o: float = o) -> float:
            return x.tokens_per_target_time / o

        checks = _checks(name, sw, best_k, oracle)
        ok = all(passed for passed, _ in checks)
        failures += not ok
        print(
            f"{name:<18} {r(sw):>8.3f} {r(start):>6.3f} {r(best_k):>6.3f} {r(best_sched):>10.3f} "
            f"{1.0:>6.3f} {sw.restarts_per_day:>10.1f} {sw.schedule_restarts_per_day:>6.1f}  "
            f"{'ok' if ok else 'MISSED'}: {', '.join(text for _, text in checks)} "
            f"({time.perf_counter() - started:.1f} s)"
        )
        details.append(
            f"{name}: oracle {o:.3f}x plain decoding; specwise ended at {sw.describe()}; "
            f"start {start.describe()}; best static k {best_k.describe()}; "
            f"best static schedule {best_sched.describe()}"
        )
    print()
    for line in details:
        print(line)
    print(f"\n{len(names) - failures}/{len(names)} scenarios meet their targets")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
