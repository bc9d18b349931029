"""Read vLLM's Prometheus text exposition into Snapshots (one per engine series).

The page is first cut down to the few families specwise needs (spec decode in both the
``vllm:`` and ``vllm_`` spellings, plus the load and time families: running requests,
generation tokens, engine steps and tokens per step (``iteration_tokens_total``, a histogram
despite its name), inter-token latency, time per output token and decode time ``_sum``/
``_count``, and ``process_start_time_seconds``); ``_created`` and ``_bucket`` lines are
dropped there too. The remaining text goes through prometheus_client's own parser,
so escaping and number formats are handled by the reference implementation. Samples are
selected by family type (a histogram named ``..._total`` is never read as a counter).

An engine running without speculation (vLLM registers the spec-decode families only with
``--speculative-config``) still yields a *load-only* Snapshot (``spec_families=False``,
k = 0, spec counters 0) when its page has any load family: the plain-decoding step T(0, B)
is measured from such engines. A page with neither yields nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from specwise.collectors.snapshot import Generation, Snapshot
from specwise.errors import ParseError

__all__ = [
    "V0_COUNTERS_NOTE",
    "filter_exposition",
    "parse_exposition",
]

#: A line that looks like one exposition sample: a metric name, optional labels, a value.
_SAMPLE_LINE = re.compile(
    r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^\n]*\})?[ \t]+[-+]?(?:[0-9.]|NaN|Inf)", re.MULTILINE
)

#: Prefixes (after ``vllm:``/``vllm_``) of every family read; lines are kept by prefix.
_VLLM_PREFIXES = (
    "spec_decode_",
    "num_requests_running",
    "generation_tokens",
    "inter_token_latency_seconds",
    "iteration_tokens_total",
    "request_time_per_output_token_seconds",
    "request_decode_time_seconds",
    "request_prefill_time_seconds",
    "request_inference_time_seconds",
    "request_generation_tokens",
)
_PREFIXES = (
    *(f"vllm{sep}{p}" for sep in (":", "_") for p in _VLLM_PREFIXES),
    "process_start_time_seconds",
)
_COMMENT_PREFIXES = tuple(f"# {kind} {p}" for kind in ("HELP", "TYPE") for p in _PREFIXES)

V0_COUNTERS_NOTE = (
    "vLLM V0 counters hold sums of cumulative values (vLLM PR #15415, never merged), so they "
    "are ignored; draft_tokens/accepted are NaN and the lifetime gauges "
    "v0_acceptance_rate/v0_efficiency are reported instead."
)

_COUNTER_TYPES = frozenset({"counter", "unknown", "untyped"})
_GAUGE_TYPES = frozenset({"gauge", "unknown", "untyped"})
_HIST_TYPES = frozenset({"histogram", "unknown", "untyped"})

# normalized sample name -> (field, accepted family types)
_SAMPLES: dict[str, tuple[str, frozenset[str]]] = {
    "vllm:spec_decode_num_drafts_total": ("drafts", _COUNTER_TYPES),
    "vllm:spec_decode_num_draft_tokens_total": ("draft_tokens", _COUNTER_TYPES),
    "vllm:spec_decode_num_accepted_tokens_total": ("accepted", _COUNTER_TYPES),
    "vllm:spec_decode_num_accepted_tokens_per_pos_total": ("per_pos", _COUNTER_TYPES),
    "vllm:spec_decode_num_emitted_tokens_total": ("v0_emitted", _COUNTER_TYPES),
    "vllm:spec_decode_draft_acceptance_rate": ("v0_acceptance_rate", _GAUGE_TYPES),
    "vllm:spec_decode_efficiency": ("v0_efficiency", _GAUGE_TYPES),
    "vllm:num_requests_running": ("running_requests", _GAUGE_TYPES),
    "vllm:generation_tokens_total": ("generation_tokens", _COUNTER_TYPES),
    "vllm:inter_token_latency_seconds_sum": ("itl_seconds_sum", _HIST_TYPES),
    "vllm:inter_token_latency_seconds_count": ("itl_seconds_count", _HIST_TYPES),
    # a histogram despite the ``_total`` name: _count = engine steps, _sum = tokens
    "vllm:iteration_tokens_total_count": ("iteration_steps", _HIST_TYPES),
    "vllm:iteration_tokens_total_sum": ("iteration_tokens", _HIST_TYPES),
    "vllm:request_time_per_output_token_seconds_sum": ("tpot_seconds_sum", _HIST_TYPES),
    "vllm:request_time_per_output_token_seconds_count": ("tpot_seconds_count", _HIST_TYPES),
    "vllm:request_decode_time_seconds_sum": ("decode_seconds_sum", _HIST_TYPES),
    "vllm:request_decode_time_seconds_count": ("decode_seconds_count", _HIST_TYPES),
    "vllm:request_prefill_time_seconds_sum": ("prefill_seconds_sum", _HIST_TYPES),
    "vllm:request_prefill_time_seconds_count": ("prefill_seconds_count", _HIST_TYPES),
    "vllm:request_inference_time_seconds_sum": ("inference_seconds_sum", _HIST_TYPES),
    "vllm:request_inference_time_seconds_count": ("inference_seconds_count", _HIST_TYPES),
    "vllm:request_generation_tokens_sum": ("request_tokens_sum", _HIST_TYPES),
    "vllm:request_generation_tokens_count": ("request_tokens_count", _HIST_TYPES),
    "process_start_time_seconds": ("process_start_time", _GAUGE_TYPES),
}
_SPEC_FIELDS = frozenset(
    {
        "drafts",
        "draft_tokens",
        "accepted",
        "per_pos",
        "v0_emitted",
        "v0_acceptance_rate",
        "v0_efficiency",
    }
)
#: Snapshot fields read straight from the page (the load and time families).
_LOAD_FIELDS = (
    "running_requests",
    "generation_tokens",
    "itl_seconds_sum",
    "itl_seconds_count",
    "iteration_steps",
    "iteration_tokens",
    "tpot_seconds_sum",
    "tpot_seconds_count",
    "decode_seconds_sum",
    "decode_seconds_count",
    "prefill_seconds_sum",
    "prefill_seconds_count",
    "inference_seconds_sum",
    "inference_seconds_count",
    "request_tokens_sum",
    "request_tokens_count",
)


def filter_exposition(text: str) -> str:
    """Keep only the sample, ``# HELP`` and ``# TYPE`` lines of the families specwise reads."""
    kept: list[str] = []
    append = kept.append
    for line in text.split("\n"):
        if line.startswith("#"):
            if line.startswith(_COMMENT_PREFIXES) and "_created " not in line:
                append(line)
        elif line.startswith(_PREFIXES):
            head = line.split("{", 1)[0] if "{" in line else line.split(" ", 1)[0]
            if not head.endswith(("_created", "_bucket")):
                append(line)
    if not kept:
        return ""
    return "\n".join(kept) + "\n"


def _normalize(name: str) -> str:
    return "vllm:" + name[5:] if name.startswith("vllm_") else name


@dataclass
class _Series:
    values: dict[str, float] = field(default_factory=dict)
    per_pos: dict[int, float] = field(default_factory=dict)


def parse_exposition(
    text: str,
    *,
    timestamp: float,
    source: str = "",
    extra_labels: Mapping[str, str] | None = None,
) -> list[Snapshot]:
    """Snapshots for every engine series in a /metrics page: spec-decode series, and
    load-only Snapshots (``spec_families=False``) of engines running without speculation.

    ``extra_labels`` (e.g. ``{"instance": "host:8000"}``) are added to every Snapshot so
    engines of different targets never collide; labels already on the page win.
    """
    if text and not text.endswith("\n"):
        raise ParseError(
            f"The metrics page from {source or 'the input'} ends mid-line (last line "
            f"{text.rsplit(chr(10), 1)[-1][:80]!r}), so it was truncated; scrape it again.",
            url=source or None,
            line=text.rsplit("\n", 1)[-1][:200],
        )
    filtered = filter_exposition(text)
    if text.strip() and not _SAMPLE_LINE.search(text):
        first = text.strip().splitlines()[0][:80]
        raise ParseError(
            f"The page from {source or 'the input'} holds no Prometheus sample at all (it "
            f"starts {first!r}); check that the URL serves vLLM's /metrics.",
            url=source or None,
            line=first,
        )
    series: dict[tuple[tuple[str, str], ...], _Series] = {}
    process_start: float | None = None
    try:
        families = list(text_string_to_metric_families(filtered))
    except (ValueError, IndexError, TypeError) as exc:
        raise ParseError(
            f"The metrics page from {source or 'the input'} is not valid Prometheus text "
            f"format ({exc}); check that the URL serves vLLM's /metrics.",
            url=source or None,
        ) from exc
    for family in families:
        for sample in family.samples:
            entry = _SAMPLES.get(_normalize(sample.name))
            if entry is None:
                continue
            name, types = entry
            if family.type not in types:
                continue
            if name == "process_start_time":
                process_start = sample.value
                continue
            labels = dict(sample.labels)
            position = labels.pop("position", None)
            key = tuple(sorted(labels.items()))
            s = series.setdefault(key, _Series())
            if name == "per_pos":
                if position is None or not position.isdigit():
                    raise ParseError(
                        f"Per-position sample {sample.name}{sample.labels} from "
                        f"{source or 'the input'} has position {position!r}, not an integer "
                        "0..k-1; this is not a vLLM page specwise can read.",
                        url=source or None,
                        metric=sample.name,
                    )
                s.per_pos[int(position)] = sample.value
            else:
                s.values[name] = sample.value
    snapshots: list[Snapshot] = []
    for key, s in sorted(series.items()):
        spec = bool(_SPEC_FIELDS & s.values.keys()) or bool(s.per_pos)
        if not spec and not any(f in s.values for f in _LOAD_FIELDS):
            continue
        labels = dict(key)
        for lk, lv in (extra_labels or {}).items():
            labels.setdefault(lk, lv)
        if spec:
            snapshots.append(_snapshot(labels, s, timestamp, source, process_start))
        else:  # an engine without speculation: its load families only
            snapshots.append(_load_only(labels, s, timestamp, source, process_start))
    return snapshots


def _snapshot(
    labels: dict[str, str],
    s: _Series,
    timestamp: float,
    source: str,
    process_start: float | None,
) -> Snapshot:
    v = s.values
    notes: list[str] = []
    generation: Generation
    if "v0_acceptance_rate" in v or "v0_efficiency" in v or "v0_emitted" in v:
        generation = "v0"
        notes.append(V0_COUNTERS_NOTE)
        draft_tokens = accepted = math.nan
        drafts: float | None = None
    else:
        generation = "v1" if ("drafts" in v or s.per_pos) else "v1-0.8.4"
        missing = [f for f in ("draft_tokens", "accepted") if f not in v]
        if generation == "v1" and "drafts" not in v:
            missing.insert(0, "drafts")
        if missing:
            raise ParseError(
                f"Series {labels} from {source or 'the input'} lacks the spec-decode "
                f"counter(s) {', '.join(missing)}; the page is incomplete or filtered, scrape "
                "the full /metrics page.",
                url=source or None,
                metric=missing[0],
            )
        drafts = v.get("drafts")
        draft_tokens = v["draft_tokens"]
        accepted = v["accepted"]
    per_pos: tuple[float, ...] = ()
    k: int | None = None
    if s.per_pos:
        k = max(s.per_pos) + 1
        if len(s.per_pos) != k:
            absent = sorted(set(range(k)) - s.per_pos.keys())
            notes.append(f"positions {absent} were absent and are counted as 0")
        per_pos = tuple(s.per_pos.get(i, 0.0) for i in range(k))
    return Snapshot(
        labels=labels,
        timestamp=timestamp,
        drafts=drafts,
        draft_tokens=draft_tokens,
        accepted=accepted,
        accepted_per_position=per_pos,
        k=k,
        generation=generation,
        source=source,
        running_requests=v.get("running_requests"),
        generation_tokens=v.get("generation_tokens"),
        itl_seconds_sum=v.get("itl_seconds_sum"),
        itl_seconds_count=v.get("itl_seconds_count"),
        iteration_steps=v.get("iteration_steps"),
        iteration_tokens=v.get("iteration_tokens"),
        tpot_seconds_sum=v.get("tpot_seconds_sum"),
        tpot_seconds_count=v.get("tpot_seconds_count"),
        decode_seconds_sum=v.get("decode_seconds_sum"),
        decode_seconds_count=v.get("decode_seconds_count"),
        prefill_seconds_sum=v.get("prefill_seconds_sum"),
        prefill_seconds_count=v.get("prefill_seconds_count"),
        inference_seconds_sum=v.get("inference_seconds_sum"),
        inference_seconds_count=v.get("inference_seconds_count"),
        request_tokens_sum=v.get("request_tokens_sum"),
        request_tokens_count=v.get("request_tokens_count"),
        process_start_time=process_start,
        v0_acceptance_rate=v.get("v0_acceptance_rate"),
        v0_efficiency=v.get("v0_efficiency"),
        notes=tuple(notes),
    )


def _load_only(
    labels: dict[str, str],
    s: _Series,
    timestamp: float,
    source: str,
    process_start: float | None,
) -> Snapshot:
    """A Snapshot of an engine without spec-decode families: k = 0, spec counters 0."""
    v = s.values
    return Snapshot(
        labels=labels,
        timestamp=timestamp,
        drafts=0.0,
        draft_tokens=0.0,
        accepted=0.0,
        accepted_per_position=(),
        k=0,
        generation="v1",
        source=source,
        running_requests=v.get("running_requests"),
        generation_tokens=v.get("generation_tokens"),
        itl_seconds_sum=v.get("itl_seconds_sum"),
        itl_seconds_count=v.get("itl_seconds_count"),
        iteration_steps=v.get("iteration_steps"),
        iteration_tokens=v.get("iteration_tokens"),
        tpot_seconds_sum=v.get("tpot_seconds_sum"),
        tpot_seconds_count=v.get("tpot_seconds_count"),
        decode_seconds_sum=v.get("decode_seconds_sum"),
        decode_seconds_count=v.get("decode_seconds_count"),
        prefill_seconds_sum=v.get("prefill_seconds_sum"),
        prefill_seconds_count=v.get("prefill_seconds_count"),
        inference_seconds_sum=v.get("inference_seconds_sum"),
        inference_seconds_count=v.get("inference_seconds_count"),
        request_tokens_sum=v.get("request_tokens_sum"),
        request_tokens_count=v.get("request_tokens_count"),
        process_start_time=process_start,
        spec_families=False,
    )
