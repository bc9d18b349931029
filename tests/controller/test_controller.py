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
from specwise.model import optimal_k
from specwise.sim.fleet import FileWatcher, SimFleet, SimServer
from specwise.sim.scenarios import ClassScenario, Scenario, get_scenario, iid, step

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
    assert set(by_name) == {"code", "chat", "summarize"}
    code, chat, summarize = by_name["code"], by_name["chat"], by_name["summarize"]
    assert code.alpha is not None
    assert code.alpha_low is not None
    assert code.alpha_high is not None
    assert code.alpha_low <= 0.82 <= code.alpha_high
    assert code.alpha_high - code.alpha_low < 0.01
    assert code.recommended_k in (optimal_k(0.82, 0.05, 8), optimal_k(0.82, 0.05, 8) - 1)
    assert chat.alpha == pytest.approx(0.7, abs=0.01)
    assert summarize.recommended_k == 0
    assert "every k >= 1 loses" in summarize.reason
    assert not code.stale
    assert all(s.up for s in state.sources)
    assert len(code.survival) == 3  # the deployed k's positions, measured
    # dry run: the change is proposed (counted) but the fleet keeps its k
    assert code.changes == 1
    assert fleet.deployed_k("code") == 3


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
    assert total_restarts <= 5, "code once, summarize once, chat once or twice: no flapping"
    assert chat_engine.stats.restarts >= 1
    code_status = next(c for c in controller.state().classes if c.name == "code")
    assert code_status.changes == 1


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
        assert fleet.deployed_k("code") == 7
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
    assert counts.drafts == 416  # the second page's totals: nothing lost, nothing twice
    assert counts.accepted == 887
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
    assert value("specwise_survival_ratio", **{"class": "code", "position": "1"}) == pytest.approx(
        0.82, abs=0.01
    )
    assert value("specwise_stale", **{"class": "code"}) == 0
    assert value("specwise_ticks_total") == 5
    assert value("specwise_source_up", source=server.urls[0]) == 1
    assert health.status_code == 200
    assert "ok" in health.text
    assert {c["class"] for c in recs["classes"]} == {"code", "chat", "summarize"}
    summarize = next(c for c in recs["classes"] if c["class"] == "summarize")
    assert summarize["recommended_k"] == 0
    assert summarize["reason"]
    assert missing.status_code == 404


def test_run_stops_cleanly_on_sigterm_and_leaves_only_whole_files(tmp_path: Path) -> None:
    """`specwise run` as a real process: SIGTERM mid-run exits 0, every file is whole JSON."""
    import signal
    import subprocess
    import sys
    import time

    fleet = SimFleet(get_scenario("demo"), clock=time.time, seed=3, restart_delay=1)
    out = tmp_path / "configs"
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
        proc = subprocess.Popen(
            [sys.executable, "-m", "specwise", "run", "--config", str(config), "--nl"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not list(out.glob("*.json")):
                time.sleep(0.05)
            assert list(out.glob("*.json")), "the controller wrote no recommendation"
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert lines, "one JSON line per tick"
    assert {c["class"] for c in lines[-1]["classes"]} >= {"code", "summarize"}
    names = sorted(p.name for p in out.iterdir())
    assert names == ["code.json", "summarize.json"]  # no temporary file left behind
    for path in out.iterdir():
        data = json.loads(path.read_text())
        assert data["class"] in {"code", "summarize"}
    assert json.loads((out / "summarize.json").read_text())["speculative_config"] is None


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
