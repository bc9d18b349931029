"""Choose k (0 included) from an estimate: the expected speedup under the posterior.

Every candidate k is priced on a survival curve: the i.i.d. curve alpha^i of each posterior
sample of alpha when one alpha fits, or the measured curve (posterior samples of it) up to
the deployed k when it does not. Since the cost of a cycle (k*c + v(k)) does not depend on
alpha, the posterior mean speedup is the speedup of the posterior mean curve, priced with
:func:`specwise.model.speedup_from_survival`. The recommended k is the smallest within
``plateau`` of the highest expected speedup
(:func:`specwise.model.recommended_k_from_speedups`, the rule
:func:`specwise.model.recommended_k` applies to one alpha); k = 0 wins when no k >= 1 is
expected to beat plain decoding, so a recommended k never has a predicted speedup below 1.

"Off" has two forms with different costs (docs/design.md); :mod:`specwise.policies.off` owns
them and which one to recommend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

import specwise.step_cost as _sc  # resolves through sys.modules (import cycle via schedule)
from specwise.errors import ConfigError
from specwise.estimation.estimator import Estimate
from specwise.model import (
    MAX_K,
    VerifyCost,
    expected_tokens_from_survival,
    recommended_k_from_speedups,
    speedup_from_survival,
    survival_curve,
    verify_cost_at,
)
from specwise.policies.load_policy import (
    ConfigRecommendation,
    LoadEvidence,
    recommend_config,
)
from specwise.policies.off import OffMode, choose_off
from specwise.policies.schedule import ScheduleEntry, compress_schedule

if TYPE_CHECKING:
    from specwise.estimation.step_fit import MeasuredSpeedup
    from specwise.step_cost import SpecConfig

__all__ = [
    "CONSTANT_COST_NOTE",
    "BatchVerifyCost",
    "OffMode",
    "PolicyConfig",
    "Recommendation",
    "recommend",
    "with_change_allowed",
]

PricedFrom = Literal["alpha", "survival", "none"]

#: The note of a recommendation priced without load evidence (no latency families).
CONSTANT_COST_NOTE = (
    "no latency families: priced with the constant-cost model (draft cost c from the preset)"
)

#: v(k, batch_size) in target decode steps, e.g.
#: ``lambda k, b: saturating_verify_cost(k, b, knee_tokens=256)``.
BatchVerifyCost = Callable[[int, int], float]


@dataclass(frozen=True)
class PolicyConfig:
    """What the policy needs besides the estimate.

    ``cost`` is the drafter cost c (see :mod:`specwise.policies.presets`); ``verify_cost``
    the model's v(k) (None: 1, light load); ``plateau`` the relative tolerance within which
    the smallest k wins (the recommended k, :func:`specwise.model.recommended_k_from_speedups`);
    ``off`` which "k = 0" to recommend ("auto": the schedule entry when a batch-size schedule
    still drafts somewhere, else a restart);
    ``schedule_off_overhead`` the slowdown of an engine that keeps the speculative config
    but drafts nothing (vLLM #49548 measured 6-22%). With ``batch_verify_cost`` a
    ``num_speculative_tokens_per_batch_size`` schedule over 1..``max_batch_size`` is emitted.
    ``max_step`` bounds one change: at most that many positions past the measured ones
    (the deployed k), since prices beyond them are extrapolated (None: no bound).

    With load evidence (:mod:`specwise.policies.load_policy`): ``schedules`` allows a
    batch-size schedule, kept only when it gains ``min_gain`` over the best single k;
    ``edge_margin`` keeps band edges away from batch sizes where the traffic hovers;
    ``min_band_share`` merges bands with less of the busy time into a neighbour;
    ``load_horizon`` (seconds) is how long the batch-size distribution is kept.
    """

    cost: float = 0.05
    k_max: int = 8
    verify_cost: VerifyCost = None
    plateau: float = 0.01
    off: Literal["auto", "schedule", "restart"] = "auto"
    schedule_off_overhead: float = 0.14
    batch_verify_cost: BatchVerifyCost | None = None
    max_batch_size: int = 256
    max_step: int | None = 2
    min_gain: float = 0.05
    schedules: bool = True
    edge_margin: float = 0.25
    min_band_share: float = 0.05
    load_horizon: float = 86400.0

    def __post_init__(self) -> None:
        if not (self.cost >= 0 and math.isfinite(self.cost)):
            raise ConfigError(
                f"draft cost = {self.cost!r} must be a finite number >= 0, e.g. 0.05",
                field="cost",
            )
        if (
            isinstance(self.k_max, bool)
            or not isinstance(self.k_max, int)
            or not 1 <= self.k_max <= MAX_K
        ):
            raise ConfigError(
                f"k_max = {self.k_max!r} must be a whole number in 1..{MAX_K}, e.g. 8",
                field="k_max",
            )
        if not (0 <= self.plateau < 1):
            raise ConfigError(
                f"plateau = {self.plateau!r} must lie in [0, 1), e.g. 0.01 (1%)", field="plateau"
            )
        if not (0 <= self.schedule_off_overhead < 1):
            raise ConfigError(
                f"schedule_off_overhead = {self.schedule_off_overhead!r} must lie in [0, 1), "
                "e.g. 0.14",
                field="schedule_off_overhead",
            )
        if self.off not in ("auto", "schedule", "restart"):
            raise ConfigError(
                f"off = {self.off!r} is unknown; use 'auto', 'schedule' or 'restart'", field="off"
            )
        if self.max_batch_size < 1:
            raise ConfigError(
                f"max_batch_size = {self.max_batch_size!r} must be >= 1, e.g. 256",
                field="max_batch_size",
            )
        if self.max_step is not None and (
            isinstance(self.max_step, bool)
            or not isinstance(self.max_step, int)
            or self.max_step < 1
        ):
            raise ConfigError(
                f"max_step = {self.max_step!r} must be a whole number >= 1 (e.g. 2) or None",
                field="max_step",
            )
        if not (0 <= self.min_gain <= 10):
            raise ConfigError(
                f"min_gain = {self.min_gain!r} must lie in 0..10, e.g. 0.05 (5%)",
                field="min_gain",
            )
        if not (0 <= self.edge_margin <= 4):
            raise ConfigError(
                f"edge_margin = {self.edge_margin!r} must lie in 0..4, e.g. 0.25 (25%)",
                field="edge_margin",
            )
        if not (0 <= self.min_band_share <= 0.5):
            raise ConfigError(
                f"min_band_share = {self.min_band_share!r} must lie in 0..0.5, e.g. 0.05",
                field="min_band_share",
            )
        if not (self.load_horizon > 0 and math.isfinite(self.load_horizon)):
            raise ConfigError(
                f"load_horizon = {self.load_horizon!r} must be a positive number of seconds, "
                "e.g. 86400 (24h)",
                field="load_horizon",
            )


@dataclass(frozen=True)
class Recommendation:
    """The policy's answer for one class; ``reason`` is one line a human can check.

    ``speedups[k]`` is the expected speedup of each priced k (index = k, 0 = 1.0);
    ``recommended_k`` is the smallest k within ``plateau`` of the best, ``optimal_k`` the
    exact maximiser of ``speedups`` (shown beside it where they differ);
    ``recommended_low/high`` bracket the recommended k's speedup at the interval ends of
    the estimate. ``confidence`` is the posterior probability that the recommended k is
    within ``plateau`` of the best. ``change_allowed`` is the hysteresis verdict
    (:mod:`specwise.policies.hysteresis`); before gating it says whether k would change.
    """

    class_name: str
    current_k: int | None
    recommended_k: int
    predicted_speedup_current: float | None
    predicted_speedup_recommended: float | None
    recommended_low: float | None = None
    recommended_high: float | None = None
    confidence: float = 0.0
    priced_from: PricedFrom = "none"
    extrapolated: bool = False
    off_mode: OffMode | None = None
    off_cost: str = ""
    schedule: tuple[ScheduleEntry, ...] | None = None
    speedups: tuple[float, ...] = ()
    cost: float = 0.0
    change_allowed: bool = False
    reason: str = ""
    notes: tuple[str, ...] = field(default=())
    optimal_k: int | None = None
    #: with load evidence: the configuration to run, its pricing, and the measured speedup
    config: SpecConfig | None = None
    load: ConfigRecommendation | None = None
    measured: MeasuredSpeedup | None = None

    @property
    def gain(self) -> float | None:
        """Predicted relative gain of the recommended k over the current one."""
        cur, rec = self.predicted_speedup_current, self.predicted_speedup_recommended
        if cur is None or rec is None or cur <= 0:
            return None
        return rec / cur - 1.0


def _choose(speedups: Sequence[float], plateau: float) -> int:
    """The recommended k (:func:`specwise.model.recommended_k_from_speedups`, the one home of
    the plateau rule): smallest k >= 1 within ``plateau`` of the best; 0 if none beats 1."""
    return recommended_k_from_speedups(speedups, tolerance=plateau)


def _best(speedups: Sequence[float]) -> int:
    """The exact maximiser of the priced speedups (tolerance 0), for display beside it."""
    return recommended_k_from_speedups(speedups, tolerance=0.0)


def _price(curve: Sequence[float], top: int, cost: float, vc: VerifyCost) -> list[float]:
    return [1.0] + [
        speedup_from_survival(curve, k, cost, verify_cost=vc) for k in range(1, top + 1)
    ]


def _curves(estimate: Estimate, config: PolicyConfig) -> tuple[PricedFrom, np.ndarray, int, str]:
    """Posterior sample curves (rows), the largest priced k and a note."""
    deployed = estimate.k or 0
    if not estimate.fit.ok and estimate.survival_samples:
        measured = np.asarray(estimate.survival_samples, dtype=float)
        top = config.k_max
        samples = _geometric_tail(measured, top)
        note = "priced from the measured survival curve (one alpha does not fit it)"
        if top > measured.shape[1]:
            note += (
                f"; k > {measured.shape[1]} priced with a geometric tail at the last measured "
                "conditional acceptance, a lower bound for mixed or correlated workloads"
            )
        return "survival", samples, top, note
    alphas = estimate.alpha_samples or ((estimate.alpha or 0.0),)
    top = config.k_max
    samples = np.asarray([survival_curve(a, top) for a in alphas], dtype=float)
    note = ""
    if deployed and top > deployed:
        note = f"k > {deployed} (the deployed k) priced by extrapolating the fitted alpha"
    return "alpha", samples, top, note


def _geometric_tail(measured: np.ndarray, top: int) -> np.ndarray:
    """Extend measured survival curves (rows) to ``top`` positions, or cut them there.

    Beyond the last measured position n each curve continues as s_n * q^j with q = s_n /
    s_{n-1}, its last conditional acceptance. In a mix of i.i.d. workloads, or with
    correlated acceptance, the conditional acceptance grows with the position (the drafts
    that survive come from the easier part), so this tail is a conservative extrapolation.
    """
    n = measured.shape[1]
    if top <= n:
        return measured[:, :top]
    last = measured[:, -1]
    before = measured[:, -2] if n >= 2 else np.ones(len(measured))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(before > 0, last / np.where(before > 0, before, 1.0), 0.0)
    q = np.clip(q, 0.0, 1.0)
    steps = np.arange(1, top - n + 1)
    tail = last[:, None] * q[:, None] ** steps[None, :]
    return np.concatenate([measured, tail], axis=1)


def _cycle_costs(top: int, cost: float, vc: VerifyCost) -> np.ndarray:
    return np.asarray([k * cost + verify_cost_at(k, vc) for k in range(1, top + 1)])


def _confidence(
    samples: np.ndarray, chosen: int, cost: float, vc: VerifyCost, plateau: float
) -> float:
    """Share of posterior samples in which ``chosen`` is within the plateau of their best."""
    top = samples.shape[1]
    tokens = 1.0 + np.cumsum(samples, axis=1)
    s = np.concatenate([np.ones((len(samples), 1)), tokens / _cycle_costs(top, cost, vc)], axis=1)
    best = s.max(axis=1)
    return float(np.mean(s[:, chosen] >= best * (1.0 - plateau) - 1e-12))


def _at_batch(bvc: BatchVerifyCost, batch_size: int) -> Callable[[int], float]:
    return lambda k: bvc(k, batch_size)


def _schedule(
    mean_curve: Sequence[float], top: int, config: PolicyConfig
) -> tuple[ScheduleEntry, ...]:
    bvc = config.batch_verify_cost
    if bvc is None:  # pragma: no cover - the caller checks
        raise ConfigError(
            "a batch-size schedule needs batch_verify_cost", field="batch_verify_cost"
        )
    best_k = [
        _choose(_price(mean_curve, top, config.cost, _at_batch(bvc, bs)), config.plateau)
        for bs in range(1, config.max_batch_size + 1)
    ]
    return compress_schedule(best_k)


def _fmt_alpha(e: Estimate) -> str:
    if e.alpha is None:
        return "alpha unknown"
    if e.alpha_low is None or e.alpha_high is None:
        return f"alpha {e.alpha:.3f}"
    return f"alpha {e.alpha:.3f} [{e.alpha_low:.3f}, {e.alpha_high:.3f}]"


def recommend(
    estimate: Estimate,
    *,
    config: PolicyConfig | None = None,
    current_k: int | None = None,
    load: LoadEvidence | None = None,
    current_schedule: tuple[ScheduleEntry, ...] | None = None,
) -> Recommendation:
    """The k to run for ``estimate``'s class, priced under its uncertainty, with a reason.

    ``current_k`` defaults to the estimate's k (the deployed k the counters show). With
    ``load`` (the fitted step time and the batch-size distribution) the answer is a
    configuration (:func:`specwise.policies.load_policy.recommend_config`): a single k, a
    batch-size schedule or off; ``current_schedule`` is the schedule in force with
    ``current_k``. Without it, the constant-cost model prices k, and a note says so.
    """
    cfg = config or PolicyConfig()
    cur = estimate.k if current_k is None else current_k
    if load is not None and estimate.ok:
        return _recommend_load(estimate, cfg, cur, load, current_schedule)
    if not estimate.ok:
        keep = cur if cur is not None else 0
        return Recommendation(
            class_name=estimate.class_name,
            current_k=cur,
            recommended_k=keep,
            predicted_speedup_current=None,
            predicted_speedup_recommended=None,
            cost=cfg.cost,
            reason=(
                f"{estimate.reason}; keep k = {cur} until there is evidence"
                if cur is not None
                else f"{estimate.reason}; keep the deployed k until there is evidence"
            ),
            notes=estimate.notes,
        )
    priced_from, samples, top, note = _curves(estimate, cfg)
    mean_curve = [float(x) for x in samples.mean(axis=0)]
    speedups = _price(mean_curve, top, cfg.cost, cfg.verify_cost)
    chosen = _choose(speedups, cfg.plateau)
    notes = list(estimate.notes)
    if note:
        notes.append(note)
    # One change moves at most max_step positions past the measured ones: beyond them the
    # price is an extrapolation (a geometric tail overestimates drafters whose acceptance
    # falls with depth), so the next step waits for the new positions to be measured.
    measured = len(estimate.survival) or (estimate.k or 0)
    step_bound = ""
    limit = top if cfg.max_step is None or measured < 1 else measured + cfg.max_step
    if chosen > limit:
        unbounded = chosen
        chosen = _choose(speedups[: limit + 1], cfg.plateau) or limit
        step_bound = (
            f"; k = {unbounded} is priced best, but one change goes at most {cfg.max_step} "
            f"positions past the {measured} measured (beyond them the price is extrapolated): "
            f"k = {chosen} now, further once those positions are measured"
        )
        notes.append(
            f"step bound applied: k = {unbounded} capped at k = {chosen} "
            f"({measured} measured positions + max_step {cfg.max_step})"
        )

    # The current k: priced like the others when in range, else from the point alpha.
    s_cur: float | None = None
    if cur is not None:
        if cur <= top:
            s_cur = speedups[cur]
        elif estimate.alpha is not None:
            s_cur = speedup_from_survival(
                survival_curve(estimate.alpha, cur), cur, cfg.cost, verify_cost=cfg.verify_cost
            )
            notes.append(f"current k = {cur} priced from the point alpha (beyond the priced range)")

    # The interval of the chosen k's speedup at the estimate's interval ends.
    lo_hi: list[float | None] = [None, None]
    if chosen >= 1:
        if priced_from == "survival":
            bounds = np.asarray(
                [[p.low for p in estimate.survival], [p.high for p in estimate.survival]]
            )
            ends = [list(row) for row in _geometric_tail(bounds, max(chosen, bounds.shape[1]))]
        else:
            ends = [
                survival_curve(estimate.alpha_low or 0.0, chosen),
                survival_curve(estimate.alpha_high or 0.0, chosen),
            ]
        for i, curve in enumerate(ends):
            lo_hi[i] = speedup_from_survival(
                curve[:chosen], chosen, cfg.cost, verify_cost=cfg.verify_cost
            )
    else:
        lo_hi = [1.0, 1.0]

    schedule = None
    if cfg.batch_verify_cost is not None:
        schedule = _schedule(mean_curve, min(top, limit), cfg)

    off_mode: OffMode | None = None
    off_cost = ""
    s_rec = speedups[chosen]
    if chosen == 0:
        off_mode, off_cost, s_off = choose_off(
            cfg.off, schedule, overhead=cfg.schedule_off_overhead
        )
        s_rec = s_rec if s_off is None else s_off

    # within the range this change may reach: a bounded step is judged among its peers
    confidence = _confidence(
        samples[:, : max(1, min(top, limit))], chosen, cfg.cost, cfg.verify_cost, cfg.plateau
    )
    reason = _reason(estimate, cfg, priced_from, speedups, chosen, cur, s_cur, off_mode)
    reason += step_bound
    if schedule is not None and len(schedule) > 1:
        reason += "; by batch size: " + ", ".join(f"{a}-{b}: k={k}" for a, b, k in schedule)
    e_tokens = expected_tokens_from_survival(mean_curve, chosen) if chosen else 1.0
    if cfg.verify_cost is None and cfg.batch_verify_cost is None:
        notes.append("verify cost taken as 1 target step: the answer holds for light load")
    notes.append(f"k = {chosen}: {e_tokens:.2f} expected tokens per verify")
    notes.append(CONSTANT_COST_NOTE)
    return Recommendation(
        class_name=estimate.class_name,
        current_k=cur,
        recommended_k=chosen,
        predicted_speedup_current=s_cur,
        predicted_speedup_recommended=s_rec,
        recommended_low=lo_hi[0],
        recommended_high=lo_hi[1],
        confidence=confidence,
        priced_from=priced_from,
        extrapolated=estimate.k is not None and chosen > estimate.k,
        off_mode=off_mode,
        off_cost=off_cost,
        schedule=schedule,
        speedups=tuple(speedups),
        cost=cfg.cost,
        change_allowed=cur is not None and chosen != cur,
        reason=reason,
        notes=tuple(notes),
        optimal_k=_best(speedups),
    )


def _recommend_load(
    estimate: Estimate,
    cfg: PolicyConfig,
    cur: int | None,
    load: LoadEvidence,
    current_schedule: tuple[ScheduleEntry, ...] | None,
) -> Recommendation:
    """The configuration under load (see :func:`recommend`)."""
    if not cur or not current_schedule or all(e[2] == cur for e in current_schedule):
        current_schedule = None  # one k at every batch size is that k
    current = None if cur is None else _sc.SpecConfig(cur, current_schedule)
    deployed_top = max([cur or 0, *(e[2] for e in current_schedule or ())])
    wide = replace(cfg, k_max=min(MAX_K, max(cfg.k_max, deployed_top)))
    priced_from, samples, _top, note = _curves(estimate, wide)
    notes = list(estimate.notes)
    if note:
        notes.append(note)
    measured = len(estimate.survival) or (estimate.k or 0)
    k_top = cfg.k_max
    if cfg.max_step is not None and measured >= 1:
        k_top = min(k_top, measured + cfg.max_step)
    out = recommend_config(
        samples,
        load,
        k_max=k_top,
        plateau=cfg.plateau,
        min_gain=cfg.min_gain,
        current=current,
        max_batch_size=cfg.max_batch_size,
        edge_margin=cfg.edge_margin,
        off_overhead=cfg.schedule_off_overhead,
        min_band_share=cfg.min_band_share,
        schedules=cfg.schedules,
    )
    notes.extend(out.notes)
    notes.extend(out.warnings)
    chosen = out.config.k
    if k_top < cfg.k_max and chosen == k_top:
        notes.append(
            f"step bound applied: k priced up to {k_top} ({measured} measured positions + "
            f"max_step {cfg.max_step}); beyond them the price is extrapolated"
        )
    speedups = out.speedups
    off_mode: OffMode | None = None
    off_cost = ""
    s_rec = out.speedup
    if chosen == 0:  # "auto" restarts: no schedule drafts anywhere
        off_mode, off_cost, s_off = choose_off(cfg.off, None, overhead=cfg.schedule_off_overhead)
        s_rec = s_rec if s_off is None else s_off
    reason = f"{_fmt_alpha(estimate)}, fitted step cost {out.reason}"
    return Recommendation(
        class_name=estimate.class_name,
        current_k=cur,
        recommended_k=chosen,
        predicted_speedup_current=out.current_speedup,
        predicted_speedup_recommended=s_rec,
        recommended_low=min(out.low, s_rec),
        recommended_high=min(out.high, s_rec) if chosen == 0 else out.high,
        confidence=out.confidence,
        priced_from=priced_from,
        extrapolated=estimate.k is not None and chosen > estimate.k,
        off_mode=off_mode,
        off_cost=off_cost,
        schedule=out.config.schedule,
        speedups=speedups,
        cost=cfg.cost,
        change_allowed=current is not None and out.config != current,
        reason=reason,
        notes=tuple(notes),
        optimal_k=_best(speedups) if len(speedups) > 1 else 0,
        config=out.config,
        load=out,
        measured=load.measured,
    )


def _reason(
    e: Estimate,
    cfg: PolicyConfig,
    priced_from: PricedFrom,
    speedups: Sequence[float],
    chosen: int,
    cur: int | None,
    s_cur: float | None,
    off_mode: OffMode | None,
) -> str:
    basis = _fmt_alpha(e)
    if priced_from == "survival":
        basis += f", measured survival (one alpha does not fit, p = {e.fit.p_value:.2g})"
    head = f"{basis}, draft cost {cfg.cost:g}"
    current = ""
    if cur is not None and s_cur is not None and cur != chosen:
        current = f"; current k = {cur} gives {s_cur:.2f}x"
    if chosen == 0:
        best_k = max(range(1, len(speedups)), key=lambda k: speedups[k]) if len(speedups) > 1 else 0
        how = "restart without speculation" if off_mode == "restart" else "k = 0 schedule entry"
        return (
            f"{head}: every k >= 1 loses (best, k = {best_k}, reaches {speedups[best_k]:.2f}x); "
            f"recommend 0 ({how}){current}"
        )
    best_k = _best(speedups)
    plateau = ""
    if best_k != chosen:
        plateau = (
            f" (k = {best_k} reaches {speedups[best_k]:.2f}x, within {cfg.plateau:.0%}; "
            "the smaller k wins)"
        )
    edge = ""
    measured = len(e.survival)
    if priced_from == "survival" and chosen > measured:
        edge = (
            f"; k = {chosen} > {measured} measured positions is priced with a conservative "
            "geometric tail"
        )
    cap = ""
    if chosen == len(speedups) - 1 and speedups[chosen] > speedups[chosen - 1] * (1 + cfg.plateau):
        cap = f"; k_max = {chosen} caps it: longer drafts would still gain (raise k_max to see)"
    return f"{head}: k = {chosen} gives {speedups[chosen]:.2f}x{plateau}{current}{edge}{cap}"


def with_change_allowed(rec: Recommendation, allowed: bool, reason: str) -> Recommendation:
    """A copy with the hysteresis verdict (used by :mod:`specwise.policies.hysteresis`)."""
    return replace(rec, change_allowed=allowed, reason=reason)
