"""The controller's TOML configuration, validated at start.

Every bad value raises a ``ConfigError`` whose message names the field (``[policy]
min_gain``), the value and the fix. ``config/specwise.example.toml`` is the annotated example.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from specwise.collectors.classes import ClassConfig, parse_selector
from specwise.errors import ConfigError
from specwise.model import MAX_K
from specwise.policies.presets import DRAFTER_COSTS

__all__ = [
    "ActuatorSettings",
    "AlertSettings",
    "ClassSettings",
    "ControllerSettings",
    "EstimatorSettings",
    "PolicySettings",
    "SourceSettings",
    "SpecwiseConfig",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_listen",
]


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: object, *, field: str) -> float:
    """'30s', '5m', '1h30m', '2d' or a number of seconds -> seconds (> 0)."""
    if isinstance(value, bool):
        raise ConfigError(
            f"{field} = {value!r} is not a duration; write e.g. '30s' or '5m'", field=field
        )
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        pos, seconds = 0, 0.0
        while pos < len(text):
            m = _DURATION.match(text, pos)
            if m is None:
                raise ConfigError(
                    f"{field} = {value!r} is not a duration; write e.g. '30s', '5m', '1h30m'",
                    field=field,
                )
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if not text:
            raise ConfigError(f"{field} is empty; write a duration such as '5m'", field=field)
    else:
        raise ConfigError(f"{field} = {value!r} is not a duration; write e.g. '5m'", field=field)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"{field} = {value!r} must be a positive duration", field=field)
    return seconds


_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>\d{1,5})")


def parse_listen(value: str, *, field: str = "[controller] listen") -> tuple[str, int]:
    """'127.0.0.1:9464', 'localhost:9464' or '[::1]:9464' -> (host, port); port 0 = any free."""
    m = _LISTEN.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None or int(m.group("port")) > 65535:
        raise ConfigError(
            f"{field} = {value!r} must be host:port with a port in 0..65535, e.g. "
            "127.0.0.1:9464 or [::1]:9464 (IPv6 in brackets)",
            field=field,
        )
    return m.group("v6") or m.group("host"), int(m.group("port"))


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest exact Prometheus duration ('90s' -> '90s', 3600 -> '1h')."""
    whole = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


@dataclass(frozen=True)
class SourceSettings:
    """Where counters come from: direct scrape of vLLM /metrics URLs, or a Prometheus API."""

    kind: Literal["scrape", "prometheus"] = "scrape"
    urls: tuple[str, ...] = ()
    url: str = ""
    timeout: float = 5.0
    window: float = 600.0
    group_by: tuple[str, ...] = ("model_name",)
    bearer_token_file: str = ""
    basic_auth_user: str = ""
    basic_auth_password_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    tenant: str = ""
    tls_verify: bool = True


@dataclass(frozen=True)
class EstimatorSettings:
    window: float = 600.0
    mode: Literal["sliding", "ewma"] = "sliding"
    half_life: float = 300.0
    min_drafts: float = 200.0


@dataclass(frozen=True)
class PolicySettings:
    k_max: int = 8
    min_gain: float = 0.05
    min_dwell: float = 1800.0
    max_changes_per_hour: int = 2
    tolerance: float = 0.01
    off_mode: Literal["restart", "schedule"] = "restart"
    verify_slope: float = 0.0
    #: load-aware pricing (docs/design.md, the cost side)
    schedules: bool = True
    max_batch_size: int = 256
    edge_margin: float = 0.25
    load_horizon: float = 86400.0
    min_band_share: float = 0.05


@dataclass(frozen=True)
class ActuatorSettings:
    kind: Literal["dry-run", "file", "command"] = "dry-run"
    dir: str = ""
    argv: tuple[str, ...] = ()
    min_interval: float = 600.0
    timeout: float = 300.0
    file_mode: int = 0o644


def _file_mode(a: _Section) -> int:
    """``[actuator] file_mode``: a quoted octal mode such as "0644"; never world-writable."""
    raw = a.data.get("file_mode", "0644")
    text = raw.removeprefix("0o") if isinstance(raw, str) else ""
    if not text or any(ch not in "01234567" for ch in text) or int(text, 8) > 0o777:
        raise ConfigError(
            f"{a.where('file_mode')} = {raw!r} is not an octal file mode; write it quoted, "
            'such as file_mode = "0644"',
            field=a.where("file_mode"),
        )
    mode = int(text, 8)
    if mode & 0o002:
        raise ConfigError(
            f"{a.where('file_mode')} = {raw!r} lets every user rewrite the config a deploy "
            'tool will apply; drop the world-write bit, such as file_mode = "0644"',
            field=a.where("file_mode"),
        )
    return mode


@dataclass(frozen=True)
class AlertSettings:
    """Alert thresholds and durations (shared by ``specwise rules`` and the direct push).

    Durations are seconds. ``class_labels`` groups vLLM's own series in the recording rules
    (empty: ``[source] group_by``); ``alertmanager_url`` turns on the direct push.
    """

    alertmanager_url: str = ""
    generator_url: str = ""
    timeout: float = 5.0
    runbook_base: str = "https://github.com/specwise/specwise/blob/main/docs/runbook.md"
    class_labels: tuple[str, ...] = ()
    rate_window: float = 300.0
    speedup_below: float = 1.0
    not_paying_for: float = 900.0
    not_paying_severity: Literal["critical", "warning", "info"] = "critical"
    acceptance_drop_ratio: float = 0.7
    acceptance_baseline: float = 86400.0
    acceptance_baseline_offset: float = 3600.0
    acceptance_dropped_for: float = 900.0
    k_mismatch_for: float = 7200.0
    stale_for: float = 600.0
    source_down_for: float = 300.0
    source_errors_window: float = 600.0
    source_errors_for: float = 600.0
    metrics_absent_lookback: float = 21600.0
    metrics_absent_for: float = 600.0


@dataclass(frozen=True)
class ClassSettings:
    """One workload class: how to recognise its series, its drafter cost, its deployed k."""

    name: str
    match: str = ""
    cost: float = 0.05
    k: int | None = None
    speculative_config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ControllerSettings:
    interval: float = 30.0
    listen: str = "127.0.0.1:9464"
    stale_after: float = 300.0
    state_file: str = ""


@dataclass(frozen=True)
class SpecwiseConfig:
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    source: SourceSettings = field(default_factory=SourceSettings)
    estimator: EstimatorSettings = field(default_factory=EstimatorSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    actuator: ActuatorSettings = field(default_factory=ActuatorSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    classes: tuple[ClassSettings, ...] = ()
    #: The file it was loaded from ("" when built in code): errors found later name it.
    path: str = ""

    def class_settings(self, name: str) -> ClassSettings | None:
        for c in self.classes:
            if c.name == name:
                return c
        return None


def _did_you_mean(word: str, allowed: set[str]) -> str:
    close = difflib.get_close_matches(word, sorted(allowed), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _shown_key(key: str) -> str:
    """A key as written in TOML: bare when it can be, else quoted with escapes (one line)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else repr(key)


class _Section:
    """Reads one TOML table, naming ``[section] key`` in every error, and rejects unknown keys."""

    def __init__(self, name: str, data: object, allowed: set[str], *, label: str = "") -> None:
        #: How a user finds the table in the file: "[policy]", "[[classes]] #2".
        self.label = label or f"[{name}]"
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{self.label} must be a table of settings, not {data!r}", field=name)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(
                f"{'the config file' if name == 'top level' else self.label} has unknown "
                f"{'section' if name == 'top level' else 'setting'}(s) "
                f"{', '.join(_shown_key(k) for k in unknown)}"
                f"{_did_you_mean(unknown[0], allowed)}; known: "
                f"{', '.join(sorted(allowed))}",
                field=f"{name}.{unknown[0]}",
            )
        self.name = name
        self.data: dict[str, Any] = data

    def where(self, key: str) -> str:
        return f"{self.label} {key}"

    def has(self, key: str) -> bool:
        return key in self.data

    def duration(self, key: str, default: float) -> float:
        return (
            parse_duration(self.data[key], field=self.where(key)) if key in self.data else default
        )

    def number(self, key: str, default: float, *, low: float, high: float = math.inf) -> float:
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"{self.where(key)} = {value!r} must be a number", field=self.where(key)
            )
        if not (low <= float(value) <= high):
            bound = f"between {low:g} and {high:g}" if high < math.inf else f">= {low:g}"
            raise ConfigError(
                f"{self.where(key)} = {value!r} is out of range; it must be {bound}",
                field=self.where(key),
            )
        return float(value)

    def integer(self, key: str, default: int, *, low: int, high: int = 10**9) -> int:
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(
                f"{self.where(key)} = {value!r} must be a whole number between {low} and {high}",
                field=self.where(key),
            )
        return value

    def string(self, key: str, default: str = "", *, choices: tuple[str, ...] = ()) -> str:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, str):
            raise ConfigError(
                f"{self.where(key)} = {value!r} must be a string", field=self.where(key)
            )
        if choices and value not in choices:
            raise ConfigError(
                f"{self.where(key)} = {value!r} is unknown; use one of {', '.join(choices)}",
                field=self.where(key),
            )
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(
                f"{self.where(key)} = {value!r} must be a list of strings", field=self.where(key)
            )
        return tuple(value)

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            raise ConfigError(
                f"{self.where(key)} = {value!r} must be true or false", field=self.where(key)
            )
        return value


def _group_by(s: _Section) -> tuple[str, ...]:
    labels = s.strings("group_by", ("model_name",))
    try:
        ClassConfig(group_by=labels)
    except ConfigError as exc:
        raise ConfigError(f"{s.where('group_by')}: {exc}", field=s.where("group_by")) from exc
    return labels


def _classes(raw: object) -> tuple[ClassSettings, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(
            "classes must be an array of tables: write [[classes]] blocks", field="classes"
        )
    out: list[ClassSettings] = []
    allowed = {"name", "match", "cost", "drafter", "k", "speculative_config"}
    for i, item in enumerate(raw):
        # Numbered as a user counts the blocks in the file: the first [[classes]] is #1.
        given = item.get("name") if isinstance(item, dict) else None
        label = f"[[classes]] #{i + 1}" + (f" ({given!r})" if isinstance(given, str) else "")
        s = _Section(f"classes.{i}", item, allowed, label=label)
        name = s.string("name")
        if not name:
            raise ConfigError(
                f'[[classes]] #{i + 1} has no name; add name = "code" to it',
                field=s.where("name"),
            )
        if s.has("cost") and s.has("drafter"):
            raise ConfigError(
                f"{s.label} sets both cost and drafter; keep one (drafter picks a preset cost)",
                field=s.where("cost"),
            )
        drafter = s.string("drafter", choices=tuple(DRAFTER_COSTS)) if s.has("drafter") else ""
        cost = DRAFTER_COSTS[drafter] if drafter else s.number("cost", 0.05, low=0.0, high=10.0)
        k = s.integer("k", 0, low=0, high=MAX_K) if s.has("k") else None
        spec = s.data.get("speculative_config", {})
        if not isinstance(spec, dict):
            raise ConfigError(
                f"{s.label} speculative_config must be a table such as "
                '{ method = "eagle", model = "..." }',
                field=s.where("speculative_config"),
            )
        match = s.string("match")
        if match:
            try:
                parse_selector(match)
            except ConfigError as exc:
                raise ConfigError(f"{s.where('match')}: {exc}", field=s.where("match")) from exc
        out.append(ClassSettings(name, match, cost, k, dict(spec)))
    names = [c.name for c in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"class {dupes[0]!r} is defined twice (as [[classes]] #"
            f"{' and #'.join(str(i + 1) for i, n in enumerate(names) if n == dupes[0])}); "
            "give each class one [[classes]] entry",
            field="classes",
        )
    return tuple(out)


_ALERT_DURATIONS = (
    "timeout",
    "rate_window",
    "not_paying_for",
    "acceptance_baseline",
    "acceptance_baseline_offset",
    "acceptance_dropped_for",
    "k_mismatch_for",
    "stale_for",
    "source_down_for",
    "source_errors_window",
    "source_errors_for",
    "metrics_absent_lookback",
    "metrics_absent_for",
)


def _alerts(raw: object) -> AlertSettings:
    """The ``[alerts]`` table: push target, runbook base URL, thresholds and durations."""
    d = AlertSettings()
    al = _Section(
        "alerts",
        raw,
        {
            "alertmanager_url",
            "generator_url",
            "runbook_base",
            "class_labels",
            "speedup_below",
            "not_paying_severity",
            "acceptance_drop_ratio",
            *_ALERT_DURATIONS,
        },
    )
    for key in ("alertmanager_url", "generator_url", "runbook_base"):
        url = al.string(key)
        if url and not re.match(r"https?://", url):
            raise ConfigError(
                f"[alerts] {key} = {url!r} must start with http:// or https://",
                field=f"[alerts] {key}",
            )
    labels = al.strings("class_labels")
    for label in labels:
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label) or label.startswith("__"):
            raise ConfigError(
                f"[alerts] class_labels entry {label!r} is not a Prometheus label name; "
                'use names such as "model_name" or "namespace"',
                field="[alerts] class_labels",
            )
    durations = {k: al.duration(k, getattr(d, k)) for k in _ALERT_DURATIONS}
    return AlertSettings(
        alertmanager_url=al.string("alertmanager_url"),
        generator_url=al.string("generator_url"),
        runbook_base=al.string("runbook_base", d.runbook_base),
        class_labels=labels,
        speedup_below=al.number("speedup_below", d.speedup_below, low=0.01, high=10.0),
        not_paying_severity=al.string(  # type: ignore[arg-type]
            "not_paying_severity", d.not_paying_severity, choices=("critical", "warning", "info")
        ),
        acceptance_drop_ratio=al.number(
            "acceptance_drop_ratio", d.acceptance_drop_ratio, low=0.01, high=0.99
        ),
        **durations,
    )


def parse_config(data: Mapping[str, Any]) -> SpecwiseConfig:
    """Validate a parsed TOML document into a SpecwiseConfig."""
    top = _Section(
        "top level",
        dict(data),
        {"controller", "source", "estimator", "policy", "actuator", "alerts", "classes"},
    )
    c = _Section(
        "controller",
        top.data.get("controller"),
        {"interval", "listen", "stale_after", "state_file"},
    )
    listen = c.string("listen", "127.0.0.1:9464")
    parse_listen(listen)
    controller = ControllerSettings(
        interval=c.duration("interval", 30.0),
        listen=listen,
        stale_after=c.duration("stale_after", 300.0),
        state_file=c.string("state_file"),
    )
    s = _Section(
        "source",
        top.data.get("source"),
        {
            "kind",
            "urls",
            "url",
            "timeout",
            "window",
            "group_by",
            "bearer_token_file",
            "basic_auth_user",
            "basic_auth_password_file",
            "ca_file",
            "cert_file",
            "key_file",
            "tenant",
            "tls_verify",
        },
    )
    kind = s.string("kind", "scrape", choices=("scrape", "prometheus"))
    source = SourceSettings(
        kind=kind,  # type: ignore[arg-type]
        urls=s.strings("urls"),
        url=s.string("url"),
        timeout=s.duration("timeout", 5.0),
        window=s.duration("window", 600.0),
        group_by=_group_by(s),
        bearer_token_file=s.string("bearer_token_file"),
        basic_auth_user=s.string("basic_auth_user"),
        basic_auth_password_file=s.string("basic_auth_password_file"),
        ca_file=s.string("ca_file"),
        cert_file=s.string("cert_file"),
        key_file=s.string("key_file"),
        tenant=s.string("tenant"),
        tls_verify=s.boolean("tls_verify", True),
    )
    if kind == "scrape" and not source.urls:
        raise ConfigError(
            '[source] urls is empty; list the vLLM /metrics URLs, e.g. urls = ["http://127.0.0.1:8000/metrics"]',
            field="[source] urls",
        )
    if kind == "prometheus" and not source.url:
        raise ConfigError(
            '[source] url is empty; set the Prometheus base URL, e.g. url = "http://127.0.0.1:9090"',
            field="[source] url",
        )
    for u in (*source.urls, source.url):
        if u and not re.match(r"https?://", u):
            raise ConfigError(
                f"[source] URL {u!r} must start with http:// or https://", field="[source] urls"
            )
    e = _Section(
        "estimator", top.data.get("estimator"), {"window", "mode", "half_life", "min_drafts"}
    )
    estimator = EstimatorSettings(
        window=e.duration("window", 600.0),
        mode=e.string("mode", "sliding", choices=("sliding", "ewma")),  # type: ignore[arg-type]
        half_life=e.duration("half_life", 300.0),
        min_drafts=e.number("min_drafts", 200.0, low=0.0),
    )
    p = _Section(
        "policy",
        top.data.get("policy"),
        {
            "k_max",
            "min_gain",
            "min_dwell",
            "max_changes_per_hour",
            "tolerance",
            "off_mode",
            "verify_slope",
            "schedules",
            "max_batch_size",
            "edge_margin",
            "load_horizon",
            "min_band_share",
        },
    )
    policy = PolicySettings(
        k_max=p.integer("k_max", 8, low=1, high=MAX_K),
        min_gain=p.number("min_gain", 0.05, low=0.0, high=10.0),
        min_dwell=p.duration("min_dwell", 1800.0),
        max_changes_per_hour=p.integer("max_changes_per_hour", 2, low=1, high=3600),
        tolerance=p.number("tolerance", 0.01, low=0.0, high=1.0),
        off_mode=p.string("off_mode", "restart", choices=("restart", "schedule")),  # type: ignore[arg-type]
        verify_slope=p.number("verify_slope", 0.0, low=0.0, high=10.0),
        schedules=p.boolean("schedules", True),
        max_batch_size=p.integer("max_batch_size", 256, low=1, high=1 << 20),
        edge_margin=p.number("edge_margin", 0.25, low=0.0, high=4.0),
        load_horizon=p.duration("load_horizon", 86400.0),
        min_band_share=p.number("min_band_share", 0.05, low=0.0, high=0.5),
    )
    a = _Section(
        "actuator",
        top.data.get("actuator"),
        {"kind", "dir", "argv", "min_interval", "timeout", "file_mode"},
    )
    actuator = ActuatorSettings(
        kind=a.string("kind", "dry-run", choices=("dry-run", "file", "command")),  # type: ignore[arg-type]
        dir=a.string("dir"),
        argv=a.strings("argv"),
        min_interval=a.duration("min_interval", 600.0),
        timeout=a.duration("timeout", 300.0),
        file_mode=_file_mode(a),
    )
    if actuator.kind == "file" and not actuator.dir:
        raise ConfigError(
            '[actuator] dir is empty; with kind = "file" set dir = "/path/to/output"',
            field="[actuator] dir",
        )
    if actuator.kind == "command" and not actuator.argv:
        raise ConfigError(
            '[actuator] argv is empty; with kind = "command" set argv = '
            '["./apply-k.sh", "{class}", "{k}"]',
            field="[actuator] argv",
        )
    alerts = _alerts(top.data.get("alerts"))
    return SpecwiseConfig(
        controller, source, estimator, policy, actuator, alerts, _classes(top.data.get("classes"))
    )


def load_config(path: Path) -> SpecwiseConfig:
    """Read and validate a TOML file; errors name the file and the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"Cannot read config file {str(path)!r} ({exc.strerror}); check the path", field="path"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"offset {exc.start}); save it as UTF-8 TOML",
            field="path",
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not valid TOML ({exc}); fix the syntax there",
            field="path",
        ) from exc
    try:
        return dataclasses.replace(parse_config(data), path=str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}", field=exc.field) from exc
