"""Drafter cost presets: c = drafter step time / target step time, by speculative method.

Ballparks (docs/design.md): n-gram and suffix lookup cost about nothing, EAGLE-style
heads and MTP layers about 0.05 of a target step, a separate small draft model 0.2-0.5
(0.3 here). Measure your own when you can and pass it instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from specwise.errors import ConfigError

__all__ = ["DRAFTER_COSTS", "drafter_cost"]

#: vLLM ``speculative_config.method`` -> draft cost c (overridable per class in config).
DRAFTER_COSTS: Mapping[str, float] = {
    "ngram": 0.0,
    "ngram_gpu": 0.0,
    "suffix": 0.0,
    "eagle": 0.05,
    "eagle3": 0.05,
    "mtp": 0.05,
    "deepseek_mtp": 0.05,
    "dflash": 0.05,
    "dspark": 0.05,
    "draft_model": 0.3,
}


def drafter_cost(value: str | float, *, presets: Mapping[str, float] = DRAFTER_COSTS) -> float:
    """A cost from a number (``0.12``, ``"0.12"``) or a method name (``"eagle3"``, ``"*_mtp"``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        cost = float(value)
    else:
        text = str(value).strip().lower()
        try:
            cost = float(text)
        except ValueError:
            if text in presets:
                return float(presets[text])
            if text.endswith("_mtp"):
                return float(presets.get("mtp", 0.05))
            raise ConfigError(
                f"draft cost {value!r} is neither a number nor a known method; pass c >= 0 "
                f"(e.g. 0.05) or one of {', '.join(sorted(presets))}",
                field="cost",
            ) from None
    if not (cost >= 0.0) or math.isinf(cost):
        raise ConfigError(
            f"draft cost {value!r} must be a finite number >= 0 (drafter step / target step, "
            "e.g. 0.05)",
            field="cost",
        )
    return cost
