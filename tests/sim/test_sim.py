"""The simulated vLLM fleet: exact V1 format, consistent counters, k changes as restarts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from specwise.errors import ConfigError
from specwise.sim.fleet import SimFleet, SimServer
from specwise.sim.scenarios import SCENARIOS, ClassScenario, Scenario, const, get_scenario, iid


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _samples(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, s.labels.get("position", ""))] = s.value
    return out


def _one_class(alpha: float, k: int, **kw: object) -> Scenario:
    return Scenario("t", "test", 3600.0, (ClassScenario("code", iid(const(alpha)), 0.05, k, **kw),))  # type: ignore[arg-type]


def test_served_page_is_vllm_v1_format() -> None:
    clock = Clock()
    fleet = SimFleet(_one_class(0.8, 4), clock=clock, seed=3)
    with SimServer(fleet) as server:
        clock.t += 300
        resp = requests.get(server.urls[0], timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = resp.text
    assert "# TYPE vllm:spec_decode_num_drafts_total counter" in text
    assert 'vllm:spec_decode_num_drafts_created{engine="0",model_name="code"}' in text
    assert 'position="3"' in text
    assert 'position="4"' not in text
    s = _samples(text)
    drafts = s[("vllm:spec_decode_num_drafts_total", "")]
    accepted = s[("vllm:spec_decode_num_accepted_tokens_total", "")]
    per_pos = [s[("vllm:spec_decode_num_accepted_tokens_per_pos_total", str(i))] for i in range(4)]
    assert s[("vllm:spec_decode_num_draft_tokens_total", "")] == 4 * drafts
    assert sum(per_pos) == accepted
    assert per_pos == sorted(per_pos, reverse=True)
    # the maximum-likelihood alpha (docs/design.md) recovers the truth from the counters
    mle = accepted / (accepted + drafts - per_pos[-1])
    assert mle == pytest.approx(0.8, abs=0.01)
    assert s[("vllm:generation_tokens_total", "")] == drafts + accepted


def test_every_position_exists_at_startup() -> None:
    clock = Clock()
    fleet = SimFleet(_one_class(0.8, 3), clock=clock)
    page = fleet.render(0)
    assert page is not None
    s = _samples(page.decode())
    assert [
        s[("vllm:spec_decode_num_accepted_tokens_per_pos_total", str(i))] for i in range(3)
    ] == [0, 0, 0]


def test_k_change_restarts_the_engine_and_resets_counters() -> None:
    clock = Clock()
    fleet = SimFleet(_one_class(0.7, 3), clock=clock, restart_delay=120)
    with SimServer(fleet) as server:
        clock.t += 600
        before = _samples(requests.get(server.urls[0], timeout=5).text)
        assert fleet.set_k("code", 5) == 1
        assert fleet.set_k("code", 5) == 0  # already pending: no second restart
        clock.t += 60
        assert requests.get(server.urls[0], timeout=5).status_code == 503
        clock.t += 90
        after = _samples(requests.get(server.urls[0], timeout=5).text)
    assert fleet.deployed_k("code") == 5
    assert ("vllm:spec_decode_num_accepted_tokens_per_pos_total", "4") in after
    assert (
        after[("vllm:spec_decode_num_drafts_total", "")]
        < before[("vllm:spec_decode_num_drafts_total", "")]
    )
    assert fleet.engines[0].stats.restarts == 1
    assert fleet.engines[0].stats.down_seconds == pytest.approx(120)


def test_k_zero_means_no_spec_families() -> None:
    clock = Clock()
    fleet = SimFleet(_one_class(0.3, 3), clock=clock, restart_delay=10)
    fleet.set_k("code", 0)
    clock.t += 100
    page = fleet.render(0)
    assert page is not None
    assert b"spec_decode" not in page
    assert b"vllm:generation_tokens_total" in page


def test_scenario_crashes_reset_counters() -> None:
    clock = Clock()
    fleet = SimFleet(get_scenario("restarts"), clock=clock, seed=1)
    engine = fleet.engines[0]
    clock.t += 1700
    fleet.advance()
    high = engine.drafts
    clock.t += 200  # past the first crash at 1800 s, and its 30 s restart
    fleet.advance()
    assert engine.stats.crashes == 1
    assert engine.drafts < high
    assert engine.k == 3


def test_expected_tokens_track_the_model() -> None:
    clock = Clock()
    fleet = SimFleet(get_scenario("losing"), clock=clock)
    clock.t += 3600
    fleet.advance()
    stats = fleet.engines[0].stats
    # alpha 0.25, c 0.4, k 3: S = (1 + .25 + .0625 + .015625) / 2.2
    assert stats.expected_tokens / (400 * 3600) == pytest.approx(1.328125 / 2.2)


def test_apply_file_actuator_output(tmp_path: Path) -> None:
    clock = Clock()
    fleet = SimFleet(_one_class(0.8, 3), clock=clock, restart_delay=0)
    path = tmp_path / "code.json"
    path.write_text(
        json.dumps(
            {
                "class": "code",
                "speculative_config": {"method": "eagle", "num_speculative_tokens": 6},
            }
        )
    )
    assert fleet.apply_file(path) == 6
    path.write_text(json.dumps({"class": "code", "speculative_config": None}))
    assert fleet.apply_file(path) == 0
    path.write_text(json.dumps({"class": "other", "speculative_config": None}))
    assert fleet.apply_file(path) is None
    assert fleet.deployed_k("code") == 0


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown scenario 'nope'; choose one of"):
        get_scenario("nope")
    fleet = SimFleet(_one_class(0.8, 3), clock=Clock())
    with pytest.raises(ConfigError, match="no class 'chat'"):
        fleet.set_k("chat", 2)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_runs_and_stays_consistent(name: str) -> None:
    clock = Clock()
    fleet = SimFleet(get_scenario(name), clock=clock, seed=5)
    clock.t += get_scenario(name).duration
    fleet.advance()
    for e in fleet.engines:
        assert sum(e.per_pos) == e.accepted
        assert e.accepted <= e.draft_tokens == e.k * e.drafts
        assert e.stats.expected_tokens > 0
