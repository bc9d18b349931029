"""Scenario 2, closed loop to k = 0: the controller turns a losing drafter off.

vLLM starts with an independently random drafter at k = 3 (alpha near 0). At cost 0.3 the
policy says k = 0 (off_mode "restart"): the command actuator restarts vLLM without
``--speculative-config``. Then vLLM exports no spec-decode families at all; the controller
must hold k = 0 (no data to re-check is not a reason to turn speculation back on), keep
its source healthy and not restart vLLM again over more than min_dwell and min_interval.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from conftest import VLLMServer, report, wait_for_actuation
from test_4_closed_loop import DWELL, write_config

from specwise.collectors.scrape import ScrapeSource
from specwise.config import load_config
from specwise.controller.wiring import build_controller

pytestmark = pytest.mark.timeout(1200)


def test_controller_turns_a_losing_drafter_off_and_holds(vllm: VLLMServer, tmp_path: Path) -> None:
    vllm.ensure(vllm.random(3))
    vllm.drive(48, seed=500)
    path = write_config(tmp_path / "specwise.toml", vllm)
    path.write_text(path.read_text().replace(vllm.target, vllm.random_draft))
    config = load_config(path)
    actions_before = len(vllm.actions())
    with requests.Session() as session:
        controller = build_controller(config, session=session)
        probe = ScrapeSource([vllm.metrics_url], session=session, timeout=10)
        # the server started within the controller's 90 s window, so its counters are fresh
        # evidence and the first tick may act at once; if it took them as a baseline, the
        # next one acts on the load driven in between
        started = time.time()
        state = controller.step(time.time())
        (tiny,) = state.classes
        if not tiny.actuation.startswith("started"):
            vllm.drive(48, seed=501)
            started = time.time()
            state = controller.step(time.time())
            (tiny,) = state.classes
        assert tiny.actuation.startswith("started"), (tiny.actuation, tiny.actuation_error)
        wait_for_actuation(controller.actuator, config.actuator.timeout + 30)
        restart_seconds = time.time() - started
        state = controller.step(time.time())  # records the restart's outcome
        (tiny,) = state.classes
        assert tiny.recommended_k == 0, tiny.reason
        assert tiny.changes == 1, (tiny.actuation, tiny.actuation_error)
        assert tiny.actuation_error == ""
        assert tiny.deployed_k == 0
        actions = vllm.actions()[actions_before:]
        assert [(a["class"], a["k"], a["speculative_config"]) for a in actions] == [
            ("tiny", 0, None)
        ]
        info = vllm.info()
        assert info is not None
        assert info["speculative_config"] is None
        assert "--speculative-config" not in info["argv"]
        # speculation off: vLLM registers no spec-decode family; the collector sees only a
        # load-only snapshot (k = 0), the plain-decoding baseline of the cost side
        seen = probe.collect(time.time())
        assert [s for s in seen if s.spec_families] == []
        assert [(s.spec_families, s.k) for s in seen] == [(False, 0)]
        assert "spec_decode" not in vllm.metrics_text()

        ticks = []
        deadline = time.time() + 3 * DWELL + config.estimator.window
        while time.time() < deadline:
            vllm.drive(16, seed=600 + len(ticks))
            state = controller.step(time.time())
            (tiny,) = state.classes
            ticks.append(tiny)
            assert tiny.deployed_k == 0, tiny.reason
            assert tiny.changes == 1, tiny.reason
            assert tiny.actuation_error == ""
            time.sleep(2)
    assert len(vllm.actions()) == actions_before + 1  # never turned back on
    errors = {s.name: dict(s.errors) for s in state.sources if s.errors}
    final = ticks[-1]
    report(
        "closed loop to k = 0",
        restart_seconds=round(restart_seconds, 1),
        ticks_after_restart=len(ticks),
        changes=final.changes,
        deployed_k=final.deployed_k,
        recommended_k_per_tick=[t.recommended_k for t in ticks],
        stale_per_tick=[t.stale for t in ticks],
        source_errors=errors,
        final_reason=final.reason,
    )
    assert not errors, errors
