"""``specwise demo``: a simulated fleet and the controller, closed loop, no external service."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
import time
from pathlib import Path

import click
import requests

from specwise.commands.demo_score import demo_score, score_lines
from specwise.commands.run import install_stop_signals
from specwise.commands.status import format_status
from specwise.config import (
    ActuatorSettings,
    ClassSettings,
    ControllerSettings,
    EstimatorSettings,
    PolicySettings,
    SourceSettings,
    SpecwiseConfig,
)
from specwise.controller.state import ControllerState
from specwise.controller.wiring import build_controller, start_exporter
from specwise.sim.fleet import FileWatcher, SimFleet, SimServer, scaled_clock
from specwise.sim.scenarios import Scenario, get_scenario

__all__ = ["demo_command", "demo_config", "demo_scenario", "load_changes"]


def load_changes(state: ControllerState, names: set[str], answers: dict[str, str]) -> list[str]:
    """One line per load-varying class whose recommended configuration changed since the
    last call (``answers`` remembers them): the load it saw and what it now recommends."""
    out = []
    for c in state.classes:
        load = c.load or {}
        rec = load.get("recommended") or {}
        if c.name not in names or not rec:
            continue
        answer = "off (no drafter)" if rec.get("k") == 0 else str(rec.get("describe", ""))
        if answers.get(c.name) == answer:
            continue
        answers[c.name] = answer
        batch = load.get("batch") or {}
        measured = load.get("measured") or {}
        seen = (
            f"mean batch {batch['mean']:.0f} running requests"
            if isinstance(batch.get("mean"), (int, float))
            else "its load"
        )
        got = (
            f", measured {measured['value']:.2f}x at the deployed configuration"
            if isinstance(measured.get("value"), (int, float))
            else ""
        )
        out.append(f"{c.name}: {seen}{got}: recommends {answer}")
    return out


#: Suffix of the plain replica the demo serves beside each load-varying class.
PLAIN_SUFFIX = "-plain"


def demo_scenario() -> Scenario:
    """The "demo" scenario plus, for each load-varying class, a replica of the same model
    served without speculation (its own ``model_name``, ``<class>-plain``, matched into the
    same class): its load-only windows give the plain step T(0, B) the measured speedup is
    taken against, as a replica without speculation does on a real fleet. The actuator only
    ever restarts the class's own engines; the replica stays plain."""
    base = get_scenario("demo")
    plain = tuple(
        dataclasses.replace(c, name=c.name + PLAIN_SUFFIX, initial_k=0, initial_schedule=None)
        for c in base.classes
        if c.batch is not None
    )
    return dataclasses.replace(base, classes=(*base.classes, *plain))


def demo_config(urls: list[str], out_dir: Path, *, port: int = 0) -> SpecwiseConfig:
    """The controller config the demo runs (times are simulated seconds)."""
    scenario = get_scenario("demo")
    return SpecwiseConfig(
        controller=ControllerSettings(interval=1.0, listen=f"127.0.0.1:{port}", stale_after=300.0),
        source=SourceSettings(kind="scrape", urls=tuple(urls), timeout=2.0),
        estimator=EstimatorSettings(window=600.0, min_drafts=200),
        policy=PolicySettings(k_max=8, min_gain=0.05, min_dwell=600.0, max_changes_per_hour=3),
        actuator=ActuatorSettings(kind="file", dir=str(out_dir)),
        classes=tuple(
            ClassSettings(
                c.name,
                match=(
                    f'{{model_name=~"{c.name}|{c.name}{PLAIN_SUFFIX}"}}'
                    if c.batch is not None
                    else ""
                ),
                cost=c.cost,
                k=c.initial_k,
                speculative_config={"method": "eagle" if c.cost < 0.1 else "draft_model"},
            )
            for c in scenario.classes
        ),
    )


@click.command(
    "demo",
    epilog="""\b
Examples:
  specwise demo                      # 60 s: two simulated hours, then exits
  specwise demo --duration 0         # until Ctrl-C
  specwise demo --speed 120 --port 9464
""",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.0),
    default=60.0,
    show_default=True,
    help="Wall-clock seconds to run; 0 runs until Ctrl-C.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=1.0, max=600.0),
    default=120.0,
    show_default=True,
    help="Simulated seconds per wall-clock second (120: the scenario's two hours in a minute).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port of the controller's /metrics on 127.0.0.1 (0 picks a free one).",
)
@click.option(
    "--refresh",
    type=click.FloatRange(min=0.5),
    default=10.0,
    show_default=True,
    help="Wall-clock seconds between live tables.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed of the fleet.")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    default=False,
    help="Log the controller's warnings too (default: errors only; the 503s of restarting "
    "engines are expected here).",
)
def demo_command(
    duration: float, speed: float, port: int, refresh: float, seed: int, verbose: bool
) -> None:
    """Start a small simulated vLLM fleet and the controller on 127.0.0.1, closed loop
    (the file actuator's outputs restart the simulated engines), and show a live table:
    class, alpha, k (deployed -> recommended), predicted speedup, and why."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    scenario = demo_scenario()
    clock = scaled_clock(speed)
    fleet = SimFleet(scenario, clock=clock, seed=seed, restart_delay=120.0)
    stop = threading.Event()
    install_stop_signals(stop)
    with tempfile.TemporaryDirectory(prefix="specwise-demo-") as tmp, SimServer(fleet) as sims:
        out_dir = Path(tmp) / "speculative-configs"
        config = demo_config(sims.urls, out_dir, port=port)
        watcher = FileWatcher(fleet, out_dir)
        with requests.Session() as session:
            controller = build_controller(config, session=session, clock=clock)
            server = start_exporter(controller, "127.0.0.1", port)
            click.echo(f"Scenario: {scenario.description}")
            click.echo(f"Simulated vLLM engines ({speed:g}x real time):")
            for name, url in sims.targets():
                click.echo(f"  {name:<10} {url}")
            click.echo(f"Controller: {server.url}/metrics  {server.url}/recommendations")
            click.echo(f"File actuator output: {out_dir} (temporary, removed on exit)\n")
            t0 = clock()
            last_table = [time.monotonic()]
            varying = {c.name for c in scenario.classes if c.batch is not None}

            answers: dict[str, str] = {}

            def on_tick(state: ControllerState) -> None:
                for name, k in watcher.poll():
                    click.echo(f"[{(clock() - t0) / 60:5.1f} min] {name}: restarting with k = {k}")
                for line in load_changes(state, varying, answers):
                    click.echo(f"[{(clock() - t0) / 60:5.1f} min] {line}")
                if time.monotonic() - last_table[0] >= refresh:
                    last_table[0] = time.monotonic()
                    click.echo(f"--- simulated minute {(clock() - t0) / 60:.0f} ---")
                    click.echo(format_status(state) + "\n")

            runner = threading.Thread(
                target=controller.run, args=(stop,), kwargs={"on_tick": on_tick}, daemon=True
            )
            runner.start()
            deadline = time.monotonic() + duration if duration > 0 else None
            try:
                while runner.is_alive() and not stop.is_set():
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    stop.wait(0.2)
            finally:
                stop.set()
                runner.join(timeout=10)
                server.stop()
            final = controller.state()
            click.echo(f"--- final, after {(clock() - t0) / 60:.0f} simulated minutes ---")
            click.echo(format_status(final))
            for c in final.classes:
                engines = fleet.engines_of(c.name)
                click.echo(
                    f"{c.name}: {sum(e.stats.restarts for e in engines)} restart(s), "
                    f"k now {fleet.deployed_k(c.name)}"
                )
            fleet.advance(clock())
            score = demo_score(fleet, get_scenario("demo"), seconds=clock() - fleet.t0, seed=seed)
            click.echo("")
            for line in score_lines(score):
                click.echo(line)
