"""Hysteresis: act on a recommendation only when it is worth a restart.

vLLM cannot change k at runtime, so every change costs a restart. A recommendation passes
the gate only when the predicted gain over the current k exceeds ``min_gain``, the policy
is confident enough, no drift is settling, at least ``min_dwell_seconds`` passed since the
last change, and fewer than ``max_changes_per_hour`` changes happened in the last hour.

A gain below ``min_gain`` but at least half of it passes once every recommendation has
claimed it for four dwells (``SUSTAINED_DWELLS``): worth a restart over the hours that
follow, while a tie that flips on noise never holds that long.

A recommendation under load is a configuration (k plus a batch-size schedule): a change of
the schedule alone is a restart too, so it needs the same ``min_gain`` over the current
configuration's speedup; specwise never restarts to move a band edge for less.
Pure: the state is a frozen value passed in and returned; ``now`` comes from the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from specwise.errors import ConfigError
from specwise.policies.schedule import ScheduleEntry
from specwise.policies.speedup_policy import Recommendation, with_change_allowed

__all__ = ["HysteresisConfig", "HysteresisGate", "HysteresisState", "gate"]


@dataclass(frozen=True)
class HysteresisConfig:
    """When a change of k is worth making (see the module docstring)."""

    min_gain: float = 0.05
    min_dwell_seconds: float = 1800.0
    max_changes_per_hour: int = 2
    min_confidence: float = 0.8

    def __post_init__(self) -> None:
        if not (self.min_gain >= 0 and math.isfinite(self.min_gain)):
            raise ConfigError(
                f"hysteresis min_gain = {self.min_gain!r} must be >= 0, e.g. 0.05 (5%)",
                field="min_gain",
            )
        if not (self.min_dwell_seconds >= 0 and math.isfinite(self.min_dwell_seconds)):
            raise ConfigError(
                f"hysteresis min_dwell_seconds = {self.min_dwell_seconds!r} must be >= 0, "
                "e.g. 1800",
                field="min_dwell_seconds",
            )
        if self.max_changes_per_hour < 1:
            raise ConfigError(
                f"hysteresis max_changes_per_hour = {self.max_changes_per_hour!r} must be >= 1",
                field="max_changes_per_hour",
            )
        if not (0 <= self.min_confidence <= 1):
            raise ConfigError(
                f"hysteresis min_confidence = {self.min_confidence!r} must lie in [0, 1], e.g. 0.8",
                field="min_confidence",
            )


@dataclass(frozen=True)
class HysteresisState:
    """Per class: the k in force and when it last changed (times of the last hour's changes,
    or of dry-run proposals when ``proposed``: they pace proposals the same way)."""

    current_k: int | None = None
    last_change: float | None = None
    changes: tuple[float, ...] = ()
    #: the last "change" was a dry-run proposal (nothing deployed)
    proposed: bool = False
    #: the batch-size schedule in force with ``current_k`` (None: one k at every batch size)
    current_schedule: tuple[ScheduleEntry, ...] | None = None
    #: since when every recommendation has claimed a gain of at least SUSTAINED_SHARE of
    #: ``min_gain`` over the configuration in force (None: not now)
    small_gain_since: float | None = None


#: A gain below ``min_gain`` but at least this share of it passes once every recommendation
#: has claimed it for SUSTAINED_DWELLS x ``min_dwell_seconds`` (and the other checks pass): a
#: restart costs a minute or two of one replica, and 1.5% over the following hours is worth
#: more; a tie that flips on noise never holds that long.
SUSTAINED_SHARE = 0.5
SUSTAINED_DWELLS = 4.0


def _norm(
    k: int | None, schedule: tuple[ScheduleEntry, ...] | None
) -> tuple[int | None, tuple[ScheduleEntry, ...] | None]:
    """A configuration as a comparable value: a schedule that runs one k everywhere is k."""
    if not k or not schedule or all(e[2] == k for e in schedule):
        return (k, None)
    return (k, tuple(schedule))


def _describe(k: int | None, schedule: tuple[ScheduleEntry, ...] | None) -> str:
    if k is None:
        return "the current k"
    if _norm(k, schedule)[1] is None:
        return f"k = {k}"
    return f"k = {k} with its batch-size schedule"


def gate(
    rec: Recommendation,
    state: HysteresisState,
    *,
    now: float,
    config: HysteresisConfig | None = None,
    drifting: bool = False,
) -> tuple[Recommendation, HysteresisState]:
    """Decide whether ``rec`` may be acted on; return it with the verdict and the new state.

    The new state assumes an allowed change is applied; ``state.current_k`` (when set)
    overrides the recommendation's current k. With a configuration (``rec.config``, load
    evidence) the schedule counts too: a schedule-only change needs ``min_gain`` over the
    current configuration's speedup like a change of k.
    """
    cfg = config or HysteresisConfig()
    current = state.current_k if state.current_k is not None else rec.current_k
    recent = tuple(t for t in state.changes if now - t < 3600.0)
    state = replace(state, current_k=current, changes=recent)
    target = rec.recommended_k
    current_schedule = state.current_schedule
    target_schedule = rec.config.schedule if rec.config is not None else current_schedule
    same_k = current is not None and target == current
    if same_k and _norm(target, target_schedule) == _norm(current, current_schedule):
        return with_change_allowed(rec, False, rec.reason), replace(state, small_gain_since=None)
    blocked = ""
    gain = rec.gain
    if rec.predicted_speedup_recommended is None:  # no evidence: the reason says so already
        return with_change_allowed(rec, False, rec.reason), state
    small = gain is not None and SUSTAINED_SHARE * cfg.min_gain <= gain < cfg.min_gain
    since = (
        (state.small_gain_since if state.small_gain_since is not None else now) if small else None
    )
    state = replace(state, small_gain_since=since)
    sustained = (
        since is not None
        and cfg.min_gain > 0
        and now - since >= SUSTAINED_DWELLS * max(cfg.min_dwell_seconds, 60.0)
    )
    note = ""
    if same_k and gain is None:
        blocked = "the current configuration's speedup is unknown: a schedule change is unpriced"
    elif gain is not None and gain < cfg.min_gain and not sustained:
        blocked = f"predicted gain {gain:+.1%} is below the {cfg.min_gain:.0%} threshold"
        if since is not None:
            need = SUSTAINED_DWELLS * max(cfg.min_dwell_seconds, 60.0) - (now - since)
            blocked += f" (taken if it holds {need:.0f} s more)"
    elif rec.confidence < cfg.min_confidence:
        blocked = f"confidence {rec.confidence:.2f} is below {cfg.min_confidence:.2f}"
    elif drifting:
        blocked = "alpha is drifting; the window still mixes the old and new regimes"
    elif state.last_change is not None and now - state.last_change < cfg.min_dwell_seconds:
        wait = cfg.min_dwell_seconds - (now - state.last_change)
        what = "proposal (dry-run)" if state.proposed else "change"
        blocked = f"last {what} {now - state.last_change:.0f} s ago; dwell {wait:.0f} s more"
    elif len(recent) >= cfg.max_changes_per_hour:
        what = "proposals (dry-run)" if state.proposed else "changes"
        blocked = f"{len(recent)} {what} in the last hour (cap {cfg.max_changes_per_hour})"
    if not blocked and gain is not None and gain < cfg.min_gain:  # taken: it held
        note = (
            f"; a gain of {gain:+.1%}, below the {cfg.min_gain:.0%} threshold, claimed for "
            f"{(now - since) / 3600.0 if since is not None else 0.0:.1f} h"
        )
    if blocked:
        return with_change_allowed(
            rec,
            False,
            f"{rec.reason}; hold {_describe(current, current_schedule)}: {blocked}",
        ), state
    new_state = HysteresisState(
        current_k=target,
        last_change=now,
        changes=(*recent, now),
        current_schedule=None if target == 0 or not target_schedule else tuple(target_schedule),
    )
    return with_change_allowed(rec, True, rec.reason + note), new_state


class HysteresisGate:
    """The per-class states of :func:`gate`, for a controller that keeps them in memory."""

    def __init__(self, config: HysteresisConfig | None = None) -> None:
        self.config = config or HysteresisConfig()
        self.states: dict[str, HysteresisState] = {}

    def __call__(
        self, rec: Recommendation, *, now: float, drifting: bool = False
    ) -> Recommendation:
        state = self.states.get(rec.class_name, HysteresisState())
        out, self.states[rec.class_name] = gate(
            rec, state, now=now, config=self.config, drifting=drifting
        )
        return out
