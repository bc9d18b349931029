"""The [policy] keys of load-aware pricing: parsed, validated with one-sentence errors, and
carried into PolicyConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from specwise.config import load_config, parse_config
from specwise.errors import ConfigError
from specwise.policies.settings import policy_config
from specwise.policies.speedup_policy import PolicyConfig

SOURCE = {"urls": ["http://127.0.0.1:1/metrics"]}


def test_defaults() -> None:
    pol = parse_config({"source": SOURCE}).policy
    assert (pol.schedules, pol.max_batch_size, pol.edge_margin) == (True, 256, 0.25)
    assert (pol.load_horizon, pol.min_band_share) == (86400.0, 0.05)


def test_keys_reach_the_policy_config() -> None:
    cfg = parse_config(
        {
            "source": SOURCE,
            "policy": {
                "schedules": False,
                "max_batch_size": 64,
                "edge_margin": 0.5,
                "load_horizon": "12h",
                "min_band_share": 0.1,
                "min_gain": 0.08,
            },
        }
    )
    pc = policy_config(cfg, "any")
    assert (pc.schedules, pc.max_batch_size, pc.edge_margin) == (False, 64, 0.5)
    assert (pc.load_horizon, pc.min_band_share, pc.min_gain) == (43200.0, 0.1, 0.08)


def test_the_example_file_sets_them() -> None:
    cfg = load_config(Path(__file__).parents[2] / "config" / "specwise.example.toml")
    text = (Path(__file__).parents[2] / "config" / "specwise.example.toml").read_text()
    for key in ("schedules", "max_batch_size", "edge_margin", "load_horizon", "min_band_share"):
        assert f"\n{key} = " in text
    assert cfg.policy.load_horizon == 86400.0


@pytest.mark.parametrize(
    ("policy", "needle"),
    [
        ({"schedules": "yes"}, r"^\[policy\] schedules = 'yes' must be true or false$"),
        ({"max_batch_size": 0}, r"^\[policy\] max_batch_size = 0 must be a whole number"),
        ({"max_batch_size": 2.5}, r"^\[policy\] max_batch_size = 2.5 must be a whole number"),
        ({"edge_margin": -0.1}, r"^\[policy\] edge_margin = -0.1 is out of range"),
        ({"load_horizon": "a day"}, r"^\[policy\] load_horizon = 'a day' is not a duration"),
        ({"min_band_share": 0.9}, r"^\[policy\] min_band_share = 0.9 is out of range"),
    ],
)
def test_bad_values_are_one_sentence(policy: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        parse_config({"source": SOURCE, "policy": policy})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"edge_margin": 5.0}, "edge_margin = 5.0 must lie in 0..4"),
        ({"min_band_share": -1.0}, "min_band_share = -1.0 must lie in 0..0.5"),
        ({"min_gain": -0.1}, "min_gain = -0.1 must lie in 0..10"),
        ({"load_horizon": 0.0}, "load_horizon = 0.0 must be a positive number of seconds"),
    ],
)
def test_policy_config_checks_them(kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        PolicyConfig(**kwargs)  # type: ignore[arg-type]
