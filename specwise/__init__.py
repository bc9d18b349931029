"""specwise: does vLLM speculative decoding pay here, and which k (0 included) should it run?"""

from __future__ import annotations

from specwise.errors import (
    ActuatorError,
    AlertDeliveryError,
    ConfigError,
    DataError,
    ModelInputError,
    ParseError,
    ReportError,
    SourceError,
    SpecwiseError,
)
from specwise.estimation.step_fit import (
    MeasuredSpeedup,
    StepCostFit,
    fit_step_cost,
    measured_speedup,
)
from specwise.model import (
    VerifyCost,
    alpha_from_acceptance_length,
    alpha_from_acceptance_rate,
    expected_tokens_from_survival,
    expected_tokens_per_verify,
    expected_tokens_two_state,
    marginal_value,
    mixture_survival,
    optimal_k,
    optimal_k_from_survival,
    recommended_k,
    recommended_k_from_speedups,
    saturating_verify_cost,
    speedup,
    speedup_from_survival,
    survival_curve,
    survival_two_state,
    verify_cost_at,
)
from specwise.step_cost import BatchDistribution, SpecConfig, StepCost

__version__ = "0.1.0"

__all__ = [
    "ActuatorError",
    "AlertDeliveryError",
    "BatchDistribution",
    "ConfigError",
    "DataError",
    "MeasuredSpeedup",
    "ModelInputError",
    "ParseError",
    "ReportError",
    "SourceError",
    "SpecConfig",
    "SpecwiseError",
    "StepCost",
    "StepCostFit",
    "VerifyCost",
    "__version__",
    "alpha_from_acceptance_length",
    "alpha_from_acceptance_rate",
    "expected_tokens_from_survival",
    "expected_tokens_per_verify",
    "expected_tokens_two_state",
    "fit_step_cost",
    "marginal_value",
    "measured_speedup",
    "mixture_survival",
    "optimal_k",
    "optimal_k_from_survival",
    "recommended_k",
    "recommended_k_from_speedups",
    "saturating_verify_cost",
    "speedup",
    "speedup_from_survival",
    "survival_curve",
    "survival_two_state",
    "verify_cost_at",
]
