"""The cost side on the controller's surfaces: the exported metric names and labels, the
status table (predicted vs measured speedup, the configuration), the state file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from specwise.commands.status import config_text, format_status, measured_text
from specwise.controller.exporter import METRIC_NAMES, controller_registry
from specwise.controller.state import (
    ClassStatus,
    ControllerState,
    PersistedClass,
    load_persisted,
    persisted_json,
)

LOAD: dict[str, Any] = {
    "load_aware": True,
    "note": "",
    "error": "",
    "measured": {"value": 0.84, "low": 0.8, "high": 0.88, "basis": "baseline", "batch": 48.0},
    "predicted": {"value": 0.9, "low": 0.85, "high": 0.95, "batch": 48.0},
    "recommended": {"k": 4, "schedule": [[1, 16, 4], [17, 256, 0]], "kind": "schedule"},
    "bands": [
        {"band": "1-16", "start": 1, "end": 16, "k": 4, "share": 0.3, "speedup": 1.6},
        {"band": "17-256", "start": 17, "end": 256, "k": 0, "share": 0.7, "speedup": 0.88},
    ],
    "bands_measured": [{"band": "1-256", "value": 0.84, "low": 0.8, "high": 0.88}],
    "costs": {
        "base": 0.02,
        "per_token": 2e-5,
        "knee_tokens": None,  # never compute-bound in range: not exported
        "draft_base": 0.002,
        "draft_per_seq": 1e-5,
        "implied_draft_cost": 0.12,
        "implied_verify_cost": 1.3,
    },
    "batch": {"mean": 40.5, "p50": 38, "p90": 90, "p99": 120, "idle_share": 0.1},
    "warnings": [],
}


def _state(*classes: ClassStatus) -> ControllerState:
    return ControllerState(0.0, 60.0, 1, classes=classes)


def test_the_cost_side_is_exported_under_the_planned_names() -> None:
    loaded = ClassStatus("code", 0.05, 4, 4, load=LOAD, deployed_schedule=((1, 256, 4),))
    plain = ClassStatus(
        "chat",
        0.05,
        3,
        3,
        load={"load_aware": False, "note": "no latency families: ...", "batch": None},
    )
    registry = controller_registry(lambda: _state(loaded, plain))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("specwise_measured_speedup_ratio", **{"class": "code"}) == 0.84
    assert value("specwise_measured_speedup_lower_ratio", **{"class": "code"}) == 0.8
    assert value("specwise_measured_speedup_upper_ratio", **{"class": "code"}) == 0.88
    code = {"class": "code"}
    assert value("specwise_band_measured_speedup_ratio", **code, band="1-256") == 0.84
    assert value("specwise_band_predicted_speedup_ratio", **code, band="17-256") == 0.88
    assert value("specwise_band_share_ratio", **code, band="1-16") == 0.3
    assert value("specwise_band_k", **code, band="1-16") == 4
    assert value("specwise_band_k", **code, band="17-256") == 0
    assert value("specwise_step_cost_seconds", **code, part="base") == 0.02
    assert value("specwise_step_cost_seconds", **code, part="draft_per_seq") == 1e-5
    assert value("specwise_step_cost_seconds", **code, part="knee_tokens") is None
    assert value("specwise_implied_draft_cost_ratio", **code) == 0.12
    assert value("specwise_implied_verify_cost_ratio", **code) == 1.3
    assert value("specwise_batch_size", **code, quantile="0.9") == 90
    assert value("specwise_batch_size", **code, quantile="0.99") == 120
    assert value("specwise_batch_size_mean", **code) == 40.5
    assert value("specwise_load_aware", **code) == 1
    assert value("specwise_load_aware", **{"class": "chat"}) == 0
    assert value("specwise_measured_speedup_ratio", **{"class": "chat"}) is None
    assert value("specwise_controller_errors_total", kind="load") == 0
    exported = {m.name for m in registry.collect()}
    for name in (
        "specwise_measured_speedup_ratio",
        "specwise_band_k",
        "specwise_step_cost_seconds",
        "specwise_batch_size",
        "specwise_load_aware",
    ):
        assert name in METRIC_NAMES
        assert name in exported


def test_an_inferred_speedup_is_not_exported_as_measured() -> None:
    # one k and no plain window: plain decoding comes from the fit (through the preset c),
    # so the value is not a measurement and SpecDecodeNotPayingOff must not fire on it
    inferred = {
        **LOAD,
        "measured": {**LOAD["measured"], "basis": "inferred", "value": 0.7},
        "bands_measured": [{"band": "1-256", "value": 0.7, "basis": "inferred"}],
    }
    code = ClassStatus("code", 0.05, 4, 4, load=inferred)
    registry = controller_registry(lambda: _state(code))
    labels = {"class": "code"}
    assert registry.get_sample_value("specwise_inferred_speedup_ratio", labels) == 0.7
    for name in (
        "specwise_measured_speedup_ratio",
        "specwise_measured_speedup_lower_ratio",
        "specwise_measured_speedup_upper_ratio",
    ):
        assert registry.get_sample_value(name, labels) is None
    band = {**labels, "band": "1-256"}
    assert registry.get_sample_value("specwise_band_measured_speedup_ratio", band) is None
    assert "specwise_inferred_speedup_ratio" in METRIC_NAMES


def test_status_table_shows_measured_and_predicted_speedup_and_the_configuration() -> None:
    code = ClassStatus(
        "code",
        0.05,
        4,
        4,
        predicted_speedup_deployed=0.9,
        predicted_speedup_recommended=1.2,
        load=LOAD,
    )
    assert measured_text(code) == "0.84x [0.80, 0.88] (pred. 0.90x)"
    assert config_text(code) == "k=4 -> k=4 [1-16: 4, 17-256: 0]"
    chat = ClassStatus("chat", 0.05, 3, 3, load={"load_aware": False, "note": "no latency"})
    assert measured_text(chat) == "n/a"
    assert config_text(chat) == "k=3"
    table = format_status(_state(code, chat), width=200)
    header = table.splitlines()[0]
    assert "predicted" in header
    assert "measured" in header
    assert "configuration" in header
    row = next(line for line in table.splitlines() if line.startswith("code"))
    assert "0.90x -> 1.20x" in row
    assert "0.84x [0.80, 0.88] (pred. 0.90x)" in row
    assert "[1-16: 4, 17-256: 0]" in row


def test_recommendations_json_carries_the_load_block() -> None:
    code = ClassStatus("code", 0.05, 4, 4, load=LOAD, deployed_schedule=((1, 16, 4),))
    data = json.loads(json.dumps(_state(code).to_json(), allow_nan=False))
    row = data["classes"][0]
    assert row["load"]["measured"]["value"] == 0.84
    assert row["load"]["recommended"]["schedule"] == [[1, 16, 4], [17, 256, 0]]
    assert row["deployed_schedule"] == [[1, 16, 4]]


def test_state_file_keeps_the_schedule_and_the_load_window(tmp_path: Path) -> None:
    window = {"version": 1, "observations": [[0, 12.0, 0.02, 100.0, 1.0, 0.0, 60.0]]}
    path = tmp_path / "state.json"
    path.write_text(
        persisted_json(
            {
                "code": PersistedClass(
                    4, (10.0,), deployed_schedule=((1, 16, 4), (17, 256, 0)), load_window=window
                ),
                "chat": PersistedClass(3),
            }
        )
    )
    back = load_persisted(path)
    assert back["code"].deployed_schedule == ((1, 16, 4), (17, 256, 0))
    assert back["code"].load_window == window
    assert back["chat"].deployed_schedule is None
    assert back["chat"].load_window is None
    # a state file from before the cost side still loads
    old = {"version": 1, "classes": {"code": {"deployed_k": 3, "change_times": []}}}
    path.write_text(json.dumps(old))
    assert load_persisted(path)["code"].load_window is None
