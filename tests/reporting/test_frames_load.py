"""Load columns of counters frames from captures and logs (#14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from specwise.reporting.frames import capture_counters, log_counters

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vllm"
CAPTURES = [FIXTURES / f"metrics-ngram-{n}" for n in ("1-after-20req.txt", "2-after-40req.txt")]


def test_capture_frame_has_the_load_gains() -> None:
    frame = capture_counters(CAPTURES, times=[1000.0, 1100.0])
    [row] = list(frame.itertuples())
    assert row.iteration_steps == 1470 - 747
    assert row.iteration_tokens == 3050 - 1547
    assert row.tpot_seconds_count == 20
    assert row.decode_seconds_sum == pytest.approx(3.2916648279999094 - 1.6904638739998177)
    assert row.batch_mean == 0.0


def test_a_capture_without_speculation_adds_no_row() -> None:
    plain = FIXTURES / "metrics-nospec-baseline-after-20req.txt"
    frame = capture_counters([*CAPTURES, plain], times=[1000.0, 1100.0, 1200.0])
    # the plain page is the same instance label: a restart without speculation, not a row
    assert len(frame) == 1
    assert (frame["k"] == 4).all()


def test_log_frame_has_batch_means_and_no_step_times() -> None:
    frame = log_counters(FIXTURES / "server-ngram.log", year=2026)
    assert frame["generation_tokens"].notna().all()
    assert frame["generation_tokens"].sum() == pytest.approx(13854, abs=2)
    # the Running samples since the previous line (the first line opens the series)
    assert (frame["batch_mean"].iloc[1:] == 0.0).all()
    assert frame["iteration_steps"].isna().all()  # logs print no step times
