"""``specwise scrape``: read spec-decode counters from vLLM /metrics URLs or saved captures."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import click
import requests

from specwise.collectors.exposition import parse_exposition
from specwise.collectors.scrape import FileSource, ScrapeSource
from specwise.collectors.snapshot import Snapshot
from specwise.commands.options import json_option
from specwise.errors import SourceError, SpecwiseError
from specwise.output import format_table, to_json

__all__ = ["counter_problem", "scrape_command", "snapshot_row"]


def snapshot_row(s: Snapshot) -> dict[str, Any]:
    """The JSON object of one source series."""
    return {
        "labels": dict(s.labels),
        "drafts": s.drafts,
        "draft_tokens": s.draft_tokens,
        "accepted": s.accepted,
        "accepted_per_position": list(s.accepted_per_position),
        "k": s.k,
        "mean_acceptance_length": s.mean_acceptance_length,
        "generation": s.generation,
        "source": s.source,
        "notes": list(s.notes),
        # the load and time families (None where the page lacks them); spec_families is
        # False for an engine running without speculation (k = 0, spec counters 0)
        "spec_families": s.spec_families,
        "running_requests": s.running_requests,
        "generation_tokens": s.generation_tokens,
        "iteration_steps": s.iteration_steps,
        "iteration_tokens": s.iteration_tokens,
        "itl_seconds_sum": s.itl_seconds_sum,
        "itl_seconds_count": s.itl_seconds_count,
        "tpot_seconds_sum": s.tpot_seconds_sum,
        "tpot_seconds_count": s.tpot_seconds_count,
        "decode_seconds_sum": s.decode_seconds_sum,
        "decode_seconds_count": s.decode_seconds_count,
    }


def _has_load(s: Snapshot) -> bool:
    return any(
        v is not None
        for v in (s.running_requests, s.generation_tokens, s.iteration_steps, s.itl_seconds_count)
    )


def _mean_ms(total: float | None, count: float | None) -> str | None:
    if total is None or count is None or not count > 0:
        return None
    return f"{1000.0 * total / count:.2f}"


def _load_cells(s: Snapshot) -> list[object]:
    """running, engine steps, generation tokens, mean inter-token latency (ms)."""
    return [
        _num(s.running_requests),
        _num(s.iteration_steps),
        _num(s.generation_tokens),
        _mean_ms(s.itl_seconds_sum, s.itl_seconds_count),
    ]


def _num(value: float | None) -> object:
    """Counts print as integers; extrapolated or missing values keep their float form."""
    if value is not None and value == value and float(value).is_integer():
        return int(value)
    return value


def counter_problem(s: Snapshot) -> str:
    """Why the counters of one series cannot be vLLM's ("" when they can): NaN or infinite,
    negative, accepted above draft tokens, per-position counts rising, position 0 above
    drafts. ``recommend`` and the controller reject the same pages."""
    values: list[tuple[str, float | None]] = [
        ("drafts", s.drafts),
        ("draft tokens", s.draft_tokens),
        ("accepted tokens", s.accepted),
        *((f"accepted at position {i}", v) for i, v in enumerate(s.accepted_per_position)),
    ]
    for name, value in values:
        if value is None:
            continue
        if math.isnan(value):
            if s.generation == "v0" and name in ("draft tokens", "accepted tokens"):
                continue  # V0's token counters are not read (exposition notes say so)
            return f"{name} is NaN"
        if math.isinf(value) or value < 0:
            return f"{name} is {value:g}"
    if s.accepted > s.draft_tokens:
        return f"accepted tokens {s.accepted:g} exceed draft tokens {s.draft_tokens:g}"
    pos = s.accepted_per_position
    for i in range(1, len(pos)):
        if pos[i] > pos[i - 1]:
            before = pos[i - 1]
            return f"accepted at position {i} ({pos[i]:g}) exceeds position {i - 1} ({before:g})"
    if pos and s.drafts is not None and pos[0] > s.drafts:
        return f"accepted at position 0 ({pos[0]:g}) exceeds the drafts ({s.drafts:g})"
    return ""


def _read_target(
    target: str, session: requests.Session, timeout: float, now: float
) -> list[Snapshot]:
    if target == "-":
        text = sys.stdin.read()
        return parse_exposition(
            text, timestamp=now, source="<stdin>", extra_labels={"instance": "<stdin>"}
        )
    if target.startswith(("http://", "https://")):
        return ScrapeSource([target], session=session, timeout=timeout).collect(now)
    path = Path(target)
    if not path.exists():
        raise SourceError(
            f"Target {target!r} is neither an http(s) URL nor an existing file; give a "
            "/metrics URL such as http://127.0.0.1:8000/metrics or a saved capture.",
            url=target,
        )
    return FileSource(path).collect(now)


@click.command(
    "scrape",
    epilog="""\b
Examples:
  specwise scrape http://127.0.0.1:8000/metrics
  specwise scrape http://vllm-a:8000/metrics http://vllm-b:8000/metrics --json
  specwise scrape tests/fixtures/vllm/metrics-ngram-5-final.txt
  curl -s http://127.0.0.1:8000/metrics | specwise scrape -
""",
)
@click.argument("targets", nargs=-1, required=True, metavar="TARGET...")
@click.option(
    "--timeout",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds to wait for each URL.",
)
@json_option
def scrape_command(targets: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Read vLLM spec-decode counters from each TARGET (a /metrics URL, a saved capture
    file, or - for stdin) and print one row per engine series: drafts, draft tokens,
    accepted, per-position accepted counts, k and mean acceptance length (1 + A/D, since
    the server started), and where the page has them the load families: running requests,
    engine steps, generation tokens, mean inter-token latency (all since start). An engine
    without speculation shows its load families alone (k = 0, "spec off").

    URLs are scraped concurrently; a failing target is reported and the others still print.
    """
    if not (timeout > 0 and math.isfinite(timeout)):
        raise click.UsageError(f"--timeout {timeout:g} must be a finite number of seconds > 0")
    now = time.time()
    snapshots: list[Snapshot] = []
    failures: list[str] = []
    with requests.Session() as session:
        urls = [t for t in targets if t.startswith(("http://", "https://"))]
        results = (
            {r.target: r for r in ScrapeSource(urls, session=session, timeout=timeout).scrape(now)}
            if urls
            else {}
        )
        for target in targets:
            try:
                if target in results:
                    result = results[target]
                    if result.error is not None:
                        raise result.error
                    found = list(result.snapshots)
                else:
                    found = _read_target(target, session, timeout, now)
            except SpecwiseError as exc:
                failures.append(str(exc))
                continue
            if not any(s.spec_families for s in found):
                failures.append(
                    f"{target} has no vLLM spec-decode metrics: speculative decoding is off "
                    "there (start vLLM with --speculative-config) or its metrics are disabled."
                    + (" Its load families are shown (k = 0)." if found else "")
                )
            for snap in found:
                problem = counter_problem(snap)
                if problem:
                    labels = ",".join(f"{k}={v}" for k, v in sorted(snap.labels.items()))
                    failures.append(
                        f"{target} ({labels}): {problem}, which vLLM cannot produce; these "
                        "counters are left out (recommend rejects them too), check the page."
                    )
                else:
                    snapshots.append(snap)
    if as_json:
        click.echo(to_json([snapshot_row(s) for s in snapshots]))
    elif snapshots:
        load = any(_has_load(s) for s in snapshots)  # load columns only where present
        rows = [
            [
                ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())),
                _num(s.drafts) if s.spec_families else "spec off",
                _num(s.draft_tokens) if s.spec_families else None,
                _num(s.accepted) if s.spec_families else None,
                "/".join(f"{c:g}" for c in s.accepted_per_position) or None,
                s.k,
                s.mean_acceptance_length,
                *(_load_cells(s) if load else []),
            ]
            for s in snapshots
        ]
        headers = ["labels", "drafts", "draft tokens", "accepted", "per position", "k",
                   "mean acc. length"]  # fmt: skip
        if load:
            headers += ["running", "engine steps", "gen. tokens", "mean ITL ms"]
        click.echo(format_table(headers, rows))
        for note in dict.fromkeys(n for s in snapshots for n in s.notes):
            click.echo(f"Note: {note}")
    if not snapshots and len(failures) == 1:
        raise SourceError(failures[0])  # one target, one reason: one Error line
    for failure in failures:
        click.echo(f"Warning: {failure}", err=True)
    if not snapshots:
        raise SourceError(
            f"No valid spec-decode counters from {len(targets)} target(s); see the warnings above."
        )
