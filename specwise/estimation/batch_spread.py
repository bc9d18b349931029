"""How a batch size spreads around its mean within a window (docs/design.md#the-cost-side).

The running batch of an engine is not constant over a window: requests arrive and finish
between steps. The counters give its mean (requests per engine step); the spread comes from
the running-request samples against that mean, as a dispersion d = variance / mean
(1 = Poisson, as independent arrivals give; near 0 for a fixed number of closed-loop
clients). :func:`batch_pmf` is the distribution of a given mean and dispersion; the fit
(:mod:`specwise.estimation.step_fit`) prices each window's mean step time over it, and the
simulator draws its batches from it. Pure numpy, no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

__all__ = ["MAX_DISPERSION", "batch_pmf", "dispersion_from_samples", "spread_support"]

Array = NDArray[np.float64]

#: A dispersion above this is not one engine's batch (a broken sample or mixed engines):
#: clipped there.
MAX_DISPERSION = 8.0


@lru_cache(maxsize=4096)
def _pmf_cached(mean_key: int, dispersion: float, max_batch: int) -> Array:
    mean = mean_key / 1000.0
    b = np.arange(max_batch + 1, dtype=np.float64)
    if mean <= 0.0:
        out = np.zeros(max_batch + 1)
        out[0] = 1.0
        out.flags.writeable = False
        return out
    log_fact = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, max_batch + 1)))))
    if dispersion == 1.0:  # Poisson
        logp = b * math.log(mean) - mean - log_fact
        p = np.exp(logp)
        tail = max(0.0, 1.0 - float(p.sum()))
    elif dispersion > 1.0:  # negative binomial: variance = dispersion * mean
        r = mean / (dispersion - 1.0)
        q = 1.0 / dispersion  # success probability
        lg = np.array([math.lgamma(x + r) for x in b]) - math.lgamma(r) - log_fact
        p = np.exp(lg + r * math.log(q) + b * math.log(1.0 - q))
        tail = max(0.0, 1.0 - float(p.sum()))
    else:  # narrower than Poisson: a discretized normal (dispersion 0: the two nearest sizes)
        if dispersion <= 0.0:
            p = np.zeros(max_batch + 1)
            lo = min(math.floor(mean), max_batch)
            frac = mean - lo
            p[lo] += 1.0 - frac
            p[min(lo + 1, max_batch)] += frac
        else:
            var = dispersion * mean
            p = np.exp(-((b - mean) ** 2) / (2.0 * var))
            p /= p.sum()
        tail = 0.0
    p[-1] += tail  # the server runs at most max_batch; the rest waits
    p /= p.sum()
    p.flags.writeable = False  # shared by every caller of the cache
    return p


def batch_pmf(mean: float, *, dispersion: float = 1.0, max_batch: int = 256) -> Array:
    """P(B = b) for b = 0..max_batch: the share of time the engine runs b requests.

    ``dispersion`` is the variance over the mean: 1 = Poisson, > 1 burstier (negative
    binomial), < 1 steadier (0: the mean itself, split between the two nearest sizes).
    """
    key = round(max(0.0, float(mean)) * 1000.0)
    return _pmf_cached(key, float(dispersion), int(max_batch))


def spread_support(mean: float, dispersion: float) -> tuple[Array, Array]:
    """The busy batch sizes (>= 1) around ``mean`` and their probabilities (summing to 1):
    one point, the mean itself, when the dispersion is about 0."""
    m = float(mean)
    d = min(max(float(dispersion), 0.0), MAX_DISPERSION)
    if d < 0.02 or not m > 1.05:  # no spread, or at most one request at a time
        return np.array([m]), np.array([1.0])
    # the busy sizes of a pmf of mean m average above m (idle time is cut off): a few
    # corrections of the pmf's mean bring the busy mean back to m
    target, mean_p = m, m
    sizes, q = _busy(mean_p, d)
    for _ in range(8):
        got = float(sizes @ q) if q.size else target
        if not q.size or abs(got - target) <= 2e-3 * target:
            break
        mean_p = max(mean_p * target / got, 1e-3)
        sizes, q = _busy(mean_p, d)
    if not q.size:
        return np.array([m]), np.array([1.0])
    return sizes, q


def _busy(m: float, d: float) -> tuple[Array, Array]:
    top = math.ceil(m + 7.0 * math.sqrt(d * m) + 3.0)
    p = np.asarray(batch_pmf(m, dispersion=d, max_batch=top), dtype=np.float64)
    sizes = np.arange(1, top + 1, dtype=np.float64)
    q = p[1:]
    keep = q > 1e-7
    q = q[keep]
    total = float(q.sum())
    if not total > 0:
        return sizes[:0], q[:0]
    return sizes[keep], q / total


def dispersion_from_samples(pairs: Iterable[tuple[float, float, int]]) -> float:
    """The dispersion d = var / mean from (sum of squared deviations of the window's busy
    running samples from its mean batch, that mean, degrees of freedom) per window; 0
    without samples."""
    num = 0.0
    den = 0.0
    for sq_dev, mean, dof in pairs:
        if dof > 0 and mean > 0 and math.isfinite(sq_dev) and sq_dev >= 0:
            num += sq_dev
            den += dof * mean
    if not den > 0:
        return 0.0
    return min(num / den, MAX_DISPERSION)
