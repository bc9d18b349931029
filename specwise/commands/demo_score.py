"""What the demo's controller gained, measured on the simulated fleet.

The live fleet keeps the ground truth of what it delivered (tokens in expectation, and the
tokens plain decoding would have delivered over the same seconds: for a load-varying class
the integral of B / T(0, B)). The same scenario, cut to the simulated time the demo ran, is
run closed-loop (:mod:`specwise.sim.closed_loop`) with the configuration it started from,
never changed, and with the best static k in hindsight (knowing the whole run in advance);
the three are compared per class and in all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from specwise.output import format_table
from specwise.sim.closed_loop import RunResult, best_static_k, run_config
from specwise.sim.fleet import SimEngine, SimFleet
from specwise.sim.scenarios import Scenario

__all__ = ["DemoScore", "ScoreRow", "demo_score", "score_lines"]


@dataclass(frozen=True)
class ScoreRow:
    """Tokens per plain-decoding token over the run (1.0 = no speculation), per strategy."""

    name: str
    specwise: float
    start: float
    best_static: float
    start_config: str
    best_config: str
    load_varying: bool = False


@dataclass(frozen=True)
class DemoScore:
    minutes: float
    classes: tuple[ScoreRow, ...]
    total: ScoreRow


def _engine_score(engines: Sequence[SimEngine]) -> float:
    tokens = sum(e.stats.expected_tokens for e in engines)
    slots = sum(
        e.stats.plain_tokens
        if e.spec.batch is not None
        else e.spec.load(0.0) * e.stats.target_seconds
        for e in engines
    )
    return tokens / slots if slots > 0 else 1.0


def _config_text(result: RunResult, name: str | None = None) -> str:
    return "; ".join(f"{n}: {c.describe()}" for n, c in result.configs if name is None or n == name)


def demo_score(fleet: SimFleet, scenario: Scenario, *, seconds: float, seed: int = 0) -> DemoScore:
    """Score the live fleet after ``seconds`` of simulated time against closed-loop runs of
    the same scenario over the same time: the starting configuration and the best static k."""
    cut = dataclasses.replace(scenario, duration=max(seconds, 60.0))
    rows = []
    for spec in cut.classes:
        one = dataclasses.replace(cut, classes=(spec,))
        start = run_config(one, spec.initial_config, seed=seed, label="start")
        best = best_static_k(one, seed=seed)
        rows.append(
            ScoreRow(
                spec.name,
                _engine_score(fleet.engines_of(spec.name)),
                start.tokens_per_target_time,
                best.tokens_per_target_time,
                spec.initial_config.describe(),
                _config_text(best, spec.name).split(": ", 1)[-1],
                load_varying=spec.batch is not None,
            )
        )
    start_all = run_config(cut, {c.name: c.initial_config for c in cut.classes}, seed=seed)
    best_all = best_static_k(cut, seed=seed)
    total = ScoreRow(
        "all classes",
        _engine_score([e for c in cut.classes for e in fleet.engines_of(c.name)]),
        start_all.tokens_per_target_time,
        best_all.tokens_per_target_time,
        "",
        "",
    )
    return DemoScore(cut.duration / 60.0, tuple(rows), total)


def _gain(a: float, b: float) -> str:
    return f"{a / b - 1.0:+.1%}" if b > 0 else "-"


def score_lines(score: DemoScore) -> list[str]:
    """The demo's closing lines: a table, then what specwise gained in one sentence."""
    rows = [
        [
            r.name + (" (load-varying)" if r.load_varying else ""),
            f"{r.specwise:.2f}x",
            f"{r.start:.2f}x ({r.start_config})",
            f"{r.best_static:.2f}x ({r.best_config})",
        ]
        for r in score.classes
    ]
    t = score.total
    rows.append([t.name, f"{t.specwise:.2f}x", f"{t.start:.2f}x", f"{t.best_static:.2f}x"])
    lines = [
        f"--- what specwise gained over {score.minutes:.0f} simulated minutes "
        "(tokens over plain decoding's, on the simulated fleet) ---",
        format_table(["class", "specwise", "starting configuration", "best static k"], rows),
    ]
    for r in score.classes:
        if r.load_varying:
            lines.append(
                f"{r.name} (its load moves between quiet and busy): specwise {r.specwise:.2f}x, "
                f"{_gain(r.specwise, r.start)} over its starting {r.start_config} and "
                f"{_gain(r.specwise, r.best_static)} against the best static k "
                f"({r.best_config})."
            )
    lines.append(
        f"specwise delivered {_gain(t.specwise, t.start)} tokens over the configuration it "
        f"started from and {_gain(t.specwise, t.best_static)} against the best static k, "
        "which knows the whole run in advance (closed-loop runs of the same scenario)."
    )
    return lines
