"""The demo's closing lines: what specwise gained over the configuration it started from and
over the best static k, measured on the simulated fleet; and the lines that show the
load-varying class's answer change with its load."""

from __future__ import annotations

import dataclasses

import pytest

from specwise.commands.demo import load_changes
from specwise.commands.demo_score import demo_score, score_lines
from specwise.controller.state import ClassStatus, ControllerState
from specwise.sim.closed_loop import best_static_k, run_config
from specwise.sim.fleet import SimFleet
from specwise.sim.scenarios import get_scenario
from specwise.step_cost import SpecConfig

T0 = 1_800_000_000.0


def _fleet(minutes: float, configs: dict[str, SpecConfig] | None = None) -> SimFleet:
    clock = [T0]
    fleet = SimFleet(get_scenario("demo"), clock=lambda: clock[0], seed=3, restart_delay=0.0)
    for name, config in (configs or {}).items():
        fleet.set_config(name, config, T0)
    clock[0] = T0 + minutes * 60.0
    fleet.advance(clock[0])
    return fleet


def test_a_fleet_left_alone_scores_as_its_starting_configuration() -> None:
    """Nothing changed: the live fleet's score is the starting configuration's closed-loop
    score (same scenario, same simulated time), and the gain over it is zero."""
    scenario = get_scenario("demo")
    score = demo_score(_fleet(50), scenario, seconds=50 * 60.0)
    assert score.minutes == pytest.approx(50)
    for row in score.classes:
        assert row.specwise == pytest.approx(row.start, rel=0.02), row
    assert score.total.specwise == pytest.approx(score.total.start, rel=0.02)
    docs = next(r for r in score.classes if r.name == "docs")
    assert docs.load_varying
    cut = dataclasses.replace(scenario, duration=50 * 60.0)
    best = best_static_k(cut)
    assert score.total.best_static == pytest.approx(best.tokens_per_target_time)
    lines = score_lines(score)
    assert lines[0].startswith("--- what specwise gained over 50 simulated minutes")
    assert "+0.0% tokens over the configuration it started from" in lines[-1]
    assert "against the best static k" in lines[-1]
    assert any(line.startswith("docs (its load moves between quiet and busy)") for line in lines)


def test_a_better_configuration_shows_as_a_gain() -> None:
    """Turning the losing drafter off from the start is what specwise does: the live score
    of that fleet beats the starting configuration by what the closed-loop run says."""
    scenario = get_scenario("demo")
    fleet = _fleet(30, {"summarize": SpecConfig(0)})
    score = demo_score(fleet, scenario, seconds=30 * 60.0)
    summarize = next(r for r in score.classes if r.name == "summarize")
    cut = dataclasses.replace(scenario, duration=30 * 60.0)
    one = dataclasses.replace(cut, classes=tuple(c for c in cut.classes if c.name == "summarize"))
    assert summarize.specwise == pytest.approx(
        run_config(one, SpecConfig(0)).tokens_per_target_time, rel=0.02
    )
    assert summarize.specwise > summarize.start * 1.3
    assert score.total.specwise > score.total.start
    assert "-" not in score_lines(score)[-1].split("tokens over")[0].split("delivered ")[1]


def _status(name: str, describe: str, k: int, mean: float) -> ClassStatus:
    return ClassStatus(
        name,
        0.2,
        4,
        k,
        load={
            "load_aware": True,
            "recommended": {"k": k, "describe": describe},
            "batch": {"mean": mean},
            "measured": {"value": 1.6 if mean < 10 else 0.8},
        },
    )


def test_the_load_varying_class_answer_is_printed_when_it_changes() -> None:
    answers: dict[str, str] = {}
    quiet = ControllerState(0.0, 1.0, 1, classes=(_status("docs", "k = 4", 4, 3.0),))
    busy = ControllerState(0.0, 2.0, 2, classes=(_status("docs", "off", 0, 48.0),))
    assert load_changes(quiet, {"docs"}, answers) == [
        "docs: mean batch 3 running requests, measured 1.60x at the deployed configuration: "
        "recommends k = 4"
    ]
    assert load_changes(quiet, {"docs"}, answers) == []  # unchanged: said once
    assert load_changes(busy, {"docs"}, answers) == [
        "docs: mean batch 48 running requests, measured 0.80x at the deployed configuration: "
        "recommends off (no drafter)"
    ]
    assert load_changes(busy, {"other"}, {}) == []  # only the load-varying classes


def test_the_demo_serves_a_plain_replica_of_its_load_varying_class() -> None:
    """The docs class gets a replica of the same model without speculation, matched into the
    same class, so T(0, B) is measured and the class is priced with its load."""
    from pathlib import Path

    from specwise.commands.demo import demo_config, demo_scenario

    scenario = demo_scenario()
    by_name = {c.name: c for c in scenario.classes}
    assert by_name["docs-plain"].initial_k == 0
    assert by_name["docs-plain"].batch == by_name["docs"].batch
    assert by_name["docs-plain"].step_cost == by_name["docs"].step_cost
    config = demo_config(["http://127.0.0.1:1/metrics"], Path("/nonexistent"))
    classes = {c.name: c for c in config.classes}
    assert "docs-plain" not in classes  # never actuated on its own
    assert classes["docs"].match == '{model_name=~"docs|docs-plain"}'
    assert classes["code"].match == ""
