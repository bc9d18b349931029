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
    captured = capsys.readouterr()
    assert f"{NOSPEC} has no vLLM spec-decode metrics" in captured.err
    assert "speculative decoding is off" in captured.err
    # (#14) the engine without speculation still shows its load families, k = 0
    assert "Its load families are shown (k = 0)" in captured.err
    assert "spec off" in captured.out
    assert main(["scrape", NOSPEC]) == 0
    assert "1145" in capsys.readouterr().out


def test_table_and_json_show_load_families(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scrape", FINAL]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    for column in ("running", "engine steps", "gen. tokens", "mean ITL ms"):
        assert column in header
    assert "2191" in out  # engine steps
    assert "13854" in out  # generation tokens
    assert f"{1000 * 18.31472114799982 / 5593:.2f}" in out  # mean ITL, ms
    assert main(["scrape", FINAL, NOSPEC, "--json"]) == 0
    spec, plain = json.loads(capsys.readouterr().out)
    assert spec["spec_families"] is True
    assert (spec["iteration_steps"], spec["iteration_tokens"]) == (2191, 15292)
    assert spec["tpot_seconds_count"] == 81
    assert spec["decode_seconds_sum"] == pytest.approx(18.31472114799982)
    assert plain["spec_families"] is False
    assert plain["k"] == 0
    assert (plain["generation_tokens"], plain["itl_seconds_count"]) == (1145, 1125)
    assert plain["running_requests"] == 0


def test_page_without_any_vllm_family_still_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    page = tmp_path / "other.txt"
    page.write_text("# TYPE up gauge\nup 1\n")
    assert main(["scrape", str(page)]) == 1
    assert "has no vLLM spec-decode metrics" in capsys.readouterr().err


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


def test_recommend_on_an_engine_without_speculation_still_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # its load-only Snapshot is no acceptance evidence: the same Error line as before #14
    assert main(["recommend", "--after", NOSPEC]) == 1
    assert "has no vLLM spec-decode counters" in capsys.readouterr().err
