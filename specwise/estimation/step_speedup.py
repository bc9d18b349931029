"""What the deployed configuration delivered against plain decoding at the same batch
sizes: the measured speedup (docs/design.md#the-cost-side).

Two measures. Throughput (``measure`` = "throughput", used when the speculative windows
and plain windows at comparable batch sizes both carry the per-request families): the
tokens a request gets per second it spends in the engine, prefill included (finished
requests' generated tokens / their ``vllm:request_inference_time_seconds``), against plain
decoding's at a comparable load level: sum G_req / sum (S_req rate0(L)). The load level L of
a window is the time-average number of requests decoding in it (Little's law on the
inter-token latency: ITL sum / window length, exact per window, unlike the finished
requests' sums), which a per-request rate depends on. This
is what a client sees: speculation shortens the decode, not the prefill, and a draft model's
prefill costs extra. Decode-only (``measure`` = "decode", the fallback): sum G / sum (R T_obs
/ T0(B_obs)) over a class's windows; T0 from plain windows at comparable batch sizes
("baseline") or from the fitted T(0, B) ("inferred"). Both with a 90% interval and, given a
survival curve, the fitted model's (decode-only) prediction for the same windows.
Exported from :mod:`specwise.estimation.step_fit` too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from specwise.estimation.step_obs import (
    DRAW_WIDEN,
    MAX_K,
    NOISE_PRIOR,
    NOISE_PRIOR_WEIGHT,
    FloatArray,
    StepObservation,
    cell_keys,
    observation_arrays,
    valid_mask,
)
from specwise.step_cost import StepCost, expected_tokens

if TYPE_CHECKING:
    from specwise.estimation.step_fit import StepCostFit

__all__ = ["MeasuredSpeedup", "measured_speedup"]

#: Plain windows within this factor of a batch size count as "comparable" for a baseline.
BASELINE_FACTOR = 1.5


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
    #: "throughput": per-request tokens per second in the engine, prefill included, against
    #: plain windows at comparable batch sizes; "decode": tokens per step time (decode only)
    measure: Literal["throughput", "decode"] = "decode"
    #: the decode-only measure of the same windows (equals ``value`` when measure = "decode")
    decode_value: float | None = None
    #: requests in the engine on average over the speculative windows (Little's law), and
    #: over the plain windows the throughput baseline leaned on; None without the families
    load: float | None = None
    plain_load: float | None = None


def cost_arrays(costs: Sequence[StepCost]) -> dict[str, FloatArray]:
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
    a = observation_arrays(obs)
    ok = valid_mask(a)
    k_all, b_all, t_all, r_all, g_all = a["k"], a["b"], a["t"], a["r"], a["g"]
    with np.errstate(invalid="ignore"):
        is_spec = ok & (k_all > 0) & (g_all > 0) & (g_all <= MAX_K + 2)
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
    # plain decoding's tokens per request-step: G / R (a little above 1: G counts each
    # request's first token, which has no ITL observation, and so does G / R under
    # speculation); 1 where the window lacks it
    with np.errstate(invalid="ignore"):
        g_plain = np.where((g_all >= 0.5) & (g_all <= 3.0), g_all, 1.0)[psel]
    plain = _Windows(k_all[psel], b_all[psel], t_all[psel], r_all[psel], g_plain * r_all[psel])

    # the value and its basis, exactly; the draws over pooled cells (a day of windows)
    value_row, basis, baseline_var, _ = _pooled_speedup([fit.cost], spec, plain, None)
    value = float(value_row[0])
    low = high = value
    spec_c, plain_c = spec.pooled(), plain.pooled()
    if fit.samples:
        draws, _, _, _ = _pooled_speedup(list(fit.samples), spec_c, plain_c, basis)
        # the windows' own noise: T_obs / T(k, B) around their neighbours' (_rel_noise)
        tk0 = _step_times(cost_arrays([fit.cost]), spec.k, spec.b)[0]
        s_spec = _rel_noise(spec.t / tk0, spec.r, spec.b)
        t0 = _step_times(cost_arrays([fit.cost]), np.zeros_like(spec.b), spec.b)[0]
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
    thr = _throughput(
        [o for o, s_ in zip(obs, sel, strict=True) if s_],
        [o for o, p_ in zip(obs, psel, strict=True) if p_],
    )
    if thr is not None:
        t_value, t_low, t_high, load, plain_load = thr
        return MeasuredSpeedup(
            value=t_value,
            low=t_low,
            high=t_high,
            batch=batch,
            k=k_dep,
            basis="baseline",
            predicted=predicted,
            predicted_low=predicted_low,
            predicted_high=predicted_high,
            measure="throughput",
            decode_value=value,
            load=load,
            plain_load=plain_load,
        )
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
        decode_value=value,
    )


def load_level(o: StepObservation) -> float:
    """Requests decoding on average over the window (R T_obs / its length: Little's law on
    the inter-token latency); its mean decode batch when the window has no length."""
    span = o.end - o.start
    return o.weight * o.step_seconds / span if span > 0 else o.batch


def _has_requests(o: StepObservation) -> bool:
    s, g = o.request_seconds, o.request_tokens
    return s is not None and g is not None and 0 < s < math.inf and 0 < g < math.inf


def _request_arrays(
    obs: Sequence[StepObservation],
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Request-seconds, request tokens, load level and mean batch of the windows where
    requests finished."""
    rows = [
        (o.request_seconds, o.request_tokens, load_level(o), o.batch)
        for o in obs
        if _has_requests(o)
    ]
    a = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return a[:, 0], a[:, 1], a[:, 2], a[:, 3]


#: Plain windows whose mean batch lies within this factor of a speculative window's are
#: preferred for its baseline (same load and same batching: at one load level a window
#: whose steps ran more requests each is slower per request); all within BASELINE_FACTOR
#: of its load level when those cover too little.
BATCH_MATCH = 1.1


def _kernel(a: FloatArray, b: FloatArray, factor: float) -> FloatArray:
    """Triangular weights in log space, zero at a ratio of ``factor`` (spec x plain)."""
    dist = np.abs(np.log(a)[:, None] - np.log(b)[None, :]) / math.log(factor)
    out: FloatArray = np.maximum(0.0, 1.0 - dist)
    return out


def _ratio_var(tokens: FloatArray, seconds: FloatArray) -> float:
    """Relative variance of sum tokens / sum seconds from its windows' scatter (a ratio
    estimator), with the noise prior as one pseudo-window so one window is not exact."""
    n = len(tokens)
    total = float(tokens.sum())
    rate = total / float(seconds.sum())
    ss = float(((tokens - rate * seconds) ** 2).sum()) / total**2
    ss = ss * n / (n - 1) if n > 1 else 0.0
    return ss + NOISE_PRIOR**2 / (n + NOISE_PRIOR_WEIGHT)


def _throughput(
    spec_obs: Sequence[StepObservation], plain_obs: Sequence[StepObservation]
) -> tuple[float, float, float, float | None, float | None] | None:
    """The throughput measure (value, 90% low, high, load, plain load) or None when either
    side lacks the per-request families or plain windows at comparable batch sizes cover
    less than 90% of the speculative request-seconds (plain windows within a factor
    BASELINE_FACTOR of their load levels)."""
    s_sec, s_tok, s_l, s_b = _request_arrays(spec_obs)
    p_sec, p_tok, p_l, p_b = _request_arrays(plain_obs)
    if len(s_sec) == 0 or len(p_sec) == 0:
        return None
    # plain decoding's per-request token rate near each speculative window's load level: a
    # triangular kernel in log L (zero at a factor BASELINE_FACTOR), weighted by seconds,
    # and in log B (zero at BATCH_MATCH) where such windows cover 90% of the speculative
    # request-seconds
    w_load = _kernel(s_l, p_l, BASELINE_FACTOR) * p_sec[None, :]  # spec x plain
    w_both = w_load * _kernel(s_b, p_b, BATCH_MATCH)
    w = w_load
    for cand in (w_both, w_load):
        if float(s_sec[cand.sum(axis=1) > 0].sum()) >= 0.9 * float(s_sec.sum()):
            w = cand
            break
    wsum = w.sum(axis=1)
    covered = wsum > 0
    if float(s_sec[covered].sum()) < 0.9 * float(s_sec.sum()):
        return None
    s_sec, s_tok, w, wsum = s_sec[covered], s_tok[covered], w[covered], wsum[covered]
    rate0 = (w * (p_tok / p_sec)[None, :]).sum(axis=1) / wsum
    value = float(s_tok.sum() / (s_sec * rate0).sum())
    # the plain windows the baseline leaned on, and how much (for the noise and the load)
    lean = (s_sec[:, None] * w / wsum[:, None]).sum(axis=0)
    used = lean > 0
    sd = DRAW_WIDEN * math.sqrt(_ratio_var(s_tok, s_sec) + _ratio_var(p_tok[used], p_sec[used]))
    z = 1.6448536269514722  # the 90% interval
    span_s = sum(o.end - o.start for o in spec_obs if _has_requests(o))
    load = float(s_sec.sum()) / span_s if span_s > 0 else None
    p_used = [o for o in plain_obs if _has_requests(o)]
    span_p = sum(o.end - o.start for o, u in zip(p_used, used, strict=True) if u)
    plain_load = float(p_sec[used].sum()) / span_p if span_p > 0 else None
    return value, value * max(0.0, 1.0 - z * sd), value * (1.0 + z * sd), load, plain_load


@dataclass(frozen=True)
class _Windows:
    """Windows as arrays: k, batch, step seconds, request-steps R, and tokens delivered G
    (for plain windows without the generation counter, R: one token per request-step)."""

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
        ks, inv = cell_keys(self.k, self.b)
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
    p = cost_arrays(costs)
    t0 = _step_times(p, np.zeros_like(spec.b), spec.b)  # costs x n
    basis: Literal["baseline", "inferred"] = "inferred"
    baseline_var = 0.0
    s_plain = 0.0
    if len(plain.k):
        order = np.argsort(plain.b)
        # the plain windows' step time per token they delivered, so both sides count the
        # first tokens alike
        pb, pr = plain.b[order], plain.r[order]
        pt = plain.t[order] * plain.r[order] / plain.g[order]
        logp = np.log(pb)
        reach = math.log(BASELINE_FACTOR) + 1e-12
        lo_i = np.searchsorted(logp, np.log(spec.b) - reach, side="left")
        hi_i = np.searchsorted(logp, np.log(spec.b) + reach, side="right")
        covered = hi_i > lo_i
        t0p = _step_times(p, np.zeros_like(pb), pb)  # costs x m
        s_plain = _rel_noise(pt / t0p[0], pr, pb)
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
    p = cost_arrays(costs)
    tk = _step_times(p, spec.k, spec.b)
    t0 = _step_times(p, np.zeros_like(spec.b), spec.b)
    return np.asarray((spec.r.sum() * e) / ((spec.r[None, :] * tk / t0).sum(axis=1)))


def _rel_noise(rel: FloatArray, weights: FloatArray, batch: FloatArray) -> float:
    """The standard deviation of one window's relative step time (weight-normalized), from
    the scatter of windows around their neighbours (batch sizes within 25%), so that a fit
    that misses the shape between batch sizes does not pass for noise; around their common
    mean when no two windows are neighbours. The fit's noise prior (2% per window, one
    pseudo-window) keeps a window or two from claiming no noise at all."""
    n = len(rel)
    wsum = float(weights.sum())
    wsq = float((weights * weights).sum())
    if n < 2 or not (wsum > 0 and wsq > 0):
        return NOISE_PRIOR
    groups = np.round(np.log(batch) / math.log(1.25)).astype(np.int64)
    _, inv = np.unique(groups, return_inverse=True)
    inv = inv.reshape(-1)
    gw = np.bincount(inv, weights=weights)
    gmean = np.bincount(inv, weights=weights * rel) / np.where(gw > 0, gw, 1.0)
    if n - len(gw) >= 1:
        dev = rel - gmean[inv]
        dof = float(n - len(gw))
    else:
        dev = rel - float((weights * rel).sum() / wsum)
        dof = float(n - 1)
    ss = n * float((weights * dev**2).sum() / wsum)  # in units of an average window
    var = (ss + NOISE_PRIOR_WEIGHT * NOISE_PRIOR**2) / (dof + NOISE_PRIOR_WEIGHT)
    return math.sqrt(var * (wsum / n) / (wsq / wsum))
