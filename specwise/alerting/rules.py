"""Alerts when speculative decoding stops paying off: one catalogue, two deliveries.

``build_rules`` turns ``[alerts]`` settings into a Prometheus rules file (recording rules on
vLLM's own counters, alerting rules on the controller's exported metrics); ``rules_yaml``
writes it. ``AlertEvaluator`` evaluates the same alerts (same names, labels, thresholds and
``for:`` durations) straight from a ``ControllerState``, for the direct Alertmanager push in
``specwise.alerting.alertmanager``. Each alert's ``runbook_url`` points at its section of
``docs/runbook.md``.

vLLM's series carry ``model_name`` (plus the labels Prometheus adds), not ``class``: the
recording rules group by ``class_labels`` (default ``model_name``) and match both metric
spellings, ``vllm:`` and ``vllm_`` (Prometheus 2.x stores ``vllm_`` from negotiating
exporters).
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from specwise.config import AlertSettings, format_duration
from specwise.controller.state import ClassStatus, ControllerState

__all__ = [
    "ALERT_NAMES",
    "Alert",
    "AlertEvaluator",
    "AlertRule",
    "MeasuredView",
    "RecordingRule",
    "RuleGroup",
    "build_rules",
    "measured_view",
    "rules_document",
    "rules_yaml",
    "vllm_selector",
]

ValueFormat = Literal["x2", "pct", "int", "none"]

#: Every alert ``specwise rules`` generates, in file order.
ALERT_NAMES = (
    "SpecDecodeNotPayingOff",
    "SpecDecodePredictedNotPayingOff",
    "SpecDecodeAcceptanceDropped",
    "SpecDecodeKMismatch",
    "SpecDecodeMetricsAbsent",
    "SpecwiseDataStale",
    "SpecwiseSourceDown",
    "SpecwiseSourceErrors",
    "SpecwiseControllerErrors",
    "SpecwiseControllerStalled",
)


def vllm_selector(counter: str) -> str:
    """A selector matching both spellings of a vLLM counter (``vllm:`` and ``vllm_``)."""
    return f'{{__name__=~"vllm[:_]spec_decode_{counter}_total"}}'


@dataclass(frozen=True)
class RecordingRule:
    record: str
    expr: str


@dataclass(frozen=True)
class AlertRule:
    """One alert; ``description`` is a template with ``{class}``/``{source}``/``{value}``."""

    alert: str
    expr: str
    for_seconds: float
    severity: str
    summary: str
    description: str
    value_format: ValueFormat
    runbook_url: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def go_description(self) -> str:
        """The description as a Prometheus annotation template."""
        value = {
            "x2": '{{ printf "%.2f" $value }}',
            "pct": "{{ $value | humanizePercentage }}",
            "int": '{{ printf "%.0f" $value }}',
            "none": "",
        }[self.value_format]
        text = self.description.replace("{value}", value)
        for key, (go, _) in _CONDITIONAL.items():
            text = text.replace("{" + key + "}", go)
        for label in ("class", "source", "group"):
            text = text.replace("{" + label + "}", "{{ $labels." + label + " }}")
        return text

    def render_description(self, labels: Mapping[str, str], value: float) -> str:
        """The description as Prometheus renders it, for the direct push."""
        formatted = {
            "x2": f"{value:.2f}",
            "pct": f"{value * 100:.4g}%",
            "int": f"{value:.0f}",
            "none": "",
        }[self.value_format]
        text = self.description.replace("{value}", formatted)
        for key, (_, render) in _CONDITIONAL.items():
            text = text.replace("{" + key + "}", render(labels))
        for label in ("class", "source", "group"):
            text = text.replace("{" + label + "}", labels.get(label, ""))
        return text

    def annotations(self) -> dict[str, str]:
        return {
            "summary": self.summary,
            "description": self.go_description(),
            "runbook_url": self.runbook_url,
        }


#: Description placeholders that depend on a label: (Go template, the same in Python).
_CONDITIONAL: dict[str, tuple[str, Any]] = {
    "ran": (
        '{{ if eq $labels.basis "measured" }}ran{{ else }}is predicted to run{{ end }}',
        lambda labels: "ran" if labels.get("basis") == "measured" else "is predicted to run",
    ),
    "in_band": (
        "{{ with $labels.band }} at batch sizes {{ . }}{{ end }}",
        lambda labels: f" at batch sizes {labels['band']}" if labels.get("band") else "",
    ),
}


Rule = RecordingRule | AlertRule


@dataclass(frozen=True)
class RuleGroup:
    name: str
    rules: tuple[Rule, ...]


def _level(labels: Sequence[str]) -> str:
    return "_".join(labels)


def _recording_rules(labels: Sequence[str], window: float) -> tuple[RecordingRule, ...]:
    by = ", ".join(labels)
    lvl = _level(labels)
    w = format_duration(window)

    def rate(counter: str, extra: str = "") -> str:
        return f"sum by ({by}{extra}) (rate({vllm_selector(counter)}[{w}]))"

    drafts = f"{lvl}:specwise_vllm_drafts:rate{w}"
    draft_tokens = f"{lvl}:specwise_vllm_draft_tokens:rate{w}"
    accepted = f"{lvl}:specwise_vllm_accepted_tokens:rate{w}"
    per_pos = f"{lvl}_position:specwise_vllm_accepted_tokens_per_pos:rate{w}"
    return (
        RecordingRule(drafts, rate("num_drafts")),
        RecordingRule(draft_tokens, rate("num_draft_tokens")),
        RecordingRule(accepted, rate("num_accepted_tokens")),
        RecordingRule(per_pos, rate("num_accepted_tokens_per_pos", ", position")),
        RecordingRule(
            f"{lvl}:specwise_vllm_mean_acceptance_length:ratio_rate{w}",
            f"1 + {accepted} / ({drafts} > 0)",
        ),
        RecordingRule(
            f"{lvl}:specwise_vllm_acceptance_rate:ratio_rate{w}",
            f"{accepted} / ({draft_tokens} > 0)",
        ),
        RecordingRule(
            f"{lvl}_position:specwise_vllm_survival:ratio_rate{w}",
            f"{per_pos} / on ({by}) group_left () ({drafts} > 0)",
        ),
    )


def _anchor(name: str) -> str:
    return name.lower()


def _predicted_expr(below: float) -> str:
    """Today's alert: the deployed k's predicted speedup (constant-cost or fitted model)."""
    return (
        f'min without (k_kind) (specwise_predicted_speedup_ratio{{k_kind="deployed"}})'
        f" < {below:g}\nand specwise_deployed_k > 0"
    )


def _not_paying_expr(below: float) -> str:
    """What vLLM delivered: the measured speedup per class and per batch band (label
    ``band``), labelled ``basis="measured"``; where nothing is measured (``specwise_load_aware``
    0, or no measured series) the prediction stands in, labelled ``basis="predicted"``."""
    measured = f"specwise_measured_speedup_ratio < {below:g}\n  and specwise_deployed_k > 0"
    band = (
        f"specwise_band_measured_speedup_ratio < {below:g}\n"
        "  and ignoring (band) specwise_deployed_k > 0"
    )
    fallback = (
        _predicted_expr(below).replace("\n", "\n  ")
        + "\n  unless (specwise_measured_speedup_ratio and specwise_load_aware == 1)"
    )
    return "\nor\n".join(
        f'label_replace(\n  {expr},\n  "basis", "{basis}", "", ""\n)'
        for expr, basis in ((measured, "measured"), (band, "measured"), (fallback, "predicted"))
    )


def _alert_rules(s: AlertSettings, labels: Sequence[str], runbook: str) -> tuple[AlertRule, ...]:
    d = format_duration
    base = runbook.rstrip("#")

    def url(name: str) -> str:
        return f"{base}#{_anchor(name)}"

    by = ", ".join(labels)
    drafts = vllm_selector("num_drafts")
    # classes that specwise itself turned off (k = 0) stop exporting on purpose: the
    # controller labels specwise_off_by_specwise with these same labels, whatever the
    # class is called
    absent = (
        f"group by ({by}) (present_over_time({drafts}[{d(s.metrics_absent_lookback)}]))\n"
        f"unless on ({by}) group by ({by}) ({drafts})\n"
        f"unless on ({by}) group by ({by}) (specwise_off_by_specwise == 1)"
    )
    group_text = "/".join("{{ $labels." + label + " }}" for label in labels)
    return (
        AlertRule(
            "SpecDecodeNotPayingOff",
            _not_paying_expr(s.speedup_below),
            s.not_paying_for,
            s.not_paying_severity,
            "Speculative decoding delivers less than plain decoding.",
            "Class {class}{in_band} {ran} at {value}x the speed of plain decoding at its "
            f"deployed configuration (threshold {s.speedup_below:g}x, for "
            f"{d(s.not_paying_for)}): speculation costs throughput; compare "
            "specwise_recommended_k and specwise_band_k.",
            "x2",
            url("SpecDecodeNotPayingOff"),
        ),
        AlertRule(
            "SpecDecodePredictedNotPayingOff",
            _predicted_expr(s.speedup_below),
            s.not_paying_for,
            "warning",
            "Speculative decoding is predicted to be slower than plain decoding.",
            "Class {class} is predicted to run at {value}x the speed of plain decoding at its "
            f"deployed k (threshold {s.speedup_below:g}x, for {d(s.not_paying_for)}): speculation "
            "costs throughput; compare specwise_recommended_k.",
            "x2",
            url("SpecDecodePredictedNotPayingOff"),
        ),
        AlertRule(
            "SpecDecodeAcceptanceDropped",
            f"specwise_alpha_ratio\n/ avg_over_time(specwise_alpha_ratio"
            f"[{d(s.acceptance_baseline)}] offset {d(s.acceptance_baseline_offset)})"
            f"\n< {s.acceptance_drop_ratio:g}",
            s.acceptance_dropped_for,
            "warning",
            "Speculative decoding acceptance dropped sharply against its baseline.",
            "Class {class} accepts draft tokens at {value} of its "
            f"{d(s.acceptance_baseline)} baseline (threshold "
            f"{s.acceptance_drop_ratio * 100:g}%, for {d(s.acceptance_dropped_for)}).",
            "pct",
            url("SpecDecodeAcceptanceDropped"),
        ),
        AlertRule(
            "SpecDecodeKMismatch",
            "specwise_recommended_k != specwise_deployed_k",
            s.k_mismatch_for,
            "warning",
            "The recommended k differs from the deployed k.",
            "Class {class}: specwise has recommended num_speculative_tokens = {value} instead "
            f"of the deployed k for {d(s.k_mismatch_for)}; apply it or check the actuator.",
            "int",
            url("SpecDecodeKMismatch"),
        ),
        AlertRule(
            "SpecDecodeMetricsAbsent",
            absent,
            s.metrics_absent_for,
            "warning",
            "Spec-decode metrics vanished from a class that had them.",
            f"{group_text} exported vLLM spec-decode counters in the last "
            f"{d(s.metrics_absent_lookback)} but has none now (for {d(s.metrics_absent_for)}).",
            "none",
            url("SpecDecodeMetricsAbsent"),
        ),
        AlertRule(
            "SpecwiseDataStale",
            "specwise_stale == 1",
            s.stale_for,
            "warning",
            "specwise has no fresh spec-decode data for a class.",
            "Class {class} has had no fresh spec-decode counters for over "
            f"{d(s.stale_for)}; specwise holds its last k and cannot re-check it.",
            "none",
            url("SpecwiseDataStale"),
        ),
        AlertRule(
            "SpecwiseSourceDown",
            "specwise_source_up == 0",
            s.source_down_for,
            "warning",
            "A specwise data source does not answer.",
            f"Source {{source}} has not answered specwise for {d(s.source_down_for)}; the "
            "classes it feeds go stale.",
            "none",
            url("SpecwiseSourceDown"),
        ),
        AlertRule(
            "SpecwiseSourceErrors",
            f"sum without (kind) (increase(specwise_source_errors_total"
            f"[{d(s.source_errors_window)}])) > 0\nunless specwise_source_up == 0",
            s.source_errors_for,
            "warning",
            "A specwise data source keeps failing.",
            "Source {source} had {value} collection errors in the last "
            f"{d(s.source_errors_window)} (for {d(s.source_errors_for)}); see "
            "specwise_source_errors_total by kind.",
            "int",
            url("SpecwiseSourceErrors"),
        ),
        AlertRule(
            "SpecwiseControllerErrors",
            f"increase(specwise_controller_errors_total[{d(s.source_errors_window)}]) > 0",
            s.source_errors_for,
            "warning",
            "The specwise controller keeps failing inside its ticks.",
            f"The controller had {{value}} failures of one kind in the last "
            f"{d(s.source_errors_window)} (for {d(s.source_errors_for)}); it holds the last k. "
            "See specwise_controller_errors_total by kind and its log.",
            "int",
            url("SpecwiseControllerErrors"),
        ),
        AlertRule(
            "SpecwiseControllerStalled",
            f"time() - specwise_last_tick_timestamp_seconds > {s.stale_for:g}",
            s.source_down_for,
            "warning",
            "The specwise controller stopped ticking.",
            f"The specwise controller's last tick was {{value}} s ago (threshold "
            f"{d(s.stale_for)}); its metrics and recommendations are frozen.",
            "int",
            url("SpecwiseControllerStalled"),
        ),
    )


def build_rules(
    settings: AlertSettings, *, class_labels: Sequence[str] = ("model_name",)
) -> tuple[RuleGroup, ...]:
    """The recording and alerting rules for ``settings`` (thresholds, durations, runbook)."""
    labels = tuple(settings.class_labels or class_labels) or ("model_name",)
    return (
        RuleGroup("specwise.vllm.rules", _recording_rules(labels, settings.rate_window)),
        RuleGroup("specwise.alerts", _alert_rules(settings, labels, settings.runbook_base)),
    )


def _rule_dict(rule: Rule) -> dict[str, Any]:
    if isinstance(rule, RecordingRule):
        return {"record": rule.record, "expr": rule.expr}
    out: dict[str, Any] = {"alert": rule.alert, "expr": rule.expr}
    if rule.for_seconds > 0:
        out["for"] = format_duration(rule.for_seconds)
    out["labels"] = {"severity": rule.severity, **rule.labels}
    out["annotations"] = rule.annotations()
    return out


def rules_document(groups: Sequence[RuleGroup]) -> dict[str, Any]:
    """The rules file as plain data (what ``--json`` prints and ``rules_yaml`` writes)."""
    return {"groups": [{"name": g.name, "rules": [_rule_dict(r) for r in g.rules]} for g in groups]}


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.:]*|\d+(?:ms|[smhdwy])")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def _scalar(value: str, indent: str, *, block: bool = False) -> str:
    if "\n" in value or block:
        body = "\n".join(f"{indent}  {line}" if line else "" for line in value.split("\n"))
        return f"|-\n{body}"
    if _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar


def _yaml_map(data: Mapping[str, Any], indent: str) -> list[str]:
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            lines.append(f"{indent}{key}:")
            lines.extend(_yaml_map(value, indent + "  "))
        else:
            text = _scalar(str(value), indent, block=key == "expr")
            lines.append(f"{indent}{key}: {text}")
    return lines


def rules_yaml(groups: Sequence[RuleGroup], *, header: str = "") -> str:
    """The rules file as YAML (block scalars for multi-line expressions)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines.append("groups:")
    for group in rules_document(groups)["groups"]:
        lines.append(f"  - name: {_scalar(group['name'], '')}")
        lines.append("    rules:")
        for rule in group["rules"]:
            first, *rest = _yaml_map(rule, "        ")
            lines.append("      - " + first.lstrip())
            lines.extend(rest)
    return "\n".join(lines) + "\n"


# -- evaluating the same alerts from the controller's state (direct push) -------------------


def _number(value: Any) -> float | None:
    """A finite float, or None, as the exporter reads the load block."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class MeasuredView:
    """What the exporter publishes of a class's measured speedup (``ClassStatus.load``):
    ``measured`` = ``specwise_measured_speedup_ratio``, ``bands`` =
    ``specwise_band_measured_speedup_ratio`` by band, ``load_aware`` =
    ``specwise_load_aware`` (None: the class has no load block, nothing exported)."""

    measured: float | None
    bands: tuple[tuple[str, float], ...]
    load_aware: bool | None

    @property
    def replaces_prediction(self) -> bool:
        """The rule's ``unless (specwise_measured_speedup_ratio and specwise_load_aware
        == 1)``: a measurement exists, so the prediction does not stand in for it."""
        return self.measured is not None and bool(self.load_aware)


def measured_view(status: ClassStatus) -> MeasuredView:
    """The measured side of one class, read the way the exporter exports it."""
    load = status.load
    if not isinstance(load, Mapping):
        return MeasuredView(None, (), None)
    m = load.get("measured")
    measured = _number(m.get("value")) if isinstance(m, Mapping) else None
    bands: list[tuple[str, float]] = []
    for b in load.get("bands_measured") or ():
        if isinstance(b, Mapping):
            x = _number(b.get("value"))
            if x is not None:
                bands.append((str(b.get("band", "")), x))
    return MeasuredView(measured, tuple(bands), bool(load.get("load_aware")))


@dataclass(frozen=True)
class Alert:
    """A firing alert: what the direct push sends, labelled like the rule's alert."""

    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    active_since: float
    value: float

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.labels.items()))


class AlertEvaluator:
    """Evaluates the rules' alerts on successive ``ControllerState``s with their ``for:``.

    Times are the controller's clock (the ``now`` passed in). Alerts that need vLLM's own
    series (``SpecDecodeMetricsAbsent``) or an outside observer (``SpecwiseControllerStalled``)
    exist only as Prometheus rules; ``SpecwiseDataStale`` covers them when pushing.
    """

    def __init__(self, settings: AlertSettings) -> None:
        self.settings = settings
        self.rules = {
            r.alert: r for g in build_rules(settings) for r in g.rules if isinstance(r, AlertRule)
        }
        self._since: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._alpha: dict[str, deque[tuple[float, float]]] = {}
        self._errors: dict[str, deque[tuple[float, float]]] = {}

    def _baseline(self, name: str, alpha: float, now: float) -> float | None:
        s = self.settings
        hist = self._alpha.setdefault(name, deque())
        hist.append((now, alpha))
        oldest = now - s.acceptance_baseline_offset - s.acceptance_baseline
        while hist and hist[0][0] < oldest:
            hist.popleft()
        end = now - s.acceptance_baseline_offset
        window = [a for t, a in hist if t <= end]
        return sum(window) / len(window) if window else None

    def _error_increase(self, name: str, total: float, now: float) -> float:
        hist = self._errors.setdefault(name, deque())
        hist.append((now, total))
        while len(hist) > 1 and hist[1][0] <= now - self.settings.source_errors_window:
            hist.popleft()
        return total - hist[0][1] if hist[0][0] < now else 0.0

    def conditions(
        self, state: ControllerState, now: float
    ) -> list[tuple[str, dict[str, str], float]]:
        """(alert name, labels, value) for every condition true at ``now``, ignoring ``for:``."""
        s = self.settings
        out: list[tuple[str, dict[str, str], float]] = []
        for c in state.classes:
            labels = {"class": c.name}
            speed = c.predicted_speedup_deployed
            predicted_losing = bool(c.deployed_k) and speed is not None and speed < s.speedup_below
            if predicted_losing and speed is not None:
                out.append(("SpecDecodePredictedNotPayingOff", labels, speed))
            view = measured_view(c)
            if c.deployed_k:
                if view.measured is not None and view.measured < s.speedup_below:
                    measured_labels = {**labels, "basis": "measured"}
                    out.append(("SpecDecodeNotPayingOff", measured_labels, view.measured))
                for band, value in view.bands:
                    if value < s.speedup_below:
                        band_labels = {**labels, "band": band, "basis": "measured"}
                        out.append(("SpecDecodeNotPayingOff", band_labels, value))
            if predicted_losing and speed is not None and not view.replaces_prediction:
                out.append(("SpecDecodeNotPayingOff", {**labels, "basis": "predicted"}, speed))
            if c.alpha is not None:
                base = self._baseline(c.name, c.alpha, now)
                if base and c.alpha / base < s.acceptance_drop_ratio:
                    out.append(("SpecDecodeAcceptanceDropped", labels, c.alpha / base))
            if (
                c.recommended_k is not None
                and c.deployed_k is not None
                and c.recommended_k != c.deployed_k
            ):
                out.append(("SpecDecodeKMismatch", labels, float(c.recommended_k)))
            if c.stale:
                out.append(("SpecwiseDataStale", labels, 1.0))
        for src in state.sources:
            labels = {"source": src.name}
            if not src.up:
                out.append(("SpecwiseSourceDown", labels, 0.0))
            grew = self._error_increase(src.name, float(sum(src.errors.values())), now)
            if grew > 0 and src.up:
                out.append(("SpecwiseSourceErrors", labels, grew))
        for kind, total in sorted(state.errors.items()):
            grew = self._error_increase(f"controller/{kind}", float(total), now)
            if grew > 0:
                out.append(("SpecwiseControllerErrors", {"kind": kind}, grew))
        return out

    def evaluate(self, state: ControllerState, now: float) -> list[Alert]:
        """The alerts firing at ``now`` (their condition held for the rule's ``for:``)."""
        firing: list[Alert] = []
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        for name, labels, value in self.conditions(state, now):
            rule = self.rules[name]
            key = (name, tuple(sorted(labels.items())))
            seen.add(key)
            since = self._since.setdefault(key, now)
            if now - since < rule.for_seconds:
                continue
            full = {"alertname": name, "severity": rule.severity, **rule.labels, **labels}
            annotations = {
                "summary": rule.summary,
                "description": rule.render_description(labels, value),
                "runbook_url": rule.runbook_url,
            }
            firing.append(Alert(name, full, annotations, since, value))
        for key in list(self._since):
            if key not in seen:
                del self._since[key]
        return firing
