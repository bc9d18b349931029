"""Probes in the controller: applied through the actuator, held, ended, persisted, exported."""

from __future__ import annotations

import dataclasses
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import requests

from specwise.cli import main
from specwise.collectors.snapshot import Snapshot
from specwise.commands.status import format_status
from specwise.config import SpecwiseConfig
from specwise.controller.actuators import DryRunActuator, FileActuator
from specwise.controller.decide import Decision
from specwise.controller.exporter import controller_registry
from specwise.controller.loop import Controller, class_config_from
from specwise.controller.wiring import start_exporter
from specwise.policies.hysteresis import HysteresisState
from specwise.policies.probes import ProbeCost, ProbePlan, ProbeRecord, ProbeState
from specwise.policies.speedup_policy import Recommendation
from specwise.sim.closed_loop import T0, closed_loop_config
from specwise.sim.fleet import SimActuator, SimFleet, SimSource
from specwise.sim.scenarios import HOUR, ClassScenario, Scenario, const, iid, step
from specwise.step_cost import SpecConfig

PROBES = {"backoff": "1h", "cap": "2h", "max_duration": "20m", "min_drafts": 1000}


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def repair(hours: float = 5.0) -> Scenario:
    """A drafter broken at the start (alpha 0.1), fixed after one hour (alpha 0.8)."""
    return Scenario(
        "repair-test",
        "broken, then fixed",
        hours * HOUR,
        (ClassScenario("code", iid(step(0.1, 0.8, HOUR)), cost=0.3, initial_k=3),),
    )


def build(
    scenario: Scenario,
    config: SpecwiseConfig,
    *,
    dry_run: bool = False,
    state_path: Path | None = None,
) -> tuple[Controller, SimFleet, Clock]:
    clock = Clock()
    fleet = SimFleet(scenario, clock=clock, seed=1, restart_delay=60.0)
    ctl = Controller(
        config,
        source=SimSource(fleet),
        actuator=DryRunActuator() if dry_run else SimActuator(fleet),
        clock=clock,
        classes=class_config_from(config),
        state_path=state_path,
    )
    return ctl, fleet, clock


def run(ctl: Controller, clock: Clock, until: float, tick: float = 60.0) -> list[int]:
    """Tick to ``until`` seconds after T0; the deployed k of "code" at every tick."""
    ks: list[int] = []
    while clock.t < T0 + until:
        clock.t += tick
        st = ctl.step()
        code = next((c for c in st.classes if c.name == "code"), None)
        ks.append(-1 if code is None or code.deployed_k is None else code.deployed_k)
    return ks


def probe_of(ctl: Controller) -> dict[str, Any]:
    code = next(c for c in ctl.state().classes if c.name == "code")
    assert code.probe is not None
    return dict(code.probe)


def test_a_class_turned_off_comes_back_after_its_drafter_is_fixed() -> None:
    cfg = closed_loop_config(repair(), probes=PROBES)
    ctl, fleet, clock = build(repair(), cfg)
    ks = run(ctl, clock, 5 * HOUR)
    assert 0 in ks[:60], "the broken drafter is turned off within the first hour"
    assert fleet.deployed_k("code") > 0, "a re-enable probe brought the fixed drafter back"
    results = probe_of(ctl)["results"]
    assert any(r["kind"] == "re-enable" and r["outcome"] == "pays" for r in results)
    # the first window after the re-enable (from the k = 0 engine's load-only counters) is
    # consistent evidence, not a data error (was: its positions counted 0, the window skipped)
    errors = {s.name: dict(s.errors) for s in ctl.state().sources if s.errors}
    assert not errors, errors
    # without probes the class stays off for ever (today's behaviour)
    off = closed_loop_config(repair(), probes={**PROBES, "enabled": False})
    ctl2, fleet2, clock2 = build(repair(), off)
    run(ctl2, clock2, 5 * HOUR)
    assert fleet2.deployed_k("code") == 0


def test_a_probe_that_loses_reverts_and_backs_off() -> None:
    broken = Scenario("broken", "", 6 * HOUR, (ClassScenario("code", iid(const(0.1)), 0.3, 3),))
    cfg = closed_loop_config(broken, probes=PROBES)
    ctl, fleet, clock = build(broken, cfg)
    ks = run(ctl, clock, 6 * HOUR)
    results = probe_of(ctl)["results"]
    losing = [r for r in results if r["outcome"] == "loses"]
    assert len(losing) >= 2, results
    assert fleet.deployed_k("code") == 0
    # backoff: the second probe starts at least twice as long after the first as the first
    # after the class settled; each probe ended early or by max_duration (20 min)
    assert losing[1]["started"] - losing[0]["ended"] >= 2 * HOUR - 120
    assert all(r["ended"] - r["started"] <= 20 * 60 + 60 for r in losing)
    probing = sum(1 for k in ks if k == 2)
    assert probing <= 0.2 * len(ks)  # bounded time at the probe k
    assert probe_of(ctl)["restarts_used"] == 2 * len(losing)


def test_dry_run_proposes_a_probe_and_never_runs_it() -> None:
    off = Scenario("off", "", 2 * HOUR, (ClassScenario("code", iid(const(0.8)), 0.05, 0),))
    cfg = closed_loop_config(off, probes=PROBES)
    ctl, fleet, clock = build(off, cfg, dry_run=True)
    run(ctl, clock, 600)
    ctl.probes.request("code")
    run(ctl, clock, 1200)
    assert fleet.deployed_k("code") == 0
    results = probe_of(ctl)["results"]
    assert [r["outcome"] for r in results] == ["proposed"]
    assert probe_of(ctl)["running"] is None
    assert probe_of(ctl)["restarts_used"] == 0


def test_an_undeclared_class_is_never_probed() -> None:
    off = Scenario("off", "", 2 * HOUR, (ClassScenario("code", iid(const(0.1)), 0.3, 2),))
    cfg = closed_loop_config(off, probes=PROBES)
    cfg = closed_loop_config(off, probes={**PROBES, "backoff": "10m", "cap": "10m"})
    undeclared = type(cfg)(
        cfg.controller, cfg.source, cfg.estimator, cfg.policy, cfg.actuator, cfg.alerts, (),
        probes=cfg.probes,
    )  # fmt: skip
    ctl, fleet, clock = build(off, undeclared)
    run(ctl, clock, 300)
    ctl.probes.request("code")
    run(ctl, clock, 2 * HOUR)
    assert fleet.deployed_k("code") == 2  # never actuated, never probed
    assert probe_of(ctl)["results"] == []
    assert "never probed" in probe_of(ctl)["reason"]


def test_history_persists_and_metrics_export_it(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    cfg = closed_loop_config(repair(3.0), probes=PROBES)
    ctl, _fleet, clock = build(repair(3.0), cfg, state_path=path)
    run(ctl, clock, 3 * HOUR)
    before = probe_of(ctl)
    assert before["results"], "a probe ran"
    again = Controller(
        cfg,
        source=SimSource(_fleet),
        actuator=SimActuator(_fleet),
        clock=clock,
        classes=class_config_from(cfg),
        state_path=path,
    )
    assert again.probes.states["code"].history == ctl.probes.states["code"].history
    assert again.probes.restarts["code"] == before["restarts_used"]
    clock.t += 60
    again.step()
    reg = controller_registry(again.state)
    last = before["results"][-1]
    got = reg.get_sample_value(
        "specwise_probe_results_total",
        {"class": "code", "kind": last["kind"], "outcome": last["outcome"]},
    )
    assert got is not None
    assert got >= 1
    assert reg.get_sample_value("specwise_probe_restarts_total", {"class": "code"}) == float(
        before["restarts_used"]
    )
    assert reg.get_sample_value("specwise_probe_budget_seconds", {"class": "code"}) == 0.05 * 86400


def test_post_probe_and_the_cli_trigger_a_probe_on_the_listen_address() -> None:
    off = Scenario("off", "", 2 * HOUR, (ClassScenario("code", iid(const(0.8)), 0.3, 0),))
    cfg = closed_loop_config(off, probes=PROBES)
    ctl, fleet, clock = build(off, cfg)
    run(ctl, clock, 600)
    server = start_exporter(ctl, "127.0.0.1", 0)
    try:
        url = server.url
        assert requests.get(f"{url}/probe?class=code", timeout=5).status_code == 405
        missing = requests.post(f"{url}/probe", timeout=5)
        assert missing.status_code == 400
        unknown = requests.post(f"{url}/probe", params={"class": "nope"}, timeout=5)
        assert unknown.status_code == 404
        assert unknown.text.strip() == (
            "class 'nope' is not declared in [[classes]] (only declared classes are probed); "
            "probe one of: code"
        )
        status, _out, err = run_cli(["probe", "nope", "--url", url])
        assert status == 1
        assert err.startswith("Error: class 'nope' is not declared")
        status, out, err = run_cli(["probe", "code", "--url", url])
        assert status == 0, err
        assert "probe of class 'code' requested" in out
    finally:
        server.stop()
    assert fleet.deployed_k("code") == 0
    run(ctl, clock, 720)
    assert fleet.deployed_k("code") == 2, "the requested probe runs on the next tick"
    probe = probe_of(ctl)
    assert probe["running"]["trigger"] == "requested (specwise probe / POST /probe)"
    assert "code" in format_status(ctl.state())
    assert "probe code: re-enable probe running at k = 2" in format_status(ctl.state())
    reg = controller_registry(ctl.state)
    assert (
        reg.get_sample_value(
            "specwise_probe_running", {"class": "code", "kind": "re-enable", "instance": ""}
        )
        == 1.0
    )


def test_cli_probe_without_a_controller_is_one_error_line() -> None:
    status, _out, err = run_cli(["probe", "code", "--url", "http://127.0.0.1:1"])
    assert status == 1
    assert err.startswith("Error: no specwise controller answered at http://127.0.0.1:1")
    assert len(err.strip().splitlines()) == 1


def test_canary_is_compared_with_the_other_replicas_over_the_same_minutes() -> None:
    scenario = Scenario(
        "c", "", HOUR, (ClassScenario("code", iid(const(0.8)), 0.05, 2, replicas=3),)
    )
    cfg = closed_loop_config(scenario, probes=PROBES)
    ctl, _fleet, _clock = build(scenario, cfg)
    cost = ProbeCost(restarts=2, seconds=1800.0, expected_loss=0.05, replica_share=1 / 3)
    probe = ProbeRecord("re-enable", 2, 0, 100.0, "m", cost, instance="a")

    def page(t: float, tokens: dict[str, float], seconds: float) -> None:
        ctl._last = {
            (("instance", i), ("model_name", "code")): Snapshot(
                labels={"model_name": "code", "instance": i},
                timestamp=t,
                drafts=0.0,
                draft_tokens=0.0,
                accepted=0.0,
                generation_tokens=n,
                itl_seconds_sum=seconds,
                itl_seconds_count=n,
            )
            for i, n in tokens.items()
        }

    page(160.0, {"b": 500.0, "c": 700.0}, 10.0)
    assert ctl.probes._canary_ratio(ctl, "code", probe) is None  # the canary is restarting
    page(170.0, {"a": 50.0, "b": 550.0, "c": 750.0}, 10.0)
    assert ctl.probes._canary_ratio(ctl, "code", probe) is None  # nothing counted yet
    page(230.0, {"a": 1850.0, "b": 1550.0, "c": 1750.0}, 20.0)
    # canary: 1800 tokens in 10 s of request time; the others: 2000 in 20 s
    assert ctl.probes._canary_ratio(ctl, "code", probe) == pytest.approx(1.8)


def test_a_probe_survives_a_controller_restart_and_ends_on_its_own_rules(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    broken = Scenario("b", "", 3 * HOUR, (ClassScenario("code", iid(const(0.1)), 0.3, 0),))
    cfg = closed_loop_config(broken, probes=PROBES)
    ctl, fleet, clock = build(broken, cfg, state_path=path)
    run(ctl, clock, 300)
    ctl.probes.request("code")
    run(ctl, clock, 360)
    assert ctl.probes.states["code"].running is not None
    assert fleet.deployed_k("code") == 2
    # a new controller process on the same state file and fleet
    again = Controller(
        cfg,
        source=SimSource(fleet),
        actuator=SimActuator(fleet),
        clock=clock,
        classes=class_config_from(cfg),
        state_path=path,
    )
    assert again.probes.states["code"].running == ctl.probes.states["code"].running
    run(again, clock, 360 + 25 * 60)
    last = again.probes.states["code"].history[-1]
    assert again.probes.states["code"].running is None
    assert last.outcome == "loses"
    assert last.ended is not None
    assert last.ended - last.started <= 20 * 60 + 60
    assert fleet.deployed_k("code") == 0


def test_a_failure_in_probing_is_counted_and_the_policy_still_decides() -> None:
    cfg = closed_loop_config(repair(1.0), probes=PROBES)
    ctl, fleet, clock = build(repair(1.0), cfg)

    def broken(*args: object, **kw: object) -> None:
        raise RuntimeError("injected")

    ctl.probes._view = broken  # type: ignore[method-assign,assignment]
    ks = run(ctl, clock, 1800)
    assert ctl.state().errors.get("internal", 0) >= 1
    assert "probing class 'code'" in ctl.state().last_error
    assert 0 in ks  # the losing drafter was still turned off by the policy
    assert fleet.deployed_k("code") == 0


def test_a_probe_deploys_its_single_k_even_when_the_policy_holds_a_schedule(
    tmp_path: Path,
) -> None:
    off = Scenario("off", "", HOUR, (ClassScenario("code", iid(const(0.8)), 0.05, 0),))
    cfg = closed_loop_config(off, probes=PROBES)
    clock = Clock()
    fleet = SimFleet(off, clock=clock, seed=1)
    ctl = Controller(
        cfg,
        source=SimSource(fleet),
        actuator=FileActuator(tmp_path),
        clock=clock,
        classes=class_config_from(cfg),
    )
    rec = Recommendation(
        class_name="code",
        current_k=0,
        recommended_k=4,
        predicted_speedup_current=1.0,
        predicted_speedup_recommended=1.5,
        schedule=((1, 8, 4), (9, 256, 0)),
        config=SpecConfig(4, ((1, 8, 4), (9, 256, 0))),
    )
    state = HysteresisState(0)
    decision = Decision(rec, 0, state, state, act=False, stale=False, hold="", reason="")
    assert ctl.probes._apply(ctl, "code", decision, 2, "", "probe", T0 + 60)
    doc = json.loads((tmp_path / "code.json").read_text())
    assert doc["num_speculative_tokens"] == 2
    assert doc["speculative_config"]["num_speculative_tokens"] == 2
    assert "num_speculative_tokens_per_batch_size" not in doc["speculative_config"]
    assert ctl.gate.states["code"].current_k == 2


def test_a_probe_restores_the_schedule_in_force_before_it(tmp_path: Path) -> None:
    on = Scenario("on", "", HOUR, (ClassScenario("code", iid(const(0.8)), 0.05, 4),))
    cfg = closed_loop_config(on, probes={**PROBES, "kinds": ["baseline"]})
    clock = Clock()
    ctl = Controller(
        cfg,
        source=SimSource(SimFleet(on, clock=clock, seed=1)),
        actuator=FileActuator(tmp_path),
        clock=clock,
        classes=class_config_from(cfg),
    )
    bands = ((1, 8, 4), (9, 256, 2))
    state = HysteresisState(4, None, (), current_schedule=bands)
    ctl.gate.states["code"] = state
    rec = Recommendation("code", 4, 4, 1.5, 1.5)
    decision = Decision(rec, 4, state, state, act=False, stale=False, hold="", reason="")
    probe = ProbeRecord("baseline", 0, 4, T0 + 60, "m", ProbeCost(2, 1800.0, 0.2))
    start = ProbePlan("start", ProbeState(T0, 4, running=probe), probe=probe, apply_k=0)
    ctl.probes.states["code"] = start.state
    ctl.probes._start(ctl, "code", decision, start, T0 + 60)
    doc = json.loads((tmp_path / "code.json").read_text())
    assert doc["speculative_config"] is None  # plain decoding: a restart without speculation
    running = ctl.probes.states["code"].running
    assert running is not None
    assert running.previous_schedule == bands
    assert ProbeRecord.from_json(json.loads(json.dumps(running.to_json()))) == running
    done = dataclasses.replace(running, ended=T0 + 700, outcome="measured")
    end = ProbePlan("end", ProbeState(T0, 4, history=(done,)), probe=done, apply_k=4)
    ctl.probes._act(ctl, "code", decision, end, T0 + 700)
    spec = json.loads((tmp_path / "code.json").read_text())["speculative_config"]
    assert spec["num_speculative_tokens"] == 4
    assert spec["num_speculative_tokens_per_batch_size"] == [[1, 8, 4], [9, 256, 2]]
    assert ctl.gate.states["code"].current_schedule == bands


def test_plain_decoding_windows_make_a_baseline_probe_unnecessary() -> None:
    scenario = Scenario(
        "two",
        "",
        HOUR,
        (
            ClassScenario("code", iid(const(0.8)), 0.05, 4),
            ClassScenario("plain", iid(const(0.8)), 0.05, 0),
        ),
    )
    cfg = closed_loop_config(scenario, probes={**PROBES, "kinds": ["baseline"]})
    ctl, _fleet, clock = build(scenario, cfg)
    run(ctl, clock, 1800)
    assert ctl.probes._has_baseline(ctl, "plain", clock.t)  # load-only windows at k = 0
    assert not ctl.probes._has_baseline(ctl, "code", clock.t)  # only speculation seen
