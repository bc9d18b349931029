"""``specwise recommend``: one-shot alpha and k per workload class from any source."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import requests

from specwise.collectors.classes import ClassConfig, resolve_classes
from specwise.collectors.deltas import (
    latest_per_series,
    since_start,
    sum_by_class,
    window_deltas,
)
from specwise.collectors.logs import LogSource
from specwise.collectors.prometheus import PrometheusClient, PrometheusSource
from specwise.collectors.scrape import FileSource, ScrapeSource
from specwise.collectors.snapshot import CounterDelta
from specwise.commands.options import estimation_options, json_option
from specwise.config import load_config, parse_duration
from specwise.errors import SourceError
from specwise.estimation.estimator import Estimate, EstimatorConfig, estimate_delta
from specwise.estimation.settings import estimator_config
from specwise.output import format_table, to_json
from specwise.policies import PolicyConfig, Recommendation, drafter_cost, recommend
from specwise.policies.settings import policy_config
from specwise.policies.speedup_policy import CONSTANT_COST_NOTE
from specwise.reporting.cost import CostSide, cost_lines, cost_side, sum_by_class_per_window
from specwise.reporting.windows import TimeRange, load_subwindows

__all__ = ["ClassAnswer", "recommend_command", "recommend_deltas", "since_start"]


@dataclass(frozen=True)
class ClassAnswer:
    """What ``specwise recommend`` reports for one class: the estimate, the recommendation
    and the cost side (measured speedup, fitted costs, batch sizes; ``load_aware`` False
    and the constant-cost note without latency families)."""

    estimate: Estimate
    recommendation: Recommendation
    cost_side: CostSide = field(default_factory=lambda: CostSide(False, CONSTANT_COST_NOTE))

    def to_dict(self) -> dict[str, Any]:
        e, r = self.estimate, self.recommendation
        config = r.config
        return {
            "class": e.class_name,
            "method": e.method,
            "alpha": e.alpha,
            "alpha_low": e.alpha_low,
            "alpha_high": e.alpha_high,
            "drafts": e.drafts,
            "mean_acceptance_length": e.mean_acceptance_length,
            "shortfall": e.shortfall,
            "survival": [[p.value, p.low, p.high] for p in e.survival],
            "conditional_acceptance": [p.value for p in e.conditional],
            "fit_ok": e.fit.ok,
            "fit_p_value": e.fit.p_value,
            "cost": r.cost,
            "current_k": r.current_k,
            "recommended_k": r.recommended_k,
            "optimal_k": r.optimal_k,
            "predicted_speedup_current": r.predicted_speedup_current,
            "predicted_speedup_recommended": r.predicted_speedup_recommended,
            "confidence": r.confidence,
            "priced_from": r.priced_from,
            "off_mode": r.off_mode,
            "off_cost": r.off_cost or None,
            "schedule": [list(s) for s in r.schedule] if r.schedule else None,
            "reason": r.reason,
            "notes": list(r.notes),
            # the cost side (#14): what to run, measured vs predicted, the fitted costs
            "configuration": None
            if config is None
            else {
                "k": config.k,
                "schedule": [list(x) for x in config.schedule] if config.schedule else None,
                "describe": config.describe(),
            },
            "load": self.cost_side.to_dict(r.load),
        }


def recommend_deltas(
    deltas: Sequence[CounterDelta],
    *,
    classes: ClassConfig,
    estimator: EstimatorConfig,
    policy_for: Callable[[str], PolicyConfig],
    now: float,
    k: int | None = None,
    current_k_for: Callable[[str], int | None] = lambda name: None,
    extra_load: Sequence[CounterDelta] = (),
) -> list[ClassAnswer]:
    """Sum series deltas per class, estimate each class and recommend its configuration.

    Speculative and load-only class deltas (replicas or periods without speculation) are
    summed apart; every one of a class feeds its cost side (the fitted T(k, B), the
    measured speedup, the batch sizes); ``extra_load`` replaces them by sub-windows (e.g. the
    sub-windows of a Prometheus range). A class without latency families is priced with
    the constant-cost model and says so.
    """
    by_class: dict[str, list[CounterDelta]] = {}
    for d in sum_by_class_per_window(extra_load, classes) if extra_load else ():
        by_class.setdefault(_class_name(d), []).append(d)
    windowed = set(by_class)  # classes whose cost side comes from the sub-windows
    summed = sum_by_class(deltas, classes)
    for d in summed:
        if _class_name(d) not in windowed:
            by_class.setdefault(_class_name(d), []).append(d)
    answers = []
    for d in summed:
        if not d.spec_families:
            continue  # a class without speculation: load only, nothing to estimate
        name = _class_name(d)
        e = estimate_delta(name, d, now=now, config=estimator, k=k)
        policy = policy_for(name)
        slope = policy.verify_cost
        side = cost_side(
            by_class[name],
            prior_cost=policy.cost,
            verify_slope=float(slope) if isinstance(slope, (int, float)) else 0.0,
            k=k,
            survival=[p.value for p in e.survival] or None,
        )
        r = recommend(e, config=policy, current_k=current_k_for(name), load=side.evidence)
        answers.append(ClassAnswer(e, r, side))
    return answers


def _class_name(d: CounterDelta) -> str:
    return d.labels.get("class", "") or "/".join(v for _, v in sorted(d.labels.items()))


def _curve(e: Estimate) -> str:
    return " ".join(f"{p.value:.2f}" for p in e.survival) or "-"


def _print_table(answers: Sequence[ClassAnswer]) -> None:
    rows = []
    for a in answers:
        e, r = a.estimate, a.recommendation
        alpha = (
            f"{e.alpha:.3f} [{e.alpha_low:.3f}, {e.alpha_high:.3f}]"
            if e.alpha is not None and e.alpha_low is not None and e.alpha_high is not None
            else "not enough data"
        )
        rows.append(
            [
                e.class_name,
                alpha,
                e.mean_acceptance_length,
                _curve(e),
                r.current_k,
                r.recommended_k
                if r.optimal_k in (None, r.recommended_k)
                else f"{r.recommended_k} (max {r.optimal_k})",
                f"{r.predicted_speedup_current:.2f}x" if r.predicted_speedup_current else None,
                f"{r.predicted_speedup_recommended:.2f}x"
                if r.predicted_speedup_recommended
                else None,
            ]
        )
    headers = ["class", "alpha [95%]", "mean acc. len", "survival s1..sk", "k now", "k rec."]
    headers += ["speedup now", "speedup rec."]
    click.echo(format_table(headers, rows))
    for a in answers:
        click.echo("")
        click.echo(f"{a.estimate.class_name}: {a.recommendation.reason}")
        if a.recommendation.off_mode:
            click.echo(f"  off = {a.recommendation.off_mode}: {a.recommendation.off_cost}")
        for line in cost_lines(a.cost_side, a.recommendation.load):
            click.echo(f"  {line}")


@click.command(
    "recommend",
    epilog="""\b
Examples:
  specwise recommend --url http://127.0.0.1:8000/metrics --cost ngram
  specwise recommend --url http://vllm:8000/metrics --interval 60 --cost 0.05
  specwise recommend --prometheus http://prom:9090 --window 1h --cost eagle3 --json
  specwise recommend --before before.txt --after after.txt --cost 0.3
  specwise recommend --after metrics.txt --cost 0        # since the server started
  specwise recommend --log vllm.log --cost ngram
""",
)
@click.option("--url", "urls", multiple=True, help="vLLM /metrics URL (repeatable; default: none).")
@click.option(
    "--interval",
    type=float,
    default=None,
    help="With --url: scrape twice this many seconds apart and use the difference "
    "(default: counters since each server started).",
)
@click.option("--prometheus", default=None, help="Prometheus base URL (default: none).")
@click.option(
    "--window",
    default="1h",
    show_default=True,
    help="With --prometheus: the increase() window (30m, 1h, 600s).",
)
@click.option(
    "--before",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Saved /metrics capture at the window's start (default: none).",
)
@click.option(
    "--after",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Saved /metrics capture at the window's end; alone: since the server started.",
)
@click.option(
    "--log",
    "log_path",
    default=None,
    help="vLLM log file with SpecDecoding lines, or - for stdin (default: none).",
)
@click.option(
    "--cost",
    default=None,
    help="Draft cost c (a number, or a method: ngram, eagle, eagle3, mtp, draft_model). "
    "Default: from --config per class, else 0.05.",
)
@estimation_options
@click.option("--timeout", type=float, default=5.0, show_default=True, help="HTTP timeout (s).")
@json_option
def recommend_command(
    urls: tuple[str, ...],
    interval: float | None,
    prometheus: str | None,
    window: str,
    before: Path | None,
    after: Path | None,
    log_path: str | None,
    cost: str | None,
    config_path: Path | None,
    k_max: int | None,
    verify_slope: float | None,
    min_drafts: float | None,
    k_hint: int | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Estimate alpha per workload class and recommend num_speculative_tokens (0 included).

    Prints per class: alpha with its 95% interval, vLLM's mean acceptance length, the
    measured survival curve, the current and recommended k, the predicted speedup at both
    and a one-line reason. Give exactly one source.
    """
    chosen = [bool(urls), prometheus is not None, after is not None, log_path is not None]
    if sum(chosen) != 1:
        raise click.UsageError(
            "give exactly one source: --url, --prometheus, --after (with optional --before) "
            "or --log"
        )
    if before is not None and after is None:
        raise click.UsageError("--before needs --after (the capture at the window's end)")
    cfg = load_config(config_path) if config_path is not None else None
    classes = resolve_classes(cfg) if cfg is not None else ClassConfig()
    est_cfg = estimator_config(cfg, min_drafts=min_drafts)
    default_cost = drafter_cost(cost) if cost is not None else None

    def policy_for(name: str) -> PolicyConfig:
        return policy_config(cfg, name, cost=default_cost, k_max=k_max, verify_slope=verify_slope)

    def current_k_for(name: str) -> int | None:
        settings = cfg.class_settings(name) if cfg is not None else None
        return settings.k if settings is not None else None

    now = time.time()
    deltas: list[CounterDelta]
    extra_load: list[CounterDelta] = []
    with requests.Session() as session:
        if urls:
            source = ScrapeSource(list(urls), session=session, timeout=timeout)
            first = source.collect(now)
            _warn(source.errors)
            if interval is None:
                deltas = [since_start(s) for s in first]
            else:
                if not 0 < interval <= 86400:  # also NaN; time.sleep rejects NaN and 1e300
                    raise click.BadParameter(
                        f"{interval:g} must be between 0 and 86400 seconds", param_hint="--interval"
                    )
                time.sleep(interval)
                now = time.time()
                deltas = window_deltas(first, source.collect(now))
                _warn(source.errors)
        elif prometheus is not None:
            window_s = parse_duration(window, field="--window")
            client = PrometheusClient(prometheus, session=session, timeout=max(timeout, 30.0))
            prom_source = PrometheusSource(client, classes=classes)
            deltas = prom_source.increase(now, window_s)
            # the cost side from sub-windows: the loads the window saw, not their average
            extra_load = load_subwindows(prom_source, TimeRange(now - window_s, now))
        elif after is not None:
            end = FileSource(after).collect(now)
            if before is None:
                deltas = [since_start(s) for s in end]
            else:
                start = FileSource(before, instance=str(after)).collect(now)
                deltas = window_deltas(start, end)
        else:
            assert log_path is not None
            snaps = LogSource(log_path, year=datetime.now(UTC).year).collect(now)
            deltas = [since_start(s) for s in latest_per_series(snaps)]
            if snaps:
                now = max(s.timestamp for s in snaps)
    if not any(d.spec_families for d in deltas):  # load-only engines run without speculation
        raise SourceError(
            "the source has no vLLM spec-decode counters (or no series in both captures); "
            "check that vLLM runs with --speculative-config and the window saw traffic"
        )
    answers = recommend_deltas(
        deltas,
        classes=classes,
        estimator=est_cfg,
        policy_for=policy_for,
        now=now,
        k=k_hint,
        current_k_for=current_k_for,
        extra_load=extra_load,
    )
    if as_json:
        click.echo(to_json([a.to_dict() for a in answers]))
        return
    _print_table(answers)


def _warn(errors: Sequence[SourceError]) -> None:
    for exc in errors:
        click.echo(f"Warning: {exc}", err=True)
