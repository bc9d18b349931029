"""config/grafana-dashboard.json: every query parses on a real Prometheus and names only
metrics that exist (the controller's METRIC_NAMES, vLLM's spec-decode counters, the
recording rules of ``specwise rules``, and Prometheus' ALERTS)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from specwise.alerting.rules import RecordingRule, build_rules
from specwise.config import AlertSettings
from specwise.controller.exporter import METRIC_NAMES

try:
    from tests import servers
except ImportError:  # tests/ is not a package
    import servers  # type: ignore[no-redef]

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana-dashboard.json"
VLLM_COUNTERS = tuple(
    f"vllm{sep}spec_decode_{c}_total"
    for sep in ":_"
    for c in (
        "num_drafts",
        "num_draft_tokens",
        "num_accepted_tokens",
        "num_accepted_tokens_per_pos",
    )
)
KNOWN = (
    set(METRIC_NAMES)
    | set(VLLM_COUNTERS)
    | {
        r.record
        for g in build_rules(AlertSettings())
        for r in g.rules
        if isinstance(r, RecordingRule)
    }
    | {"ALERTS"}
)
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
KEYWORDS |= {"and", "or", "unless", "inf", "nan", "atan2"}
VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$class": ".*", "$model_name": ".*"}


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _queries() -> Iterator[tuple[str, str]]:
    dash = _dashboard()
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.*), (\w+)\)", var["query"]["query"])
            assert m, var["query"]
            yield f"variable {var['name']}", m.group(1)


def _expand(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def _metric_names(expr: str) -> tuple[set[str], set[str]]:
    """(bare metric names, ``__name__`` regexes) used by a PromQL expression."""
    regexes = set(re.findall(r'__name__=~"([^"]+)"', expr))
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\boffset\s+\w+", "", text)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        after = text[m.end() :].lstrip()
        if after.startswith("(") or m.group(0) in KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(m.group(0))
    return names, regexes


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    dash = _dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = "\n".join(e for _, e in _queries())
    for needed in (
        "specwise_alpha_lower_ratio",  # alpha per class with its interval
        "accepted_tokens_per_pos",  # survival per position from vLLM's counters
        "specwise_survival_ratio",
        "specwise_recommended_k",
        "specwise_deployed_k",
        "specwise_predicted_speedup_ratio",
        "ALERTS",
        # the cost side (#14): measured vs predicted, per band, the load, the fitted costs
        "specwise_measured_speedup_ratio",
        "specwise_measured_speedup_lower_ratio",
        "specwise_band_measured_speedup_ratio",
        "specwise_band_predicted_speedup_ratio",
        "specwise_band_k",
        "specwise_batch_size",
        "specwise_step_cost_seconds",
        "specwise_implied_draft_cost_ratio",
        "specwise_load_aware",
    ):
        assert needed in exprs, needed
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["description"]


@pytest.mark.parametrize(("where", "expr"), list(_queries()))
def test_queries_name_only_existing_metrics(where: str, expr: str) -> None:
    names, regexes = _metric_names(_expand(expr))
    assert names <= KNOWN, f"{where}: unknown metric(s) {sorted(names - KNOWN)}"
    for rx in regexes:
        matched = [n for n in VLLM_COUNTERS if re.fullmatch(rx, n)]
        assert len({n.replace(":", "_") for n in matched}) == 1
        assert len(matched) == 2, f"{where}: {rx!r} must match both spellings of one counter"
    assert names or regexes, f"{where}: no metric at all"


def test_metric_name_extraction() -> None:
    names, regexes = _metric_names(
        'sum by (model_name) (rate({__name__=~"vllm[:_]x_total", a="b"}[5m])) / on (a) '
        "group_left () (foo:bar:rate5m > 0) and ignoring (k) specwise_stale offset 1h"
    )
    assert names == {"foo:bar:rate5m", "specwise_stale"}
    assert regexes == {"vllm[:_]x_total"}


def test_every_query_parses_on_a_real_prometheus(
    start_prometheus: Callable[..., servers.ManagedProcess],
) -> None:
    prom = start_prometheus()
    with requests.Session() as session:
        for where, expr in _queries():
            r = session.get(
                f"{prom.base_url}/api/v1/query", params={"query": _expand(expr)}, timeout=10
            )
            body = r.json()
            assert r.status_code == 200, f"{where}: {body.get('error')}\n{expr}"
            assert body["status"] == "success"


def test_survival_positions_are_0_based_like_vllm_everywhere() -> None:
    """One convention per family: vLLM's per-position counter, the recording rules, the
    controller's specwise_survival_ratio and both dashboard panels count positions from 0
    (position 0 = s1), and the HELP text and panel descriptions say so."""
    from prometheus_client import CollectorRegistry

    from specwise.controller.exporter import ControllerCollector
    from specwise.controller.state import ClassStatus, ControllerState

    state = ControllerState(
        started_at=0.0,
        updated_at=1.0,
        ticks=1,
        classes=(ClassStatus("code", 0.05, 3, 3, survival=(0.8, 0.5, 0.2)),),
    )
    registry = CollectorRegistry()
    registry.register(ControllerCollector(lambda: state))
    for position, s in (("0", 0.8), ("1", 0.5), ("2", 0.2), ("3", None)):
        got = registry.get_sample_value(
            "specwise_survival_ratio", {"class": "code", "position": position}
        )
        assert got == s, (position, got)
    (family,) = [m for m in registry.collect() if m.name == "specwise_survival_ratio"]
    assert "0-based" in family.documentation
    assert "0 = s_1" in family.documentation

    survival_panels = [
        p
        for p in _dashboard()["panels"]
        if any("survival" in t["expr"] or "per_pos" in t["expr"] for t in p.get("targets", []))
    ]
    assert len(survival_panels) == 2
    for panel in survival_panels:
        assert "pos 0 = s1" in panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["legendFormat"].endswith(" pos {{position}}"), panel["title"]
    rules = {r.record: r.expr for g in build_rules(AlertSettings()) for r in g.rules
             if isinstance(r, RecordingRule)}  # fmt: skip
    per_pos = [e for n, e in rules.items() if n.endswith("accepted_tokens_per_pos:rate5m")]
    assert per_pos
    assert all("position" in e and "+ 1" not in e and "- 1" not in e for e in per_pos)
    runbook = (DASHBOARD.parents[1] / "docs" / "runbook.md").read_text()
    assert "Positions are 0-based everywhere" in runbook
