"""Closed-loop control quality on a few scenarios (the full suite is bench/bench_control.py)."""

from __future__ import annotations

import pytest

from specwise.sim.closed_loop import run_fixed, run_oracle, run_specwise
from specwise.sim.scenarios import get_scenario


def test_oracle_beats_every_fixed_k() -> None:
    scenario = get_scenario("drift")
    oracle = run_oracle(scenario).tokens_per_target_time
    for k in (0, 3, 5, 8):
        assert run_fixed(scenario, k).tokens_per_target_time <= oracle * 1.001


def test_losing_drafter_is_turned_off() -> None:
    scenario = get_scenario("losing")
    sw = run_specwise(scenario)
    off = run_fixed(scenario, 0)
    assert sw.tokens_per_target_time >= off.tokens_per_target_time * 0.98
    assert sw.restarts == 1  # one restart without speculation, then nothing


def test_broken_drafter_is_caught() -> None:
    scenario = get_scenario("drafter-failure")
    sw = run_specwise(scenario)
    k5 = run_fixed(scenario, 5)
    oracle = run_oracle(scenario)
    assert sw.tokens_per_target_time >= 0.95 * oracle.tokens_per_target_time
    assert sw.tokens_per_target_time >= 1.08 * k5.tokens_per_target_time
    assert sw.restarts_per_hour <= 1.0


@pytest.mark.parametrize("name", ["mix-change", "correlated"])
def test_heterogeneous_acceptance_reaches_the_oracle(name: str) -> None:
    scenario = get_scenario(name)
    sw = run_specwise(scenario)
    oracle = run_oracle(scenario)
    assert sw.tokens_per_target_time >= 0.95 * oracle.tokens_per_target_time


def test_short_draft_ngram_class_reaches_the_oracle() -> None:
    """The n-gram scenario's drafts are mostly shorter than k; the controller estimates
    alpha from them (sum_j P_(j-1)/alpha^j = T), follows the drop, and stays near the
    oracle, which prices the true draft lengths."""
    scenario = get_scenario("ngram")
    sw = run_specwise(scenario)
    oracle = run_oracle(scenario)
    assert sw.tokens_per_target_time >= 0.95 * oracle.tokens_per_target_time
    assert sw.tokens_per_target_time > run_fixed(scenario, 1).tokens_per_target_time
    assert sw.restarts_per_hour <= 1.0
