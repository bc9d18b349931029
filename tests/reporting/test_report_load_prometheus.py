"""``specwise report --prometheus`` prices the cost side from sub-windows of each window, on a
real Prometheus loaded with a backfilled history whose counters follow a ground-truth
T(k, B): an engine at k = 4 and a plain replica of the same model, through quiet hours
(the before window: 2 to 128 running requests) and a peak (the after window: 192 to 256)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from specwise.cli import main
from specwise.step_cost import StepCost, expected_tokens

try:
    from tests import servers
except ImportError:  # tests/ is not a package
    import servers  # type: ignore[no-redef]

COST = StepCost(base=0.02, per_token=0.02 / 256, knee=256, draft_base=0.001)
ALPHA = 0.7
K = 4
STEP = 60.0
HOUR = 3600.0
T0 = math.floor((time.time() - 6 * HOUR) / HOUR) * HOUR
MID = T0 + 2 * HOUR
END = T0 + 4 * HOUR
QUIET = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 96.0, 128.0)  # 15 minutes each
PEAK = (192.0, 224.0, 256.0, 256.0, 224.0, 256.0, 256.0, 192.0)


def batch_at(t: float) -> float:
    i = int((t - T0) // (15 * 60))
    return (QUIET + PEAK)[min(i, 15)]


def history() -> dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]]:
    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = {}
    times = T0 + STEP * np.arange(int((END - T0) / STEP) + 1)
    survival = [ALPHA**i for i in range(1, K + 1)]
    for engine, k in (("0", K), ("1", 0)):
        labels = {"engine": engine, "instance": f"m-{engine}:8000", "job": "vllm"}
        labels["model_name"] = "m"
        totals: dict[str, float] = {}
        for i, t in enumerate(times):
            b = batch_at(float(t))
            if i > 0:
                step = COST.step_time(k, b)
                steps = STEP / step
                r = steps * b
                e = expected_tokens(survival, k)
                gains = {
                    "generation_tokens_total": r * e,
                    "inter_token_latency_seconds_sum": r * step,
                    "inter_token_latency_seconds_count": r,
                    "iteration_tokens_total_count": steps,
                    "iteration_tokens_total_sum": steps * b * (k + 1),
                }
                if k:
                    gains |= {
                        "spec_decode_num_drafts_total": r,
                        "spec_decode_num_draft_tokens_total": r * k,
                        "spec_decode_num_accepted_tokens_total": r * (e - 1.0),
                    }
                    for j, s in enumerate(survival):
                        gains[f"per_pos/{j}"] = r * s
                for name, g in gains.items():
                    totals[name] = totals.get(name, 0.0) + g
            elif k:
                totals |= {f"per_pos/{j}": 0.0 for j in range(k)}
                totals |= {
                    n: 0.0
                    for n in (
                        "spec_decode_num_drafts_total",
                        "spec_decode_num_draft_tokens_total",
                        "spec_decode_num_accepted_tokens_total",
                    )
                }
            for name in (
                "generation_tokens_total",
                "inter_token_latency_seconds_sum",
                "inter_token_latency_seconds_count",
                "iteration_tokens_total_count",
                "iteration_tokens_total_sum",
            ):
                totals.setdefault(name, 0.0)
            for name, v in totals.items():
                if name.startswith("per_pos/"):
                    key = (
                        "vllm:spec_decode_num_accepted_tokens_per_pos_total",
                        tuple(sorted({**labels, "position": name.split("/")[1]}.items())),
                    )
                else:
                    key = (f"vllm:{name}", tuple(sorted(labels.items())))
                series.setdefault(key, []).append((float(t), v))
            running = ("vllm:num_requests_running", tuple(sorted(labels.items())))
            series.setdefault(running, []).append((float(t), b))
    return series


def true_speedup(lo: float, hi: float) -> float:
    """Tokens the k = 4 engine delivered over what plain decoding would have in its time."""
    survival = [ALPHA**i for i in range(1, K + 1)]
    tokens = plain = 0.0
    t = lo + STEP
    while t <= hi:
        b = batch_at(t)
        steps = STEP / COST.step_time(K, b)
        tokens += steps * b * expected_tokens(survival, K)
        plain += STEP * b / COST.step_time(0, b)
        t += STEP
    return tokens / plain


@pytest.fixture(scope="module")
def prom(backfill: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    types = {
        f"vllm:spec_decode_{n}": "counter"
        for n in ("num_drafts", "num_draft_tokens", "num_accepted_tokens")
    }
    types["vllm:spec_decode_num_accepted_tokens_per_pos"] = "counter"
    types["vllm:generation_tokens"] = "counter"
    types["vllm:num_requests_running"] = "gauge"
    blocks = backfill(servers.openmetrics_text(history(), types=types), "report-load-history")
    proc = servers.start_prometheus(tmp_path_factory.mktemp("report-load-prom"), blocks=blocks)
    yield proc
    proc.stop()


def test_report_fits_the_step_time_over_sub_windows(
    prom: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    args = ["report", "--prometheus", prom.base_url, "--cost", "eagle", "--out", str(out)]
    args += ["--before", f"{T0:.0f}..{MID:.0f}", "--after", f"{MID:.0f}..{END:.0f}"]
    assert main([*args, "--json"]) == 0
    capsys.readouterr()
    data = json.loads((out / "report.json").read_text())
    (cls,) = data["classes"]
    before, after = cls["before"]["load"], cls["after"]["load"]
    for load in (before, after):
        assert load["load_aware"] is True
        assert load["fit"]["observations"] >= 8  # sub-windows, spec and plain
        assert load["fit"]["plain_observed"] is True
        assert load["measured"]["basis"] == "baseline"
    assert before["measured"]["value"] == pytest.approx(true_speedup(T0, MID), rel=0.1)
    assert after["measured"]["value"] == pytest.approx(true_speedup(MID, END), rel=0.1)
    assert before["measured"]["value"] > 1.2
    assert after["measured"]["value"] < 1.0
    assert before["batch"]["p90"] >= 96
    assert after["batch"]["p50"] >= 192
    assert before["costs"]["base"] == pytest.approx(0.02, rel=0.1)
    # quiet hours: draft at small batch sizes; the peak: no drafting
    assert before["recommended"]["kind"] in {"schedule", "single"}
    assert before["recommended"]["k"] >= 3
    peak = after["recommended"]
    assert peak["kind"] == "off" or peak["schedule"][-1][2] == 0
    assert "measured" in cls["verdict"]


def test_recommend_prometheus_fits_over_sub_windows(
    prom: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``recommend --prometheus`` reads the same sub-windows: a window over the last quiet
    hour and the peak fits the knee (the preset knows none) and, weighted by the busy time,
    drafts little at the peak: k = 4 measured at 0.76x is replaced."""
    window = f"{math.ceil((time.time() - T0) / HOUR) + 1:.0f}h"
    assert main(["recommend", "--prometheus", prom.base_url, "--window", window, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    load = row["load"]
    assert load["load_aware"] is True
    assert load["fit"]["observations"] >= 6
    assert load["measured"]["basis"] == "baseline"
    assert load["batch"]["p90"] >= 192
    assert any("the verify saturates" in d for d in load["disagreements"])
    assert load["measured"]["value"] < 1.0
    # at the peak the recommended configuration drafts little: a single k <= 2, or a
    # schedule whose band at the p90 batch size does (which one wins depends on how the
    # hour-long sub-windows fall on the history, i.e. on the minute the test runs)
    rec = load["recommended"]
    at_peak = rec["k"]
    for start, end, k in rec["schedule"] or ():
        if start <= load["batch"]["p90"] <= end:
            at_peak = k
    assert at_peak <= 2, rec["describe"]
    assert load["recommended"]["speedup"] > load["recommended"]["current_speedup"]
