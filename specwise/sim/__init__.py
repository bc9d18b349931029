"""Simulation: a fleet of simulated vLLM engines serving V1-format ``/metrics``
(:mod:`.fleet`), the scenarios they play (:mod:`.scenarios`), and closed-loop runs of the
controller against them, with the oracle and fixed-k baselines (:mod:`.closed_loop`)."""

from __future__ import annotations

from specwise.sim.fleet import SimActuator, SimFleet, SimServer, SimSource
from specwise.sim.scenarios import SCENARIOS, ClassScenario, Scenario, get_scenario

__all__ = [
    "SCENARIOS",
    "ClassScenario",
    "Scenario",
    "SimActuator",
    "SimFleet",
    "SimServer",
    "SimSource",
    "get_scenario",
]
