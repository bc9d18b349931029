"""`specwise model`: table, JSON, plot, and one clean error line for bad arguments."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from specwise.cli import main
from specwise.model import optimal_k, recommended_k, speedup


def test_losing_regime_recommends_off_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "--alpha", "0.2", "--cost", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "Turn speculation off (k = 0)" in out
    assert "slower than plain decoding" in out
    assert "0.80x" in out  # the best k >= 1 is named with its speedup


def test_json_is_valid_and_complete(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "--alpha", "0.7", "--cost", "0.05", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["optimal_k"] == optimal_k(0.7, 0.05) == 6  # the exact maximiser
    assert data["recommended_k"] == recommended_k(0.7, 0.05) == 5  # what the controller runs
    assert data["recommended_speedup"] == pytest.approx(speedup(0.7, 5, 0.05))
    assert data["tolerance"] == 0.01
    assert data["verdict"].startswith("Use k = 5")
    assert data["alpha"] == 0.7
    assert data["cost"] == 0.05
    assert [r["k"] for r in data["rows"]] == list(range(17))
    row5 = data["rows"][5]
    assert row5["speedup"] == pytest.approx(speedup(0.7, 5, 0.05))
    assert row5["marginal"] == pytest.approx(0.7**5)
    assert set(row5) == {"k", "expected_tokens", "speedup", "marginal"}


def test_verify_slope_and_k_max(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["model", "--alpha", "0.8", "--cost", "0.05", "--k-max", "8", "--json"]
    assert main([*args, "--verify-slope", "0.2"]) == 0
    sloped = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    flat = json.loads(capsys.readouterr().out)
    assert len(flat["rows"]) == 9
    assert sloped["optimal_k"] < flat["optimal_k"]


def test_table_marks_the_recommended_k_and_the_exact_maximum(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`model` says what the controller and `recommend` run (5), the exact maximiser (6)
    beside it, and one mark when they agree."""
    assert main(["model", "--alpha", "0.7", "--cost", "0.05"]) == 0
    out = capsys.readouterr().out
    rec = [line for line in out.splitlines() if "<- recommended" in line]
    top = [line for line in out.splitlines() if "<- exact max" in line]
    assert [line.split()[0] for line in rec] == ["5"]
    assert [line.split()[0] for line in top] == ["6"]
    assert "Use k = 5" in out
    assert "The exact maximum, k = 6, is only <0.01% faster (within 1%)" in out
    assert main(["model", "--alpha", "0.7", "--cost", "0.05", "--tolerance", "0"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if "<- " in line] == ["6"]
    assert "<- recommended (exact max)" in out
    assert "Use k = 6" in out


def test_plot_legends_name_the_recommended_k() -> None:
    import matplotlib.pyplot as plt

    from specwise.reporting.plots import draw_speedup_vs_k

    fig, ax = plt.subplots()
    try:
        draw_speedup_vs_k(ax, [0.7, 0.5], 0.05, 16)
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
    finally:
        plt.close(fig)
    assert texts == ["alpha = 0.70 (rec. k = 5, max 6)", "alpha = 0.50 (rec. k = 3)"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["model", "--alpha", "1.5", "--cost", "0.1"], "alpha = 1.5 is outside [0, 1]"),
        (["model", "--alpha", "0.5", "--cost", "-1"], "c = -1.0"),
        (["model", "--alpha", "x", "--cost", "0.1"], "'x' is not a valid float"),
        (["model", "--cost", "0.1"], "Missing option '--alpha'"),
        (["model", "--alpha", "0.5", "--cost", "0.1", "--k-max", "-3"], "--k-max -3"),
        (["model", "--alpha", "0.5", "--cost", "0.1", "--tolerance", "1.5"], "tolerance = 1.5"),
        (["nonsense"], "No such command"),
    ],
)
def test_bad_arguments_give_one_error_line(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("Error: ")
    assert needle in lines[0]
    assert "Traceback" not in captured.err


def test_plot_is_a_real_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "sub" / "model.png"
    assert main(["model", "--alpha", "0.7", "--cost", "0.05", "--plot", str(target)]) == 0
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # two panels with curves, a colour map and contours
    assert str(target) in capsys.readouterr().out


def test_help_and_version_and_module_entry_point() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "specwise", "model", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Examples:" in run.stdout
    assert "default: 16" in run.stdout
    version = subprocess.run(
        [sys.executable, "-m", "specwise", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("specwise, version ")


# --- `specwise model --batch`: the speedup map over k and batch size -------------------


def test_batch_view_pays_at_night_and_turns_off_at_peak(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Memory-bound at small B: drafts are nearly free and k = 5 wins; past the knee
    verifying k drafts per request costs and plain decoding wins at B = 256."""
    assert main(["model", "--alpha", "0.7", "--cost", "eagle", "--batch", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    from specwise.step_cost import StepCost, speedup_at_batch

    cost = StepCost(base=0.02, per_token=0.02 / 256, knee=256, draft_base=0.001)
    assert data["step_cost"]["draft_base_seconds"] == pytest.approx(0.001)
    assert data["step_cost"]["per_token_seconds"] == pytest.approx(0.02 / 256)
    cols = data["batch_sizes"]
    assert cols == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    row4 = data["map"][4]["speedup"]
    survival = [0.7**i for i in range(1, 17)]
    for b, s in zip(cols, row4, strict=True):
        assert s == pytest.approx(speedup_at_batch(survival, 4, b, cost))
    best = {r["batch_size"]: r["k"] for r in data["best_k"]}
    assert best[1] == 5
    assert best[256] == 0
    assert list(best.values()) == sorted(best.values(), reverse=True)
    rec = data["recommended"]
    assert rec["kind"] == "schedule"
    spec = rec["speculative_config"]
    assert spec["method"] == "eagle"
    assert spec["num_speculative_tokens"] == 5
    table = spec["num_speculative_tokens_per_batch_size"]
    assert table[0][0] == 1
    assert table[-1][1] == 256
    assert table[-1][2] == 0
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(table))
    assert any("#49548" in n for n in data["notes"])  # the k = 0 band's trap is named


def test_batch_view_table_and_vllm_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "--alpha", "0.7", "--batch", "--k-max", "6"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[2].split() == ["k", "\\", "B", "1", "2", "4", "8", "16", "32", "64", "128", "256"]
    best = next(line for line in lines if line.startswith("best k")).split()[2:]
    assert best[0] == "5"
    assert best[-1] == "0"
    cfg = next(line for line in lines if line.startswith("--speculative-config "))
    payload = json.loads(cfg.split(" ", 1)[1].strip("'"))
    assert payload["num_speculative_tokens_per_batch_size"][0][:2] == [1, 43]
    assert "Recommended: k = 5, by batch size 1-43: 5" in out


def test_batch_view_no_knee_is_one_k_and_heavy_drafter_is_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without a knee the cost does not depend on load: one k, no schedule. A drafter as
    slow as the target loses at every batch size: run without speculation."""
    args = ["model", "--alpha", "0.7", "--batch", "--json", "--knee-tokens", "inf"]
    assert main([*args, "--cost", "0.05"]) == 0
    flat = json.loads(capsys.readouterr().out)
    assert flat["recommended"]["kind"] == "single"
    assert flat["recommended"]["num_speculative_tokens"] == 5  # as the constant table says
    assert "num_speculative_tokens_per_batch_size" not in flat["recommended"]["speculative_config"]
    assert main(["model", "--alpha", "0.3", "--batch", "--json", "--draft-ms", "20"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert off["recommended"]["kind"] == "off"
    assert off["recommended"]["speculative_config"] is None
    assert set(off["best_k_all"]) == {0}


def test_batch_schedule_keeps_k_where_a_zero_band_would_cost_more() -> None:
    """A k = 0 band under a drafter runs off_overhead slower than plain decoding (#49548):
    where the best k >= 1 loses less than that, the schedule keeps it."""
    from specwise.commands.model_batch import batch_map
    from specwise.step_cost import StepCost

    cost = StepCost(base=0.02, per_token=0.02 / 256, knee=256, draft_base=0.001)
    survival = [0.7**i for i in range(1, 9)]
    bm = batch_map(survival, cost, k_max=8, max_batch_size=256, off_overhead=0.14)
    zero_plain = [b for b in range(1, 257) if bm.best_k[b - 1] == 0]
    assert zero_plain  # plain decoding wins at peak
    kept = [b for b in zero_plain if bm.schedule_k[b - 1] > 0]
    assert kept  # ... but just past the crossover, k = 1 beats a k = 0 band
    for b in kept:
        assert bm.speedup(bm.schedule_k[b - 1], b) > 1 / 1.14
        assert bm.speedup(bm.schedule_k[b - 1], b) < 1.0
    none = batch_map(survival, cost, k_max=8, max_batch_size=256, off_overhead=0.0)
    assert [b for b in range(1, 257) if none.schedule_k[b - 1] == 0] == zero_plain


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["model", "--alpha", "0.7"], "Missing option '--cost'"),
        (["model", "--alpha", "0.7", "--cost", "warp"], "neither a number nor a known method"),
        (["model", "--alpha", "0.7", "--batch", "--base-ms", "0"], "step base time = 0.0"),
        (["model", "--alpha", "0.7", "--batch", "--draft-ms", "-1"], "draft_base = -0.001"),
        (["model", "--alpha", "1.5", "--batch"], "alpha = 1.5 is outside [0, 1]"),
        (["model", "--alpha", "0.7", "--batch", "--max-batch-size", "0"], "--max-batch-size"),
        (["model", "--alpha", "0.7", "--batch", "--plot", "x.png"], "--plot"),
    ],
)
def test_batch_bad_arguments_give_one_error_line(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ")
    assert needle in lines[0]


def test_batch_help_documents_the_defaults() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "specwise", "model", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    text = " ".join(run.stdout.split())
    for needle in ["--batch", "default: 20.0", "default: 256.0", "base / knee", "--cost x"]:
        assert needle in text
