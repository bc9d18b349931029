"""``specwise run``: the controller as a service beside vLLM."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import click
import requests

from specwise.commands.options import json_option
from specwise.commands.status import format_status
from specwise.config import load_config, parse_listen
from specwise.controller.state import ControllerState
from specwise.controller.wiring import build_controller, start_exporter
from specwise.errors import SourceError
from specwise.output import to_json, to_json_line

__all__ = ["install_stop_signals", "run_command"]


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: the loop finishes its tick and exits cleanly."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


@click.command(
    "run",
    epilog="""\b
Examples:
  specwise run --config config/specwise.example.toml
  specwise run --config prod.toml --once --json     # one tick, print, exit (no change)
  specwise run --config prod.toml --once --apply    # one tick that may apply a change
  curl -s 127.0.0.1:9464/recommendations | jq .     # while it runs
""",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="TOML config (see config/specwise.example.toml; required).",
)
@click.option(
    "--once", is_flag=True, default=False, help="Run one tick, print it, exit (default: loop)."
)
@click.option(
    "--apply",
    is_flag=True,
    default=False,
    help="With --once: apply changes through [actuator] (default: --once only proposes).",
)
@click.option(
    "--nl",
    is_flag=True,
    default=False,
    help="Print one JSON line per tick (default: a table every tick).",
)
@click.option(
    "-v", "--verbose", is_flag=True, default=False, help="Log at INFO (default: WARNING)."
)
@json_option
def run_command(
    config_path: Path, once: bool, apply: bool, nl: bool, verbose: bool, as_json: bool
) -> None:
    """Run the controller: collect vLLM's spec-decode counters, estimate alpha per class,
    recommend k (0 included) with hysteresis, export /metrics, /healthz and
    /recommendations, and apply changes through the configured actuator (dry-run by default).

    With --once: one tick, printed, that never actuates unless --apply is given; exit
    status 1 when no source answered (a smoke check for CI or cron).
    """
    logging.basicConfig(
        level=logging.INFO if verbose else (logging.ERROR if once else logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("specwise.changes").setLevel(logging.INFO)  # one line per applied change
    config = load_config(config_path)
    with requests.Session() as session:
        controller = build_controller(config, session=session, dry_run=once and not apply)
        if once:
            try:
                state = controller.step()
            finally:
                controller.close()  # a command run it started ends (bounded) before we exit
            click.echo(to_json(state.to_json()) if as_json else format_status(state))
            answered = [s for s in state.sources if s.up]
            if not answered:  # a smoke check must fail loudly when nothing could be read
                first = state.sources[0] if state.sources else None
                raise SourceError(
                    f"no source answered ({first.name}: {first.last_error})"
                    if first
                    else "no source is configured; list vLLM /metrics URLs in [source] urls"
                )
            return
        host, port = parse_listen(config.controller.listen)
        server = start_exporter(controller, host, port)
        click.echo(
            f"specwise controller: {server.url}/metrics  {server.url}/recommendations", err=True
        )
        stop = threading.Event()
        install_stop_signals(stop)

        def on_tick(state: ControllerState) -> None:
            if nl:
                click.echo(to_json_line(state.to_json()))
            elif as_json:
                click.echo(to_json(state.to_json()))
            else:
                click.echo(format_status(state) + "\n")

        try:
            controller.run(stop, on_tick=on_tick)
        finally:
            server.stop()
