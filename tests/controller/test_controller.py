"""The controller against a real (simulated) vLLM fleet served over HTTP on 127.0.0.1.

The simulator and the controller share a manual clock, so an hour of traffic takes a
fraction of a second; every page is fetched for real by the direct-scrape collector.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from specwise.collectors.scrape import ScrapeSource
from specwise.config import SpecwiseConfig, parse_config
from specwise.controller.actuators import DryRunActuator, FileActuator
from specwise.controller.exporter import ExporterServer, controller_registry, make_app
from specwise.controller.loop import Controller, class_config_from
from specwise.estimation.drift import DriftConfig, DriftDetector
from specwise.model import optimal_k
from specwise.sim.fleet import FileWatcher, SimFleet, SimServer
from specwise.sim.scenarios import ClassScenario, Scenario, const, get_scenario, iid, step

try:
    from tests.servers import FaultResponse, FaultServer
except ImportError:  # tests/ is not a package
    from servers import FaultResponse, FaultServer  # type: ignore[no-redef]

FIXTURES = Path(__file__).parent.parent / "fixtures" / "vllm"


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_config(urls: list[str], scenario: Scenario, **overrides: Any) -> SpecwiseConfig:
    data: dict[str, Any] = {
        "controller": {"interval": 1, "stale_after": "5m"},
        "source": {"urls": urls, "timeout": 2},
        "estimator": {"window": "10m", "min_drafts": 200},
        "policy": {"k_max": 8, "min_gain": 0.05, "min_dwell": "20m", "max_changes_per_hour": 2},
        "classes": [
            {
                "name": c.name,
                "cost": c.cost,
                "k": c.initial_k,
                "speculative_config": {"method": "eagle"},
            }
            for c in scenario.classes
        ],
    }
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return parse_config(data)


@pytest.fixture
def fleet_server() -> Iterator[tuple[Clock, SimFleet, SimServer]]:
    clock = Clock()
    fleet = SimFleet(get_scenario("demo"), clock=clock, seed=11, restart_delay=120)
    with SimServer(fleet) as server:
        yield clock, fleet, server


def controller_for(
    server: SimServer, clock: Clock, scenario: Scenario, session: requests.Session, **kw: Any
) -> Controller:
    config = make_config(server.urls, scenario, **kw.pop("overrides", {}))
    return Controller(
        config,
        source=ScrapeSource(server.urls, session=session, timeout=2),
        actuator=kw.pop("actuator", DryRunActuator()),
        clock=clock,
        classes=class_config_from(config),
        **kw,
    )


def run_ticks(
    controller: Controller,
    clock: Clock,
    n: int,
    dt: float = 60.0,
    watcher: FileWatcher | None = None,
) -> None:
    for _ in range(n):
        clock.t += dt
        controller.step()
        if watcher is not None:
            watcher.poll()


def test_estimates_and_recommendations_match_the_truth(
    fleet_server: tuple[Clock, SimFleet, SimServer],
) -> None:
    clock, fleet, server = fleet_server
    scenario = get_scenario("demo")
    with requests.Session() as session:
        controller = controller_for(server, clock, scenario, session)
        run_ticks(controller, clock, 8)
    state = controller.state()
    by_name = {c.name: c for c in state.classes}
    assert set(by_name) == {"code", "chat", "summarize", "docs"}  # docs: the load-varying class
    code, chat, summarize = by_name["code"], by_name["chat"], by_name["summarize"]
    assert code.alpha is not None
    assert code.alpha_low is not None
    assert code.alpha_high is not None
    assert code.alpha_low <= 0.82 <= code.alpha_high
    assert code.alpha_high - code.alpha_low < 0.01
    # one change goes at most two positions past the 3 measured (issue 11): 5, then 7
    assert optimal_k(0.82, 0.05, 8) > 5
    assert code.recommended_k == 5
    assert chat.alpha == pytest.approx(0.7, abs=0.01)
    assert summarize.recommended_k == 0
    assert "every k >= 1 loses" in summarize.reason
    assert not code.stale
    assert all(s.up for s in state.sources)
    assert len(code.survival) == 3  # the deployed k's positions, measured
    # dry run: the change is proposed (counted as a proposal, not a change); the fleet
    # keeps its k
    assert code.changes == 0
    assert code.proposals == 1
    assert code.last_change_at is None
    assert code.last_proposal_at is not None
    assert "last proposal (dry-run)" in code.hold_reason or code.change_allowed
    assert fleet.deployed_k("code") == 3
    registry = controller_registry(controller.state)
    assert registry.get_sample_value("specwise_changes_total", {"class": "code"}) == 0
    assert registry.get_sample_value("specwise_proposals_total", {"class": "code"}) == 1
    row = next(c for c in state.to_json()["classes"] if c["class"] == "code")
    assert (row["changes"], row["proposals"]) == (0, 1)
    from specwise.commands.status import format_status

    assert "actuator dry-run: 0 change(s) applied, " in format_status(state)


def test_closed_loop_applies_k_and_does_not_flap(
    fleet_server: tuple[Clock, SimFleet, SimServer], tmp_path: Path
) -> None:
    clock, fleet, server = fleet_server
    scenario = get_scenario("demo")
    out = tmp_path / "configs"
    watcher = FileWatcher(fleet, out)
    with requests.Session() as session:
        controller = controller_for(server, clock, scenario, session, actuator=FileActuator(out))
        run_ticks(controller, clock, 30, watcher=watcher)  # 30 minutes, chat's drafter ok
        code_k = fleet.deployed_k("code")
        assert code_k == controller.state().classes[1].deployed_k  # classes sorted: chat, code, ...
        assert code_k >= 5
        assert fleet.deployed_k("summarize") == 0
        written = json.loads((out / "code.json").read_text())
        assert written["speculative_config"] == {
            "method": "eagle",
            "num_speculative_tokens": code_k,
        }
        assert json.loads((out / "summarize.json").read_text())["speculative_config"] is None
        # after the restart the counters show the new k as the number of positions
        page = requests.get(server.urls[0], timeout=2).text
        positions = {
            s.labels["position"]
            for f in text_string_to_metric_families(page)
            for s in f.samples
            if "per_pos" in s.name and s.name.endswith("_total")
        }
        assert len(positions) == code_k
        # chat's drafter breaks at minute 40; run two more hours
        run_ticks(controller, clock, 120, watcher=watcher)
    chat_engine = fleet.engines_of("chat")[0]
    assert fleet.deployed_k("chat") <= 2  # alpha 0.3 at cost 0.05: 1 (or 2 within the plateau)
    total_restarts = sum(e.stats.restarts for e in fleet.engines)
    assert total_restarts <= 6, "code twice, summarize once, chat once or twice: no flapping"
    assert chat_engine.stats.restarts >= 1
    code_status = next(c for c in controller.state().classes if c.name == "code")
    assert code_status.changes <= 2  # 3 -> 5 -> 7: at most two positions per change


def test_source_down_goes_stale_holds_k_and_recovers(tmp_path: Path) -> None:
    clock = Clock()
    scenario = Scenario("t", "t", 3600, (ClassScenario("code", iid(step(0.8, 0.2, 900)), 0.05, 4),))
    fleet = SimFleet(scenario, clock=clock, seed=2, restart_delay=60)
    server = SimServer(fleet).start()
    port = server.servers[0].server_address[1]
    out = tmp_path / "out"
    watcher = FileWatcher(fleet, out)  # the deployment tool picking up the file actuator
    with requests.Session() as session:
        controller = controller_for(
            server,
            clock,
            scenario,
            session,
            actuator=FileActuator(out),
            overrides={"policy": {"min_dwell": "1m"}},
        )
        run_ticks(controller, clock, 3, watcher=watcher)
        assert fleet.deployed_k("code") == 6  # 4 + at most two positions per change
        server.stop()  # the vLLM server goes away
        run_ticks(controller, clock, 20, watcher=watcher)  # alpha fell to 0.2: nobody can see it
        state = controller.state()
        code = state.classes[0]
        assert code.stale
        assert "stale" in code.reason
        assert state.sources[0].errors.get("unreachable", 0) >= 20
        assert not state.sources[0].up
        assert controller.healthy()[0] is False
        files_before = {p.name: p.read_text() for p in out.glob("*.json")}
        # the source comes back on the same port
        fleet2 = fleet
        server2 = SimServer(fleet2, ports=[port]).start()
        try:
            run_ticks(controller, clock, 30, watcher=watcher)
        finally:
            server2.stop()
    code = controller.state().classes[0]
    assert not code.stale
    assert code.alpha is not None
    assert code.alpha < 0.3
    assert code.recommended_k <= 1
    assert {p.name: p.read_text() for p in out.glob("*.json")} != files_before
    assert fleet.deployed_k("code") <= 1


def test_garbage_and_bad_counters_never_stop_the_loop(fault_server: FaultServer) -> None:
    """Garbage, a truncated body and accepted > drafted are skipped with a recorded error;
    the next good page spans the gap, so nothing is lost or counted twice."""
    first = (FIXTURES / "metrics-ngram-1-after-20req.txt").read_bytes()
    second = (FIXTURES / "metrics-ngram-2-after-40req.txt").read_bytes()
    impossible = second.replace(
        b'vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="tiny-llama"} 887.0',
        b'vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="tiny-llama"} 99999.0',
    )
    assert impossible != second
    url = fault_server.base_url + "/metrics"
    config = parse_config(
        {"source": {"urls": [url], "timeout": 2}, "estimator": {"window": "1h", "min_drafts": 10}}
    )
    clock = Clock()
    with requests.Session() as session:
        controller = Controller(
            config,
            source=ScrapeSource([url], session=session, timeout=2),
            actuator=DryRunActuator(),
            clock=clock,
        )
        pages = [
            FaultResponse(200, first),
            FaultResponse(200, b"<html>this is not a metrics page</html>\n{{{ garbage\n"),
            FaultResponse(200, first[:500], declared_length=len(first)),
            FaultResponse(500, b"internal error"),
            FaultResponse(200, impossible),
            FaultResponse(200, second),
        ]
        for page in pages:
            fault_server.routes["/metrics"] = page
            clock.t += 60
            controller.step()
    state = controller.state()
    errors: dict[str, int] = {}
    for src in state.sources:
        for kind, n in src.errors.items():
            errors[kind] = errors.get(kind, 0) + n
    assert errors.get("parse", 0) >= 2  # garbage and truncated
    assert errors.get("http", 0) == 1
    assert errors.get("data", 0) == 1  # accepted > draft tokens
    counts = controller.estimator.window_counts("tiny-llama", now=clock.t)
    assert counts is not None
    # the first page is a baseline (an engine's lifetime counters are history, not fresh
    # evidence); the second page minus the first: nothing lost, nothing twice
    assert counts.drafts == 416 - 210
    assert counts.accepted == 887 - 449
    (cls,) = state.classes
    assert cls.alpha is not None
    assert cls.deployed_k == 4


def test_controller_restart_with_state_file_causes_no_burst(
    fleet_server: tuple[Clock, SimFleet, SimServer], tmp_path: Path
) -> None:
    clock, fleet, server = fleet_server
    scenario = get_scenario("demo")
    out = tmp_path / "configs"
    state_file = tmp_path / "state.json"
    watcher = FileWatcher(fleet, out)
    overrides = {"policy": {"min_dwell": "1h"}}
    with requests.Session() as session:
        first = controller_for(
            server,
            clock,
            scenario,
            session,
            actuator=FileActuator(out),
            state_path=state_file,
            overrides=overrides,
        )
        run_ticks(first, clock, 5, watcher=watcher)
        changes_first = sum(c.changes for c in first.state().classes)
        assert changes_first >= 2
        saved = json.loads(state_file.read_text())
        assert saved["classes"]["code"]["deployed_k"] == fleet.deployed_k("code")
        # the controller restarts: a new process, same state file
        second = controller_for(
            server,
            clock,
            scenario,
            session,
            actuator=FileActuator(out),
            state_path=state_file,
            overrides=overrides,
        )
        run_ticks(second, clock, 20, watcher=watcher)
    assert sum(c.changes for c in second.state().classes) == 0
    restarts = sum(e.stats.restarts for e in fleet.engines)
    assert restarts == changes_first


def test_exporter_serves_metrics_health_and_recommendations(
    fleet_server: tuple[Clock, SimFleet, SimServer],
) -> None:
    clock, _fleet, server = fleet_server
    scenario = get_scenario("demo")
    with requests.Session() as session:
        controller = controller_for(server, clock, scenario, session)
        exporter = ExporterServer(
            make_app(controller_registry(controller.state), controller.state, controller.healthy)
        ).start()
        try:
            assert requests.get(exporter.url + "/healthz", timeout=2).status_code == 200
            run_ticks(controller, clock, 5)
            text = requests.get(exporter.url + "/metrics", timeout=2).text
            health = requests.get(exporter.url + "/healthz", timeout=2)
            recs = requests.get(exporter.url + "/recommendations", timeout=2).json()
            missing = requests.get(exporter.url + "/nope", timeout=2)
        finally:
            exporter.stop()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("specwise_alpha_ratio", **{"class": "code"}) == pytest.approx(0.82, abs=0.01)
    assert value("specwise_alpha_lower_ratio", **{"class": "code"}) < value(
        "specwise_alpha_upper_ratio", **{"class": "code"}
    )
    assert value("specwise_recommended_k", **{"class": "summarize"}) == 0
    assert value("specwise_deployed_k", **{"class": "summarize"}) == 3
    assert value("specwise_paying_off", **{"class": "summarize"}) == 0
    assert value("specwise_paying_off", **{"class": "code"}) == 1
    assert (
        value("specwise_predicted_speedup_ratio", **{"class": "summarize", "k_kind": "deployed"})
        < 1
    )
    assert value("specwise_survival_ratio", **{"class": "code", "position": "0"}) == pytest.approx(
        0.82, abs=0.01
    )
    assert value("specwise_stale", **{"class": "code"}) == 0
    assert value("specwise_ticks_total") == 5
    assert value("specwise_source_up", source=server.urls[0]) == 1
    assert health.status_code == 200
    assert "ok" in health.text
    assert {c["class"] for c in recs["classes"]} == {"code", "chat", "summarize", "docs"}
    summarize = next(c for c in recs["classes"] if c["class"] == "summarize")
    assert summarize["recommended_k"] == 0
    assert summarize["reason"]
    assert missing.status_code == 404


def test_run_stops_cleanly_on_sigterm_and_leaves_only_whole_files(tmp_path: Path) -> None:
    """`specwise run` as a real process: SIGTERM mid-run exits 0, every file is whole JSON.

    Deterministic on a busy machine: it waits (bounded) for both declared classes' files,
    not for a fixed time; stdout and stderr go to files, so a slow reader can never block
    the controller on a full pipe; the fleet's undeclared class (chat) is never actuated.
    """
    import signal
    import subprocess
    import sys
    import time

    fleet = SimFleet(get_scenario("demo"), clock=time.time, seed=3, restart_delay=1)
    out = tmp_path / "configs"
    expected = ["code.json", "summarize.json"]
    with SimServer(fleet) as server:
        config = tmp_path / "specwise.toml"
        urls = ", ".join(f'"{u}"' for u in server.urls)
        config.write_text(
            f"""
[controller]
interval = "0.2s"
listen = "127.0.0.1:0"
[source]
urls = [{urls}]
timeout = "2s"
[estimator]
min_drafts = 50
[policy]
min_dwell = "1s"
max_changes_per_hour = 100
[actuator]
kind = "file"
dir = "{out}"
[[classes]]
name = "code"
k = 3
speculative_config = {{ method = "eagle" }}
[[classes]]
name = "summarize"
cost = 0.4
k = 3
"""
        )
        stdout_path, stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        with stdout_path.open("w") as out_f, stderr_path.open("w") as err_f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "specwise", "run", "--config", str(config), "--nl"],
                stdout=out_f,
                stderr=err_f,
                text=True,
            )
            try:
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline and proc.poll() is None:
                    if all((out / name).exists() for name in expected):
                        break
                    time.sleep(0.05)
                written = sorted(p.name for p in out.glob("*.json"))
                assert written == expected, stderr_path.read_text()[-2000:]
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
    stdout, stderr = stdout_path.read_text(), stderr_path.read_text()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert lines, "one JSON line per tick"
    assert {c["class"] for c in lines[-1]["classes"]} >= {"code", "summarize"}
    chat = next(c for c in lines[-1]["classes"] if c["class"] == "chat")
    assert chat["declared"] is False
    names = sorted(p.name for p in out.iterdir())
    assert names == expected  # no temporary file, no file for the undeclared class
    for path in out.iterdir():
        data = json.loads(path.read_text())
        assert data["class"] in {"code", "summarize"}
    assert json.loads((out / "summarize.json").read_text())["speculative_config"] is None
    # each applied change logs one line at the default level (no -v)
    applied = [line for line in stderr.splitlines() if "specwise.changes" in line]
    assert any("class summarize: k = 0 applied: wrote " in line for line in applied), stderr[-2000:]
    assert any("class code: k = " in line and " applied: wrote " in line for line in applied)
    assert len(applied) == sum(c["changes"] for c in lines[-1]["classes"])


def test_turning_speculation_off_restarts_once() -> None:
    """After k -> 0 vLLM exports no spec families; the last k seen before the restart must
    not count as deployed, or every min_dwell the controller would apply k = 0 again
    (found live by the real-vLLM suite)."""
    from collections.abc import Mapping, Sequence

    from specwise.collectors.snapshot import Snapshot
    from specwise.controller.actuators import ActuationResult

    class OnThenOff:
        calls = 0

        def collect(self, now: float) -> Sequence[Snapshot]:
            self.calls += 1
            if self.calls > 1:
                return []  # restarted without --speculative-config
            labels = {"engine": "0", "instance": "127.0.0.1:8000", "model_name": "tiny-llama"}
            return [
                Snapshot(
                    labels,
                    now,
                    3019.0,
                    9057.0,
                    5.0,
                    (5.0, 0.0, 0.0),
                    3,
                    process_start_time=now - 60,
                )
            ]

    class Recorder:
        kind = "command"

        def __init__(self) -> None:
            self.calls: list[tuple[float, int]] = []

        def apply(
            self,
            class_name: str,
            k: int,
            *,
            speculative_config: Mapping[str, Any] | None,
            reason: str,
            now: float,
        ) -> ActuationResult:
            self.calls.append((now, k))
            return ActuationResult(class_name, k, True, now, "restarted")

    config = parse_config(
        {
            "controller": {"stale_after": "10m"},
            "source": {"urls": ["http://127.0.0.1:8000/metrics"]},
            "estimator": {"min_drafts": 100},
            "policy": {"min_dwell": "20s", "max_changes_per_hour": 3},
            "classes": [{"name": "tiny", "match": '{model_name="tiny-llama"}', "cost": 0.3}],
        }
    )
    actuator = Recorder()
    controller = Controller(config, source=OnThenOff(), actuator=actuator, clock=lambda: 0.0)
    t0 = 1_800_000_000.0
    controller.step(t0)
    assert actuator.calls == [(t0, 0)]
    for dt in (10.0, 30.0, 60.0, 90.0, 300.0):
        controller.step(t0 + dt)
    assert actuator.calls == [(t0, 0)]
    (status,) = controller.state().classes
    assert status.deployed_k == 0
    assert not status.stale  # off on purpose, and the source answers
    assert "speculation is off" in status.reason


class RecordingActuator:
    """Fault injection: records every call instead of deploying (kind "file": applies)."""

    kind = "file"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, Any]] = []

    def apply(
        self,
        class_name: str,
        k: int,
        *,
        speculative_config: Any,
        reason: str,
        now: float,
    ) -> Any:
        from specwise.controller.actuators import ActuationResult

        self.calls.append((class_name, k, speculative_config))
        return ActuationResult(class_name, k, True, now, "recorded")


def test_undeclared_classes_are_observed_and_reported_never_actuated(tmp_path: Path) -> None:
    """A served engine `stray` (cost 0.4 in truth, so k = 1 at the invented 0.05 would lose)
    that [[classes]] does not declare: estimated, exported and reported, never actuated."""
    clock = Clock()
    scenario = Scenario(
        "t",
        "t",
        3600,
        (
            ClassScenario("code", iid(const(0.82)), 0.05, 3),
            ClassScenario("stray", iid(const(0.3)), 0.4, 6),
        ),
    )
    fleet = SimFleet(scenario, clock=clock, seed=5, restart_delay=60)
    declared = Scenario("t", "t", 3600, scenario.classes[:1])
    out = tmp_path / "out"
    recorder = RecordingActuator()
    with SimServer(fleet) as server, requests.Session() as session:
        controller = controller_for(
            server,
            clock,
            declared,
            session,
            actuator=recorder,
            overrides={"policy": {"min_dwell": "1m", "max_changes_per_hour": 10}},
        )
        run_ticks(controller, clock, 15)
        files = controller_for(server, clock, declared, session, actuator=FileActuator(out))
        run_ticks(files, clock, 15)
    assert recorder.calls, "the declared class was steered"
    assert {name for name, _, _ in recorder.calls} == {"code"}
    assert not (out / "stray.json").exists()
    by_name = {c.name: c for c in controller.state().classes}
    stray = by_name["stray"]
    assert stray.declared is False
    assert stray.alpha == pytest.approx(0.3, abs=0.02)  # estimated and reported
    assert stray.recommended_k != stray.deployed_k  # at the default cost it would change k
    assert stray.deployed_k == 6
    assert "never actuated" in stray.hold_reason
    assert by_name["code"].declared is True
    row = next(c for c in controller.state().to_json()["classes"] if c["class"] == "stray")
    assert row["declared"] is False
    assert "never actuated" in row["hold_reason"]
    from specwise.commands.status import format_status

    table = format_status(controller.state())
    assert "stray (undeclared)" in table
    registry = controller_registry(controller.state)
    assert registry.get_sample_value("specwise_alpha_ratio", {"class": "stray"}) is not None


def test_fresh_controller_does_not_price_k_from_lifetime_counters() -> None:
    """An engine up for 6 h at alpha 0.3 whose drafter now accepts 0.82: a fresh controller
    (no state file) takes its first page as a baseline, acts on nothing at start-up, and
    prices k from fresh deltas only."""
    clock = Clock()
    six_hours = 6 * 3600.0
    scenario = Scenario(
        "t", "t", 2 * six_hours, (ClassScenario("code", iid(step(0.3, 0.82, six_hours)), 0.05, 3),)
    )
    fleet = SimFleet(scenario, clock=clock, seed=4, restart_delay=60)
    clock.t += six_hours
    fleet.advance(clock.t)
    recorder = RecordingActuator()
    with SimServer(fleet) as server, requests.Session() as session:
        controller = controller_for(
            server,
            clock,
            scenario,
            session,
            actuator=recorder,
            overrides={"policy": {"min_dwell": "1m"}},
        )
        run_ticks(controller, clock, 1)
        (first,) = controller.state().classes
        assert recorder.calls == []  # no change at start-up
        assert first.alpha is None  # the lifetime counters are a baseline, not evidence
        assert first.deployed_k == 3
        run_ticks(controller, clock, 5)
    (code,) = controller.state().classes
    assert code.alpha == pytest.approx(0.82, abs=0.02)  # fresh evidence only, not ~0.3
    assert recorder.calls
    assert all(k >= 5 for _, k, _ in recorder.calls)


def _drafter_breaks(
    tmp_path: Path, *, drift: DriftConfig | None = None
) -> tuple[list[Any], SimFleet]:
    """chat's drafter breaks at minute 40 (0.7 -> 0.3); 90 one-minute ticks."""
    clock = Clock()
    start = clock.t
    scenario = Scenario(
        "t", "t", 7200, (ClassScenario("chat", iid(step(0.7, 0.3, 40 * 60)), 0.05, 5),)
    )
    fleet = SimFleet(scenario, clock=clock, seed=7, restart_delay=60)
    out = tmp_path / "out"
    watcher = FileWatcher(fleet, out)
    seen: list[Any] = []
    with SimServer(fleet) as server, requests.Session() as session:
        controller = controller_for(
            server,
            clock,
            scenario,
            session,
            actuator=FileActuator(out),
            overrides={"policy": {"min_dwell": "1m", "max_changes_per_hour": 30}},
        )
        if drift is not None:
            controller.drift = DriftDetector(drift)
        for _ in range(90):
            clock.t += 60
            (status,) = controller.step().classes
            seen.append((clock.t - start, status, fleet.deployed_k("chat")))
            watcher.poll()
    return seen, fleet


def test_no_change_while_alpha_is_drifting(tmp_path: Path) -> None:
    """The README's promise: the gate holds k while alpha has moved past the drift
    thresholds but the detector has not declared the drift yet (the rolling window mixes
    both regimes). A detector that never declares keeps the suspicion up for a while."""
    never = DriftConfig(window_seconds=600, persist_ticks=10_000)
    seen, _ = _drafter_breaks(tmp_path, drift=never)
    drifting = [(t, s, k) for t, s, k in seen if "drifting" in s.hold_reason]
    # k wanted to move (5 -> 2) on several ticks, and held on every one of them
    assert len(drifting) >= 3, [s.hold_reason for _, s, _ in seen]
    assert all(s.recommended_k <= 2 and k == 5 for _, s, k in drifting)
    assert not any(s.change_allowed for _, s, _ in drifting)


def test_after_a_drift_alarm_k_follows_the_new_regime_within_minutes(tmp_path: Path) -> None:
    """Once the drift is declared the estimate restarts on the new regime alone, so the gate
    need not wait a further window: chat's broken drafter (minute 40) is priced down soon."""
    seen, fleet = _drafter_breaks(tmp_path)
    assert fleet.deployed_k("chat") <= 2
    moved = next(t for t, _, k in seen if k <= 2)
    assert 40 * 60 < moved <= 52 * 60, moved


def test_schedule_off_is_read_back_as_k_zero() -> None:
    """off_mode = "schedule": after k -> 0 through a schedule entry the engine still exports
    its 3 positions (all idle); past min_dwell the controller must not read k = 3 back and
    re-apply k = 0."""
    from specwise.collectors.snapshot import Snapshot

    class ScheduledEngine:
        """Fault injection: a served engine whose config a schedule entry turns off."""

        def __init__(self) -> None:
            self.off = False
            self.drafts = 0.0
            self.last: float | None = None

        def collect(self, now: float) -> list[Snapshot]:
            if not self.off and self.last is not None:
                self.drafts += 10.0 * (now - self.last)
            self.last = now
            d = self.drafts
            per_pos = (d * 0.3, d * 0.09, d * 0.027)
            labels = {"engine": "0", "instance": "v:8000", "model_name": "tiny"}
            return [
                Snapshot(labels, now, d, 3 * d, sum(per_pos), per_pos, 3, process_start_time=0.0)
            ]

    engine = ScheduledEngine()
    recorder = RecordingActuator()
    config = parse_config(
        {
            "controller": {"stale_after": "10m"},
            "source": {"urls": ["http://127.0.0.1:8000/metrics"]},
            "estimator": {"min_drafts": 100},
            "policy": {"min_dwell": "2m", "max_changes_per_hour": 10, "off_mode": "schedule"},
            "classes": [
                {"name": "tiny", "cost": 0.4, "speculative_config": {"method": "draft_model"}}
            ],
        }
    )
    controller = Controller(config, source=engine, actuator=recorder, clock=lambda: 0.0)
    t = 1_800_000_000.0
    for _ in range(3):
        t += 60
        controller.step(t)
        if recorder.calls:
            engine.off = True  # the deploy tool applied the schedule: no more drafts
    assert len(recorder.calls) == 1
    (name, k, spec) = recorder.calls[0]
    assert (name, k) == ("tiny", 0)
    assert spec["num_speculative_tokens"] == 3
    assert spec["num_speculative_tokens_per_batch_size"] == [[1, 1 << 20, 0]]
    for _ in range(30):  # 30 minutes, well past min_dwell
        t += 60
        controller.step(t)
    assert len(recorder.calls) == 1, "k = 0 was applied again"
    (status,) = controller.state().classes
    assert status.deployed_k == 0
    assert "keep k = 3" not in status.reason


def test_every_failure_in_a_tick_is_exported_from_the_first_tick(
    fault_server: FaultServer,
) -> None:
    """A bearer token requests cannot encode (UnicodeEncodeError inside requests), a source
    raising an unmapped error, an actuator raising one: no tick raises, /healthz leaves
    "starting", and specwise_source_up and specwise_last_tick_timestamp_seconds are
    exported from the first tick on, so SpecwiseSourceDown and SpecwiseControllerStalled
    can fire."""
    url = fault_server.base_url + "/metrics"
    config = parse_config({"source": {"urls": [url], "timeout": 2}})
    clock = Clock()
    with requests.Session() as session:
        session.headers["Authorization"] = "Bearer tok\u20acn"  # not latin-1
        controller = Controller(
            config,
            source=ScrapeSource([url], session=session, timeout=2),
            actuator=DryRunActuator(),
            clock=clock,
        )
        assert controller.healthy() == (True, "starting: no tick yet")
        state = controller.step()
    assert state.updated_at == clock.t
    ok, detail = controller.healthy()
    assert not ok
    assert "starting" not in detail
    registry = controller_registry(controller.state)
    assert registry.get_sample_value("specwise_source_up", {"source": url}) == 0
    assert registry.get_sample_value("specwise_last_tick_timestamp_seconds") == clock.t
    assert (
        registry.get_sample_value(
            "specwise_source_errors_total", {"source": url, "kind": "internal"}
        )
        == 1
    )
    assert "UnicodeEncodeError" in state.sources[0].last_error


def test_unmapped_source_and_actuator_failures_never_stop_the_tick() -> None:
    from specwise.collectors.snapshot import Snapshot

    class Broken:
        name = "broken"

        def __init__(self) -> None:
            self.calls = 0

        def collect(self, now: float) -> list[Snapshot]:
            self.calls += 1
            if self.calls == 1:
                raise UnicodeEncodeError("latin-1", "\u20ac", 0, 1, "ordinal not in range(256)")
            d = 1000.0 * self.calls
            per_pos = (d * 0.3, d * 0.09, d * 0.027)
            labels = {"engine": "0", "model_name": "tiny"}
            return [Snapshot(labels, now, d, 3 * d, sum(per_pos), per_pos, 3, process_start_time=0)]

    class Exploding(RecordingActuator):
        def apply(self, class_name: str, k: int, **kw: Any) -> Any:
            super().apply(class_name, k, **kw)
            raise RuntimeError("deploy tool crashed")

    config = parse_config(
        {
            "source": {"urls": ["http://127.0.0.1:8000/metrics"]},
            "estimator": {"min_drafts": 100},
            "policy": {"min_dwell": "1m"},
            "classes": [{"name": "tiny", "match": '{model_name="tiny"}', "cost": 0.4, "k": 3}],
        }
    )
    actuator = Exploding()
    controller = Controller(config, source=Broken(), actuator=actuator, clock=lambda: 0.0)
    t = 1_800_000_000.0
    for _ in range(4):
        t += 60
        state = controller.step(t)
    assert state.ticks == 4
    assert state.sources[0].errors == {"internal": 1}
    assert actuator.calls  # k = 0 was attempted...
    (tiny,) = state.classes
    assert tiny.deployed_k == 3  # ...failed, so k = 3 is held
    assert "deploy tool crashed" in tiny.actuation_error
    assert state.errors.get("actuator", 0) >= 1
    registry = controller_registry(controller.state)
    assert registry.get_sample_value("specwise_controller_errors_total", {"kind": "actuator"}) >= 1


def test_off_by_specwise_is_exported_with_the_series_labels(tmp_path: Path) -> None:
    """Class `summarize` serves model_name `sum-model`: once specwise turns it off, it
    exports specwise_off_by_specwise{class="summarize", model_name="sum-model"} 1 (what
    SpecDecodeMetricsAbsent joins on), also after a controller restart (state file)."""
    clock = Clock()
    scenario = Scenario(
        "t",
        "t",
        3600,
        (
            ClassScenario("code", iid(const(0.82)), 0.05, 3),
            ClassScenario("sum-model", iid(const(0.3)), 0.4, 3),
        ),
    )
    fleet = SimFleet(scenario, clock=clock, seed=8, restart_delay=60)
    state_file = tmp_path / "state.json"

    class Deployer(RecordingActuator):
        """The deploy tool: class summarize runs as the sim's engine sum-model."""

        def apply(self, class_name: str, k: int, **kw: Any) -> Any:
            fleet.set_k({"summarize": "sum-model"}.get(class_name, class_name), k, kw["now"])
            return super().apply(class_name, k, **kw)

    config = parse_config(
        {
            "controller": {"stale_after": "5m"},
            "source": {"urls": ["http://placeholder/metrics"]},
            "estimator": {"min_drafts": 200},
            "policy": {"min_dwell": "5m"},
            "classes": [
                {"name": "code", "k": 3, "speculative_config": {"method": "eagle"}},
                {"name": "summarize", "match": '{model_name="sum-model"}', "cost": 0.4, "k": 3},
            ],
        }
    )
    with SimServer(fleet) as server, requests.Session() as session:

        def controller() -> Controller:
            return Controller(
                config,
                source=ScrapeSource(server.urls, session=session, timeout=2),
                actuator=Deployer(),
                clock=clock,
                state_path=state_file,
            )

        first = controller()
        run_ticks(first, clock, 10)
        assert fleet.deployed_k("sum-model") == 0
        second = controller()  # restarted: the engine exports no spec counters any more
        run_ticks(second, clock, 3)
    for c in (first, second):
        registry = controller_registry(c.state)
        labels = {"class": "summarize", "model_name": "sum-model"}
        assert registry.get_sample_value("specwise_off_by_specwise", labels) == 1
        assert (
            registry.get_sample_value(
                "specwise_off_by_specwise", {"class": "code", "model_name": "code"}
            )
            is None
        )
    summarize = next(s for s in second.state().classes if s.name == "summarize")
    assert summarize.off_by_specwise
    assert summarize.deployed_k == 0


def test_a_class_whose_match_matches_nothing_is_warned_about(
    fleet_server: tuple[Clock, SimFleet, SimServer], caplog: pytest.LogCaptureFixture
) -> None:
    clock, _fleet, server = fleet_server
    scenario = get_scenario("demo")
    config = parse_config(
        {
            "source": {"urls": server.urls, "timeout": 2},
            "classes": [
                {"name": "code"},
                {"name": "typo", "match": '{model_name="cdoe"}'},
            ],
        }
    )
    assert {c.name for c in scenario.classes} >= {"code"}
    with requests.Session() as session:
        controller = Controller(
            config,
            source=ScrapeSource(server.urls, session=session, timeout=2),
            actuator=DryRunActuator(),
            clock=clock,
        )
        with caplog.at_level("WARNING", logger="specwise.controller"):
            run_ticks(controller, clock, 3)
    warnings = [r.getMessage() for r in caplog.records if "matches no series" in r.getMessage()]
    assert warnings == [
        'class typo: match {model_name="cdoe"} matches no series the sources return; check '
        "[[classes]] match against the engines' labels"
    ]  # once, at the first tick
    by_name = {c["class"]: c for c in controller.state().to_json()["classes"]}
    assert "matches no series" in by_name["typo"]["reason"]
    assert "matches no series" in by_name["typo"]["notes"][0]
    assert not any("matches no series" in n for n in by_name["code"]["notes"])
