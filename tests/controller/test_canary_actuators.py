"""Canaries (#15): the command actuator names one replica, the file actuator writes a file
per instance; a class-wide change supersedes them."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from specwise.controller.actuators import ActuationResult, CommandActuator, FileActuator
from specwise.errors import ActuatorError

SPEC = {"method": "eagle", "model": "/m", "num_speculative_tokens": 2}
RECORD = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"


def test_command_argv_gets_instance_and_engine_placeholders() -> None:
    act = CommandActuator(["restart", "{class}", "{k}", "{instance}", "{engine}"], classes={"code"})
    argv = act.render("code", 2, SPEC, instance="10.0.0.7:8000", engine="0")
    assert argv == ["restart", "code", "2", "10.0.0.7:8000", "0"]
    # a class-wide change: empty arguments (every replica)
    assert act.render("code", 2, SPEC)[3:] == ["", ""]
    with pytest.raises(ActuatorError, match="instance '-rf' cannot be passed"):
        act.render("code", 2, SPEC, instance="-rf")


def test_command_apply_instance_runs_for_one_replica(tmp_path: Path) -> None:
    out = tmp_path / "argv.json"
    act = CommandActuator(
        [sys.executable, "-c", RECORD, str(out), "{class}", "{k}", "{instance}", "{engine}"],
        classes={"code"},
    )
    started = act.apply_instance(
        "code", "host-b:8000", 2, speculative_config=SPEC, reason="probe", now=0.0, engine="0"
    )
    assert started.pending
    done: list[ActuationResult] = []
    deadline = time.monotonic() + 60
    while not done and time.monotonic() < deadline:
        done = act.poll(1.0)
        time.sleep(0.02)
    assert done, "the run finished within the bound"
    assert done[0].applied, done
    assert json.loads(out.read_text()) == ["code", "2", "host-b:8000", "0"]
    # the same limits as a class-wide run: min_interval per class
    again = act.apply_instance(
        "code", "host-c:8000", 2, speculative_config=SPEC, reason="probe", now=10.0
    )
    assert not again.applied
    assert again.detail.startswith("rate-limited")


def test_file_actuator_writes_one_file_per_instance_until_a_class_wide_change(
    tmp_path: Path,
) -> None:
    act = FileActuator(tmp_path)
    res = act.apply_instance(
        "code", "host-b:8000", 2, speculative_config=SPEC, reason="probe", now=5.0, engine="0"
    )
    path = act.path_for_instance("code", "host-b:8000")
    assert res.applied
    assert path == tmp_path / "code@host-b_8000.json"
    doc = json.loads(path.read_text())
    assert (doc["instance"], doc["engine"], doc["num_speculative_tokens"]) == (
        "host-b:8000",
        "0",
        2,
    )
    assert not act.path_for("code").exists()  # the other replicas keep their configuration
    act.apply("code", 2, speculative_config=SPEC, reason="rolled out", now=9.0)
    assert act.path_for("code").exists()
    assert not path.exists()  # superseded by the class-wide config
