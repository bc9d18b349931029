"""The measured cost side: engine step time T(k, B) fitted from counter gains
(docs/design.md#the-cost-side).

:func:`fit_step_cost` fits the physically shaped :class:`~specwise.step_cost.StepCost` to a
class's windows (:class:`StepObservation`, from :mod:`specwise.estimation.step_obs`) by
weighted least squares with Gaussian priors (the drafter preset c as the prior of the
drafter step relative to the plain step), the knee by a grid over the observed verified
tokens B(k+1) (never compute-bound included), and keeps posterior draws for intervals.
:func:`measured_speedup` (:mod:`specwise.estimation.step_speedup`) prices the deployed
configuration from what it delivered; both are exported here, the module the plan names.

Pure numpy, no I/O, no clock; a fit of a few thousand windows takes a few milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from specwise.errors import ModelInputError
from specwise.estimation.batch_spread import dispersion_from_samples, spread_support
from specwise.estimation.step_obs import (
    DRAW_WIDEN,
    NOISE_PRIOR,
    NOISE_PRIOR_WEIGHT,
    FloatArray,
    StepObservation,
    cell_keys,
    observation_arrays,
    observation_from_delta,
    observation_problem,
    valid_mask,
)
from specwise.estimation.step_speedup import MeasuredSpeedup, measured_speedup
from specwise.policies.schedule import schedule_k_at
from specwise.step_cost import StepCost

__all__ = [
    "MeasuredSpeedup",
    "StepCostFit",
    "StepObservation",
    "fit_step_cost",
    "measured_speedup",
    "observation_from_delta",
    "observation_problem",
]

#: Posterior draws kept with a fit (intervals are quantiles over them).
N_SAMPLES = 200
#: At most this many knee candidates (quantiles of the observed verified tokens).
MAX_KNEES = 40
#: Floor of the drafter prior's width, as a share of the plain step (n-gram presets are 0).
DRAFT_PRIOR_FLOOR = 0.02
#: The drafter prior's width when the data cannot identify the drafter step (one k, no plain
#: window), as a share of the plain step: the fit is then conditioned on the preset c (the
#: constant-cost model's own assumption), and its draws carry the uncertainty of what the
#: windows identify (the deployed step over B), not a +-100% doubt about c that no window
#: can shrink (a second k or a plain window lets the data move c again).
DRAFT_PRIOR_CONDITIONED = 1e-4


@dataclass(frozen=True)
class StepCostFit:
    """T(k, B) fitted to a class's windows.

    ``cost``: the point estimate; ``samples``: posterior draws (intervals are quantiles over
    them); ``ks``: the k values seen; ``batch_range``: the smallest and largest B_obs;
    ``plain_observed``: whether plain (k = 0) windows measured T(0, B), rather than it being
    inferred (from several k, or through the drafter prior alone: see :attr:`plain_source`);
    ``prior_cost``: the preset c used as the drafter prior; ``notes``: what the fit could
    not identify, one sentence each.
    """

    cost: StepCost
    samples: tuple[StepCost, ...]
    n_observations: int
    ks: tuple[int, ...]
    batch_range: tuple[float, float]
    plain_observed: bool
    prior_cost: float
    notes: tuple[str, ...] = ()

    @property
    def plain_source(self) -> Literal["measured", "extrapolated", "prior"]:
        """Where T(0, B) comes from: plain windows, extrapolation over several k > 0, or
        only the drafter prior (one k, no plain windows)."""
        if self.plain_observed:
            return "measured"
        if len([k for k in self.ks if k > 0]) >= 2:
            return "extrapolated"
        return "prior"

    @property
    def typical_batch(self) -> float:
        """The geometric middle of the observed batch sizes (where implied costs are quoted)."""
        lo, hi = self.batch_range
        return math.sqrt(max(lo, 1e-9) * max(hi, 1e-9))

    def interval(self, f: Callable[[StepCost], float], level: float = 0.9) -> tuple[float, float]:
        """The central ``level`` interval of ``f`` over the posterior draws."""
        if not (0.0 < float(level) < 1.0):
            raise ModelInputError(
                f"interval level = {level!r} must lie between 0 and 1 (e.g. 0.9)", field="level"
            )
        if not self.samples:
            v = float(f(self.cost))
            return (v, v)
        values = np.array([float(f(s)) for s in self.samples], dtype=np.float64)
        tail = (1.0 - float(level)) / 2.0
        lo, hi = np.quantile(values, [tail, 1.0 - tail])
        return (float(lo), float(hi))

    def disagreements(self, prior: StepCost | None = None) -> tuple[str, ...]:
        """Where the fit and the prior disagree beyond noise, one sentence each.

        ``prior`` defaults to the constant-cost seed model with the preset c. Only what the
        data identifies is compared: the drafter cost needs plain windows or several k; the
        verify knee needs windows past it.
        """
        pri = StepCost.constant(self.prior_cost) if prior is None else prior
        out: list[str] = []
        b = self.typical_batch
        c_prior = pri.implied_draft_cost(b)
        if self.plain_source != "prior":
            c_fit = self.cost.implied_draft_cost(b)
            lo, hi = self.interval(lambda s: s.implied_draft_cost(b))
            if c_prior > 0:
                if lo > 1.25 * c_prior and c_fit > 1.5 * c_prior:
                    out.append(
                        f"the drafter costs {c_fit / c_prior:.1f}x its preset "
                        f"(c = {c_fit:.2f} against {c_prior:.2f})"
                    )
                elif hi < 0.8 * c_prior and c_fit < c_prior / 1.5:
                    out.append(
                        f"the drafter costs {c_fit / c_prior:.1f}x its preset, less than it "
                        f"says (c = {c_fit:.2f} against {c_prior:.2f})"
                    )
            elif lo > 0.02:
                out.append(f"the drafter costs c = {c_fit:.2f} where its preset says 0")
        knee_sentence = self._knee_disagreement(pri)
        if knee_sentence:
            out.append(knee_sentence)
        return tuple(out)

    def _knee_disagreement(self, prior: StepCost) -> str | None:
        cost = self.cost
        if not math.isfinite(cost.knee) or cost.per_token <= 0.0:
            return None
        k = max(self.ks) if self.ks else 0  # the deployed k: where the verify is priced
        hi_tokens = self.batch_range[1] * (k + 1)
        if hi_tokens <= cost.knee:
            return None

        # The knee is real when most draws saturate and the verify at the largest batch seen
        # costs materially more than the memory-bound step.
        def excess(s: StepCost) -> float:
            return (
                s.verify_time(k, self.batch_range[1]) / s.base
                - 1.0
                - k * s.verify_per_draft / s.base
            )

        lo, _ = self.interval(excess)
        if lo < 0.05:
            return None
        if math.isfinite(prior.knee) and prior.per_token > 0 and cost.knee >= 0.67 * prior.knee:
            return None
        b_knee = cost.knee / (k + 1)
        return f"the verify saturates from B = {b_knee:.0f} (knee {cost.knee:.0f} tokens per step)"


# --------------------------------------------------------------------------------------------
# the fit


def _cells(
    k: FloatArray, b: FloatArray, t: FloatArray, w: FloatArray, sid: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, np.ndarray]:
    """Pool windows of one k (and schedule) and nearly one batch size: weighted mean B and
    T, summed weight (the weighted least squares over cells equals the one over windows when
    B is constant within a cell; within-cell scatter stays in the caller's raw y'Wy)."""
    combined = k + (MAX_K_CELL + 1.0) * sid
    keys, inv = cell_keys(combined, b)
    ws = np.asarray(np.bincount(inv, weights=w), dtype=np.float64)
    bc = np.asarray(np.bincount(inv, weights=w * b), dtype=np.float64) / ws
    tc = np.asarray(np.bincount(inv, weights=w * t), dtype=np.float64) / ws
    ks = np.mod(keys, MAX_K_CELL + 1.0)
    sids = np.floor_divide(keys, MAX_K_CELL + 1.0)
    return ks, bc, tc, ws, sids, inv


#: k per cell key below this (cells of different schedules get keys above it)
MAX_K_CELL = 1024.0


def _schedule_ids(
    obs: Sequence[StepObservation],
) -> tuple[FloatArray, list[tuple[tuple[int, int, int], ...] | None]]:
    """Per window the index of its schedule in the returned list (0: none)."""
    found: list[tuple[tuple[int, int, int], ...] | None] = [None]
    index: dict[tuple[tuple[int, int, int], ...], int] = {}
    ids = np.zeros(len(obs), dtype=np.float64)
    for i, o in enumerate(obs):
        if o.schedule:
            j = index.get(o.schedule)
            if j is None:
                j = index[o.schedule] = len(found)
                found.append(o.schedule)
            ids[i] = j
    return ids, found


#: A schedule window with more than this share of its request-steps in a k = 0 band (the
#: loaded drafter's overhead, vLLM #49548: neither plain decoding nor speculation) is left
#: out of the fit.
MAX_OFF_BAND_SHARE = 0.1


@dataclass
class _Spread:
    """Each cell's batch sizes and their request-step weights (summing to 1 per cell), the
    k run at each (a schedule's band, else the cell's k), flattened and grouped by cell."""

    b: FloatArray
    k: FloatArray
    u: FloatArray
    starts: np.ndarray  # the first pair of each cell
    usable: FloatArray  # 1, or 0 for a cell mostly in a k = 0 band of its schedule

    @classmethod
    def build(
        cls,
        k: FloatArray,
        b: FloatArray,
        sid: FloatArray,
        schedules: Sequence[tuple[tuple[int, int, int], ...] | None],
        dispersion: float,
    ) -> _Spread:
        bs: list[FloatArray] = []
        ks: list[FloatArray] = []
        us: list[FloatArray] = []
        usable = np.ones(len(k))
        for i in range(len(k)):
            sizes, q = spread_support(float(b[i]), dispersion)
            sched = schedules[int(sid[i])]
            if sched:
                kk = np.array(
                    [schedule_k_at(sched, max(1, round(x))) for x in sizes], dtype=np.float64
                )
            else:
                kk = np.full(sizes.size, float(k[i]))
            u = q * sizes
            u = u / u.sum()
            if sched and float(u[kk == 0].sum()) > MAX_OFF_BAND_SHARE:
                usable[i] = 0.0
            bs.append(sizes)
            ks.append(kk)
            us.append(u)
        lengths = np.array([x.size for x in bs], dtype=np.intp)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.intp)
        return cls(
            b=np.concatenate(bs),
            k=np.concatenate(ks),
            u=np.concatenate(us),
            starts=starts,
            usable=usable,
        )

    def sum(self, values: FloatArray) -> FloatArray:
        """Per cell, the request-weighted mean of ``values`` (one per pair)."""
        out: FloatArray = np.add.reduceat(self.u * values, self.starts)
        return out

    def hinge(self, knees: FloatArray) -> FloatArray:
        """Per cell and knee, the request-weighted mean of max(0, B (k_B + 1) - knee)
        (0 for the "never" knee)."""
        tokens = self.b * (self.k + 1.0)
        finite = np.isfinite(knees)
        h = np.where(
            finite[None, :],
            np.maximum(0.0, tokens[:, None] - np.where(finite, knees, 0.0)[None, :]),
            0.0,
        )
        out: FloatArray = np.add.reduceat(self.u[:, None] * h, self.starts, axis=0)
        return out


@dataclass
class _KneeFit:
    knee: float
    theta: FloatArray  # natural units: base, per_token, draft_base, draft_per_seq
    free_theta: FloatArray  # the unconstrained posterior mean (natural units)
    cov: FloatArray  # the unconstrained posterior covariance (natural units), 4x4
    ssr: float
    score: float  # -2 log marginal likelihood (up to a constant)


def _solve_knee(
    gram: FloatArray,
    xty: FloatArray,
    yty: float,
    prior_prec: FloatArray,
    prior_mean_term: FloatArray,
    prior_const: float,
    sigma2: float,
    knee: float,
    scale: FloatArray,
) -> _KneeFit:
    """Penalized WLS in scaled parameters, with parameters 1..3 kept >= 0 (active set)."""
    free = [0, 1, 2, 3]
    theta = np.zeros(4)
    a_full = gram / sigma2 + prior_prec
    b_full = xty / sigma2 + prior_mean_term
    try:
        cov = np.linalg.inv(a_full)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(a_full)
    free_theta = cov @ b_full
    for _ in range(4):
        idx = np.array(free)
        a = a_full[np.ix_(idx, idx)]
        bvec = b_full[idx]
        try:
            sol = np.linalg.solve(a, bvec)
        except np.linalg.LinAlgError:
            sol = np.linalg.lstsq(a, bvec, rcond=None)[0]
        neg = [int(idx[j]) for j in range(len(idx)) if idx[j] != 0 and sol[j] < 0]
        if not neg:
            theta = np.zeros(4)
            theta[idx] = sol
            break
        worst = min(neg, key=lambda j: sol[free.index(j)])
        free.remove(worst)
    else:  # pragma: no cover - four removals always end with base alone
        theta = np.zeros(4)
    ssr = float(yty - 2.0 * theta @ xty + theta @ gram @ theta)
    ssr = max(ssr, 0.0)
    penalty = float(theta @ prior_prec @ theta - 2.0 * theta @ prior_mean_term + prior_const)
    sign, logdet = np.linalg.slogdet(a_full)
    score = ssr / sigma2 + penalty + (float(logdet) if sign > 0 else 0.0)
    # back to natural units
    theta_n = theta * scale
    cov_n = cov * np.outer(scale, scale)
    return _KneeFit(
        knee=knee,
        theta=theta_n,
        free_theta=free_theta * scale,
        cov=cov_n,
        ssr=ssr,
        score=score,
    )


def fit_step_cost(
    obs: Sequence[StepObservation],
    *,
    prior_cost: float,
    prior_verify_slope: float = 0.0,
    seed: int = 0,
) -> StepCostFit | None:
    """Fit T(k, B) to ``obs``; None when no usable window exists.

    Weighted least squares on the relative step time (weights grow with the request-steps
    behind each window), Gaussian priors: the drafter step ``draft_base`` around
    ``prior_cost`` times the plain step (width max(c, 0.02) of it), the per-sequence drafter
    cost and the compute slope around 0, the plain step itself nearly flat. The knee is
    chosen over the observed verified tokens B(k+1) and never-compute-bound by the marginal
    likelihood, and sampled with it for the posterior draws. ``prior_verify_slope`` (the
    seed model's eps) adds a fixed verify cost per draft of eps times the plain step.
    Windows whose numbers cannot be an engine's are skipped; a prior that is negative or
    not finite raises :class:`~specwise.errors.ModelInputError`.
    """
    c = _prior(prior_cost, "prior_cost", "the drafter preset's c, e.g. 0.05")
    eps = _prior(prior_verify_slope, "prior_verify_slope", "0")
    a = observation_arrays(obs)
    ok = valid_mask(a)
    if not ok.any():
        return None
    usable = [o for o, good in zip(obs, ok, strict=True) if good]
    k_raw, b_raw, t_raw, r = a["k"][ok], a["b"][ok], a["t"][ok], a["r"][ok]
    n = len(usable)

    # scales for conditioning (natural units -> order 1)
    base_guess = float(np.median(t_raw / (1.0 + k_raw * (c + eps))))
    tok_med = float(max(np.median(b_raw * (k_raw + 1.0)), 1.0))
    b_med = float(max(np.median(b_raw), 1.0))
    scale = np.array([base_guess, base_guess / tok_med, base_guess, base_guess / b_med])

    # relative residuals, weights by request-steps (capped so one long window cannot rule)
    r_med = float(np.median(r))
    w_raw = np.minimum(r, 10.0 * r_med) / r_med / (t_raw * t_raw)
    yty = float((w_raw * t_raw) @ t_raw)
    # the batch spreads within a window (requests come and go between steps): T_obs is the
    # request-weighted mean step, E[B T(k_B, B)] / E[B] over the window's batch sizes, not
    # T at the mean batch; the dispersion comes from the running samples against the means
    dispersion = dispersion_from_samples((o.batch_sq_dev, o.batch, o.batch_dof) for o in usable)
    sched_ids, schedules = _schedule_ids(usable)
    # windows of one k (and schedule) within 1% of one batch size pool into one cell (the
    # same sums up to that 1%), so a day of windows costs what a few hundred do
    k, b, t, w, sid, inv = _cells(k_raw, b_raw, t_raw, w_raw, sched_ids)
    # one k and no plain window: T(k, B) identifies base (1 + k c) only, so condition on c
    conditioned = not bool(np.any(k == 0)) and len({int(x) for x in k}) < 2
    tokens = b * (k + 1.0)
    spread = _Spread.build(k, b, sid, schedules, dispersion)
    if not spread.usable.all():  # a window that runs a k = 0 band of a schedule is left out
        w = w * spread.usable
        w_raw = w_raw * spread.usable[inv]
        yty = float((w_raw * t_raw) @ t_raw)
    x0 = spread.sum(1.0 + spread.k * eps) * scale[0]
    x2 = spread.sum(spread.k) * scale[2]
    x3 = spread.sum(spread.k * spread.b) * scale[3]
    fixed = np.stack([x0, x2, x3], axis=1)  # cells x 3

    knees, knee_mass = _knee_grid(tokens)
    h = spread.hinge(knees) * scale[1]  # cells x G

    fw = fixed * w[:, None]
    g_fixed = fixed.T @ fw  # 3x3
    y_fixed = fw.T @ t  # 3
    g_cross = fw.T @ h  # 3 x G
    g_hh = (h * h * w[:, None]).sum(axis=0)  # G
    y_h = (w * t) @ h  # G

    # priors in scaled units (theta_scaled = theta / scale)
    def priors(knee: float) -> tuple[FloatArray, FloatArray, float]:
        prec = np.zeros((4, 4))
        mean_term = np.zeros(4)
        const = 0.0
        # base: weak, around the guess
        sd0 = 10.0 * base_guess / scale[0]
        prec[0, 0] += 1.0 / sd0**2
        mean_term[0] += (base_guess / scale[0]) / sd0**2
        const += (base_guess / scale[0]) ** 2 / sd0**2
        # per_token: around 0; 4 base steps per knee's worth of tokens
        kn = knee if math.isfinite(knee) else tok_med
        sd1 = 4.0 * base_guess / max(kn, 1.0) / scale[1]
        prec[1, 1] += 1.0 / sd1**2
        # draft_base - c * base around 0, width max(c, floor) of the plain step
        v = np.array([-c * scale[0], 0.0, scale[2], 0.0])
        sd2 = (DRAFT_PRIOR_CONDITIONED if conditioned else max(c, DRAFT_PRIOR_FLOOR)) * base_guess
        prec += np.outer(v, v) / sd2**2
        # draft_per_seq around 0: at the median batch, up to max(c, 0.05) of the step
        sd3 = max(c, 0.05) * base_guess / b_med / scale[3]
        prec[3, 3] += 1.0 / sd3**2
        return prec, mean_term, const

    def gram_for(j: int) -> tuple[FloatArray, FloatArray]:
        gram = np.zeros((4, 4))
        gram[np.ix_([0, 2, 3], [0, 2, 3])] = g_fixed
        gram[1, 1] = g_hh[j]
        gram[1, [0, 2, 3]] = g_cross[:, j]
        gram[[0, 2, 3], 1] = g_cross[:, j]
        xty = np.zeros(4)
        xty[[0, 2, 3]] = y_fixed
        xty[1] = y_h[j]
        return gram, xty

    prior_by_knee = [priors(float(kn)) for kn in knees]
    grams = [gram_for(j) for j in range(len(knees))]

    def run(sigma2: float) -> list[_KneeFit]:
        return [
            _solve_knee(
                grams[j][0],
                grams[j][1],
                yty,
                prior_by_knee[j][0],
                prior_by_knee[j][1],
                prior_by_knee[j][2],
                sigma2,
                float(knees[j]),
                scale,
            )
            for j in range(len(knees))
        ]

    def fit_at(knee: float, sigma2: float) -> _KneeFit:
        hk = spread.hinge(np.array([knee]))[:, 0] * scale[1]
        gram = np.zeros((4, 4))
        gram[np.ix_([0, 2, 3], [0, 2, 3])] = g_fixed
        gram[1, 1] = float((hk * hk * w).sum())
        cross = fw.T @ hk
        gram[1, [0, 2, 3]] = cross
        gram[[0, 2, 3], 1] = cross
        xty = np.zeros(4)
        xty[[0, 2, 3]] = y_fixed
        xty[1] = float((w * t) @ hk)
        prec, mean_term, const = priors(knee)
        return _solve_knee(gram, xty, yty, prec, mean_term, const, sigma2, knee, scale)

    def noise(fit: _KneeFit) -> float:
        dof = max(n - 3.0, 0.0)
        return (fit.ssr + NOISE_PRIOR_WEIGHT * NOISE_PRIOR**2) / (dof + NOISE_PRIOR_WEIGHT)

    sigma2 = NOISE_PRIOR**2
    fits = run(sigma2)
    for _ in range(2):
        best = min(fits, key=lambda f: f.ssr)
        sigma2 = max(noise(best), 1e-10)
        fits = run(sigma2)
    scores = np.array([f.score for f in fits])
    scores = np.where(np.isfinite(scores), scores, np.inf)
    best_j = int(np.argmin(scores)) if np.isfinite(scores).any() else len(fits) - 1
    if math.isfinite(float(knees[best_j])):
        # the knee lies anywhere between the observed token counts: refine it between the
        # best candidate's neighbours (golden section on the same score)
        lo_k = float(knees[best_j - 1]) if best_j > 0 else float(tokens.min()) * 0.5
        hi_k = (
            float(knees[best_j + 1])
            if math.isfinite(float(knees[best_j + 1]))
            else float(tokens.max())
        )
        # the point estimate takes the refined knee; the draws keep the grid (a refined
        # optimum given a whole cell's prior mass would understate the knee's spread)
        best = _golden(lambda kn: fit_at(kn, sigma2), lo_k, hi_k, fits[best_j])
    else:
        best = fits[best_j]
    with np.errstate(invalid="ignore", over="ignore"):
        post = np.exp(-0.5 * (scores - scores[best_j])) * knee_mass
    post = np.where(np.isfinite(post) & (post > 0), post, 0.0)
    if not post.sum() > 0:
        post[best_j] = 1.0
    post /= post.sum()

    cost = _to_cost(best.theta, best.knee, eps)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(fits), size=N_SAMPLES, p=post)
    samples: list[StepCost] = []
    for j in np.unique(picks):
        f = fits[int(j)]
        need = int((picks == j).sum())
        for draw in _truncated_draws(f, need, rng):
            samples.append(_to_cost(draw, f.knee, eps))

    ks = tuple(sorted({int(x) for x in k}))
    plain = bool(np.any(k == 0))
    notes = _notes(usable, ks, plain, c, b_raw)
    return StepCostFit(
        cost=cost,
        samples=tuple(samples),
        n_observations=n,
        ks=ks,
        batch_range=(float(b_raw.min()), float(b_raw.max())),
        plain_observed=plain,
        prior_cost=c,
        notes=notes,
    )


def _prior(value: float, name: str, example: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v >= 0.0):
        raise ModelInputError(
            f"{name} = {value!r} must be a finite number >= 0 ({example})", field=name, value=value
        )
    return v


def _knee_grid(tokens: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Knee candidates and their prior mass (uniform in log knee): the observed verified
    token counts (at most MAX_KNEES / 2 quantiles, the largest left out: nothing lies above
    it) and as many log-spaced points between them, then "never" (inf)."""
    uniq = np.unique(tokens)
    if len(uniq) < 2:
        return np.array([np.inf]), np.array([1.0])
    cand = uniq[:-1]
    half = MAX_KNEES // 2
    if len(cand) > half:
        cand = np.unique(np.quantile(cand, np.linspace(0.0, 1.0, half)))
    lo, hi = float(uniq[0]), float(uniq[-1])
    spaced = np.geomspace(max(lo, 1e-6), hi, half + 1)[:-1]
    finite = np.unique(np.concatenate([cand, spaced]))
    logs = np.log(np.maximum(finite, 1e-6))
    edges = np.concatenate([[logs[0]], (logs[1:] + logs[:-1]) / 2.0, [math.log(hi)]])
    mass = np.maximum(np.diff(edges), 1e-3 * (math.log(hi) - logs[0] + 1e-9))
    # "never compute-bound": as much prior mass as a knee anywhere up to twice the largest
    return np.concatenate([finite, [np.inf]]), np.concatenate([mass, [math.log(2.0)]])


def _golden(
    f: Callable[[float], _KneeFit], lo: float, hi: float, start: _KneeFit, iters: int = 24
) -> _KneeFit:
    """Minimize the score over [lo, hi]; never worse than ``start``."""
    best = start
    if not (hi > lo):
        return best
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc.score < fd.score:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
        if b - a < 1e-3 * max(hi, 1.0):
            break
    for cand in (fc, fd):
        if cand.score < best.score:
            best = cand
    return best


def _truncated_draws(f: _KneeFit, need: int, rng: np.random.Generator) -> FloatArray:
    """Draws of the parameters from their Gaussian posterior truncated to >= 0 (rejection
    from the unconstrained one; clipped draws fill up when too few are accepted)."""
    chol = _chol(f.cov) * DRAW_WIDEN
    z = rng.standard_normal((8 * need, 4))
    draws = f.free_theta[None, :] + z @ chol.T
    ok = (draws[:, 0] > 0) & (draws[:, 1:] >= 0).all(axis=1)
    kept = draws[ok][:need]
    if len(kept) < need:
        rest = np.clip(draws[~ok][: need - len(kept)], 0.0, None)
        rest[:, 0] = np.where(rest[:, 0] > 0, rest[:, 0], f.theta[0])
        kept = np.concatenate([kept, rest])
    return np.asarray(kept, dtype=np.float64)


def _chol(cov: FloatArray) -> FloatArray:
    sym = 0.5 * (cov + cov.T)
    vals, vecs = np.linalg.eigh(sym)
    vals = np.clip(vals, 0.0, None)
    return np.asarray(vecs * np.sqrt(vals)[None, :], dtype=np.float64)


def _to_cost(theta: FloatArray, knee: float, eps: float) -> StepCost:
    base = float(theta[0])
    if not (base > 0.0) or not math.isfinite(base):
        base = 1e-9
    per_token = max(0.0, float(theta[1])) if math.isfinite(knee) else 0.0
    return StepCost(
        base=base,
        per_token=per_token if math.isfinite(per_token) else 0.0,
        knee=float(knee),
        draft_base=_nonneg(theta[2]),
        draft_per_seq=_nonneg(theta[3]),
        verify_per_draft=eps * base,
    )


def _nonneg(x: float) -> float:
    v = float(x)
    return v if math.isfinite(v) and v > 0.0 else 0.0


def _notes(
    obs: Sequence[StepObservation],
    ks: tuple[int, ...],
    plain: bool,
    c: float,
    b: FloatArray,
) -> tuple[str, ...]:
    notes: list[str] = []
    n = len(obs)
    spec_ks = [x for x in ks if x > 0]
    if plain:
        n_plain = sum(1 for o in obs if o.k == 0)
        pb = [o.batch for o in obs if o.k == 0]
        notes.append(
            f"T(0, B) measured from {n_plain} plain (k = 0) window"
            f"{'s' if n_plain != 1 else ''} at B {min(pb):.1f}-{max(pb):.1f}"
        )
    elif len(spec_ks) >= 2:
        notes.append(
            "no plain (k = 0) windows: T(0, B) extrapolated from k = "
            + ", ".join(str(x) for x in spec_ks)
        )
    else:
        kk = spec_ks[0] if spec_ks else 0
        notes.append(
            f"no plain (k = 0) windows and one k (k = {kk}): T(0, B) is inferred through the "
            f"drafter prior (conditioned on the preset c = {c:.2f}), not measured; a second k "
            "or a plain window measures c"
        )
    if n < 3:
        notes.append(f"only {n} window{'s' if n != 1 else ''}: the fit leans on its priors")
    if float(b.max()) < 1.25 * float(b.min()):
        notes.append(
            f"one batch size observed (B about {float(np.mean(b)):.1f}): the knee and the "
            "per-sequence drafter cost rest on the prior there"
        )
    return tuple(notes)
