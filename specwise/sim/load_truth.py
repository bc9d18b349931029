"""The simulator's ground truth on the cost side: batch sizes, step times and tokens.

Pure numpy, no clock (docs/design.md#the-cost-side). At a moment of a load-varying class the
running batch size is spread around its mean (:func:`batch_pmf`: Poisson by default); a
deployed :class:`~specwise.step_cost.SpecConfig` runs k_B = ``config.k_at(B)`` at each batch
size B, one engine step taking T(k_B, B) seconds (:class:`~specwise.step_cost.StepCost`).
Two costs of vLLM schedules (#49548) are modelled:

- a k = 0 band of an engine launched with a drafter runs plain steps ``off_overhead``
  slower (KV lookahead slots stay reserved);
- k flapping between adjacent steps at a band edge: a share ``flap_rate`` of steps runs at a
  batch size one away from the previous step's, and every step whose k differs from the
  previous step's costs ``flap_penalty`` extra plain steps.

Time is shared between batch sizes by the batch pmf (the share of time the engine runs B
requests); plain decoding delivers B / T(0, B) tokens per second there and a configuration
B * E(k_B) / T(k_B, B) (both over every second, idle time included), so the ratio of the
integrals is :func:`~specwise.step_cost.config_speedup` of the truth plus the flapping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from specwise.estimation.batch_spread import batch_pmf
from specwise.step_cost import SCHEDULE_OFF_OVERHEAD, SpecConfig, StepCost

__all__ = [
    "LoadRates",
    "batch_pmf",
    "config_ks",
    "load_rates",
    "plain_rate",
    "step_times",
]

Array = NDArray[np.float64]

#: batch sizes whose time share is below this are dropped from the per-moment arrays
_TINY = 1e-9


@lru_cache(maxsize=1024)
def _k_table(config: SpecConfig, largest: int) -> NDArray[np.int64]:
    return np.asarray([config.k_at(b) for b in range(largest + 1)], dtype=np.int64)


def config_ks(config: SpecConfig, sizes: Sequence[int] | NDArray[np.int64]) -> NDArray[np.int64]:
    """k_B = ``config.k_at(B)`` for every size."""
    arr = np.asarray(sizes, dtype=np.int64)
    if arr.size == 0:
        return arr
    return _k_table(config, int(arr.max()))[arr]


@dataclass(frozen=True)
class LoadRates:
    """One moment of one engine under a configuration, per second of engine time.

    Arrays are per batch size (``sizes``, >= 1, only sizes with a share above 1e-9);
    ``step_seconds`` is the step time the requests see there (flapping and k = 0 band
    overhead included), ``steps`` engine steps per second at that size, ``ks`` the k run
    there. ``tokens`` (expected tokens per second) and ``plain`` (plain decoding's tokens
    per second at the same load) are totals; ``flap_overhead`` is the share of time lost to
    k flapping at band edges.
    """

    sizes: NDArray[np.int64]
    shares: Array
    ks: NDArray[np.int64]
    step_seconds: Array
    steps: Array
    expected: Array  # E(k_B): tokens per request-step at each size
    tokens: float
    plain: float
    flap_overhead: float

    @property
    def speedup(self) -> float:
        return self.tokens / self.plain if self.plain > 0 else 1.0


def step_times(cost: StepCost, ks: NDArray[np.int64], sizes: NDArray[np.int64]) -> Array:
    """T(k, B) element-wise (:meth:`StepCost.step_time` vectorized)."""
    k = ks.astype(np.float64)
    b = sizes.astype(np.float64)
    verify = np.full(b.shape, cost.base) + k * cost.verify_per_draft
    if math.isfinite(cost.knee) and cost.per_token > 0.0:
        verify += cost.per_token * np.maximum(0.0, b * (k + 1.0) - cost.knee)
    return verify + k * (cost.draft_base + cost.draft_per_seq * b)


@lru_cache(maxsize=256)
def _cost_table(cost: StepCost, k_max: int, largest: int) -> Array:
    """T(k, B) for k = 0..k_max (rows) and B = 0..largest (columns; B = 0 priced as 1)."""
    sizes = np.maximum(np.arange(largest + 1, dtype=np.int64), 1)
    return np.stack(
        [step_times(cost, np.full(sizes.size, k, dtype=np.int64), sizes) for k in range(k_max + 1)]
    )


def plain_rate(pmf: Array, cost: StepCost) -> float:
    """Plain decoding's tokens per second at this batch pmf: sum_B p_B * B / T(0, B)."""
    sizes = np.nonzero(pmf[1:] > _TINY)[0] + 1
    if sizes.size == 0:
        return 0.0
    t0 = _cost_table(cost, 0, pmf.size - 1)[0, sizes]
    return float(np.sum(pmf[sizes] * sizes / t0))


def load_rates(
    pmf: Array,
    config: SpecConfig,
    survival: Sequence[float],
    cost: StepCost,
    *,
    off_overhead: float = SCHEDULE_OFF_OVERHEAD,
    flap_rate: float = 0.5,
    flap_penalty: float = 1.0,
) -> LoadRates:
    """What ``config`` delivers at this batch pmf (see the module docstring).

    ``survival`` must cover ``config.k`` positions (it is not read when k = 0).
    """
    sizes = np.nonzero(pmf[1:] > _TINY)[0] + 1
    shares = pmf[sizes]
    ks = config_ks(config, sizes) if config.k > 0 else np.zeros(sizes.size, dtype=np.int64)
    table = _cost_table(cost, config.k, pmf.size - 1)
    t0 = table[0, sizes]
    cum = np.concatenate(([1.0], 1.0 + np.cumsum(np.asarray(survival[: config.k], dtype=float))))
    expected = cum[ks] if config.k > 0 else np.ones(sizes.size)
    step = table[ks, sizes]
    if config.k > 0:  # k = 0 bands of an engine launched with a drafter (#49548)
        step = np.where(ks == 0, t0 * (1.0 + off_overhead), step)
    steps = shares / step if sizes.size else shares
    # k flapping: steps at b or b+1 crossing an edge where k changes (#49548)
    overhead = 0.0
    if sizes.size > 1 and flap_penalty > 0.0 and flap_rate > 0.0:
        adjacent = np.diff(sizes) == 1
        changes = np.diff(ks) != 0
        for j in np.nonzero(adjacent & changes)[0]:
            crossings = flap_rate * 0.5 * (steps[j] + steps[j + 1])
            overhead += float(crossings * flap_penalty * t0[j])
    if overhead > 0.0:
        step = step * (1.0 + overhead)
        steps = steps / (1.0 + overhead)
    tokens = float(np.sum(steps * sizes * expected))
    plain = float(np.sum(shares * sizes / t0)) if sizes.size else 0.0
    return LoadRates(
        sizes=sizes.astype(np.int64),
        shares=shares,
        ks=ks,
        step_seconds=step,
        steps=steps,
        expected=expected,
        tokens=tokens,
        plain=plain,
        flap_overhead=overhead / (1.0 + overhead),
    )
