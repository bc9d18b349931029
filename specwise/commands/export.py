"""``specwise export``: the per-class series of a Prometheus range as CSV or Parquet."""

from __future__ import annotations

import time
from pathlib import Path

import click
import requests

from specwise.collectors.classes import ClassConfig, resolve_classes
from specwise.collectors.prometheus import PrometheusClient
from specwise.config import load_config, parse_duration
from specwise.errors import ReportError
from specwise.reporting.frames import (
    check_output,
    prometheus_counters,
    with_estimates,
    write_frame,
)
from specwise.reporting.windows import auto_step, parse_range

__all__ = ["export_command"]


def _seconds(text: str, option: str) -> float:
    value = parse_duration(text, field=option)
    if not value > 0:
        raise ReportError(f"{option} {text!r} must be longer than 0; write e.g. 15s or 1m")
    return value


@click.command(
    "export",
    epilog="""\b
Examples:
  specwise export --prometheus http://prom:9090 --range -7d..now --out series.csv
  specwise export --prometheus http://prom:9090 \\
      --range 2026-04-01T00:00:00Z..2026-05-01T00:00:00Z --step 1m --out april.parquet

\b
One row per class and step: time (UTC), class, k, the counters' increases over the rate
window (drafts, draft_tokens, accepted, accepted_pos_<i>, generation tokens, inter-token
latency), alpha with its interval and the mean acceptance length. In pandas:
  pd.read_csv("series.csv", parse_dates=["time"])
""",
)
@click.option("--prometheus", required=True, help="Prometheus base URL (required).")
@click.option(
    "--range",
    "window",
    required=True,
    help="START..END: RFC 3339, Unix seconds, now, or relative (-7d); an empty END is now.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="File to write: .csv, or .parquet (needs pip install specwise[parquet]).",
)
@click.option(
    "--step",
    default="auto",
    show_default=True,
    help="Time between rows (15s, 1m...; auto: about 1500 rows per class, at least 15s).",
)
@click.option(
    "--rate-window",
    default="auto",
    show_default=True,
    help="increase() window of each row (auto: max(step, 5m)).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="specwise TOML config for the class definitions (default: one class per model_name).",
)
@click.option("--force", is_flag=True, help="Replace an existing file (default: refuse).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="HTTP timeout (s).")
def export_command(
    prometheus: str,
    window: str,
    out: Path,
    step: str,
    rate_window: str,
    config_path: Path | None,
    force: bool,
    timeout: float,
) -> None:
    """Export the per-class spec-decode series of a Prometheus range to CSV or Parquet.

    Fetched in step-aligned chunks under the 11,000 points limit; counter resets, series that
    come and go and k changes are handled per row.
    """
    check_output(out)
    if not out.parent.is_dir():
        raise ReportError(f"folder {str(out.parent)!r} of --out does not exist; create it first")
    if out.exists() and not force:
        raise ReportError(f"{out} exists; pass --force to replace it or choose another name")
    rng = parse_range(window, now=time.time())
    st = auto_step(rng) if step == "auto" else _seconds(step, "--step")
    rw = None if rate_window == "auto" else _seconds(rate_window, "--rate-window")
    classes = resolve_classes(load_config(config_path)) if config_path else ClassConfig()

    def progress(done: int, total: int, what: str) -> None:
        if total > 1:
            click.echo(f"chunk {done}/{total} ({what})", err=True)

    with requests.Session() as session:
        client = PrometheusClient(prometheus, session=session, timeout=timeout)
        frame = prometheus_counters(
            client, rng.start, rng.end, step=st, rate_window=rw, classes=classes,
            progress=progress,
        )  # fmt: skip
    frame = with_estimates(frame)
    write_frame(frame, out)
    if frame.empty:
        click.echo(
            f"Note: no vLLM spec-decode counters in {window}; check the range, the URL and "
            "that vLLM ran with --speculative-config",
            err=True,
        )
    for w in frame.attrs.get("warnings", []):
        click.echo(f"Note: server warning: {w}", err=True)
    if frame.attrs.get("partial"):
        click.echo("Note: partial response: some stores did not answer (counts low)", err=True)
    n_classes = frame["class"].nunique()
    click.echo(
        f"Wrote {len(frame):,} rows ({n_classes} class{'es' if n_classes != 1 else ''}, "
        f"every {st:g} s) to {out}"
    )
