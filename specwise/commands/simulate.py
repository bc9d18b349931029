"""``specwise sim``: serve a simulated vLLM fleet on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import click

from specwise.commands.options import json_option
from specwise.commands.run import install_stop_signals
from specwise.errors import ConfigError
from specwise.output import format_table, to_json
from specwise.sim.fleet import FileWatcher, SimFleet, SimServer, scaled_clock
from specwise.sim.scenarios import SCENARIOS, get_scenario

__all__ = ["sim_command"]


@click.command(
    "sim",
    epilog="""\b
Examples:
  specwise sim --scenario demo --duration 600
  specwise sim --port 8000                          # engines on 8000, 8001, ...
  specwise sim --scenario drafter-failure --speed 60 --watch out/speculative-configs
  specwise scrape http://127.0.0.1:PORT/metrics     # against one of the printed URLs
""",
)
@click.option(
    "--scenario",
    type=click.Choice(sorted(SCENARIOS)),
    default="demo",
    show_default=True,
    help="Scenario schedule of the fleet.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    help="Simulated seconds per wall-clock second.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.0),
    default=0.0,
    show_default=True,
    help="Wall-clock seconds to serve; 0 serves until Ctrl-C or SIGTERM.",
)
@click.option(
    "--watch",
    "watch_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Apply the file actuator's <class>.json outputs from this folder (closed loop; "
    "default: off).",
)
@click.option(
    "--restart-delay",
    type=click.FloatRange(min=0.0),
    default=120.0,
    show_default=True,
    help="Simulated seconds an engine serves nothing after a k change.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port of the first engine's /metrics; the next engines take the next ports in "
    "order (--port 8000 with 3 engines: 8000, 8001, 8002); 0 picks free ports.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the counters.")
@json_option
def sim_command(
    scenario: str,
    speed: float,
    duration: float,
    watch_dir: Path | None,
    restart_delay: float,
    port: int,
    seed: int,
    as_json: bool,
) -> None:
    """Serve /metrics pages in vLLM's exact V1 format for a simulated fleet (one URL per
    engine), with acceptance following a scenario schedule and k changes as restarts."""
    spec = get_scenario(scenario)
    fleet = SimFleet(spec, clock=scaled_clock(speed), seed=seed, restart_delay=restart_delay)
    watcher = FileWatcher(fleet, watch_dir) if watch_dir else None
    n = len(fleet.engines)
    if port and port + n - 1 > 65535:
        raise click.UsageError(
            f"--port {port} leaves no room for {n} engines (ports {port}..{port + n - 1}); "
            f"pick a port at most {65536 - n}, or 0 for free ports"
        )
    ports = [port + i for i in range(n)] if port else []
    try:
        server = SimServer(fleet, ports=ports)
    except OSError as exc:
        where = f"ports {port}..{port + n - 1}" if port else "a free port"
        raise ConfigError(
            f"Cannot serve the simulated engines on 127.0.0.1 {where} ({exc.strerror or exc}); "
            "pick another --port, or --port 0 for free ports",
            field="--port",
        ) from exc
    with server:
        targets = server.targets()
        if as_json:
            click.echo(to_json([{"class": c, "url": u} for c, u in targets]))
        else:
            click.echo(f"Scenario {spec.name}: {spec.description}")
            click.echo(format_table(["class", "url"], targets))
        stop = threading.Event()
        install_stop_signals(stop)
        deadline = time.monotonic() + duration if duration > 0 else None
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if watcher is not None:
                for class_name, k in watcher.poll():
                    click.echo(f"applied k = {k} to class {class_name} (engines restart)", err=True)
                for why in watcher.skipped:
                    click.echo(f"Warning: {why}", err=True)
            stop.wait(0.5)
