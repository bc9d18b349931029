"""Batch-size schedules in vLLM's format, the --speculative-config object, cost presets."""

from __future__ import annotations

import pytest

from specwise.errors import ConfigError
from specwise.policies import (
    DRAFTER_COSTS,
    compress_schedule,
    drafter_cost,
    schedule_k_at,
    speculative_config,
    validate_schedule,
)


def test_compress_and_look_up() -> None:
    entries = compress_schedule([3, 3, 3, 1, 1, 0])
    assert entries == ((1, 3, 3), (4, 5, 1), (6, 6, 0))
    assert [schedule_k_at(entries, b) for b in (1, 3, 4, 6, 500)] == [3, 3, 1, 0, 0]


def test_vllm_documented_example_is_valid() -> None:
    example = [[1, 64, 3], [65, 128, 1], [129, 512, 0]]
    assert validate_schedule(example, 3) == ((1, 64, 3), (65, 128, 1), (129, 512, 0))
    assert schedule_k_at(validate_schedule([[1, 4, 2], [9, 16, 1]]), 6) == 2  # a gap reuses


@pytest.mark.parametrize(
    ("entries", "needle"),
    [
        ([[2, 4, 1]], "must start at 1"),
        ([[1, 4, 1], [3, 8, 0]], "starts after the previous end"),
        ([[1, 4, 5]], "0..num_speculative_tokens"),
        ([[1, 4]], "three whole numbers"),
        ([], "empty"),
    ],
)
def test_invalid_schedules(entries: list[list[int]], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        validate_schedule(entries, 3)


def test_speculative_config_object() -> None:
    cfg = speculative_config("eagle3", 3, ((1, 64, 3), (65, 512, 0)), model="m")
    assert cfg == {
        "method": "eagle3",
        "model": "m",
        "num_speculative_tokens": 3,
        "num_speculative_tokens_per_batch_size": [[1, 64, 3], [65, 512, 0]],
    }
    with pytest.raises(ConfigError, match="restart without that flag"):
        speculative_config("ngram", 0)


def test_cost_presets() -> None:
    assert drafter_cost("ngram") == 0.0
    assert drafter_cost("EAGLE3") == 0.05
    assert drafter_cost("deepseek_mtp") == DRAFTER_COSTS["mtp"]
    assert 0.2 <= drafter_cost("draft_model") <= 0.5
    assert drafter_cost("0.12") == 0.12
    assert drafter_cost(0.3) == 0.3
    with pytest.raises(ConfigError, match="'medusa' is neither a number nor a known method"):
        drafter_cost("medusa")
    with pytest.raises(ConfigError, match="finite number >= 0"):
        drafter_cost(-1)
