"""Estimator + policy for 10,000 classes per tick: time per class.

Run: .venv/bin/python bench/bench_estimator.py [--classes N] [--ticks T]
Prints the time per class of each stage and its ratio to a baseline in the same process
(summing the raw counters of one class, the least any estimator must do).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from specwise.estimation.estimator import EstimatorConfig, WindowCounts
from specwise.estimation.rolling import RollingEstimator
from specwise.policies import HysteresisGate, PolicyConfig, recommend


def make_ticks(
    rng: np.random.Generator, classes: int, ticks: int, k: int
) -> list[list[WindowCounts]]:
    alphas = rng.uniform(0.3, 0.9, size=classes)
    out = []
    for t in range(ticks):
        drafts = rng.integers(50, 500, size=classes)
        reached = drafts.copy()
        pos = np.empty((classes, k))
        for i in range(k):
            reached = rng.binomial(reached, alphas)
            pos[:, i] = reached
        end = 30.0 * (t + 1)
        out.append(
            [
                WindowCounts(
                    drafts=float(drafts[c]),
                    draft_tokens=float(k * drafts[c]),
                    accepted=float(pos[c].sum()),
                    accepted_per_position=tuple(pos[c].tolist()),
                    k=k,
                    start=end - 30.0,
                    end=end,
                )
                for c in range(classes)
            ]
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=3)
    parser.add_argument("--k", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ticks = make_ticks(rng, args.classes, args.ticks, args.k)
    names = [f"class-{c}" for c in range(args.classes)]
    est = RollingEstimator(EstimatorConfig(window_seconds=600))
    gate = HysteresisGate()
    cfg = PolicyConfig(cost=0.05, k_max=8)

    # Baseline: sum the counters of each class (no statistics at all).
    t0 = time.perf_counter()
    for tick in ticks:
        for c in tick:
            _ = c.drafts, c.accepted, sum(c.accepted_per_position)  # type: ignore[operator]
    base = (time.perf_counter() - t0) / (args.classes * args.ticks)

    feed = estimate = policy = hyst = 0.0
    for tick in ticks:
        now = tick[0].end
        t0 = time.perf_counter()
        for name, c in zip(names, tick):
            est.update(name, c)
        t1 = time.perf_counter()
        estimates = [est.estimate(name, now=now) for name in names]
        t2 = time.perf_counter()
        recs = [recommend(e, config=cfg) for e in estimates]
        t3 = time.perf_counter()
        for r in recs:
            gate(r, now=now)
        t4 = time.perf_counter()
        feed += t1 - t0
        estimate += t2 - t1
        policy += t3 - t2
        hyst += t4 - t3
    n = args.classes * args.ticks
    total = feed + estimate + policy + hyst
    print(f"{args.classes} classes x {args.ticks} ticks, k = {args.k}")
    print(f"baseline (sum counters): {base * 1e6:8.2f} us/class")
    for label, value in [
        ("feed delta", feed),
        ("estimate", estimate),
        ("recommend", policy),
        ("hysteresis", hyst),
        ("total", total),
    ]:
        per = value / n
        print(f"{label:>22}: {per * 1e6:8.1f} us/class  ({per / base:7.0f}x baseline)")
    print(f"one tick of {args.classes} classes: {total / args.ticks:.2f} s")


if __name__ == "__main__":
    main()
