"""SpecDecodeNotPayingOff on what vLLM delivered (measured speedup per class and per batch
band), the prediction standing in where nothing is measured, and the separate
SpecDecodePredictedNotPayingOff: the direct push's evaluator and the Prometheus rules fire
on the same controller states (checked with promtool on the exporter's own samples)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from specwise.alerting.alertmanager import AlertmanagerPusher
from specwise.alerting.rules import AlertEvaluator, build_rules, rules_yaml
from specwise.config import AlertSettings
from specwise.controller.exporter import controller_registry
from specwise.controller.state import ClassStatus, ControllerState

try:
    from tests import servers
except ImportError:  # tests/ is not a package
    import servers  # type: ignore[no-redef]

NOT_PAYING = {"SpecDecodeNotPayingOff", "SpecDecodePredictedNotPayingOff"}


def _load(
    measured: float | None,
    *,
    aware: bool = True,
    bands: tuple[tuple[str, float], ...] = (),
) -> dict[str, Any]:
    return {
        "load_aware": aware,
        "note": "" if aware else "no latency families: priced with the constant-cost model",
        "measured": None
        if measured is None
        else {"value": measured, "low": measured - 0.04, "high": measured + 0.04},
        "bands_measured": [{"band": b, "value": v} for b, v in bands],
        "bands": [],
    }


def _class(name: str, predicted: float, k: int, load: dict[str, Any] | None) -> ClassStatus:
    return ClassStatus(
        name,
        0.05,
        k,
        k,
        alpha=0.7,
        predicted_speedup_deployed=predicted,
        predicted_speedup_recommended=max(predicted, 1.0),
        stale=False,
        load=load,
    )


#: name -> (class status, the alerts it must raise as (alertname, extra labels, value))
CASES: dict[str, tuple[ClassStatus, set[tuple[str, tuple[tuple[str, str], ...], float]]]] = {
    # predicted to pay (constant cost), measured to lose (the batch grew)
    "peak": (
        _class("peak", 1.3, 4, _load(0.84)),
        {("SpecDecodeNotPayingOff", (("basis", "measured"),), 0.84)},
    ),
    # measured to pay overall, its busiest band loses
    "night": (
        _class("night", 1.4, 4, _load(1.35, bands=(("1-64", 1.6), ("65-256", 0.9)))),
        {("SpecDecodeNotPayingOff", (("band", "65-256"), ("basis", "measured")), 0.9)},
    ),
    # predicted to lose, measured to pay: only the predicted alert
    "wrong": (
        _class("wrong", 0.7, 2, _load(1.2)),
        {("SpecDecodePredictedNotPayingOff", (), 0.7)},
    ),
    # no latency families: the prediction stands in, and the predicted alert fires too
    "nolat": (
        _class("nolat", 0.75, 3, _load(None, aware=False)),
        {
            ("SpecDecodeNotPayingOff", (("basis", "predicted"),), 0.75),
            ("SpecDecodePredictedNotPayingOff", (), 0.75),
        },
    ),
    # load-aware but nothing measured yet (no measured series): the prediction stands in
    "young": (
        _class("young", 0.8, 3, _load(None)),
        {
            ("SpecDecodeNotPayingOff", (("basis", "predicted"),), 0.8),
            ("SpecDecodePredictedNotPayingOff", (), 0.8),
        },
    ),
    # a controller without the cost side (no load block): today's behaviour, labelled
    "legacy": (
        _class("legacy", 0.6, 2, None),
        {
            ("SpecDecodeNotPayingOff", (("basis", "predicted"),), 0.6),
            ("SpecDecodePredictedNotPayingOff", (), 0.6),
        },
    ),
    # specwise already turned it off (k = 0): nothing to lose
    "offnow": (_class("offnow", 0.8, 0, _load(0.8, bands=(("1-256", 0.8),))), set()),
    # everything pays
    "fine": (_class("fine", 1.5, 4, _load(1.4, bands=(("1-256", 1.4),))), set()),
}


def _fired(ev: AlertEvaluator, state: ControllerState, t: float) -> set[Any]:
    return {
        (
            a.name,
            tuple(sorted((k, v) for k, v in a.labels.items() if k in {"band", "basis"})),
            round(a.value, 6),
        )
        for a in ev.evaluate(state, t)
        if a.name in NOT_PAYING
    }


@pytest.mark.parametrize("name", sorted(CASES))
def test_evaluator_fires_on_the_measured_speedup_per_class_and_band(name: str) -> None:
    status, expected = CASES[name]
    ev = AlertEvaluator(AlertSettings(not_paying_for=60.0))
    state = ControllerState(0.0, 0.0, 1, classes=(status,))
    assert _fired(ev, state, 0.0) == set()  # pending for not_paying_for
    assert _fired(ev, state, 60.0) == expected


def test_band_alert_description_names_the_band_and_says_measured() -> None:
    status, _ = CASES["night"]
    ev = AlertEvaluator(AlertSettings(not_paying_for=0.5))
    ev.evaluate(ControllerState(0.0, 0.0, 1, classes=(status,)), 0.0)
    (alert,) = [
        a
        for a in ev.evaluate(ControllerState(0.0, 1.0, 2, classes=(status,)), 1.0)
        if a.name == "SpecDecodeNotPayingOff"
    ]
    assert alert.labels["band"] == "65-256"
    assert alert.annotations["description"].startswith(
        "Class night at batch sizes 65-256 ran at 0.90x the speed of plain decoding"
    )
    assert alert.annotations["runbook_url"].endswith("#specdecodenotpayingoff")


def _series_line(name: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    series = f"{name}{{{inner}}}"
    return f"      - {{series: '{series}', values: '{value!r}x40'}}"


def test_prometheus_rules_fire_on_the_same_states_as_the_push(tmp_path: Path) -> None:
    """The exporter's samples for every case go into promtool as input series; the alerts
    promtool expects are exactly the evaluator's (labels, value and description)."""
    promtool = servers.require_binary("promtool")
    settings = AlertSettings()  # the committed file's defaults: for 15m
    statuses = tuple(status for status, _ in CASES.values())
    state = ControllerState(0.0, 0.0, 1, classes=statuses)
    registry = controller_registry(lambda: state)
    lines = []
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.startswith("specwise_") and not sample.name.endswith("_created"):
                lines.append(_series_line(sample.name, dict(sample.labels), float(sample.value)))
    ev = AlertEvaluator(settings)
    ev.evaluate(state, 0.0)
    fired = [a for a in ev.evaluate(state, 16 * 60.0) if a.name in NOT_PAYING]
    assert {a.labels["class"] for a in fired} == {
        n for n, (_, exp) in CASES.items() if exp
    }  # every case that should alert did, in the push
    tests = []
    for name in sorted(NOT_PAYING):
        exp = [
            {
                "exp_labels": {k: v for k, v in a.labels.items() if k != "alertname"},
                "exp_annotations": dict(a.annotations),
            }
            for a in fired
            if a.name == name
        ]
        tests.append({"alertname": name, "eval_time": "16m", "exp_alerts": exp})
        tests.append({"alertname": name, "eval_time": "14m", "exp_alerts": []})
    (tmp_path / "rules.yml").write_text(rules_yaml(build_rules(settings)))
    doc = (
        "rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n"
        "    input_series:\n" + "\n".join(lines) + "\n    alert_rule_test:\n"
    )
    doc += "".join(f"      - {json.dumps(t)}\n" for t in tests)
    (tmp_path / "t.yml").write_text(doc)
    run = subprocess.run(
        [promtool, "test", "rules", "t.yml"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr + doc


def test_pusher_sends_band_and_basis_labels_to_a_real_alertmanager(
    start_alertmanager: Any, webhook_receiver: servers.WebhookReceiver
) -> None:
    am = start_alertmanager(webhook_url=webhook_receiver.url)
    status, _ = CASES["night"]
    t0 = 1_800_000_000.0
    with requests.Session() as session:
        pusher = AlertmanagerPusher(
            am.base_url, session=session, settings=AlertSettings(not_paying_for=10)
        )
        pusher(ControllerState(0.0, t0, 1, classes=(status,)), t0)
        pusher(ControllerState(0.0, t0 + 15, 2, classes=(status,)), t0 + 15)
        got = webhook_receiver.wait_for(
            lambda a: a["labels"].get("alertname") == "SpecDecodeNotPayingOff", timeout=60
        )
    assert got is not None
    assert got["labels"]["band"] == "65-256"
    assert got["labels"]["basis"] == "measured"
    assert got["labels"]["class"] == "night"
    assert "ran at 0.90x" in got["annotations"]["description"]
