"""Policies: from an estimate to a k (0 included), a schedule, and when to act on it.

:mod:`specwise.policies.off` owns what k = 0 means and how it is applied.
"""

from __future__ import annotations

from specwise.policies.hysteresis import HysteresisConfig, HysteresisGate, HysteresisState, gate
from specwise.policies.load_policy import (
    BandPrice,
    ConfigRecommendation,
    LoadEvidence,
    recommend_config,
)
from specwise.policies.presets import DRAFTER_COSTS, drafter_cost
from specwise.policies.schedule import (
    ScheduleEntry,
    compress_schedule,
    schedule_k_at,
    speculative_config,
    validate_schedule,
)
from specwise.policies.speedup_policy import (
    BatchVerifyCost,
    OffMode,
    PolicyConfig,
    Recommendation,
    recommend,
    with_change_allowed,
)

__all__ = [
    "DRAFTER_COSTS",
    "BandPrice",
    "BatchVerifyCost",
    "ConfigRecommendation",
    "HysteresisConfig",
    "HysteresisGate",
    "HysteresisState",
    "LoadEvidence",
    "OffMode",
    "PolicyConfig",
    "Recommendation",
    "ScheduleEntry",
    "compress_schedule",
    "drafter_cost",
    "gate",
    "recommend",
    "recommend_config",
    "schedule_k_at",
    "speculative_config",
    "validate_schedule",
    "with_change_allowed",
]
