"""The load and time families through the Prometheus API, aggregated server-side per class.

Two queries per tick, whatever the number of engines:

- one instant query for every load counter's ``increase()`` over the window and the
  running-request gauge, summed by the class labels; each term tagged (``label_replace``)
  with ``specwise_load="<part>/<field>"``, where part ``spec`` sums the engines that export
  spec-decode counters in the window and ``plain`` the others (``and`` / ``unless`` on
  ``present_over_time`` of their draft-token counter, matched on each engine's full label
  set). A class's plain engines give its load-only delta (T(0, B) from replicas without
  speculation); its spec engines' gains go with its spec delta.
- one bounded range query of ``vllm:num_requests_running`` over the window, split the same
  way (``and`` / ``unless`` the draft-token counter at each step) and counted per class and
  running value (``count_values``): the per-engine batch-size samples, pooled per class,
  whose size follows the distinct values seen, not the number of engines. At most
  :data:`MAX_BATCH_SAMPLES` steps per window, and at most as many samples per class (an even
  pick over the sorted pool, which keeps its distribution).

Pure query text and result folding; :mod:`specwise.collectors.prometheus` sends them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

__all__ = [
    "BATCH_LABEL",
    "LOAD_LABEL",
    "LOAD_METRICS",
    "LOAD_ONLY_LABEL",
    "MAX_BATCH_SAMPLES",
    "Part",
    "batch_grid",
    "batch_query",
    "cap_samples",
    "load_query",
    "split_batch_row",
    "split_load_row",
]

#: CounterDelta field -> sample name (without ``vllm:``/``vllm_``) of the load and time
#: counters whose window gains are read (``iteration_tokens_total`` is a histogram).
LOAD_METRICS: dict[str, str] = {
    "generation_tokens": "generation_tokens_total",
    "itl_seconds_sum": "inter_token_latency_seconds_sum",
    "itl_seconds_count": "inter_token_latency_seconds_count",
    "iteration_steps": "iteration_tokens_total_count",
    "iteration_tokens": "iteration_tokens_total_sum",
    "decode_seconds_sum": "request_decode_time_seconds_sum",
    "decode_seconds_count": "request_decode_time_seconds_count",
    "prefill_seconds_sum": "request_prefill_time_seconds_sum",
    "prefill_seconds_count": "request_prefill_time_seconds_count",
    "inference_seconds_sum": "request_inference_time_seconds_sum",
    "inference_seconds_count": "request_inference_time_seconds_count",
    "request_tokens_sum": "request_generation_tokens_sum",
    "request_tokens_count": "request_generation_tokens_count",
    "tpot_seconds_sum": "request_time_per_output_token_seconds_sum",
    "tpot_seconds_count": "request_time_per_output_token_seconds_count",
}
#: the tag on each row of the combined load query: ``"<part>/<field>"``
LOAD_LABEL = "specwise_load"
#: the running-request value ``count_values`` puts on each batch-sample row
BATCH_LABEL = "specwise_batch"
#: the part (spec / plain engines) on each batch-sample row
PART_LABEL = "specwise_part"
#: the label that keeps a class's load-only running total apart from its spec total in
#: ``PrometheusSource.collect`` (both carry the class labels)
LOAD_ONLY_LABEL = "specwise_load_only"
#: steps of the batch-sample range query per window, and samples kept per class and part
MAX_BATCH_SAMPLES = 240

Part = Literal["spec", "plain"]
_SPEC_COUNTER = "spec_decode_num_draft_tokens_total"


def _tag(expr: str, label: str, value: str) -> str:
    return f'label_replace({expr}, "{label}", "{value}", "", "")'


def load_query(by: str, selector: Callable[[str], str], window: str) -> str:
    """The one instant query of every load gain and the running gauge, per class and part.

    ``selector(name)`` gives the series selector of a sample name (both spellings and the
    source's matchers); ``by`` the class labels; ``window`` a PromQL duration.
    """
    spec = f"present_over_time({selector(_SPEC_COUNTER)}[{window}])"
    terms: list[str] = []
    for fld, name in LOAD_METRICS.items():
        gain = f"increase({selector(name)}[{window}])"
        terms.append(_tag(f"sum by ({by}) ({gain} and {spec})", LOAD_LABEL, f"spec/{fld}"))
        terms.append(_tag(f"sum by ({by}) ({gain} unless {spec})", LOAD_LABEL, f"plain/{fld}"))
    running = selector("num_requests_running")
    terms.append(_tag(f"sum by ({by}) ({running} and {spec})", LOAD_LABEL, "spec/running_requests"))
    terms.append(
        _tag(f"sum by ({by}) ({running} unless {spec})", LOAD_LABEL, "plain/running_requests")
    )
    return " or ".join(terms)


def split_load_row(labels: Mapping[str, str]) -> tuple[Part, str, dict[str, str]] | None:
    """(part, field, class labels) of one row of :func:`load_query`; None if untagged."""
    tag = labels.get(LOAD_LABEL, "")
    part, _, fld = tag.partition("/")
    if part not in ("spec", "plain") or not fld:
        return None
    rest = {n: v for n, v in labels.items() if n != LOAD_LABEL}
    return ("spec" if part == "spec" else "plain"), fld, rest


def batch_query(by: str, selector: Callable[[str], str]) -> str:
    """Range query text: per class and part, how many engines run how many requests."""
    running = selector("num_requests_running")
    spec = selector(_SPEC_COUNTER)
    terms = [
        _tag(f'count_values by ({by}) ("{BATCH_LABEL}", {running} and {spec})', PART_LABEL, "spec"),
        _tag(
            f'count_values by ({by}) ("{BATCH_LABEL}", {running} unless {spec})',
            PART_LABEL,
            "plain",
        ),
    ]
    return " or ".join(terms)


def split_batch_row(labels: Mapping[str, str]) -> tuple[Part, float, dict[str, str]] | None:
    """(part, running requests, class labels) of one row of :func:`batch_query`."""
    part = labels.get(PART_LABEL, "")
    try:
        value = float(labels.get(BATCH_LABEL, ""))
    except ValueError:
        return None
    if part not in ("spec", "plain") or not math.isfinite(value):
        return None
    rest = {n: v for n, v in labels.items() if n not in (PART_LABEL, BATCH_LABEL)}
    return ("spec" if part == "spec" else "plain"), value, rest


def batch_grid(now: float, window_s: float) -> tuple[float, float, float]:
    """(start, end, step) of the batch-sample range query: at most ``MAX_BATCH_SAMPLES``
    step-aligned points inside ``(now - window_s, now]`` (never past ``now``)."""
    step = max(1.0, math.ceil(window_s / MAX_BATCH_SAMPLES))
    end = math.floor(now / step) * step
    points = max(1, min(MAX_BATCH_SAMPLES, math.floor(window_s / step)))
    return end - (points - 1) * step, end, step


def cap_samples(
    counts: Iterable[tuple[float, float]], limit: int = MAX_BATCH_SAMPLES
) -> tuple[float, ...]:
    """Samples from (running value, engines seen at it) pairs: each value repeated by its
    count; beyond ``limit``, an even pick over the sorted pool (its quantiles)."""
    pool: dict[float, int] = {}
    for value, n in counts:
        if math.isfinite(n) and n > 0:
            pool[value] = pool.get(value, 0) + round(n)
    total = sum(pool.values())
    if total == 0:
        return ()
    ordered = sorted(pool.items())
    if total <= limit:
        return tuple(v for v, n in ordered for _ in range(n))
    # the value at each of ``limit`` evenly spaced ranks of the pool
    picks = [(i + 0.5) * total / limit for i in range(limit)]
    out: list[float] = []
    seen = 0
    it = iter(ordered)
    value, n = next(it)
    for rank in picks:
        while seen + n <= rank:
            seen += n
            value, n = next(it)
        out.append(value)
    return tuple(out)
