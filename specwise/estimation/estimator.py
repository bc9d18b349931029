"""Rolling per-class estimate of the acceptance rate alpha, with its uncertainty.

Pure given its inputs: deltas come in, ``now`` is passed by the caller, no I/O, no clock.
The maths (docs/design.md#estimating-alpha, docs/vllm-metrics.md#what-each-count-means):

- each draft is a run of Bernoulli trials that stops at the first rejection or at its end;
  with D drafts, A accepted tokens and P_i drafts whose prefix reached position i
  (0-based), full-length drafts give successes A and failures R = D - P_{k-1}, so the
  maximum-likelihood alpha is A / (A + R) and a Beta(A + a0, R + b0) posterior its interval;
- drafts shorter than k (T < k*D; n-gram and suffix drafters, scheduler truncation,
  zero-token drafts) are not rejections: with N_j the drafts that proposed at least j
  tokens, E[P_i] = alpha^(i+1) N_(i+1) and T = N_1 + ... + N_k, so alpha solves
  sum_j P_(j-1) / alpha^j = T whatever the length distribution. The counters identify
  exactly alpha and the N_j (k + 1 numbers from k + 1 counts), so this moment estimator is
  the only consistent one and one i.i.d. alpha can only be checked against the inequalities
  N_(j+1) <= N_j; its interval is a Beta matched to the sandwich variance of the equation;
- without per-position counters (vLLM 0.8.4, old logs) alpha inverts the mean acceptance
  length 1 + A/D (or the token acceptance rate A/T when drafts are not counted).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import optimize, special

from specwise.collectors.snapshot import CounterDelta, Generation
from specwise.errors import ConfigError, DataError
from specwise.estimation.fit import FitCheck, check_iid_fit, check_short_fit
from specwise.model import alpha_from_acceptance_length, alpha_from_acceptance_rate

__all__ = [
    "DEFAULT_ESTIMATOR_CONFIG",
    "Estimate",
    "EstimatorConfig",
    "FitCheck",
    "Method",
    "SurvivalPoint",
    "WindowCounts",
    "alpha_trials",
    "estimate_counts",
    "estimate_delta",
    "short_draft_alpha",
]

#: How alpha was obtained: from the per-position counters (the MLE), by inverting vLLM's
#: mean acceptance length 1 + A/D, by inverting the token rate A/T (no drafts counter), from
#: V0's per-token counts, or not at all.
Method = Literal[
    "positions-mle", "acceptance-length", "acceptance-rate", "per-token-rate", "insufficient"
]

_GRID = 9  # posterior quantile grid the policy prices over


@dataclass(frozen=True)
class EstimatorConfig:
    """How the estimator pools and judges evidence.

    ``mode`` "sliding" keeps the deltas that ended within the last ``window_seconds``;
    "ewma" weighs each by 2^(-age / half_life_seconds). Below ``min_drafts`` drafts in the
    window the estimate is "insufficient". ``prior`` is the Beta prior (Jeffreys by
    default); ``level`` the credible level. The i.i.d. fit fails when its p-value is below
    ``fit_level`` and some survival point misses by more than ``fit_min_effect``.
    """

    window_seconds: float = 600.0
    mode: Literal["sliding", "ewma"] = "sliding"
    half_life_seconds: float = 300.0
    min_drafts: float = 200.0
    prior: tuple[float, float] = (0.5, 0.5)
    level: float = 0.95
    fit_level: float = 0.01
    fit_min_effect: float = 0.01

    def __post_init__(self) -> None:
        checks: list[tuple[str, float, bool, str]] = [
            ("window_seconds", self.window_seconds, self.window_seconds > 0, "e.g. 600"),
            ("half_life_seconds", self.half_life_seconds, self.half_life_seconds > 0, "e.g. 300"),
            ("min_drafts", self.min_drafts, self.min_drafts >= 0, "e.g. 200"),
            ("level", self.level, 0.0 < self.level < 1.0, "e.g. 0.95"),
            ("fit_level", self.fit_level, 0.0 < self.fit_level < 1.0, "e.g. 0.01"),
            ("fit_min_effect", self.fit_min_effect, self.fit_min_effect >= 0, "e.g. 0.01"),
        ]
        for name, value, ok, hint in checks:
            if not (ok and math.isfinite(value)):
                raise ConfigError(
                    f"estimator {name} = {value!r} is out of range; set a finite value, {hint}",
                    field=name,
                )
        if self.mode not in ("sliding", "ewma"):
            raise ConfigError(
                f"estimator mode = {self.mode!r} is unknown; use 'sliding' or 'ewma'", field="mode"
            )
        a0, b0 = self.prior
        if not (a0 > 0 and b0 > 0 and math.isfinite(a0) and math.isfinite(b0)):
            raise ConfigError(
                f"estimator prior = {self.prior!r} needs two finite numbers > 0, e.g. (0.5, 0.5)",
                field="prior",
            )


DEFAULT_ESTIMATOR_CONFIG = EstimatorConfig()


@dataclass(frozen=True)
class SurvivalPoint:
    """One position (1-based) of a measured curve with its credible interval."""

    position: int
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class WindowCounts:
    """Counter gains pooled over a window for one class (possibly weighted, so floats)."""

    drafts: float | None
    draft_tokens: float
    accepted: float
    accepted_per_position: tuple[float, ...] = ()
    k: int | None = None
    generation: Generation = "v1"
    start: float = 0.0
    end: float = 0.0
    deltas: int = 1
    restarts: int = 0
    notes: tuple[str, ...] = ()

    @classmethod
    def from_delta(cls, delta: CounterDelta) -> WindowCounts:
        """The counts of one collector delta, checked for contradictions."""
        k = delta.k
        if k is None and delta.accepted_per_position:
            k = len(delta.accepted_per_position)
        counts = cls(
            drafts=None if delta.drafts is None else float(delta.drafts),
            draft_tokens=float(delta.draft_tokens),
            accepted=float(delta.accepted),
            accepted_per_position=tuple(float(p) for p in delta.accepted_per_position),
            k=k,
            generation=delta.generation,
            start=float(delta.start),
            end=float(delta.end),
            restarts=delta.restarts,
            notes=tuple(delta.notes),
        )
        _validate(counts, source=_describe(delta.labels))
        return counts


def _describe(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _validate(c: WindowCounts, *, source: str = "") -> None:
    where = f" for {source}" if source else ""
    values = [c.draft_tokens, c.accepted, *c.accepted_per_position]
    if c.drafts is not None:
        values.append(c.drafts)
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise DataError(
            f"counter gains{where} contain a negative or non-finite value ({values!r}); "
            "feed deltas of cumulative counters (restarts handled as increase() does)",
            source=source or None,
        )
    tol = 1e-6 * max(1.0, c.draft_tokens)
    if c.accepted > c.draft_tokens + tol:
        raise DataError(
            f"accepted tokens {c.accepted:g} exceed draft tokens {c.draft_tokens:g}{where}; "
            "check that both deltas cover the same window and series",
            source=source or None,
        )
    pos = c.accepted_per_position
    if c.k is not None and pos and len(pos) != c.k:
        raise DataError(
            f"{len(pos)} per-position counters but k = {c.k}{where}; positions must be 0..k-1",
            source=source or None,
        )
    for i in range(1, len(pos)):
        if pos[i] > pos[i - 1] + tol:
            raise DataError(
                f"accepted at position {i} ({pos[i]:g}) exceeds position {i - 1} "
                f"({pos[i - 1]:g}){where}; per-position counts count prefixes and cannot rise, "
                "so sum series over the same engines for every position",
                source=source or None,
            )
    if pos and c.drafts is not None and pos[0] > c.drafts + tol:
        raise DataError(
            f"{pos[0]:g} drafts reached position 0 but only {c.drafts:g} drafts were counted"
            f"{where}; check that drafts and positions come from the same window",
            source=source or None,
        )
    if pos and abs(math.fsum(pos) - c.accepted) > max(1e-6 * c.accepted, 0.5 + 1e-9):
        raise DataError(
            f"per-position counts sum to {math.fsum(pos):g} but accepted is {c.accepted:g}"
            f"{where}; both must come from the same scrape",
            source=source or None,
        )


@dataclass(frozen=True)
class Estimate:
    """Alpha for one workload class over one window, with what it rests on.

    ``alpha`` (and the interval) is None when ``method`` is "insufficient"; ``reason``
    then says why. ``survival`` holds s_i = P_{i-1}/D with intervals, ``conditional`` the
    acceptance at position i given position i-1 was reached (P_{i-1}/P_{i-2}).
    ``alpha_samples`` is a quantile grid of the posterior of alpha and ``survival_samples``
    (filled only when the i.i.d. fit fails) the matching grid of measured survival curves:
    the policy prices k over one or the other.
    ``shortfall`` is T/(k*D) (1 = every draft had k tokens).
    """

    class_name: str
    method: Method
    alpha: float | None
    alpha_low: float | None
    alpha_high: float | None
    drafts: float
    draft_tokens: float
    accepted: float
    k: int | None
    survival: tuple[SurvivalPoint, ...] = ()
    conditional: tuple[SurvivalPoint, ...] = ()
    mean_acceptance_length: float | None = None
    acceptance_rate: float | None = None
    shortfall: float | None = None
    alpha_bracket: tuple[float, float] | None = None
    fit: FitCheck = field(default_factory=FitCheck.untested)
    alpha_samples: tuple[float, ...] = ()
    survival_samples: tuple[tuple[float, ...], ...] = ()
    generation: Generation = "v1"
    window_start: float = 0.0
    window_end: float = 0.0
    data_age: float = 0.0
    reason: str = ""
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the estimate carries a number (enough data, usable counters)."""
        return self.method != "insufficient" and self.alpha is not None

    @property
    def survival_values(self) -> tuple[float, ...]:
        return tuple(p.value for p in self.survival)

    @property
    def fit_ok(self) -> bool:
        return self.fit.ok


def _beta_interval(a: float, b: float, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    lo, hi = special.betaincinv(a, b, [tail, 1.0 - tail])
    return float(lo), float(hi)


_GRID_Q = (np.arange(_GRID) + 0.5) / _GRID


def _grid() -> np.ndarray:
    return _GRID_Q


def short_draft_alpha(accepted_per_position: Sequence[float], draft_tokens: float) -> float:
    """The root in [0, 1] of sum_j P_(j-1) / alpha^j = T (j = 1..k).

    With N_j the drafts that proposed at least j tokens (unknown), E[P_i] = alpha^(i+1)
    N_(i+1) and T = N_1 + ... + N_k, so P_(j-1) / alpha^j estimates N_j whatever the
    draft-length distribution. The left side falls from infinity to A = sum P as alpha
    rises to 1: one root when A <= T (1 when every draft token was accepted, 0 when none).
    """
    pos = [max(0.0, float(p)) for p in accepted_per_position]
    t = float(draft_tokens)
    if not pos or pos[0] <= 0.0:
        return 0.0
    if math.fsum(pos) >= t:
        return 1.0

    def excess(alpha: float) -> float:
        return math.fsum(p / alpha ** (j + 1) for j, p in enumerate(pos)) - t

    lo = min(1.0, pos[0] / t)  # sum >= P_0 / alpha >= T here
    if excess(lo) <= 0.0:
        return lo
    return float(optimize.brentq(excess, lo, 1.0, xtol=1e-15, rtol=4 * np.finfo(float).eps))


def _short_draft_information(
    pos: Sequence[float], drafts: float, draft_tokens: float, alpha: float
) -> float:
    """Effective Bernoulli trials n_eff = alpha (1 - alpha) / Var(alpha_hat) of the root.

    Sandwich variance of the estimating equation F(alpha) = sum_d psi_d with, per draft,
    psi = sum_(j <= L) alpha^-j - l (L its accepted prefix, l its length): Var F = D Var(psi)
    computed under the fitted model (lengths N_j = (P_(j-1) + 1) / alpha^j, made a valid
    distribution), divided by F'(alpha)^2. The + 1 keeps a top position that no draft
    reached in the window (P = 0 at low alpha) from claiming no variance: without it 95%
    intervals covered 79% at alpha 0.1 with mostly 1-token drafts; with it 93-97% in every
    case tested (tests/estimation/test_short_drafts.py). 0 when alpha is 0 or 1.
    """
    k = len(pos)
    if not 0.0 < alpha < 1.0 or drafts <= 0:
        return 0.0
    n = [(max(0.0, float(p)) + 1.0) / alpha ** (j + 1) for j, p in enumerate(pos)]
    reach = [max(drafts, n[0] if n else 0.0)]
    for v in n:
        reach.append(min(reach[-1], v))
    reach.append(0.0)
    total = reach[0]
    g = np.concatenate([[0.0], np.cumsum(alpha ** -np.arange(1.0, k + 1.0))])
    mean = second = 0.0
    for length in range(k + 1):
        share = (reach[length] - reach[length + 1]) / total
        if share <= 0.0:
            continue
        m = np.arange(length + 1)
        p = alpha**m * (1.0 - alpha)
        p[length] = alpha**length
        psi = g[: length + 1] - length
        mean += share * float(np.dot(p, psi))
        second += share * float(np.dot(p, psi * psi))
    var_f = drafts * max(second - mean * mean, 0.0)
    slope = math.fsum((j + 1) * p / alpha ** (j + 2) for j, p in enumerate(pos))
    if var_f <= 0.0 or slope <= 0.0:
        return 0.0
    var_alpha = var_f / (slope * slope)
    return alpha * (1.0 - alpha) / var_alpha


def alpha_trials(counts: WindowCounts) -> tuple[float, float, float, float] | None:
    """(successes, failures, failures_min, failures_max) of the i.i.d. alpha likelihood.

    Full-length drafts (T = k D): successes A and failures R = D - P_(k-1), the exact MLE
    A / (A + R). Short drafts (T < k D): alpha is the root of sum_j P_(j-1) / alpha^j = T
    (:func:`short_draft_alpha`, no assumption on which drafts were short or why, zero-token
    drafts included), returned as effective trials whose Beta matches the estimator's
    sandwich variance, so s / (s + r) is that root. failures_min and failures_max equal
    failures (kept for callers of the former bracket). None without positions or drafts.
    """
    pos = counts.accepted_per_position
    d = counts.drafts
    if not pos or d is None or d <= 0:
        return None
    k = len(pos)
    a = counts.accepted
    stopped_early = max(0.0, d - pos[-1])
    r_full = max(0.0, min(stopped_early, counts.draft_tokens - a))
    missing = max(0.0, k * d - counts.draft_tokens)
    if missing <= 1e-9 * max(1.0, k * d):
        return a, r_full, r_full, r_full
    alpha = short_draft_alpha(pos, counts.draft_tokens)
    n_eff = _short_draft_information(pos, d, counts.draft_tokens, alpha)
    if n_eff <= 0.0:
        # alpha at 0 or 1: as many trials as could have been made at the first position
        # (at least T / k drafts proposed a token), or A successes and no failure
        if alpha <= 0.0:
            return 0.0, counts.draft_tokens / k, counts.draft_tokens / k, counts.draft_tokens / k
        return a, 0.0, 0.0, 0.0
    s, r = alpha * n_eff, (1.0 - alpha) * n_eff
    return s, r, r, r


def _insufficient(
    class_name: str, counts: WindowCounts, now: float, reason: str, notes: Iterable[str] = ()
) -> Estimate:
    return Estimate(
        class_name=class_name,
        method="insufficient",
        alpha=None,
        alpha_low=None,
        alpha_high=None,
        drafts=counts.drafts or 0.0,
        draft_tokens=counts.draft_tokens,
        accepted=counts.accepted,
        k=counts.k,
        generation=counts.generation,
        window_start=counts.start,
        window_end=counts.end,
        data_age=max(0.0, now - counts.end),
        reason=reason,
        notes=(*counts.notes, *notes),
    )


def _curves(
    pos: Sequence[float], drafts: float, prior: tuple[float, float], level: float
) -> tuple[tuple[SurvivalPoint, ...], tuple[SurvivalPoint, ...]]:
    """Survival s_i = P_{i-1}/D and conditional P_{i-1}/P_{i-2}, with Beta intervals.

    One vectorized quantile call for both curves and both interval ends.
    """
    k = len(pos)
    n = np.asarray(pos, dtype=float)
    reached = np.concatenate([[drafts], n[:-1]])
    numer = np.concatenate([n, n])
    denom = np.concatenate([np.full(k, drafts), reached])
    tail = (1.0 - level) / 2.0
    a = numer + prior[0]
    b = np.maximum(denom - numer, 0.0) + prior[1]
    q = special.betaincinv(a[None, :], b[None, :], np.array([[tail], [1.0 - tail]]))
    val = np.divide(numer, denom, out=np.zeros_like(numer), where=denom > 0)
    v, lo, hi = val.tolist(), q[0].tolist(), q[1].tolist()
    points = tuple(SurvivalPoint(i % k + 1, v[i], lo[i], hi[i]) for i in range(2 * k))
    return points[:k], points[k:]


def _survival_samples(
    pos: Sequence[float], drafts: float, prior: tuple[float, float]
) -> tuple[tuple[float, ...], ...]:
    """Comonotone posterior quantile grid of survival curves (conditional Betas, chained)."""
    reached = np.asarray([drafts, *pos], dtype=float)
    a = reached[1:] + prior[0]
    b = np.maximum(reached[:-1] - reached[1:], 0.0) + prior[1]
    q = _grid()[:, None]
    cond = special.betaincinv(a[None, :], b[None, :], q)
    curves = np.cumprod(cond, axis=1)
    return tuple(tuple(row) for row in curves.tolist())


def estimate_counts(
    class_name: str,
    counts: WindowCounts,
    *,
    now: float,
    config: EstimatorConfig = DEFAULT_ESTIMATOR_CONFIG,
    k: int | None = None,
) -> Estimate:
    """Estimate alpha, its interval, the survival curve and the i.i.d. fit from ``counts``.

    ``k`` overrides an unknown deployed k (needed when positions are not exported).
    """
    _validate(counts)
    k_eff = counts.k if counts.k is not None else k
    d = counts.drafts
    t, a = counts.draft_tokens, counts.accepted
    evidence = d if d is not None else (t / k_eff if k_eff else 0.0)
    if counts.generation == "v0":
        return _estimate_v0(class_name, counts, now=now, config=config)
    if k_eff is None or k_eff < 1:
        return _insufficient(
            class_name,
            counts,
            now,
            "the deployed k is unknown (no per-position counters); pass it (k / --k)",
        )
    if evidence < config.min_drafts or evidence <= 0:
        return _insufficient(
            class_name,
            counts,
            now,
            f"not enough data: {evidence:.0f} drafts in the window, fewer than the "
            f"{config.min_drafts:g} required (min_drafts)",
        )
    notes: list[str] = list(counts.notes)
    mal = 1.0 + a / d if d else None
    shortfall = t / (k_eff * d) if d else None
    if d and shortfall is not None and shortfall < 0.995:
        notes.append(
            f"drafts averaged {t / d:.2f} of k = {k_eff} tokens (shortfall {shortfall:.3f}); "
            "short drafts are not counted as rejections"
        )
    trials = alpha_trials(counts)
    level, prior = config.level, config.prior
    base = {
        "class_name": class_name,
        "drafts": d if d is not None else 0.0,
        "draft_tokens": t,
        "accepted": a,
        "k": k_eff,
        "mean_acceptance_length": mal,
        "acceptance_rate": a / t if t > 0 else None,
        "shortfall": shortfall,
        "generation": counts.generation,
        "window_start": counts.start,
        "window_end": counts.end,
        "data_age": max(0.0, now - counts.end),
    }
    if trials is not None and d is not None:
        s, r, _, _ = trials
        if s + r <= 0:
            return _insufficient(class_name, counts, now, "no verified draft token in the window")
        alpha = s / (s + r)
        tail = (1.0 - level) / 2.0
        qs = special.betaincinv(
            s + prior[0], r + prior[1], np.concatenate([[tail, 1.0 - tail], _grid()])
        ).tolist()
        lo, hi = qs[0], qs[1]
        bracket: tuple[float, float] | None = None
        pos = counts.accepted_per_position
        survival, conditional = _curves(pos, d, prior, level)
        short = k_eff * d - t > 1e-9 * max(1.0, k_eff * d)
        if short:
            notes.append(
                f"short drafts: alpha {alpha:.3f} solves sum_j P_(j-1) / alpha^j = T (drafts "
                "of any length mix; the interval is the estimator's sandwich variance)"
            )
            fit = check_short_fit(
                pos, d, alpha, level=config.fit_level, min_effect=config.fit_min_effect
            )
        else:
            fit = check_iid_fit(
                pos, d, t, alpha, level=config.fit_level, min_effect=config.fit_min_effect
            )
        if not fit.ok:
            notes.append(
                f"one i.i.d. alpha does not fit the survival curve (p = {fit.p_value:.2g}, "
                f"worst miss {fit.max_deviation:.3f}): a workload mix or correlated acceptance; "
                f"price k from the measured curve up to k = {k_eff}"
            )
        return Estimate(
            method="positions-mle",
            alpha=alpha,
            alpha_low=lo,
            alpha_high=hi,
            survival=survival,
            conditional=conditional,
            alpha_bracket=bracket,
            fit=fit,
            alpha_samples=tuple(qs[2:]),
            survival_samples=() if fit.ok else _survival_samples(pos, d, prior),
            notes=tuple(notes),
            **base,  # type: ignore[arg-type]
        )
    # Fallbacks: no positions. Invert a ratio; its interval counts drafts, not tokens
    # (tokens within a draft are not independent), mapped through the inversion.
    method: Method
    if d is not None and d > 0:
        method = "acceptance-length"
        frac, n_eff = a / (k_eff * d), d
        notes.append("no per-position counters: alpha inverts the mean acceptance length")
    else:
        method = "acceptance-rate"
        frac, n_eff = (a / t if t > 0 else 0.0), t / k_eff
        notes.append(
            "no drafts counter (vLLM 0.8.4): alpha inverts accepted / draft tokens assuming "
            "full-length drafts"
        )
    frac = min(1.0, max(0.0, frac))
    qa, qb = frac * n_eff + prior[0], (1.0 - frac) * n_eff + prior[1]
    tail = (1.0 - level) / 2.0
    raw = special.betaincinv(qa, qb, np.concatenate([[tail, 1.0 - tail], _grid()]))

    def invert(f: float) -> float:
        f = min(1.0, max(0.0, float(f)))
        if method == "acceptance-length":
            return alpha_from_acceptance_length(1.0 + f * k_eff, k_eff)
        return alpha_from_acceptance_rate(f, k_eff)

    return Estimate(
        method=method,
        alpha=invert(frac),
        alpha_low=invert(raw[0]),
        alpha_high=invert(raw[1]),
        alpha_samples=tuple(invert(x) for x in raw[2:]),
        fit=FitCheck.untested("no per-position counters"),
        notes=tuple(notes),
        **base,  # type: ignore[arg-type]
    )


def _estimate_v0(
    class_name: str, counts: WindowCounts, *, now: float, config: EstimatorConfig
) -> Estimate:
    t, a = counts.draft_tokens, counts.accepted
    k = counts.k
    evidence = t / k if k else t
    if evidence < config.min_drafts or t <= 0:
        return _insufficient(
            class_name,
            counts,
            now,
            f"not enough data: about {evidence:.0f} V0 drafts in the window, fewer than "
            f"{config.min_drafts:g} (min_drafts)",
        )
    prior, level = config.prior, config.level
    n_eff = evidence  # tokens within a draft are not independent: count drafts
    frac = a / t
    qa, qb = frac * n_eff + prior[0], (1.0 - frac) * n_eff + prior[1]
    lo, hi = _beta_interval(qa, qb, level)
    return Estimate(
        class_name=class_name,
        method="per-token-rate",
        alpha=frac,
        alpha_low=lo,
        alpha_high=hi,
        drafts=evidence,
        draft_tokens=t,
        accepted=a,
        k=k,
        acceptance_rate=frac,
        alpha_samples=tuple(float(x) for x in special.betaincinv(qa, qb, _grid())),
        fit=FitCheck.untested("V0 counts every accepted token, not prefixes"),
        generation="v0",
        window_start=counts.start,
        window_end=counts.end,
        data_age=max(0.0, now - counts.end),
        notes=(*counts.notes, "V0: alpha = accepted / draft tokens (per-token acceptance)"),
    )


def estimate_delta(
    class_name: str,
    delta: CounterDelta,
    *,
    now: float | None = None,
    config: EstimatorConfig = DEFAULT_ESTIMATOR_CONFIG,
    k: int | None = None,
) -> Estimate:
    """One-shot estimate from one delta (``now`` defaults to the delta's end)."""
    counts = WindowCounts.from_delta(delta)
    return estimate_counts(
        class_name, counts, now=delta.end if now is None else now, config=config, k=k
    )
