"""A simulated vLLM fleet served over HTTP and scraped by a real Prometheus every second.

The fleet's clock runs ``speed`` times faster than the wall clock (so a second of test time
carries minutes of traffic), while Prometheus stamps its samples with wall time; the
controller is stepped at wall times right after Prometheus has scraped fresh samples
(``wait_scraped``: bounded polling of ``timestamp(up)``, never a fixed sleep).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from specwise.controller.actuators import ActuationResult
from specwise.sim.fleet import SimFleet, SimServer, scaled_clock
from specwise.sim.scenarios import Scenario

try:
    from tests.servers import ManagedProcess
except ImportError:
    from servers import ManagedProcess  # type: ignore[no-redef]

__all__ = ["FleetActuator", "ServedFleet", "served_fleet"]


@dataclass
class ServedFleet:
    fleet: SimFleet
    server: SimServer
    prom: ManagedProcess
    session: requests.Session

    @property
    def prom_url(self) -> str:
        return self.prom.base_url

    def _last_scrape(self) -> float | None:
        r = self.session.post(
            f"{self.prom.base_url}/api/v1/query",
            data={
                "query": 'min(timestamp(up{job="fleet"})) and count(up{job="fleet"}) == '
                f"{len(self.server.urls)}"
            },
            timeout=5,
        )
        r.raise_for_status()
        result = r.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def wait_scraped(self, after: float, *, scrapes: int = 1, timeout: float = 30.0) -> float:
        """Wait until Prometheus scraped every target ``scrapes`` times after wall time
        ``after``; returns the wall time then (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        mark = after
        for _ in range(scrapes):
            while True:
                last = self._last_scrape()
                if last is not None and last > mark:
                    mark = last
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"Prometheus did not scrape the fleet after {after} within {timeout} s: "
                        f"{self.prom.log()[-1500:]}"
                    )
                time.sleep(0.05)
        return time.time()

    def crash(self, class_name: str, replica: int = 0, *, down: float = 10.0) -> None:
        """Restart one engine at the same k (counters reset), as a vLLM crash would."""
        now = self.fleet.clock()
        with self.fleet.lock:
            e = self.fleet.engines_of(class_name)[replica]
            e.advance(now)
            e.up_at = now + down
            e.pending_k = e.k


@dataclass
class FleetActuator:
    """Applies k to the fleet on the fleet's own clock and records every call."""

    fleet: SimFleet
    kind: str = "command"
    calls: list[tuple[str, int, float]] = field(default_factory=list)

    def apply(
        self,
        class_name: str,
        k: int,
        *,
        speculative_config: Mapping[str, Any] | None,
        reason: str,
        now: float,
    ) -> ActuationResult:
        self.calls.append((class_name, k, now))
        self.fleet.set_k(class_name, k)
        return ActuationResult(class_name, k, True, now, "restarted")

    def of(self, class_name: str) -> list[int]:
        return [k for name, k, _ in self.calls if name == class_name]


@contextmanager
def served_fleet(
    scenario: Scenario,
    start_prometheus: Callable[..., ManagedProcess],
    *,
    speed: float = 20.0,
    restart_delay: float = 20.0,
    seed: int = 7,
) -> Iterator[ServedFleet]:
    """The scenario's engines on 127.0.0.1, scraped every second by a fresh Prometheus;
    returns once every target has been scraped twice."""
    fleet = SimFleet(scenario, clock=scaled_clock(speed), seed=seed, restart_delay=restart_delay)
    server = SimServer(fleet).start()
    try:
        targets = [u.split("//", 1)[1].split("/", 1)[0] for u in server.urls]
        prom = start_prometheus(
            config={
                "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
                "scrape_configs": [{"job_name": "fleet", "static_configs": [{"targets": targets}]}],
            }
        )
        with requests.Session() as session:
            served = ServedFleet(fleet, server, prom, session)
            served.wait_scraped(time.time(), scrapes=2)
            yield served
    finally:
        server.stop()


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
