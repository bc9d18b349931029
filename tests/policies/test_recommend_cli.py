"""`specwise recommend` on real vLLM 0.32 captures, its log, and a live exporter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specwise.cli import main

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "vllm"
KEYS = {
    "class",
    "alpha",
    "alpha_low",
    "alpha_high",
    "mean_acceptance_length",
    "current_k",
    "recommended_k",
    "predicted_speedup_current",
    "predicted_speedup_recommended",
    "reason",
}


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    assert main(["recommend", *args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data, list)
    return data


def test_after_alone_is_since_start(capsys: pytest.CaptureFixture[str]) -> None:
    [row] = run_json(["--after", str(FIX / "metrics-ngram-5-final.txt"), "--cost", "ngram"], capsys)
    assert set(row) >= KEYS
    assert row["class"] == "tiny-llama"
    assert row["mean_acceptance_length"] == pytest.approx(1 + 8255 / 2946)
    assert row["current_k"] == 4
    # free n-gram drafts: longer ones still pay, but one change goes at most two positions
    # past the 4 measured (issue 11)
    assert row["recommended_k"] == 6
    assert row["shortfall"] == pytest.approx(11252 / (4 * 2946))
    # the capture has vLLM's latency families: priced with the fitted step time (one window,
    # no plain decoding: T(0, B) from the prior), and the step bound is said in the notes
    assert "step bound applied: k priced up to 6 (4 measured positions + max_step 2)" in str(
        row["notes"]
    )
    load = row["load"]
    assert isinstance(load, dict)
    assert load["load_aware"] is True
    assert load["measured"]["basis"] == "inferred"
    assert load["recommended"]["k"] == 6


def test_before_after_window_and_losing_cost(capsys: pytest.CaptureFixture[str]) -> None:
    [row] = run_json(
        [
            "--before",
            str(FIX / "metrics-ngram-1-after-20req.txt"),
            "--after",
            str(FIX / "metrics-ngram-5-final.txt"),
            "--cost",
            "1.0",
        ],
        capsys,
    )
    assert row["recommended_k"] == 0
    assert row["off_mode"] == "restart"
    assert row["predicted_speedup_current"] < 1.0  # type: ignore[operator]
    # priced with the fitted step time (the captures carry latency families): "off"
    assert "recommend off (restart without a drafter)" in str(row["reason"])
    assert row["configuration"] == {
        "k": 0,
        "schedule": None,
        "describe": "off (no speculative config)",
    }


def test_log_source_matches_the_counters(capsys: pytest.CaptureFixture[str]) -> None:
    [row] = run_json(["--log", str(FIX / "server-ngram.log"), "--cost", "0"], capsys)
    assert row["mean_acceptance_length"] == pytest.approx(1 + 8255 / 2946)


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recommend", "--after", str(FIX / "metrics-ngram-5-final.txt")]) == 0
    out = capsys.readouterr().out
    assert "alpha [95%]" in out
    assert "0.85 0.73 0.65 0.58" in out
    assert "tiny-llama: alpha 0.880" in out  # short drafts: sum_j P_(j-1)/alpha^j = T


def test_not_enough_data(capsys: pytest.CaptureFixture[str]) -> None:
    [row] = run_json(
        ["--after", str(FIX / "metrics-ngram-5-final.txt"), "--min-drafts", "10000"], capsys
    )
    assert row["alpha"] is None
    assert row["recommended_k"] == 4
    assert "not enough data" in str(row["reason"])


def test_scrape_twice_from_a_live_exporter(
    vllm_exporter: object, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    exporter = vllm_exporter
    labels = {"engine": "0", "model_name": "m"}
    exporter.collector.add(  # type: ignore[attr-defined]
        labels, drafts=1000, draft_tokens=4000, accepted=2000, per_position=[800, 600, 400, 200]
    )

    def later() -> None:
        exporter.collector.add(  # type: ignore[attr-defined]
            labels, drafts=1000, draft_tokens=4000, accepted=1734, per_position=[700, 490, 343, 201]
        )

    timer = threading.Timer(0.6, later)  # after the first scrape, before the second
    timer.start()
    try:
        [row] = run_json(["--url", exporter.url, "--interval", "1.5", "--cost", "0.05"], capsys)  # type: ignore[attr-defined]
    finally:
        timer.cancel()
    assert row["drafts"] == 1000
    assert row["alpha"] == pytest.approx(1734 / (1734 + 1000 - 201))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "exactly one source"),
        (["--before", "x.txt"], "exactly one source"),
        (["--after", "/nonexistent/m.txt"], "Cannot read metrics file"),
        (["--after", str(FIX / "metrics-ngram-5-final.txt"), "--cost", "medusa"], "medusa"),
    ],
)
def test_errors_are_one_line(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recommend", *args]) == 1
    err = capsys.readouterr().err
    assert needle in err
    assert err.startswith("Error: ")
    assert "Traceback" not in err


def test_table_shows_the_recommended_k_and_the_exact_maximum(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`recommend` names its k the recommended one (the controller's), the exact maximiser
    beside it where they differ, in the table and the JSON."""
    args = ["--before", str(FIX / "metrics-ngram-1-after-20req.txt"),
            "--after", str(FIX / "metrics-ngram-5-final.txt"), "--cost", "0.2"]  # fmt: skip
    [row] = run_json(args, capsys)
    rec, top = row["recommended_k"], row["optimal_k"]
    assert isinstance(rec, int)
    assert isinstance(top, int)
    assert rec < top
    assert main(["recommend", *args]) == 0
    out = capsys.readouterr().out
    assert "k rec." in out
    assert "k best" not in out
    assert f"{rec} (max {top})" in out


# -- the cost side (#14): measured speedup against a plain replica, from real exposition ---


def _captures(tmp_path: Path, *, batch: float, latency: bool = True) -> tuple[Path, Path]:
    """Two /metrics captures of a served model: an EAGLE-like engine at k = 4 and a plain
    replica of it (no speculative config), both at ``batch`` running requests, 10 minutes
    apart; counters follow a ground-truth T(k, B)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from specwise.step_cost import SpecConfig, StepCost
    from tests.controller.load_fleet import LoadEngine, LoadFleetCollector

    cost = StepCost(base=0.02, per_token=0.02 / 256, knee=256, draft_base=0.001)
    engines = [
        LoadEngine("m", "0", 0.7, cost, SpecConfig(4), batch=batch, latency_families=latency),
        LoadEngine("m", "1", 0.7, cost, SpecConfig(0), batch=batch, latency_families=latency),
    ]
    collector = LoadFleetCollector(engines)
    registry = CollectorRegistry()
    registry.register(collector)
    collector.advance(300.0)
    before = tmp_path / f"before-{batch:g}.txt"
    before.write_bytes(generate_latest(registry))
    collector.advance(600.0)
    after = tmp_path / f"after-{batch:g}.txt"
    after.write_bytes(generate_latest(registry))
    return before, after


@pytest.mark.parametrize(("batch", "pays"), [(4.0, True), (256.0, False)])
def test_measured_speedup_against_a_plain_replica(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], batch: float, pays: bool
) -> None:
    """At B = 4 the step is memory-bound and k = 4 delivers 2.3x; at B = 256 it is
    compute-bound and the same k delivers 0.53x: measured against the plain replica of
    the same model (same class), as vLLM's counters show it."""
    from specwise.step_cost import StepCost, speedup_at_batch

    truth = speedup_at_batch(
        [0.7**i for i in range(1, 5)],
        4,
        batch,
        StepCost(base=0.02, per_token=0.02 / 256, knee=256, draft_base=0.001),
    )
    before, after = _captures(tmp_path, batch=batch)
    [row] = run_json(["--before", str(before), "--after", str(after), "--cost", "eagle"], capsys)
    load = row["load"]
    assert isinstance(load, dict)
    m = load["measured"]
    assert m["basis"] == "baseline"
    assert m["k"] == 4
    assert m["batch"] == pytest.approx(batch)
    assert m["value"] == pytest.approx(truth, rel=0.03)
    assert m["low"] <= m["value"] <= m["high"]
    assert (m["value"] > 1.0) is pays
    assert load["batch"]["p50"] == batch
    assert load["costs"]["base"] == pytest.approx(0.02, rel=0.05)
    if pays:
        assert load["recommended"]["kind"] == "single"
    else:  # one batch size and one k seen: where the knee lies between them is a guess
        assert load["recommended"]["k"] < 4
    args = ["recommend", "--before", str(before), "--after", str(after), "--cost", "eagle"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"measured speedup at k = 4: {m['value']:.2f}x" in out
    assert "(against plain windows of this class)" in out
    assert "fitted step: base 20" in out


def test_without_latency_families_recommend_says_constant_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, after = _captures(tmp_path, batch=8.0, latency=False)
    args = ["recommend", "--before", str(before), "--after", str(after), "--cost", "eagle"]
    assert main([*args, "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["load"]["load_aware"] is False
    assert row["load"]["note"].startswith("no latency families: priced with the constant-cost")
    assert row["configuration"] is None
    assert row["recommended_k"] == 5  # today's answer at alpha 0.7, c = 0.05
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "  no latency families: priced with the constant-cost model" in out
