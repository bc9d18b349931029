"""The rolling load store of one workload class (docs/design.md#the-cost-side).

A :class:`LoadWindow` keeps, over ``horizon`` seconds (default a day, so a schedule covers
the whole day and not the last ten minutes), the :class:`StepObservation` of every window
and the running-batch samples weighted by the time they stand for. Memory is bounded: at
most ``max_observations`` windows (the oldest dropped first), and batch samples folded into
a histogram per time bucket (1/96 of the horizon), so a day of 240 samples per tick costs a
few thousand numbers. Collaborator-free: the caller passes ``now``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace
from typing import Any

from specwise.collectors.snapshot import CounterDelta
from specwise.errors import DataError
from specwise.estimation.step_obs import (
    StepObservation,
    observation_from_delta,
    observation_problem,
)
from specwise.step_cost import BatchDistribution, SpecConfig

__all__ = ["LoadWindow"]

#: Time buckets per horizon for the batch-size histogram.
BUCKETS_PER_HORIZON = 96
_STATE_VERSION = 1


class LoadWindow:
    """Per class: step observations and time-weighted batch-size samples over a horizon."""

    def __init__(self, horizon: float = 86400.0, max_observations: int = 20000) -> None:
        if not (math.isfinite(horizon) and horizon > 0):
            raise DataError(f"load horizon = {horizon!r} must be a positive number of seconds")
        if max_observations < 1:
            raise DataError(f"max_observations = {max_observations!r} must be at least 1")
        self.horizon = float(horizon)
        self.max_observations = int(max_observations)
        self._obs: deque[StepObservation] = deque(maxlen=self.max_observations)
        self._bucket = max(self.horizon / BUCKETS_PER_HORIZON, 1.0)
        #: bucket index -> {batch size (whole, 0 = idle): seconds}
        self._batches: dict[int, dict[int, float]] = {}
        #: why the latest delta gave no observation (None when it gave one)
        self.last_problem: str | None = None

    def __len__(self) -> int:
        return len(self._obs)

    def add(self, delta: CounterDelta, k: int | None, *, config: SpecConfig | None = None) -> None:
        """Take one class delta: its step observation (when its families allow one) and its
        batch samples, each standing for an equal share of the window's length.

        ``k``: the deployed k (None: the delta's own). ``config``: the deployed
        configuration; under a batch-size schedule the window is priced at the k its mean
        batch size runs, and a window in a k = 0 band of an engine launched with a drafter
        is left out of the fit (its steps carry the loaded drafter's overhead, so they are
        neither plain decoding nor speculation)."""
        obs = observation_from_delta(delta, k)
        self.last_problem = None if obs is not None else observation_problem(delta, k)
        if obs is not None and obs.k > 0 and config is not None and config.schedule:
            k_band = config.k_at(max(1, round(obs.batch)))
            if k_band == 0:
                self.last_problem = (
                    f"batch size {obs.batch:.1f} falls in a k = 0 band of the schedule: its "
                    "steps carry the loaded drafter's overhead and are left out of the fit"
                )
                obs = None
            else:  # priced at its mean's k; the fit spreads it over the schedule's bands
                sched = tuple((int(a), int(b), int(kk)) for a, b, kk in config.schedule)
                obs = replace(obs, k=k_band, schedule=sched)
        if obs is not None:
            self.add_observation(obs)
        samples = [
            float(x) for x in delta.batch_samples if math.isfinite(float(x)) and float(x) >= 0
        ]
        span = float(delta.end) - float(delta.start)
        if not (math.isfinite(span) and span > 0):
            self.prune(float(delta.end))
            return
        if not samples and obs is not None:
            samples = [obs.batch]
        if samples:
            self.add_batches(samples, span / len(samples), at=float(delta.end))
        self.prune(float(delta.end))

    def add_observation(self, obs: StepObservation) -> None:
        self._obs.append(obs)

    def add_batches(self, samples: list[float], seconds_each: float, *, at: float) -> None:
        """Batch-size samples observed around ``at``, each standing for ``seconds_each``."""
        if not (math.isfinite(seconds_each) and seconds_each > 0 and math.isfinite(at)):
            return
        hist = self._batches.setdefault(int(at // self._bucket), {})
        for x in samples:
            if math.isfinite(x) and x >= 0:
                b = round(x)
                hist[b] = hist.get(b, 0.0) + seconds_each

    def prune(self, now: float) -> None:
        """Forget what ended before ``now - horizon``."""
        cutoff = now - self.horizon
        while self._obs and self._obs[0].end < cutoff:
            self._obs.popleft()
        first = int(cutoff // self._bucket)
        for idx in [i for i in self._batches if i < first]:
            del self._batches[idx]

    def observations(self, now: float) -> list[StepObservation]:
        """The windows that ended within the horizon before ``now``."""
        cutoff = now - self.horizon
        return [o for o in self._obs if o.end >= cutoff]

    def batches(self, now: float, span: float | None = None) -> BatchDistribution | None:
        """The time-weighted batch-size distribution over the horizon (or the last ``span``
        seconds, whole buckets of horizon / 96); None with no busy sample."""
        first = int((now - min(self.horizon, span or self.horizon)) // self._bucket)
        pooled: dict[int, float] = {}
        for idx, hist in self._batches.items():
            if idx < first:
                continue
            for b, w in hist.items():
                pooled[b] = pooled.get(b, 0.0) + w
        if not any(w > 0 for b, w in pooled.items() if b > 0):
            return None
        sizes = sorted(pooled)
        return BatchDistribution.from_samples(sizes, [pooled[b] for b in sizes])

    def to_json(self) -> dict[str, Any]:
        """A JSON-able state (for the controller's state file)."""
        return {
            "version": _STATE_VERSION,
            "horizon": self.horizon,
            "max_observations": self.max_observations,
            "observations": [
                [o.k, o.batch, o.step_seconds, o.weight, o.tokens_per_step, o.start, o.end]
                + (
                    [None, None, None]
                    if o.request_seconds is None
                    else [o.request_seconds, o.request_tokens, o.requests]
                )
                + [_extra(o)]
                for o in self._obs
            ],
            "batches": [
                [idx, [[b, w] for b, w in sorted(hist.items())]]
                for idx, hist in sorted(self._batches.items())
            ],
        }

    @classmethod
    def from_json(
        cls,
        data: Any,
        *,
        horizon: float | None = None,
        max_observations: int | None = None,
    ) -> LoadWindow:
        """Rebuild from :meth:`to_json`; rows that do not parse are skipped. ``horizon`` and
        ``max_observations`` override the saved ones (a changed ``[policy] load_horizon``)."""
        if not isinstance(data, dict):
            raise DataError(
                f"load window state is a {type(data).__name__}, not an object; delete the "
                "state file's load entry to start afresh"
            )
        h = horizon if horizon is not None else _num(data.get("horizon"), 86400.0)
        m = max_observations
        if m is None:
            saved = data.get("max_observations")
            m = saved if isinstance(saved, int) and saved >= 1 else 20000
        win = cls(horizon=h, max_observations=m)
        saved_bucket = max(_num(data.get("horizon"), h) / BUCKETS_PER_HORIZON, 1.0)
        for row in data.get("observations", []) or []:
            obs = _obs_from_row(row)
            if obs is not None:
                win.add_observation(obs)
        for entry in data.get("batches", []) or []:
            try:
                idx, hist = entry
                at = (int(idx) + 0.5) * saved_bucket
                for b, w in hist:
                    win.add_batches([float(b)], float(w), at=at)
            except (TypeError, ValueError):
                continue
        return win


def _num(value: Any, default: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) and v > 0 else default


def _extra(o: StepObservation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if o.batch_dof:
        out["sq_dev"] = o.batch_sq_dev
        out["dof"] = o.batch_dof
    if o.schedule:
        out["schedule"] = [list(e) for e in o.schedule]
    return out


def _parse_extra(value: Any) -> dict[str, Any]:
    """The batch spread and schedule of a saved row (absent in older state files)."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, Any] = {}
    try:
        sq, dof = float(value.get("sq_dev", 0.0)), int(value.get("dof", 0))
        if math.isfinite(sq) and sq >= 0 and dof > 0:
            out["batch_sq_dev"], out["batch_dof"] = sq, dof
        sched = value.get("schedule")
        if sched:
            out["schedule"] = tuple((int(a), int(b), int(k)) for a, b, k in sched)
    except (TypeError, ValueError):
        return {}
    return out


def _obs_from_row(row: Any) -> StepObservation | None:
    try:
        k, batch, step, weight, tps, start, end = row[:7]
        # the finished requests' seconds, tokens and number (absent in older state files)
        req = (
            [float(x) for x in row[7:10]]
            if len(row) >= 10 and all(x is not None for x in row[7:10])
            else []
        )
        if req and not all(math.isfinite(x) and x > 0 for x in req):
            req = []
        extra = _parse_extra(row[10]) if len(row) >= 11 else {}
        obs = StepObservation(
            k=int(k),
            batch=float(batch),
            step_seconds=float(step),
            weight=float(weight),
            tokens_per_step=None if tps is None else float(tps),
            start=float(start),
            end=float(end),
            request_seconds=req[0] if req else None,
            request_tokens=req[1] if req else None,
            requests=req[2] if req else None,
            **extra,
        )
    except (TypeError, ValueError):
        return None
    ok = (
        obs.k >= 0
        and obs.batch > 0
        and obs.step_seconds > 0
        and obs.weight > 0
        and all(math.isfinite(x) for x in (obs.batch, obs.step_seconds, obs.weight, obs.end))
    )
    return obs if ok else None
