"""The speculative-decoding speedup model: pure arithmetic, no I/O, no clock.

One speculation cycle drafts k tokens (cost k*c target steps), verifies them in one target
forward (cost v(k), 1 in the simple model) and emits the accepted prefix plus one token (the
correction, or the bonus token when every draft passed). With i.i.d. acceptance alpha:

    E(alpha, k) = 1 + alpha + ... + alpha^k = (1 - alpha^(k+1)) / (1 - alpha)
    S(alpha, k, c) = E(alpha, k) / (k*c + v(k)),   S(., 0, .) = 1 (plain decoding)

The measured form replaces alpha^i by the survival s_i = P(first i drafts all accepted),
which prices every k up to the deployed one without assuming i.i.d. acceptance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from specwise.errors import ModelInputError

__all__ = [
    "VerifyCost",
    "alpha_from_acceptance_length",
    "alpha_from_acceptance_rate",
    "expected_tokens_from_survival",
    "expected_tokens_per_verify",
    "expected_tokens_two_state",
    "marginal_value",
    "mixture_survival",
    "optimal_k",
    "optimal_k_from_survival",
    "saturating_verify_cost",
    "speedup",
    "speedup_from_survival",
    "survival_curve",
    "survival_two_state",
    "verify_cost_at",
]

#: How the verify cost v(k) (in target decode steps) is given: ``None`` for the seed model
#: (v = 1), a float slope eps (v = 1 + eps*k), a measured table (sequence indexed by k, or a
#: mapping k -> v), or any function of k.
VerifyCost = float | Sequence[float] | Mapping[int, float] | Callable[[int], float] | None

_TIE = 1e-12

#: The largest k (num_speculative_tokens) specwise prices or accepts anywhere: vLLM's V1
#: rejection sampler asserts at most ``MAX_SPEC_LEN`` = 128 draft tokens per request
#: (vllm/v1/sample/rejection_sampler.py; 32 in older releases), so no engine runs more.
MAX_K = 128


def _check_alpha(alpha: float, name: str = "alpha") -> float:
    a = float(alpha)
    if not (0.0 <= a <= 1.0):  # also rejects NaN
        raise ModelInputError(
            f"{name} = {alpha!r} is outside [0, 1]; pass an acceptance probability such as 0.7",
            field=name,
            value=alpha,
        )
    return a


def _check_k(k: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ModelInputError(
            f"{name} = {k!r} is not a whole number >= 0; pass the number of draft tokens, e.g. 4",
            field=name,
            value=k,
        )
    return k


def _check_k_max(k_max: int) -> int:
    """A search bound: a whole number in 0..MAX_K (a larger one would only burn time)."""
    if _check_k(k_max, "k_max") > MAX_K:
        raise ModelInputError(
            f"k_max = {k_max} is above {MAX_K}, the most draft tokens vLLM verifies per step; "
            "pass a smaller bound, e.g. 8",
            field="k_max",
            value=k_max,
        )
    return k_max


def _check_cost(c: float) -> float:
    cost = float(c)
    if not (cost >= 0.0) or math.isinf(cost):
        raise ModelInputError(
            f"draft cost c = {c!r} must be a finite number >= 0 (drafter step time / target "
            "step time, e.g. 0.05 for an EAGLE head, 0 for n-gram)",
            field="c",
            value=c,
        )
    return cost


def expected_tokens_per_verify(alpha: float, k: int) -> float:
    """E = 1 + alpha + ... + alpha^k: tokens emitted per verify, bonus token included.

    Exact at the edges: 1 at alpha = 0 (only the correction) and k + 1 at alpha = 1.
    Summed term by term (Horner), so there is no division and no loss of precision near 1.
    """
    a = _check_alpha(alpha)
    k = _check_k(k)
    total = 1.0
    for _ in range(k):
        total = 1.0 + a * total
    return total


def survival_curve(alpha: float, k: int) -> list[float]:
    """The i.i.d. survival curve [alpha^1, ..., alpha^k]."""
    a = _check_alpha(alpha)
    return [a**i for i in range(1, _check_k(k) + 1)]


def marginal_value(alpha: float, i: int) -> float:
    """Expected extra tokens per verify from draft position i (1-based): alpha^i."""
    a = _check_alpha(alpha)
    if _check_k(i, "i") == 0:
        raise ModelInputError("draft position i = 0 does not exist; positions start at 1")
    return a**i


def verify_cost_at(k: int, verify_cost: VerifyCost = None) -> float:
    """v(k), the cost of verifying k drafts in target decode steps (v(0) = 1)."""
    k = _check_k(k)
    if verify_cost is None:
        value = 1.0
    elif isinstance(verify_cost, (int, float)) and not isinstance(verify_cost, bool):
        eps = float(verify_cost)
        if not (eps >= 0.0) or math.isinf(eps):
            raise ModelInputError(
                f"verify-cost slope eps = {verify_cost!r} must be a finite number >= 0 "
                "(v(k) = 1 + eps*k; 0 means verifying is free)",
                field="verify_cost",
                value=verify_cost,
            )
        value = 1.0 + eps * k
    elif isinstance(verify_cost, Mapping):
        if k == 0 and 0 not in verify_cost:
            return 1.0
        if k not in verify_cost:
            raise ModelInputError(
                f"the verify-cost table has no entry for k = {k} (it has "
                f"{sorted(verify_cost)}); measure v({k}) or lower k_max",
                field="verify_cost",
                value=k,
            )
        value = float(verify_cost[k])
    elif isinstance(verify_cost, Sequence):
        if k >= len(verify_cost):
            raise ModelInputError(
                f"the verify-cost table has {len(verify_cost)} entries "
                f"(k = 0..{len(verify_cost) - 1}) but k = {k} was asked; measure v({k}) or "
                "lower k_max",
                field="verify_cost",
                value=k,
            )
        value = float(verify_cost[k])
    elif callable(verify_cost):
        value = float(verify_cost(k))
    else:
        raise ModelInputError(
            f"verify_cost = {verify_cost!r} is not a slope, a table or a function of k",
            field="verify_cost",
            value=verify_cost,
        )
    if not (value > 0.0) or math.isinf(value):
        raise ModelInputError(
            f"verify cost v({k}) = {value!r} must be a finite number > 0 target steps",
            field="verify_cost",
            value=value,
        )
    return value


def speedup(alpha: float, k: int, c: float, *, verify_cost: VerifyCost = None) -> float:
    """S = E(alpha, k) / (k*c + v(k)) over plain decoding; exactly 1 at k = 0."""
    e = expected_tokens_per_verify(alpha, k)
    cost = _check_cost(c)
    if k == 0:
        return 1.0
    return e / (k * cost + verify_cost_at(k, verify_cost))


def optimal_k(alpha: float, c: float, k_max: int = 16, *, verify_cost: VerifyCost = None) -> int:
    """The k in 0..k_max with the highest speedup; 0 means turn speculation off.

    Ties go to the smaller k (a longer draft that buys nothing only adds risk).
    """
    _check_alpha(alpha)
    _check_cost(c)
    best_k, best_s = 0, 1.0
    for k in range(1, _check_k_max(k_max) + 1):
        s = speedup(alpha, k, c, verify_cost=verify_cost)
        if s > best_s * (1.0 + _TIE):
            best_k, best_s = k, s
    return best_k


def _invert_increasing(f: Callable[[float], float], target: float) -> float:
    """Solve f(a) = target on [0, 1] for an increasing f by bisection (to machine precision)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def alpha_from_acceptance_length(mean_acceptance_length: float, k: int) -> float:
    """The i.i.d. alpha whose E(alpha, k) equals vLLM's mean acceptance length (1 + A/D).

    Exact inverse of :func:`expected_tokens_per_verify` for that k.
    """
    k = _check_k(k)
    mal = float(mean_acceptance_length)
    if k == 0 or not (1.0 <= mal <= k + 1.0):
        raise ModelInputError(
            f"mean acceptance length {mean_acceptance_length!r} is outside [1, k + 1] = "
            f"[1, {k + 1}] for k = {k}; check that k is the deployed number of draft tokens",
            field="mean_acceptance_length",
            value=mean_acceptance_length,
        )
    if mal == 1.0:
        return 0.0
    if mal == k + 1.0:
        return 1.0
    return _invert_increasing(lambda a: expected_tokens_per_verify(a, k), mal)


def alpha_from_acceptance_rate(draft_acceptance_rate: float, k: int) -> float:
    """The i.i.d. alpha whose accepted / draft tokens, (E - 1)/k, equals vLLM's rate (A/T).

    Assumes full-length drafts (T = k*D). Exact inverse of the model for that k.
    """
    k = _check_k(k)
    rate = float(draft_acceptance_rate)
    if k == 0 or not (0.0 <= rate <= 1.0):
        raise ModelInputError(
            f"draft acceptance rate {draft_acceptance_rate!r} must lie in [0, 1] and k = {k} "
            "must be >= 1; pass accepted / draft tokens and the deployed k",
            field="draft_acceptance_rate",
            value=draft_acceptance_rate,
        )
    if rate in (0.0, 1.0):
        return rate
    return _invert_increasing(lambda a: (expected_tokens_per_verify(a, k) - 1.0) / k, rate)


def _check_survival(survival: Sequence[float]) -> list[float]:
    values = [float(s) for s in survival]
    prev = 1.0
    for i, s in enumerate(values, start=1):
        if not (0.0 <= s <= 1.0):
            raise ModelInputError(
                f"survival s_{i} = {s!r} is outside [0, 1]; survival is accepted_per_position / "
                "drafts",
                field="survival",
                value=s,
            )
        if s > prev + 1e-9:
            raise ModelInputError(
                f"the survival curve rises at position {i} ({prev!r} -> {s!r}); P(first i drafts "
                "accepted) cannot grow with i: check the per-position counters",
                field="survival",
                value=s,
            )
        prev = s
    return values


def expected_tokens_from_survival(survival: Sequence[float], k: int) -> float:
    """Non-parametric E(k) = 1 + s_1 + ... + s_k from a measured survival curve.

    ``survival[i-1]`` is s_i = P(the first i drafts were all accepted); k may be at most the
    curve's length (beyond the measured positions, extrapolate with a model and say so).
    """
    values = _check_survival(survival)
    k = _check_k(k)
    if k > len(values):
        raise ModelInputError(
            f"k = {k} is beyond the measured survival curve ({len(values)} positions); price "
            "longer drafts with a fitted alpha and say it is an extrapolation",
            field="k",
            value=k,
        )
    return 1.0 + math.fsum(values[:k])


def speedup_from_survival(
    survival: Sequence[float], k: int, c: float, *, verify_cost: VerifyCost = None
) -> float:
    """S(k) priced from a measured survival curve instead of an i.i.d. alpha."""
    e = expected_tokens_from_survival(survival, k)
    cost = _check_cost(c)
    if k == 0:
        return 1.0
    return e / (k * cost + verify_cost_at(k, verify_cost))


def optimal_k_from_survival(
    survival: Sequence[float],
    c: float,
    k_max: int | None = None,
    *,
    verify_cost: VerifyCost = None,
) -> int:
    """argmax over 0..k_max (default: the curve's length) of :func:`speedup_from_survival`."""
    values = _check_survival(survival)
    top = len(values) if k_max is None else min(_check_k_max(k_max), len(values))
    best_k, best_s = 0, 1.0
    for k in range(1, top + 1):
        s = speedup_from_survival(values, k, c, verify_cost=verify_cost)
        if s > best_s * (1.0 + _TIE):
            best_k, best_s = k, s
    return best_k


def mixture_survival(weights: Sequence[float], alphas: Sequence[float], k: int) -> list[float]:
    """Survival of a workload mix: s_i = sum_j w_j * alpha_j^i (weights sum to 1).

    Each draft comes from one component, chosen with its weight; acceptance is i.i.d. within
    it. A mix is what a class that pools prose and code looks like to vLLM's counters.
    """
    if len(weights) != len(alphas) or not weights:
        raise ModelInputError("a mixture needs one weight per alpha, and at least one of each")
    total = math.fsum(weights)
    if any(w < 0 for w in weights) or abs(total - 1.0) > 1e-9:
        raise ModelInputError(f"mixture weights {list(weights)!r} must be >= 0 and sum to 1")
    curves = [survival_curve(a, k) for a in alphas]
    return [math.fsum(w * curve[i] for w, curve in zip(weights, curves)) for i in range(k)]


def survival_two_state(
    k: int,
    *,
    alpha_high: float,
    alpha_low: float,
    p_high_to_low: float,
    p_low_to_high: float,
) -> list[float]:
    """Survival under correlated acceptance: a two-state Markov chain over draft positions.

    Assumes each position is "in phrase" (accepted with alpha_high) or "at a boundary"
    (accepted with alpha_low); the state moves between consecutive positions with the given
    switch probabilities, and a draft's first position starts from the chain's stationary
    distribution. With p_high_to_low + p_low_to_high = 1 the states are independent and the
    curve is i.i.d. with alpha = the stationary mean.
    """
    k = _check_k(k)
    ah = _check_alpha(alpha_high, "alpha_high")
    al = _check_alpha(alpha_low, "alpha_low")
    hl = _check_alpha(p_high_to_low, "p_high_to_low")
    lh = _check_alpha(p_low_to_high, "p_low_to_high")
    if hl + lh == 0.0:
        raise ModelInputError(
            "p_high_to_low and p_low_to_high cannot both be 0 (no stationary mix)"
        )
    high, low = lh / (hl + lh), hl / (hl + lh)
    curve: list[float] = []
    for _ in range(k):
        high, low = high * ah, low * al  # accept this position
        curve.append(high + low)
        high, low = high * (1.0 - hl) + low * lh, high * hl + low * (1.0 - lh)
    return curve


def expected_tokens_two_state(
    k: int,
    *,
    alpha_high: float,
    alpha_low: float,
    p_high_to_low: float,
    p_low_to_high: float,
) -> float:
    """E(k) under the two-state correlated acceptance of :func:`survival_two_state`."""
    curve = survival_two_state(
        k,
        alpha_high=alpha_high,
        alpha_low=alpha_low,
        p_high_to_low=p_high_to_low,
        p_low_to_high=p_low_to_high,
    )
    return 1.0 + math.fsum(curve)


def saturating_verify_cost(k: int, batch_size: int, *, knee_tokens: float) -> float:
    """v(k) at a given batch size when the target step saturates compute (a roofline).

    Assumes a target step costs the same for any number of tokens up to ``knee_tokens`` (it
    is memory-bound: weights are read once) and grows linearly past it (compute-bound). A
    verify handles batch_size * (k + 1) tokens against batch_size for a plain decode step, so
    v = max(knee, B*(k+1)) / max(knee, B): free at light load, k + 1 times the cost once the
    plain step itself is compute-bound. This is why the best k falls as the batch grows.
    """
    k = _check_k(k)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ModelInputError(f"batch_size = {batch_size!r} must be a whole number >= 1")
    knee = float(knee_tokens)
    if not (knee > 0.0) or math.isinf(knee):
        raise ModelInputError(
            f"knee_tokens = {knee_tokens!r} must be a finite number > 0 (tokens per step at "
            "which the target becomes compute-bound, e.g. 256)"
        )
    return max(knee, batch_size * (k + 1.0)) / max(knee, float(batch_size))
