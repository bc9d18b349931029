"""Before/after reports: two windows per workload class, the change and a verdict.

The computation only (rendering lives in :mod:`specwise.reporting.render`). Per class and
window: alpha with its interval (positions MLE), mean acceptance length, survival and
conditional acceptance, draft-length shortfall, the recommended k (the smallest within the
policy's plateau of the best, :func:`specwise.model.recommended_k_from_speedups`; the exact
maximiser beside it where they differ) and the predicted speedup at the deployed and the
recommended k, and, where vLLM's inter-token latency counters are present, the
measured latency and the drafter cost it implies. Between windows: the alpha change with its
uncertainty and one verdict line per class.

The windows themselves (time ranges, their totals from Prometheus, captures or logs, and
alpha over time) come from :mod:`specwise.reporting.windows`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
from scipy import special

from specwise.collectors.classes import CLASS_LABEL, ClassConfig
from specwise.collectors.deltas import (
    sum_by_class,
)
from specwise.collectors.snapshot import CounterDelta
from specwise.errors import ReportError
from specwise.estimation.estimator import (
    DEFAULT_ESTIMATOR_CONFIG,
    Estimate,
    EstimatorConfig,
    estimate_delta,
)
from specwise.model import VerifyCost, verify_cost_at
from specwise.policies import PolicyConfig, Recommendation, recommend
from specwise.reporting.cost import CostSide, cost_side, sum_by_class_per_window
from specwise.reporting.windows import (
    AlphaSeries,
)

__all__ = [
    "AlphaChange",
    "ClassReport",
    "Latency",
    "LatencyChange",
    "Presence",
    "Report",
    "WindowClass",
    "WindowInfo",
    "alpha_change",
    "analyze_window",
    "build_report",
    "compare_windows",
    "latency_change",
    "latency_text",
    "verdict_line",
]

Presence = Literal["both", "before-only", "after-only"]
#: Progress callback: (chunks done, chunks in all, a one-line description).
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Latency:
    """vLLM's inter-token latency over a window: one event per output step of a request."""

    itl_seconds: float  # mean seconds per output event (ITL sum / count)
    events: float
    seconds_per_token: float | None  # ITL sum / generation tokens, when counted
    generation_tokens: float | None


@dataclass(frozen=True)
class WindowClass:
    """One class in one window: its counts, estimate and recommendation."""

    name: str
    delta: CounterDelta
    estimate: Estimate
    recommendation: Recommendation
    latency: Latency | None = None
    #: the cost side: measured speedup, fitted step costs, batch sizes (None: not computed)
    cost_side: CostSide | None = None

    @property
    def deployed_k(self) -> int | None:
        return self.recommendation.current_k

    @property
    def recommended_k(self) -> int | None:
        """The k specwise recommends (the controller's and ``recommend``'s k)."""
        return self.recommendation.recommended_k if self.estimate.ok else None

    @property
    def optimal_k(self) -> int | None:
        """The exact maximiser of the priced speedups (shown beside the recommended k)."""
        return self.recommendation.optimal_k if self.estimate.ok else None

    @property
    def speedup_deployed(self) -> float | None:
        return self.recommendation.predicted_speedup_current

    @property
    def speedup_recommended(self) -> float | None:
        return self.recommendation.predicted_speedup_recommended if self.estimate.ok else None

    @property
    def speedup_optimal(self) -> float | None:
        """The exact maximiser's predicted speedup."""
        k, s = self.optimal_k, self.recommendation.speedups
        return s[k] if k is not None and k < len(s) else None

    @property
    def cost(self) -> float:
        return self.recommendation.cost


def _class_name(labels: Mapping[str, str]) -> str:
    return labels.get(CLASS_LABEL, "") or "/".join(v for _, v in sorted(labels.items()))


def _latency(d: CounterDelta) -> Latency | None:
    s, n = d.itl_seconds_sum, d.itl_seconds_count
    if s is None or n is None or n <= 0 or not math.isfinite(s):
        return None
    g = d.generation_tokens
    return Latency(
        itl_seconds=s / n,
        events=n,
        seconds_per_token=s / g if g is not None and g > 0 else None,
        generation_tokens=g,
    )


def analyze_window(
    deltas: Sequence[CounterDelta],
    *,
    classes: ClassConfig,
    policy_for: Callable[[str], PolicyConfig],
    estimator: EstimatorConfig = DEFAULT_ESTIMATOR_CONFIG,
    now: float,
    k: int | None = None,
    load_deltas: Sequence[CounterDelta] = (),
) -> dict[str, WindowClass]:
    """Sum series deltas per class, estimate each class and price its configuration (one
    window). The cost side of a class (fitted T(k, B), measured speedup, batch sizes) comes
    from ``load_deltas`` (sub-windows of the window, which show the load move) when given,
    else from the window's own class deltas; without latency families the constant-cost
    model prices k and says so."""
    summed = sum_by_class(deltas, classes)
    by_class: dict[str, list[CounterDelta]] = {}
    for d in sum_by_class_per_window(load_deltas, classes) if load_deltas else summed:
        by_class.setdefault(_class_name(d.labels), []).append(d)
    out: dict[str, WindowClass] = {}
    for d in summed:
        if not d.spec_families:
            continue  # load only (a replica without speculation): feeds the cost side
        name = _class_name(d.labels)
        e = estimate_delta(name, d, now=now, config=estimator, k=k)
        policy = policy_for(name)
        slope = policy.verify_cost
        side = cost_side(
            by_class.get(name, [d]),
            prior_cost=policy.cost,
            verify_slope=float(slope) if isinstance(slope, (int, float)) else 0.0,
            k=k,
            survival=[p.value for p in e.survival] or None,
        )
        r = recommend(e, config=policy, load=side.evidence)
        out[name] = WindowClass(name, d, e, r, _latency(d), side)
    return out


# -- the change ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AlphaChange:
    """after - before with a ``level`` interval (normal approximation of the two posteriors,
    each standard deviation read off its credible interval, so the short-draft bracket widens
    it too). ``real`` when the interval excludes 0."""

    delta: float
    half_width: float
    low: float
    high: float
    p_increase: float
    level: float

    @property
    def real(self) -> bool:
        return self.low > 0.0 or self.high < 0.0


def _z(level: float) -> float:
    return float(math.sqrt(2.0) * special.erfinv(level))


def alpha_change(before: Estimate, after: Estimate, *, level: float = 0.95) -> AlphaChange | None:
    """The alpha change between two estimates with its uncertainty; None if either is missing."""
    if not (before.ok and after.ok):
        return None
    if before.alpha is None or after.alpha is None:
        return None
    sds = []
    for e, point in ((before, before.alpha), (after, after.alpha)):
        lo = e.alpha_low if e.alpha_low is not None else point
        hi = e.alpha_high if e.alpha_high is not None else point
        sds.append((hi - lo) / (2.0 * _z(level)))
    sd = math.sqrt(sds[0] ** 2 + sds[1] ** 2)
    delta = after.alpha - before.alpha
    half = _z(level) * sd
    if sd > 0:
        p_up = float(0.5 * (1.0 + special.erf(delta / (sd * math.sqrt(2.0)))))
    else:
        p_up = 1.0 if delta > 0 else 0.0
    return AlphaChange(delta, half, delta - half, delta + half, p_up, level)


@dataclass(frozen=True)
class LatencyChange:
    """Measured inter-token latency before and after, and the drafter cost it implies.

    ``implied_cost_after``: with the target step time unchanged between windows and the
    before window's cost c_b right, ITL_a / ITL_b = (k_a c_a + v(k_a)) / (k_b c_b + v(k_b))
    gives c_a. Load (batch size) changes ITL too: compare windows of similar traffic.
    """

    itl_before: float
    itl_after: float
    itl_ratio: float
    seconds_per_token_before: float | None
    seconds_per_token_after: float | None
    measured_speedup: float | None  # time per token before / after
    implied_cost_after: float | None
    note: str = ""


def latency_change(
    before: WindowClass, after: WindowClass, *, verify_cost: VerifyCost = None
) -> LatencyChange | None:
    """The measured latency change of one class, or None without ITL counters in both."""
    lb, la = before.latency, after.latency
    if lb is None or la is None or lb.itl_seconds <= 0:
        return None
    ratio = la.itl_seconds / lb.itl_seconds
    speed = None
    if lb.seconds_per_token and la.seconds_per_token:
        speed = lb.seconds_per_token / la.seconds_per_token
    kb, ka = before.deployed_k, after.deployed_k
    implied: float | None = None
    note = ""
    if kb is not None and ka is not None and ka > 0:
        cycle_b = kb * before.cost + verify_cost_at(kb, verify_cost)
        implied = (ratio * cycle_b - verify_cost_at(ka, verify_cost)) / ka
        if implied < 0:
            note = (
                f"latency fell more than a free drafter explains (implied c = {implied:.3f}): "
                "the target step or the load changed too"
            )
            implied = max(0.0, implied)
    return LatencyChange(
        itl_before=lb.itl_seconds,
        itl_after=la.itl_seconds,
        itl_ratio=ratio,
        seconds_per_token_before=lb.seconds_per_token,
        seconds_per_token_after=la.seconds_per_token,
        measured_speedup=speed,
        implied_cost_after=implied,
        note=note,
    )


def _ratio_text(before: float, after: float) -> str:
    """``2.06x slower`` / ``1.57x faster`` / ``unchanged`` for a time per unit (lower = faster)."""
    if after <= 0 or before <= 0:
        return "not comparable"
    if abs(after / before - 1.0) < 0.0005:
        return "unchanged"
    return f"{after / before:.2f}x slower" if after > before else f"{before / after:.2f}x faster"


def latency_text(lat: LatencyChange) -> str:
    """One line with both values of each latency and which way it moved:
    ``inter-token latency 8.50 -> 17.54 ms per event (2.06x slower); time per output token
    8.50 -> 17.54 ms/token (2.06x slower)``."""
    txt = (
        f"inter-token latency {lat.itl_before * 1000:.2f} -> {lat.itl_after * 1000:.2f} ms "
        f"per event ({_ratio_text(lat.itl_before, lat.itl_after)})"
    )
    tb, ta = lat.seconds_per_token_before, lat.seconds_per_token_after
    if tb and ta:
        txt += (
            f"; time per output token {tb * 1000:.2f} -> {ta * 1000:.2f} ms/token "
            f"({_ratio_text(tb, ta)})"
        )
    if lat.implied_cost_after is not None:
        txt += f"; implied drafter cost after = {lat.implied_cost_after:.3f}"
    if lat.note:
        txt += f" ({lat.note})"
    return txt


@dataclass(frozen=True)
class ClassReport:
    """One class across both windows."""

    name: str
    presence: Presence
    before: WindowClass | None
    after: WindowClass | None
    change: AlphaChange | None
    latency: LatencyChange | None
    verdict: str


def _x(v: float | None) -> str:
    return "?" if v is None else f"{v:.2g}x" if v < 10 else f"{v:.0f}x"


def _speed(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v:.1f}x" if abs(v - round(v, 1)) < 0.05 or v >= 2 else f"{v:.2f}x"


def _alpha_text(w: WindowClass | None) -> str:
    if w is None or w.estimate.alpha is None:
        return "?"
    return f"{w.estimate.alpha:.2f}"


def _k_text(k: int | None) -> str:
    return "?" if k is None else str(k)


def _pair(name: str, kb: int | None, ka: int | None, sb: float | None, sa: float | None) -> str:
    """``deployed k 3 -> 3, predicted 2.6x -> 2.6x``: one kind of k in both windows."""
    if kb == ka and kb is not None:
        ks = f"{name} k {kb} in both"
    else:
        ks = f"{name} k {_k_text(kb)} -> {_k_text(ka)}"
    return f"{ks}, predicted {_speed(sb)} -> {_speed(sa)}"


def _max_note(w: WindowClass, where: str = "") -> str:
    """`` (exact max k = 6 after, +0.4%)`` where the exact maximiser differs."""
    top, rec = w.speedup_optimal, w.speedup_recommended
    if w.optimal_k is None or w.optimal_k == w.recommended_k or top is None or not rec:
        return ""
    gain = top / rec - 1.0
    return f" (exact max k = {w.optimal_k}{where}, {f'+{gain:.2%}' if gain >= 5e-5 else '+<0.01%'})"


def _measured(w: WindowClass) -> float | None:
    m = w.cost_side.measured if w.cost_side is not None else None
    return None if m is None else m.value


def verdict_line(c: ClassReport) -> str:
    """``code: alpha 0.61 -> 0.74 (+0.13 +/- 0.01); deployed k 3 in both, predicted 1.9x ->
    2.3x; recommended k 4 -> 5, predicted 2.0x -> 2.6x; switch to k = 5``: like compared
    with like, the deployed k's speedup before and after, and the recommended k's (the
    exact maximiser named where it differs)."""
    b, a = c.before, c.after
    if a is None and b is not None:
        where = "before"
        w = b
    elif b is None and a is not None:
        where = "after"
        w = a
    else:
        w = None
        where = ""
    if w is not None:
        if not w.estimate.ok:
            return f"{c.name}: only in the {where} window, and without enough data there"
        deployed = (
            ""
            if w.deployed_k is None
            else f"deployed k {w.deployed_k}, predicted {_speed(w.speedup_deployed)}; "
        )
        return (
            f"{c.name}: only in the {where} window: alpha {_alpha_text(w)}; {deployed}"
            f"recommended k {w.recommended_k}, predicted {_speed(w.speedup_recommended)}"
            f"{_max_note(w)}; nothing to compare"
        )
    if b is None or a is None:
        return f"{c.name}: in neither window"
    if not b.estimate.ok or not a.estimate.ok:
        missing = [n for n, x in (("before", b), ("after", a)) if not x.estimate.ok]
        return f"{c.name}: not enough data in the {' and '.join(missing)} window to compare"
    ch = c.change
    assert ch is not None
    sig = "" if ch.real else ", within noise"
    parts = [
        f"{c.name}: alpha {_alpha_text(b)} -> {_alpha_text(a)} "
        f"({ch.delta:+.2f} +/- {ch.half_width:.2f}{sig})"
    ]
    if b.deployed_k is not None or a.deployed_k is not None:
        parts.append(
            _pair("deployed", b.deployed_k, a.deployed_k, b.speedup_deployed, a.speedup_deployed)
        )
    rec = _pair(
        "recommended", b.recommended_k, a.recommended_k, b.speedup_recommended,
        a.speedup_recommended,
    )  # fmt: skip
    parts.append(rec + (_max_note(a, " after") or _max_note(b, " before")))
    mb, ma = _measured(b), _measured(a)
    if mb is not None or ma is not None:
        parts.append(f"measured {_speed(mb)} -> {_speed(ma)} at the deployed configuration")
    cfg = a.recommendation.config
    if cfg is not None and cfg.schedule and a.recommended_k:
        action = f"run {cfg.describe()}"
        return "; ".join([*parts, action])
    if a.recommended_k == 0:
        action = "turn speculation off (k = 0)" if a.deployed_k else "keep speculation off"
    elif a.deployed_k == a.recommended_k:
        action = f"keep k = {a.recommended_k}"
    else:
        action = f"switch to k = {a.recommended_k}"
    return "; ".join([*parts, action])


def compare_windows(
    before: Mapping[str, WindowClass],
    after: Mapping[str, WindowClass],
    *,
    level: float = 0.95,
    verify_cost: VerifyCost = None,
) -> list[ClassReport]:
    """One ClassReport per class seen in either window, sorted by name."""
    out = []
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name), after.get(name)
        presence: Presence = "both" if b and a else "before-only" if b else "after-only"
        change = alpha_change(b.estimate, a.estimate, level=level) if b and a else None
        lat = latency_change(b, a, verify_cost=verify_cost) if b and a else None
        draft = ClassReport(name, presence, b, a, change, lat, "")
        out.append(ClassReport(name, presence, b, a, change, lat, verdict_line(draft)))
    return out


# -- sources ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowInfo:
    """What one window is: its label, its time range (None for captures) and its source."""

    label: str
    source: str
    start: float | None = None
    end: float | None = None
    cost: str = ""
    series: Mapping[str, AlphaSeries] = field(default_factory=dict)
    requests: int = 0
    notes: tuple[str, ...] = ()
    #: The per-step frame the series came from (written to data/series-<label>.csv).
    frame: pd.DataFrame | None = field(default=None, compare=False, repr=False)
    #: Sub-windows of a Prometheus window for the cost side (fits over the loads they saw).
    load_deltas: tuple[CounterDelta, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Report:
    """The whole report: both windows, every class, the settings they were priced with."""

    before: WindowInfo
    after: WindowInfo
    classes: tuple[ClassReport, ...]
    k_max: int
    verify_slope: float | None
    level: float
    created: float
    notes: tuple[str, ...] = ()

    @property
    def verdicts(self) -> list[str]:
        return [c.verdict for c in self.classes]


def _overlapping(before: Sequence[CounterDelta], after: Sequence[CounterDelta]) -> bool:
    """True when a series counts from the same server start in both windows (two single
    captures of one server): the later window then includes the earlier one."""

    def origins(deltas: Sequence[CounterDelta]) -> set[tuple[object, ...]]:
        return {
            (*sorted((k, v) for k, v in d.labels.items() if k != "instance"), d.start)
            for d in deltas
            if "counts since the server started" in d.notes
        }

    return bool(origins(before) & origins(after))


def build_report(
    before_deltas: Sequence[CounterDelta],
    after_deltas: Sequence[CounterDelta],
    *,
    before: WindowInfo,
    after: WindowInfo,
    classes: ClassConfig,
    before_policy: Callable[[str], PolicyConfig],
    after_policy: Callable[[str], PolicyConfig],
    estimator: EstimatorConfig = DEFAULT_ESTIMATOR_CONFIG,
    created: float,
    k: int | None = None,
    k_max: int = 8,
    verify_slope: float | None = None,
) -> Report:
    """Analyse both windows and compare them (``created`` stamps the report)."""
    if not any(d.spec_families for d in (*before_deltas, *after_deltas)):
        raise ReportError(
            "neither window has vLLM spec-decode counters; check the windows, the class "
            "labels and that vLLM ran with --speculative-config"
        )
    b = analyze_window(
        before_deltas,
        classes=classes,
        policy_for=before_policy,
        estimator=estimator,
        now=before.end if before.end is not None else created,
        k=k,
        load_deltas=before.load_deltas,
    )
    a = analyze_window(
        after_deltas,
        classes=classes,
        policy_for=after_policy,
        estimator=estimator,
        now=after.end if after.end is not None else created,
        k=k,
        load_deltas=after.load_deltas,
    )
    vc: VerifyCost = None if verify_slope is None else (lambda kk: 1.0 + verify_slope * kk)
    rows = compare_windows(b, a, level=estimator.level, verify_cost=vc)
    notes: list[str] = []
    if verify_slope is None:
        notes.append("verify cost taken as 1 target step: predictions hold for light load")
    if _overlapping(before_deltas, after_deltas):
        notes.append(
            "both windows count from the same server start, so the after window contains the "
            "before window and the change is diluted: pass two captures per window (its start "
            "and its end) to compare disjoint windows"
        )
    return Report(
        before=before,
        after=after,
        classes=tuple(rows),
        k_max=k_max,
        verify_slope=verify_slope,
        level=estimator.level,
        created=created,
        notes=tuple(notes),
    )
