"""Alert catalogue, the state evaluator, [alerts] config and the Alertmanager v2 pusher
(against a fault server and a real Alertmanager)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests

from specwise.alerting.alertmanager import AlertmanagerPusher
from specwise.alerting.rules import (
    ALERT_NAMES,
    AlertEvaluator,
    AlertRule,
    RecordingRule,
    build_rules,
    rules_document,
    rules_yaml,
)
from specwise.config import AlertSettings, parse_config
from specwise.controller.state import ClassStatus, ControllerState, SourceStatus
from specwise.errors import AlertDeliveryError, ConfigError

try:
    from tests import servers
except ImportError:  # tests/ is not a package
    import servers  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
FAST = AlertSettings(
    not_paying_for=60.0,
    k_mismatch_for=120.0,
    stale_for=60.0,
    source_down_for=30.0,
    source_errors_for=30.0,
    acceptance_baseline=300.0,
    acceptance_baseline_offset=60.0,
    acceptance_dropped_for=60.0,
)


def _class(name: str = "summarize", **kw: Any) -> ClassStatus:
    base: dict[str, Any] = {
        "cost": 0.4,
        "deployed_k": 3,
        "recommended_k": 3,
        "alpha": 0.6,
        "predicted_speedup_deployed": 1.2,
        "predicted_speedup_recommended": 1.2,
        "stale": False,
    }
    base.update(kw)
    return ClassStatus(name, **base)


def _state(
    t: float, *classes: ClassStatus, sources: tuple[SourceStatus, ...] = ()
) -> ControllerState:
    return ControllerState(0.0, t, int(t), classes=classes, sources=sources)


# -- the catalogue -----------------------------------------------------------------------


def test_every_alert_follows_the_conventions() -> None:
    groups = build_rules(AlertSettings())
    alerts = [r for g in groups for r in g.rules if isinstance(r, AlertRule)]
    assert tuple(a.alert for a in alerts) == ALERT_NAMES
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^## (\w+)$", runbook, re.MULTILINE)}
    for a in alerts:
        assert re.fullmatch(r"(SpecDecode|Specwise)[A-Z][A-Za-z]+", a.alert)
        assert a.severity in {"critical", "warning", "info"}
        assert a.summary[0].isupper() or a.summary.startswith("specwise")
        assert a.summary.endswith(".")
        assert "{{" not in a.summary
        assert a.for_seconds > 0
        ann = a.annotations()
        assert set(ann) == {"summary", "description", "runbook_url"}
        assert ann["runbook_url"].endswith("#" + a.alert.lower())
        assert a.alert.lower() in anchors, f"docs/runbook.md has no section for {a.alert}"


def test_recording_rules_match_both_spellings_and_sum_rates() -> None:
    rec = [r for g in build_rules(AlertSettings()) for r in g.rules if isinstance(r, RecordingRule)]
    raw = [r for r in rec if "__name__" in r.expr]
    assert len(raw) == 4
    for r in raw:
        assert re.search(r'sum by \(model_name[^)]*\) \(rate\(\{__name__=~"vllm\[:_\]', r.expr)
    names = {r.record for r in rec}
    assert "model_name:specwise_vllm_mean_acceptance_length:ratio_rate5m" in names
    assert "model_name_position:specwise_vllm_survival:ratio_rate5m" in names


def test_class_labels_and_thresholds_are_configurable() -> None:
    s = AlertSettings(
        class_labels=("model_name", "namespace"),
        rate_window=120.0,
        speedup_below=0.95,
        not_paying_for=1800.0,
        runbook_base="https://wiki.example.com/rb",
    )
    doc = rules_document(build_rules(s))
    rules = {r.get("record") or r["alert"]: r for g in doc["groups"] for r in g["rules"]}
    assert "model_name_namespace:specwise_vllm_drafts:rate2m" in rules
    assert (
        "by (model_name, namespace)"
        in rules["model_name_namespace:specwise_vllm_drafts:rate2m"]["expr"]
    )
    npo = rules["SpecDecodeNotPayingOff"]
    assert "< 0.95" in npo["expr"]
    assert npo["for"] == "30m"
    assert npo["annotations"]["runbook_url"] == "https://wiki.example.com/rb#specdecodenotpayingoff"
    # the source's group_by is the fallback for the class labels
    doc2 = rules_document(build_rules(AlertSettings(), class_labels=("job",)))
    assert doc2["groups"][0]["rules"][0]["record"] == "job:specwise_vllm_drafts:rate5m"


def test_yaml_has_one_entry_per_rule_and_block_exprs() -> None:
    text = rules_yaml(build_rules(AlertSettings()), header="made by a test")
    assert text.startswith("# made by a test\ngroups:\n")
    assert text.count("      - record: ") == 7
    assert text.count("      - alert: ") == len(ALERT_NAMES)
    assert text.count("expr: |-") == 7 + len(ALERT_NAMES)


# -- [alerts] config -----------------------------------------------------------------------


def _cfg(alerts: dict[str, Any]) -> AlertSettings:
    return parse_config(
        {"source": {"urls": ["http://127.0.0.1:8000/metrics"]}, "alerts": alerts}
    ).alerts


def test_alerts_config_reads_thresholds() -> None:
    a = _cfg(
        {
            "alertmanager_url": "http://127.0.0.1:9093",
            "speedup_below": 0.9,
            "not_paying_for": "30m",
            "k_mismatch_for": "6h",
            "class_labels": ["model_name", "namespace"],
            "not_paying_severity": "warning",
        }
    )
    assert (a.speedup_below, a.not_paying_for, a.k_mismatch_for) == (0.9, 1800.0, 21600.0)
    assert a.class_labels == ("model_name", "namespace")
    assert a.not_paying_severity == "warning"


@pytest.mark.parametrize(
    ("alerts", "field"),
    [
        ({"not_paying_for": "soon"}, "[alerts] not_paying_for"),
        ({"alertmanager_url": "127.0.0.1:9093"}, "[alerts] alertmanager_url"),
        ({"class_labels": ["model-name"]}, "[alerts] class_labels"),
        ({"speedup_below": 0}, "[alerts] speedup_below"),
        ({"acceptance_drop_ratio": 1.5}, "[alerts] acceptance_drop_ratio"),
        ({"not_paying_severity": "page"}, "[alerts] not_paying_severity"),
        ({"thresholds": 1}, "alerts.thresholds"),
    ],
)
def test_alerts_config_rejects_bad_values(alerts: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        _cfg(alerts)
    assert info.value.field == field


# -- evaluating from the controller's state -------------------------------------------------


def test_not_paying_off_waits_for_its_duration_then_resolves() -> None:
    ev = AlertEvaluator(FAST)
    losing = _class(predicted_speedup_deployed=0.8, recommended_k=0)
    assert ev.evaluate(_state(0, losing), 0) == []
    assert ev.evaluate(_state(30, losing), 30) == []
    fired = ev.evaluate(_state(60, losing), 60)
    npo = [a for a in fired if a.name == "SpecDecodeNotPayingOff"]
    assert len(npo) == 1
    assert npo[0].labels == {
        "alertname": "SpecDecodeNotPayingOff",
        "severity": "critical",
        "class": "summarize",
        "basis": "predicted",  # no load block: the prediction stands in
    }
    assert npo[0].active_since == 0
    assert (
        npo[0]
        .annotations["description"]
        .startswith("Class summarize is predicted to run at 0.80x the speed of plain decoding")
    )
    # a short recovery resets the clock
    assert ev.evaluate(_state(70, _class()), 70) == []
    assert [a.name for a in ev.evaluate(_state(100, losing), 100)] == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"deployed_k": 0, "predicted_speedup_deployed": 1.0, "recommended_k": 0}, set()),
        ({"predicted_speedup_deployed": None}, set()),
        ({"recommended_k": 5}, {"SpecDecodeKMismatch"}),
        (
            {"predicted_speedup_deployed": 0.8},
            {"SpecDecodeNotPayingOff", "SpecDecodePredictedNotPayingOff"},
        ),
        ({"stale": True}, {"SpecwiseDataStale"}),
    ],
)
def test_conditions_per_class(status: dict[str, Any], expected: set[str]) -> None:
    ev = AlertEvaluator(FAST)
    got = {name for name, _, _ in ev.conditions(_state(0, _class(**status)), 0)}
    assert got == expected


def test_acceptance_drop_against_its_own_baseline() -> None:
    ev = AlertEvaluator(FAST)
    fired: list[str] = []
    for t in range(0, 600, 10):
        alpha = 0.8 if t < 400 else 0.4
        fired = [a.name for a in ev.evaluate(_state(t, _class(alpha=alpha)), t)]
        if t < 460:
            assert "SpecDecodeAcceptanceDropped" not in fired, t
    assert "SpecDecodeAcceptanceDropped" in fired


def test_source_down_and_errors() -> None:
    ev = AlertEvaluator(FAST)
    names: list[set[str]] = []
    for t in range(0, 100, 10):
        down = SourceStatus("http://a/metrics", last_attempt=t, last_success=0.0)
        flaky = SourceStatus(
            "http://b/metrics", last_attempt=t, last_success=t, errors={"parse": t // 10}
        )
        fine = SourceStatus("http://c/metrics", last_attempt=t, last_success=t, errors={"http": 1})
        alerts = ev.evaluate(_state(t, sources=(down, flaky, fine)), t)
        names.append({f"{a.name} {a.labels['source']}" for a in alerts})
    assert names[-1] == {
        "SpecwiseSourceDown http://a/metrics",
        "SpecwiseSourceErrors http://b/metrics",
    }


def test_controller_errors_alert_when_they_keep_growing() -> None:
    """A failure inside the tick (e.g. an actuator raising an unmapped error) is counted in
    ControllerState.errors; the direct push alerts on it like the rule does."""
    ev = AlertEvaluator(FAST)
    fired: list[set[str]] = []
    for t in range(0, 100, 10):
        state = ControllerState(
            0.0, t, t // 10, errors={"actuator": t // 10, "internal": 1}, last_error="boom"
        )
        fired.append({f"{a.name} {a.labels['kind']}" for a in ev.evaluate(state, t)})
    assert fired[0] == set()
    assert fired[-1] == {"SpecwiseControllerErrors actuator"}  # internal stopped growing


# -- the pusher ----------------------------------------------------------------------------


def test_pusher_maps_http_errors_to_one_sentence(fault_server: servers.FaultServer) -> None:
    fault_server.routes["/api/v2/alerts"] = servers.FaultResponse(
        400, b'{"code":602,"message":"0.labels in body is required"}'
    )
    with requests.Session() as session:
        pusher = AlertmanagerPusher(
            fault_server.base_url, session=session, settings=AlertSettings(not_paying_for=1)
        )
        losing = _class(predicted_speedup_deployed=0.5)
        pusher(_state(0, losing), 0)  # pending: nothing to send
        assert fault_server.bodies == []
        with pytest.raises(AlertDeliveryError) as info:
            pusher(_state(5, losing), 5)
    msg = str(info.value)
    # a predicted loss without a measurement: SpecDecodeNotPayingOff{basis="predicted"} and
    # SpecDecodePredictedNotPayingOff
    assert msg.startswith(f"Alertmanager at {fault_server.base_url} answered 400 to 2 alert(s)")
    assert "0.labels in body is required" in msg
    assert info.value.status_code == 400
    assert "\n" not in msg


def test_pusher_unreachable_and_resolve_retried() -> None:
    port = servers.free_port()
    with requests.Session() as session:
        pusher = AlertmanagerPusher(
            f"http://127.0.0.1:{port}",
            session=session,
            settings=AlertSettings(not_paying_for=1),
            timeout=1.0,
        )
        losing = _class(predicted_speedup_deployed=0.5)
        pusher.evaluator.evaluate(_state(0, losing), 0)
        with pytest.raises(AlertDeliveryError, match="is unreachable"):
            pusher(_state(5, losing), 5)
        # the failed alerts (measured-or-predicted and predicted) are remembered, so a later
        # recovery still sends their resolution
        assert len(pusher.firing) == 2
        with pytest.raises(AlertDeliveryError):
            pusher(_state(10, _class()), 10)
        assert len(pusher.firing) == 2


def test_pusher_fires_and_resolves_on_a_real_alertmanager(
    start_alertmanager: Any, webhook_receiver: servers.WebhookReceiver
) -> None:
    am = start_alertmanager(webhook_url=webhook_receiver.url)
    clock = [1_800_000_000.0]
    with requests.Session() as session:
        pusher = AlertmanagerPusher(
            am.base_url,
            session=session,
            settings=AlertSettings(not_paying_for=10),
            generator_url="http://127.0.0.1:9464/recommendations",
            labels={"job": "specwise"},
        )
        losing = _class(predicted_speedup_deployed=0.74, recommended_k=0)
        pusher(_state(clock[0], losing), clock[0])
        pusher(_state(clock[0] + 15, losing), clock[0] + 15)
        listed = requests.get(f"{am.base_url}/api/v2/alerts", timeout=5).json()
        names = {a["labels"]["alertname"]: a for a in listed}
        assert set(names) == {"SpecDecodeNotPayingOff", "SpecDecodePredictedNotPayingOff"}
        assert names["SpecDecodeNotPayingOff"]["status"]["state"] == "active"
        assert names["SpecDecodeNotPayingOff"]["labels"] == {
            "alertname": "SpecDecodeNotPayingOff",
            "basis": "predicted",
            "class": "summarize",
            "job": "specwise",
            "severity": "critical",
        }
        got = webhook_receiver.wait_for(
            lambda a: a["labels"].get("alertname") == "SpecDecodeNotPayingOff", timeout=60
        )
        assert got is not None
        assert got["status"] == "firing"
        assert got["generatorURL"] == "http://127.0.0.1:9464/recommendations"
        assert "0.74x" in got["annotations"]["description"]
        assert got["annotations"]["runbook_url"].endswith("#specdecodenotpayingoff")
        # recovered: the pusher sends endsAt = now and Alertmanager notifies "resolved"
        pusher(_state(clock[0] + 30, _class()), clock[0] + 30)
        assert pusher.firing == {}
        resolved = webhook_receiver.wait_for(lambda a: a["status"] == "resolved", timeout=60)
        assert resolved is not None
        assert resolved["labels"]["class"] == "summarize"
