"""Scenario 2, closed loop: the controller, with the ``command`` actuator, restarts vLLM with
the recommended ``--speculative-config`` (``e2e/restart_vllm.py`` does the restart).

vLLM starts with an identical drafter at k = 3 (alpha near 1). With drafter cost 0.3 and
k_max = 5 the best k is 5, a gain far above min_gain: exactly one change is expected. After
the restart the collector sees 5 positions, the counters' reset (they restart from 0) is
handled, and a further series of ticks, spanning more than min_dwell and min_interval with
load in between, changes nothing: the controller does not flap.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import CLASS_MATCH, RESTART, VLLMServer, report, wait_for_actuation

from specwise.collectors.deltas import window_deltas
from specwise.collectors.scrape import ScrapeSource
from specwise.config import load_config
from specwise.controller.wiring import build_controller

pytestmark = pytest.mark.timeout(1200)

DWELL = 20.0


def _toml(value: object) -> str:
    return json.dumps(value)  # JSON strings and string lists are valid TOML values


def write_config(path: Path, server: VLLMServer) -> Path:
    argv = [sys.executable, str(RESTART), str(server.state_dir), "{class}", "{k}"]
    argv.append("{speculative_config}")
    path.write_text(
        f"""
[controller]
interval = "5s"
stale_after = "10m"

[source]
kind = "scrape"
urls = [{_toml(server.metrics_url)}]
timeout = "10s"

[estimator]
window = "90s"
min_drafts = 100

[policy]
k_max = 5
min_gain = 0.05
min_dwell = "{DWELL:g}s"
max_changes_per_hour = 3

[actuator]
kind = "command"
argv = {_toml(argv)}
min_interval = "{DWELL:g}s"
timeout = "6m"

[[classes]]
name = "tiny"
match = {_toml(CLASS_MATCH)}
cost = 0.3
speculative_config = {{ model = {_toml(server.target)} }}
"""
    )
    return path


def test_controller_restarts_vllm_once_and_holds(vllm: VLLMServer, tmp_path: Path) -> None:
    vllm.ensure(vllm.identical(3))
    vllm.drive(32, seed=300)
    config = load_config(write_config(tmp_path / "specwise.toml", vllm))
    actions_before = len(vllm.actions())
    with requests.Session() as session:
        controller = build_controller(config, session=session)
        probe = ScrapeSource([vllm.metrics_url], session=session, timeout=10)
        before_restart = probe.collect(time.time())
        assert [s.k for s in before_restart] == [3]
        # alpha near 1 at k = 3 -> k = 5; the actuator starts the restart in the background
        # (the script returns once /health answers); a later tick records it. The server
        # started within the controller's 90 s window, so its counters are fresh evidence and
        # the first tick may act at once; if it took them as a baseline, the next one acts.
        started = time.time()
        state = controller.step(time.time())
        (tiny,) = state.classes
        if not tiny.actuation.startswith("started"):
            vllm.drive(32, seed=301)
            started = time.time()
            state = controller.step(time.time())
            (tiny,) = state.classes
        assert tiny.actuation.startswith("started"), (tiny.actuation, tiny.actuation_error)
        wait_for_actuation(controller.actuator, config.actuator.timeout + 30)
        restart_seconds = time.time() - started
        state = controller.step(time.time())
        (tiny,) = state.classes
        assert tiny.recommended_k == 5, tiny.reason
        assert tiny.changes == 1, (tiny.actuation, tiny.actuation_error)
        assert tiny.actuation_error == ""
        assert tiny.deployed_k == 5
        actions = vllm.actions()[actions_before:]
        assert [(a["class"], a["k"]) for a in actions] == [("tiny", 5)]
        assert actions[0]["speculative_config"] == vllm.identical(5)
        info = vllm.info()
        assert info is not None
        assert info["speculative_config"] == vllm.identical(5)

        # the collector sees the new k as the number of positions, counters from 0
        (fresh,) = probe.collect(time.time())
        assert fresh.k == 5
        assert len(fresh.accepted_per_position) == 5
        # the reset is read as a restart: the gain is what the new server counted
        (delta,) = window_deltas(before_restart, [fresh])
        assert delta.restarts == 1
        assert delta.k == 5
        assert delta.drafts == fresh.drafts
        assert delta.accepted_per_position == fresh.accepted_per_position

        # further ticks with load in between, over more than min_dwell and min_interval
        ticks = []
        deadline = time.time() + 3 * DWELL + config.estimator.window
        while time.time() < deadline:
            vllm.drive(16, seed=400 + len(ticks))
            state = controller.step(time.time())
            (tiny,) = state.classes
            ticks.append(tiny)
            assert tiny.recommended_k == 5, tiny.reason
            assert tiny.deployed_k == 5
            assert tiny.changes == 1
            assert tiny.actuation_error == ""
            time.sleep(2)
        (last,) = probe.collect(time.time())
    assert len(vllm.actions()) == actions_before + 1  # no second restart: no flapping
    errors = {s.name: dict(s.errors) for s in state.sources if s.errors}
    assert not errors, errors
    final = ticks[-1]
    assert last.k == 5
    assert last.drafts is not None
    assert last.drafts > fresh.drafts
    assert final.alpha is not None
    assert final.alpha > 0.95
    # the old k = 3 window has aged out: the survival curve is the new server's 5 positions
    assert len(final.survival) == 5
    assert not final.stale
    report(
        "closed loop",
        restart_seconds=round(restart_seconds, 1),
        ticks_after_restart=len(ticks),
        changes=final.changes,
        deployed_k=final.deployed_k,
        recommended_k_per_tick=[t.recommended_k for t in ticks],
        alpha_per_tick=[None if t.alpha is None else round(t.alpha, 4) for t in ticks],
        survival_len_per_tick=[len(t.survival) for t in ticks],
        drafts_after_restart=last.drafts,
    )
