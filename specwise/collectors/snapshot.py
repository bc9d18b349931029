"""The normalized records every collector produces, and the Protocol they satisfy.

A ``Snapshot`` holds the *cumulative* spec-decode counters of one source series (one engine
of one model on one target) at one time. A ``CounterDelta`` holds what the counters gained
over a window, for one series or summed over a workload class: the estimator's input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "CounterDelta",
    "Generation",
    "Snapshot",
    "SnapshotSource",
    "labels_key",
]

#: Which vLLM metrics generation a series came from (docs/vllm-metrics.md#which-vllm-is-this):
#: ``v1`` (0.8.5+: drafts and per-position counters), ``v1-0.8.4`` (draft and accepted token
#: counters only), ``v0`` (lifetime gauges; its counters are broken and never used).
Generation = Literal["v1", "v1-0.8.4", "v0"]


def labels_key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """A hashable, order-independent key for a label set."""
    return tuple(sorted(labels.items()))


@dataclass(frozen=True)
class Snapshot:
    """Cumulative spec-decode counters of one source series at one time.

    ``drafts`` is None where the generation has no drafts counter (0.8.4, V0);
    ``accepted_per_position[i]`` counts drafts whose accepted prefix reached position i
    (0-based) and is empty where positions are not exported; ``k`` is the number of
    positions (the deployed num_speculative_tokens) or None when unknown.
    """

    labels: Mapping[str, str]
    timestamp: float
    drafts: float | None
    draft_tokens: float
    accepted: float
    accepted_per_position: tuple[float, ...] = ()
    k: int | None = None
    generation: Generation = "v1"
    source: str = ""
    running_requests: float | None = None
    generation_tokens: float | None = None
    itl_seconds_sum: float | None = None
    itl_seconds_count: float | None = None
    process_start_time: float | None = None
    #: Load and time families (docs/design.md#the-cost-side), cumulative; None when the
    #: page lacks them: engine steps and tokens (``vllm:iteration_tokens_total`` _count and
    #: _sum), per-request decode time and time per output token (_sum, _count).
    iteration_steps: float | None = None
    iteration_tokens: float | None = None
    decode_seconds_sum: float | None = None
    decode_seconds_count: float | None = None
    prefill_seconds_sum: float | None = None
    prefill_seconds_count: float | None = None
    inference_seconds_sum: float | None = None
    inference_seconds_count: float | None = None
    request_tokens_sum: float | None = None
    request_tokens_count: float | None = None
    tpot_seconds_sum: float | None = None
    tpot_seconds_count: float | None = None
    #: False for an engine running without speculation (its page has no spec-decode
    #: families): a load-only Snapshot, k = 0, spec counters 0. It feeds the plain-decoding
    #: step T(0, B), never the acceptance estimator.
    spec_families: bool = True
    #: running-request samples a windowed source saw since its previous Snapshot of this
    #: series (the Prometheus source's range query, a log's lines); empty for a scrape, whose
    #: one sample is ``running_requests`` at ``timestamp``
    batch_samples: tuple[float, ...] = ()
    #: V0 only: the lifetime gauges vLLM V0 exports instead of usable counters.
    v0_acceptance_rate: float | None = None
    v0_efficiency: float | None = None
    notes: tuple[str, ...] = ()
    #: True when ``labels`` already are class labels (the Prometheus source classifies
    #: server-side): ``sum_by_class`` keeps them instead of classifying them again.
    classified: bool = False

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        return labels_key(self.labels)

    @property
    def mean_acceptance_length(self) -> float | None:
        """vLLM's 1 + accepted / drafts (since start); None without drafts."""
        if self.drafts is None or self.drafts <= 0:
            return None
        return 1.0 + self.accepted / self.drafts


@dataclass(frozen=True)
class CounterDelta:
    """What the counters gained over [start, end] for one series or a whole class.

    ``restarts`` counts counter resets seen inside the window (each handled as Prometheus'
    increase() does: the value after a drop is the gain since the restart).
    """

    labels: Mapping[str, str]
    start: float
    end: float
    drafts: float | None
    draft_tokens: float
    accepted: float
    accepted_per_position: tuple[float, ...] = ()
    k: int | None = None
    generation: Generation = "v1"
    restarts: int = 0
    series: int = 1
    generation_tokens: float | None = None
    itl_seconds_sum: float | None = None
    itl_seconds_count: float | None = None
    running_requests: float | None = None
    iteration_steps: float | None = None
    iteration_tokens: float | None = None
    decode_seconds_sum: float | None = None
    decode_seconds_count: float | None = None
    prefill_seconds_sum: float | None = None
    prefill_seconds_count: float | None = None
    inference_seconds_sum: float | None = None
    inference_seconds_count: float | None = None
    request_tokens_sum: float | None = None
    request_tokens_count: float | None = None
    tpot_seconds_sum: float | None = None
    tpot_seconds_count: float | None = None
    #: per-engine running-request samples seen inside the window (the batch-size
    #: distribution), pooled over the class's engines
    batch_samples: tuple[float, ...] = ()
    #: False when every series of the delta ran without speculation (see Snapshot)
    spec_families: bool = True
    partial: bool = False
    notes: tuple[str, ...] = field(default=())
    #: True when ``labels`` already are class labels (see ``Snapshot.classified``).
    classified: bool = False

    @property
    def mean_acceptance_length(self) -> float | None:
        """vLLM's 1 + A/D over the window; None without drafts."""
        if self.drafts is None or self.drafts <= 0:
            return None
        return 1.0 + self.accepted / self.drafts


@runtime_checkable
class SnapshotSource(Protocol):
    """Anything that yields cumulative Snapshots: a /metrics scrape, a capture file, a log,
    the Prometheus API (which accumulates server-side increases), the simulator."""

    def collect(self, now: float) -> Sequence[Snapshot]:
        """Read the source once; ``now`` is the caller's clock (Unix seconds)."""
        ...
