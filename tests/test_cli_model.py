"""`specwise model`: table, JSON, plot, and one clean error line for bad arguments."""

from __future__ import annotations

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
