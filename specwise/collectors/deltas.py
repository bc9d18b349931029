"""Cumulative Snapshots -> per-window CounterDeltas, and per-series deltas -> per-class sums.

A counter that goes down means the process restarted from 0: the value after the drop is
the gain since the restart. Over the raw samples of one series this is exactly what
Prometheus' ``increase()`` computes when the window starts and ends on samples (no
extrapolation). NaN samples are skipped. A change of ``process_start_time`` (or of k) between
two samples is also a restart, even when the counters grew past their old values.

The load and time counters (generation tokens, engine steps and tokens, inter-token latency,
time per output token, decode time) get the same restart-safe gains; a family a series lacks
(older vLLM) stays None. ``batch_samples`` collects the running-request samples inside the
window. Load-only deltas (engines without speculation, ``spec_families=False``) are summed
per class apart from the spec deltas of the same class.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from specwise.collectors.classes import ClassConfig
from specwise.collectors.snapshot import CounterDelta, Generation, Snapshot, labels_key
from specwise.errors import DataError

__all__ = [
    "LOAD_COUNTERS",
    "batch_samples",
    "check_delta",
    "check_snapshot",
    "counter_increase",
    "latest_per_series",
    "series_deltas",
    "since_start",
    "sum_by_class",
    "window_deltas",
]

_GEN_ORDER: dict[Generation, int] = {"v0": 0, "v1-0.8.4": 1, "v1": 2}


def counter_increase(
    values: Iterable[float], *, resets_at: Iterable[int] = ()
) -> tuple[float, int]:
    """(increase, resets) over successive raw samples, as Prometheus' increase() on them.

    NaN samples are skipped. ``resets_at`` lists sample indexes known to follow a restart
    (e.g. a new process_start_time): the sample's own value is then the gain.
    """
    forced = set(resets_at)
    total = 0.0
    resets = 0
    prev: float | None = None
    for i, v in enumerate(values):
        if math.isnan(v):
            continue
        if prev is not None:
            if v < prev or i in forced:
                total += v
                resets += 1
            else:
                total += v - prev
        prev = v
    return total, resets


def _fmt(labels: object) -> str:
    return str(dict(labels)) if isinstance(labels, dict) else str(labels)


def _tol(a: float, b: float) -> float:
    return 1e-9 * max(1.0, abs(a), abs(b))


def _check(
    labels: object,
    what: str,
    drafts: float | None,
    draft_tokens: float,
    accepted: float,
    per_pos: Sequence[float],
    rel: float,
) -> None:
    tol = max(_tol(accepted, draft_tokens), rel * max(abs(accepted), abs(draft_tokens)))
    if accepted - draft_tokens > tol:
        raise DataError(
            f"Series {_fmt(labels)} has {what} accepted tokens {accepted:g} > draft tokens "
            f"{draft_tokens:g}, which vLLM cannot produce; check that both counters come from "
            "the same servers and scrapes.",
            source=_fmt(labels),
        )
    for i in range(1, len(per_pos)):
        a, b = per_pos[i - 1], per_pos[i]
        if math.isnan(a) or math.isnan(b):
            continue
        if b - a > max(_tol(a, b), rel * max(abs(a), abs(b))):
            raise DataError(
                f"Series {_fmt(labels)} has {what} accepted count at position {i} ({b:g}) above "
                f"position {i - 1} ({a:g}), but vLLM counts accepted prefixes, so they never "
                "rise; check for mixed k or a mislabelled series.",
                source=_fmt(labels),
            )
    if (
        drafts is not None
        and per_pos
        and not math.isnan(drafts)
        and per_pos[0] - drafts > max(_tol(per_pos[0], drafts), rel * abs(drafts))
    ):
        raise DataError(
            f"Series {_fmt(labels)} has {what} position-0 accepted count {per_pos[0]:g} "
            f"above its drafts {drafts:g}; check that both counters come from the same "
            "servers and scrapes.",
            source=_fmt(labels),
        )


def check_snapshot(snapshot: Snapshot) -> None:
    """Raise DataError when cumulative counters contradict vLLM's semantics."""
    _check(
        snapshot.labels,
        "cumulative",
        snapshot.drafts,
        snapshot.draft_tokens,
        snapshot.accepted,
        snapshot.accepted_per_position,
        0.0,
    )


def check_delta(delta: CounterDelta, *, rel_tolerance: float = 0.0) -> None:
    """Raise DataError when window deltas contradict vLLM's semantics.

    ``rel_tolerance`` allows for Prometheus' extrapolated (non-integer) increases.
    """
    _check(
        delta.labels,
        "a window",
        delta.drafts,
        delta.draft_tokens,
        delta.accepted,
        delta.accepted_per_position,
        rel_tolerance,
    )


def _opt_increase(values: list[float | None], forced: list[int]) -> float | None:
    return _opt_increase_resets(values, forced)[0]


def _opt_increase_resets(values: list[float | None], forced: list[int]) -> tuple[float | None, int]:
    if all(v is None for v in values):
        return None, 0
    clean = [math.nan if v is None else v for v in values]
    return counter_increase(clean, resets_at=forced)


def _position(s: Snapshot, i: int) -> float:
    """Position i of a snapshot: 0 where the engine ran a smaller k (nothing counted there
    yet, so a k change that adds positions keeps their counts), k = 0 included (a load-only
    snapshot: an engine without speculation counted nothing, so turning speculation back on
    keeps the new engine's counts), NaN where none are exported."""
    if i < len(s.accepted_per_position):
        return s.accepted_per_position[i]
    return 0.0 if s.accepted_per_position or not s.spec_families else math.nan


#: Cumulative load and time counters of a Snapshot, summed (as gains) into a CounterDelta.
LOAD_COUNTERS = (
    "generation_tokens",
    "itl_seconds_sum",
    "itl_seconds_count",
    "iteration_steps",
    "iteration_tokens",
    "decode_seconds_sum",
    "decode_seconds_count",
    "prefill_seconds_sum",
    "prefill_seconds_count",
    "inference_seconds_sum",
    "inference_seconds_count",
    "request_tokens_sum",
    "request_tokens_count",
    "tpot_seconds_sum",
    "tpot_seconds_count",
)


def _with_load(delta: CounterDelta, values: Mapping[str, float | None]) -> CounterDelta:
    """``delta`` with the load and time counters of ``values`` (field -> gain or None)."""
    return dataclasses.replace(
        delta,
        generation_tokens=values["generation_tokens"],
        itl_seconds_sum=values["itl_seconds_sum"],
        itl_seconds_count=values["itl_seconds_count"],
        iteration_steps=values["iteration_steps"],
        iteration_tokens=values["iteration_tokens"],
        decode_seconds_sum=values["decode_seconds_sum"],
        decode_seconds_count=values["decode_seconds_count"],
        prefill_seconds_sum=values["prefill_seconds_sum"],
        prefill_seconds_count=values["prefill_seconds_count"],
        inference_seconds_sum=values["inference_seconds_sum"],
        inference_seconds_count=values["inference_seconds_count"],
        request_tokens_sum=values["request_tokens_sum"],
        request_tokens_count=values["request_tokens_count"],
        tpot_seconds_sum=values["tpot_seconds_sum"],
        tpot_seconds_count=values["tpot_seconds_count"],
    )


def _samples_of(s: Snapshot) -> tuple[float, ...]:
    """The running-request samples a Snapshot carries: a windowed source's samples, else
    its one gauge reading."""
    if s.batch_samples:
        return tuple(v for v in s.batch_samples if not math.isnan(v))
    if s.running_requests is None or math.isnan(s.running_requests):
        return ()
    return (s.running_requests,)


def batch_samples(snaps: Sequence[Snapshot]) -> tuple[float, ...]:
    """Running-request samples inside the window of time-ordered Snapshots of one series:
    those of every Snapshot after the first (the first opens the window); a Snapshot no
    newer than the one before it is the same reading again and adds nothing."""
    out: list[float] = []
    for a, b in itertools.pairwise(snaps):
        if b.timestamp > a.timestamp:
            out.extend(_samples_of(b))
    return tuple(out)


def _series_delta(snaps: list[Snapshot]) -> CounterDelta:
    snaps = sorted(snaps, key=lambda s: s.timestamp)
    first, last = snaps[0], snaps[-1]
    forced: list[int] = []
    for i in range(1, len(snaps)):
        a, b = snaps[i - 1], snaps[i]
        new_process = (
            a.process_start_time is not None
            and b.process_start_time is not None
            and b.process_start_time != a.process_start_time
        )
        if new_process or (a.k is not None and b.k is not None and a.k != b.k):
            forced.append(i)
    draft_tokens, resets = counter_increase([s.draft_tokens for s in snaps], resets_at=forced)
    accepted, r2 = counter_increase([s.accepted for s in snaps], resets_at=forced)
    drafts = _opt_increase([s.drafts for s in snaps], forced)
    k = last.k
    per_pos: tuple[float, ...] = ()
    if k:
        per_pos = tuple(
            counter_increase(
                [_position(s, i) for s in snaps],
                resets_at=forced,
            )[0]
            for i in range(k)
        )
    notes = list(last.notes)
    if last.generation == "v0" and math.isnan(last.draft_tokens):
        notes.append("V0 scrape: no usable counters; use the lifetime gauges")
    load = {f: _opt_increase_resets([getattr(s, f) for s in snaps], forced) for f in LOAD_COUNTERS}
    gains = {f: g for f, (g, _) in load.items()}
    # a load counter that dropped is a restart too (an engine without spec counters)
    load_resets = max((r for _, r in load.values()), default=0)
    delta = _with_load(
        CounterDelta(
            labels=dict(last.labels),
            start=first.timestamp,
            end=last.timestamp,
            drafts=drafts,
            draft_tokens=draft_tokens,
            accepted=accepted,
            accepted_per_position=per_pos,
            k=k,
            generation=last.generation,
            restarts=max(resets, r2, len(forced), load_resets),
            series=1,
            running_requests=last.running_requests,
            batch_samples=batch_samples(snaps),
            spec_families=last.spec_families,
            notes=tuple(dict.fromkeys(notes)),
            classified=last.classified,
        ),
        gains,
    )
    if not math.isnan(delta.draft_tokens):
        check_delta(delta)
    return delta


def series_deltas(snapshots: Iterable[Snapshot]) -> list[CounterDelta]:
    """One CounterDelta per series over all its Snapshots (first to last timestamp).

    Raises DataError (naming the series and values) when a delta has accepted > draft
    tokens or per-position counts that rise with the position.
    """
    groups: dict[tuple[tuple[str, str], ...], list[Snapshot]] = defaultdict(list)
    for s in snapshots:
        groups[s.key].append(s)
    return [_series_delta(g) for _, g in sorted(groups.items())]


def window_deltas(previous: Sequence[Snapshot], current: Sequence[Snapshot]) -> list[CounterDelta]:
    """Deltas between two collections (e.g. two scrapes); series new in ``current`` are
    skipped (no baseline yet), as Prometheus does for a series' first sample."""
    before = {s.key: s for s in previous}
    return [_series_delta([before[s.key], s]) for s in current if s.key in before]


def since_start(snapshot: Snapshot) -> CounterDelta:
    """A cumulative snapshot read as the gain since the server started (counters start at 0)."""
    start = snapshot.process_start_time
    delta = CounterDelta(
        labels=dict(snapshot.labels),
        start=start if start is not None else snapshot.timestamp,
        end=snapshot.timestamp,
        drafts=snapshot.drafts,
        draft_tokens=snapshot.draft_tokens,
        accepted=snapshot.accepted,
        accepted_per_position=snapshot.accepted_per_position,
        k=snapshot.k,
        generation=snapshot.generation,
        running_requests=snapshot.running_requests,
        batch_samples=_samples_of(snapshot),
        spec_families=snapshot.spec_families,
        notes=(*snapshot.notes, "counts since the server started"),
        classified=snapshot.classified,
    )
    return _with_load(delta, {f: getattr(snapshot, f) for f in LOAD_COUNTERS})


def latest_per_series(snapshots: Sequence[Snapshot]) -> list[Snapshot]:
    """The newest Snapshot of each series (e.g. the last line per engine of a vLLM log)."""
    last: dict[tuple[tuple[str, str], ...], Snapshot] = {}
    for s in snapshots:
        if s.key not in last or s.timestamp >= last[s.key].timestamp:
            last[s.key] = s
    return list(last.values())


@dataclass
class _Acc:
    labels: dict[str, str]
    deltas: list[CounterDelta]


def _sum_opt(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return math.fsum(vals) if vals else None


def sum_by_class(deltas: Iterable[CounterDelta], classes: ClassConfig) -> list[CounterDelta]:
    """Sum per-series deltas into one CounterDelta per workload class.

    Numerators and denominators are summed separately (never ratios averaged). A class that
    mixes series with and without a drafts counter gets ``drafts=None`` and a note; V0 series
    without usable counters are left out with a note. Deltas already classified (the
    Prometheus source's per-class rows) keep their class labels: one classification only.
    Load and time gains are summed like the counters and ``batch_samples`` pooled. Load-only
    deltas (``spec_families=False``: engines without speculation) of a class are summed apart
    and give that class a second, load-only delta (k = 0), after its spec delta.
    """
    groups: dict[tuple[tuple[tuple[str, str], ...], bool], _Acc] = {}
    for d in deltas:
        cl = dict(d.labels) if d.classified else classes.classify(d.labels)
        key = (labels_key(cl), not d.spec_families)
        groups.setdefault(key, _Acc(cl, [])).deltas.append(d)
    out: list[CounterDelta] = []
    for _, acc in sorted(groups.items()):
        notes: list[str] = []
        usable = [d for d in acc.deltas if not math.isnan(d.draft_tokens)]
        if len(usable) < len(acc.deltas):
            notes.append(
                f"{len(acc.deltas) - len(usable)} V0 series without usable counters left out"
            )
        if not usable:
            continue
        has_drafts = [d.drafts is not None for d in usable]
        drafts = _sum_opt(d.drafts for d in usable) if all(has_drafts) else None
        if any(has_drafts) and not all(has_drafts):
            notes.append("some series have no drafts counter (vLLM 0.8.4): drafts unknown")
        ks = {d.k for d in usable if d.k is not None}
        if len(ks) > 1:
            # mid-rollout: engines of one class run different k. Pooling them would bias the
            # survival of the longer positions low (the shorter drafts never reach them), so
            # keep the k that carries the most drafts and leave the others out this window.
            weight: dict[int, float] = {}
            for d in usable:
                if d.k is not None:
                    weight[d.k] = weight.get(d.k, 0.0) + (d.drafts or d.draft_tokens / d.k)
            keep = max(sorted(weight), key=lambda kk: weight[kk])
            left = [d for d in usable if d.k is not None and d.k != keep]
            usable = [d for d in usable if d.k is None or d.k == keep]
            notes.append(
                f"series run different k {sorted(ks)} (a rollout?): the {len(left)} "
                f"series at k != {keep} are left out of this window"
            )
            has_drafts = [d.drafts is not None for d in usable]
            drafts = _sum_opt(d.drafts for d in usable) if all(has_drafts) else None
            ks = {keep}
        k = max(ks) if ks else None
        per_pos: tuple[float, ...] = ()
        if k and all(d.accepted_per_position for d in usable):
            per_pos = tuple(
                math.fsum(
                    d.accepted_per_position[i] if i < len(d.accepted_per_position) else 0.0
                    for d in usable
                )
                for i in range(k)
            )
        gen = min((d.generation for d in usable), key=lambda g: _GEN_ORDER[g])
        for d in usable:
            notes.extend(d.notes)
        summed = {f: _sum_opt(getattr(d, f) for d in usable) for f in LOAD_COUNTERS}
        out.append(
            _with_load(
                CounterDelta(
                    labels=dict(acc.labels),
                    start=min(d.start for d in usable),
                    end=max(d.end for d in usable),
                    drafts=drafts,
                    draft_tokens=math.fsum(d.draft_tokens for d in usable),
                    accepted=math.fsum(d.accepted for d in usable),
                    accepted_per_position=per_pos,
                    k=k,
                    generation=gen,
                    restarts=sum(d.restarts for d in usable),
                    series=sum(d.series for d in usable),
                    running_requests=_sum_opt(d.running_requests for d in usable),
                    batch_samples=tuple(v for d in usable for v in d.batch_samples),
                    spec_families=usable[0].spec_families,
                    partial=any(d.partial for d in usable),
                    notes=tuple(dict.fromkeys(notes)),
                    classified=True,
                ),
                summed,
            )
        )
    return out
