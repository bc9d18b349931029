"""Does one i.i.d. alpha explain a measured survival curve? A goodness-of-fit check.

The observed data are the stopping points of D drafts: O_j drafts whose accepted prefix
reached position j but not j + 1 (j = 0..k, j = k meaning all k accepted). Under i.i.d.
acceptance the expected survival counts are e_i = n_i * alpha^i, with n_i the drafts that
had at least i tokens (all D for full-length drafts; with a shortfall, the missing tokens
are taken from the tail positions). A likelihood-ratio (G) test on the k + 1 cells with one
fitted parameter has k - 1 degrees of freedom. A workload mix (alphas 0.9 and 0.5 pooled)
or correlated acceptance bends the curve and fails it.

The test fails only when it is both significant (p < level) and material: some survival
point misses by more than ``min_effect``, so huge windows with trivial bends still price
k from alpha.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import special

__all__ = ["FitCheck", "check_iid_fit", "check_short_fit", "tail_lengths"]


@dataclass(frozen=True)
class FitCheck:
    """The verdict: ``ok`` is False only for a significant, material misfit."""

    ok: bool
    tested: bool
    statistic: float | None = None
    p_value: float | None = None
    dof: int = 0
    max_deviation: float = 0.0
    note: str = ""

    @classmethod
    def untested(cls, note: str = "not tested") -> FitCheck:
        return cls(ok=True, tested=False, note=note)


def tail_lengths(drafts: float, draft_tokens: float, k: int) -> list[float]:
    """n_i for i = 1..k (plus n_{k+1} = 0): drafts with at least i tokens.

    The k*D - T missing draft tokens are taken from the tail: first from position k of as
    many drafts as needed, then position k - 1, and so on. Returned with index 0 = n_1.
    """
    missing = max(0.0, k * drafts - draft_tokens)
    lengths = [drafts] * k
    for i in range(k - 1, -1, -1):
        removed = min(drafts, missing)
        lengths[i] = drafts - removed
        missing -= removed
        if missing <= 0:
            break
    return [*lengths, 0.0]


def check_iid_fit(
    accepted_per_position: Sequence[float],
    drafts: float,
    draft_tokens: float,
    alpha: float,
    *,
    level: float = 0.01,
    min_effect: float = 0.01,
) -> FitCheck:
    """G-test of the survival curve against i.i.d. ``alpha`` (see the module docstring)."""
    k = len(accepted_per_position)
    if k < 2:
        return FitCheck.untested("k = 1: one position has no shape to test")
    if drafts <= 0:
        return FitCheck.untested("no drafts")
    n = tail_lengths(drafts, draft_tokens, k)
    expected_reach = [drafts] + [n[i] * alpha ** (i + 1) for i in range(k)] + [0.0]
    observed_reach = [drafts, *accepted_per_position, 0.0]
    g = 0.0
    infinite = False
    for j in range(k + 1):
        o = max(0.0, observed_reach[j] - observed_reach[j + 1])
        e = expected_reach[j] - expected_reach[j + 1]
        if o <= 0:
            continue
        if e <= 1e-300:
            infinite = True
            break
        g += o * math.log(o / e)
    g = math.inf if infinite else max(0.0, 2.0 * g)
    dof = k - 1
    p = 0.0 if infinite else float(special.chdtrc(dof, g))
    dev = max(abs(observed_reach[i] - expected_reach[i]) / drafts for i in range(1, k + 1))
    ok = not (p < level and dev > min_effect)
    return FitCheck(
        ok=ok,
        tested=True,
        statistic=g,
        p_value=p,
        dof=dof,
        max_deviation=dev,
        note="" if ok else "one i.i.d. alpha does not fit the survival curve",
    )


def check_short_fit(
    accepted_per_position: Sequence[float],
    drafts: float,
    alpha: float,
    *,
    level: float = 0.01,
    min_effect: float = 0.01,
) -> FitCheck:
    """With short drafts the counters identify alpha and the length counts N_j exactly, so
    the only checkable consequence of one i.i.d. alpha (with lengths independent of
    acceptance) is an inequality: a draft that reached position i goes on to pass position
    i with probability alpha * P(length > i | length >= i) <= alpha. Fails when some
    conditional acceptance P_i / P_(i-1) (P_(-1) = D) exceeds ``alpha`` by more than
    ``min_effect`` and significantly (one-sided binomial z, Bonferroni over positions)."""
    k = len(accepted_per_position)
    if drafts <= 0 or not 0.0 < alpha < 1.0:
        return FitCheck.untested("short drafts: alpha at 0 or 1 leaves nothing to test")
    reached = [drafts, *accepted_per_position]
    worst_z, worst_dev = 0.0, 0.0
    for i in range(k):
        n, x = reached[i], reached[i + 1]
        if n <= 0:
            continue
        dev = x / n - alpha
        z = (x - alpha * n) / math.sqrt(n * alpha * (1.0 - alpha))
        if z > worst_z:
            worst_z, worst_dev = z, dev
    p = min(1.0, k * float(special.ndtr(-worst_z))) if worst_z > 0 else 1.0
    ok = not (p < level and worst_dev > min_effect)
    return FitCheck(
        ok=ok,
        tested=True,
        statistic=worst_z,
        p_value=p,
        dof=0,
        max_deviation=max(worst_dev, 0.0),
        note="" if ok else "a conditional acceptance exceeds alpha: not one i.i.d. alpha",
    )
