"""Report computation, files as inputs (real vLLM 0.32 captures and log), the atomic folder,
and the HTML opened in headless Chromium (a screenshot must show the plots)."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from specwise.cli import main
from specwise.collectors.classes import ClassConfig
from specwise.errors import ReportError
from specwise.estimation.estimator import Estimate
from specwise.policies import PolicyConfig
from specwise.reporting.report import (
    LatencyChange,
    Report,
    WindowInfo,
    alpha_change,
    build_report,
    latency_text,
)
from specwise.reporting.windows import file_window, parse_range, parse_time

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


_LAYOUT_PROBE = """<script>
window.addEventListener("load", () => {
  const rects = [...document.querySelectorAll("img")].map((img) => {
    const r = img.getBoundingClientRect();
    return [r.left, r.top, r.width, r.height];
  });
  document.body.setAttribute("data-layout", JSON.stringify(rects));
});
</script></body>"""


def test_html_lays_the_plots_out_on_a_readable_grid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Chromium lays report.html out: the four plots form a 2 x 2 grid of equal cells, each
    wide enough to read (not a tiny panel floating beside a tall map), none overlapping."""
    chromium = require_binary("chromium")
    out = tmp_path / "r"
    capture_report(out, capsys)
    probe = tmp_path / "probe.html"
    probe.write_text((out / "report.html").read_text().replace("</body>", _LAYOUT_PROBE))
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         "--window-size=1400,2400", probe.as_uri()],
        capture_output=True, text=True, timeout=90, check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    found = re.search(r'data-layout="([^"]*)"', result.stdout)
    assert found, result.stderr[-2000:]
    rects = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(rects) == 4
    (l0, t0, w0, h0), (l1, t1, w1, h1), (l2, t2, w2, h2), (l3, t3, w3, h3) = rects
    assert abs(t0 - t1) < 2, rects  # two rows
    assert abs(t2 - t3) < 2, rects
    assert abs(l0 - l2) < 2, rects  # two columns
    assert abs(l1 - l3) < 2, rects
    assert t2 >= t0 + h0, rects  # no overlap
    assert l1 >= l0 + w0, rects
    for w, h in ((w0, h0), (w1, h1), (w2, h2), (w3, h3)):
        assert w > 550, rects  # readable at a 1400 px window
        assert abs(w - w0) < 2, rects  # equal cells
        assert abs(h - h0) < 2, rects


def _same_windows_report() -> Report:
    """Both windows from the same capture pair: nothing changed."""
    pair = [FIX / "metrics-ngram-1-after-20req.txt", FIX / "metrics-ngram-5-final.txt"]
    deltas, _ = file_window(pair, now=NOW)
    return build_report(
        deltas,
        deltas,
        before=WindowInfo("before", "a"),
        after=WindowInfo("after", "a"),
        classes=ClassConfig(),
        before_policy=lambda name: PolicyConfig(cost=0.2, k_max=8),
        after_policy=lambda name: PolicyConfig(cost=0.2, k_max=8),
        created=NOW,
    )


def test_verdict_compares_like_with_like_when_nothing_changed() -> None:
    """Deployed k against deployed k, recommended against recommended, each named."""
    report = _same_windows_report()
    (c,) = report.classes
    assert c.before is not None
    assert c.after is not None
    dep, rec = c.after.deployed_k, c.after.recommended_k
    assert dep == 4
    assert rec is not None
    assert rec != dep
    s_dep = f"{c.after.speedup_deployed:.1f}x"
    s_rec = f"{c.after.speedup_recommended:.1f}x"
    assert f"deployed k {dep} in both, predicted {s_dep} -> {s_dep}" in c.verdict
    assert f"recommended k {rec} in both, predicted {s_rec} -> {s_rec}" in c.verdict
    assert "before) ->" not in c.verdict
    assert "within noise" in c.verdict
    assert c.verdict.endswith(f"switch to k = {rec}")


def test_report_shows_the_recommended_k_with_the_exact_maximum_beside_it() -> None:
    """The report's k is the policy's recommended k; where the exact maximiser differs, the
    table and the verdict name both."""
    from specwise.reporting.render import _rows, report_to_dict

    report = _same_windows_report()
    (c,) = report.classes
    w = c.after
    assert w is not None
    r = w.recommendation
    assert w.recommended_k == r.recommended_k
    assert w.optimal_k == max(range(len(r.speedups)), key=lambda k: r.speedups[k])
    assert (w.recommended_k, w.optimal_k) == (5, 6)  # at c = 0.2 the two differ
    row = dict((t, a) for t, _, a in _rows(c))["k deployed -> recommended"]
    assert row == "4 -> 5 (exact max 6)"
    gain = w.speedup_optimal / r.predicted_speedup_recommended - 1  # type: ignore[operator]
    assert 0 < gain < 0.01
    assert f"exact max k = 6 after, +{gain:.2%})" in c.verdict
    data = report_to_dict(report)["classes"][0]["after"]
    assert data["recommended_k"] == r.recommended_k
    assert data["optimal_k"] == w.optimal_k
    assert data["speedup_recommended"] == r.predicted_speedup_recommended


def _text_boxes(fig: object, words: tuple[str, ...]) -> list[tuple[str, object]]:
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    assert isinstance(fig, Figure)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = []
    for t in fig.findobj(Text):
        text = t.get_text()  # type: ignore[attr-defined]
        if t.get_visible() and any(w in text for w in words):
            boxes.append((text, t.get_window_extent(renderer)))  # type: ignore[attr-defined]
    return boxes


def test_labels_of_both_windows_never_overlap() -> None:
    """Identical windows put both operating points on one spot: their labels must still be
    readable (legend entries, not annotations drawn over each other)."""
    import matplotlib.pyplot as plt

    from specwise.reporting.render import map_figure, speedup_figure

    report = _same_windows_report()
    (c,) = report.classes
    for fig in (speedup_figure(c), map_figure(c, 8, None)):
        try:
            boxes = _text_boxes(fig, ("before", "after"))
            assert {t.split(":")[0] for t, _ in boxes} >= {"before", "after"}
            for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
                assert not a.overlaps(b), f"{ta!r} overlaps {tb!r}"  # type: ignore[attr-defined]
        finally:
            plt.close(fig)


@pytest.mark.parametrize(
    ("before_ms", "after_ms", "expected"),
    [
        (8.50, 17.54, "time per output token 8.50 -> 17.54 ms/token (2.06x slower)"),
        (17.54, 8.50, "time per output token 17.54 -> 8.50 ms/token (2.06x faster)"),
        (8.50, 8.50, "time per output token 8.50 -> 8.50 ms/token (unchanged)"),
    ],
)
def test_latency_changes_say_slower_or_faster_with_both_values(
    before_ms: float, after_ms: float, expected: str
) -> None:
    lat = LatencyChange(
        itl_before=before_ms / 1000,
        itl_after=after_ms / 1000,
        itl_ratio=after_ms / before_ms,
        seconds_per_token_before=before_ms / 1000,
        seconds_per_token_after=after_ms / 1000,
        measured_speedup=before_ms / after_ms,
        implied_cost_after=None,
    )
    text = latency_text(lat)
    assert expected in text
    assert "0.484x faster" not in text
    word = expected.rsplit("(", 1)[1]
    assert f"inter-token latency {before_ms:.2f} -> {after_ms:.2f} ms per event ({word}" in text


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
