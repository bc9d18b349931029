"""Actuators: atomic files, commands without a shell, rate limits, failures reported."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from specwise.controller.actuators import (
    CommandActuator,
    DryRunActuator,
    FileActuator,
    speculative_config_for,
    write_atomically,
)
from specwise.errors import ActuatorError


def test_speculative_config_for() -> None:
    template = {"method": "eagle", "model": "/models/eagle"}
    assert speculative_config_for(template, 4) == {**template, "num_speculative_tokens": 4}
    assert speculative_config_for(template, 0) is None
    assert "num_speculative_tokens" not in template


def test_dry_run_applies_nothing() -> None:
    r = DryRunActuator().apply(
        "code", 3, speculative_config={"method": "ngram"}, reason="r", now=5.0
    )
    assert not r.applied
    assert "would set k = 3" in r.detail


def test_file_actuator_writes_valid_json(tmp_path: Path) -> None:
    act = FileActuator(tmp_path / "out")
    spec = speculative_config_for({"method": "ngram", "prompt_lookup_max": 4}, 5)
    r = act.apply("code/python", 5, speculative_config=spec, reason="alpha 0.8", now=10.0)
    assert r.applied
    path = act.path_for("code/python")
    assert path.parent == tmp_path / "out"
    data = json.loads(path.read_text())
    assert data["speculative_config"]["num_speculative_tokens"] == 5
    assert data["class"] == "code/python"
    act.apply("code/python", 0, speculative_config=None, reason="off", now=11.0)
    assert json.loads(path.read_text())["speculative_config"] is None
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    write_atomically(target, "old")

    with pytest.raises(TypeError):
        write_atomically(target, 12345)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_file_actuator_unwritable_dir_is_clear(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(ActuatorError, match="check that \\[actuator\\] dir"):
        FileActuator(blocker).apply("c", 1, speculative_config=None, reason="", now=0.0)


def test_command_actuator_substitutes_without_shell(tmp_path: Path) -> None:
    out = tmp_path / "args.json"
    script = "import json,sys; json.dump(sys.argv[1:], open(sys.argv[1], 'w'))"
    act = CommandActuator(
        [sys.executable, "-c", script, str(out), "{class}", "k={k}", "{speculative_config}"],
        min_interval=60,
    )
    spec = {"method": "ngram", "num_speculative_tokens": 2}
    r = act.apply("code; rm -rf /", 2, speculative_config=spec, reason="", now=100.0)
    assert r.applied
    assert r.exit_status == 0
    args = json.loads(out.read_text())
    assert args[1] == "code; rm -rf /"  # passed as one argument, never interpreted
    assert args[2] == "k=2"
    assert json.loads(args[3]) == spec
    limited = act.apply("code; rm -rf /", 3, speculative_config=spec, reason="", now=130.0)
    assert not limited.applied
    assert "rate-limited" in limited.detail
    assert act.apply("other", 3, speculative_config=spec, reason="", now=130.0).applied
    assert act.apply("code; rm -rf /", 3, speculative_config=spec, reason="", now=161.0).applied


def test_command_failure_is_reported_with_status_and_output() -> None:
    act = CommandActuator([sys.executable, "-c", "import sys; print('no quota'); sys.exit(3)"])
    with pytest.raises(ActuatorError, match="exited with status 3: no quota"):
        act.apply("code", 4, speculative_config=None, reason="", now=0.0)


def test_command_missing_and_timeout() -> None:
    with pytest.raises(ActuatorError, match="was not found"):
        CommandActuator(["/nonexistent/deploy-k"]).apply(
            "c", 1, speculative_config=None, reason="", now=0
        )
    slow = CommandActuator([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.3)
    with pytest.raises(ActuatorError, match=r"ran past 0\.3 s"):
        slow.apply("c", 1, speculative_config=None, reason="", now=0)
