"""`specwise scrape`: table, JSON, files, stdin, URLs, and clear words for each failure."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from specwise.cli import main

try:
    from tests.servers import Exporter
except ImportError:
    from servers import Exporter  # type: ignore[no-redef]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vllm"
FINAL = str(FIXTURES / "metrics-ngram-5-final.txt")
NOSPEC = str(FIXTURES / "metrics-nospec-baseline-after-20req.txt")


def test_table_from_capture(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scrape", FINAL]) == 0
    out = capsys.readouterr().out
    assert "2946" in out
    assert "11252" in out
    assert "2491/2147/1919/1698" in out
    assert "3.802" in out  # 1 + 8255/2946


def test_json_keys_and_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scrape", FINAL, "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    for key in ("labels", "drafts", "draft_tokens", "accepted", "accepted_per_position", "k",
                "mean_acceptance_length"):  # fmt: skip
        assert key in row
    assert row["accepted_per_position"] == [2491, 2147, 1919, 1698]
    assert row["k"] == 4
    assert row["mean_acceptance_length"] == pytest.approx(1 + 8255 / 2946)
    assert row["labels"]["model_name"] == "tiny-llama"


def test_no_spec_metrics_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scrape", FINAL, NOSPEC]) == 0
    err = capsys.readouterr().err
    assert f"{NOSPEC} has no vLLM spec-decode metrics" in err
    assert "speculative decoding is off" in err
    assert main(["scrape", NOSPEC]) == 1


def test_url_stdin_and_a_failing_target(
    vllm_exporter: Exporter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vllm_exporter.collector.add(
        {"engine": "0", "model_name": "live"},
        drafts=2, draft_tokens=8, accepted=4, per_position=[2, 1, 1, 0],
    )  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.StringIO(Path(FINAL).read_text()))
    dead = "http://127.0.0.1:9/metrics"
    assert main(["scrape", vllm_exporter.url, "-", dead, "--json", "--timeout", "2"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [r["labels"]["model_name"] for r in rows] == ["live", "tiny-llama"]
    assert f"Cannot reach {dead}" in captured.err


def test_bad_target_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scrape", "no-such-file"]) == 1
    assert "neither an http(s) URL nor an existing file" in capsys.readouterr().err
    assert main(["scrape", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out
    assert "default: 5.0" in out
