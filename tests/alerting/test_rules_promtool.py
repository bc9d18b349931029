"""`specwise rules` and the generated file on the real tool: promtool check/test rules (2.42)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from specwise.alerting.rules import ALERT_NAMES
from specwise.cli import main

try:
    from tests import servers
except ImportError:  # tests/ is not a package
    import servers  # type: ignore[no-redef]

CONFIG = Path(__file__).resolve().parents[2] / "config"


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    promtool = servers.require_binary("promtool")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def test_committed_rules_file_is_the_generators_output(tmp_path: Path) -> None:
    out = tmp_path / "rules.yml"
    assert main(["rules", "--output", str(out)]) == 0
    assert out.read_text() == (CONFIG / "specwise-rules.yml").read_text(), (
        "config/specwise-rules.yml is out of date: run "
        "`specwise rules --output config/specwise-rules.yml`"
    )


def test_promtool_check_rules_on_the_committed_file() -> None:
    result = _promtool("check", "rules", str(CONFIG / "specwise-rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {7 + len(ALERT_NAMES)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "specwise-rules.test.yml", cwd=CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_overridden_rules_still_pass_promtool(tmp_path: Path) -> None:
    out = tmp_path / "rules.yml"
    args = ["rules", "-o", str(out), "--class-label", "model_name", "--class-label", "namespace"]
    args += ["--rate-window", "1m", "--not-paying-for", "30s", "--speedup-below", "0.95"]
    args += ["--runbook-base", "https://wiki.example.com/runbook", "--not-paying-severity", "info"]
    assert main(args) == 0
    text = out.read_text()
    assert "model_name_namespace_position:specwise_vllm_survival:ratio_rate1m" in text
    assert "by (model_name, namespace)" in text
    assert "https://wiki.example.com/runbook#specdecodenotpayingoff" in text
    result = _promtool("check", "rules", str(out))
    assert result.returncode == 0, result.stdout + result.stderr


def test_json_lists_rule_names_and_exprs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "--json", "--k-mismatch-for", "6h"]) == 0
    doc = json.loads(capsys.readouterr().out)
    alerts = {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}
    assert tuple(alerts) == ALERT_NAMES
    assert alerts["SpecDecodeKMismatch"]["for"] == "6h"
    assert alerts["SpecDecodeKMismatch"]["expr"] == "specwise_recommended_k != specwise_deployed_k"


def test_rules_reads_the_config_alerts_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[source]\nurls = ["http://127.0.0.1:8000/metrics"]\ngroup_by = ["job"]\n'
        '[alerts]\nnot_paying_for = "45m"\n'
    )
    assert main(["rules", "--config", str(cfg), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert rules[0]["record"] == "job:specwise_vllm_drafts:rate5m"
    assert next(r for r in rules if r.get("alert") == "SpecDecodeNotPayingOff")["for"] == "45m"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--not-paying-for", "soon"], "Error: --not-paying-for = 'soon' is not a duration"),
        (["--class-label", "model-name"], "Error: --class-label 'model-name' is not"),
        (["--runbook-base", "wiki/runbook"], "Error: --runbook-base 'wiki/runbook' must start"),
    ],
)
def test_bad_options_are_one_error_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rules", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert err.count("\n") == 1
