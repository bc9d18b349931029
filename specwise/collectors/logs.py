"""vLLM log lines -> a time series of Snapshots.

Reads every ``SpecDecoding metrics:`` format from 0.8.4 to today and the V0
``Speculative metrics:`` line (docs/vllm-metrics.md#log-lines), anchored on the message, not the
prefix (container tools prepend their own). V1 lines hold per-interval counts: Snapshots are
cumulative sums of the intervals. V1 lines carry no drafts count: it is recovered as the
integer D that reproduces the printed per-position rates (``%.3f``) and mean acceptance length
(``%.2f``), starting from A / sum(rates). V0 lines are cumulative since the engine started and
count per-token (not prefix) acceptance: each such Snapshot says so in ``notes``. Log
timestamps have no year and no time zone: both are parameters.

What the lines determine, and the bound: per line, the per-position counts P_i are integers
that print as the line's rates (P_i / D within 0.0005 of each ``%.3f`` rate), sum to its
accepted tokens, and keep the prefix order P_(i+1) <= P_i. When the rates are finer than
1 / D this leaves one split; with many drafts per line (D > 2000 makes one draft 0.0005)
several fit, e.g. a line with D = 3000 and A = 5 allows only (5, 0, 0) once the prefix order
is used, but A = 5 with rates "0.002, 0.001, 0.000" allows (5, 0, 0)... (4, 1, 0). The
collector returns the split nearest the printed rates and records, per line, each position's
range over every allowed split (``LogInterval.per_position_range``); so, given each line's
drafts count, each summed position is within :func:`per_position_slack` of the counters,
and the totals of accepted tokens, draft tokens and (with the drafts) drafts are exact sums.

Load (#14): the ``Engine NNN: Avg prompt throughput: ..., Avg generation throughput: X
tokens/s, Running: N reqs, Waiting: M reqs`` lines give batch-size samples (``Running``) and
generation tokens (X times the logging interval, the commonest gap between an engine's
lines: approximate, the throughput is printed to 0.1 tok/s). An engine with spec-decode
lines carries them on its Snapshots (``generation_tokens`` cumulative, ``batch_samples`` the
Running values since its previous Snapshot); an engine without any gets a load-only
Snapshot (``spec_families=False``, k = 0) per line. Logs print no step times (no latency or
iteration families), so a step-time fit gets nothing from them: :data:`LOG_LOAD_NOTE`.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TextIO

from specwise.collectors.snapshot import Generation, Snapshot
from specwise.errors import ParseError, SourceError

__all__ = [
    "LOG_LOAD_NOTE",
    "V0_LOG_NOTE",
    "EngineLine",
    "LogInterval",
    "LogSource",
    "log_snapshots",
    "parse_engine_lines",
    "parse_log_lines",
    "per_position_slack",
    "recover_drafts",
]

V0_LOG_NOTE = (
    "vLLM V0 log values are cumulative since the engine started, and V0 'accepted' counts "
    "every accepted position (per token, not the accepted prefix): not comparable with V1."
)
LOG_LOAD_NOTE = (
    "vLLM logs print no step times (no latency or iteration families): batch sizes and "
    "generation tokens only, so the step-time fit gets no data from a log"
)
_ESTIMATED_NOTE = "drafts estimated as ceil(draft_tokens / k): the interval accepted nothing"

_TS = re.compile(
    r"\b(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+(\d{2})-(\d{2})\s+(\d{2}):(\d{2}):(\d{2})\b"
)
_ENGINE = re.compile(r"\bEngine (\d+): ")
_V1 = re.compile(r"SpecDecoding metrics: (.*)")
_V0 = re.compile(
    r"Speculative metrics: Draft acceptance rate: ([\d.]+), (?:System efficiency: ([\d.]+), "
    r"Number of speculative tokens: (\d+), )?Number of accepted tokens: (\d+), "
    r"Number of draft tokens(?: tokens)?: (\d+)(?:, Number of emitted tokens(?: tokens)?: (\d+))?"
)
_MAL = re.compile(r"Mean acceptance length: ([\d.]+)")
_ACC = re.compile(r"Accepted: (\d+) tokens")
_DRAFTED = re.compile(r"Drafted: (\d+) tokens")
_PER_POS = re.compile(r"Per-position acceptance rate: (\d+(?:\.\d+)?(?:, \d+(?:\.\d+)?)*)")
#: V1 ``Engine NNN: Avg prompt throughput: ...``; V0 printed no engine and ``Pending``
_ENGINE_LOAD = re.compile(
    r"(?:\bEngine (\d+): )?Avg prompt throughput: [\d.]+ tokens/s, Avg generation "
    r"throughput: ([\d.]+) tokens/s, Running: (\d+) reqs"
    r"(?:, (?:Swapped: \d+ reqs, )?(?:Waiting|Pending): (\d+) reqs)?"
)
_CONFIG_MODEL = re.compile(r"served_model_name=([^,\s]+)")
_CONFIG_K = re.compile(r"num_spec_tokens=(\d+)")


@dataclass(frozen=True)
class LogInterval:
    """One parsed log line: per-interval counts (V1) or since-start counts (V0)."""

    line_no: int
    timestamp: float
    engine: str
    generation: Generation
    cumulative: bool
    draft_tokens: int
    accepted: int
    drafts: int | None = None
    accepted_per_position: tuple[int, ...] = ()
    k: int | None = None
    mean_acceptance_length: float | None = None
    v0_acceptance_rate: float | None = None
    v0_efficiency: float | None = None
    v0_emitted: int | None = None
    model_name: str | None = None
    notes: tuple[str, ...] = field(default=())
    per_position_range: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class EngineLine:
    """One ``Engine NNN: Avg prompt throughput: ...`` line: the engine's load at its time."""

    line_no: int
    timestamp: float
    engine: str
    generation_throughput: float
    running: int
    waiting: int | None = None
    model_name: str | None = None


def _rate_box(rates: list[float], d: int) -> tuple[list[int], list[int]]:
    """Integer bounds on P_i that print as rate_i with ``%.3f`` for d drafts."""
    lo = [max(0, math.ceil((r - 0.0005) * d - 1e-9)) for r in rates]
    hi = [min(d, math.floor((r + 0.0005) * d + 1e-9)) for r in rates]
    return lo, hi


def _prefix_box(lo: list[int], hi: list[int]) -> tuple[list[int], list[int]] | None:
    """The box tightened by the prefix order P_(i+1) <= P_i, or None when it is empty."""
    hi2 = list(hi)
    for i in range(1, len(hi2)):
        hi2[i] = min(hi2[i], hi2[i - 1])
    lo2 = list(lo)
    for i in range(len(lo2) - 2, -1, -1):
        lo2[i] = max(lo2[i], lo2[i + 1])
    if any(a > b for a, b in zip(lo2, hi2, strict=True)):
        return None
    return lo2, hi2


def _feasible(lo: list[int], hi: list[int], accepted: int) -> tuple[list[int], list[int]] | None:
    """Tightened box when some non-increasing integer split of ``accepted`` lies in it.

    Every sum between the tightened lower and upper sums is reachable one unit at a time
    (raise the first position below its upper bound, or lower the last above its lower one),
    so the sums bound it exactly."""
    box = _prefix_box(lo, hi)
    if box is None or not sum(box[0]) <= accepted <= sum(box[1]):
        return None
    return box


def _split_counts(rates: list[float], d: int, accepted: int) -> list[int] | None:
    """Integers P_i with round(P_i/d, 3) == rate_i, non-increasing (a draft reaches position
    i + 1 only through position i), summing to ``accepted``; the split nearest the printed
    rates, or None when none exists."""
    box = _feasible(*_rate_box(rates, d), accepted)
    if box is None:
        return None
    lo, hi = box
    counts = [min(max(round(r * d), a), b) for r, a, b in zip(rates, lo, hi, strict=True)]
    for i in range(1, len(counts)):
        counts[i] = min(counts[i], counts[i - 1])  # stays >= lo[i]: lo is non-increasing
    diff = accepted - sum(counts)
    k = len(counts)
    while diff != 0:  # bounded: each pass moves one unit toward the sum (see _feasible)
        if diff > 0:
            movable = [
                i for i in range(k) if counts[i] < hi[i] and (i == 0 or counts[i] < counts[i - 1])
            ]
            i = max(movable, key=lambda j: rates[j] * d - counts[j])
            counts[i] += 1
            diff -= 1
        else:
            movable = [
                i
                for i in range(k)
                if counts[i] > lo[i] and (i == k - 1 or counts[i] > counts[i + 1])
            ]
            i = min(movable, key=lambda j: rates[j] * d - counts[j])
            counts[i] -= 1
            diff += 1
    return counts


def _position_ranges(
    rates: list[float], d: int, accepted: int, counts: list[int]
) -> tuple[tuple[int, int], ...]:
    """(min, max) of each P_i over every split the line allows (``counts`` is one of them):
    the set is convex in each coordinate, so each end is found by bisection."""
    lo, hi = _rate_box(rates, d)

    def allows(i: int, v: int) -> bool:
        lo_i = [max(a, v) if j < i else (v if j == i else a) for j, a in enumerate(lo)]
        hi_i = [min(b, v) if j > i else (v if j == i else b) for j, b in enumerate(hi)]
        return _feasible(lo_i, hi_i, accepted) is not None

    out = []
    for i, c in enumerate(counts):
        top, bottom = c, c
        a, b = c, hi[i]  # allows(a) holds; find the largest allowed value in [a, b]
        while a < b:
            m = (a + b + 1) // 2
            a, b = (m, b) if allows(i, m) else (a, m - 1)
        top = a
        a, b = lo[i], c  # allows(b) holds; find the smallest allowed value in [a, b]
        while a < b:
            m = (a + b) // 2
            a, b = (a, m) if allows(i, m) else (m + 1, b)
        bottom = b
        out.append((bottom, top))
    return tuple(out)


def per_position_slack(intervals: Iterable[LogInterval]) -> tuple[int, ...]:
    """How far each summed per-position count of V1 ``intervals`` can be from the truth.

    The sum over lines of max - min of :attr:`LogInterval.per_position_range`: the printed
    rates are rounded (``%.3f``), so a line with many drafts fits several splits of its
    accepted tokens; the collector returns one, and the true one lies in the same range (given
    the line's drafts count). 0 everywhere means the lines determine the counts exactly.
    """
    slack: list[int] = []
    for it in intervals:
        if it.cumulative:
            continue
        if len(slack) < len(it.per_position_range):
            slack.extend([0] * (len(it.per_position_range) - len(slack)))
        for i, (low, high) in enumerate(it.per_position_range):
            slack[i] += high - low
    return tuple(slack)


def recover_drafts(
    accepted: int,
    mean_acceptance_length: float | None,
    rates: list[float],
    *,
    drafted: int | None = None,
) -> tuple[int, list[int]] | None:
    """(D, per-position counts) from a V1 line's A, MAL and per-position rates, or None.

    D must reproduce the printed MAL (``%.2f``) and every rate (``%.3f``) with integer
    per-position counts that sum to A. With the line's drafted tokens T and k = len(rates),
    D >= ceil(T / k) (no draft holds more than k tokens); when the rounded rates allow it, D
    is taken at (or just above) that bound, since drafters that always propose k tokens
    (draft models, EAGLE) sit exactly there and the rounded rates of a line with few
    accepted tokens cannot tell. Otherwise the candidate closest to A / sum(rates) wins.
    """
    if accepted <= 0:
        return None
    lower = 1
    if drafted and rates:
        lower = max(1, math.ceil(drafted / len(rates)))
        for d in range(lower, lower + max(3, lower // 50) + 1):
            found = _check_candidate(d, accepted, mean_acceptance_length, rates)
            if found is not None:
                return found
    total_rate = sum(rates)
    if total_rate > 0:
        est = accepted / total_rate
    elif mean_acceptance_length is not None and mean_acceptance_length > 1.0:
        est = accepted / (mean_acceptance_length - 1.0)
    else:
        return None
    span = max(3, int(est * 0.01) + 2)
    candidates = sorted(
        range(max(lower, int(est) - span), max(lower, int(est) + span + 2)),
        key=lambda c: abs(c - est),
    )
    for d in candidates:
        found = _check_candidate(d, accepted, mean_acceptance_length, rates)
        if found is not None:
            return found
    return None


def _check_candidate(
    d: int, accepted: int, mean_acceptance_length: float | None, rates: list[float]
) -> tuple[int, list[int]] | None:
    """(d, counts) when d drafts reproduce the printed MAL and rates, else None."""
    if (
        mean_acceptance_length is not None
        and abs(1.0 + accepted / d - mean_acceptance_length) > 0.005 + 1e-9
    ):
        return None
    if not rates:
        return d, []
    counts = _split_counts(rates, d, accepted)
    return None if counts is None else (d, counts)


def _timestamp(
    line: str, year: int, tz: tzinfo, last: tuple[int, int] | None
) -> tuple[float | None, int]:
    m = _TS.search(line)
    if m is None:
        return None, year
    month, day, hh, mm, ss = (int(g) for g in m.groups())
    if last is not None and month < last[0]:
        year += 1  # the log crossed New Year
    try:
        dt = datetime(year, month, day, hh, mm, ss, tzinfo=tz)
    except ValueError:
        return None, year
    return dt.timestamp(), year


def parse_log_lines(
    lines: Iterable[str], *, year: int, tz: tzinfo = UTC, source: str = ""
) -> list[LogInterval]:
    """Every spec-decode metrics line, in order; the engine index comes from the preceding
    ``Engine NNN:`` line (``"0"`` when none was seen)."""
    out: list[LogInterval] = []
    engine = "0"
    model: str | None = None
    config_k: int | None = None
    last_ts: float | None = None
    last_md: tuple[int, int] | None = None
    for no, raw in enumerate(lines, start=1):
        line = raw.rstrip("\n")
        if "Initializing a V1 LLM engine" in line or "Initializing an LLM engine" in line:
            mm = _CONFIG_MODEL.search(line)
            model = mm.group(1) if mm else model
            mk = _CONFIG_K.search(line)
            config_k = int(mk.group(1)) if mk else config_k
        if "Engine " in line:
            me = _ENGINE.search(line)
            if me:
                engine = str(int(me.group(1)))
        if "SpecDecoding metrics:" not in line and "Speculative metrics:" not in line:
            continue
        ts, year = _timestamp(line, year, tz, last_md)
        tsm = _TS.search(line)
        if tsm:
            last_md = (int(tsm.group(1)), int(tsm.group(2)))
        notes: list[str] = []
        if ts is None:
            if last_ts is None:
                ts = float(no)
                notes.append("no timestamp in the log line: timestamp is the line number")
            else:
                ts = last_ts
        last_ts = ts
        try:
            item = _parse_line(line, no, ts, engine, model, config_k, notes)
        except (ValueError, IndexError) as exc:
            raise ParseError(
                f"Line {no} of {source or 'the log'} looks like a vLLM spec-decode metrics "
                f"line but cannot be read ({exc}); report the vLLM version with the line.",
                line=line[:300],
            ) from exc
        if item is not None:
            out.append(item)
    return out


def _parse_line(
    line: str,
    no: int,
    ts: float,
    engine: str,
    model: str | None,
    config_k: int | None,
    notes: list[str],
) -> LogInterval | None:
    v1 = _V1.search(line)
    if v1 is not None:
        body = v1.group(1)
        ma, md = _ACC.search(body), _DRAFTED.search(body)
        if ma is None or md is None:
            raise ValueError("no 'Accepted: N tokens, Drafted: N tokens'")
        accepted, drafted = int(ma.group(1)), int(md.group(1))
        mal_m = _MAL.search(body)
        mal = float(mal_m.group(1)) if mal_m else None
        pp = _PER_POS.search(body)
        rates = [float(x) for x in pp.group(1).split(", ")] if pp else []
        if mal is None and not rates:  # 0.8.4: no drafts, no positions
            return LogInterval(
                no,
                ts,
                engine,
                "v1-0.8.4",
                False,
                drafted,
                accepted,
                model_name=model,
                notes=tuple(notes),
            )
        k = len(rates) if rates else config_k
        rec = recover_drafts(accepted, mal, rates, drafted=drafted)
        if rec is not None:
            drafts, counts = rec
            ranges = _position_ranges(rates, drafts, accepted, counts) if rates else ()
        elif accepted == 0:
            drafts = math.ceil(drafted / k) if k else 0
            counts = [0] * len(rates)
            ranges = tuple((0, 0) for _ in rates)
            notes.append(_ESTIMATED_NOTE)
        else:
            raise ValueError(
                f"no integer drafts count reproduces accepted {accepted}, mean acceptance "
                f"length {mal} and per-position rates {rates}"
            )
        return LogInterval(
            no,
            ts,
            engine,
            "v1",
            False,
            drafted,
            accepted,
            drafts=drafts,
            accepted_per_position=tuple(counts),
            k=k,
            mean_acceptance_length=mal,
            model_name=model,
            notes=tuple(notes),
            per_position_range=ranges,
        )
    v0 = _V0.search(line)
    if v0 is None:
        raise ValueError("unknown 'Speculative metrics' format")
    rate, eff, k0, acc, draft, emitted = v0.groups()
    if eff is None:  # the Mar-2025 V1 dev build: per-interval tokens only
        return LogInterval(
            no,
            ts,
            engine,
            "v1-0.8.4",
            False,
            int(draft),
            int(acc),
            model_name=model,
            notes=tuple(notes),
        )
    return LogInterval(
        no, ts, engine, "v0", True, int(draft), int(acc),
        k=int(k0) if k0 else None, v0_acceptance_rate=float(rate), v0_efficiency=float(eff),
        v0_emitted=int(emitted) if emitted else None, model_name=model,
        notes=(*notes, V0_LOG_NOTE),
    )  # fmt: skip


def parse_engine_lines(lines: Iterable[str], *, year: int, tz: tzinfo = UTC) -> list[EngineLine]:
    """Every ``Engine NNN: Avg prompt throughput: ...`` line with a timestamp, in order."""
    out: list[EngineLine] = []
    model: str | None = None
    last_md: tuple[int, int] | None = None
    for no, raw in enumerate(lines, start=1):
        line = raw.rstrip("\n")
        if "Initializing a V1 LLM engine" in line or "Initializing an LLM engine" in line:
            mm = _CONFIG_MODEL.search(line)
            model = mm.group(1) if mm else model
        if "Avg generation throughput" not in line:
            continue
        m = _ENGINE_LOAD.search(line)
        if m is None:
            continue
        ts, year = _timestamp(line, year, tz, last_md)
        tsm = _TS.search(line)
        if tsm:
            last_md = (int(tsm.group(1)), int(tsm.group(2)))
        if ts is None:
            continue  # no time, no interval: nothing to count
        engine, throughput, running, waiting = m.groups()
        out.append(
            EngineLine(
                no,
                ts,
                str(int(engine)) if engine is not None else "0",
                float(throughput),
                int(running),
                None if waiting is None else int(waiting),
                model,
            )
        )
    return out


def log_interval(times: Iterable[float]) -> float | None:
    """The logging interval of one engine's lines: the commonest gap between successive
    lines (idle intervals print nothing, so longer gaps are skipped intervals); None with
    fewer than two lines."""
    ts = sorted(times)
    gaps = [round(b - a) for a, b in itertools.pairwise(ts) if b > a]
    if not gaps:
        return None
    counts: dict[int, int] = {}
    for g in gaps:
        counts[g] = counts.get(g, 0) + 1
    return float(min(counts, key=lambda g: (-counts[g], g)))


@dataclass
class _Load:
    """Running load state of one engine while a log is read."""

    interval: float | None
    generation_tokens: float = 0.0
    running: float | None = None
    last: float | None = None
    pending: list[float] = field(default_factory=list)


def log_snapshots(
    lines: Iterable[str],
    *,
    year: int,
    tz: tzinfo = UTC,
    labels: Mapping[str, str] | None = None,
    source: str = "",
) -> list[Snapshot]:
    """A cumulative Snapshot per spec-decode line, per engine, in time order; plus a
    load-only Snapshot per ``Engine NNN:`` line of an engine that prints no spec-decode line.

    Labels: ``engine``, ``model_name`` (from the engine start line, else ``labels``) and
    ``labels``. V1 intervals are summed; V0 values are already since start. The engine lines'
    load (see the module docstring) rides on the spec Snapshots of the same engine.
    """
    lines = list(lines)
    extra = dict(labels or {})
    intervals = parse_log_lines(lines, year=year, tz=tz, source=source)
    engine_lines = parse_engine_lines(lines, year=year, tz=tz)

    def key_of(engine: str, model_name: str | None) -> tuple[str, str]:
        return engine, model_name or extra.get("model_name", "")

    spec_keys = {key_of(it.engine, it.model_name) for it in intervals}
    times: dict[tuple[str, str], list[float]] = {}
    for el in engine_lines:
        times.setdefault(key_of(el.engine, el.model_name), []).append(el.timestamp)
    loads = {key: _Load(log_interval(ts)) for key, ts in times.items()}
    events: list[tuple[int, LogInterval | EngineLine]] = sorted(
        [(it.line_no, it) for it in intervals] + [(el.line_no, el) for el in engine_lines],
        key=lambda e: e[0],
    )
    totals: dict[tuple[str, str], list[float]] = {}
    per_pos: dict[tuple[str, str], list[float]] = {}
    out: list[Snapshot] = []
    for _, ev in events:
        key = key_of(ev.engine, ev.model_name)
        snap_labels = {**extra, "engine": ev.engine, "model_name": key[1]}
        load = loads.get(key)
        if isinstance(ev, EngineLine):
            assert load is not None
            _count(load, ev)
            if key not in spec_keys:
                out.append(_load_only(snap_labels, ev.timestamp, load, source))
            continue
        it = ev
        gen_tokens: float | None = None
        running: float | None = None
        samples: tuple[float, ...] = ()
        notes = it.notes
        if load is not None and load.last is not None:
            gen_tokens = load.generation_tokens if load.interval is not None else None
            running = load.running
            samples = tuple(load.pending)
            load.pending.clear()
            notes = (*notes, LOG_LOAD_NOTE)
        if it.cumulative:
            out.append(
                Snapshot(
                    labels=snap_labels,
                    timestamp=it.timestamp,
                    drafts=None,
                    draft_tokens=float(it.draft_tokens),
                    accepted=float(it.accepted),
                    k=it.k,
                    generation=it.generation,
                    source=source,
                    v0_acceptance_rate=it.v0_acceptance_rate,
                    v0_efficiency=it.v0_efficiency,
                    notes=notes,
                )
            )
            continue
        t = totals.setdefault(key, [0.0, 0.0, 0.0])
        t[0] += it.drafts or 0
        t[1] += it.draft_tokens
        t[2] += it.accepted
        pp = per_pos.setdefault(key, [])
        if len(pp) < len(it.accepted_per_position):
            pp.extend([0.0] * (len(it.accepted_per_position) - len(pp)))
        for i, c in enumerate(it.accepted_per_position):
            pp[i] += c
        out.append(
            Snapshot(
                labels=snap_labels,
                timestamp=it.timestamp,
                drafts=t[0] if it.generation == "v1" else None,
                draft_tokens=t[1],
                accepted=t[2],
                accepted_per_position=tuple(pp),
                k=it.k,
                generation=it.generation,
                source=source,
                running_requests=running,
                generation_tokens=gen_tokens,
                batch_samples=samples,
                notes=notes,
            )
        )
    return out


def _count(load: _Load, line: EngineLine) -> None:
    """Add one engine line: its interval's generation tokens and its Running sample."""
    gap = math.inf if load.last is None else line.timestamp - load.last
    interval = min(gap, load.interval) if load.interval is not None else None
    if interval is not None and math.isfinite(interval):
        load.generation_tokens += line.generation_throughput * interval
    load.running = float(line.running)
    load.pending.append(float(line.running))
    load.last = line.timestamp


def _load_only(labels: dict[str, str], ts: float, load: _Load, source: str) -> Snapshot:
    """An engine without spec-decode lines: its load alone (k = 0, spec counters 0)."""
    return Snapshot(
        labels=labels,
        timestamp=ts,
        drafts=0.0,
        draft_tokens=0.0,
        accepted=0.0,
        k=0,
        source=source,
        running_requests=load.running,
        generation_tokens=load.generation_tokens if load.interval is not None else None,
        spec_families=False,
        notes=(LOG_LOAD_NOTE,),
    )


@dataclass
class LogSource:
    """A vLLM log file (or ``-`` for stdin); ``collect`` returns the whole time series."""

    path: str
    year: int
    tz: tzinfo = UTC
    labels: Mapping[str, str] = field(default_factory=dict)
    stdin: TextIO | None = None

    def collect(self, now: float) -> list[Snapshot]:
        if self.path == "-":
            stream = self.stdin or sys.stdin
            return log_snapshots(
                stream, year=self.year, tz=self.tz, labels=self.labels, source="<stdin>"
            )
        try:
            with Path(self.path).open(encoding="utf-8", errors="replace") as fh:
                return log_snapshots(
                    fh, year=self.year, tz=self.tz, labels=self.labels, source=self.path
                )
        except OSError as exc:
            raise SourceError(
                f"Cannot read log file {self.path} ({exc.strerror or exc}); check the path.",
                url=self.path,
            ) from exc
