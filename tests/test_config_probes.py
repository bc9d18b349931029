"""``[probes]``: defaults safe for a fleet, the example file, one-sentence errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from specwise.config import load_config, parse_config
from specwise.errors import ConfigError

MINIMAL = {"source": {"urls": ["http://127.0.0.1:8000/metrics"]}}


def test_defaults_are_bounded_and_only_re_enable() -> None:
    p = parse_config(MINIMAL).probes
    assert p.enabled is True
    assert p.kinds == ("re-enable",)
    assert (p.backoff, p.cap) == (6 * 3600, 24 * 3600)
    assert p.max_probe_fraction == 0.05
    assert p.max_duration == 1800
    assert p.min_gain == parse_config(MINIMAL).policy.min_gain


def test_values_are_read_and_the_example_file_parses() -> None:
    data = {
        **MINIMAL,
        "policy": {"min_gain": 0.1},
        "probes": {
            "enabled": False,
            "kinds": ["re-enable", "baseline"],
            "backoff": "2h",
            "cap": "2d",
            "max_probe_fraction": 0.1,
            "probe_k": 3,
            "max_duration": "20m",
            "min_duration": "2m",
            "min_drafts": 500,
            "canary": False,
        },
    }
    p = parse_config(data).probes
    assert (p.enabled, p.kinds, p.backoff, p.cap) == (
        False,
        ("re-enable", "baseline"),
        7200,
        172800,
    )
    assert (p.max_probe_fraction, p.probe_k, p.max_duration, p.min_duration) == (0.1, 3, 1200, 120)
    assert (p.min_drafts, p.canary, p.min_gain) == (500, False, 0.1)
    cfg = load_config(Path(__file__).parents[1] / "config" / "specwise.example.toml")
    assert cfg.probes.kinds == ("re-enable",)


@pytest.mark.parametrize(
    ("probes", "needle"),
    [
        (
            {"kinds": ["reenable"]},
            r"kinds entry 'reenable' is unknown \(did you mean re-enable\?\)",
        ),
        ({"backoff": "2d"}, r"backoff = 48 h must be > 0 and at most cap = 24 h"),
        ({"max_probe_fraction": 0.9}, r"max_probe_fraction = 0.9 is out of range"),
        ({"probe_k": 9}, r"probe_k = 9 is above \[policy\] k_max = 8"),
        ({"max_duration": "3h"}, r"max_duration = 3 h exceeds the daily budget"),
        ({"min_duration": "1h"}, r"min_duration = 60 min must be > 0 and at most max_duration"),
        ({"enabled": "yes"}, r"\[probes\] enabled = 'yes' must be true or false"),
        ({"budget": 1}, r"\[probes\] has unknown setting\(s\) budget"),
    ],
)
def test_bad_values_name_the_key_in_one_sentence(probes: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        parse_config({**MINIMAL, "probes": probes})
    assert "\n" not in str(info.value)
