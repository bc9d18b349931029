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
    assert "at most 2 positions past the 4 measured" in str(row["reason"])


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
    assert "recommend 0" in str(row["reason"])


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
