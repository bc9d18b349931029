"""Fault soak benchmark: the controller against a served, misbehaving fleet for 10,000+ ticks.

Prints ticks, simulated hours, faults injected by kind, actuations per class, the invariant
checks made and the violations (target: 0). See :mod:`specwise.sim.soak` for the faults and
the invariants. Usage: ``.venv/bin/python bench/bench_soak.py [--ticks 10000] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import sys
import time

from specwise.sim.soak import run_soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--interval", type=float, default=30.0, help="simulated seconds a tick")
    parser.add_argument("--fault-rate", type=float, default=0.08)
    args = parser.parse_args()
    started = time.perf_counter()
    r = run_soak(
        ticks=args.ticks, seed=args.seed, interval=args.interval, fault_rate=args.fault_rate
    )
    elapsed = time.perf_counter() - started
    print(f"ticks {r.ticks} ({r.simulated_hours:.0f} simulated hours) in {elapsed:.0f} s")
    print("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(r.faults.items())))
    print(f"faults in all: {sum(r.faults.values())}")
    print("deploys per class: " + ", ".join(f"{k} {v}" for k, v in sorted(r.actuations.items())))
    print(f"failed deploys (injected): {r.actuator_failures}")
    print(f"checks: deployed_k vs truth {r.checked_deployed}, stale when gone {r.checked_stale}")
    print(f"violations: {len(r.violations)}")
    for v in r.violations[:20]:
        print(f"  {v}")
    return 1 if r.violations else 0


if __name__ == "__main__":
    sys.exit(main())
