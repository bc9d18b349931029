"""Control quality: specwise in closed loop vs fixed k, the best fixed k, and the oracle.

For every scenario of the suite (six simulated hours each) it prints tokens per unit of
target time as a ratio to the oracle (which knows alpha at every moment and restarts for
free), and restarts per hour. Targets (issue 5): specwise >= 0.95 of the oracle on every
scenario; >= 10% above fixed k = 5 where the drafter degrades; within 2% of k = 0 where
speculation loses.

    .venv/bin/python bench/bench_control.py [--seed N] [--scenario NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import time

from specwise.sim.closed_loop import run_fixed, run_oracle, run_specwise
from specwise.sim.scenarios import SCENARIOS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    # the load-varying scenarios have their own benchmark (bench/bench_load.py)
    names = args.scenario or [
        n for n, s in SCENARIOS.items() if n != "demo" and all(c.batch is None for c in s.classes)
    ]
    header = (
        f"{'scenario':<16} {'specwise':>9} {'k=3':>7} {'k=5':>7} {'best k':>9} "
        f"{'oracle':>7} {'restarts/h':>10}  verdict"
    )
    print(header)
    print("-" * len(header))
    failures = 0
    for name in names:
        scenario = SCENARIOS[name]
        started = time.perf_counter()
        oracle = run_oracle(scenario, seed=args.seed)
        sw = run_specwise(scenario, seed=args.seed)
        fixed = {k: run_fixed(scenario, k, seed=args.seed) for k in range(0, 9)}
        best_k = max(fixed, key=lambda k: fixed[k].tokens_per_target_time)
        o = oracle.tokens_per_target_time

        def r(x: float, o: float = o) -> float:
            return x / o

        checks = [r(sw.tokens_per_target_time) >= 0.95]
        notes = [f"{r(sw.tokens_per_target_time):.3f} of oracle"]
        if name == "drafter-failure":
            gain = sw.tokens_per_target_time / fixed[5].tokens_per_target_time - 1
            checks.append(gain >= 0.10)
            notes.append(f"{gain:+.1%} vs k=5")
        if name == "losing":
            gap = sw.tokens_per_target_time / fixed[0].tokens_per_target_time - 1
            checks.append(gap >= -0.02)
            notes.append(f"{gap:+.1%} vs k=0")
        ok = all(checks)
        failures += not ok
        print(
            f"{name:<16} {r(sw.tokens_per_target_time):>9.3f} "
            f"{r(fixed[3].tokens_per_target_time):>7.3f} "
            f"{r(fixed[5].tokens_per_target_time):>7.3f} "
            f"{r(fixed[best_k].tokens_per_target_time):>6.3f}@{best_k:<2} {1.0:>7.3f} "
            f"{sw.restarts_per_hour:>10.2f}  {'ok' if ok else 'MISSED'}: {', '.join(notes)} "
            f"({time.perf_counter() - started:.1f} s)"
        )
    print(f"\n{len(names) - failures}/{len(names)} scenarios meet their targets")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
