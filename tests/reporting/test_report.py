"""Report computation, files as inputs (real vLLM 0.32 captures and log), the atomic folder,
and the HTML opened in headless Chromium (a screenshot must show the plots)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from specwise.cli import main
from specwise.errors import ReportError
from specwise.estimation.estimator import Estimate
from specwise.reporting.report import alpha_change, parse_range, parse_time

try:
    from tests.servers import require_binary
except ImportError:
    from servers import require_binary  # type: ignore[no-redef]

FIX = Path(__file__).parent.parent / "fixtures" / "vllm"
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("-30d", NOW - 30 * 86400),
        ("-1h30m", NOW - 5400),
        ("1777593600", 1777593600.0),
        ("2026-05-01T00:00:00Z", 1777593600.0),
        ("2026-05-01T02:00:00+02:00", 1777593600.0),
        ("2026-05-01T00:00:00", 1777593600.0),
    ],
)
def test_parse_time(text: str, expected: float) -> None:
    assert parse_time(text, now=NOW) == expected


def test_parse_range() -> None:
    r = parse_range("-60d..-30d", now=NOW)
    assert (r.start, r.end) == (NOW - 60 * 86400, NOW - 30 * 86400)
    assert parse_range("-1d..", now=NOW).end == NOW
    for bad in ("-30d", "-30d..-60d", "yesterday..now"):
        with pytest.raises(ReportError):
            parse_range(bad, now=NOW)


def est(alpha: float, low: float, high: float) -> Estimate:
    return Estimate("c", "positions-mle", alpha, low, high, 1000.0, 4000.0, 2000.0, 4)


def test_alpha_change_interval_adds_both_uncertainties() -> None:
    ch = alpha_change(est(0.61, 0.60, 0.62), est(0.74, 0.73, 0.75))
    assert ch is not None
    assert ch.delta == pytest.approx(0.13)
    assert ch.half_width == pytest.approx(0.01 * 2**0.5)
    assert ch.real
    assert ch.p_increase > 0.999
    noise = alpha_change(est(0.61, 0.58, 0.64), est(0.62, 0.59, 0.65))
    assert noise is not None
    assert not noise.real
    assert 0.5 < noise.p_increase < 0.9


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(args)
    out, err = capsys.readouterr()
    return status, out, err


def capture_report(out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:  # type: ignore[type-arg]
    args = [
        "report",
        "--before", str(FIX / "metrics-ngram-0-before-load.txt"),
        "--before", str(FIX / "metrics-ngram-1-after-20req.txt"),
        "--after", str(FIX / "metrics-ngram-2-after-40req.txt"),
        "--after", str(FIX / "metrics-ngram-5-final.txt"),
        "--cost", "ngram", "--out", str(out), "--json", *extra,
    ]  # fmt: skip
    status, stdout, err = run(args, capsys)
    assert status == 0, err
    data: dict = json.loads(stdout)  # type: ignore[type-arg]
    return data


def test_capture_pairs_give_window_counts_and_latency(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = capture_report(tmp_path / "r", capsys)
    (c,) = data["classes"]
    assert c["class"] == "tiny-llama"
    assert c["presence"] == "both"
    before, after = c["before"], c["after"]
    # Final capture minus the one after 40 requests (counters from the fixtures).
    assert after["drafts"] == 2946 - 416
    assert before["deployed_k"] == after["deployed_k"] == 4
    assert before["shortfall"] < 1.0
    assert before["alpha_low"] <= before["alpha"] <= before["alpha_high"]
    assert len(after["survival"]) == len(after["conditional_acceptance"]) == 4
    assert after["latency"]["itl_seconds"] > 0
    assert c["latency_change"]["itl_ratio"] > 0
    assert c["verdict"].startswith("tiny-llama: alpha ")
    assert json.loads((tmp_path / "r" / "report.json").read_text()) == data


def test_log_window_and_single_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "report",
        "--before", str(FIX / "server-ngram.log"),
        "--after", str(FIX / "metrics-ngram-5-final.txt"),
        "--cost", "ngram", "--out", str(tmp_path / "r"), "--json",
    ]  # fmt: skip
    status, stdout, err = run(args, capsys)
    assert status == 0, err
    data = json.loads(stdout)
    (c,) = data["classes"]
    # The log's intervals add up to the final counters (docs/vllm-metrics.md#log-lines).
    assert c["before"]["accepted"] == c["after"]["accepted"] == 8255
    assert data["before"]["alpha_over_time"]["tiny-llama"]["times"]
    assert abs(c["alpha_change"]["delta"]) < 1e-9


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["report", "--before", "-2d..-1d", "--after", "-1d..", "--out",
                          str(tmp_path / "r")], capsys)  # fmt: skip
    assert status == 1
    assert "needs --prometheus" in err
    status, _, err = run(["report", "--before", str(FIX / "server-ngram.log"), "--before",
                          str(FIX / "server-ngram.log"), "--after", str(FIX / "server-ngram.log"),
                          "--out", str(tmp_path / "r")], capsys)  # fmt: skip
    assert status == 1
    assert "log file alone" in err
    assert not (tmp_path / "r").exists()


def test_folder_is_atomic_and_force_replaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    capture_report(out, capsys)
    first = (out / "report.json").read_text()
    args = ["report", "--before", str(FIX / "metrics-ngram-1-after-20req.txt"),
            "--after", str(FIX / "metrics-ngram-5-final.txt"), "--out", str(out)]  # fmt: skip
    status, _, err = run(args, capsys)
    assert status == 1
    assert "exists; pass --force" in err
    assert (out / "report.json").read_text() == first
    status, _, err = run([*args, "--force"], capsys)
    assert status == 0, err
    assert (out / "report.json").read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no temporary folders left
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)


def test_pngs_are_readable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture_report(tmp_path / "r", capsys)
    for kind in ("survival", "speedup", "alpha-over-time", "alpha-cost-map"):
        with Image.open(tmp_path / "r" / f"{kind}-tiny-llama.png") as img:
            assert img.width >= 500
            assert img.height >= 300
            colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colors is not None
            assert len(colors) > 50  # drawn, not blank


def test_html_opens_in_headless_chromium_and_shows_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chromium = require_binary("chromium")  # fails instead of skipping when CI is set
    out = tmp_path / "r"
    capture_report(out, capsys)
    html = (out / "report.html").read_text()
    assert "<img" in html
    assert 'src="http' not in html  # self-contained
    assert html.count("data:image/png;base64,") == 4
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={shot}",
         "--window-size=1400,2400", (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=90, check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert shot.exists(), result.stderr[-2000:]
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (1400, 2400)
        # The plots' blue and orange lines and the map's colours: pixels far from grey.
        pixels = np.asarray(rgb, dtype=int)
        colourful = int(((pixels.max(axis=2) - pixels.min(axis=2)) > 60).sum())
    shutil.copy(shot, out.parent / "chromium-screenshot.png")  # for a person to look at
    assert colourful > 30_000, f"only {colourful} coloured pixels: plots not rendered"


def test_overlapping_single_captures_are_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two single captures of one server both count from its start: say the windows overlap."""
    from specwise.cli import main as cli_main

    fix = Path(__file__).parent.parent / "fixtures" / "vllm"
    status = cli_main(
        [
            "report",
            "--before",
            str(fix / "metrics-ngram-1-after-20req.txt"),
            "--after",
            str(fix / "metrics-ngram-5-final.txt"),
            "--cost",
            "ngram",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert status == 0
    err = capsys.readouterr().err
    assert "Note: both windows count from the same server start" in err
    assert "no draft cost given" not in err
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert any("same server start" in n for n in data["notes"])
