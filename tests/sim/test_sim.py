"""The simulated vLLM fleet: exact V1 format, consistent counters, k changes as restarts."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from specwise.cli import main
from specwise.errors import ConfigError
from specwise.estimation.estimator import WindowCounts, estimate_counts
from specwise.sim.fleet import FileWatcher, SimFleet, SimServer
from specwise.sim.scenarios import (
    SCENARIOS,
    ClassScenario,
    Scenario,
    const,
    get_scenario,
    iid,
    ngram_lengths,
)

try:
    from tests.servers import free_port
except ImportError:
    from servers import free_port  # type: ignore[no-redef]


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
        if e.spec.draft_lengths is None:
            assert e.accepted <= e.draft_tokens == e.k * e.drafts
        else:  # n-gram drafts: at least one token each, at most k
            assert e.drafts <= e.draft_tokens < e.k * e.drafts
            assert e.accepted <= e.draft_tokens
        assert e.stats.expected_tokens > 0


def test_ngram_class_really_proposes_short_drafts() -> None:
    """An n-gram class drafts fewer than k tokens and skips steps with no match, as vLLM
    counts them; the estimator still reads the true alpha from its counters, where
    counting short drafts as rejections would read it far too low."""
    lengths = ngram_lengths(0.7, 0.65)
    pmf = lengths(4)
    assert sum(pmf) == pytest.approx(1.0)
    assert pmf[0] == pytest.approx(0.3)
    clock = Clock()
    fleet = SimFleet(_one_class(0.6, 4, draft_lengths=lengths), clock=clock, seed=5)
    with SimServer(fleet) as server:
        clock.t += 1800
        s = _samples(requests.get(server.urls[0], timeout=5).text)
    drafts = s[("vllm:spec_decode_num_drafts_total", "")]
    tokens = s[("vllm:spec_decode_num_draft_tokens_total", "")]
    accepted = s[("vllm:spec_decode_num_accepted_tokens_total", "")]
    per_pos = [s[("vllm:spec_decode_num_accepted_tokens_per_pos_total", str(i))] for i in range(4)]
    steps = s[("vllm:inter_token_latency_seconds_count", "")]
    assert drafts < 0.8 * steps  # steps without a match propose nothing: no draft
    expected_mean = sum(n * p for n, p in enumerate(pmf)) / (1.0 - pmf[0])
    assert tokens / drafts == pytest.approx(expected_mean, rel=0.02)
    assert tokens < 0.7 * 4 * drafts
    assert sum(per_pos) == accepted
    assert per_pos == sorted(per_pos, reverse=True)
    counts = WindowCounts(
        drafts=drafts,
        draft_tokens=tokens,
        accepted=accepted,
        accepted_per_position=tuple(per_pos),
        k=4,
    )
    est = estimate_counts("code", counts, now=clock.t)
    assert est.alpha is not None
    assert est.alpha_low is not None
    assert est.alpha_high is not None
    assert est.alpha_low <= 0.6 <= est.alpha_high
    assert est.alpha == pytest.approx(0.6, abs=0.01)
    naive = accepted / (accepted + drafts - per_pos[-1])
    assert naive < 0.5
    # the truth the benchmark scores: fewer tokens per cycle than full-length drafts
    spec = fleet.engines[0].spec
    full = ClassScenario("full", iid(const(0.6)), 0.05, 4)
    assert 1.0 < spec.speedup_at(0.0, 4) < full.speedup_at(0.0, 4)


def test_file_watcher_warns_about_a_class_the_fleet_does_not_serve(tmp_path: Path) -> None:
    fleet = SimFleet(_one_class(0.8, 3), clock=Clock(), restart_delay=0)
    watcher = FileWatcher(fleet, tmp_path)
    (tmp_path / "other.json").write_text(
        json.dumps({"class": "other", "speculative_config": {"num_speculative_tokens": 2}})
    )
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "code.json").write_text(
        json.dumps({"class": "code", "speculative_config": {"num_speculative_tokens": 5}})
    )
    assert watcher.poll() == [("code", 5)]
    [broken, other] = watcher.skipped
    assert "broken.json is not a file actuator output" in broken
    assert "other.json is for class 'other', which this fleet does not serve" in other
    assert "(its classes: code)" in other
    assert watcher.poll() == []
    assert watcher.skipped == []


def _free_run(n: int) -> int:
    """A first port p with p..p+n-1 all free on 127.0.0.1 a moment ago (bounded retries)."""
    for _ in range(50):
        first = free_port()
        if first + n > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for p in range(first, first + n):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", p))
            return first
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    pytest.fail("no run of free ports found")


def test_sim_port_puts_engines_on_consecutive_ports_and_warns_on_foreign_files(
    tmp_path: Path,
) -> None:
    """`specwise sim --port P`: engine i on P + i, so a Prometheus config stays valid across
    restarts; a --watch file for a class the fleet does not serve is a warning, not silence."""
    n = len(get_scenario("steady").classes)
    first = _free_run(n)
    watch = tmp_path / "watch"
    watch.mkdir()
    err_path = tmp_path / "stderr.txt"
    argv = [sys.executable, "-m", "specwise", "sim", "--scenario", "steady", "--json"]
    argv += ["--port", str(first), "--watch", str(watch), "--duration", "120"]
    with err_path.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for _ in range(200):  # the JSON target list, then the server keeps running
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.rstrip() == "]":
                break
        targets = json.loads("".join(lines))
        assert [t["url"] for t in targets] == [
            f"http://127.0.0.1:{first + i}/metrics" for i in range(n)
        ]
        for t in targets:
            assert requests.get(t["url"], timeout=10).status_code == 200
        (watch / "nope.json").write_text(json.dumps({"class": "nope", "speculative_config": None}))
        deadline = time.monotonic() + 60
        while "nope" not in err_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, err_path.read_text()
            time.sleep(0.1)
        warning = err_path.read_text()
        assert "Warning: " in warning
        assert "is for class 'nope', which this fleet does not serve" in warning
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_sim_port_in_use_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert main(["sim", "--scenario", "steady", "--port", str(port), "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("Error: Cannot serve the simulated engines")
    assert f"127.0.0.1 ports {port}.." in err
    assert "--port 0 for free ports" in err
    assert main(["sim", "--port", "65535"]) == 1
    assert "leaves no room for" in capsys.readouterr().err
