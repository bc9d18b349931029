"""Per-class rolling windows of counter deltas, and the estimate at any time.

A sliding window keeps the deltas that ended within ``window_seconds``; the exponentially
weighted variant weighs each by 2^(-age / half_life). Pure: ``now`` comes from the caller.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import replace

from specwise.collectors.snapshot import CounterDelta, Generation
from specwise.estimation.estimator import (
    DEFAULT_ESTIMATOR_CONFIG,
    Estimate,
    EstimatorConfig,
    WindowCounts,
    _insufficient,
    estimate_counts,
)

__all__ = ["RollingEstimator"]


class _Acc:
    """Running (possibly decayed) sums of one class's counts."""

    __slots__ = ("accepted", "drafts", "end", "n", "pos", "restarts", "start", "tokens", "weight_t")

    def __init__(self, k: int | None, generation: Generation, has_drafts: bool) -> None:
        self.drafts: float | None = 0.0 if has_drafts else None
        self.tokens = 0.0
        self.accepted = 0.0
        self.pos: list[float] = [0.0] * (k or 0)
        self.start = math.inf
        self.end = -math.inf
        self.n = 0
        self.restarts = 0
        self.weight_t = -math.inf  # ewma: time the weights refer to

    def add(self, c: WindowCounts, w: float = 1.0) -> None:
        if self.drafts is not None and c.drafts is not None:
            self.drafts += w * c.drafts
        self.tokens += w * c.draft_tokens
        self.accepted += w * c.accepted
        for i, p in enumerate(c.accepted_per_position):
            self.pos[i] += w * p
        self.n += 1
        self.restarts += c.restarts

    def scale(self, f: float) -> None:
        if self.drafts is not None:
            self.drafts *= f
        self.tokens *= f
        self.accepted *= f
        self.pos = [p * f for p in self.pos]


class _ClassState:
    __slots__ = ("acc", "generation", "has_drafts", "items", "k", "notes")

    def __init__(self, c: WindowCounts) -> None:
        self.k = c.k
        self.generation = c.generation
        self.has_drafts = c.drafts is not None
        self.items: deque[WindowCounts] = deque()
        self.acc = _Acc(c.k, c.generation, self.has_drafts)
        self.notes: tuple[str, ...] = ()


class RollingEstimator:
    """Per-class rolling estimator fed with collector deltas; ask it for estimates at ``now``.

    A change of k, of metrics generation or of the presence of the drafts counter restarts
    that class's window (the old counts describe another configuration) and says so.
    """

    def __init__(
        self,
        config: EstimatorConfig = DEFAULT_ESTIMATOR_CONFIG,
        *,
        k: Mapping[str, int] | None = None,
    ) -> None:
        self.config = config
        self._k_hint = dict(k or {})
        self._states: dict[str, _ClassState] = {}

    def classes(self) -> list[str]:
        return sorted(self._states)

    def reset(self, class_name: str) -> None:
        """Forget a class's window (after a detected drift or a deliberate change of k)."""
        self._states.pop(class_name, None)

    def update(self, class_name: str, delta: CounterDelta | WindowCounts) -> None:
        """Add one delta (one tick of one class, already summed over its series)."""
        c = delta if isinstance(delta, WindowCounts) else WindowCounts.from_delta(delta)
        st = self._states.get(class_name)
        if st is not None and (
            st.k != c.k or st.generation != c.generation or st.has_drafts != (c.drafts is not None)
        ):
            note = (
                f"window restarted at {c.start:.0f}: k {st.k} -> {c.k}, "
                f"generation {st.generation} -> {c.generation}"
            )
            st = None
            self._states[class_name] = fresh = _ClassState(c)
            fresh.notes = (note,)
        if st is None:
            st = self._states.setdefault(class_name, _ClassState(c))
        acc = st.acc
        if self.config.mode == "sliding":
            st.items.append(c)
            acc.add(c)
        elif acc.n == 0 or c.end >= acc.weight_t:
            if acc.n:
                acc.scale(self._decay(c.end - acc.weight_t))
            acc.weight_t = c.end
            acc.add(c)
        else:  # a late delta: weigh it by its age relative to the newest one
            acc.add(c, self._decay(acc.weight_t - c.end))
        acc.start = min(acc.start, c.start)
        acc.end = max(acc.end, c.end)

    def _decay(self, dt: float) -> float:
        return float(2.0 ** (-dt / self.config.half_life_seconds))

    def window_counts(self, class_name: str, *, now: float) -> WindowCounts | None:
        """The pooled counts of a class at ``now`` (None if the class was never seen)."""
        st = self._states.get(class_name)
        if st is None:
            return None
        acc = st.acc
        if self.config.mode == "sliding":
            cutoff = now - self.config.window_seconds
            evicted = False
            while st.items and st.items[0].end <= cutoff:
                st.items.popleft()
                evicted = True
            if evicted:
                acc = st.acc = _Acc(st.k, st.generation, st.has_drafts)
                for c in st.items:
                    acc.add(c)
                    acc.start = min(acc.start, c.start)
                    acc.end = max(acc.end, c.end)
            scale = 1.0
        else:
            scale = self._decay(now - acc.weight_t) if now > acc.weight_t else 1.0
        if acc.n == 0:
            return WindowCounts(
                drafts=0.0 if st.has_drafts else None,
                draft_tokens=0.0,
                accepted=0.0,
                accepted_per_position=(0.0,) * (st.k or 0),
                k=st.k,
                generation=st.generation,
                start=now,
                end=now,
                deltas=0,
                notes=st.notes,
            )
        return WindowCounts(
            drafts=None if acc.drafts is None else max(0.0, acc.drafts * scale),
            draft_tokens=max(0.0, acc.tokens * scale),
            accepted=max(0.0, acc.accepted * scale),
            accepted_per_position=tuple(max(0.0, p * scale) for p in acc.pos),
            k=st.k,
            generation=st.generation,
            start=acc.start,
            end=acc.end,
            deltas=acc.n,
            restarts=acc.restarts,
            notes=st.notes,
        )

    def estimate(self, class_name: str, *, now: float) -> Estimate:
        """The estimate of one class at ``now``; "insufficient" for an unseen class."""
        counts = self.window_counts(class_name, now=now)
        if counts is None:
            empty = WindowCounts(drafts=None, draft_tokens=0.0, accepted=0.0, start=now, end=now)
            return _insufficient(class_name, empty, now, f"no data yet for class {class_name!r}")
        counts = _sanitize(counts)
        return estimate_counts(
            class_name, counts, now=now, config=self.config, k=self._k_hint.get(class_name)
        )

    def estimate_all(self, *, now: float) -> dict[str, Estimate]:
        return {name: self.estimate(name, now=now) for name in self.classes()}


def _sanitize(c: WindowCounts) -> WindowCounts:
    """Undo float drift of running sums so validation sees consistent counts."""
    pos = list(c.accepted_per_position)
    for i in range(1, len(pos)):
        pos[i] = min(pos[i], pos[i - 1])
    accepted = math.fsum(pos) if pos else c.accepted
    accepted = min(accepted, c.draft_tokens)
    return replace(c, accepted_per_position=tuple(pos), accepted=accepted)
