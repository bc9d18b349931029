"""The configuration to run under load: a single k, a batch-size schedule, or off.

Priced with the fitted step time T(k, B) (:mod:`specwise.step_cost`) over the measured
batch-size distribution, under the posterior of the acceptance curve and of the fit:

1. per batch size B in 1..``max_batch_size`` (the server's ``max_num_seqs``), the k with the
   highest E(k) T(0, B) / T(k, B) (the smallest within ``plateau`` of it); k = 0 inside a
   schedule is priced ``off_overhead`` slower than plain decoding (the drafter stays loaded,
   vLLM #49548);
2. the run of best k compressed to bands, bands with less than ``min_band_share`` of the
   busy time merged into a neighbour, and band edges kept away from batch sizes where the
   traffic hovers: an edge with a dense neighbourhood (within a factor 1 + ``edge_margin``)
   moves to the least dense point within the margin, or the two bands merge when none is
   sparse enough (k would flap as prefills move the running count);
3. the schedule is kept only when it gains at least ``min_gain`` over the best single k
   (both weighted by the batch distribution, :func:`specwise.step_cost.config_speedup`);
   speculation is turned off (restart without a drafter) when neither beats plain decoding,
   which also prefers a restart over a schedule that drafts almost nowhere.

Intervals come from paired posterior draws (survival curve x fitted StepCost).
Pure: no I/O, no clock (docs/design.md#choosing-k, docs/design.md#the-cost-side).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

# ``import ... as`` resolves through sys.modules, so this works while step_cost (which
# imports policies.schedule, and so this package) is still initialising.
import specwise.step_cost as _sc
from specwise.errors import ConfigError
from specwise.model import recommended_k_from_speedups
from specwise.policies.schedule import ScheduleEntry, validate_schedule

if TYPE_CHECKING:  # at run time step_fit -> step_cost -> policies would be a cycle
    from specwise.estimation.step_fit import MeasuredSpeedup, StepCostFit
    from specwise.step_cost import BatchDistribution, SpecConfig, StepCost

__all__ = [
    "HOVER_DENSE",
    "HOVER_WARN",
    "BandPrice",
    "ConfigRecommendation",
    "LoadEvidence",
    "recommend_config",
]

#: An edge is "dense" when this share of the busy time sits within a factor 1 + edge_margin
#: of it: the edge moves to a sparser point within the margin, or the bands merge.
HOVER_DENSE = 0.25
#: A kept edge with at least this share near it still gets a warning.
HOVER_WARN = 0.15
#: At most this many paired posterior draws price the intervals.
MAX_DRAWS = 200
#: The interval level (5% .. 95%).
LEVEL = 0.9
#: The span of ``LoadEvidence.recent_batches`` (seconds) and its weight against the horizon.
RECENT_SPAN = 1800.0
RECENT_WEIGHT = 0.5


@dataclass(frozen=True)
class LoadEvidence:
    """The cost side of one class: the fitted T(k, B), the batch-size distribution over the
    load horizon, and the measured speedup at the deployed configuration (whole and per
    band) where there is one."""

    fit: StepCostFit
    batches: BatchDistribution
    measured: MeasuredSpeedup | None = None
    bands_measured: tuple[tuple[tuple[int, int], MeasuredSpeedup], ...] = ()
    #: the batch-size distribution of the last ``RECENT_SPAN`` seconds: weighted as much as
    #: the horizon's, so a configuration is judged by the load now as well as by the day (a
    #: peak that began an hour ago weighs little in 24 h of quiet, yet it is where the
    #: tokens are being lost)
    recent_batches: BatchDistribution | None = None

    @classmethod
    def from_cost(cls, cost: StepCost, batches: BatchDistribution) -> LoadEvidence:
        """Evidence from a known StepCost (no draws: point intervals), e.g. for
        ``specwise model --batch`` or a what-if."""
        # imported here: at module import time step_fit -> step_cost -> policies is a cycle
        from specwise.estimation.step_fit import StepCostFit

        fit = StepCostFit(
            cost=cost,
            samples=(),
            n_observations=0,
            ks=(),
            batch_range=(float(batches.sizes[0]), float(batches.sizes[-1])),
            plain_observed=False,
            prior_cost=cost.implied_draft_cost(1.0),
            notes=("a given step cost, not fitted",),
        )
        return cls(fit, batches)


@dataclass(frozen=True)
class BandPrice:
    """One band ``[start, end]`` (inclusive batch sizes) of a configuration: its k, its share
    of the busy time, and its speedup over plain decoding there (with the interval)."""

    start: int
    end: int
    k: int
    share: float
    speedup: float
    low: float
    high: float

    @property
    def label(self) -> str:
        """The band as exported metrics name it: "1-16"."""
        return f"{self.start}-{self.end}"


@dataclass(frozen=True)
class ConfigRecommendation:
    """The configuration to run (``kind`` off / single / schedule) with its speedup over the
    batch distribution and interval, the current configuration's speedup, the best single k
    for comparison, the bands, warnings (one sentence each) and a one-line reason.

    ``speedups[k]``: each single k over the distribution (index 0 = off = 1.0);
    ``confidence``: the share of posterior draws in which the chosen configuration is within
    ``plateau`` of the best candidate; ``guard_from``: the first batch size of the guard
    bands past the largest one the traffic reached (None without them; with them the
    configuration is a schedule even where the traffic runs one k).
    """

    config: SpecConfig
    kind: Literal["off", "single", "schedule"]
    speedup: float
    low: float
    high: float
    current_speedup: float | None
    single_k: int
    single_speedup: float
    bands: tuple[BandPrice, ...]
    warnings: tuple[str, ...]
    reason: str
    speedups: tuple[float, ...] = ()
    confidence: float = 1.0
    notes: tuple[str, ...] = ()
    guard_from: int | None = None


# -- pricing arrays -------------------------------------------------------------------------


def _step_times(cost: StepCost, top: int, sizes: np.ndarray) -> np.ndarray:
    """T(k, B) for k = 0..top (rows) and the batch sizes (columns): StepCost.step_time,
    vectorised (tests check the two agree)."""
    ks = np.arange(top + 1, dtype=float)[:, None]
    b = sizes.astype(float)[None, :]
    tokens = b * (ks + 1.0)
    over = np.maximum(0.0, tokens - cost.knee) if math.isfinite(cost.knee) else 0.0 * tokens
    verify = cost.base + cost.per_token * over + ks * cost.verify_per_draft
    draft = ks * (cost.draft_base + cost.draft_per_seq * b)
    out: np.ndarray = verify + draft
    return out


def _relative(
    curve: np.ndarray, cost: StepCost, sizes: np.ndarray, off_overhead: float
) -> tuple[np.ndarray, np.ndarray]:
    """(rel, plain): rel[k, B] = E(k) T(0, B) / T(k, B) for k >= 1 and 1 / (1 + overhead)
    for a k = 0 band under a loaded drafter; plain[B] = B / T(0, B) (plain tokens/s)."""
    top = len(curve)
    times = _step_times(cost, top, sizes)
    tokens = 1.0 + np.concatenate([[0.0], np.cumsum(curve)])
    rel = tokens[:, None] * times[0][None, :] / times
    rel[0, :] = 1.0 / (1.0 + off_overhead)
    plain = sizes / times[0]
    return rel, plain


def _config_value(ks: np.ndarray, rel: np.ndarray, weights: np.ndarray) -> float:
    """Speedup of a per-batch-size k vector given rel and plain-throughput weights."""
    total = float(weights.sum())
    if total <= 0:
        return 1.0
    return float((weights * rel[ks, np.arange(len(ks))]).sum() / total)


def _schedule_gains(
    ks: np.ndarray,
    rel: np.ndarray,
    plain: np.ndarray,
    shares: Sequence[np.ndarray],
    min_gain: float,
    top: int,
) -> bool:
    """Whether the schedule gains ``min_gain`` over the best single k (and plain decoding)
    under any of ``shares`` (the horizon, the recent load, their blend): tokens are weighted
    by plain throughput, so a busy hour outweighs a quiet day in a blend, and a schedule that
    is the best k at every batch size must not be traded for the busy hour's single k."""
    for sh in shares:
        w = sh * plain
        best = max([1.0] + [_config_value(np.full(len(ks), k), rel, w) for k in range(1, top + 1)])
        if _config_value(ks, rel, w) >= best * (1.0 + min_gain):
            return True
    return False


def _ks_of(config: SpecConfig, n: int) -> np.ndarray:
    return np.asarray([config.k_at(b) for b in range(1, n + 1)], dtype=int)


# -- bands ----------------------------------------------------------------------------------

_Band = tuple[int, int, int]  # start, end, k (inclusive, 1-based)


def _runs(best: Sequence[int]) -> list[_Band]:
    out: list[_Band] = []
    start = 1
    for b in range(2, len(best) + 1):
        if best[b - 1] != best[b - 2]:
            out.append((start, b - 1, int(best[b - 2])))
            start = b
    out.append((start, len(best), int(best[-1])))
    return out


def _coalesce(bands: list[_Band]) -> list[_Band]:
    out: list[_Band] = []
    for band in bands:
        if out and out[-1][2] == band[2]:
            out[-1] = (out[-1][0], band[1], band[2])
        else:
            out.append(band)
    return out


def _best_k_for(
    start: int, end: int, options: Sequence[int], rel: np.ndarray, w: np.ndarray
) -> int:
    """Of ``options``, the k with the most tokens over [start, end] (weighted by the traffic;
    unweighted where the traffic never went)."""
    sl = slice(start - 1, end)
    weights = w[sl]
    if float(weights.sum()) <= 0:
        weights = np.ones(end - start + 1)
    return max(options, key=lambda k: (float((weights * rel[k, sl]).sum()), -k))


def _merge_small(
    bands: list[_Band], share: np.ndarray, min_share: float, rel: np.ndarray, w: np.ndarray
) -> list[_Band]:
    """Bands with less than ``min_share`` of the busy time take a neighbour's k."""
    bands = _coalesce(bands)
    for _ in range(len(bands) + 1):
        if len(bands) < 2:
            break
        shares = [float(share[a - 1 : b].sum()) for a, b, _k in bands]
        i = min(range(len(bands)), key=lambda j: shares[j])
        if shares[i] >= min_share:
            break
        a, b, _k = bands[i]
        neighbours = [bands[j][2] for j in (i - 1, i + 1) if 0 <= j < len(bands)]
        bands[i] = (a, b, _best_k_for(a, b, neighbours, rel, w))
        bands = _coalesce(bands)
    return bands


def _hover_window(edge: int, margin: float) -> tuple[int, int]:
    """Batch sizes within a factor 1 + margin of an edge (first size of the upper band),
    always including the two sizes on either side of it."""
    lo = min(edge - 1, math.floor(edge / (1.0 + margin)))
    hi = max(edge, math.ceil(edge * (1.0 + margin)) - 1)
    return max(1, lo), hi


def _hover(edge: int, margin: float, share: np.ndarray) -> float:
    lo, hi = _hover_window(edge, margin)
    return float(share[lo - 1 : min(hi, len(share))].sum())


@dataclass
class _EdgeNote:
    edge: int
    hover: float
    moved_to: int | None = None
    merged: bool = False


def _place_edges(
    bands: list[_Band],
    share: np.ndarray,
    margin: float,
    rel: np.ndarray,
    w: np.ndarray,
    notes: list[_EdgeNote],
) -> tuple[list[_Band], bool]:
    """One pass over the edges; returns the bands and whether anything changed."""
    if margin <= 0:
        return bands, False
    for i in range(len(bands) - 1):
        (a1, _b1, k1), (a2, b2, k2) = bands[i], bands[i + 1]
        edge = a2
        h = _hover(edge, margin, share)
        if h <= HOVER_DENSE:
            continue
        lo = max(a1 + 1, math.ceil(edge / (1.0 + margin)))
        hi = min(b2, math.floor(edge * (1.0 + margin)))
        best_edge, best_h = edge, h
        for cand in range(lo, hi + 1):
            ch = _hover(cand, margin, share)
            if ch < best_h - 1e-12 or (
                abs(ch - best_h) <= 1e-12 and abs(cand - edge) < abs(best_edge - edge)
            ):
                best_edge, best_h = cand, ch
        out = list(bands)
        if best_h <= HOVER_DENSE:
            out[i] = (a1, best_edge - 1, k1)
            out[i + 1] = (best_edge, b2, k2)
            notes.append(_EdgeNote(edge, h, moved_to=best_edge))
        else:
            k = _best_k_for(a1, b2, (k1, k2), rel, w)
            out[i] = (a1, b2, k)
            del out[i + 1]
            notes.append(_EdgeNote(edge, h, merged=True))
        return _coalesce(out), True
    return bands, False


def _shape_bands(
    best: Sequence[int],
    share: np.ndarray,
    *,
    min_share: float,
    margin: float,
    rel: np.ndarray,
    w: np.ndarray,
    hover_share: np.ndarray | None = None,
) -> tuple[list[_Band], list[_EdgeNote]]:
    notes: list[_EdgeNote] = []
    hover = share if hover_share is None else hover_share
    bands = _merge_small(_runs(best), share, min_share, rel, w)
    for _ in range(4 * len(best) + 4):  # each pass moves one edge or merges two bands
        bands, changed = _place_edges(bands, hover, margin, rel, w, notes)
        if not changed:
            break
        bands = _merge_small(bands, share, min_share, rel, w)
    return bands, notes


# -- the recommendation ---------------------------------------------------------------------


def _quantiles(values: np.ndarray) -> tuple[float, float]:
    tail = (1.0 - LEVEL) / 2.0
    return float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))


def _check(
    k_max: int,
    plateau: float,
    min_gain: float,
    max_batch_size: int,
    edge_margin: float,
    off_overhead: float,
    min_band_share: float,
) -> None:
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int):
        raise ConfigError(
            f"max_batch_size = {max_batch_size!r} must be a whole number >= 1 (the server's "
            "max_num_seqs, e.g. 256)",
            field="max_batch_size",
        )
    checks: tuple[tuple[str, float, float, float, str], ...] = (
        ("k_max", k_max, 1, 128, "8"),
        ("max_batch_size", max_batch_size, 1, 1 << 20, "256"),
        ("plateau", plateau, 0.0, 0.999, "0.01"),
        ("min_gain", min_gain, 0.0, 10.0, "0.05"),
        ("edge_margin", edge_margin, 0.0, 4.0, "0.25"),
        ("off_overhead", off_overhead, 0.0, 0.999, "0.14"),
        ("min_band_share", min_band_share, 0.0, 0.5, "0.05"),
    )
    for name, value, low, high, example in checks:
        if not (low <= value <= high):
            raise ConfigError(
                f"{name} = {value!r} must lie in {low:g}..{high:g}, e.g. {example}", field=name
            )


def recommend_config(
    survival_samples: np.ndarray,
    load: LoadEvidence,
    *,
    k_max: int,
    plateau: float,
    min_gain: float,
    current: SpecConfig | None,
    max_batch_size: int,
    edge_margin: float,
    off_overhead: float,
    min_band_share: float = 0.05,
    schedules: bool = True,
) -> ConfigRecommendation:
    """The configuration to run for one class (see the module docstring).

    ``survival_samples``: posterior draws of the survival curve (rows; at least ``k_max``
    columns, more to price a current k above ``k_max``). ``current``: the configuration in
    force (priced for ``current_speedup``). ``schedules=False`` considers single k and off
    only.
    """
    _check(k_max, plateau, min_gain, max_batch_size, edge_margin, off_overhead, min_band_share)
    samples = np.atleast_2d(np.asarray(survival_samples, dtype=float))
    if samples.size == 0 or samples.shape[1] < 1:
        raise ConfigError(
            "recommend_config needs survival samples with at least one position",
            field="survival_samples",
        )
    width = samples.shape[1]
    top = min(k_max, width)
    n = max_batch_size
    sizes = np.arange(1, n + 1)
    warnings: list[str] = []
    notes: list[str] = []

    # The time share of each batch size 1..n (sizes past max_batch_size folded into n).
    share = np.zeros(n)
    for b, p in zip(load.batches.sizes, load.batches.shares, strict=True):
        share[min(b, n) - 1] += p
    day_share = share.copy()
    recent_share = share
    if load.recent_batches is not None:
        recent_share = np.zeros(n)
        for b, p in zip(load.recent_batches.sizes, load.recent_batches.shares, strict=True):
            recent_share[min(b, n) - 1] += p
        share = (1.0 - RECENT_WEIGHT) * share + RECENT_WEIGHT * recent_share
    largest = load.batches.sizes[-1]
    if largest > n:
        warnings.append(
            f"the traffic reached batch size {largest}, above max_batch_size = {n}: set "
            "[policy] max_batch_size to the server's max_num_seqs."
        )

    curve = samples.mean(axis=0)
    rel, plain = _relative(curve[:width], load.fit.cost, sizes, off_overhead)
    w = share * plain  # plain tokens/s delivered at each batch size, time-weighted

    # 1. per batch size, the best k (smallest within the plateau); 0 = a k = 0 band.
    best: list[int] = []
    for j in range(n):
        col = rel[: top + 1, j]
        peak = float(col.max())
        best.append(int(np.argmax(col >= peak * (1.0 - plateau) - 1e-12)))

    # 2. bands with margins.
    # k flaps at an edge wherever the traffic hovers there, by day or now: an edge is judged
    # by the denser of the two loads (a blend would thin a quiet night's density by half
    # during a peak and leave an edge where the night sits)
    hover_share = np.maximum(day_share, recent_share)
    bands, edge_notes = _shape_bands(
        best,
        share,
        min_share=min_band_share,
        margin=edge_margin,
        rel=rel,
        w=w,
        hover_share=hover_share,
    )
    schedule_ks = np.asarray([k for a, b, k in bands for _ in range(a, b + 1)], dtype=int)
    s_schedule = _config_value(schedule_ks, rel, w)
    is_schedule = len(bands) > 1

    # 3. best single k over the distribution, then choose.
    single = [1.0] + [_config_value(np.full(n, k), rel, w) for k in range(1, top + 1)]
    single_k = recommended_k_from_speedups(single, tolerance=plateau)
    s_single = single[single_k]
    kind: Literal["off", "single", "schedule"]
    # Off (a restart without a drafter) only when speculation loses over the whole horizon
    # too: the recent load weighs in to react to a peak, but an engine turned off at its
    # peak would lose the quiet hours where speculation pays (and the counters that show
    # it), so a peak gets a schedule with a k = 0 band instead.
    day_w = day_share * plain
    day_single = [_config_value(np.full(n, k), rel, day_w) for k in range(1, top + 1)]
    pays_over_day = load.recent_batches is not None and max(day_single) > 1.0 + plateau
    peak_schedule = False
    if single_k == 0 and pays_over_day:
        single_k = 1 + int(np.argmax(day_single))
        s_single = single[single_k]
        peak_schedule = schedules and is_schedule
    if peak_schedule or (
        schedules
        and is_schedule
        and s_schedule > 1.0
        and _schedule_gains(
            schedule_ks, rel, plain, (share, day_share, recent_share), min_gain, top
        )
    ):
        kind = "schedule"
        entries: tuple[ScheduleEntry, ...] = tuple(bands)
        config = _sc.SpecConfig(max(k for _a, _b, k in bands), validate_schedule(entries))
        chosen_ks = schedule_ks
    elif single_k > 0:
        kind = "single"
        config = _sc.SpecConfig(single_k)
        chosen_ks = np.full(n, single_k)
        bands = [(1, n, single_k)]
    else:
        kind = "off"
        config = _sc.SpecConfig(0)
        chosen_ks = np.zeros(n, dtype=int)
        bands = [(1, n, 0)]

    # 4. Past the largest batch size the traffic reached, k steps down where the fit says
    # the verify saturates (up to TAIL_REACH times that size; the last band runs on): those
    # bands cost nothing while the load stays, and save a restart at the worst moment when
    # it rises past what was seen. The fit's k there is never above the top band's.
    tail_from: int | None = None
    decided = kind  # over the traffic: the guard bands do not change it there
    if schedules and kind != "off":
        bands, tail_from = _with_tail(bands, best, share, n, hover_share, edge_margin)
        if tail_from is not None:
            if kind == "single":
                kind = "schedule"
            entries = tuple(bands)
            config = _sc.SpecConfig(max(k for _a, _b, k in bands), validate_schedule(entries))
            chosen_ks = np.asarray([k for a, b, k in bands for _ in range(a, b + 1)], dtype=int)

    # Posterior draws: survival rows paired with fitted-cost draws.
    costs = tuple(load.fit.samples) or (load.fit.cost,)
    draws = min(MAX_DRAWS, max(len(samples), len(costs)))
    draw_rel: list[np.ndarray] = []
    draw_w: list[np.ndarray] = []
    for d in range(draws):
        r, pl = _relative(samples[d % len(samples)], costs[d % len(costs)], sizes, off_overhead)
        draw_rel.append(r)
        draw_w.append(share * pl)

    if kind == "off":
        speedup, low, high = 1.0, 1.0, 1.0
        chosen_draws = np.ones(draws)
    else:
        speedup = _config_value(chosen_ks, rel, w)
        chosen_draws = np.asarray(
            [_config_value(chosen_ks, draw_rel[d], draw_w[d]) for d in range(draws)]
        )
        low, high = _quantiles(chosen_draws)

    # Confidence: in each draw, the same rule picks a configuration (a schedule must gain
    # min_gain over the best single k); the chosen one must be within the plateau of it.
    within = 0
    for d in range(draws):
        singles_d = [0.0 if pays_over_day else 1.0] + [
            _config_value(np.full(n, k), draw_rel[d], draw_w[d]) for k in range(1, top + 1)
        ]
        pick = singles_d[recommended_k_from_speedups(singles_d, tolerance=plateau)]
        if schedules and is_schedule:
            sched_d = _config_value(schedule_ks, draw_rel[d], draw_w[d])
            if sched_d > 1.0 and sched_d >= max(1.0, pick) * (1.0 + min_gain):
                pick = sched_d
        if chosen_draws[d] >= pick * (1.0 - plateau) - 1e-12:
            within += 1
    confidence = within / draws if draws else 1.0

    # Band prices.
    prices: list[BandPrice] = []
    for a, b, k in bands:
        sl = slice(a - 1, b)
        band_share = float(share[sl].sum())
        if kind == "off":
            prices.append(BandPrice(a, b, 0, band_share, 1.0, 1.0, 1.0))
            continue
        weights = w[sl] if float(w[sl].sum()) > 0 else plain[sl]
        ks_band = np.full(b - a + 1, k)
        idx = np.arange(a - 1, b)

        def band_value(r: np.ndarray, ww: np.ndarray) -> float:
            return float((ww * r[ks_band, idx]).sum() / ww.sum())  # noqa: B023

        point = band_value(rel, weights)
        vals = np.asarray(
            [
                band_value(draw_rel[d], draw_w[d][sl] if band_share > 0 else (weights))
                for d in range(draws)
            ]
        )
        lo_b, hi_b = _quantiles(vals)
        prices.append(BandPrice(a, b, k, band_share, point, lo_b, hi_b))

    # The current configuration.
    current_speedup: float | None = None
    if current is not None:
        if current.k == 0:
            current_speedup = 1.0
        else:
            cur_ks = _ks_of(current, n)
            if int(cur_ks.max()) <= width:
                current_speedup = _config_value(cur_ks, rel, w)
            else:
                notes.append(
                    f"current k = {int(cur_ks.max())} is beyond the {width} priced positions; "
                    "its speedup is not priced"
                )

    # Warnings, one sentence each: merges, and moves whose edge is still in force.
    final_edges = {a for a, _b, _k in bands[1:]}
    seen: set[tuple[int, int | None]] = set()
    for note in edge_notes if kind != "off" else ():
        if (note.moved_to is not None and note.moved_to not in final_edges) or (
            note.edge,
            note.moved_to,
        ) in seen:
            continue
        seen.add((note.edge, note.moved_to))
        what = (
            f"moved the edge to {note.moved_to}"
            if note.moved_to is not None
            else "merged the two bands"
        )
        warnings.append(
            f"{note.hover:.0%} of the busy time sits within {edge_margin:.0%} of the band edge "
            f"at batch size {note.edge}, where k would flap as prefills move the running count "
            f"(vLLM #49548 measured ~232 -> 24-157 tok/s), so specwise {what}."
        )
    if kind == "schedule":
        for a, _b, _k in bands[1:]:
            h = _hover(a, edge_margin, hover_share) if edge_margin > 0 else 0.0
            if h >= HOVER_WARN:
                warnings.append(
                    f"{h:.0%} of the busy time sits near the band edge at batch size {a}, "
                    "where k may flap as prefills move the running count (vLLM #49548 "
                    "measured ~232 -> 24-157 tok/s)."
                )
        if any(k == 0 for a, _b, k in bands if tail_from is None or a < tail_from):
            warnings.append(
                "a k = 0 band keeps the drafter loaded and its KV lookahead slots reserved, so "
                f"those batch sizes run about {off_overhead:.0%} slower than an engine started "
                "without a drafter (vLLM #49548)."
            )
        warnings.append(
            "a batch-size schedule needs vLLM with dynamic speculative decoding "
            "(num_speculative_tokens_per_batch_size) and is ignored with data parallelism > 1."
        )

    reason = _reason(
        decided,
        config,
        speedup,
        low,
        high,
        single_k,
        s_single,
        s_schedule if is_schedule else None,
        min_gain,
        load.batches,
        current,
        current_speedup,
        schedules,
    )
    if tail_from is not None:
        tail = ", ".join(f"{k} from {a}" for a, _b, k in bands if a >= tail_from)
        reason += (
            f"; past batch size {tail_from - 1}, the largest the traffic reached, k steps "
            f"down where the fitted verify saturates ({tail})"
        )
    return ConfigRecommendation(
        config=config,
        kind=kind,
        speedup=speedup,
        low=low,
        high=high,
        current_speedup=current_speedup,
        single_k=single_k,
        single_speedup=s_single,
        bands=tuple(prices),
        warnings=tuple(warnings),
        reason=reason,
        speedups=tuple(single),
        confidence=confidence,
        notes=tuple(notes),
        guard_from=tail_from,
    )


#: The guard bands past the largest batch size seen reach this many times that size.
TAIL_REACH = 1.5


def _with_tail(
    bands: list[_Band],
    best: Sequence[int],
    share: np.ndarray,
    n: int,
    hover_share: np.ndarray,
    margin: float,
) -> tuple[list[_Band], int | None]:
    """``bands`` with guard bands past the largest batch size with traffic (the per-size
    best k there, capped by the top band's k, up to TAIL_REACH times that size; no guard
    edge where the traffic hovers), and the first guarded size; the bands unchanged and None
    when the tail adds nothing."""
    seen = np.nonzero(share > 0)[0]
    if seen.size == 0:
        return bands, None
    top = int(seen[-1]) + 1  # the largest batch size with traffic: nothing changes up to it
    if top >= n:
        return bands, None
    reach = min(n, max(top + 1, math.ceil(TAIL_REACH * top)))
    cap = next(k for a, b, k in bands if a <= top <= b)
    start = top + 1  # the first guarded size: past the margin of where the traffic sits
    while margin > 0 and start <= reach and _hover(start, margin, hover_share) > HOVER_DENSE:
        start += 1
    tail_ks = [cap if j < start else min(int(best[j - 1]), cap) for j in range(top + 1, reach + 1)]
    if all(k == cap for k in tail_ks):
        return bands, None
    head = [(a, min(b, top), k) for a, b, k in bands if a <= top]
    tail = [(a + top, b + top, k) for a, b, k in _runs(tail_ks)]
    last = tail[-1]
    tail[-1] = (last[0], n, last[2])
    return _coalesce(head + tail), top + 1


def _reason(
    kind: str,
    config: SpecConfig,
    speedup: float,
    low: float,
    high: float,
    single_k: int,
    s_single: float,
    s_schedule: float | None,
    min_gain: float,
    batches: BatchDistribution,
    current: SpecConfig | None,
    current_speedup: float | None,
    schedules: bool,
) -> str:
    dist = (
        f"over the batch-size distribution (mean {batches.mean:.1f}, p50 "
        f"{batches.quantile(0.5)}, p90 {batches.quantile(0.9)})"
    )
    cur = ""
    if current is not None and current_speedup is not None and current != config:
        cur = f"; current {current.describe()} gives {current_speedup:.2f}x"
    sched = ""
    if s_schedule is not None and kind != "schedule" and schedules:
        sched = (
            f"; a batch-size schedule would give {s_schedule:.2f}x, less than {min_gain:.0%} "
            "over it"
        )
    if kind == "off":
        best = f"best single k = {single_k}" if single_k else "no single k beats plain decoding"
        return (
            f"{dist}: speculation loses where the traffic runs ({best}{sched}); recommend off "
            f"(restart without a drafter){cur}"
        )
    if kind == "single":
        return f"{dist}: k = {config.k} gives {speedup:.2f}x [{low:.2f}, {high:.2f}]{sched}{cur}"
    return (
        f"{dist}: {config.describe()} gives {speedup:.2f}x [{low:.2f}, {high:.2f}], "
        f"{speedup / max(s_single, 1.0) - 1.0:+.0%} over "
        + (f"the best single k = {single_k} ({s_single:.2f}x)" if single_k else "plain decoding")
        + cur
    )
