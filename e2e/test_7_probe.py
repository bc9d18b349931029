"""Scenario 2c, probes (#15): a class turned off comes back when its drafter is upgraded.

vLLM starts with an independently random drafter at k = 3 (alpha near 0), deployed from a
drafter path (a symlink, as a team would publish "the drafter" at a fixed location). At
cost 0.3 the policy turns it off (off_mode "restart"): the command actuator restarts vLLM
without ``--speculative-config`` (as in scenario 2b). Then the drafter is upgraded in place:
the path now holds a drafter identical to the target (alpha near 1). specwise cannot see
that (a class at k = 0 exports no acceptance counters, and its config did not change), so
the operator asks for a probe: ``specwise probe tiny`` (``POST /probe`` on the controller).
The probe restarts vLLM at ``probe_k`` with the class's speculative config (now the good
drafter), runs until its (test-sized) ``min_drafts`` decide, and keeps k > 0: the policy
holds it from there. Asserted on the controller's ``/recommendations`` and ``/metrics``
(probe result, deployed k), its state file (the probe history), the restarts the actuator
made (exactly two: off, and into the probe; no storm) and the final server's counters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import CLASS_MATCH, RESTART, ROOT, VLLMServer, report, wait_for_actuation

from specwise.collectors.scrape import ScrapeSource
from specwise.config import load_config
from specwise.controller.state import ClassStatus
from specwise.controller.wiring import build_controller, start_exporter

pytestmark = pytest.mark.timeout(900)

DWELL = 20.0
K = 3  # the random drafter's k, the probe's k and k_max: the policy's best k once it pays
PROBE_MIN_DRAFTS = 300  # test-sized: a clear verdict may end the probe after a quarter
PHASE_TIMEOUT = 240.0  # any one phase (a restart included) ends within this


def _toml(value: object) -> str:
    return json.dumps(value)  # JSON strings and string lists are valid TOML values


def write_probe_config(path: Path, server: VLLMServer, drafter: Path, state: Path) -> Path:
    argv = [sys.executable, str(RESTART), str(server.state_dir), "{class}", "{k}"]
    argv.append("{speculative_config}")
    path.write_text(
        f"""
[controller]
interval = "5s"
stale_after = "10m"
state_file = {_toml(str(state))}

[source]
kind = "scrape"
urls = [{_toml(server.metrics_url)}]
timeout = "10s"

[estimator]
window = "90s"
min_drafts = 100

[policy]
k_max = {K}
min_gain = 0.05
min_dwell = "{DWELL:g}s"
max_changes_per_hour = 3

[actuator]
kind = "command"
argv = {_toml(argv)}
min_interval = "{DWELL:g}s"
timeout = "6m"

[probes]
probe_k = {K}
min_drafts = {PROBE_MIN_DRAFTS}
max_duration = "5m"
min_duration = "30s"

[[classes]]
name = "tiny"
match = {_toml(CLASS_MATCH)}
cost = 0.3
speculative_config = {{ model = {_toml(str(drafter))} }}
"""
    )
    return path


def _point(link: Path, target: str) -> None:
    """Publish ``target`` at ``link`` atomically (a new symlink renamed over the old)."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)


def _recommendations(url: str) -> dict[str, Any]:
    with requests.get(f"{url}/recommendations", timeout=10) as resp:
        resp.raise_for_status()
        (tiny,) = resp.json()["classes"]
        assert tiny["class"] == "tiny"
        return dict(tiny)


def test_probe_re_enables_an_upgraded_drafter(vllm: VLLMServer, tmp_path: Path) -> None:
    started_at = time.monotonic()
    drafter = tmp_path / "drafter"
    _point(drafter, vllm.random_draft)
    spec = {"model": str(drafter), "num_speculative_tokens": K}
    vllm.ensure(spec)
    vllm.drive(48, seed=700)
    state_file = tmp_path / "state.json"
    config = load_config(write_probe_config(tmp_path / "specwise.toml", vllm, drafter, state_file))
    actions_before = len(vllm.actions())
    with requests.Session() as session:
        controller = build_controller(config, session=session)
        exporter = start_exporter(controller, "127.0.0.1", 0)
        try:
            # -- 1. the random drafter is turned off (as in scenario 2b) ----------------------
            state = controller.step(time.time())
            (tiny,) = state.classes
            if not tiny.actuation.startswith("started"):
                vllm.drive(48, seed=701)
                state = controller.step(time.time())
                (tiny,) = state.classes
            assert tiny.actuation.startswith("started"), (tiny.actuation, tiny.reason)
            assert tiny.recommended_k == 0, tiny.reason
            wait_for_actuation(controller.actuator, config.actuator.timeout + 30)
            state = controller.step(time.time())
            (tiny,) = state.classes
            assert tiny.deployed_k == 0, tiny.reason
            assert tiny.changes == 1, (tiny.actuation, tiny.actuation_error)
            info = vllm.info()
            assert info is not None
            assert info["speculative_config"] is None
            # off: the next probe is the backoff's, hours away; nothing else brings it back
            off = _recommendations(exporter.url)
            assert off["deployed_k"] == 0
            assert off["probe"]["running"] is None
            planned = off["probe"]["planned"]
            assert planned is not None
            assert planned["kind"] == "re-enable"
            assert planned["at"] > time.time() + 5 * 3600, planned

            # -- 2. the drafter is upgraded in place: the path now holds the identical one ----
            _point(drafter, vllm.target)
            # specwise cannot see it (no counters at k = 0, same config): the operator asks.
            # An unknown class is refused with one sentence, the declared one accepted.
            done = subprocess.run(
                [sys.executable, "-m", "specwise", "probe", "nosuch", "--url", exporter.url],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                cwd=ROOT,
            )
            assert done.returncode == 1, done
            assert "not declared" in done.stderr, done.stderr
            done = subprocess.run(
                [sys.executable, "-m", "specwise", "probe", "tiny", "--url", exporter.url],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                cwd=ROOT,
            )
            assert done.returncode == 0, done.stderr
            assert "probe of class 'tiny' requested" in done.stdout, done.stdout
            probe_requested = time.time()

            # -- 3. the next tick starts the probe: vLLM restarted at k = K, the new drafter -
            state = controller.step(time.time())
            (tiny,) = state.classes
            assert tiny.probe is not None
            running = tiny.probe["running"]
            assert running is not None, (tiny.probe["reason"], tiny.reason)
            assert (running["kind"], running["k"], running["previous_k"]) == ("re-enable", K, 0)
            assert "requested" in running["trigger"], running
            assert running["cost"]["restarts"] == 2
            wait_for_actuation(controller.actuator, config.actuator.timeout + 30)
            probe_restart_s = time.time() - probe_requested
            info = vllm.info()
            assert info is not None
            assert info["speculative_config"] == spec
            assert os.path.realpath(info["speculative_config"]["model"]) == os.path.realpath(
                vllm.target
            )

            # -- 4. load and ticks until the probe ends on its own rules (bounded) -----------
            probing: list[ClassStatus] = []
            deadline = time.monotonic() + PHASE_TIMEOUT
            while True:
                vllm.drive(24, seed=800 + len(probing))
                state = controller.step(time.time())
                (tiny,) = state.classes
                probing.append(tiny)
                assert tiny.probe is not None
                if tiny.probe["running"] is None:
                    break
                assert tiny.deployed_k == K, tiny.reason
                assert time.monotonic() < deadline, (
                    f"the probe did not end within {PHASE_TIMEOUT:g} s: {tiny.probe['reason']}"
                )
            (result,) = tiny.probe["results"]
            assert result["kind"] == "re-enable"
            assert result["outcome"] == "pays", result
            assert result["k"] == K
            assert result["drafts"] >= 0.25 * PROBE_MIN_DRAFTS, result
            assert result["speedup"] > 1.05, result
            assert tiny.deployed_k == K, tiny.reason

            # -- 5. k > 0 holds: ticks with load over more than min_dwell and min_interval ---
            held: list[ClassStatus] = []
            deadline = time.monotonic() + 3 * DWELL
            while time.monotonic() < deadline:
                vllm.drive(16, seed=900 + len(held))
                state = controller.step(time.time())
                (tiny,) = state.classes
                held.append(tiny)
                assert tiny.deployed_k == K, tiny.reason
                assert tiny.recommended_k == K, tiny.reason
                assert tiny.actuation_error == ""
                assert tiny.probe is not None
                assert tiny.probe["running"] is None, tiny.probe["reason"]
                time.sleep(2)
            assert len(held) >= 3
            final = _recommendations(exporter.url)
            with requests.get(f"{exporter.url}/metrics", timeout=10) as resp:
                resp.raise_for_status()
                controller_metrics = resp.text
        finally:
            exporter.stop()
        probe_source = ScrapeSource([vllm.metrics_url], session=session, timeout=10)
        (last,) = probe_source.collect(time.time())

    # the controller's answer: deployed k > 0, the probe's result, one restart for it
    assert final["deployed_k"] == K
    assert final["recommended_k"] == K
    assert final["alpha"] > 0.95, final["alpha"]
    assert final["probe"]["running"] is None
    assert final["probe"]["restarts_used"] == 1  # into the probe; it paid: no way back
    assert final["probe"]["counts"] == [["re-enable", "pays", 1]]
    assert final["probe"]["results"][-1]["outcome"] == "pays"
    assert 'specwise_probe_results_total{class="tiny",kind="re-enable",outcome="pays"} 1.0' in (
        controller_metrics
    )
    running_lines = [m for m in controller_metrics.splitlines() if m.startswith("specwise_probe_r")]
    assert not [m for m in running_lines if m.startswith("specwise_probe_running{")], running_lines
    # the probe history survives a controller restart: it is in the state file
    persisted = json.loads(state_file.read_text())["probes"]["classes"]["tiny"]
    assert [r["outcome"] for r in persisted["history"]] == ["pays"]
    assert persisted["running"] is None
    # the actuator's restarts: off, then into the probe; nothing else (no storm, no revert)
    actions = vllm.actions()[actions_before:]
    assert [(a["class"], a["k"], a["speculative_config"]) for a in actions] == [
        ("tiny", 0, None),
        ("tiny", K, spec),
    ], actions
    assert all("error" not in a for a in actions), actions
    # the final server: the upgraded drafter at k = K, accepting nearly every draft token
    info = vllm.info()
    assert info is not None
    assert info["speculative_config"] == spec
    assert last.k == K
    assert last.drafts is not None
    assert last.drafts > 0
    assert last.draft_tokens > 0
    assert last.accepted / last.draft_tokens > 0.95
    errors = {s.name: dict(s.errors) for s in state.sources if s.errors}
    report(
        "probe re-enables an upgraded drafter",
        seconds=round(time.monotonic() - started_at, 1),
        restarts=[(a["k"], a.get("ready_after_s")) for a in actions],
        probe_restart_s=round(probe_restart_s, 1),
        probe_ticks=len(probing),
        probe_result=result["result"],
        probe_drafts=result["drafts"],
        probe_speedup=result["speedup"],
        probe_seconds=round(result["ended"] - result["started"], 1),
        ticks_held=len(held),
        final_alpha=final["alpha"],
        server_drafts=last.drafts,
        server_accepted_share=round(last.accepted / last.draft_tokens, 4),
        source_errors=errors,
    )
    assert not errors, errors
