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


def _edited(tmp_path: Path, name: str, metric: str, value: str, position: str = "") -> str:
    """The final capture with one counter's value replaced (a page vLLM cannot produce)."""
    out = []
    for line in Path(FINAL).read_text().splitlines():
        if line.startswith(metric + "{") and (not position or f'position="{position}"' in line):
            line = line.rsplit(" ", 1)[0] + " " + value
        out.append(line)
    path = tmp_path / name
    path.write_text("\n".join(out) + "\n")
    return str(path)


@pytest.mark.parametrize(
    ("metric", "value", "position", "says"),
    [
        ("vllm:spec_decode_num_drafts_total", "NaN", "", "drafts is NaN"),
        ("vllm:spec_decode_num_draft_tokens_total", "-5.0", "", "draft tokens is -5"),
        ("vllm:spec_decode_num_accepted_tokens_total", "+Inf", "", "accepted tokens is inf"),
        (
            "vllm:spec_decode_num_accepted_tokens_total",
            "99999.0",
            "",
            "accepted tokens 99999 exceed draft tokens 11252",
        ),
        (
            "vllm:spec_decode_num_accepted_tokens_per_pos_total",
            "5000.0",
            "3",
            "accepted at position 3 (5000) exceeds position 2 (1919)",
        ),
    ],
)
def test_impossible_counters_are_named_not_printed_as_valid(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    metric: str,
    value: str,
    position: str,
    says: str,
) -> None:
    """Before: printed as a valid row, exit 0, while `recommend` rejected the same page."""
    bad = _edited(tmp_path, "bad.txt", metric, value, position)
    assert main(["scrape", bad]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith(f"Error: {bad} (engine=0,instance={bad},model_name=tiny-llama): ")
    assert says in line
    assert "which vLLM cannot produce" in line
    assert main(["recommend", "--after", bad]) == 1  # recommend rejects it too
    assert capsys.readouterr().err.startswith("Error: ")


def test_impossible_counters_beside_good_ones_are_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], vllm_exporter: Exporter
) -> None:
    vllm_exporter.collector.add(
        {"engine": "0", "model_name": "served-bad"},
        drafts=2, draft_tokens=8, accepted=40, per_position=[2, 1, 1, 0],
    )  # fmt: skip
    bad = _edited(tmp_path, "nan.txt", "vllm:spec_decode_num_drafts_total", "NaN")
    assert main(["scrape", FINAL, bad, vllm_exporter.url, "--json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [r["labels"]["instance"] for r in rows] == [FINAL]
    warnings = captured.err.splitlines()
    assert len(warnings) == 2
    assert all(w.startswith("Warning: ") for w in warnings)
    assert f"{bad} (engine=0,instance={bad},model_name=tiny-llama): drafts is NaN" in warnings[0]
    assert "model_name=served-bad): accepted tokens 40 exceed draft tokens 8" in warnings[1]


def test_binary_capture_is_one_error_without_its_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = tmp_path / "capture.gz"
    blob.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    assert main(["scrape", str(blob)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        f"Error: metrics file {blob} is binary data, not a Prometheus text page; give vLLM's "
        "/metrics URL or a capture saved with curl -s URL/metrics > FILE."
    )
