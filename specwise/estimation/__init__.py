"""Estimation: from counter deltas to an effective acceptance rate alpha with its interval.

The estimator (positions MLE with a Beta interval), the rolling window it runs over, the
drift detector that restarts it on a regime change, and the fit check of the i.i.d. model.
Public names: :class:`Estimate`, :class:`EstimatorConfig`, :class:`WindowCounts`,
:func:`estimate_delta`, :func:`estimate_counts`, :func:`alpha_trials`, :func:`short_draft_alpha`,
:class:`RollingEstimator`, :class:`DriftConfig`, :class:`DriftDetector`, :class:`FitCheck`,
:func:`check_iid_fit`, :func:`tail_lengths`.
"""

from __future__ import annotations

from specwise.estimation.drift import DriftConfig, DriftDetector
from specwise.estimation.estimator import (
    Estimate,
    EstimatorConfig,
    WindowCounts,
    alpha_trials,
    estimate_counts,
    estimate_delta,
    short_draft_alpha,
)
from specwise.estimation.fit import FitCheck, check_iid_fit, tail_lengths
from specwise.estimation.rolling import RollingEstimator

__all__ = [
    "DriftConfig",
    "DriftDetector",
    "Estimate",
    "EstimatorConfig",
    "FitCheck",
    "RollingEstimator",
    "WindowCounts",
    "alpha_trials",
    "check_iid_fit",
    "estimate_counts",
    "estimate_delta",
    "short_draft_alpha",
    "tail_lengths",
]
