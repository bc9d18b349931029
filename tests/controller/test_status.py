"""The controller's status table and /recommendations name the recommended k, with the exact
maximiser beside it where they differ (a real tick over a simulated fleet on 127.0.0.1)."""

from __future__ import annotations

import requests

from specwise.collectors.scrape import ScrapeSource
from specwise.commands.status import format_status, k_text
from specwise.config import parse_config
from specwise.controller.actuators import DryRunActuator
from specwise.controller.loop import Controller, class_config_from
from specwise.controller.state import ClassStatus
from specwise.model import optimal_k, recommended_k
from specwise.sim.fleet import SimFleet, SimServer
from specwise.sim.scenarios import get_scenario


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_k_text_names_the_exact_maximum_only_where_it_differs() -> None:
    assert k_text(ClassStatus("a", 0.05, 3, 5, optimal_k=6)) == "3 -> 5 (max 6)"
    assert k_text(ClassStatus("a", 0.05, 5, 5, optimal_k=6)) == "5 (max 6)"
    assert k_text(ClassStatus("a", 0.05, 3, 5, optimal_k=5)) == "3 -> 5"
    assert k_text(ClassStatus("a", 0.05, 3, None)) == "3 -> ?"


def test_controller_status_shows_the_recommended_k_and_the_exact_maximum() -> None:
    clock = Clock()
    scenario = get_scenario("demo")
    fleet = SimFleet(scenario, clock=clock, seed=11, restart_delay=120)
    with SimServer(fleet) as server, requests.Session() as session:
        config = parse_config(
            {
                "controller": {"interval": 1, "stale_after": "5m"},
                "source": {"urls": server.urls, "timeout": 2},
                "estimator": {"window": "10m", "min_drafts": 200},
                "policy": {"k_max": 8},
                "classes": [
                    {"name": c.name, "cost": c.cost, "k": c.initial_k} for c in scenario.classes
                ],
            }
        )
        controller = Controller(
            config,
            source=ScrapeSource(server.urls, session=session, timeout=2),
            actuator=DryRunActuator(),
            clock=clock,
            classes=class_config_from(config),
        )
        for _ in range(8):
            clock.t += 60.0
            controller.step()
    state = controller.state()
    code = next(c for c in state.classes if c.name == "code")  # alpha 0.82, c 0.05
    # the plateau rule gives 7; from the deployed 3 the step bound may stop it earlier
    assert code.recommended_k is not None
    assert code.deployed_k == 3
    assert 3 < code.recommended_k <= recommended_k(0.82, 0.05, k_max=8) == 7
    assert code.optimal_k == optimal_k(0.82, 0.05, 8) == 8
    assert state.to_json()["classes"][0]["optimal_k"] is not None
    row = next(line for line in format_status(state).splitlines() if line.startswith("code"))
    assert f"3 -> {code.recommended_k} (max 8)" in row
