"""Estimation: from counter deltas to an effective acceptance rate alpha with its interval.

The estimator (positions MLE with a Beta interval), the rolling window it runs over, the
drift detector that restarts it on a regime change, and the fit check of the i.i.d. model.
Public names: :class:`Estimate`, :class:`EstimatorConfig`, :class:`WindowCounts`,
:func:`estimate_delta`, :func:`estimate_counts`, :func:`alpha_trials`, :func:`short_draft_alpha`,
:class:`RollingEstimator`, :class:`DriftConfig`, :class:`DriftDetector`, :class:`FitCheck`,
:func:`check_iid_fit`, :func:`tail_lengths`; the cost side (docs/design.md#the-cost-side):
:class:`StepObservation`, :func:`observation_from_delta`, :func:`observation_problem`,
:class:`StepCostFit`, :func:`fit_step_cost`, :class:`MeasuredSpeedup`,
:func:`measured_speedup`, :class:`LoadWindow`.
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
from specwise.estimation.load_window import LoadWindow
from specwise.estimation.rolling import RollingEstimator
from specwise.estimation.step_fit import (
    MeasuredSpeedup,
    StepCostFit,
    StepObservation,
    fit_step_cost,
    measured_speedup,
    observation_from_delta,
    observation_problem,
)

__all__ = [
    "DriftConfig",
    "DriftDetector",
    "Estimate",
    "EstimatorConfig",
    "FitCheck",
    "LoadWindow",
    "MeasuredSpeedup",
    "RollingEstimator",
    "StepCostFit",
    "StepObservation",
    "WindowCounts",
    "alpha_trials",
    "check_iid_fit",
    "estimate_counts",
    "estimate_delta",
    "fit_step_cost",
    "measured_speedup",
    "observation_from_delta",
    "observation_problem",
    "short_draft_alpha",
    "tail_lengths",
]
