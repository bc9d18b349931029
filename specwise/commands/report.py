"""``specwise report``: compare two windows per workload class and write a report folder."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click
import requests

from specwise.collectors.classes import ClassConfig, resolve_classes
from specwise.collectors.prometheus import PrometheusClient, PrometheusSource
from specwise.collectors.snapshot import CounterDelta
from specwise.commands.options import estimation_options, json_option
from specwise.config import SpecwiseConfig, load_config, parse_duration
from specwise.errors import ReportError
from specwise.estimation.estimator import EstimatorConfig
from specwise.estimation.settings import estimator_config
from specwise.output import to_json
from specwise.policies import PolicyConfig, drafter_cost
from specwise.policies.settings import policy_config
from specwise.reporting.report import WindowInfo, build_report
from specwise.reporting.windows import (
    AlphaSeries,
    TimeRange,
    alpha_frame,
    auto_step,
    capped_rate_window,
    file_window,
    load_subwindows,
    parse_range,
    prometheus_window,
    series_from_frame,
    snapshots_frame,
    window_grid,
)

__all__ = ["parse_costs", "report_command"]


def parse_costs(values: Sequence[str], *, option: str) -> tuple[float | None, dict[str, float]]:
    """``--cost`` values: ``0.05``, ``eagle3`` (every class) or ``CLASS=COST`` (one class)."""
    default: float | None = None
    per_class: dict[str, float] = {}
    for v in values:
        name, sep, value = v.rpartition("=")
        if sep:
            per_class[name.strip()] = drafter_cost(value)
        else:
            if default is not None:
                raise click.BadParameter(
                    f"two default costs ({default:g} and {v}); give one, or CLASS=COST",
                    param_hint=option,
                )
            default = drafter_cost(value)
    return default, per_class


def _progress(label: str) -> Callable[[int, int, str], None]:
    def show(done: int, total: int, what: str) -> None:
        if total > 1:
            click.echo(f"{label}: chunk {done}/{total} ({what})", err=True)

    return show


@click.command(
    "report",
    epilog="""\b
Examples:
  specwise report --prometheus http://prom:9090 --before -60d..-30d --after -30d..now \\
      --before-cost 0.3 --after-cost eagle3 --out drafter-upgrade
  specwise report --prometheus http://prom:9090 \\
      --before 2026-04-01T00:00:00Z..2026-04-15T00:00:00Z --after -14d.. --cost 0.05
  specwise report --before old-start.txt --before old-end.txt \\
      --after new-start.txt --after new-end.txt --cost ngram --out k4-vs-k6
  specwise report --before vllm-old.log --after vllm-new.log --cost ngram --force

\b
Times: RFC 3339 (2026-05-01T00:00:00Z), Unix seconds (1777593600), now, or relative to
now (-30d, -12h, -90m; units ms s m h d w). A window is START..END; an empty END is now.
Files: a vLLM log (its SpecDecoding lines), one /metrics capture (counts since the server
started) or two captures (window start and end) per window.
""",
)
@click.option("--prometheus", default=None, help="Prometheus base URL (default: none: files).")
@click.option(
    "--before",
    multiple=True,
    required=True,
    help="The first window: START..END with --prometheus, else one log or capture file, or "
    "two captures (repeat the option).",
)
@click.option("--after", multiple=True, required=True, help="The second window, as --before.")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("specwise-report"),
    show_default=True,
    help="Report folder to write (report.md, report.html, report.json, PNGs, data/*.csv).",
)
@click.option("--force", is_flag=True, help="Replace an existing report folder (default: refuse).")
@click.option(
    "--cost",
    "costs",
    multiple=True,
    help="Draft cost c for both windows: a number, a method (ngram, eagle3, draft_model...) "
    "or CLASS=COST; repeatable. Default: per class from --config, else 0.05.",
)
@click.option(
    "--before-cost",
    "before_costs",
    multiple=True,
    help="Draft cost in the before window (overrides --cost; same forms; default: --cost).",
)
@click.option(
    "--after-cost",
    "after_costs",
    multiple=True,
    help="Draft cost in the after window (overrides --cost; same forms; default: --cost).",
)
@estimation_options
@click.option(
    "--step",
    default="auto",
    show_default=True,
    help="Alpha-over-time resolution with --prometheus (15s, 1m...; auto: about 1500 points "
    "per window, at least 15s). Long ranges are fetched in chunks of <= 11,000 points.",
)
@click.option(
    "--rate-window",
    default="auto",
    show_default=True,
    help="increase() window of each alpha-over-time point (auto: max(step, 5m)); capped at "
    "the window, so the last point covers the window the table's alpha comes from.",
)
@click.option("--timeout", type=float, default=60.0, show_default=True, help="HTTP timeout (s).")
@json_option
def report_command(
    prometheus: str | None,
    before: tuple[str, ...],
    after: tuple[str, ...],
    out: Path,
    force: bool,
    costs: tuple[str, ...],
    before_costs: tuple[str, ...],
    after_costs: tuple[str, ...],
    config_path: Path | None,
    k_max: int | None,
    verify_slope: float | None,
    min_drafts: float | None,
    k_hint: int | None,
    step: str,
    rate_window: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Compare two windows per workload class (e.g. before and after a drafter upgrade).

    Per class and window: alpha with its interval, mean acceptance length, survival and
    conditional acceptance, shortfall, optimal k, predicted speedup at the deployed and the
    optimal k, and measured inter-token latency where vLLM exports it; then the alpha change
    with its uncertainty and a verdict line. Writes the folder atomically and prints the
    verdicts (--json: report.json).
    """
    if out.exists() and not force:
        raise ReportError(f"{out} exists; pass --force to replace it or choose another folder")
    cfg = load_config(config_path) if config_path is not None else None
    classes, est_cfg = _classes_and_estimator(cfg, min_drafts)
    base_default, base_per = parse_costs(costs, option="--cost")
    policies = []
    for flag, values in (("--before-cost", before_costs), ("--after-cost", after_costs)):
        d, per = parse_costs(values, option=flag)
        policies.append(
            _policy_for(cfg, d if d is not None else base_default, {**base_per, **per},
                        k_max=k_max, verify_slope=verify_slope)
        )  # fmt: skip
    now = time.time()
    if prometheus is not None:
        b_deltas, a_deltas, b_info, a_info = _from_prometheus(
            prometheus, before, after, now=now, classes=classes, step=step,
            rate_window=rate_window, timeout=timeout,
        )  # fmt: skip
    else:
        b_deltas, a_deltas, b_info, a_info = _from_files(before, after, now=now, classes=classes)
    slope = verify_slope
    if slope is None and cfg is not None and cfg.policy.verify_slope > 0:
        slope = cfg.policy.verify_slope
    report = build_report(
        b_deltas,
        a_deltas,
        before=_with_cost(b_info, before_costs or costs),
        after=_with_cost(a_info, after_costs or costs),
        classes=classes,
        before_policy=policies[0],
        after_policy=policies[1],
        estimator=est_cfg,
        created=now,
        k=k_hint,
        k_max=k_max if k_max is not None else (cfg.policy.k_max if cfg else 8),
        verify_slope=slope,
    )
    from specwise.reporting.render import report_to_dict, write_report  # matplotlib: load late

    path = write_report(report, out, force=force)
    if as_json:
        click.echo(to_json(report_to_dict(report)))
        return
    for line in report.verdicts:
        click.echo(line)
    for note in report.notes:
        if note.startswith("both windows count"):
            click.echo(f"Note: {note}", err=True)
    if not (costs or before_costs or after_costs) and cfg is None:
        click.echo(
            "Note: no draft cost given, 0.05 (an EAGLE-style head) assumed for every class; "
            "pass --cost (e.g. --cost ngram) for other drafters",
            err=True,
        )
    click.echo(f"Report written to {path}/ (report.md, report.html, report.json, PNGs, data/*.csv)")


def _with_cost(info: WindowInfo, costs: Sequence[str]) -> WindowInfo:
    return dataclasses.replace(info, cost=", ".join(costs))


def _classes_and_estimator(
    cfg: SpecwiseConfig | None, min_drafts: float | None
) -> tuple[ClassConfig, EstimatorConfig]:
    classes = resolve_classes(cfg) if cfg is not None else ClassConfig()
    return classes, estimator_config(cfg, min_drafts=min_drafts)


def _policy_for(
    cfg: SpecwiseConfig | None,
    default_cost: float | None,
    per_class: dict[str, float],
    *,
    k_max: int | None,
    verify_slope: float | None,
) -> Callable[[str], PolicyConfig]:
    def policy_for(name: str) -> PolicyConfig:
        return policy_config(
            cfg,
            name,
            cost=per_class.get(name, default_cost),
            k_max=k_max,
            verify_slope=verify_slope,
        )

    return policy_for


def _one(values: Sequence[str], flag: str) -> str:
    if len(values) != 1:
        raise click.UsageError(f"with --prometheus give {flag} once, as START..END")
    return values[0]


def _from_prometheus(
    url: str,
    before: Sequence[str],
    after: Sequence[str],
    *,
    now: float,
    classes: ClassConfig,
    step: str,
    rate_window: str,
    timeout: float,
) -> tuple[list[CounterDelta], list[CounterDelta], WindowInfo, WindowInfo]:
    ranges = [parse_range(_one(before, "--before"), now=now)]
    ranges.append(parse_range(_one(after, "--after"), now=now))
    out: list[tuple[list[CounterDelta], WindowInfo]] = []
    loads: list[list[CounterDelta]] = []
    with requests.Session() as session:
        client = PrometheusClient(url, session=session, timeout=timeout)
        source = PrometheusSource(client, classes=classes)
        for label, rng in zip(("before", "after"), ranges, strict=True):
            sent = client.requests_sent
            deltas = prometheus_window(source, rng)
            loads.append(load_subwindows(source, rng, progress=_progress(f"{label} window, load")))
            warnings = tuple(dict.fromkeys(source.warnings))
            st = auto_step(rng) if step == "auto" else parse_duration(step, field="--step")
            rw = capped_rate_window(
                None
                if rate_window == "auto"
                else parse_duration(rate_window, field="--rate-window"),
                step=st,
                window=rng,
            )
            frame = alpha_frame(
                source, rng, step=st, rate_window=rw, progress=_progress(f"{label} window")
            )
            series = {
                name: dataclasses.replace(s, rate_window=rw)
                for name, s in series_from_frame(frame, grid=window_grid(rng, step=st)).items()
            }
            notes = tuple(f"server warning: {w}" for w in warnings)
            sent = client.requests_sent - sent
            info = _info(label, url, rng, series, sent, notes)
            out.append((deltas, dataclasses.replace(info, frame=frame)))
    return (
        out[0][0],
        out[1][0],
        dataclasses.replace(out[0][1], load_deltas=tuple(loads[0])),
        dataclasses.replace(out[1][1], load_deltas=tuple(loads[1])),
    )


def _info(
    label: str,
    source: str,
    rng: TimeRange,
    series: dict[str, AlphaSeries],
    requests_sent: int,
    notes: tuple[str, ...],
) -> WindowInfo:
    return WindowInfo(label, source, rng.start, rng.end, "", series, requests_sent, notes)


def _from_files(
    before: Sequence[str], after: Sequence[str], *, now: float, classes: ClassConfig
) -> tuple[list[CounterDelta], list[CounterDelta], WindowInfo, WindowInfo]:
    out = []
    for label, values in (("before", before), ("after", after)):
        paths = [Path(v) for v in values]
        if any(".." in v and not Path(v).exists() for v in values):
            raise click.UsageError(f"--{label} START..END needs --prometheus URL")
        deltas, snaps = file_window(paths, now=now)
        frame = snapshots_frame(snaps, classes=classes) if snaps else None
        series = series_from_frame(frame) if frame is not None else {}
        start = min((s.timestamp for s in snaps), default=None)
        end = max((s.timestamp for s in snaps), default=None)
        info = WindowInfo(label, " + ".join(values), start, end, "", series, frame=frame)
        out.append((deltas, info))
    return out[0][0], out[1][0], out[0][1], out[1][1]
