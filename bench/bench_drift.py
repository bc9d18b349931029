"""Drift detection: detection delay of a 0.1 step and false alarms on stationary streams.

Run: .venv/bin/python bench/bench_drift.py [--streams N]
Prints rates (not timings): the share of steps flagged within one and two windows, the
median delay in windows, and false alarms per 1,000 ticks on i.i.d. and bursty streams.
"""

from __future__ import annotations

import argparse

import numpy as np

from specwise.estimation.drift import DriftConfig, DriftDetector

WINDOW, TICK, DRAFTS, K = 600.0, 30.0, 100, 4


def alarms(rng: np.random.Generator, alphas: np.ndarray, drafts: int = DRAFTS) -> list[int]:
    reached = np.full(len(alphas), drafts, dtype=np.int64)
    succ = np.zeros(len(alphas), dtype=np.int64)
    for _ in range(K):
        reached = rng.binomial(reached, alphas)
        succ += reached
    fail = drafts - reached
    det = DriftDetector(DriftConfig(window_seconds=WINDOW))
    out = []
    for i in range(len(alphas)):
        st = det.update_trials(
            "c", time=(i + 1) * TICK, successes=float(succ[i]), failures=float(fail[i])
        )
        if st.alarm:
            out.append(i)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    per_window = int(WINDOW / TICK)
    change = 10 * per_window
    print(f"window {WINDOW:.0f} s, tick {TICK:.0f} s, {DRAFTS} drafts per tick, k = {K}")
    for before, after in [(0.7, 0.6), (0.5, 0.6), (0.85, 0.75), (0.3, 0.2)]:
        delays = []
        early = 0
        for _ in range(args.streams):
            alphas = np.where(np.arange(change + 4 * per_window) < change, before, after)
            found = alarms(rng, alphas)
            early += any(a < change for a in found)
            late = [a for a in found if a >= change]
            delays.append((late[0] - change + 1) / per_window if late else np.inf)
        d = np.asarray(delays)
        print(
            f"step {before} -> {after}: flagged within 1 window {np.mean(d <= 1):.3f}, "
            f"within 2 windows {np.mean(d <= 2):.3f}, median delay {np.median(d):.2f} windows, "
            f"alarms before the step in {early}/{args.streams} streams"
        )
    for label, make in [
        ("i.i.d. alpha 0.7", lambda n: np.full(n, 0.7)),
        ("i.i.d. alpha 0.3", lambda n: np.full(n, 0.3)),
        (
            "bursty alpha 0.7 +/- 0.04 per tick",
            lambda n: np.clip(0.7 + rng.normal(0, 0.04, n), 0, 1),
        ),
    ]:
        total = 0
        ticks = 0
        for _ in range(max(1, args.streams // 10)):
            total += len(alarms(rng, make(5000), drafts=400))
            ticks += 5000
        print(f"stationary {label}: {1000 * total / ticks:.3f} false alarms per 1,000 ticks")


if __name__ == "__main__":
    main()
