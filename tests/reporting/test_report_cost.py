"""``specwise report`` speaks the cost side: per window the measured speedup (against a plain
replica of the same model) next to the prediction, the fitted step cost, the batch sizes and
the recommended configuration, in the verdict, report.md/html and report.json; without
latency families it says the constant-cost model is used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from specwise.cli import main
from specwise.step_cost import SpecConfig, StepCost, speedup_at_batch
from tests.controller.load_fleet import LoadEngine, LoadFleetCollector

COST = StepCost(base=0.02, per_token=0.02 / 256, knee=256, draft_base=0.001)
SURVIVAL = [0.7**i for i in range(1, 5)]


def _window(tmp_path: Path, label: str, batch: float, *, latency: bool = True) -> tuple[Path, Path]:
    """Start and end captures of a 10-minute window of one model at ``batch`` running
    requests: an engine at k = 4 and a plain replica (no speculative config)."""
    engines = [
        LoadEngine("m", "0", 0.7, COST, SpecConfig(4), batch=batch, latency_families=latency),
        LoadEngine("m", "1", 0.7, COST, SpecConfig(0), batch=batch, latency_families=latency),
    ]
    collector = LoadFleetCollector(engines)
    registry = CollectorRegistry()
    registry.register(collector)
    collector.advance(120.0)
    start = tmp_path / f"{label}-start.txt"
    start.write_bytes(generate_latest(registry))
    collector.advance(600.0)
    end = tmp_path / f"{label}-end.txt"
    end.write_bytes(generate_latest(registry))
    return start, end


def _report(tmp_path: Path, *, latency: bool = True) -> dict[str, object]:
    b0, b1 = _window(tmp_path, "night", 4.0, latency=latency)
    a0, a1 = _window(tmp_path, "peak", 256.0, latency=latency)
    out = tmp_path / "report"
    args = ["report", "--before", str(b0), "--before", str(b1), "--after", str(a0)]
    args += ["--after", str(a1), "--cost", "eagle", "--out", str(out), "--json"]
    assert main(args) == 0
    data = json.loads((out / "report.json").read_text())
    assert isinstance(data, dict)
    return data


def test_report_measures_the_speedup_per_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _report(tmp_path)
    capsys.readouterr()
    (cls,) = data["classes"]  # type: ignore[index]
    for window, batch in (("before", 4.0), ("after", 256.0)):
        load = cls[window]["load"]
        m = load["measured"]
        assert m["basis"] == "baseline"
        assert m["value"] == pytest.approx(speedup_at_batch(SURVIVAL, 4, batch, COST), rel=0.03)
        assert load["predicted"]["value"] == pytest.approx(m["value"], rel=0.05)
        assert load["costs"]["base"] == pytest.approx(0.02, rel=0.05)
        assert load["batch"]["p50"] == batch
        assert cls[window]["configuration"] is not None
    before, after = cls["before"]["load"]["measured"], cls["after"]["load"]["measured"]
    assert before["value"] > 2.0 > 1.0 > after["value"]  # pays at night, loses at peak
    verdict = cls["verdict"]
    assert "measured 2.3x -> 0.5x at the deployed configuration" in verdict
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| measured speedup [90%] |" in md
    assert "| recommended configuration |" in md
    assert "| fitted step cost | base 20 ms" in md
    assert "after: measured speedup at k = 4: 0.53x" in md
    html = (tmp_path / "report" / "report.html").read_text()
    assert "measured speedup [90%]" in html


def test_report_without_latency_families_says_constant_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _report(tmp_path, latency=False)
    capsys.readouterr()
    (cls,) = data["classes"]  # type: ignore[index]
    load = cls["after"]["load"]
    assert load["load_aware"] is False
    assert load["note"].startswith("no latency families: priced with the constant-cost model")
    assert cls["after"]["configuration"] is None
    md = (tmp_path / "report" / "report.md").read_text()
    assert "after: no latency families: priced with the constant-cost model" in md
