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
from specwise.collectors.urls import bad_token_char
from specwise.config import SpecwiseConfig
from specwise.controller.actuators import Actuator, CommandActuator, DryRunActuator, FileActuator
from specwise.controller.exporter import ExporterServer, controller_registry, make_app
from specwise.controller.loop import Controller, class_config_from
from specwise.controller.probing import probe_trigger
from specwise.errors import ConfigError

__all__ = [
    "build_actuator",
    "build_alert_sink",
    "build_controller",
    "build_source",
    "read_secret",
    "start_exporter",
]


def read_secret(path: str, *, field: str, config_path: str = "", kind: str = "token") -> str:
    """The one line of a secret file (surrounding whitespace stripped), checked so that it
    can be sent: a ``token`` is visible ASCII, a ``password`` has no control character.

    Errors name the config file, the setting and the secret file, never the secret.
    """
    where = f"{config_path}: " if config_path else ""

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"{where}{field} = {path!r}: {problem}", field=field)

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise fail(f"cannot read it ({exc.strerror}); check the path and its permissions") from exc
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise fail(
            f"the file is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
            "write the secret alone, as plain text"
        ) from exc
    if not value:
        raise fail("the file is empty; put the secret on its first line")
    lines = value.splitlines()
    if len(lines) > 1:
        raise fail(f"the file holds {len(lines)} lines; put the secret alone on one line")
    if kind == "token":
        why = bad_token_char(value)
        if why:
            raise fail(
                f"the token cannot be sent in an HTTP header: {why}; write the token alone, "
                "in plain ASCII"
            )
    elif any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise fail(f"the {kind} contains a control character; write it alone on one line")
    return value


def _credentials(
    config: SpecwiseConfig,
) -> tuple[bool | str, str | tuple[str, str] | None, str | None, tuple[str, str] | None]:
    """verify, client cert, bearer token and basic auth of ``[source]``, secrets read now."""
    src = config.source
    verify: bool | str = src.ca_file or src.tls_verify
    cert: tuple[str, str] | str | None = None
    if src.cert_file:
        cert = (src.cert_file, src.key_file) if src.key_file else src.cert_file
    token = (
        read_secret(
            src.bearer_token_file, field="[source] bearer_token_file", config_path=config.path
        )
        if src.bearer_token_file
        else None
    )
    basic = None
    if src.basic_auth_user:
        if not src.basic_auth_password_file:
            where = f"{config.path}: " if config.path else ""
            raise ConfigError(
                f"{where}[source] basic_auth_user is set without basic_auth_password_file; add "
                "the password file",
                field="[source] basic_auth_password_file",
            )
        password = read_secret(
            src.basic_auth_password_file,
            field="[source] basic_auth_password_file",
            config_path=config.path,
            kind="password",
        )
        basic = (src.basic_auth_user, password)
    return verify, cert, token, basic


def build_source(
    config: SpecwiseConfig, *, session: requests.Session, classes: ClassConfig
) -> SnapshotSource:
    """The configured source; with ``kind = "scrape"`` the TLS and auth settings of
    ``[source]`` apply to every /metrics URL (vLLM's --api-key protects /metrics)."""
    src = config.source
    verify, cert, token, basic = _credentials(config)
    if src.kind == "scrape":
        return ScrapeSource(
            list(src.urls),
            session=session,
            timeout=src.timeout,
            verify=verify,
            cert=cert,
            bearer_token=token,
            basic_auth=basic,
            headers={"X-Scope-OrgID": src.tenant} if src.tenant else None,
        )
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
        return FileActuator(Path(act.dir), mode=act.file_mode)
    if act.kind == "command":
        return CommandActuator(
            act.argv,
            classes=[c.name for c in config.classes],  # only declared names reach argv
            k_max=config.policy.k_max,
            min_interval=act.min_interval,
            timeout=act.timeout,
        )
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
    app = make_app(
        controller_registry(controller.state),
        controller.state,
        controller.healthy,
        probe=probe_trigger(controller),  # POST /probe?class=NAME (#15)
    )
    return ExporterServer(app, host, port).start()
