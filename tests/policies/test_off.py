"""specwise.policies.off: the one home of k = 0 (its forms, configs and read-back)."""

from __future__ import annotations

import pytest

from specwise.policies.off import (
    ALL_OFF_SCHEDULE,
    choose_off,
    deployment_config,
    effective_k,
    is_schedule_off,
    off_on_purpose,
    off_reason,
    speculative_config_for,
)


@pytest.mark.parametrize(
    ("mode", "schedule", "expected"),
    [
        ("restart", None, ("restart", None)),
        ("auto", None, ("restart", None)),
        ("schedule", None, ("schedule", 0.86)),
        ("auto", ((1, 8, 2), (9, 64, 0)), ("schedule", None)),  # drafts somewhere: no overhead
        ("auto", ((1, 64, 0),), ("restart", None)),
    ],
)
def test_choose_off(
    mode: str, schedule: tuple[tuple[int, int, int], ...] | None, expected: tuple[str, object]
) -> None:
    got_mode, cost, speedup = choose_off(mode, schedule, overhead=0.14)  # type: ignore[arg-type]
    assert (got_mode, speedup if speedup is None else round(speedup, 2)) == expected
    assert cost


def test_deployment_config_per_form() -> None:
    template = {"method": "eagle", "model": "m"}
    assert deployment_config(template, k=0, off_mode="restart", schedule=None, keep_k=3) is None
    off = deployment_config(template, k=0, off_mode="schedule", schedule=None, keep_k=3)
    assert off == {
        **template,
        "num_speculative_tokens": 3,
        "num_speculative_tokens_per_batch_size": [list(ALL_OFF_SCHEDULE[0])],
    }
    assert is_schedule_off(off)
    on = deployment_config(template, k=4, off_mode=None, schedule=((1, 8, 4), (9, 64, 1)), keep_k=3)
    assert on is not None
    assert on["num_speculative_tokens"] == 4
    assert not is_schedule_off(on)
    assert not is_schedule_off(speculative_config_for(template, 2))
    assert not is_schedule_off(None)


def test_read_back_and_reasons() -> None:
    assert effective_k(3, schedule_off=True) == 0
    assert effective_k(3, schedule_off=False) == 3
    assert effective_k(None, schedule_off=True) is None
    assert off_on_purpose(0, sources_answered=True)
    assert not off_on_purpose(0, sources_answered=False)
    assert not off_on_purpose(3, sources_answered=True)
    assert off_reason("r", deployed=3, evidence=True, recommended_k=0) is None
    assert "as the last evidence says" in str(
        off_reason("r", deployed=0, evidence=True, recommended_k=0)
    )
    assert "re-enable probe" in str(off_reason("r", deployed=0, evidence=False, recommended_k=0))
