"""One classification, in one place: `run`, `recommend` and `report` through a real
Prometheus, and `run` through direct scrape, name the same classes for the same config.

Two served engines (model_name "code" at alpha 0.82 and "chat" at alpha 0.55) are scraped
every second. Each config (declared `match` classes, `group_by` classes, a mix, declared
classes without `match` under a non-default `group_by`) must give the same class names
everywhere, each with the right engine's counters (told apart by alpha), and no unnamed
class ("" or "/") holding the counters.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from specwise.cli import main
from specwise.collectors.classes import ClassConfig, Matcher, WorkloadClass
from specwise.config import load_config
from specwise.controller.wiring import build_controller
from specwise.sim.scenarios import ClassScenario, Scenario, const, iid

try:
    from tests.served_fleet import ServedFleet, served_fleet
    from tests.servers import ManagedProcess
except ImportError:
    from served_fleet import ServedFleet, served_fleet  # type: ignore[no-redef]
    from servers import ManagedProcess  # type: ignore[no-redef]

pytestmark = pytest.mark.slow

TRUE_ALPHA = {"code": 0.82, "chat": 0.55}
SCENARIO = Scenario(
    "two-models",
    "code and chat, one engine each",
    3600.0,
    (
        ClassScenario("code", iid(const(TRUE_ALPHA["code"])), cost=0.05, initial_k=4),
        ClassScenario("chat", iid(const(TRUE_ALPHA["chat"])), cost=0.05, initial_k=3),
    ),
)

#: config body -> {expected class name: the served model it holds}
CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "declared": (
        """
[[classes]]
name = "code"
match = '{model_name="code"}'
[[classes]]
name = "chat"
match = '{model_name="chat"}'
""",
        {"code": "code", "chat": "chat"},
    ),
    "group_by": (
        """
[source]
group_by = ["model_name", "engine"]
""",
        {"code/0": "code", "chat/0": "chat"},
    ),
    "mix": (
        """
[source]
group_by = ["model_name", "engine"]
[[classes]]
name = "coding"
match = '{model_name=~"co.*"}'
""",
        {"coding": "code", "chat/0": "chat"},
    ),
    "declared-without-match": (
        """
[source]
group_by = ["model_name", "engine"]
[[classes]]
name = "code"
[[classes]]
name = "assistant"
match = '{model_name="chat"}'
""",
        {"code": "code", "assistant": "chat"},
    ),
}


def _write(tmp_path: Path, name: str, body: str, source: str) -> Path:
    sections = {"[source]": source, "[estimator]": 'min_drafts = 100\nwindow = "1m"'}
    text = body
    for head, extra in sections.items():
        if head in text:
            text = text.replace(head, f"{head}\n{extra}", 1)
        else:
            text = f"{head}\n{extra}\n{text}"
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def _alphas_run(config: Path, served: ServedFleet) -> dict[str, float]:
    """Each class's alpha from a fresh controller's first tick. On a busy machine a scrape
    can time out (900 ms), and Prometheus then marks that target's series stale for the
    instant the tick reads: such a tick is tried again with a fresh controller after the
    next complete scrape (at most 5 times), as the next tick of a real controller would."""
    cfg = load_config(config)
    got: dict[str, float | None] = {}
    for _attempt in range(5):
        with requests.Session() as session:
            controller = build_controller(cfg, session=session)
            state = controller.step(time.time())
        got = {c.name: c.alpha for c in state.classes}
        if got and all(a is not None for a in got.values()):
            break
        served.wait_scraped(time.time(), timeout=40)
    assert got, "the controller saw no class"
    assert all(a is not None for a in got.values()), got
    return {n: float(a) for n, a in got.items() if a is not None}


def _cli_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> Any:
    capsys.readouterr()
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 0, err
    return json.loads(out)


def _check(where: str, got: dict[str, float], expected: dict[str, str]) -> None:
    assert set(got) == set(expected), f"{where}: classes {sorted(got)} != {sorted(expected)}"
    for name, model in expected.items():
        assert got[name] == pytest.approx(TRUE_ALPHA[model], abs=0.05), f"{where}: {name}"


def test_run_recommend_and_report_agree_on_classes(
    start_prometheus: Callable[..., ManagedProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with served_fleet(SCENARIO, start_prometheus) as served:
        # both report windows need samples: let ten seconds of scrapes accumulate
        start = time.time()
        served.wait_scraped(start + 10, timeout=40)
        for name, (body, expected) in CONFIGS.items():
            _one_config(served, tmp_path, capsys, name, body, expected)


def _one_config(
    served: ServedFleet,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    body: str,
    expected: dict[str, str],
) -> None:
    prom = _write(
        tmp_path,
        f"{name}-prom",
        body,
        f'kind = "prometheus"\nurl = "{served.prom_url}"\nwindow = "8s"',
    )
    urls = ", ".join(f'"{u}"' for u in served.server.urls)
    scrape = _write(tmp_path, f"{name}-scrape", body, f"urls = [{urls}]")

    _check(f"{name}: run via Prometheus", _alphas_run(prom, served), expected)
    _check(f"{name}: run via scrape", _alphas_run(scrape, served), expected)

    rec = _cli_json(
        capsys,
        [
            "recommend",
            "--prometheus",
            served.prom_url,
            "--window",
            "8s",
            "--config",
            str(prom),
            "--json",
        ],
    )
    _check(f"{name}: recommend --prometheus", {a["class"]: a["alpha"] for a in rec}, expected)
    urls = [arg for u in served.server.urls for arg in ("--url", u)]
    rec = _cli_json(capsys, ["recommend", *urls, "--config", str(prom), "--json"])
    _check(f"{name}: recommend --url", {a["class"]: a["alpha"] for a in rec}, expected)

    report = _cli_json(
        capsys,
        [
            "report",
            "--prometheus",
            served.prom_url,
            "--before=-10s..-5s",
            "--after=-5s..now",
            "--step",
            "1s",
            "--rate-window",
            "3s",
            "--config",
            str(prom),
            "--out",
            str(tmp_path / f"report-{name}"),
            "--json",
        ],
    )
    for window in ("before", "after"):
        got = {c["class"]: c[window]["alpha"] for c in report["classes"] if c[window]}
        _check(f"{name}: report {window}", got, expected)


def test_resolver_gives_a_class_without_match_its_model_name(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[source]\nurls = ["http://127.0.0.1:1/metrics"]\ngroup_by = ["job"]\n'
        '[[classes]]\nname = "code"\n'
        '[[classes]]\nname = "chat"\nmatch = \'{model_name=~"chat|assistant"}\'\n'
    )
    from specwise.collectors.classes import resolve_classes

    classes = resolve_classes(load_config(path))
    assert classes == ClassConfig(
        classes=(
            WorkloadClass("code", (Matcher("model_name", "=", "code"),)),
            WorkloadClass("chat", (Matcher("model_name", "=~", "chat|assistant"),)),
        ),
        group_by=("job",),
    )
    assert classes.classify({"model_name": "code", "job": "x"}) == {"class": "code"}
    assert classes.classify({"model_name": "other", "job": "x"}) == {"class": "x", "job": "x"}
