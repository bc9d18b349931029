"""The report's frames (specwise.reporting.data) from real vLLM output: the numbers in
data/*.csv are the report's own, and read back with their types."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from specwise.cli import main
from specwise.collectors.classes import ClassConfig
from specwise.policies import PolicyConfig
from specwise.reporting.data import report_frames, write_report_data
from specwise.reporting.report import Report, WindowInfo, build_report
from specwise.reporting.windows import file_window, series_from_snapshots

FIX = Path(__file__).parent.parent / "fixtures" / "vllm"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def report() -> Report:
    classes = ClassConfig()
    b_deltas, b_snaps = file_window([FIX / "server-ngram.log"], now=NOW, year=2026)
    a_deltas, _ = file_window(
        [FIX / "metrics-ngram-2-after-40req.txt", FIX / "metrics-ngram-5-final.txt"], now=NOW
    )
    before = WindowInfo(
        "before", "log", min(s.timestamp for s in b_snaps), max(s.timestamp for s in b_snaps),
        "", series_from_snapshots(b_snaps, classes=classes),
    )  # fmt: skip
    return build_report(
        b_deltas, a_deltas, before=before, after=WindowInfo("after", "captures"),
        classes=classes, before_policy=lambda _: PolicyConfig(cost=0.02),
        after_policy=lambda _: PolicyConfig(cost=0.02), created=NOW,
    )  # fmt: skip


def test_classes_frame_holds_the_report_numbers(report: Report) -> None:
    frames = report_frames(report)
    assert set(frames) == {"classes", "survival", "series-before", "series-after"}
    classes = frames["classes"]
    assert list(classes["window"]) == ["before", "after"]
    (c,) = report.classes
    for window, w in (("before", c.before), ("after", c.after)):
        assert w is not None
        row = classes[classes["window"] == window].iloc[0]
        assert row["alpha"] == w.estimate.alpha
        assert row["alpha_low"] == w.estimate.alpha_low
        assert row["alpha_high"] == w.estimate.alpha_high
        assert row["drafts"] == w.delta.drafts
        assert row["optimal_k"] == w.optimal_k
        assert row["speedup_optimal"] == w.speedup_optimal
        assert row["verdict"] == c.verdict
    assert str(classes["optimal_k"].dtype) == "Int64"
    assert classes["itl_seconds"].isna().tolist() == [True, False]  # captures carry ITL


def test_survival_and_series_frames(report: Report) -> None:
    frames = report_frames(report)
    surv = frames["survival"]
    (c,) = report.classes
    assert c.before is not None
    before = surv[surv["window"] == "before"]
    assert list(before["position"]) == [1, 2, 3, 4]
    assert list(before["survival"]) == [p.value for p in c.before.estimate.survival]
    series = frames["series-before"]
    s = report.before.series["tiny-llama"]
    assert list(series["alpha"]) == list(s.alphas)
    assert str(series["time"].dtype) == "datetime64[ns, UTC]"
    assert frames["series-after"].empty  # two captures: no series over time


def test_write_report_data_round_trips(report: Report, tmp_path: Path) -> None:
    paths = write_report_data(report, tmp_path)
    assert [p.as_posix() for p in paths] == [
        "data/classes.csv", "data/survival.csv", "data/series-before.csv",
        "data/series-after.csv",
    ]  # fmt: skip
    back = pd.read_csv(tmp_path / "data" / "classes.csv", parse_dates=["start", "end"])
    frame = report_frames(report)["classes"]
    assert back["alpha"].tolist() == pytest.approx(frame["alpha"].tolist(), rel=1e-15)
    assert back["start"].dt.tz is not None
    assert not list(tmp_path.glob("data/.*"))  # no temporary file left


def test_report_from_a_log_and_captures_writes_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    argv = ["report", "--before", str(FIX / "server-ngram.log"),
            "--after", str(FIX / "metrics-ngram-2-after-40req.txt"),
            "--after", str(FIX / "metrics-ngram-5-final.txt"),
            "--cost", "ngram", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "data/*.csv" in stdout
    data = json.loads((out / "report.json").read_text())
    series = pd.read_csv(out / "data" / "series-before.csv", parse_dates=["time"])
    js = data["before"]["alpha_over_time"]["tiny-llama"]
    assert series["alpha"].tolist() == pytest.approx(js["alphas"], rel=1e-12)
    assert [t.timestamp() for t in series["time"]] == js["times"]
    assert (out / "data" / "series-after.csv").read_text().startswith("time,class")
