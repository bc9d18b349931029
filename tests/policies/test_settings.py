"""Settings -> PolicyConfig and EstimatorConfig: one function each, used by run, recommend
and report (issue 13)."""

from __future__ import annotations

import ast
from pathlib import Path

from specwise.config import parse_config
from specwise.controller.actuators import DryRunActuator
from specwise.controller.loop import Controller
from specwise.estimation.estimator import EstimatorConfig
from specwise.estimation.settings import estimator_config
from specwise.policies.settings import policy_config
from specwise.policies.speedup_policy import PolicyConfig

CONFIG = parse_config(
    {
        "source": {"urls": ["http://127.0.0.1:1/metrics"]},
        "estimator": {"window": "2m", "mode": "ewma", "half_life": "1m", "min_drafts": 50},
        "policy": {"k_max": 6, "tolerance": 0.02, "off_mode": "schedule", "verify_slope": 0.01},
        "classes": [{"name": "code", "cost": 0.3}],
    }
)


def test_policy_config_from_settings_and_overrides() -> None:
    assert policy_config(CONFIG, "code") == PolicyConfig(
        cost=0.3, k_max=6, verify_cost=0.01, plateau=0.02, off="schedule"
    )
    assert policy_config(CONFIG, "undeclared").cost == 0.05
    over = policy_config(CONFIG, "code", cost=0.1, k_max=3, verify_slope=0.0)
    assert (over.cost, over.k_max, over.verify_cost) == (0.1, 3, 0.0)
    assert policy_config(None, "x") == PolicyConfig(cost=0.05, k_max=8)


def test_estimator_config_from_settings_and_overrides() -> None:
    assert estimator_config(CONFIG) == EstimatorConfig(
        window_seconds=120.0, mode="ewma", half_life_seconds=60.0, min_drafts=50
    )
    assert estimator_config(CONFIG, min_drafts=10).min_drafts == 10
    assert estimator_config(CONFIG, min_drafts=10).mode == "ewma"
    assert estimator_config(None) == EstimatorConfig()


def test_the_controller_prices_with_the_same_policy() -> None:
    class NoSource:
        def collect(self, now: float) -> list[object]:
            return []

    c = Controller(CONFIG, source=NoSource(), actuator=DryRunActuator())  # type: ignore[arg-type]
    assert c._policy("code") == policy_config(CONFIG, "code")
    assert c.estimator.config == estimator_config(CONFIG)


def test_no_command_builds_the_configs_itself() -> None:
    """PolicyConfig(...) and EstimatorConfig(...) are called only by the two builders."""
    root = Path(__file__).resolve().parents[2] / "specwise"
    for path in (
        root / "controller" / "loop.py",
        root / "commands" / "recommend.py",
        root / "commands" / "report.py",
    ):
        calls = {
            n.func.id
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        assert not calls & {"PolicyConfig", "EstimatorConfig"}, path
