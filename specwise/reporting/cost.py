"""The cost side of one class for the one-shot surfaces (``recommend``, ``report``).

From a class's counter deltas (speculative windows and load-only windows of plain replicas
or k = 0 periods) this builds what the controller builds from its rolling load window: the
fitted step time T(k, B) (:func:`specwise.estimation.step_fit.fit_step_cost`), the measured
speedup at the deployed configuration with its interval and the model's prediction beside
it, the batch-size distribution, and the :class:`~specwise.policies.LoadEvidence` the policy
prices configurations with. Without latency families it says that the constant-cost model
is used (docs/design.md#the-cost-side) and carries no evidence: the policy then answers
exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from specwise.collectors.classes import ClassConfig
from specwise.collectors.deltas import sum_by_class
from specwise.collectors.snapshot import CounterDelta
from specwise.controller.load import load_status
from specwise.estimation.load_window import LoadWindow
from specwise.estimation.step_fit import (
    MeasuredSpeedup,
    StepCostFit,
    StepObservation,
    fit_step_cost,
    measured_speedup,
)
from specwise.policies.load_policy import ConfigRecommendation, LoadEvidence
from specwise.policies.speedup_policy import CONSTANT_COST_NOTE
from specwise.step_cost import BatchDistribution, StepCost

__all__ = [
    "CONSTANT_COST_NOTE",
    "CostSide",
    "cost_lines",
    "cost_side",
    "costs_dict",
    "sum_by_class_per_window",
]


@dataclass(frozen=True)
class CostSide:
    """One class's cost side. ``load_aware`` False: no step observation could be made (the
    reason in ``note``), the constant-cost model prices k."""

    load_aware: bool
    note: str
    fit: StepCostFit | None = None
    measured: MeasuredSpeedup | None = None
    batches: BatchDistribution | None = None
    prior_cost: float = 0.0
    observations: tuple[StepObservation, ...] = field(default=(), repr=False)
    notes: tuple[str, ...] = field(default=())
    survival: tuple[float, ...] | None = field(default=None, repr=False)

    def band_measured(
        self, bands: Sequence[tuple[int, int]]
    ) -> tuple[tuple[tuple[int, int], MeasuredSpeedup], ...]:
        """The measured speedup of the deployed configuration inside each batch band
        (inclusive); bands without speculative windows are left out."""
        if self.fit is None or not self.observations:
            return ()
        out = []
        for band in bands:
            m = measured_speedup(self.observations, self.fit, survival=self.survival, band=band)
            if m is not None:
                out.append((band, m))
        return tuple(out)

    @property
    def evidence(self) -> LoadEvidence | None:
        """What the policy prices configurations with (None: the constant-cost path)."""
        if not self.load_aware or self.fit is None or self.batches is None:
            return None
        return LoadEvidence(fit=self.fit, batches=self.batches, measured=self.measured)

    @property
    def disagreements(self) -> tuple[str, ...]:
        """Where the fitted costs and the preset disagree beyond noise, one sentence each."""
        return self.fit.disagreements() if self.fit is not None else ()

    def to_dict(self, load: ConfigRecommendation | None = None) -> dict[str, Any]:
        """The JSON block: the controller's ``/recommendations`` load block
        (:func:`specwise.controller.load.load_status`), plus the preset it was fitted
        against, the measured speedup per band of the recommended configuration, and notes.
        """
        evidence = self.evidence
        bands = [(b.start, b.end) for b in load.bands] if load is not None else []
        if evidence is not None and bands:
            evidence = replace(evidence, bands_measured=self.band_measured(bands))
        out = load_status(
            evidence=evidence,
            recommendation=load,
            note="" if self.load_aware else self.note,
            batches=self.batches,
            deployed_k=self.measured.k if self.measured is not None else None,
        )
        out["preset_cost"] = self.prior_cost
        out["notes"] = list(self.notes)
        return out


def cost_side(
    deltas: Sequence[CounterDelta],
    *,
    prior_cost: float,
    verify_slope: float = 0.0,
    k: int | None = None,
    survival: Sequence[float] | None = None,
) -> CostSide:
    """The cost side of one class from its deltas (speculative and load-only).

    ``k`` overrides the deployed k of the speculative deltas (``--k``); ``survival`` (s_1,
    s_2, ...) lets the measured speedup carry the model's prediction for the same windows.
    """
    if not deltas:
        return CostSide(False, CONSTANT_COST_NOTE, prior_cost=prior_cost)
    window = LoadWindow(horizon=_horizon(deltas))
    problems: list[str] = []
    for d in sorted(deltas, key=lambda d: d.end):
        window.add(d, k if d.spec_families else None)
        if window.last_problem:
            problems.append(window.last_problem)
    now = max(d.end for d in deltas)
    obs = window.observations(now)
    batches = window.batches(now)
    if not obs:
        # as the controller says it (specwise.controller.load): the standard note when the
        # latency families are missing, else the first reason with the same consequence
        problem = next((p for p in problems if "latency families" not in p), None)
        if problem is None or any("latency families" in p for p in problems):
            note = CONSTANT_COST_NOTE
        else:
            note = f"{problem}; priced with the constant-cost model until it is measured"
        return CostSide(False, note, batches=batches, prior_cost=prior_cost)
    fit = fit_step_cost(obs, prior_cost=prior_cost, prior_verify_slope=verify_slope)
    if fit is None:
        return CostSide(False, CONSTANT_COST_NOTE, batches=batches, prior_cost=prior_cost)
    measured = measured_speedup(obs, fit, survival=survival)
    if batches is None:
        batches = BatchDistribution.from_samples([o.batch for o in obs], [o.weight for o in obs])
    notes = list(dict.fromkeys(problems))
    if measured is not None and measured.basis == "inferred":
        notes.append(
            "no plain-decoding windows of this class: T(0, B) is inferred from the fit "
            f"({fit.plain_source}), not measured"
        )
    return CostSide(
        True,
        "",
        fit=fit,
        measured=measured,
        batches=batches,
        prior_cost=prior_cost,
        observations=tuple(obs),
        notes=tuple(notes),
        survival=None if survival is None else tuple(survival),
    )


def sum_by_class_per_window(
    deltas: Sequence[CounterDelta], classes: ClassConfig
) -> list[CounterDelta]:
    """:func:`~specwise.collectors.deltas.sum_by_class` within each window (same start and
    end) apart: sub-windows of a range stay separate observations of the cost side."""
    windows: dict[tuple[float, float], list[CounterDelta]] = {}
    for d in deltas:
        windows.setdefault((d.start, d.end), []).append(d)
    out: list[CounterDelta] = []
    for key in sorted(windows):
        out.extend(sum_by_class(windows[key], classes))
    return out


def _horizon(deltas: Sequence[CounterDelta]) -> float:
    start = min(d.start for d in deltas)
    end = max(d.end for d in deltas)
    span = end - start
    return max(span * 1.01 + 1.0, 60.0) if math.isfinite(span) else 86400.0


def costs_dict(
    fit: StepCostFit | None,
    batches: BatchDistribution | None,
    measured: MeasuredSpeedup | None = None,
) -> dict[str, Any] | None:
    """The fitted StepCost (seconds; knee in tokens, None = never compute-bound) and the
    drafter and verify costs it implies at the mean batch size, with 90% intervals."""
    if fit is None:
        return None
    c = fit.cost
    b = batches.mean if batches is not None else fit.typical_batch
    k = measured.k if measured is not None else max([*fit.ks, 1])
    k = max(k, 1)

    def implied_c(s: StepCost) -> float:
        return s.implied_draft_cost(b)

    def implied_v(s: StepCost) -> float:
        return s.implied_verify_cost(k, b)

    return {
        "base": c.base,
        "per_token": c.per_token,
        "knee_tokens": c.knee if math.isfinite(c.knee) else None,
        "draft_base": c.draft_base,
        "draft_per_seq": c.draft_per_seq,
        "verify_per_draft": c.verify_per_draft,
        "at_batch": b,
        "implied_draft_cost": implied_c(c),
        "implied_draft_cost_interval": list(fit.interval(implied_c)),
        "implied_verify_cost": implied_v(c),
        "implied_verify_cost_interval": list(fit.interval(implied_v)),
        "implied_verify_k": k,
    }


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


def cost_lines(side: CostSide, load: ConfigRecommendation | None = None) -> list[str]:
    """The cost side in a few readable lines (``recommend`` and ``report`` print them)."""
    lines: list[str] = []
    if not side.load_aware:
        lines.append(side.note)
        if side.batches is not None:
            lines.append(_batch_line(side.batches))
        return lines
    if load is not None:
        cfg = load.config
        what = "off: restart without --speculative-config" if cfg.k == 0 else cfg.describe()
        lines.append(
            f"configuration: {what} ({_x(load.speedup)} [{load.low:.2f}, {load.high:.2f}] over "
            f"the batch sizes seen; best single k = {load.single_k}: {_x(load.single_speedup)}"
            + (f"; now {_x(load.current_speedup)})" if load.current_speedup is not None else ")")
        )
    m = side.measured
    if m is not None:
        basis = (
            "against plain windows of this class"
            if m.basis == "baseline"
            else "T(0, B) inferred from the fit"
        )
        pred = (
            f"; predicted {_x(m.predicted)} [{m.predicted_low:.2f}, {m.predicted_high:.2f}]"
            if m.predicted is not None
            and m.predicted_low is not None
            and m.predicted_high is not None
            else ""
        )
        lines.append(
            f"measured speedup at k = {m.k}: {_x(m.value)} [{m.low:.2f}, {m.high:.2f}] at "
            f"B = {m.batch:.1f} ({basis}){pred}"
        )
    fit = side.fit
    if fit is not None:
        c = fit.cost
        knee = (
            f"compute-bound past {c.knee:.0f} tokens per step (+{c.per_token * 1e6:.3g} us "
            "per token)"
            if math.isfinite(c.knee) and c.per_token > 0
            else "no compute knee seen"
        )
        costs = costs_dict(fit, side.batches, m) or {}
        c_lo, c_hi = costs.get("implied_draft_cost_interval", [0.0, 0.0])
        lines.append(
            f"fitted step: base {_ms(c.base)}, {knee}, drafter {_ms(c.draft_base)}"
            + (f" + {c.draft_per_seq * 1e6:.3g} us x B" if c.draft_per_seq > 0 else "")
            + f"; implied c = {costs.get('implied_draft_cost', 0.0):.3f} [{c_lo:.3f}, "
            f"{c_hi:.3f}] at B = {costs.get('at_batch', 0.0):.0f} (preset {side.prior_cost:g}), "
            f"v({costs.get('implied_verify_k', 1)}) = {costs.get('implied_verify_cost', 1.0):.2f}"
            f"; {fit.n_observations} window(s), T(0, B) {fit.plain_source}"
        )
        lines.extend(f"disagrees with the preset: {d}" for d in side.disagreements)
    if side.batches is not None:
        lines.append(_batch_line(side.batches))
    if load is not None and len(load.bands) > 1:
        measured = dict(side.band_measured([(b.start, b.end) for b in load.bands]))
        for b in load.bands:
            mb = measured.get((b.start, b.end))
            lines.append(
                f"band {b.label}: k = {b.k}, {b.share:.0%} of busy time, predicted "
                f"{_x(b.speedup)} [{b.low:.2f}, {b.high:.2f}]"
                + (
                    f"; the deployed k = {mb.k} measured {_x(mb.value)} [{mb.low:.2f}, "
                    f"{mb.high:.2f}] there"
                    if mb is not None
                    else ""
                )
            )
    if load is not None:
        lines.extend(f"warning: {w}" for w in load.warnings)
    lines.extend(f"note: {n}" for n in side.notes)
    return lines


def _batch_line(b: BatchDistribution) -> str:
    return (
        f"batch size: mean {b.mean:.1f}, p50 {b.quantile(0.5)}, p90 {b.quantile(0.9)}, "
        f"p99 {b.quantile(0.99)}, idle {b.idle_share:.0%}"
    )
