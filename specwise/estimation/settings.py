"""Settings -> ``EstimatorConfig``: the one place ``run``, ``recommend`` and ``report`` build it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from specwise.estimation.estimator import EstimatorConfig

if TYPE_CHECKING:
    from specwise.config import SpecwiseConfig

__all__ = ["estimator_config"]


def estimator_config(
    config: SpecwiseConfig | None, *, min_drafts: float | None = None
) -> EstimatorConfig:
    """The ``[estimator]`` settings as an ``EstimatorConfig`` (defaults without a config);
    ``min_drafts`` (a command-line override) wins over the config."""
    if config is None:
        base = EstimatorConfig()
    else:
        est = config.estimator
        base = EstimatorConfig(
            window_seconds=est.window,
            mode=est.mode,
            half_life_seconds=est.half_life,
            min_drafts=est.min_drafts,
        )
    if min_drafts is None:
        return base
    return EstimatorConfig(
        window_seconds=base.window_seconds,
        mode=base.mode,
        half_life_seconds=base.half_life_seconds,
        min_drafts=min_drafts,
    )
