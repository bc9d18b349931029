"""Running per-class totals of the Prometheus source, built from successive windows.

``PrometheusSource.collect`` adds each window's per-class increases to the running total of
that class (a new total when the window's k differs); a class's load-only total (engines
without speculation) carries :data:`~specwise.collectors.prom_load.LOAD_ONLY_LABEL` so it
never shares a key with the class's spec total.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from specwise.collectors.prom_load import LOAD_METRICS, LOAD_ONLY_LABEL
from specwise.collectors.snapshot import CounterDelta, Snapshot

__all__ = ["add_window", "load_of", "total_labels", "with_load"]


def _opt_add(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def load_of(d: CounterDelta) -> dict[str, float | None]:
    """The load gains and running gauge of a delta, by field."""
    return {
        "running_requests": d.running_requests,
        **{f: getattr(d, f) for f in LOAD_METRICS},
    }


def with_load(delta: CounterDelta, values: Mapping[str, float | None]) -> CounterDelta:
    """``delta`` with the load gains and running gauge of ``values`` (absent: None)."""
    return dataclasses.replace(
        delta,
        running_requests=values.get("running_requests"),
        generation_tokens=values.get("generation_tokens"),
        itl_seconds_sum=values.get("itl_seconds_sum"),
        itl_seconds_count=values.get("itl_seconds_count"),
        iteration_steps=values.get("iteration_steps"),
        iteration_tokens=values.get("iteration_tokens"),
        decode_seconds_sum=values.get("decode_seconds_sum"),
        decode_seconds_count=values.get("decode_seconds_count"),
        prefill_seconds_sum=values.get("prefill_seconds_sum"),
        prefill_seconds_count=values.get("prefill_seconds_count"),
        inference_seconds_sum=values.get("inference_seconds_sum"),
        inference_seconds_count=values.get("inference_seconds_count"),
        request_tokens_sum=values.get("request_tokens_sum"),
        request_tokens_count=values.get("request_tokens_count"),
        tpot_seconds_sum=values.get("tpot_seconds_sum"),
        tpot_seconds_count=values.get("tpot_seconds_count"),
    )


def total_labels(d: CounterDelta) -> dict[str, str]:
    """A running total's labels: a load-only total is kept apart from the class's spec one."""
    return dict(d.labels) if d.spec_families else {**d.labels, LOAD_ONLY_LABEL: "true"}


def add_window(prev: Snapshot | None, d: CounterDelta, now: float, source: str) -> Snapshot:
    """``prev`` (the running total) plus one window; a new total when there is none or the
    window's k differs from it (positions of another k are not the same counters)."""
    load = load_of(d)
    if prev is None or prev.k != d.k:
        return Snapshot(
            labels=total_labels(d),
            timestamp=now,
            drafts=d.drafts,
            draft_tokens=d.draft_tokens,
            accepted=d.accepted,
            accepted_per_position=d.accepted_per_position,
            k=d.k,
            generation=d.generation,
            source=source,
            running_requests=d.running_requests,
            generation_tokens=load["generation_tokens"],
            itl_seconds_sum=load["itl_seconds_sum"],
            itl_seconds_count=load["itl_seconds_count"],
            iteration_steps=load["iteration_steps"],
            iteration_tokens=load["iteration_tokens"],
            decode_seconds_sum=load["decode_seconds_sum"],
            decode_seconds_count=load["decode_seconds_count"],
            prefill_seconds_sum=load["prefill_seconds_sum"],
            prefill_seconds_count=load["prefill_seconds_count"],
            inference_seconds_sum=load["inference_seconds_sum"],
            inference_seconds_count=load["inference_seconds_count"],
            request_tokens_sum=load["request_tokens_sum"],
            request_tokens_count=load["request_tokens_count"],
            tpot_seconds_sum=load["tpot_seconds_sum"],
            tpot_seconds_count=load["tpot_seconds_count"],
            # the total starts here: a reader holding an older total takes it as a restart
            process_start_time=d.start,
            spec_families=d.spec_families,
            batch_samples=d.batch_samples,
            notes=d.notes,
            classified=True,
        )
    total = {f: _opt_add(getattr(prev, f), load[f]) for f in LOAD_METRICS}
    return Snapshot(
        labels=total_labels(d),
        timestamp=now,
        drafts=_opt_add(prev.drafts, d.drafts),
        draft_tokens=prev.draft_tokens + d.draft_tokens,
        accepted=prev.accepted + d.accepted,
        accepted_per_position=tuple(
            a + b for a, b in zip(prev.accepted_per_position, d.accepted_per_position, strict=True)
        ),
        k=d.k,
        generation=d.generation,
        source=source,
        running_requests=d.running_requests,
        generation_tokens=total["generation_tokens"],
        itl_seconds_sum=total["itl_seconds_sum"],
        itl_seconds_count=total["itl_seconds_count"],
        iteration_steps=total["iteration_steps"],
        iteration_tokens=total["iteration_tokens"],
        decode_seconds_sum=total["decode_seconds_sum"],
        decode_seconds_count=total["decode_seconds_count"],
        prefill_seconds_sum=total["prefill_seconds_sum"],
        prefill_seconds_count=total["prefill_seconds_count"],
        inference_seconds_sum=total["inference_seconds_sum"],
        inference_seconds_count=total["inference_seconds_count"],
        request_tokens_sum=total["request_tokens_sum"],
        request_tokens_count=total["request_tokens_count"],
        tpot_seconds_sum=total["tpot_seconds_sum"],
        tpot_seconds_count=total["tpot_seconds_count"],
        process_start_time=prev.process_start_time,
        spec_families=d.spec_families,
        batch_samples=d.batch_samples,
        notes=d.notes,
        classified=True,
    )
