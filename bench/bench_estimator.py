"""Estimator + policy for 10,000 classes per tick: time per class; short-draft accuracy.

Run: .venv/bin/python bench/bench_estimator.py [--classes N] [--ticks T] [--short]
Prints the time per class of each stage and its ratio to a baseline in the same process
(summing the raw counters of one class, the least any estimator must do). ``--short``
gives every class n-gram-like drafts (lengths uniform on 1..k), which the estimator solves
numerically. ``--accuracy`` instead prints the bias and 95% interval coverage of alpha on
simulated short drafts (five length distributions, alpha 0.1-0.95, 100,000 drafts).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from specwise.estimation.estimator import EstimatorConfig, WindowCounts, estimate_counts
from specwise.estimation.rolling import RollingEstimator
from specwise.policies import HysteresisGate, PolicyConfig, recommend

#: draft-length distributions over 0..4 tokens (k = 4) for --accuracy
LENGTHS = {
    "uniform 1-4": (0.0, 0.25, 0.25, 0.25, 0.25),
    "mostly 1": (0.0, 0.85, 0.05, 0.05, 0.05),
    "mostly k": (0.0, 0.05, 0.05, 0.05, 0.85),
    "half 3, half 4": (0.0, 0.0, 0.0, 0.5, 0.5),
    "zero-token drafts": (0.2, 0.1, 0.1, 0.1, 0.5),
}


def sample_short(
    rng: np.random.Generator, alpha: float, lengths: tuple[float, ...], drafts: int
) -> tuple[float, tuple[float, ...]]:
    """(draft tokens, per-position counts) of ``drafts`` drafts with these lengths."""
    k = len(lengths) - 1
    per_length = rng.multinomial(drafts, np.asarray(lengths))
    reached = np.zeros(k + 1)
    for length, n in enumerate(per_length):
        if n:
            pmf = [alpha**m * (1 - alpha) for m in range(length)] + [alpha**length]
            hist = rng.multinomial(n, np.asarray(pmf))
            reached[: length + 1] += np.cumsum(hist[::-1])[::-1]
    tokens = float(np.dot(np.arange(k + 1), per_length))
    return tokens, tuple(float(x) for x in reached[1:])


def accuracy(reps: int) -> None:
    rng = np.random.default_rng(1)
    cfg = EstimatorConfig(min_drafts=1)
    print(f"alpha from short drafts, k = 4, 100,000 drafts, {reps} runs per cell")
    print(f"{'lengths':<18} {'alpha':>5} {'bias':>8} {'sd':>7} {'coverage':>8}")
    for name, lengths in LENGTHS.items():
        for alpha in (0.1, 0.3, 0.6, 0.8, 0.95):
            got, covered = [], 0
            for _ in range(reps):
                tokens, pos = sample_short(rng, alpha, lengths, 100_000)
                c = WindowCounts(100_000.0, tokens, sum(pos), pos, k=4)
                e = estimate_counts("c", c, now=0.0, config=cfg)
                assert e.alpha is not None
                assert e.alpha_low is not None
                assert e.alpha_high is not None
                got.append(e.alpha)
                covered += e.alpha_low <= alpha <= e.alpha_high
            bias, sd = float(np.mean(got)) - alpha, float(np.std(got))
            print(f"{name:<18} {alpha:>5.2f} {bias:>+8.4f} {sd:>7.4f} {covered / reps:>8.3f}")


def make_ticks(
    rng: np.random.Generator, classes: int, ticks: int, k: int, *, short: bool = False
) -> list[list[WindowCounts]]:
    alphas = rng.uniform(0.3, 0.9, size=classes)
    uniform = (0.0, *([1.0 / k] * k))
    out = []
    for t in range(ticks):
        drafts = rng.integers(50, 500, size=classes)
        reached = drafts.copy()
        pos = np.empty((classes, k))
        tokens = (k * drafts).astype(float)
        if short:
            for c in range(classes):
                tokens[c], row = sample_short(rng, float(alphas[c]), uniform, int(drafts[c]))
                pos[c] = row
        else:
            for i in range(k):
                reached = rng.binomial(reached, alphas)
                pos[:, i] = reached
        end = 30.0 * (t + 1)
        out.append(
            [
                WindowCounts(
                    drafts=float(drafts[c]),
                    draft_tokens=float(tokens[c]),
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
    parser.add_argument("--short", action="store_true", help="n-gram-like short drafts")
    parser.add_argument("--accuracy", action="store_true", help="bias and coverage instead")
    parser.add_argument("--reps", type=int, default=300, help="runs per cell of --accuracy")
    args = parser.parse_args()
    if args.accuracy:
        accuracy(args.reps)
        return
    rng = np.random.default_rng(0)
    ticks = make_ticks(rng, args.classes, args.ticks, args.k, short=args.short)
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
    drafts = "short drafts (uniform 1..k)" if args.short else "full-length drafts"
    print(f"{args.classes} classes x {args.ticks} ticks, k = {args.k}, {drafts}")
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
