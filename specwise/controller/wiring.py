"""Build the controller's collaborators (source, actuator) from a validated config.

Secrets (bearer token, basic-auth password) are read from files named in the config, at
start, and never logged; TLS verification stays on unless the config turns it off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import requests

from specwise.alerting.alertmanager import AlertmanagerPusher
from specwise.collectors.classes import ClassConfig
from specwise.collectors.prometheus import PrometheusClient, PrometheusSource
from specwise.collectors.scrape import ScrapeSource
from specwise.collectors.snapshot import SnapshotSource
from specwise.config import SpecwiseConfig
from specwise.controller.actuators import Actuator, CommandActuator, DryRunActuator, FileActuator
from specwise.controller.exporter import ExporterServer, controller_registry, make_app
from specwise.controller.loop import Controller, class_config_from
from specwise.errors import ConfigError

__all__ = [
    "build_actuator",
    "build_alert_sink",
    "build_controller",
    "build_source",
    "read_secret",
    "start_exporter",
]


def read_secret(path: str, *, field: str) -> str:
    """The first line of a secret file (whitespace stripped); errors never print the secret."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"{field}: cannot read {path} ({exc.strerror}); check the path and its permissions",
            field=field,
        ) from exc
    if not value:
        raise ConfigError(
            f"{field}: {path} is empty; put the secret on its first line", field=field
        )
    return value


def build_source(
    config: SpecwiseConfig, *, session: requests.Session, classes: ClassConfig
) -> SnapshotSource:
    src = config.source
    if src.kind == "scrape":
        return ScrapeSource(list(src.urls), session=session, timeout=src.timeout)
    verify: bool | str = src.ca_file or src.tls_verify
    cert: tuple[str, str] | str | None = None
    if src.cert_file:
        cert = (src.cert_file, src.key_file) if src.key_file else src.cert_file
    token = (
        read_secret(src.bearer_token_file, field="[source] bearer_token_file")
        if src.bearer_token_file
        else None
    )
    basic = None
    if src.basic_auth_user:
        if not src.basic_auth_password_file:
            raise ConfigError(
                "[source] basic_auth_user is set without basic_auth_password_file; add the "
                "password file",
                field="[source] basic_auth_password_file",
            )
        password = read_secret(
            src.basic_auth_password_file, field="[source] basic_auth_password_file"
        )
        basic = (src.basic_auth_user, password)
    client = PrometheusClient(
        src.url,
        session=session,
        timeout=src.timeout,
        bearer_token=token,
        basic_auth=basic,
        verify=verify,
        cert=cert,
        tenant=src.tenant or None,
    )
    return PrometheusSource(client, classes=classes, initial_window_s=src.window)


def build_actuator(config: SpecwiseConfig) -> Actuator:
    act = config.actuator
    if act.kind == "file":
        return FileActuator(Path(act.dir))
    if act.kind == "command":
        return CommandActuator(act.argv, min_interval=act.min_interval, timeout=act.timeout)
    return DryRunActuator()


def build_alert_sink(
    config: SpecwiseConfig, *, session: requests.Session
) -> AlertmanagerPusher | None:
    """The direct Alertmanager push when ``[alerts] alertmanager_url`` is set, else None."""
    al = config.alerts
    if not al.alertmanager_url:
        return None
    return AlertmanagerPusher(
        al.alertmanager_url,
        session=session,
        settings=al,
        timeout=al.timeout,
        ttl=max(300.0, 4 * config.controller.interval),
    )


def build_controller(
    config: SpecwiseConfig,
    *,
    session: requests.Session,
    clock: Callable[[], float] = time.time,
    dry_run: bool = False,
) -> Controller:
    """A Controller with the source, actuator and alert sink the config names
    (``dry_run``: the dry-run actuator whatever the config says)."""
    classes = class_config_from(config)
    return Controller(
        config,
        source=build_source(config, session=session, classes=classes),
        actuator=DryRunActuator() if dry_run else build_actuator(config),
        classes=classes,
        alert_sink=build_alert_sink(config, session=session),
        clock=clock,
    )


def start_exporter(controller: Controller, host: str, port: int) -> ExporterServer:
    """Serve the controller's /metrics, /healthz and /recommendations (port 0: a free one)."""
    app = make_app(controller_registry(controller.state), controller.state, controller.healthy)
    return ExporterServer(app, host, port).start()
