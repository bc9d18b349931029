"""``specwise probe CLASS``: ask a running controller to probe a class (#15)."""

from __future__ import annotations

from pathlib import Path

import click
import requests

from specwise.config import load_config, parse_listen
from specwise.errors import SourceError

__all__ = ["probe_command"]


@click.command(
    "probe",
    epilog="""\b
Examples:
  specwise probe code --config prod.toml          # the controller at [controller] listen
  specwise probe code --url http://127.0.0.1:9464
  curl -X POST '127.0.0.1:9464/probe?class=code'  # the same over HTTP
""",
)
@click.argument("class_name", metavar="CLASS")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The controller's TOML config: its [controller] listen address (default: --url).",
)
@click.option(
    "--url",
    default=None,
    help="The controller's base URL (default: from --config, else http://127.0.0.1:9464).",
)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for it.")
def probe_command(
    class_name: str, config_path: Path | None, url: str | None, timeout: float
) -> None:
    """Ask the running controller to probe CLASS as soon as its budget allows: a class at
    k = 0 re-measures its drafter (a dry-run controller only proposes it). The probe's
    result appears in /recommendations and the status table."""
    if url is None:
        host, port = ("127.0.0.1", 9464)
        if config_path is not None:
            host, port = parse_listen(load_config(config_path).controller.listen)
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard listen: call loopback
            host = "127.0.0.1"
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    target = f"{url.rstrip('/')}/probe"
    try:
        resp = requests.post(target, params={"class": class_name}, timeout=timeout)
    except requests.RequestException as exc:
        raise SourceError(
            f"no specwise controller answered at {url} ({type(exc).__name__}); start "
            "`specwise run --config FILE` or pass its address with --url",
            url=url,
        ) from exc
    text = resp.text.strip()
    if resp.status_code != 202:
        raise SourceError(
            text or f"the controller at {url} answered {resp.status_code}",
            url=url,
            status_code=resp.status_code,
        )
    click.echo(text)
