"""`specwise demo`, `sim` and `run --once` as a user runs them (real processes, real HTTP)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from specwise.cli import main
from specwise.sim.fleet import SimFleet, SimServer
from specwise.sim.scenarios import get_scenario


def test_demo_runs_the_closed_loop_and_exits_cleanly() -> None:
    """The README's main command, shortened: the losing class is turned off, code goes up."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "specwise",
            "demo",
            "--duration",
            "12",  # wall seconds: 3 ticks decide; 12 leave room on a busy machine
            "--speed",
            "150",
            "--refresh",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Controller: http://127.0.0.1:" in out
    assert "summarize: restarting with k = 0" in out
    assert "code: restarting with k = " in out
    assert "--- final, after" in out
    assert "Traceback" not in done.stderr
    final = out.split("--- final, after", 1)[1]
    assert "summarize: 1 restart(s), k now 0" in final
    # the load-varying class is priced with its load (its plain replica gives T(0, B))
    assert "docs: mean batch " in out
    assert "at the deployed configuration: recommends " in out
    # the closing lines: what specwise gained, measured on the simulated fleet
    assert "--- what specwise gained over" in final
    assert "docs (load-varying)" in final
    last = final.strip().splitlines()[-1]
    assert last.startswith("specwise delivered ")
    assert "over the configuration it started from" in last
    assert "against the best static k" in last


def test_sim_serves_targets_for_a_duration() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "specwise",
            "sim",
            "--scenario",
            "steady",
            "--duration",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    targets = json.loads(done.stdout)
    assert [t["class"] for t in targets] == ["code", "chat"]
    assert all(t["url"].startswith("http://127.0.0.1:") for t in targets)


def test_run_once_prints_recommendations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = SimFleet(get_scenario("demo"), clock=time.time, seed=1)
    with SimServer(fleet) as server:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # let some drafts accumulate (a condition, no sleep)
            fleet.advance(time.time())
            if min(fleet.engines_of(c)[0].drafts for c in ("code", "summarize")) >= 50:
                break
            time.sleep(0.05)
        config = tmp_path / "c.toml"
        urls = ", ".join(f'"{u}"' for u in server.urls)
        config.write_text(
            f"[source]\nurls = [{urls}]\n[estimator]\nmin_drafts = 20\n"
            '[[classes]]\nname = "summarize"\ncost = 0.4\nk = 3\n'
        )
        assert main(["run", "--config", str(config), "--once", "--json"]) == 0
        # the served page is reachable too (the controller scraped the same URLs)
        assert requests.get(server.urls[0], timeout=2).status_code == 200
    state = json.loads(capsys.readouterr().out)
    by_class = {c["class"]: c for c in state["classes"]}
    assert by_class["summarize"]["recommended_k"] == 0
    assert by_class["summarize"]["deployed_k"] == 3  # dry-run: nothing was changed
    assert by_class["code"]["alpha"] == pytest.approx(0.82, abs=0.05)
    assert state["actuator"] == "dry-run"


def test_run_with_a_bad_config_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[source]\nurls = ["http://127.0.0.1:1/metrics"]\n[policy]\nk_max = 0\n')
    assert main(["run", "--config", str(config), "--once"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("Error: ")
    assert "[policy] k_max = 0" in err[0]


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """Output goes to a file polled with a deadline: a silent process fails the test instead
    of blocking it on readline(), and a full pipe can never stall the demo."""
    import signal

    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_path.open("w") as out_f, err_path.open("w") as err_f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "specwise", "demo", "--duration", "0", "--refresh", "1"],
            stdout=out_f,
            stderr=err_f,
            text=True,
        )
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None:
                if "--- simulated minute" in out_path.read_text():
                    break
                time.sleep(0.05)
            assert "--- simulated minute" in out_path.read_text(), err_path.read_text()[-2000:]
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    err = err_path.read_text()
    assert proc.returncode == 0, err
    assert "--- final, after" in out_path.read_text()
    assert "Traceback" not in err


def test_run_once_fails_when_no_source_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[source]\nurls = ["http://127.0.0.1:1/metrics"]\n[[classes]]\nname = "chat"\n'
    )
    assert main(["run", "--config", str(config), "--once"]) == 1
    captured = capsys.readouterr()
    assert "keep the deployed k until there is evidence" in captured.out
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert len(errors) == 1
    assert errors[0].startswith(
        "Error: no source answered (http://127.0.0.1:1/metrics: Cannot reach"
    )


def test_run_once_never_actuates_unless_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --once` is a smoke check: with a file actuator configured it proposes and
    writes nothing; `--once --apply` applies through the configured actuator."""
    fleet = SimFleet(get_scenario("demo"), clock=time.time, seed=1)
    out = tmp_path / "configs"
    with SimServer(fleet) as server:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # let some drafts accumulate
            fleet.advance(time.time())
            if fleet.engines_of("summarize")[0].drafts >= 50:
                break
            time.sleep(0.05)
        config = tmp_path / "c.toml"
        urls = ", ".join(f'"{u}"' for u in server.urls)
        config.write_text(
            f'[source]\nurls = [{urls}]\n[estimator]\nmin_drafts = 20\n[actuator]\nkind = "file"\n'
            f'dir = "{out}"\n[[classes]]\nname = "summarize"\ncost = 0.4\nk = 3\n'
        )
        assert main(["run", "--config", str(config), "--once", "--json"]) == 0
        dry = json.loads(capsys.readouterr().out)
        assert not out.exists() or not list(out.iterdir())
        assert dry["actuator"] == "dry-run"
        summarize = next(c for c in dry["classes"] if c["class"] == "summarize")
        assert summarize["recommended_k"] == 0
        assert summarize["deployed_k"] == 3
        assert main(["run", "--config", str(config), "--once", "--apply", "--json"]) == 0
        applied = json.loads(capsys.readouterr().out)
    assert applied["actuator"] == "file"
    assert json.loads((out / "summarize.json").read_text())["speculative_config"] is None
