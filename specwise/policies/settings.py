"""Settings -> ``PolicyConfig``: the one place ``run``, ``recommend`` and ``report`` build it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from specwise.policies.speedup_policy import PolicyConfig

if TYPE_CHECKING:
    from specwise.config import SpecwiseConfig

__all__ = ["DEFAULT_COST", "policy_config"]

#: The draft cost of a class nobody priced (an EAGLE-style head).
DEFAULT_COST = 0.05


def policy_config(
    config: SpecwiseConfig | None,
    class_name: str,
    *,
    cost: float | None = None,
    k_max: int | None = None,
    verify_slope: float | None = None,
) -> PolicyConfig:
    """The policy of one class from ``[policy]`` and its ``[[classes]]`` entry (defaults
    without a config). ``cost``, ``k_max`` and ``verify_slope`` (command-line overrides) win
    over the config; a class the config does not declare is priced at ``DEFAULT_COST``."""
    settings = config.class_settings(class_name) if config is not None else None
    if cost is None:
        cost = settings.cost if settings is not None else DEFAULT_COST
    if verify_slope is None and config is not None and config.policy.verify_slope > 0:
        verify_slope = config.policy.verify_slope
    if config is None:
        return PolicyConfig(
            cost=cost, k_max=k_max if k_max is not None else 8, verify_cost=verify_slope
        )
    pol = config.policy
    return PolicyConfig(
        cost=cost,
        k_max=k_max if k_max is not None else pol.k_max,
        verify_cost=verify_slope,
        plateau=pol.tolerance,
        off=pol.off_mode,
        max_batch_size=pol.max_batch_size,
        min_gain=pol.min_gain,
        schedules=pol.schedules,
        edge_margin=pol.edge_margin,
        min_band_share=pol.min_band_share,
        load_horizon=pol.load_horizon,
    )
