"""The probe scenarios close the loop: a repaired or replaced drafter comes back."""

from __future__ import annotations

import dataclasses

from specwise.controller.loop import Controller, class_config_from
from specwise.sim.closed_loop import T0, closed_loop_config, run_specwise
from specwise.sim.fleet import SimActuator, SimFleet, SimSource
from specwise.sim.scenarios import HOUR, PROBE_SCENARIOS, SCENARIOS, get_scenario


def test_probe_scenarios_are_in_the_suite() -> None:
    assert set(PROBE_SCENARIOS) == {"repair", "new-drafter", "replicas"}
    assert all(SCENARIOS[n] is s for n, s in PROBE_SCENARIOS.items())


def test_repair_comes_back_only_with_probes() -> None:
    # the first 9 h of the day: fixed at 5 h, probed at about 7 h (keeps the suite quick)
    scenario = dataclasses.replace(get_scenario("repair"), duration=9 * HOUR)
    on = run_specwise(scenario)
    off = run_specwise(scenario, config=closed_loop_config(scenario, probes={"enabled": False}))
    assert on.tokens_per_target_time > 1.2 * off.tokens_per_target_time
    assert dict(on.configs)["code"].k > 0  # back on
    assert dict(off.configs)["code"].k == 0  # off for ever without probes


def test_new_drafter_class_off_from_the_start_is_re_measured() -> None:
    scenario = dataclasses.replace(get_scenario("new-drafter"), duration=9 * HOUR)
    on = run_specwise(scenario)
    off = run_specwise(scenario, config=closed_loop_config(scenario, probes={"enabled": False}))
    assert off.tokens_per_target_time == 1.0  # never probed: plain decoding all day
    assert on.tokens_per_target_time > 1.1


def test_replicas_probe_one_canary_then_roll_out() -> None:
    scenario = get_scenario("replicas")
    t = [T0]
    fleet = SimFleet(scenario, clock=lambda: t[0], seed=0)
    cfg = closed_loop_config(scenario)
    ctl = Controller(
        cfg,
        source=SimSource(fleet),
        actuator=SimActuator(fleet),
        clock=lambda: t[0],
        classes=class_config_from(cfg),
    )
    seen_canary = False
    while t[0] < T0 + 8 * HOUR:
        t[0] += 60.0
        ctl.step()
        running = ctl.probes.states.get("code")
        if running is not None and running.running is not None:
            ks = fleet.deployed_ks("code")
            assert sum(k > 0 for k in ks) == 1, ks  # one canary, the others keep k = 0
            seen_canary = True
    assert seen_canary
    first = ctl.probes.states["code"].history[0]
    assert first.instance == "sim-0"
    assert first.cost.replica_share == 0.25
    assert first.outcome == "pays"
    assert "rolled out to every replica" in first.result
    assert "the others kept k = 0 over the same minutes" in first.result
    # measured side by side with the others' plain decoding (their load-only counters):
    # the truth at k = 2, alpha 0.75, cost 0.05 is (1 + 0.75 + 0.5625) / 1.1 = 2.10
    assert first.canary_ratio is not None
    assert abs(first.canary_ratio - 2.10) < 0.15
    assert "it delivered 2.1" in first.result
    assert min(fleet.deployed_ks("code")) > 0
