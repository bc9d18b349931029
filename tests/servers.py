"""Real servers for tests, all on 127.0.0.1 with free ports: Prometheus (with optional
backfilled blocks), VictoriaMetrics single-node, a prometheus_client exporter serving
vLLM-format spec-decode metrics, and a tiny http.server for fault injection.

Binaries are Debian's (``prometheus``, ``promtool``, ``victoria-metrics``). A missing binary
skips the test, or fails it when the ``CI`` environment variable is set. Every wait loop is
bounded; every process is terminated and waited for by whoever started it (the fixtures in
``tests/conftest.py`` do that).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "FaultResponse",
    "FaultServer",
    "ManagedProcess",
    "VLLMExporter",
    "WebhookReceiver",
    "backfill_openmetrics",
    "backfill_openmetrics_file",
    "free_port",
    "openmetrics_text",
    "require_binary",
    "start_alertmanager",
    "start_exporter",
    "start_fault_server",
    "start_prometheus",
    "start_victoria_metrics",
    "start_webhook_receiver",
    "vm_import",
]

_LISTEN = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')


def require_binary(name: str) -> str:
    """Path of ``name`` on PATH; skip the test without it (fail under ``CI``)."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (Debian: apt-get install --no-install-recommends {name})"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (for servers that cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ManagedProcess:
    """A server process we started: its base URL, log file and a ``stop()``."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    data_dir: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _spawn(argv: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def _wait_http(url: str, proc: subprocess.Popen[bytes], deadline: float, log_path: Path) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"server exited with {proc.returncode}: {tail}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready in time: {log_path.read_text(errors='replace')[-2000:]}")


def _await_listening(
    name: str,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    data: Path,
    ready_timeout: float,
) -> ManagedProcess:
    """Read the port a ``--web.listen-address=127.0.0.1:0`` server logged, wait for
    ``/-/ready``; stop the process on any failure (bounded by ``ready_timeout``)."""
    deadline = time.monotonic() + ready_timeout
    port: int | None = None
    try:
        while port is None and time.monotonic() < deadline:
            m = _LISTEN.search(log_path.read_text(errors="replace"))
            if m:
                port = int(m.group(1))
            elif proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {log_path.read_text()[-2000:]}")
            else:
                time.sleep(0.05)
        if port is None:
            raise RuntimeError(f"{name} did not listen in time: {log_path.read_text()[-2000:]}")
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/-/ready", proc, deadline, log_path)
    except BaseException:
        ManagedProcess(proc, "", log_path, data).stop()
        raise
    return ManagedProcess(proc, base, log_path, data)


def start_prometheus(
    workdir: Path,
    *,
    config: str | Mapping[str, Any] | None = None,
    blocks: Path | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = 15.0,
) -> ManagedProcess:
    """Start Debian's prometheus on 127.0.0.1 (port 0) in ``workdir``; return when ready.

    ``config`` is YAML text or a mapping (written as JSON, which is YAML); default: query-only
    (no scrape configs). ``blocks`` (from ``backfill_openmetrics``) are copied into a fresh
    data dir first, since Prometheus rewrites its data dir. Retention is 3650d so old
    backfilled blocks survive. The caller must ``stop()`` it.
    """
    binary = require_binary("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "prometheus.yml"
    if config is None:
        config = {"global": {"scrape_interval": "15s"}, "scrape_configs": []}
    cfg.write_text(config if isinstance(config, str) else json.dumps(config))
    data = workdir / "data"
    if blocks is not None:
        shutil.copytree(blocks, data, dirs_exist_ok=True)
    data.mkdir(exist_ok=True)
    log_path = workdir / "prometheus.log"
    proc = _spawn(
        [
            binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={data}",
            "--web.listen-address=127.0.0.1:0",
            "--storage.tsdb.retention.time=3650d",
            "--web.enable-lifecycle",
            *extra_args,
        ],
        log_path,
    )
    return _await_listening("prometheus", proc, log_path, data, ready_timeout)


def start_victoria_metrics(
    workdir: Path, *, extra_args: Sequence[str] = (), ready_timeout: float = 15.0
) -> ManagedProcess:
    """Start Debian's victoria-metrics single-node on a free 127.0.0.1 port; caller stops it."""
    binary = require_binary("victoria-metrics")
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "vmdata"
    log_path = workdir / "victoria-metrics.log"
    last_error: Exception | None = None
    for _attempt in range(3):  # the free port can be taken between probe and bind
        port = free_port()
        proc = _spawn(
            [
                binary,
                f"-storageDataPath={data}",
                "-retentionPeriod=100y",
                f"-httpListenAddr=127.0.0.1:{port}",
                *extra_args,
            ],
            log_path,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_http(f"{base}/health", proc, time.monotonic() + ready_timeout, log_path)
        except RuntimeError as exc:
            ManagedProcess(proc, base, log_path, data).stop()
            last_error = exc
            continue
        return ManagedProcess(proc, base, log_path, data)
    raise RuntimeError(f"victoria-metrics did not start: {last_error}")


def vm_import(base_url: str, lines: Iterable[str]) -> None:
    """Import Prometheus text lines with **millisecond** timestamps, then force a flush."""
    body = "\n".join(lines) + "\n"
    r = requests.post(f"{base_url}/api/v1/import/prometheus", data=body.encode(), timeout=30)
    r.raise_for_status()
    requests.get(f"{base_url}/internal/force_flush", timeout=30).raise_for_status()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics_text(
    series: Mapping[tuple[str, tuple[tuple[str, str], ...]], Sequence[tuple[float, float]]],
    *,
    types: Mapping[str, str] | None = None,
) -> str:
    """OpenMetrics input for promtool: ``{(sample name, sorted labels): [(ts s, value)]}``.

    Samples of each series are sorted by time (promtool silently drops late ones); ``types``
    maps family names (``vllm:spec_decode_num_drafts``) to ``counter``/``gauge``.
    """
    lines: list[str] = []
    for family, kind in (types or {}).items():
        lines.append(f"# TYPE {family} {kind}")
    for (name, labels), points in series.items():
        lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
        head = f"{name}{{{lab}}}" if lab else name
        for ts, value in sorted(points):
            lines.append(f"{head} {value!r} {ts:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfill_openmetrics(
    text: str,
    out_dir: Path,
    *,
    workdir: Path,
    max_block_duration: str | None = None,
    timeout: float = 120.0,
) -> Path:
    """Run ``promtool tsdb create-blocks-from openmetrics`` on ``text`` into ``out_dir``.

    Timestamps must be in **seconds**. Returns ``out_dir`` (pass it as ``blocks=``).
    ``max_block_duration`` (promtool's hidden flag, e.g. ``"24h"``) makes fewer, longer
    blocks: promtool re-parses the input once per block, so days of data backfill faster.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "backfill.om"
    src.write_text(text)
    return backfill_openmetrics_file(
        src, out_dir, max_block_duration=max_block_duration, timeout=timeout
    )


def backfill_openmetrics_file(
    src: Path, out_dir: Path, *, max_block_duration: str | None = None, timeout: float = 120.0
) -> Path:
    """``backfill_openmetrics`` for input already in a file (written as a stream, never held
    whole in memory: days of history for benchmarks)."""
    promtool = require_binary("promtool")
    out_dir.mkdir(parents=True, exist_ok=True)
    flags = [f"--max-block-duration={max_block_duration}"] if max_block_duration else []
    result = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", *flags, str(src), str(out_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"promtool backfill failed: {result.stderr[-2000:]}")
    return out_dir


# -- a vLLM-format exporter ------------------------------------------------------------


@dataclass
class EngineState:
    """Cumulative counters of one simulated vLLM engine."""

    drafts: float = 0.0
    draft_tokens: float = 0.0
    accepted: float = 0.0
    per_position: list[float] = field(default_factory=list)
    running: float = 0.0
    generation_tokens: float = 0.0


class VLLMExporter(Collector):
    """Serves vLLM 0.32-format spec-decode families for ``engines`` (labels -> state).

    Mutate ``engines`` (under ``lock``) between scrapes; ``add()`` is a convenience.
    """

    def __init__(self, k: int = 4) -> None:
        self.k = k
        self.lock = threading.Lock()
        self.engines: dict[tuple[tuple[str, str], ...], EngineState] = {}

    def add(
        self,
        labels: Mapping[str, str],
        *,
        drafts: float,
        draft_tokens: float,
        accepted: float,
        per_position: Sequence[float],
    ) -> None:
        key = tuple(sorted(labels.items()))
        with self.lock:
            st = self.engines.setdefault(key, EngineState(per_position=[0.0] * self.k))
            st.drafts += drafts
            st.draft_tokens += draft_tokens
            st.accepted += accepted
            for i, v in enumerate(per_position):
                st.per_position[i] += v
            st.generation_tokens += drafts + accepted

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            engines = {k: (v, list(v.per_position)) for k, v in self.engines.items()}
        names = sorted({n for key in engines for n, _ in key})
        fams = {
            "drafts": CounterMetricFamily(
                "vllm:spec_decode_num_drafts", "Number of spec decoding drafts.", labels=names
            ),
            "draft_tokens": CounterMetricFamily(
                "vllm:spec_decode_num_draft_tokens", "Number of draft tokens.", labels=names
            ),
            "accepted": CounterMetricFamily(
                "vllm:spec_decode_num_accepted_tokens", "Number of accepted tokens.", labels=names
            ),
        }
        per_pos = CounterMetricFamily(
            "vllm:spec_decode_num_accepted_tokens_per_pos",
            "Accepted tokens per draft position.",
            labels=[*names, "position"],
        )
        running = GaugeMetricFamily(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            labels=names,
        )
        gen = CounterMetricFamily(
            "vllm:generation_tokens", "Number of generation tokens processed.", labels=names
        )
        for key, (st, pp) in sorted(engines.items()):
            values = [v for _, v in key]
            fams["drafts"].add_metric(values, st.drafts)
            fams["draft_tokens"].add_metric(values, st.draft_tokens)
            fams["accepted"].add_metric(values, st.accepted)
            for i, v in enumerate(pp):
                per_pos.add_metric([*values, str(i)], v)
            running.add_metric(values, st.running)
            gen.add_metric(values, st.generation_tokens)
        yield from fams.values()
        yield per_pos
        yield running
        yield gen


@dataclass
class Exporter:
    """A running exporter: ``url`` of its /metrics, the collector, and ``stop()``."""

    url: str
    collector: VLLMExporter
    registry: CollectorRegistry
    stop: Callable[[], None]

    @property
    def address(self) -> str:
        return self.url.split("//", 1)[1].split("/", 1)[0]


def start_exporter(collector: VLLMExporter | None = None) -> Exporter:
    """Serve ``collector`` (default: an empty ``VLLMExporter``) from a fresh registry on a
    free 127.0.0.1 port with prometheus_client's own server; the caller must ``stop()``."""
    registry = CollectorRegistry()
    coll = collector if collector is not None else VLLMExporter()
    registry.register(coll)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = server.server_address[1]

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return Exporter(f"http://127.0.0.1:{port}/metrics", coll, registry, stop)


# -- fault injection -------------------------------------------------------------------


@dataclass
class FaultResponse:
    """What the fault server sends for one path.

    ``declared_length`` > len(body) makes a truncated response (the connection closes
    early); ``delay`` seconds before answering simulates a hang.
    """

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; version=0.0.4; charset=utf-8"
    delay: float = 0.0
    declared_length: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    server: FaultServer

    def _answer(self) -> None:
        if self.command == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            self.server.bodies.append(self.rfile.read(length))
        self.server.requests.append((self.command, self.path, dict(self.headers)))
        path = self.path.split("?", 1)[0]
        resp = self.server.routes.get(path, FaultResponse(404, b"404 page not found"))
        if resp.delay:
            self.server.stopping.wait(resp.delay)
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(resp.declared_length or len(resp.body)))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(resp.body)
            self.wfile.flush()
        except OSError:
            return
        if resp.declared_length:
            self.close_connection = True

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        return


class FaultServer(ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 answering each path with a configured FaultResponse."""

    daemon_threads = True

    def __init__(self, routes: dict[str, FaultResponse]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = routes
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.bodies: list[bytes] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self.thread.join(5)


def start_fault_server(routes: dict[str, FaultResponse] | None = None) -> FaultServer:
    """Start a FaultServer in a thread; the caller must ``stop()`` it."""
    server = FaultServer(routes or {})
    server.thread.start()
    return server


# -- Alertmanager and a webhook receiver -----------------------------------------------


def start_alertmanager(
    workdir: Path,
    *,
    webhook_url: str,
    group_by: Sequence[str] = ("alertname", "class"),
    ready_timeout: float = 15.0,
) -> ManagedProcess:
    """Start Debian's prometheus-alertmanager on 127.0.0.1 (port 0, no cluster port), routing
    everything to ``webhook_url`` (group_wait 1s, send_resolved); caller must ``stop()``."""
    binary = require_binary("prometheus-alertmanager")
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "alertmanager.yml"
    cfg.write_text(
        json.dumps(
            {
                "route": {
                    "receiver": "hook",
                    "group_by": list(group_by),
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [
                    {
                        "name": "hook",
                        "webhook_configs": [{"url": webhook_url, "send_resolved": True}],
                    }
                ],
            }
        )
    )
    data = workdir / "am-data"
    data.mkdir(exist_ok=True)
    log_path = workdir / "alertmanager.log"
    proc = _spawn(
        [
            binary,
            f"--config.file={cfg}",
            f"--storage.path={data}",
            "--web.listen-address=127.0.0.1:0",
            "--web.external-url=http://127.0.0.1/",
            "--cluster.listen-address=",
        ],
        log_path,
    )
    return _await_listening("alertmanager", proc, log_path, data, ready_timeout)


class _HookHandler(BaseHTTPRequestHandler):
    server: WebhookReceiver

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        with self.server.cond:
            self.server.payloads.append(json.loads(body))
            self.server.cond.notify_all()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


class WebhookReceiver(ThreadingHTTPServer):
    """Collects Alertmanager webhook payloads (version 4) posted to ``url``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HookHandler)
        self.payloads: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every payload received so far."""
        with self.cond:
            return [a for p in self.payloads for a in p.get("alerts", [])]

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float
    ) -> dict[str, Any] | None:
        """The first received alert matching ``predicate``, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for p in self.payloads:
                    for a in p.get("alerts", []):
                        if predicate(a):
                            return dict(a)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


def start_webhook_receiver() -> WebhookReceiver:
    """Start a WebhookReceiver in a thread; the caller must ``stop()`` it."""
    server = WebhookReceiver()
    server.thread.start()
    return server
