"""The measured cost side: engine step time T(k, B) fitted from counter gains, and the
speedup the deployed configuration actually delivers (docs/design.md#the-cost-side).

Per class and window the counters give (plan identities):

- request-steps R = the ``vllm:inter_token_latency_seconds`` count gain;
- the step time requests see, T_obs = ITL sum gain / R;
- the mean decode batch, B_obs = R / ``vllm:iteration_tokens_total`` count gain (engine
  steps), else the mean of the busy running-request samples;
- tokens per request-step, G / R (G = generation tokens gain): 1 + accepted / drafts under
  speculation, about 1 for plain decoding.

:func:`fit_step_cost` fits the physically shaped :class:`~specwise.step_cost.StepCost` to
such windows by weighted least squares with Gaussian priors (the drafter preset c as the
prior of the drafter step relative to the plain step), the knee by a grid over the observed
verified tokens B(k+1) (never compute-bound included), and keeps posterior draws for
intervals. :func:`measured_speedup` prices the deployed configuration from what it
delivered: (G / R) / T_obs * T0(B_obs), T0 from plain windows at comparable batch sizes
("baseline") or from the fit ("inferred").

Pure numpy, no I/O, no clock; a fit of a few thousand windows takes a few milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from specwise.collectors.snapshot import CounterDelta
from specwise.step_cost import StepCost, expected_tokens

__all__ = [
    "MeasuredSpeedup",
    "StepCostFit",
    "StepObservation",
    "fit_step_cost",
    "measured_speedup",
    "observation_from_delta",
    "observation_problem",
]

FloatArray = npt.NDArray[np.float64]

#: Posterior draws kept with a fit (intervals are quantiles over them).
N_SAMPLES = 200
#: At most this many knee candidates (quantiles of the observed verified tokens).
MAX_KNEES = 40
#: Posterior draws are widened by this factor: the knee's grid and the plug-in noise
#: variance understate the spread (calibrated on simulated windows, tests/estimation).
DRAW_WIDEN = 1.25
#: Prior relative noise of one window's T_obs (a pseudo-observation for the noise scale).
NOISE_PRIOR = 0.02
NOISE_PRIOR_WEIGHT = 1.0
#: Floor of the drafter prior's width, as a share of the plain step (n-gram presets are 0).
DRAFT_PRIOR_FLOOR = 0.02
#: Plain windows within this factor of a batch size count as "comparable" for a baseline.
BASELINE_FACTOR = 1.5
#: A step time above this many seconds is not a decode step (a stalled or broken window).
MAX_STEP_SECONDS = 60.0


@dataclass(frozen=True)
class StepObservation:
    """One window of one class: what the engine's steps cost and delivered.

    ``k``: the k drafted in the window (0 = plain decoding); ``batch``: B_obs, running
    requests per step; ``step_seconds``: T_obs; ``weight``: R, the request-steps behind the
    mean; ``tokens_per_step``: G / R (None without the generation counter); ``start`` and
    ``end``: the window, Unix seconds.
    """

    k: int
    batch: float
    step_seconds: float
    weight: float
    tokens_per_step: float | None
    start: float
    end: float

    @property
    def tokens(self) -> float:
        """Tokens the target verifies per step: B (k + 1)."""
        return self.batch * (self.k + 1)


def _gain(value: float | None) -> float | None:
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v) or v <= 0.0:
        return None
    return v


def observation_problem(delta: CounterDelta, k: int | None = None) -> str | None:
    """Why ``delta`` gives no :class:`StepObservation` (one sentence), or None if it does."""
    kk = _window_k(delta, k)
    if kk is None:
        return "the deployed k of this window is unknown, so its step time cannot be priced"
    if delta.itl_seconds_count is None or delta.itl_seconds_sum is None:
        return (
            "no latency families (vllm:inter_token_latency_seconds): priced with the "
            "constant-cost model (draft cost c from the preset)"
        )
    r = _gain(delta.itl_seconds_count)
    s = _gain(delta.itl_seconds_sum)
    if r is None or s is None:
        return "no decode steps in this window (inter-token latency count did not grow)"
    t = s / r
    if t > MAX_STEP_SECONDS:
        return f"mean step time {t:.3g} s is not a decode step; window skipped"
    if _window_batch(delta, r) is None:
        return (
            "no batch size for this window (neither vllm:iteration_tokens_total nor "
            "vllm:num_requests_running samples)"
        )
    return None


def _window_k(delta: CounterDelta, k: int | None) -> int | None:
    if not delta.spec_families:
        return 0
    kk = delta.k if k is None else k
    if kk is None or isinstance(kk, bool) or int(kk) != kk or kk < 0:
        return None
    return int(kk)


def _window_batch(delta: CounterDelta, requests: float) -> float | None:
    steps = _gain(delta.iteration_steps)
    if steps is not None:
        b = requests / steps
        if math.isfinite(b) and b > 0.0:
            return b
    busy = [float(x) for x in delta.batch_samples if math.isfinite(float(x)) and float(x) > 0]
    if busy:
        return sum(busy) / len(busy)
    return None


def observation_from_delta(delta: CounterDelta, k: int | None = None) -> StepObservation | None:
    """The window's :class:`StepObservation`, or None when the families it needs are missing
    or its gains make no sense (see :func:`observation_problem` for the reason).

    ``k`` overrides the delta's deployed k (a load-only delta is always k = 0).
    """
    kk = _window_k(delta, k)
    r = _gain(delta.itl_seconds_count)
    s = _gain(delta.itl_seconds_sum)
    if kk is None or r is None or s is None or s / r > MAX_STEP_SECONDS:
        return None
    batch = _window_batch(delta, r)
    if batch is None:
        return None
    g = _gain(delta.generation_tokens)
    tps: float | None = None
    if g is not None:
        ratio = g / r
        # G counts every request's first token, which has no ITL observation: G/R is a
        # little above 1 for plain decoding. Far outside [0.5, 2 (k+1)] it is nonsense.
        if 0.5 <= ratio <= 2.0 * (kk + 1) + 1.0:
            tps = ratio
    return StepObservation(
        k=kk,
        batch=batch,
        step_seconds=s / r,
        weight=r,
        tokens_per_step=tps,
        start=float(delta.start),
        end=float(delta.end),
    )


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
        k = max(self.ks) if self.ks else 0
        k_ref = max(k, 1) if k > 0 else 1
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
        b_knee = cost.knee / (k_ref + 1)
        return f"the verify saturates from B = {b_knee:.0f} (knee {cost.knee:.0f} tokens per step)"


@dataclass(frozen=True)
class MeasuredSpeedup:
    """What the deployed configuration delivered against plain decoding at the same batch
    sizes, with a 90% interval. ``basis``: "baseline" when T0 comes from plain windows at
    comparable batch sizes, "inferred" when it comes from the fit. ``predicted``: the
    model's speedup (fitted cost, given survival) for the same windows."""

    value: float
    low: float
    high: float
    batch: float
    k: int
    basis: Literal["baseline", "inferred"]
    predicted: float | None = None
    predicted_low: float | None = None
    predicted_high: float | None = None


# --------------------------------------------------------------------------------------------
# the fit


def _arrays(obs: Sequence[StepObservation]) -> dict[str, FloatArray]:
    n = len(obs)
    return {
        "k": np.fromiter((o.k for o in obs), dtype=np.float64, count=n),
        "b": np.fromiter((o.batch for o in obs), dtype=np.float64, count=n),
        "t": np.fromiter((o.step_seconds for o in obs), dtype=np.float64, count=n),
        "r": np.fromiter((o.weight for o in obs), dtype=np.float64, count=n),
        "g": np.fromiter(
            (math.nan if o.tokens_per_step is None else o.tokens_per_step for o in obs),
            dtype=np.float64,
            count=n,
        ),
    }


def _valid_mask(a: dict[str, FloatArray]) -> npt.NDArray[np.bool_]:
    k, b, t, r = a["k"], a["b"], a["t"], a["r"]
    with np.errstate(invalid="ignore"):
        return np.asarray(
            (k >= 0)
            & (k == np.floor(k))
            & np.isfinite(b)
            & (b > 0)
            & np.isfinite(t)
            & (t > 0)
            & (t <= MAX_STEP_SECONDS)
            & np.isfinite(r)
            & (r > 0),
            dtype=np.bool_,
        )


def _valid(o: StepObservation) -> bool:
    return bool(_valid_mask(_arrays([o]))[0])


#: Windows of one k whose batch sizes lie within this factor pool into one cell.
CELL_WIDTH = 1.01


def _cells(
    k: FloatArray, b: FloatArray, t: FloatArray, w: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Pool windows of one k and nearly one batch size: weighted mean B and T, summed
    weight (the weighted least squares over cells equals the one over windows when B is
    constant within a cell; within-cell scatter stays in the caller's raw y'Wy)."""
    keys, inv = _cell_keys(k, b)
    ws = np.asarray(np.bincount(inv, weights=w), dtype=np.float64)
    bc = np.asarray(np.bincount(inv, weights=w * b), dtype=np.float64) / ws
    tc = np.asarray(np.bincount(inv, weights=w * t), dtype=np.float64) / ws
    return keys, bc, tc, ws


def _cell_keys(k: FloatArray, b: FloatArray) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """The k of each cell and each window's cell index (one int64 key: k, then log B)."""
    bins = np.round(np.log(b) / math.log(CELL_WIDTH)).astype(np.int64)
    key = k.astype(np.int64) * 10_000_000 + (bins + 1_000_000)
    uniq, inv = np.unique(key, return_inverse=True)
    ks = np.asarray(uniq // 10_000_000, dtype=np.float64)
    return ks, np.asarray(inv.reshape(-1), dtype=np.intp)


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
    """
    a = _arrays(obs)
    ok = _valid_mask(a)
    if not ok.any():
        return None
    usable = [o for o, good in zip(obs, ok, strict=True) if good]
    c = max(0.0, float(prior_cost)) if math.isfinite(prior_cost) else 0.0
    eps = max(0.0, float(prior_verify_slope)) if math.isfinite(prior_verify_slope) else 0.0
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
    # windows of one k within 1% of one batch size pool into one cell (the same sums up to
    # that 1%), so a day of windows costs what a few hundred do
    k, b, t, w = _cells(k_raw, b_raw, t_raw, w_raw)
    tokens = b * (k + 1.0)
    x0 = (1.0 + k * eps) * scale[0]
    x2 = k * scale[2]
    x3 = k * b * scale[3]
    fixed = np.stack([x0, x2, x3], axis=1)  # cells x 3

    knees, knee_mass = _knee_grid(tokens)
    h = np.where(
        np.isfinite(knees)[None, :], np.maximum(0.0, tokens[:, None] - knees[None, :]), 0.0
    )
    h = h * scale[1]  # n x G

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
        sd2 = max(c, DRAFT_PRIOR_FLOOR) * base_guess
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
        hk = np.maximum(0.0, tokens - knee) * scale[1]
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
    best_j = int(np.argmin(scores))
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
    post = np.exp(-0.5 * (scores - scores[best_j])) * knee_mass
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
            f"drafter prior (c = {c:.2f}), not measured"
        )
    if n < 3:
        notes.append(f"only {n} window{'s' if n != 1 else ''}: the fit leans on its priors")
    if float(b.max()) < 1.25 * float(b.min()):
        notes.append(
            f"one batch size observed (B about {float(np.mean(b)):.1f}): the knee and the "
            "per-sequence drafter cost rest on the prior there"
        )
    return tuple(notes)


# --------------------------------------------------------------------------------------------
# measured speedup


def _cost_arrays(costs: Sequence[StepCost]) -> dict[str, FloatArray]:
    return {
        "base": np.array([c.base for c in costs]),
        "per_token": np.array([c.per_token for c in costs]),
        "knee": np.array([c.knee for c in costs]),
        "draft_base": np.array([c.draft_base for c in costs]),
        "draft_per_seq": np.array([c.draft_per_seq for c in costs]),
        "verify_per_draft": np.array([c.verify_per_draft for c in costs]),
    }


def _step_times(p: dict[str, FloatArray], k: FloatArray, b: FloatArray) -> FloatArray:
    """T(k, B) for every cost (rows) and window (columns)."""
    knee = p["knee"][:, None]
    tok = (b * (k + 1.0))[None, :]
    over = np.where(
        np.isfinite(knee), np.maximum(0.0, tok - np.where(np.isfinite(knee), knee, 0.0)), 0.0
    )
    return np.asarray(
        p["base"][:, None]
        + p["per_token"][:, None] * over
        + k[None, :] * p["verify_per_draft"][:, None]
        + k[None, :] * (p["draft_base"][:, None] + p["draft_per_seq"][:, None] * b[None, :]),
        dtype=np.float64,
    )


def measured_speedup(
    obs: Sequence[StepObservation],
    fit: StepCostFit,
    survival: Sequence[float] | None = None,
    band: tuple[int, int] | None = None,
) -> MeasuredSpeedup | None:
    """The speedup the deployed configuration delivered in ``obs``, with a 90% interval.

    The deployed k is the k of the latest speculative window; its windows (within ``band``,
    an inclusive batch-size range, when given) are priced as tokens delivered over the
    tokens plain decoding would have delivered in the same target time at the same batch
    sizes: sum G / sum (R T_obs / T0(B_obs)). T0 comes from plain windows within a factor
    1.5 of the windows' batch sizes (the fit's shape, levelled on them: ``basis`` =
    "baseline") or from the fit alone ("inferred"). With ``survival`` the fitted model's
    prediction for the same windows comes along. None without speculative windows.
    """
    a = _arrays(obs)
    ok = _valid_mask(a)
    k_all, b_all, t_all, r_all, g_all = a["k"], a["b"], a["t"], a["r"], a["g"]
    is_spec = ok & (k_all > 0) & np.isfinite(g_all)
    if band is not None:
        is_spec &= (np.round(b_all) >= band[0]) & (np.round(b_all) <= band[1])
    if not is_spec.any():
        return None
    ends = np.fromiter((o.end for o in obs), dtype=np.float64, count=len(obs))
    latest = int(np.argmax(np.where(is_spec, ends, -np.inf)))
    k_dep = int(k_all[latest])
    sel = is_spec & (k_all == k_dep)
    spec = _Windows(k_all[sel], b_all[sel], t_all[sel], r_all[sel], g_all[sel] * r_all[sel])
    psel = ok & (k_all == 0)
    plain = _Windows(k_all[psel], b_all[psel], t_all[psel], r_all[psel], r_all[psel])

    # the value and its basis, exactly; the draws over pooled cells (a day of windows)
    value_row, basis, baseline_var, s_plain = _pooled_speedup([fit.cost], spec, plain, None)
    value = float(value_row[0])
    low = high = value
    spec_c, plain_c = spec.pooled(), plain.pooled()
    if fit.samples:
        draws, _, _, _ = _pooled_speedup(list(fit.samples), spec_c, plain_c, basis)
        # the windows' own noise: T_obs around the fitted T(k, B)
        tk0 = _step_times(_cost_arrays([fit.cost]), spec.k, spec.b)[0]
        s_spec = _rel_noise(spec.t / tk0, spec.r) if len(spec.k) >= 2 else s_plain
        t0 = _step_times(_cost_arrays([fit.cost]), np.zeros_like(spec.b), spec.b)[0]
        u = spec.r * spec.t / t0
        spec_var = s_spec**2 * float((u * u).sum()) / float(u.sum()) ** 2
        spread = DRAW_WIDEN * math.sqrt(spec_var + baseline_var)
        rng = np.random.default_rng(12345)
        # pooling the windows into cells moves the value a hair: take that out of the draws
        pooled_value = float(_pooled_speedup([fit.cost], spec_c, plain_c, basis)[0][0])
        draws = draws * (value / pooled_value)
        draws = draws * (1.0 + spread * rng.standard_normal(len(draws)))
        lo, hi = np.quantile(draws, [0.05, 0.95])
        low, high = min(float(lo), value), max(float(hi), value)

    predicted = predicted_low = predicted_high = None
    if survival is not None and len(survival) >= k_dep:
        e = expected_tokens(survival, k_dep)
        predicted = float(_predicted([fit.cost], spec, e)[0])
        predicted_low = predicted_high = predicted
        if fit.samples:
            pred = _predicted(list(fit.samples), spec_c, e)
            plo, phi = np.quantile(pred, [0.05, 0.95])
            predicted_low, predicted_high = min(float(plo), predicted), max(float(phi), predicted)
    batch = float((spec.r * spec.b).sum() / spec.r.sum())
    return MeasuredSpeedup(
        value=value,
        low=low,
        high=high,
        batch=batch,
        k=k_dep,
        basis=basis,
        predicted=predicted,
        predicted_low=predicted_low,
        predicted_high=predicted_high,
    )


@dataclass(frozen=True)
class _Windows:
    """Windows as arrays: k, batch, step seconds, request-steps, and tokens (G; for plain
    windows unused)."""

    k: FloatArray
    b: FloatArray
    t: FloatArray
    r: FloatArray
    g: FloatArray

    def pooled(self) -> _Windows:
        """Windows of one k within 1% of one batch size summed into one (R-weighted B and
        T, summed R and G)."""
        if len(self.k) == 0:
            return self
        ks, inv = _cell_keys(self.k, self.b)
        rs = np.asarray(np.bincount(inv, weights=self.r), dtype=np.float64)
        return _Windows(
            k=ks,
            b=np.bincount(inv, weights=self.r * self.b) / rs,
            t=np.bincount(inv, weights=self.r * self.t) / rs,
            r=rs,
            g=np.asarray(np.bincount(inv, weights=self.g), dtype=np.float64),
        )


def _pooled_speedup(
    costs: Sequence[StepCost],
    spec: _Windows,
    plain: _Windows,
    basis_given: Literal["baseline", "inferred"] | None,
) -> tuple[FloatArray, Literal["baseline", "inferred"], float, float]:
    """sum G / sum (R T / T0(B)) per cost; the basis; the relative variance the plain
    windows' noise adds; their relative noise per window."""
    p = _cost_arrays(costs)
    t0 = _step_times(p, np.zeros_like(spec.b), spec.b)  # costs x n
    basis: Literal["baseline", "inferred"] = "inferred"
    baseline_var = 0.0
    s_plain = 0.0
    if len(plain.k):
        order = np.argsort(plain.b)
        pb, pt, pr = plain.b[order], plain.t[order], plain.r[order]
        logp = np.log(pb)
        reach = math.log(BASELINE_FACTOR) + 1e-12
        lo_i = np.searchsorted(logp, np.log(spec.b) - reach, side="left")
        hi_i = np.searchsorted(logp, np.log(spec.b) + reach, side="right")
        covered = hi_i > lo_i
        t0p = _step_times(p, np.zeros_like(pb), pb)  # costs x m
        s_plain = _rel_noise(pt / t0p[0], pr)
        if basis_given is None:
            enough = float(spec.r[covered].sum()) >= 0.9 * float(spec.r.sum())
            basis = "baseline" if enough else "inferred"
        else:
            basis = basis_given
        if basis == "baseline" and covered.any():
            # level the fit's T0 on the plain windows near each spec window: the
            # R-weighted mean of T_obs / T0_fit over them (prefix sums over sorted B)
            num = np.concatenate(
                [np.zeros((len(costs), 1)), np.cumsum(pr[None, :] * pt[None, :] / t0p, axis=1)],
                axis=1,
            )
            den = np.concatenate([[0.0], np.cumsum(pr)])
            wsum = np.where(covered, den[hi_i] - den[lo_i], 1.0)
            corr = (num[:, hi_i] - num[:, lo_i]) / wsum[None, :]
            t0 = t0 * np.where(covered[None, :], corr, 1.0)
            # how much each plain window weighs in the sum of u: r_j * sum over the spec
            # windows that lean on it of u_i / W_i (a range in sorted log B again)
            u0 = spec.r * spec.t / t0[0]
            lean = np.where(covered, u0 / wsum, 0.0)
            sorder = np.argsort(spec.b)
            logs_sorted = np.log(spec.b[sorder])
            cum = np.concatenate([[0.0], np.cumsum(lean[sorder])])
            lo_j = np.searchsorted(logs_sorted, logp - reach, side="left")
            hi_j = np.searchsorted(logs_sorted, logp + reach, side="right")
            cj = pr * (cum[hi_j] - cum[lo_j])
            baseline_var = s_plain**2 * float((cj * cj).sum()) / float(u0.sum()) ** 2
    elif basis_given is not None:
        basis = basis_given
    u = (spec.r * spec.t)[None, :] / t0
    return np.asarray(spec.g.sum() / u.sum(axis=1)), basis, baseline_var, s_plain


def _predicted(costs: Sequence[StepCost], spec: _Windows, e: float) -> FloatArray:
    """The model's speedup for the same windows: sum R E / sum (R T(k, B) / T(0, B))."""
    p = _cost_arrays(costs)
    tk = _step_times(p, spec.k, spec.b)
    t0 = _step_times(p, np.zeros_like(spec.b), spec.b)
    return np.asarray((spec.r.sum() * e) / ((spec.r[None, :] * tk / t0).sum(axis=1)))


def _rel_noise(rel: FloatArray, weights: FloatArray) -> float:
    """The weighted standard deviation of one window's relative step time (0 with fewer
    than two windows)."""
    if len(rel) < 2:
        return 0.0
    wsum = float(weights.sum())
    m = float((weights * rel).sum() / wsum)
    var = float((weights * (rel - m) ** 2).sum() / wsum)
    n_eff = wsum**2 / float((weights * weights).sum())
    return math.sqrt(var * n_eff / max(n_eff - 1.0, 1.0))
