"""Closed loop under load: specwise steering a simulated fleet whose best k changes with
the batch size, scored against static configurations in the same run (issue 14)."""

from __future__ import annotations

from specwise.sim.closed_loop import best_static_k, run_specwise
from specwise.sim.scenarios import SCENARIOS


def test_specwise_beats_the_best_static_k_over_a_peak_hours_day() -> None:
    # the simulated peak-hours day (k = 4 pays at night, speculation loses at the afternoon
    # peak), the controller ticking every 5 simulated minutes to keep the test short
    scenario = SCENARIOS["peak-hours"]
    sw = run_specwise(scenario, tick=300.0)
    best = best_static_k(scenario)
    gain = sw.tokens_per_target_time / best.tokens_per_target_time - 1.0
    assert gain >= 0.05, (gain, sw.describe(), best.describe())
    # it answered the peak with a schedule that keeps k at the quiet batch sizes
    ((_, config),) = sw.configs
    assert config.k_at(3) >= 3, config.describe()
    assert config.k_at(40) <= 1, config.describe()
    assert sw.restarts <= 6
