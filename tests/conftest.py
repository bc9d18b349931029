"""Shared pytest fixtures that start real servers on 127.0.0.1 (see tests/servers.py).

- ``vllm_exporter``: a prometheus_client server in a thread serving vLLM-format metrics;
  ``.url`` is its /metrics, ``.collector.add(labels, drafts=..., ...)`` moves counters.
- ``start_prometheus``: call ``start_prometheus(config=..., blocks=...)`` -> ManagedProcess
  (``.base_url``); each call gets a fresh data dir; all are stopped at teardown.
- ``start_victoria_metrics``: call it -> ManagedProcess; import with ``servers.vm_import``.
- ``backfill``: ``backfill(openmetrics_text, name)`` -> blocks dir for ``start_prometheus``.
- ``fault_server``: a FaultServer; set ``fault_server.routes["/metrics"] = FaultResponse(...)``.
- ``webhook_receiver``: a WebhookReceiver (``.url``, ``.wait_for(pred, timeout=...)``).
- ``start_alertmanager``: call ``start_alertmanager(webhook_url=...)`` -> ManagedProcess.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from tests import servers
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    import servers  # type: ignore[no-redef]


def _process_starter(
    tmp_path: Path, starter: Callable[..., servers.ManagedProcess], prefix: str
) -> Iterator[Callable[..., servers.ManagedProcess]]:
    """A ``start(**kwargs)`` that gives each server a fresh folder and stops all at teardown."""
    started: list[servers.ManagedProcess] = []
    counter = itertools.count()

    def start(**kwargs: Any) -> servers.ManagedProcess:
        proc = starter(tmp_path / f"{prefix}-{next(counter)}", **kwargs)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
def vllm_exporter() -> Iterator[servers.Exporter]:
    exporter = servers.start_exporter()
    try:
        yield exporter
    finally:
        exporter.stop()


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[..., servers.ManagedProcess]]:
    yield from _process_starter(tmp_path, servers.start_prometheus, "prometheus")


@pytest.fixture
def start_victoria_metrics(tmp_path: Path) -> Iterator[Callable[..., servers.ManagedProcess]]:
    yield from _process_starter(tmp_path, servers.start_victoria_metrics, "vm")


@pytest.fixture(scope="session")
def backfill(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``backfill(text, name)``: promtool blocks from OpenMetrics text, built once per name
    (optional ``max_block_duration="24h"`` for fewer, faster blocks over days of data)."""
    built: dict[str, Path] = {}

    def make(text: str, name: str, *, max_block_duration: str | None = None) -> Path:
        if name not in built:
            work = tmp_path_factory.mktemp(f"backfill-{name}")
            built[name] = servers.backfill_openmetrics(
                text, work / "blocks", workdir=work, max_block_duration=max_block_duration
            )
        return built[name]

    return make


@pytest.fixture
def fault_server() -> Iterator[servers.FaultServer]:
    server = servers.start_fault_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def webhook_receiver() -> Iterator[servers.WebhookReceiver]:
    server = servers.start_webhook_receiver()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_alertmanager(tmp_path: Path) -> Iterator[Callable[..., servers.ManagedProcess]]:
    yield from _process_starter(tmp_path, servers.start_alertmanager, "alertmanager")
