"""Drift detection: has a class's alpha moved for good (a drafter broke, the mix changed)?

Per class, every tick's evidence (successes and failures of the alpha likelihood, from
:func:`specwise.estimation.estimator.alpha_trials`) goes into two adjacent windows: *recent*
(the last ``window_seconds``) and *reference* (the ``reference_windows`` windows before it). A tick
alarms when the two pooled alphas differ by a z-score above ``z_threshold`` *and* by more
than ``min_shift``, for ``persist_ticks`` ticks in a row. The z-score's variance is the
binomial one inflated by the dispersion the reference shows between its own ticks (real
streams are burstier than Bernoulli trials), so a stationary but noisy stream does not
alarm. A step change shows up in the recent window as soon as a fraction of it is new,
so it is flagged well within two windows. After an alarm the reference is dropped and
rebuilt from the new regime (about one window of warm-up before the next alarm).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from specwise.collectors.snapshot import CounterDelta
from specwise.errors import ConfigError
from specwise.estimation.estimator import WindowCounts, alpha_trials

__all__ = ["DriftConfig", "DriftDetector", "DriftStatus"]


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds of the drift test (see the module docstring)."""

    window_seconds: float = 600.0
    reference_windows: float = 3.0
    z_threshold: float = 5.0
    min_shift: float = 0.03
    persist_ticks: int = 2
    min_trials: float = 300.0

    def __post_init__(self) -> None:
        for name, value, hint in [
            ("window_seconds", self.window_seconds, "e.g. 600"),
            ("reference_windows", self.reference_windows, "e.g. 3"),
            ("z_threshold", self.z_threshold, "e.g. 5"),
            ("min_trials", self.min_trials, "e.g. 300"),
        ]:
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(
                    f"drift {name} = {value!r} must be a finite number > 0, {hint}", field=name
                )
        if not (0 <= self.min_shift < 1):
            raise ConfigError(
                f"drift min_shift = {self.min_shift!r} must lie in [0, 1), e.g. 0.03",
                field="min_shift",
            )
        if self.persist_ticks < 1:
            raise ConfigError(
                f"drift persist_ticks = {self.persist_ticks!r} must be >= 1, e.g. 2",
                field="persist_ticks",
            )


@dataclass(frozen=True)
class DriftStatus:
    """The drift verdict for one class after one tick.

    ``alarm`` is True on the tick a drift is declared; ``drifting`` stays True for one
    window after it (the rolling estimate still mixes both regimes until then).
    """

    class_name: str
    time: float
    alarm: bool
    drifting: bool
    alpha_reference: float | None
    alpha_recent: float | None
    z: float | None
    dispersion: float
    since: float | None
    reason: str

    @property
    def shift(self) -> float | None:
        if self.alpha_reference is None or self.alpha_recent is None:
            return None
        return self.alpha_recent - self.alpha_reference


class _Side:
    """Running sums over ticks (t, successes, trials) in one window."""

    __slots__ = ("m", "n", "q", "s", "ticks")

    def __init__(self) -> None:
        self.ticks: deque[tuple[float, float, float]] = deque()
        self.s = 0.0
        self.n = 0.0
        self.q = 0.0  # sum of s^2 / n, for the dispersion
        self.m = 0

    def push(self, tick: tuple[float, float, float]) -> None:
        self.ticks.append(tick)
        _, s, n = tick
        self.s += s
        self.n += n
        self.q += s * s / n
        self.m += 1

    def pop(self) -> tuple[float, float, float]:
        tick = self.ticks.popleft()
        _, s, n = tick
        self.s -= s
        self.n -= n
        self.q -= s * s / n
        self.m -= 1
        if self.m == 0:
            self.s = self.n = self.q = 0.0
        return tick

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def dispersion(self) -> float:
        """Pearson chi-square per degree of freedom of the ticks around their pooled p."""
        if self.m < 3 or self.n <= 0:
            return 1.0
        p = self.s / self.n
        if p <= 0.0 or p >= 1.0:
            return 1.0
        x2 = (self.q - 2.0 * p * self.s + p * p * self.n) / (p * (1.0 - p))
        return max(1.0, x2 / (self.m - 1))


class _State:
    __slots__ = ("recent", "reference", "run", "since")

    def __init__(self) -> None:
        self.recent = _Side()
        self.reference = _Side()
        self.run = 0
        self.since: float | None = None


class DriftDetector:
    """Per-class drift detector; feed it each tick's delta (or trials) in time order."""

    def __init__(self, config: DriftConfig | None = None) -> None:
        self.config = config or DriftConfig()
        self._states: dict[str, _State] = {}

    def reset(self, class_name: str) -> None:
        self._states.pop(class_name, None)

    def update(self, class_name: str, delta: CounterDelta | WindowCounts) -> DriftStatus:
        """Add one tick's delta; ticks without per-position counters carry no evidence."""
        counts = delta if isinstance(delta, WindowCounts) else WindowCounts.from_delta(delta)
        trials = alpha_trials(counts)
        if trials is None:
            return self.update_trials(class_name, time=counts.end, successes=0.0, failures=0.0)
        s, r, _, _ = trials
        return self.update_trials(class_name, time=counts.end, successes=s, failures=r)

    def update_trials(
        self, class_name: str, *, time: float, successes: float, failures: float
    ) -> DriftStatus:
        """Add one tick's successes and failures at ``time`` and test for drift."""
        cfg = self.config
        st = self._states.setdefault(class_name, _State())
        if successes + failures > 0:
            st.recent.push((time, successes, successes + failures))
        w = cfg.window_seconds
        while st.recent.ticks and st.recent.ticks[0][0] <= time - w:
            st.reference.push(st.recent.pop())
        horizon = time - w * (1.0 + cfg.reference_windows)
        while st.reference.ticks and st.reference.ticks[0][0] <= horizon:
            st.reference.pop()
        drifting = st.since is not None and time - st.since < w
        ref, rec = st.reference, st.recent
        p_ref = ref.s / ref.n if ref.n > 0 else None
        p_rec = rec.s / rec.n if rec.n > 0 else None
        phi = ref.dispersion()
        if ref.n < cfg.min_trials or rec.n < cfg.min_trials or p_ref is None or p_rec is None:
            st.run = 0
            return DriftStatus(
                class_name, time, False, drifting, p_ref, p_rec, None, phi, st.since,
                f"warming up: {ref.n:.0f} reference and {rec.n:.0f} recent trials "
                f"(need {cfg.min_trials:g} each)",
            )  # fmt: skip
        pooled = (ref.s + rec.s) / (ref.n + rec.n)
        var = phi * max(pooled * (1.0 - pooled), 1e-12) * (1.0 / ref.n + 1.0 / rec.n)
        z = (p_rec - p_ref) / math.sqrt(var)
        shift = p_rec - p_ref
        if abs(z) > cfg.z_threshold and abs(shift) > cfg.min_shift:
            st.run += 1
        else:
            st.run = 0
        if st.run >= cfg.persist_ticks:
            st.since = time
            st.run = 0
            st.reference.clear()
            st.recent.clear()  # it may still hold ticks of the old regime
            return DriftStatus(
                class_name, time, True, True, p_ref, p_rec, z, phi, time,
                f"alpha moved from {p_ref:.3f} to {p_rec:.3f} (z = {z:.1f}, dispersion "
                f"{phi:.2f}); the rolling estimate mixes both for the next {w:.0f} s",
            )  # fmt: skip
        return DriftStatus(
            class_name, time, False, drifting, p_ref, p_rec, z, phi, st.since,
            f"alpha {p_rec:.3f} vs reference {p_ref:.3f} (z = {z:.1f})",
        )  # fmt: skip
