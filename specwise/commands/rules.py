"""``specwise rules``: write the Prometheus recording and alerting rules file."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import click

from specwise.alerting.rules import AlertRule, build_rules, rules_document, rules_yaml
from specwise.commands.options import json_option
from specwise.config import (
    AlertSettings,
    SpecwiseConfig,
    format_duration,
    load_config,
    parse_duration,
)
from specwise.errors import ConfigError
from specwise.output import format_table, to_json

__all__ = ["rules_command"]

_D = AlertSettings()

#: (option, settings field, help) for every duration option.
_DURATIONS = (
    ("--rate-window", "rate_window", "rate() window of the vLLM recording rules"),
    ("--not-paying-for", "not_paying_for", "how long the deployed k must lose before alerting"),
    ("--acceptance-baseline", "acceptance_baseline", "window of alpha's baseline average"),
    ("--acceptance-baseline-offset", "acceptance_baseline_offset", "how far back it ends"),
    ("--acceptance-dropped-for", "acceptance_dropped_for", "for: of SpecDecodeAcceptanceDropped"),
    ("--k-mismatch-for", "k_mismatch_for", "for: of SpecDecodeKMismatch"),
    ("--stale-for", "stale_for", "for: of SpecwiseDataStale (and the stalled-tick threshold)"),
    ("--source-down-for", "source_down_for", "for: of SpecwiseSourceDown"),
    ("--source-errors-window", "source_errors_window", "increase() window of source errors"),
    ("--source-errors-for", "source_errors_for", "for: of SpecwiseSourceErrors"),
    ("--metrics-absent-lookback", "metrics_absent_lookback", "how far back 'had metrics' looks"),
    ("--metrics-absent-for", "metrics_absent_for", "for: of SpecDecodeMetricsAbsent"),
)


def _duration_options(func: Any) -> Any:
    for flag, attr, text in reversed(_DURATIONS):
        func = click.option(
            flag,
            attr,
            default=None,
            metavar="DURATION",
            help=f"{text[0].upper()}{text[1:]} (default: {format_duration(getattr(_D, attr))}).",
        )(func)
    return func


_EPILOG = """\b
Examples:
  specwise rules --output config/specwise-rules.yml
  specwise rules --config prod.toml -o /etc/prometheus/rules/specwise.yml
  specwise rules --class-label model_name --class-label namespace --not-paying-for 30m
  specwise rules --runbook-base https://wiki.example.com/specwise/runbook --json
  promtool check rules config/specwise-rules.yml

\b
vLLM's series carry model_name (plus the labels Prometheus adds, such as job or
namespace), not specwise's class: the recording rules group by --class-label
(default: [alerts] class_labels, then [source] group_by, then model_name). The alerts
use the controller's own metrics, labelled class.
"""


@click.command("rules", epilog=_EPILOG)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config whose [alerts] table sets the thresholds (default: built-in defaults).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the rules file here (default: print YAML to stdout).",
)
@click.option(
    "--class-label",
    "class_labels",
    multiple=True,
    metavar="LABEL",
    help="vLLM series label(s) that identify a class, repeatable (default: model_name).",
)
@click.option(
    "--runbook-base",
    default=None,
    metavar="URL",
    help=f"Base URL of docs/runbook.md for runbook_url (default: {_D.runbook_base}).",
)
@click.option(
    "--speedup-below",
    type=click.FloatRange(min=0.01, max=10.0),
    default=None,
    help=f"Alert when the deployed k's predicted speedup is below this (default: "
    f"{_D.speedup_below:g}).",
)
@click.option(
    "--not-paying-severity",
    type=click.Choice(["critical", "warning", "info"]),
    default=None,
    help=f"severity of SpecDecodeNotPayingOff (default: {_D.not_paying_severity}).",
)
@click.option(
    "--acceptance-drop-ratio",
    type=click.FloatRange(min=0.01, max=0.99),
    default=None,
    help=f"Alert when alpha falls below this share of its baseline (default: "
    f"{_D.acceptance_drop_ratio:g}).",
)
@_duration_options
@json_option
def rules_command(
    config_path: Path | None,
    output: Path | None,
    class_labels: tuple[str, ...],
    runbook_base: str | None,
    speedup_below: float | None,
    not_paying_severity: str | None,
    acceptance_drop_ratio: float | None,
    as_json: bool,
    **durations: str | None,
) -> None:
    """Generate the Prometheus rules file: recording rules for mean acceptance length and
    per-position survival straight from vLLM's counters (both vllm: and vllm_ spellings),
    and alerts on the controller's metrics (spec decode not paying off, acceptance drop,
    recommended != deployed k, stale data, source errors, vanished spec-decode metrics).
    Flags override the config's [alerts] table."""
    config = load_config(config_path) if config_path is not None else SpecwiseConfig()
    settings = config.alerts
    changes: dict[str, Any] = {}
    for flag, attr, _ in _DURATIONS:
        value = durations.get(attr)
        if value is not None:
            changes[attr] = parse_duration(value, field=flag)
    for label in class_labels:
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label) or label.startswith("__"):
            raise ConfigError(
                f"--class-label {label!r} is not a Prometheus label name; use e.g. model_name",
                field="--class-label",
            )
    if class_labels:
        changes["class_labels"] = class_labels
    if runbook_base is not None:
        if not runbook_base.startswith(("http://", "https://")):
            raise ConfigError(
                f"--runbook-base {runbook_base!r} must start with http:// or https://",
                field="--runbook-base",
            )
        changes["runbook_base"] = runbook_base
    if speedup_below is not None:
        changes["speedup_below"] = speedup_below
    if not_paying_severity is not None:
        changes["not_paying_severity"] = not_paying_severity
    if acceptance_drop_ratio is not None:
        changes["acceptance_drop_ratio"] = acceptance_drop_ratio
    settings = dataclasses.replace(settings, **changes)
    groups = build_rules(settings, class_labels=config.source.group_by)
    if as_json:
        click.echo(to_json(rules_document(groups)))
    elif output is None:
        click.echo(rules_yaml(groups, header=_header()), nl=False)
    if output is not None:
        try:
            output.write_text(rules_yaml(groups, header=_header()), encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot write {output} ({exc.strerror}); check the --output path",
                field="--output",
            ) from exc
        if not as_json:
            rows = [
                (g.name, r.alert if isinstance(r, AlertRule) else r.record)
                for g in groups
                for r in g.rules
            ]
            click.echo(format_table(["group", "rule"], rows), err=True)
            click.echo(f"Wrote {len(rows)} rules to {output}", err=True)


def _header() -> str:
    return (
        "Generated by `specwise rules`: regenerate it instead of editing by hand.\n"
        "Check: promtool check rules <this file>"
    )
