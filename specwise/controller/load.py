"""The cost side in the controller: per class a load window, a step-time fit, the evidence.

Every class delta (with speculation, and load-only ones from engines running without it,
which give the plain step T(0, B)) goes into the class's :class:`LoadWindow`. Once per
tick :meth:`LoadTracker.evidence` fits T(k, B) over the window (the last fit is reused
while nothing new arrived, so a tick of many classes stays fast), measures the speedup
the deployed configuration delivers, and hands the policy a :class:`LoadEvidence`; a class
without latency families gets none and is priced with the constant-cost model, with the
note that says so. :func:`load_status` renders the ``load`` block of a class's status
(``/recommendations``, the state file, the exported metrics).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from specwise.collectors.snapshot import CounterDelta
from specwise.estimation.load_window import LoadWindow
from specwise.estimation.step_fit import (
    MeasuredSpeedup,
    StepCostFit,
    StepObservation,
    fit_step_cost,
    measured_speedup,
)
from specwise.policies.load_policy import RECENT_SPAN, ConfigRecommendation, LoadEvidence
from specwise.step_cost import BatchDistribution, SpecConfig

__all__ = [
    "NO_BATCH_NOTE",
    "NO_LATENCY_NOTE",
    "PRIOR_ONLY_NOTE",
    "LoadTracker",
    "band_label",
    "load_status",
]

NO_LATENCY_NOTE = (
    "no latency families: priced with the constant-cost model (draft cost c from the preset)"
)
NO_BATCH_NOTE = (
    "no batch-size samples (vllm:num_requests_running): priced with the constant-cost model "
    "(draft cost c from the preset)"
)
PRIOR_ONLY_NOTE = (
    "T(0, B) is not measured yet (no window without speculation, one k, one batch size): "
    "priced with the constant-cost model (draft cost c from the preset) until a plain window "
    "(a replica without speculation, before/after), a second k or a change of load gives it"
)
#: with one k and no plain window, the load is worth pricing once the batch size has moved
#: by this factor (the step time's shape over B is then measured; its split between target
#: and drafter still leans on the preset)
LOAD_RANGE = 1.15
#: a window under a schedule is priced at one band's k when this share of its batch samples
#: falls in that band; otherwise it straddles bands and gives no step observation
ONE_BAND_SHARE = 0.9
#: refit at least this often even when nothing new arrived (old windows leave the horizon)
REFIT_SECONDS = 3600.0
#: a fit over n windows is redone once REFIT_SHARE * n new windows arrived (every tick while
#: n is small; every ~50 ticks over a day of windows), so a tick of many classes stays fast
REFIT_SHARE = 0.02


def band_label(start: int, end: int) -> str:
    """The ``band`` label of the per-band metrics: ``"1-16"``."""
    return f"{start}-{end}"


@dataclass
class _ClassLoad:
    window: LoadWindow
    version: int = 0  # deltas added so far
    fitted_version: int = -1
    fitted_at: float = -math.inf
    fitted_prior: float = math.nan
    fit: StepCostFit | None = None


class LoadTracker:
    """Per class: the load window and the last fit (collaborator-free; ``now`` passed in).

    ``horizon`` is ``[policy] load_horizon`` (the batch-size distribution covers it, so a
    schedule covers the whole day); ``recent`` the span of windows the measured speedup is
    taken over (the estimator's window: what the deployed configuration delivers now).
    """

    def __init__(
        self,
        *,
        horizon: float = 86400.0,
        recent: float = 600.0,
        max_observations: int = 5000,
        seed: int = 0,
    ) -> None:
        self.horizon = horizon
        self.recent = recent
        self.max_observations = max_observations
        self.seed = seed
        self._classes: dict[str, _ClassLoad] = {}
        self.fits = 0  # step-time fits run so far (the expensive part of a tick)

    def _of(self, name: str) -> _ClassLoad:
        cl = self._classes.get(name)
        if cl is None:
            cl = self._classes[name] = _ClassLoad(
                LoadWindow(horizon=self.horizon, max_observations=self.max_observations)
            )
        return cl

    def classes(self) -> list[str]:
        return sorted(self._classes)

    def add(
        self, name: str, delta: CounterDelta, k: int | None, *, deployed: SpecConfig | None = None
    ) -> None:
        """One class delta: with speculation (``k`` its deployed k) or load-only (k = 0).

        Under a batch-size schedule (``deployed``) a window's k is the schedule's k at its
        batch sizes; a window that straddles bands of different k, or runs a k = 0 band under
        a loaded drafter (slower than plain decoding, vLLM #49548: not a T(0, B) baseline),
        gives its batch sizes but no step observation. Straddling: fewer than
        ``ONE_BAND_SHARE`` of its batch samples in one band.
        """
        cl = self._of(name)
        if delta.spec_families and deployed is not None:
            ks = Counter(deployed.k_at(max(1, round(x))) for x in delta.batch_samples if x >= 0.5)
            modal = max(ks.values()) / sum(ks.values()) if ks else 1.0
            if deployed.k == 0 or modal < ONE_BAND_SHARE:  # off via a schedule, or straddling
                samples = [float(x) for x in delta.batch_samples if x >= 0]
                span = float(delta.end) - float(delta.start)
                if samples and span > 0:
                    cl.window.add_batches(samples, span / len(samples), at=float(delta.end))
                    cl.window.prune(float(delta.end))
                return
        # one band: the window is priced at its k; a k = 0 band is left out (LoadWindow.add)
        cl.window.add(delta, k, config=deployed if deployed is not None and deployed.k else None)
        cl.version += 1

    def to_json(self, name: str) -> dict[str, Any] | None:
        cl = self._classes.get(name)
        return None if cl is None else cl.window.to_json()

    def restore(self, name: str, data: Mapping[str, Any]) -> None:
        """A window read back from the state file (the fit is redone on the next tick)."""
        window = LoadWindow.from_json(
            dict(data), horizon=self.horizon, max_observations=self.max_observations
        )
        self._classes[name] = _ClassLoad(window, version=1)

    def batches(self, name: str, now: float) -> BatchDistribution | None:
        cl = self._classes.get(name)
        return None if cl is None else cl.window.batches(now)

    def _fit(
        self, cl: _ClassLoad, obs: Sequence[StepObservation], now: float, prior_cost: float
    ) -> StepCostFit | None:
        new = cl.version - cl.fitted_version
        if (
            cl.fitted_version >= 0
            and cl.fitted_prior == prior_cost
            and now - cl.fitted_at < REFIT_SECONDS
            and (new == 0 or (cl.fit is not None and new < REFIT_SHARE * len(obs)))
        ):
            return cl.fit  # nothing new, or too little to move a fit over many windows
        cl.fit = fit_step_cost(obs, prior_cost=prior_cost, seed=self.seed) if obs else None
        cl.fitted_version, cl.fitted_at, cl.fitted_prior = cl.version, now, prior_cost
        self.fits += 1
        return cl.fit

    def evidence(
        self,
        name: str,
        now: float,
        *,
        prior_cost: float,
        survival: Sequence[float] | None,
        deployed: SpecConfig | None,
    ) -> tuple[LoadEvidence | None, str]:
        """The load evidence of one class, or None and the note that says why not."""
        cl = self._classes.get(name)
        if cl is None:
            return None, NO_LATENCY_NOTE
        obs = cl.window.observations(now)
        fit = self._fit(cl, obs, now, prior_cost)
        if fit is None:
            problem = cl.window.last_problem
            if problem is None or "latency families" in problem:
                return None, NO_LATENCY_NOTE
            return None, f"{problem}; priced with the constant-cost model until it is measured"
        lo, hi = fit.batch_range
        if fit.plain_source == "prior" and not hi >= LOAD_RANGE * lo:
            return None, PRIOR_ONLY_NOTE
        batches = cl.window.batches(now)
        if batches is None:
            return None, NO_BATCH_NOTE
        # what the deployed configuration delivers now: its recent windows, plus every
        # plain window of the horizon (T(0, B) measured before/after or on a plain replica)
        recent = [o for o in obs if o.k == 0 or o.end > now - self.recent]
        measured = measured_speedup(recent, fit, survival)
        bands: list[tuple[tuple[int, int], MeasuredSpeedup]] = []
        if deployed is not None and deployed.k > 0 and deployed.schedule:
            for start, end, _k in deployed.schedule:
                m = measured_speedup(recent, fit, survival, band=(start, end))
                if m is not None:
                    bands.append(((start, end), m))
        recent_batches = cl.window.batches(now, span=RECENT_SPAN)
        return LoadEvidence(fit, batches, measured, tuple(bands), recent_batches), ""


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _measured(m: MeasuredSpeedup) -> dict[str, Any]:
    return {
        "value": m.value,
        "low": m.low,
        "high": m.high,
        "basis": m.basis,
        "batch": m.batch,
        "k": m.k,
        # "throughput": per-request tokens per second in the engine, prefill included, vs
        # plain windows at comparable batch sizes; "decode": decode step time only
        "measure": m.measure,
        "decode_value": m.decode_value,
        "load": m.load,
        "plain_load": m.plain_load,
    }


def _batch(b: BatchDistribution) -> dict[str, Any]:
    return {
        "mean": b.mean,
        "p50": b.quantile(0.5),
        "p90": b.quantile(0.9),
        "p99": b.quantile(0.99),
        "idle_share": b.idle_share,
    }


def _costs(fit: StepCostFit, batch: float, k: int) -> dict[str, Any]:
    c = fit.cost
    b = max(batch, 1.0)
    kv = max(k, 1)
    return {
        "base": c.base,
        "per_token": c.per_token,
        "knee_tokens": _finite(c.knee),  # None: never compute-bound in the observed range
        "draft_base": c.draft_base,
        "draft_per_seq": c.draft_per_seq,
        "at_batch": b,
        "implied_draft_cost": c.implied_draft_cost(b),
        "implied_verify_cost": c.implied_verify_cost(kv, b),
        "implied_verify_k": kv,
        "implied_draft_cost_interval": list(fit.interval(lambda s: s.implied_draft_cost(b))),
    }


def _recommended(rec: ConfigRecommendation) -> dict[str, Any]:
    return {
        "k": rec.config.k,
        "schedule": None if not rec.config.schedule else [list(e) for e in rec.config.schedule],
        "describe": rec.config.describe(),
        "kind": rec.kind,
        "speedup": rec.speedup,
        "low": rec.low,
        "high": rec.high,
        "current_speedup": rec.current_speedup,
        "single_k": rec.single_k,
        "single_speedup": rec.single_speedup,
        # the first batch size of the guard bands past the largest the traffic reached
        "guard_from": rec.guard_from,
        "reason": rec.reason,
    }


def _json_safe(value: Any) -> Any:
    """Non-finite floats as None, all the way down (``/recommendations`` is strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def load_status(
    *,
    evidence: LoadEvidence | None,
    recommendation: ConfigRecommendation | None,
    note: str,
    error: str = "",
    batches: BatchDistribution | None = None,
    deployed_k: int | None = None,
) -> dict[str, Any]:
    """The ``load`` block of a class's status (JSON-ready: no infinities, plain types)."""
    out: dict[str, Any] = {
        "load_aware": evidence is not None and not error,
        "note": note,
        "error": error,
        "measured": None,
        "predicted": None,
        "recommended": None,
        "bands": [],
        "bands_measured": [],
        "costs": None,
        "fit": None,
        "batch": None if batches is None else _batch(batches),
        "warnings": [],
        "disagreements": [],
    }
    if evidence is None:
        return out
    fit = evidence.fit
    if not isinstance(fit, StepCostFit):  # pragma: no cover - the tracker builds these
        raise TypeError(f"load evidence carries a {type(fit).__name__}, not a StepCostFit")
    out["batch"] = _batch(evidence.batches)
    m = evidence.measured if isinstance(evidence.measured, MeasuredSpeedup) else None
    if m is not None:
        out["measured"] = _measured(m)
        if m.predicted is not None:
            out["predicted"] = {
                "value": m.predicted,
                "low": m.predicted_low,
                "high": m.predicted_high,
                "batch": m.batch,
                "k": m.k,
            }
    out["bands_measured"] = [
        {"band": band_label(a, b), "start": a, "end": b, **_measured(bm)}
        for (a, b), bm in evidence.bands_measured
        if isinstance(bm, MeasuredSpeedup)
    ]
    mean = evidence.batches.mean
    out["costs"] = _costs(fit, m.batch if m is not None else mean, deployed_k or 1)
    out["fit"] = {
        "observations": fit.n_observations,
        "ks": list(fit.ks),
        "batch_range": [_finite(x) for x in fit.batch_range],
        "plain_observed": fit.plain_observed,
        "prior_cost": fit.prior_cost,
        "notes": list(fit.notes),
    }
    out["disagreements"] = list(fit.disagreements())
    if recommendation is not None:
        out["recommended"] = _recommended(recommendation)
        if out["predicted"] is None and recommendation.current_speedup is not None:
            out["predicted"] = {"value": recommendation.current_speedup}
        out["bands"] = [
            {
                "band": band_label(b.start, b.end),
                "start": b.start,
                "end": b.end,
                "k": b.k,
                "share": b.share,
                "speedup": b.speedup,
                "low": b.low,
                "high": b.high,
            }
            for b in recommendation.bands
        ]
        out["warnings"] = list(recommendation.warnings)
    return dict(_json_safe(out))
