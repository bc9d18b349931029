"""Controller config: defaults, presets, and errors that name the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from specwise.config import (
    format_duration,
    load_config,
    parse_config,
    parse_duration,
    parse_listen,
)
from specwise.errors import ConfigError
from specwise.policies.presets import DRAFTER_COSTS

MINIMAL = {"source": {"urls": ["http://127.0.0.1:8000/metrics"]}}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("250ms", 0.25), (45, 45)],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text, field="x") == seconds


@pytest.mark.parametrize("bad", ["", "5 minutes", "-5m", "0s", True, [1]])
def test_bad_duration_names_field(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"\[policy\] min_dwell"):
        parse_duration(bad, field="[policy] min_dwell")


def test_format_duration_round_trips() -> None:
    for s in (15, 90, 300, 3600, 5400, 86400):
        assert parse_duration(format_duration(s), field="x") == s
    assert format_duration(3600) == "1h"
    assert format_duration(90) == "90s"


def test_defaults_are_safe() -> None:
    cfg = parse_config(MINIMAL)
    assert cfg.actuator.kind == "dry-run"
    assert cfg.controller.listen.startswith("127.0.0.1:")
    assert cfg.source.tls_verify is True
    assert cfg.policy.max_changes_per_hour >= 1
    assert cfg.policy.min_gain > 0


def test_class_presets_and_example_file() -> None:
    cfg = load_config(Path(__file__).parents[1] / "config" / "specwise.example.toml")
    assert cfg.classes, "the example config declares classes"
    for c in cfg.classes:
        assert c.cost >= 0
    data = {**MINIMAL, "classes": [{"name": "code", "drafter": "eagle", "k": 4}]}
    assert parse_config(data).classes[0].cost == DRAFTER_COSTS["eagle"] == 0.05


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"source": {"urls": []}}, r"\[source\] urls is empty"),
        ({"source": {"kind": "prometheus"}}, r"\[source\] url is empty"),
        (
            {"source": {"kind": "graphite", "urls": ["http://x"]}},
            r"\[source\] kind = 'graphite' is unknown",
        ),
        ({**MINIMAL, "policy": {"min_gain": -1}}, r"\[policy\] min_gain = -1 is out of range"),
        ({**MINIMAL, "policy": {"k_max": 0}}, r"\[policy\] k_max = 0 must be a whole number"),
        (
            {**MINIMAL, "policy": {"min_gian": 0.1}},
            r"\[policy\] has unknown setting\(s\) min_gian \(did you mean min_gain\?\)",
        ),
        ({**MINIMAL, "actuator": {"kind": "file"}}, r"\[actuator\] dir is empty"),
        ({**MINIMAL, "actuator": {"kind": "command"}}, r"\[actuator\] argv is empty"),
        ({**MINIMAL, "controller": {"listen": "9464"}}, r"listen = '9464' must be host:port"),
        ({**MINIMAL, "classes": [{"cost": 0.1}]}, r"\[\[classes\]\] #1 has no name"),
        (
            {**MINIMAL, "classes": [{"name": "a", "cost": 0.1, "drafter": "eagle"}]},
            r"both cost and drafter",
        ),
        ({**MINIMAL, "classes": [{"name": "a"}, {"name": "a"}]}, r"'a' is defined twice"),
        (
            {**MINIMAL, "classes": [{"name": "a", "drafter": "magic"}]},
            r"drafter = 'magic' is unknown",
        ),
        ({"source": {"urls": ["ftp://x"]}}, r"must start with http:// or https://"),
        ({**MINIMAL, "policy": {"k_max": 129}}, r"\[policy\] k_max = 129 .* between 1 and 128"),
        (
            {**MINIMAL, "classes": [{"name": "a"}, {"name": "b", "k": 1000}]},
            r"\[\[classes\]\] #2 \('b'\) k = 1000 .* between 0 and 128",
        ),
        (
            {**MINIMAL, "classes": [{"name": "a"}, {"name": "b", "cost": -1}]},
            r"^\[\[classes\]\] #2 \('b'\) cost = -1 is out of range",
        ),
        (
            {**MINIMAL, "classes": [{"name": "a", "match": '{model_name="a"'}]},
            r"^\[\[classes\]\] #1 \('a'\) match: Class selector .* cannot be read",
        ),
        (
            {**MINIMAL, "classes": [{"name": "a", "match": '{model_name=~"("}'}]},
            r"^\[\[classes\]\] #1 \('a'\) match: ",
        ),
        (
            {"source": {**MINIMAL["source"], "group_by": ["class"]}},
            r"^\[source\] group_by: group_by label 'class' is not usable",
        ),
        ({**MINIMAL, "classes": [{"name": "a"}, {"name": "a"}]}, r"\[\[classes\]\] #1 and #2"),
        ({**MINIMAL, "controller": {"listen": "[::1]:99999"}}, r"port in 0..65535"),
        ({**MINIMAL, "controller": {"listen": "::1:9464"}}, r"IPv6 in brackets"),
    ],
)
def test_bad_values_name_field_and_fix(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_config(data)


def test_load_config_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy\nmin_gain = 1\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="Cannot read config file"):
        load_config(tmp_path / "missing.toml")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(
        '[source]\nurls = ["http://127.0.0.1:1/metrics"]\n[policy]\nmin_gain = "high"\n'
    )
    with pytest.raises(
        ConfigError, match=r"wrong.toml: \[policy\] min_gain = 'high' must be a number"
    ):
        load_config(wrong)


def test_unknown_section_is_named_as_a_section() -> None:
    with pytest.raises(
        ConfigError, match=r"has unknown section\(s\) polcy \(did you mean policy\?\)"
    ):
        parse_config({**MINIMAL, "polcy": {"k_max": 4}})


def test_class_errors_never_number_from_zero() -> None:
    """Users count [[classes]] blocks from 1; '[classes.0]' named a table nobody wrote."""
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "classes": [{"name": "a", "cots": 1}]})
    assert "classes.0" not in str(info.value)
    assert str(info.value).startswith("[[classes]] #1 ('a') has unknown setting(s) cots")


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:9464", "127.0.0.1", 9464),
        ("localhost:0", "localhost", 0),
        ("[::1]:9464", "::1", 9464),
        ("[::]:9464", "::", 9464),
    ],
)
def test_listen_accepts_ipv4_names_and_bracketed_ipv6(listen: str, host: str, port: int) -> None:
    cfg = parse_config({**MINIMAL, "controller": {"listen": listen}})
    assert parse_listen(cfg.controller.listen) == (host, port)


def test_config_that_is_not_utf8_is_one_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('[source]\nurls = ["http://127.0.0.1:1/metrics"] # caf\xe9\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.toml' is not UTF-8 text \(byte 0xe9"):
        load_config(bad)


def test_selector_errors_name_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "sel.toml"
    path.write_text(
        '[source]\nurls = ["http://127.0.0.1:1/metrics"]\n'
        '[[classes]]\nname = "code"\nmatch = "{model_name=code}"\n'
    )
    with pytest.raises(ConfigError, match=r"sel.toml: \[\[classes\]\] #1 \('code'\) match"):
        load_config(path)


def test_loaded_config_remembers_its_path(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[source]\nurls = ["http://127.0.0.1:1/metrics"]\n')
    assert load_config(path).path == str(path)
    assert parse_config(MINIMAL).path == ""
