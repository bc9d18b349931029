"""The command actuator with real processes: off the tick, one run per class, killed as a
process group on timeout or shutdown, outcomes collected on a later tick.

Every script here blocks on a file the test controls (or forever), so an outcome never
depends on how fast a busy machine runs it; every wait is a bounded poll on a condition.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from specwise.collectors.scrape import ScrapeSource
from specwise.config import parse_config
from specwise.controller.actuators import ActuationResult, CommandActuator
from specwise.controller.loop import Controller, class_config_from
from specwise.controller.state import ClassStatus, ControllerState
from specwise.errors import ActuatorError
from specwise.sim.fleet import SimFleet, SimServer
from specwise.sim.scenarios import get_scenario

WAIT = 60.0  # generous bound for any condition on 2 busy cores

# Records its argv, then waits until the test writes <dir>/release (its content is the exit
# status), prints a last line and exits. Bounded, so nothing outlives a failed test for long.
GATED = """\
import json, os, pathlib, sys, time
d = pathlib.Path(sys.argv[1])
with open(d / "starts.log", "a") as log:
    log.write(json.dumps({"pid": os.getpid(), "argv": sys.argv[2:]}) + "\\n")
release = d / "release"
deadline = time.monotonic() + 300
while not release.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
status = int(release.read_text() or 0) if release.exists() else 9
print("restarting vLLM for", sys.argv[2])
print("deployed k =", sys.argv[3])
sys.exit(status)
"""

# Starts a grandchild in the same process group (ignoring SIGTERM when asked), writes its
# pid, then blocks: only a kill of the whole group removes the grandchild.
SPAWNS = """\
import pathlib, subprocess, sys, time
d = pathlib.Path(sys.argv[1])
child = (
    "import os, pathlib, signal, sys, time\\n"
    "if sys.argv[2] == 'ignore': signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    "pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))\\n"
    "deadline = time.monotonic() + 300\\n"
    "while time.monotonic() < deadline: time.sleep(0.05)\\n"
)
subprocess.Popen([sys.executable, "-c", child, str(d / "grandchild.pid"), sys.argv[2]])
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    time.sleep(0.05)
"""


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def finish(act: CommandActuator, now: float = 0.0) -> list[ActuationResult]:
    """Wait (bounded) until no run is in flight, then collect the outcomes."""
    wait_for(lambda: not act.running(), "the actuator's runs to finish")
    return act.poll(now)


def starts(tmp_path: Path) -> list[dict[str, object]]:
    log = tmp_path / "starts.log"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    (tmp_path / "gated.py").write_text(GATED)
    (tmp_path / "spawns.py").write_text(SPAWNS)
    return tmp_path


@pytest.fixture
def actuators() -> Iterator[list[CommandActuator]]:
    """Actuators made by a test are closed (their groups killed) whatever the outcome."""
    made: list[CommandActuator] = []
    yield made
    for act in made:
        act.close(timeout=0)


def gated(
    tmp_path: Path,
    made: list[CommandActuator],
    classes: tuple[str, ...] = ("code", "chat"),
    **kw: float,
) -> CommandActuator:
    argv = [sys.executable, str(tmp_path / "gated.py"), str(tmp_path), "{class}", "{k}"]
    act = CommandActuator(argv, classes=classes, **kw)
    made.append(act)
    return act


SPEC3 = {"method": "ngram", "num_speculative_tokens": 3}
SPEC4 = {"method": "ngram", "num_speculative_tokens": 4}


def test_apply_returns_while_the_command_runs_and_poll_reports_it_later(
    scripts: Path, actuators: list[CommandActuator]
) -> None:
    act = gated(scripts, actuators, min_interval=60)
    started = act.apply("code", 3, speculative_config=SPEC3, reason="r", now=100.0)
    # apply returned, yet the script cannot have exited: it waits for a file not written yet
    assert started.pending
    assert not started.applied
    assert not (scripts / "release").exists()
    assert "code" in act.running()
    wait_for(lambda: len(starts(scripts)) == 1, "the script to start")
    assert act.poll(101.0) == []  # still running: nothing to report
    assert "code" in act.running()
    (scripts / "release").write_text("0")
    (done,) = finish(act, 130.0)
    assert done.applied
    assert done.exit_status == 0
    assert done.last_line == "deployed k = 3"
    assert done.at == 100.0
    assert done.error == ""
    assert act.poll(131.0) == []  # each outcome is reported once


def test_failure_reports_exit_status_and_last_line(
    scripts: Path, actuators: list[CommandActuator]
) -> None:
    (scripts / "release").write_text("3")
    act = gated(scripts, actuators)
    assert act.apply("chat", 4, speculative_config=SPEC4, reason="", now=0.0).pending
    (failed,) = finish(act)
    assert not failed.applied
    assert failed.exit_status == 3
    assert "exited with status 3" in failed.error
    assert failed.error.endswith("deployed k = 4")


def test_a_second_apply_for_a_class_in_flight_starts_nothing(
    scripts: Path, actuators: list[CommandActuator]
) -> None:
    act = gated(scripts, actuators, min_interval=0)  # no rate limit: only the in-flight rule
    assert act.apply("code", 3, speculative_config=SPEC3, reason="", now=0.0).pending
    wait_for(lambda: len(starts(scripts)) == 1, "the first run to start")
    refused = act.apply("code", 4, speculative_config=SPEC4, reason="", now=1000.0)
    assert not refused.pending
    assert not refused.applied
    assert "still in flight" in refused.detail
    other = act.apply("chat", 4, speculative_config=SPEC4, reason="", now=1000.0)
    assert other.pending  # another class is not blocked
    wait_for(lambda: len(starts(scripts)) == 2, "the chat run to start")
    (scripts / "release").write_text("0")
    results = finish(act)
    assert sorted((r.class_name, r.k, r.applied) for r in results) == [
        ("chat", 4, True),
        ("code", 3, True),
    ]
    assert [s["argv"] for s in starts(scripts)] == [["code", "3"], ["chat", "4"]]
    # once the run is over, the class may run again
    assert act.apply("code", 4, speculative_config=SPEC4, reason="", now=2000.0).pending
    finish(act)
    assert [s["argv"] for s in starts(scripts)][-1] == ["code", "4"]


@pytest.mark.parametrize("grandchild", ["ignore", "obey"], ids=["ignores-sigterm", "obeys"])
def test_timeout_kills_the_whole_process_group(
    scripts: Path, actuators: list[CommandActuator], grandchild: str
) -> None:
    """The old actuator killed only its direct child: the grandchild kept running."""
    argv = [sys.executable, str(scripts / "spawns.py"), str(scripts), grandchild]
    clock = [0.0]  # the timeout is measured on this clock: it passes when the test says
    act = CommandActuator(
        argv, classes=["code"], timeout=60.0, kill_grace=0.5, monotonic=lambda: clock[0]
    )
    actuators.append(act)
    pidfile = scripts / "grandchild.pid"
    assert act.apply(
        "code", 2, speculative_config={"num_speculative_tokens": 2}, reason="", now=0.0
    ).pending
    wait_for(lambda: pidfile.exists() and pidfile.read_text() != "", "the grandchild to start")
    pid = int(pidfile.read_text())
    group = act.running()["code"]
    assert os.getpgid(pid) == group  # the grandchild shares the run's process group
    assert group != os.getpgid(0)  # ... which is not ours
    assert act.poll(0.0) == []
    clock[0] = 61.0  # past the timeout
    (result,) = finish(act)
    assert not result.applied
    assert "ran past 60 s and was killed with its process group" in result.error
    assert "survived" not in result.error
    wait_for(lambda: not alive(pid), f"grandchild {pid} to be gone", timeout=10)
    wait_for(lambda: not alive(group), f"the command {group} to be gone", timeout=10)


def test_close_waits_for_a_run_to_finish_within_its_bound(
    scripts: Path, actuators: list[CommandActuator]
) -> None:
    act = gated(scripts, actuators, timeout=WAIT)
    assert act.apply("code", 3, speculative_config=SPEC3, reason="", now=0.0).pending
    wait_for(lambda: len(starts(scripts)) == 1, "the run to start")
    (scripts / "release").write_text("0")
    (result,) = act.close()  # waits: the run ends on its own, well within its timeout
    assert result.applied
    assert result.last_line == "deployed k = 3"
    assert act.running() == {}


def test_close_kills_a_run_still_in_flight_after_its_bound(
    scripts: Path, actuators: list[CommandActuator]
) -> None:
    act = gated(scripts, actuators, timeout=WAIT, kill_grace=0.5)
    assert act.apply("code", 3, speculative_config=SPEC3, reason="", now=0.0).pending
    wait_for(lambda: len(starts(scripts)) == 1, "the run to start")
    pid = act.running()["code"]
    (result,) = act.close(timeout=0.0)
    assert not result.applied
    assert "was still running when the controller stopped" in result.error
    assert act.running() == {}
    wait_for(lambda: not alive(pid), f"the command {pid} to be gone", timeout=10)


def test_a_restart_script_receives_an_empty_argument_for_k_zero(
    scripts: Path, actuators: list[CommandActuator]
) -> None:
    """What a restart script receives: argv positions never shift; for k = 0 the
    {speculative_config} argument is present and empty (start vLLM without
    --speculative-config); for k > 0 it is the JSON object, keys sorted."""
    (scripts / "release").write_text("0")
    record = "import json, sys; print(json.dumps(sys.argv[1:]))"
    act = CommandActuator(
        [sys.executable, "-c", record, "{class}", "--k={k}", "{speculative_config}"],
        classes=["code"],
        min_interval=0,
    )
    actuators.append(act)
    schedule = {
        "method": "ngram",
        "num_speculative_tokens": 3,
        "num_speculative_tokens_per_batch_size": [[1, 1 << 20, 0]],
    }
    got: dict[str, list[str]] = {}
    for label, k, spec in (("off", 0, None), ("on", 3, SPEC3), ("schedule", 0, schedule)):
        assert act.apply("code", k, speculative_config=spec, reason="", now=0.0).pending
        (result,) = finish(act)
        assert result.applied, result.error
        got[label] = json.loads(result.last_line)
    assert got["off"] == ["code", "--k=0", ""]
    assert got["on"] == ["code", "--k=3", '{"method": "ngram", "num_speculative_tokens": 3}']
    assert got["schedule"][:2] == ["code", "--k=0"]
    assert json.loads(got["schedule"][2]) == schedule


def test_command_not_found_fails_at_once(actuators: list[CommandActuator]) -> None:
    act = CommandActuator(["/nonexistent/deploy-k", "{class}"], classes=["c"])
    actuators.append(act)
    with pytest.raises(ActuatorError, match="was not found; fix \\[actuator\\] argv"):
        act.apply("c", 1, speculative_config={"num_speculative_tokens": 1}, reason="", now=0)
    assert act.running() == {}


# ----------------------------------------------------------------------------- controller


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def demo_controller(
    scripts: Path, actuators: list[CommandActuator]
) -> Iterator[tuple[Controller, CommandActuator, Clock]]:
    """The demo fleet served over HTTP, a controller on a manual clock, the gated command."""
    clock = Clock()
    scenario = get_scenario("demo")
    fleet = SimFleet(scenario, clock=clock, seed=11, restart_delay=120)
    names = tuple(c.name for c in scenario.classes)
    act = gated(scripts, actuators, classes=names, min_interval=120, timeout=WAIT)
    with SimServer(fleet) as server, requests.Session() as session:
        config = parse_config(
            {
                "controller": {"interval": 0.05, "stale_after": "5m"},
                "source": {"urls": server.urls, "timeout": 2},
                "estimator": {"window": "10m", "min_drafts": 200},
                "policy": {"k_max": 8, "min_dwell": "20m", "max_changes_per_hour": 2},
                "classes": [
                    {"name": c.name, "cost": c.cost, "k": c.initial_k, "speculative_config": {}}
                    for c in scenario.classes
                ],
            }
        )
        controller = Controller(
            config,
            source=ScrapeSource(server.urls, session=session, timeout=2),
            actuator=act,
            clock=clock,
            classes=class_config_from(config),
        )
        yield controller, act, clock
        controller.close(timeout=0)


def started_in(state: ControllerState) -> dict[str, ClassStatus]:
    return {c.name: c for c in state.classes if c.actuation.startswith("started")}


def tick_until_started(
    controller: Controller, clock: Clock
) -> tuple[ControllerState, dict[str, int | None]]:
    """Tick a minute at a time until the controller starts a change (at most 30 ticks:
    however long the first decision waits for evidence, it comes within the 10 min window);
    returns that tick's state and the deployed k per class just before it."""
    for _ in range(30):
        old = {n: s.current_k for n, s in controller.gate.states.items()}
        clock.t += 60
        state = controller.step()
        if started_in(state):
            return state, old
    raise AssertionError("the controller started no change in 30 ticks")


def test_a_slow_command_does_not_stall_the_tick(
    demo_controller: tuple[Controller, CommandActuator, Clock], scripts: Path
) -> None:
    """The old actuator ran inside the tick: a 60 s restart stalled every class."""
    controller, act, clock = demo_controller
    state, _ = tick_until_started(controller, clock)
    started = started_in(state)
    # the tick returned while every command it started waits for a file not written yet
    assert not (scripts / "release").exists()
    assert set(act.running()) == set(started)
    for c in started.values():
        assert c.deployed_k == c.recommended_k  # under way: counts for dwell and budget
        assert c.changes == 0  # not applied yet
        assert c.actuation_error == ""
    clock.t += 60
    state = controller.step()  # a tick while the runs are in flight
    assert set(act.running()) == set(started)
    (scripts / "release").write_text("0")
    wait_for(lambda: not act.running(), "the commands to finish")
    clock.t += 60
    state = controller.step()
    after = {c.name: c for c in state.classes}
    for name, first in started.items():
        status = after[name]
        k = first.recommended_k
        assert status.actuation == f"ran {sys.executable} (exit 0): deployed k = {k}"
        assert status.actuation_error == ""
        assert status.changes == 1
        assert status.deployed_k == k
    # one process per class over three ticks
    assert sorted(str(s["argv"][0]) for s in starts(scripts)) == sorted(started)


def test_a_failed_background_run_is_recorded_and_the_class_retried(
    demo_controller: tuple[Controller, CommandActuator, Clock], scripts: Path
) -> None:
    controller, act, clock = demo_controller
    (scripts / "release").write_text("3")
    state, old = tick_until_started(controller, clock)
    first = {c.name: c for c in state.classes}
    started = set(started_in(state))
    wait_for(lambda: not act.running(), "the commands to fail")
    clock.t += 60
    failed = {c.name: c for c in controller.step().classes}
    for name in started:
        k = first[name].recommended_k
        assert failed[name].actuation_error.endswith(f"exited with status 3: deployed k = {k}")
        assert failed[name].actuation.startswith("rate-limited")  # retried after min_interval
        assert failed[name].changes == 0
        assert failed[name].deployed_k == old[name]  # not applied: the old k holds
    (scripts / "release").write_text("0")
    clock.t += 60  # 120 s after the first start: the retry runs
    retried = {c.name: c for c in controller.step().classes}
    assert {n for n in started if retried[n].actuation.startswith("started")} == started
    wait_for(lambda: not act.running(), "the retries to finish")
    clock.t += 60
    done = {c.name: c for c in controller.step().classes}
    for name in started:
        assert done[name].actuation.endswith(f"deployed k = {done[name].deployed_k}")
        assert done[name].actuation_error == ""
        assert done[name].changes == 1
    assert len(starts(scripts)) == 2 * len(started)  # failed once, retried once, per class


def test_controller_close_kills_runs_in_flight_and_keeps_the_old_k(
    demo_controller: tuple[Controller, CommandActuator, Clock], scripts: Path
) -> None:
    controller, act, clock = demo_controller
    state, old = tick_until_started(controller, clock)
    started = set(started_in(state))
    pids = list(act.running().values())
    wait_for(lambda: len(starts(scripts)) == len(started), "the commands to start")
    controller.close(timeout=0)
    assert act.running() == {}
    wait_for(lambda: not any(alive(pid) for pid in pids), "the commands to be gone", timeout=10)
    for name in started:  # not applied: the gate holds the k from before, for a retry
        assert controller.gate.states[name].current_k == old[name]
        assert controller.gate.states[name].changes == ()


def test_run_waits_for_runs_in_flight_before_returning(
    demo_controller: tuple[Controller, CommandActuator, Clock], scripts: Path
) -> None:
    """SIGTERM sets ``stop``: the loop ends its tick, then waits (bounded) for the restarts it
    started instead of leaving them orphaned."""
    controller, act, clock = demo_controller
    stop = threading.Event()
    ticks: list[ControllerState] = []

    def on_tick(state: ControllerState) -> None:
        ticks.append(state)
        clock.t += 60
        if started_in(state) or len(ticks) >= 30:
            assert act.running()  # the tick ended with the commands still in flight
            (scripts / "release").write_text("0")  # they may finish now
            stop.set()

    clock.t += 60
    controller.run(stop, on_tick=on_tick)
    assert act.running() == {}  # run() returned only once the runs had ended
    started = started_in(ticks[-1])
    assert started
    for name, status in started.items():  # the outcomes were recorded: the new k holds
        assert controller.gate.states[name].current_k == status.recommended_k
    assert act.poll(0.0) == []  # collected by the controller, none left behind


def test_specwise_run_waits_for_a_restart_in_flight_on_sigterm(scripts: Path) -> None:
    """`specwise run` as a real process: SIGTERM while a restart runs; the controller ends
    its tick, waits for the run, records its outcome and exits 0."""
    fleet = SimFleet(get_scenario("demo"), clock=time.time, seed=3, restart_delay=1)
    argv = [sys.executable, str(scripts / "gated.py"), str(scripts), "{class}", "{k}"]
    with SimServer(fleet) as server:
        config = scripts / "specwise.toml"
        config.write_text(
            f"""
[controller]
interval = "0.2s"
listen = "127.0.0.1:0"
[source]
urls = {json.dumps(server.urls)}
timeout = "2s"
[estimator]
window = "2s"
min_drafts = 50
[policy]
min_dwell = "1s"
max_changes_per_hour = 100
[actuator]
kind = "command"
argv = {json.dumps(argv)}
timeout = "2m"
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
            [sys.executable, "-m", "specwise", "run", "--config", str(config), "-v", "--nl"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        assert proc.stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
        reader.start()
        try:
            wait_for(lambda: bool(starts(scripts)), "the controller to start a restart")
            proc.send_signal(signal.SIGTERM)
            # stopped ticking, yet still there: waiting for the run, which cannot end yet
            wait_for(lambda: any("waiting up to" in line for line in lines), "the stop to wait")
            assert proc.poll() is None
            (scripts / "release").write_text("0")
            proc.wait(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            reader.join(timeout=WAIT)  # EOF once the process is gone
            proc.stderr.close()
    stderr = "".join(lines)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    for start in starts(scripts):  # each run ended on its own and its outcome was recorded
        name, k = start["argv"]
        applied = f"class {name}: k = {k} applied: ran {sys.executable} (exit 0): deployed k = {k}"
        assert applied in stderr, stderr
    assert "was still running when the controller stopped" not in stderr
