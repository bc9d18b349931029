"""The controller ignores load-only Snapshots (engines without speculation, #14) for
estimation, last_seen and observed k, while keeping their deltas for the load side."""

from __future__ import annotations

from pathlib import Path

import requests

from specwise.collectors.scrape import ScrapeSource
from specwise.config import parse_config
from specwise.controller.actuators import DryRunActuator
from specwise.controller.loop import Controller, class_config_from

try:
    from tests.servers import FaultResponse, FaultServer, start_fault_server
except ImportError:  # tests/ is not a package
    from servers import (  # type: ignore[no-redef]
        FaultResponse,
        FaultServer,
        start_fault_server,
    )

FIXTURES = Path(__file__).parent.parent / "fixtures" / "vllm"


def _serve(server: FaultServer, path: str, name: str) -> None:
    server.routes[path] = FaultResponse(body=(FIXTURES / name).read_bytes())


def _controller(urls: list[str], t: list[float], session: requests.Session) -> Controller:
    config = parse_config(
        {
            "controller": {"interval": 1, "stale_after": "5m"},
            "source": {"urls": urls, "timeout": 2},
            "estimator": {"window": "10m", "min_drafts": 50},
        }
    )
    return Controller(
        config,
        source=ScrapeSource(urls, session=session, timeout=2),
        actuator=DryRunActuator(),
        clock=lambda: t[0],
        classes=class_config_from(config),
    )


def test_spec_and_plain_engines_of_one_class(fault_server: FaultServer) -> None:
    """One engine with n-gram k = 4 and one without speculation serve the same model: the
    class's k, drafts and last-seen come from the spec engine alone."""
    plain_server = start_fault_server()  # another host:port, so another instance label
    try:
        _serve(fault_server, "/metrics", "metrics-ngram-1-after-20req.txt")
        _serve(plain_server, "/metrics", "metrics-nospec-baseline-after-20req.txt")
        urls = [fault_server.base_url + "/metrics", plain_server.base_url + "/metrics"]
        t = [1_900_000_000.0]  # long after the captures' process start: first tick = baseline
        with requests.Session() as session:
            controller = _controller(urls, t, session)
            controller.step()
            _serve(fault_server, "/metrics", "metrics-ngram-2-after-40req.txt")
            t[0] += 60
            state = controller.step()
    finally:
        plain_server.stop()
    [cls] = state.classes
    assert cls.name == "tiny-llama"
    assert cls.deployed_k == 4  # not 0 from the plain engine
    assert cls.drafts == 416 - 210  # the spec engine's window only
    assert cls.last_data_at == t[0]
    # the plain engine's delta is kept apart for the load side (l5: LoadWindow)
    [plain] = controller._load_deltas
    assert plain.spec_families is False
    assert plain.k == 0
    assert plain.iteration_steps == 0  # the same page twice: nothing gained


def test_plain_engine_alone_is_not_a_class_seen(fault_server: FaultServer) -> None:
    _serve(fault_server, "/plain", "metrics-nospec-baseline-after-20req.txt")
    urls = [fault_server.base_url + "/plain"]
    t = [1_900_000_000.0]
    with requests.Session() as session:
        controller = _controller(urls, t, session)
        controller.step()
        t[0] += 60
        state = controller.step()
    assert state.classes == ()  # as before #14: no spec counters, no class to steer
    assert all(s.last_success == t[0] for s in state.sources)
    assert len(controller._load_deltas) == 1
