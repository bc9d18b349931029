"""Actuators: atomic files, commands without a shell, rate limits, failures reported."""

from __future__ import annotations

import configparser
import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from specwise.config import load_config, parse_config
from specwise.controller.actuators import (
    CommandActuator,
    DryRunActuator,
    FileActuator,
    speculative_config_for,
    write_atomically,
)
from specwise.controller.wiring import build_actuator
from specwise.errors import ActuatorError, ConfigError

ROOT = Path(__file__).resolve().parents[2]
SOURCE = {"source": {"urls": ["http://127.0.0.1:8000/metrics"]}}


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


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)  # a service's umask must not hide the file from the deploy tool
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("strict_umask")
def test_file_actuator_writes_0644_by_default(tmp_path: Path) -> None:
    """mkstemp's 0600 kept a deploy tool running as another user from reading the file."""
    act = FileActuator(tmp_path)
    act.apply("code", 2, speculative_config={"num_speculative_tokens": 2}, reason="", now=0.0)
    assert mode_of(act.path_for("code")) == 0o644
    act.apply("code", 0, speculative_config=None, reason="", now=1.0)  # a rewrite keeps it
    assert mode_of(act.path_for("code")) == 0o644


@pytest.mark.usefixtures("strict_umask")
def test_file_mode_from_config_reaches_the_file(tmp_path: Path) -> None:
    settings = {"kind": "file", "dir": str(tmp_path), "file_mode": "0640"}
    config = parse_config({**SOURCE, "actuator": settings})
    assert config.actuator.file_mode == 0o640
    act = build_actuator(config)
    assert isinstance(act, FileActuator)
    act.apply("chat", 1, speculative_config={"num_speculative_tokens": 1}, reason="", now=0.0)
    assert mode_of(act.path_for("chat")) == 0o640
    assert parse_config(SOURCE).actuator.file_mode == 0o644
    assert parse_config({**SOURCE, "actuator": {"file_mode": "0o600"}}).actuator.file_mode == 0o600


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (644, r"file_mode = 644 is not an octal file mode; write it quoted"),
        ("0999", r"file_mode = '0999' is not an octal file mode"),
        ("", r"file_mode = '' is not an octal file mode"),
        ("01644", r"file_mode = '01644' is not an octal file mode"),
        ("0666", r"file_mode = '0666' lets every user rewrite"),
    ],
)
def test_file_mode_errors_are_one_clear_sentence(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config({**SOURCE, "actuator": {"file_mode": value}})
    assert info.value.field == "[actuator] file_mode"


def test_state_file_writes_stay_owner_only(tmp_path: Path) -> None:
    write_atomically(tmp_path / "state.json", "{}")
    assert mode_of(tmp_path / "state.json") == 0o600


# ----------------------------------------------------------------------------- command


def run_once(act: CommandActuator, name: str, k: int, spec: Any) -> list[str]:
    """Run one command to its end (bounded wait) and return the argv it printed."""
    assert act.apply(name, k, speculative_config=spec, reason="", now=0.0).pending
    deadline = time.monotonic() + 60
    while act.running():
        assert time.monotonic() < deadline, "the command did not finish within 60 s"
        time.sleep(0.01)
    (result,) = act.poll(0.0)
    assert result.applied, result.error
    args: list[str] = json.loads(result.last_line)
    return args


PRINT_ARGV = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]


def test_command_actuator_substitutes_without_shell() -> None:
    act = CommandActuator(
        [*PRINT_ARGV, "{class}", "k={k}", "{speculative_config}", "{class}-{k}"],
        classes=["code; rm -rf /", "other"],
        min_interval=60,
    )
    spec = {"method": "ngram", "num_speculative_tokens": 2}
    args = run_once(act, "code; rm -rf /", 2, spec)
    assert args[0] == "code; rm -rf /"  # passed as one argument, never interpreted
    assert args[1] == "k=2"
    assert json.loads(args[2]) == spec
    assert args[3] == "code; rm -rf /-2"
    limited = act.apply(
        "code; rm -rf /",
        3,
        speculative_config=spec | {"num_speculative_tokens": 3},
        reason="",
        now=30.0,
    )
    assert not limited.applied
    assert not limited.pending
    assert "rate-limited" in limited.detail
    assert run_once(act, "other", 1, {"num_speculative_tokens": 1})[0] == "other"
    act.close(timeout=0)


@pytest.mark.parametrize(
    ("name", "k", "spec", "message"),
    [
        (
            "stray",
            1,
            {"num_speculative_tokens": 1},
            r"class 'stray' is not declared in \[\[classes\]\]",
        ),
        ("", 1, {"num_speculative_tokens": 1}, r"class '' is not declared"),
        ("code", -1, {"num_speculative_tokens": 1}, r"k = -1 is not a whole number from 0 to 8"),
        ("code", 9, {"num_speculative_tokens": 9}, r"k = 9 is not a whole number from 0 to 8"),
        ("code", True, {"num_speculative_tokens": 1}, r"k = True is not a whole number"),
        ("code", 3, None, r"k = 3 needs a speculative config, got none"),
        ("code", 3, {"num_speculative_tokens": 4}, r"num_speculative_tokens = 4 for k = 3"),
        ("code", 3, {"num_speculative_tokens": "3"}, r"num_speculative_tokens = '3'; it must"),
        ("code", 0, {"method": "ngram"}, r"for k = 0; k = 0 takes none"),
        ("code", 2, {"num_speculative_tokens": 2, "x": float("nan")}, r"cannot be written as JSON"),
        ("code", 2, {"num_speculative_tokens": 2, "x": object()}, r"cannot be written as JSON"),
        ("code", 2, {2: "x", "num_speculative_tokens": 2}, r"is not a table with text keys"),
    ],
)
def test_command_actuator_substitutes_only_valid_values(
    tmp_path: Path, name: str, k: int, spec: Any, message: str
) -> None:
    marker = tmp_path / "ran"
    act = CommandActuator(
        [sys.executable, "-c", "import sys; open(sys.argv[1], 'w')", str(marker), "{class}"],
        classes=["code", "chat"],
        k_max=8,
    )
    with pytest.raises(ActuatorError, match=message):
        act.apply(name, k, speculative_config=spec, reason="", now=0.0)
    assert act.running() == {}
    assert act.poll(0.0) == []
    assert not marker.exists()


@pytest.mark.parametrize("bad", ["-rf", "a\nb", "nul\x00", ""])
def test_command_actuator_rejects_unusable_declared_names(bad: str) -> None:
    with pytest.raises(ConfigError, match="cannot be passed to the actuator command"):
        CommandActuator(PRINT_ARGV, classes=["code", bad])


def test_wiring_gives_the_command_actuator_the_declared_names() -> None:
    config = parse_config(
        {
            **SOURCE,
            "policy": {"k_max": 5},
            "actuator": {"kind": "command", "argv": ["deploy", "{class}"]},
            "classes": [{"name": "code"}, {"name": "chat"}],
        }
    )
    act = build_actuator(config)
    assert isinstance(act, CommandActuator)
    assert act.classes == {"code", "chat"}
    assert act.k_max == 5
    with pytest.raises(ActuatorError, match="not declared"):
        act.render("summarize", 1, {"num_speculative_tokens": 1})


def _seconds(value: str) -> float:
    units = {"min": 60.0, "s": 1.0}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_systemd_stop_timeout_covers_an_actuator_run() -> None:
    """The unit stopped the service after 30 s while a restart may run for 5 minutes: systemd
    must give specwise time to wait for a run and kill its group, and leave the run alone."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "config" / "specwise.service")
    service = unit["Service"]
    config = load_config(ROOT / "config" / "specwise.example.toml")
    act = CommandActuator(["x"], classes=[])  # its default SIGTERM grace
    needed = (
        config.actuator.timeout
        + act.kill_grace
        + 10.0  # SIGKILL and reaping waits
        + config.controller.interval  # the tick in progress
        + config.source.timeout
    )
    assert _seconds(service["TimeoutStopSec"]) >= needed
    assert service["KillMode"] == "mixed"  # SIGTERM to specwise only, not to the run
    assert service["KillSignal"] == "SIGTERM"
