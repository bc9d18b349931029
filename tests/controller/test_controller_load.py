"""The controller prices k with the load (#14): a served fleet whose V1 load families follow a
ground-truth T(k, B), scraped for real over HTTP on 127.0.0.1 with a manual clock.

One class, two engines of the same model: one speculating, one without speculation (its
load-only snapshots give the plain step T(0, B) at the same batch sizes).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from specwise.collectors.scrape import ScrapeSource
from specwise.config import parse_config
from specwise.controller.actuators import Actuator, CommandActuator, DryRunActuator, FileActuator
from specwise.controller.exporter import ExporterServer, controller_registry, make_app
from specwise.controller.loop import Controller, class_config_from
from specwise.policies.speedup_policy import CONSTANT_COST_NOTE, recommend
from specwise.step_cost import SpecConfig, StepCost, speedup_at_batch

try:
    from tests.controller.load_fleet import LoadEngine, LoadFleet
except ImportError:  # tests/ is not a package
    from load_fleet import LoadEngine, LoadFleet  # type: ignore[no-redef]

ALPHA = 0.8
#: memory-bound up to 64 verified tokens per step, then 0.4 ms per token; a cheap drafter
COST = StepCost(base=0.02, per_token=4e-4, knee=64.0, draft_base=0.0015)
TICK = 60.0


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_controller(
    fleet: LoadFleet,
    clock: Clock,
    session: requests.Session,
    *,
    k: int = 4,
    actuator: Actuator | None = None,
    state_path: Path | None = None,
    policy: dict[str, Any] | None = None,
) -> Controller:
    config = parse_config(
        {
            "controller": {"interval": 1, "stale_after": "5m"},
            "source": {"urls": [fleet.url], "timeout": 2},
            "estimator": {"window": "10m", "min_drafts": 200},
            "policy": {
                "k_max": 6,
                "min_gain": 0.05,
                "min_dwell": "20m",
                "max_changes_per_hour": 2,
                "max_batch_size": 128,
                **(policy or {}),
            },
            "classes": [
                {"name": "code", "cost": 0.05, "k": k, "speculative_config": {"method": "eagle"}}
            ],
        }
    )
    return Controller(
        config,
        source=ScrapeSource([fleet.url], session=session, timeout=2),
        actuator=actuator or DryRunActuator(),
        clock=clock,
        classes=class_config_from(config),
        state_path=state_path,
    )


def fleet_of(k: int = 4, *, latency: bool = True, plain: bool = True) -> LoadFleet:
    engines = [LoadEngine("code", "0", ALPHA, COST, SpecConfig(k), latency_families=latency)]
    if plain:
        engines.append(LoadEngine("code", "1", ALPHA, COST, SpecConfig(0)))
    return LoadFleet(engines)


def drive(
    controller: Controller,
    fleet: LoadFleet,
    clock: Clock,
    batches: list[float],
    on_tick: Callable[[], None] | None = None,
) -> None:
    """One tick per batch size: the fleet decodes TICK seconds at it, then the controller
    scrapes and decides."""
    for b in batches:
        fleet.set_batch("code", b)
        fleet.advance(TICK)
        clock.t += TICK
        controller.step()
        if on_tick is not None:
            on_tick()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(url, timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_exports_measured_and_predicted_speedup_fitted_costs_and_batch_quantiles(
    session: requests.Session,
) -> None:
    clock = Clock()
    day = [2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 48.0] * 3 + [8.0] * 12  # ends at B = 8
    with fleet_of() as fleet:
        controller = make_controller(fleet, clock, session)
        drive(controller, fleet, clock, day)
        server = ExporterServer(
            make_app(controller_registry(controller.state), controller.state, controller.healthy)
        ).start()
        try:
            metrics = scrape(server.url + "/metrics")
            recs = requests.get(server.url + "/recommendations", timeout=5).json()
        finally:
            server.stop()
    code = next(c for c in controller.state().classes if c.name == "code")
    assert code.load is not None
    assert code.load["load_aware"] is True, code.load
    cls = (("class", "code"),)

    def m(name: str, **labels: str) -> float | None:
        return metrics.get((name, tuple(sorted({"class": "code", **labels}.items()))))

    truth = speedup_at_batch([ALPHA**i for i in range(1, 5)], 4, 8, COST)
    measured = m("specwise_measured_speedup_ratio")
    assert measured is not None
    assert measured == pytest.approx(truth, rel=0.05)
    low, high = (
        m("specwise_measured_speedup_lower_ratio"),
        m("specwise_measured_speedup_upper_ratio"),
    )
    assert low is not None
    assert high is not None
    assert low <= measured <= high
    assert code.load["measured"]["basis"] == "baseline"  # T(0, B) from the plain engine
    assert code.load["predicted"] is not None
    assert code.load["predicted"]["value"] == pytest.approx(truth, rel=0.15)
    base = m("specwise_step_cost_seconds", part="base")
    assert base == pytest.approx(COST.base, rel=0.15)
    assert m("specwise_step_cost_seconds", part="draft_base") is not None
    assert m("specwise_implied_draft_cost_ratio") is not None
    assert m("specwise_implied_verify_cost_ratio") is not None
    assert m("specwise_batch_size", quantile="0.5") == 8
    assert m("specwise_batch_size", quantile="0.99") == 48
    mean = m("specwise_batch_size_mean")
    assert mean is not None
    assert 8 < mean < 48
    assert m("specwise_load_aware") == 1
    assert metrics.get(("specwise_load_aware", cls)) == 1
    bands = [key for key in metrics if key[0] == "specwise_band_k"]
    assert bands, "the recommended configuration's bands are exported"
    row = recs["classes"][0]
    assert row["load"]["batch"]["p90"] == 32  # 29 of 32 ticks at or below 32
    assert row["load"]["recommended"]["k"] == code.recommended_k
    # guard bands start past the largest batch size the traffic reached (or there are none)
    guard = row["load"]["recommended"]["guard_from"]
    assert guard is None or guard > 32
    assert not any(CONSTANT_COST_NOTE in n for n in code.notes)


def test_missing_latency_families_keep_the_constant_cost_behaviour_and_say_so(
    session: requests.Session,
) -> None:
    clock = Clock()
    with fleet_of(latency=False, plain=False) as fleet:
        controller = make_controller(fleet, clock, session, k=2)
        drive(controller, fleet, clock, [8.0] * 12)
    code = next(c for c in controller.state().classes if c.name == "code")
    assert code.load is not None
    assert code.load["load_aware"] is False
    assert "no latency families" in code.load["note"]
    assert code.load["batch"]["p50"] == 8  # the batch size is still measured and shown
    assert CONSTANT_COST_NOTE in code.notes
    # exactly what the constant-cost policy recommends for the same estimate
    estimate = controller.estimator.estimate("code", now=clock.t)
    plain = recommend(estimate, config=controller._policy("code"), current_k=2)
    assert code.recommended_k == plain.recommended_k
    assert code.predicted_speedup_recommended == pytest.approx(plain.predicted_speedup_recommended)
    registry = controller_registry(controller.state)
    assert registry.get_sample_value("specwise_load_aware", {"class": "code"}) == 0
    assert registry.get_sample_value("specwise_measured_speedup_ratio", {"class": "code"}) is None
    assert registry.get_sample_value("specwise_controller_errors_total", {"kind": "load"}) == 0


#: speculation pays at night (B = 4: 2.6x at k = 4) and loses at peak (B = 64: 0.5x at k = 4,
#: 0.76x at k = 1), which is a fifth of the time: k = 4 by night and 0 at peak wins (about
#: 1.2x over the day where the best single k loses)
NIGHT_AND_PEAK = [4.0, 4.0, 4.0, 4.0, 64.0] * 5


def test_a_recommended_schedule_reaches_the_file_actuators_json(
    session: requests.Session, tmp_path: Path
) -> None:
    clock = Clock()
    out = tmp_path / "out"
    with fleet_of() as fleet:
        controller = make_controller(fleet, clock, session, actuator=FileActuator(out))
        drive(controller, fleet, clock, NIGHT_AND_PEAK)
    code = next(c for c in controller.state().classes if c.name == "code")
    assert code.load is not None
    assert code.load["recommended"]["kind"] == "schedule", code.load["recommended"]
    assert code.changes >= 1
    doc = json.loads((out / "code.json").read_text())
    spec = doc["speculative_config"]
    schedule = spec["num_speculative_tokens_per_batch_size"]
    assert schedule[0][0] == 1
    assert schedule[-1][1] >= 128
    assert (
        spec["num_speculative_tokens"]
        == max(e[2] for e in schedule)
        == doc["num_speculative_tokens"]
    )
    assert schedule[0][2] > 0  # drafts at night
    assert schedule[-1][2] < schedule[0][2]  # fewer (or none) at peak
    assert spec["method"] == "eagle"
    assert [list(e) for e in code.deployed_schedule] == schedule
    # the command actuator's {speculative_config} carries the same schedule
    cmd = CommandActuator(["deploy", "{class}", "{speculative_config}"], classes=["code"])
    argv = cmd.render("code", doc["num_speculative_tokens"], spec)
    assert json.loads(argv[2])["num_speculative_tokens_per_batch_size"] == schedule


def test_the_state_file_keeps_the_load_window(session: requests.Session, tmp_path: Path) -> None:
    clock = Clock()
    state = tmp_path / "state.json"
    with fleet_of() as fleet:
        first = make_controller(fleet, clock, session, state_path=state)
        drive(first, fleet, clock, [2.0, 8.0, 32.0] * 5)
        first.close()
        saved = json.loads(state.read_text())["classes"]["code"]["load_window"]
        assert saved is not None
        before = first.load.batches("code", clock.t)
        again = make_controller(fleet, clock, session, state_path=state)
        assert again.load.to_json("code") == first.load.to_json("code")
        after = again.load.batches("code", clock.t)
        assert before is not None
        assert after == before
        clock.t += TICK
        again.step()  # a baseline scrape: no new delta, yet priced with the day's load
    code = next(c for c in again.state().classes if c.name == "code")
    assert code.load is not None
    assert code.load["batch"]["p90"] == 32


def test_a_load_path_failure_is_exported_and_k_is_held(
    session: requests.Session, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clock = Clock()
    out = tmp_path / "out"
    with fleet_of(k=1) as fleet:
        controller = make_controller(fleet, clock, session, k=1, actuator=FileActuator(out))

        def broken(*args: object, **kwargs: object) -> object:  # fault injection
            raise RuntimeError("singular matrix")

        monkeypatch.setattr(controller.load, "evidence", broken)
        drive(controller, fleet, clock, [4.0] * 12)
    state = controller.state()
    code = next(c for c in state.classes if c.name == "code")
    assert state.ticks == 12  # the loop went on
    assert code.recommended_k != 1  # the constant-cost model alone would change k ...
    assert code.deployed_k == 1  # ... but nothing changes on the failure's account
    assert code.changes == 0
    assert not (out / "code.json").exists()
    assert "load-aware pricing failed" in code.hold_reason
    assert code.load is not None
    assert "singular matrix" in code.load["error"]
    assert code.load["load_aware"] is False
    assert state.errors.get("load", 0) >= 12
    registry = controller_registry(controller.state)
    assert registry.get_sample_value("specwise_controller_errors_total", {"kind": "load"}) >= 12


def test_a_deployed_schedule_is_kept_and_measured_per_band(
    session: requests.Session, tmp_path: Path
) -> None:
    """Once the fleet runs the schedule specwise wrote, the gate compares configurations:
    the same schedule is not applied again, and each band's speedup is measured apart."""
    clock = Clock()
    out = tmp_path / "out"
    with fleet_of() as fleet:
        controller = make_controller(fleet, clock, session, actuator=FileActuator(out))
        applied: list[SpecConfig] = []

        def deploy() -> None:  # the deploy tool: restart the spec engine with the file's config
            path = out / "code.json"
            if not path.exists():
                return
            spec = json.loads(path.read_text())["speculative_config"]
            config = SpecConfig(
                spec["num_speculative_tokens"],
                tuple(tuple(e) for e in spec.get("num_speculative_tokens_per_batch_size") or ())
                or None,
            )
            if not applied or applied[-1] != config:
                applied.append(config)
                fleet.engines[0].deploy(config)

        # the first schedule runs k = 1 at peak; measured there, the knee shows k = 0 pays
        # more (one more change), then the schedule in force is the answer
        drive(controller, fleet, clock, NIGHT_AND_PEAK * 3, on_tick=deploy)
        assert applied
        assert applied[-1].schedule is not None
        changes = next(c for c in controller.state().classes if c.name == "code").changes
        assert changes <= 3
        drive(controller, fleet, clock, NIGHT_AND_PEAK * 2, on_tick=deploy)
    code = next(c for c in controller.state().classes if c.name == "code")
    assert code.changes == changes  # the schedule in force is not applied again
    assert code.deployed_k == applied[-1].k
    assert code.deployed_schedule == applied[-1].schedule
    assert code.load is not None
    by_band = {b["band"]: b for b in code.load["bands_measured"]}
    schedule = applied[-1].schedule
    assert schedule is not None
    night = next(e for e in schedule if e[0] <= 4 <= e[1])
    label = f"{night[0]}-{night[1]}"
    assert label in by_band
    truth = speedup_at_batch([ALPHA**i for i in range(1, night[2] + 1)], night[2], 4, COST)
    assert by_band[label]["value"] == pytest.approx(truth, rel=0.05)
    registry = controller_registry(controller.state)
    assert registry.get_sample_value(
        "specwise_band_measured_speedup_ratio", {"class": "code", "band": label}
    ) == pytest.approx(truth, rel=0.05)


def test_the_simulated_fleet_with_load_is_priced_with_it_and_its_configuration_follows_load(
    session: requests.Session, tmp_path: Path
) -> None:
    """The demo's load-varying class on the simulator (ground truth EAGLE_ON_BUSY_GPU, 3
    running requests, 48 in a busy hour from minute 40): the controller prices it with its
    load, exports what it measured and fitted, and moves to a batch-size schedule that drafts
    less when busy."""
    from specwise.sim.fleet import FileWatcher, SimFleet, SimServer
    from specwise.sim.scenarios import Scenario, get_scenario

    docs = next(c for c in get_scenario("demo").classes if c.name == "docs")
    assert docs.batch is not None  # a class whose load moves
    # with a replica of the model served without speculation (T(0, B) measured)
    docs = dataclasses.replace(docs, plain_replicas=1)
    clock = Clock()
    fleet = SimFleet(Scenario("t", "t", 7200.0, (docs,)), clock=clock, seed=5, restart_delay=60)
    out = tmp_path / "out"
    watcher = FileWatcher(fleet, out)
    seen: list[dict[str, Any]] = []
    schedules: list[tuple[tuple[int, int, int], ...]] = []
    with SimServer(fleet) as server:
        config = parse_config(
            {
                "controller": {"interval": 1, "stale_after": "5m"},
                "source": {"urls": server.urls, "timeout": 2},
                "estimator": {"window": "10m", "min_drafts": 200},
                "policy": {"k_max": 6, "min_dwell": "20m", "max_changes_per_hour": 2},
                "classes": [
                    {
                        "name": "docs",
                        "cost": docs.cost,
                        "k": docs.initial_k,
                        "speculative_config": {"method": "eagle"},
                    }
                ],
            }
        )
        controller = Controller(
            config,
            source=ScrapeSource(server.urls, session=session, timeout=2),
            actuator=FileActuator(out),
            clock=clock,
            classes=class_config_from(config),
        )
        for _ in range(75):  # 75 minutes: quiet, then into the busy hour
            clock.t += TICK
            controller.step()
            watcher.poll()
            status = next(c for c in controller.state().classes if c.name == "docs")
            if status.load is not None and status.load.get("measured"):
                seen.append(dict(status.load))
            if status.deployed_schedule:
                schedules.append(tuple(status.deployed_schedule))
    assert seen, "measured while speculating"
    last = seen[-1]
    assert last["load_aware"] is True
    assert last["measured"]["value"] > 0
    assert last["predicted"]["value"] > 0
    assert last["costs"]["base"] == pytest.approx(0.02, rel=0.3)
    assert last["batch"]["p90"] >= 24  # the busy hour is in the distribution
    assert seen[0]["measured"]["value"] > last["measured"]["value"]  # loses as load rises
    status = next(c for c in controller.state().classes if c.name == "docs")
    final = status.load
    assert final is not None
    # the answer changed with load: a schedule that drafts less at the busy batch sizes (and,
    # once the busy hour outweighs the quiet one in tokens, possibly off: a restart)
    assert status.changes >= 1
    assert schedules
    schedule = schedules[-1]
    assert schedule[-1][2] < schedule[0][2]
    assert status.deployed_k == 0 or status.deployed_schedule == schedule
    # measured: loses when busy
    assert any(b["value"] < 1.0 for ld in seen for b in ld["bands_measured"])
    registry = controller_registry(controller.state)
    assert registry.get_sample_value("specwise_load_aware", {"class": "docs"}) == 1
    assert registry.get_sample_value(
        "specwise_batch_size", {"class": "docs", "quantile": "0.9"}
    ) == pytest.approx(final["batch"]["p90"])
    assert (
        registry.get_sample_value("specwise_step_cost_seconds", {"class": "docs", "part": "base"})
        is not None
    )
