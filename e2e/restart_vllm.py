"""(Re)start the suite's vLLM server with a new ``--speculative-config``: the command
actuator's target in the closed-loop scenario, and how the fixtures start and stop vLLM.

    restart_vllm.py STATE_DIR CLASS K [SPECULATIVE_CONFIG]    # stop the old server, start anew
    restart_vllm.py STATE_DIR --stop                            # stop it

``STATE_DIR/launch.json`` (written by the fixture) says how to start vLLM: the python of the
vLLM venv, the model dir, the served model name, the port (the same across restarts so the
scrape URL stays valid), extra arguments, environment and the health timeout. An empty
SPECULATIVE_CONFIG (what specwise passes for k = 0) starts vLLM without speculation.

The server runs in its own session (process group: the API server and its engine core); it
is stopped with SIGTERM to that group, then SIGKILL after a bounded wait. Each start gets
its own log file (``vllm-N.log``); ``server.json`` describes the running server and
``actions.jsonl`` gets one line per call, so a test can count restarts. Exit status 0 once
``/health`` answers 200, 1 (with the log's tail) if it does not within the timeout. Standard
library only, no shell.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def _alive_in_group(pgid: int) -> list[int]:
    """PIDs (not zombies) whose process group is ``pgid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(entry.name))
    return out


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop(state_dir: Path, *, timeout: float = 30.0) -> None:
    """Stop the server described by ``server.json`` (SIGTERM, then SIGKILL), if any."""
    info_path = state_dir / "server.json"
    if not info_path.exists():
        return
    info = json.loads(info_path.read_text())
    pgid = int(info["pgid"])
    if _alive_in_group(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive_in_group(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive_in_group(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive_in_group(pgid) and time.monotonic() < deadline:
                time.sleep(0.2)
    port = int(info["port"])
    deadline = time.monotonic() + 10
    while _port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    info_path.unlink()


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(state_dir: Path, spec: dict[str, Any] | None) -> dict[str, Any]:
    """Start vLLM as ``launch.json`` says, with ``spec`` as --speculative-config (None: off)."""
    launch = json.loads((state_dir / "launch.json").read_text())
    n = len(list(state_dir.glob("vllm-*.log")))
    log_path = state_dir / f"vllm-{n}.log"
    port = int(launch["port"])
    argv = [
        launch["python"],
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model",
        launch["model"],
        "--served-model-name",
        launch["served_model_name"],
        *launch.get("extra_args", []),
    ]
    if spec is not None:
        argv += ["--speculative-config", json.dumps(spec, sort_keys=True)]
    env = {**os.environ, **launch.get("env", {})}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    info = {
        "pid": proc.pid,
        "pgid": proc.pid,
        "port": port,
        "log": str(log_path),
        "speculative_config": spec,
        "started_at": time.time(),
        "argv": argv,
    }
    (state_dir / "server.json").write_text(json.dumps(info, indent=2) + "\n")
    deadline = time.monotonic() + float(launch.get("health_timeout", 300))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _healthy(port):
            info["ready_at"] = time.time()
            (state_dir / "server.json").write_text(json.dumps(info, indent=2) + "\n")
            return info
        time.sleep(0.5)
    tail = log_path.read_text(errors="replace")[-3000:]
    stop(state_dir)
    raise RuntimeError(
        f"vLLM did not become healthy on port {port} (exit status {proc.poll()}); "
        f"log {log_path} ends with:\n{tail}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--stop", action="store_true", help="only stop the running server")
    parser.add_argument("class_name", nargs="?", default="")
    parser.add_argument("k", nargs="?", type=int, default=None)
    parser.add_argument("speculative_config", nargs="?", default="")
    args = parser.parse_args(argv[1:])
    state_dir: Path = args.state_dir
    record: dict[str, Any] = {"at": time.time(), "class": args.class_name, "k": args.k}
    if args.stop:
        stop(state_dir)
        return 0
    if args.k is None:
        parser.error("K is required unless --stop is given")
    spec = json.loads(args.speculative_config) if args.speculative_config.strip() else None
    if spec is not None and spec.get("num_speculative_tokens") != args.k:
        parser.error(f"k = {args.k} disagrees with the speculative config {spec}")
    record["speculative_config"] = spec
    stop(state_dir)
    try:
        info = start(state_dir, spec)
    except RuntimeError as exc:
        record["error"] = str(exc)[:500]
        with (state_dir / "actions.jsonl").open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(exc, file=sys.stderr)
        return 1
    record["ready_after_s"] = round(info["ready_at"] - info["started_at"], 1)
    record["log"] = info["log"]
    with (state_dir / "actions.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    print(f"vLLM up on port {info['port']} with k = {args.k} after {record['ready_after_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
