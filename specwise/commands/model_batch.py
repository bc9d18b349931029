"""``specwise model --batch``: the speedup map over k and batch size, and its schedule.

Pure: a :class:`~specwise.step_cost.StepCost` (T(k, B)) and a survival curve in, the map
S(k, B) = E(k) T(0, B) / T(k, B), the best k at every batch size 1..max_batch_size, and the
compressed ``num_speculative_tokens_per_batch_size`` schedule out (docs/design.md).

Inside a schedule, a k = 0 band is not plain decoding: the engine was launched with a
drafter and keeps KV lookahead slots reserved (vLLM #49548), so such a band is priced
``off_overhead`` slower than plain decoding. Where plain decoding wins at some batch sizes
the schedule therefore keeps the best k >= 1 there unless it loses more than that overhead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from specwise.model import RECOMMENDED_K_TOLERANCE, recommended_k_from_speedups
from specwise.policies.schedule import ScheduleEntry, compress_schedule, speculative_config
from specwise.step_cost import (
    SCHEDULE_OFF_OVERHEAD,
    SpecConfig,
    StepCost,
    speedup_at_batch,
)

__all__ = [
    "BatchMap",
    "batch_columns",
    "batch_map",
    "step_cost_from_flags",
]

#: Defaults of the flags (documented in ``specwise model --help``): a mid-size model on one
#: GPU. The memory-bound step, the tokens per step where it turns compute-bound, and past
#: the knee each verified token costs base / knee (the roofline is continuous there).
DEFAULT_BASE_MS = 20.0
DEFAULT_KNEE_TOKENS = 256.0
DEFAULT_MAX_BATCH_SIZE = 256

#: Band edges below this batch size sit where prefills move the running count (#49548).
_LOW_EDGE = 16


def step_cost_from_flags(
    *,
    cost: float,
    base_ms: float = DEFAULT_BASE_MS,
    knee_tokens: float = DEFAULT_KNEE_TOKENS,
    per_token_us: float | None = None,
    draft_ms: float | None = None,
    draft_per_seq_us: float = 0.0,
    verify_slope: float = 0.0,
) -> StepCost:
    """The StepCost the flags describe (milliseconds and microseconds in, seconds out).

    ``per_token_us`` defaults to base / knee (a continuous roofline); ``draft_ms`` to
    ``cost`` x base (the preset's c: one drafter step over a plain memory-bound step).
    """
    base = base_ms / 1e3
    knee = float(knee_tokens)
    if per_token_us is None:
        per_token = base / knee if 0.0 < knee < float("inf") else 0.0
    else:
        per_token = per_token_us / 1e6
    draft_base = cost * base if draft_ms is None else draft_ms / 1e3
    return StepCost(
        base=base,
        per_token=per_token,
        knee=knee,
        draft_base=draft_base,
        draft_per_seq=draft_per_seq_us / 1e6,
        verify_per_draft=verify_slope * base,
    )


def batch_columns(max_batch_size: int) -> list[int]:
    """The batch sizes the table shows: powers of two up to ``max_batch_size``, and it."""
    cols = []
    b = 1
    while b < max_batch_size:
        cols.append(b)
        b *= 2
    cols.append(max_batch_size)
    return cols


@dataclass(frozen=True)
class BatchMap:
    """The speedup map and what to run. ``speedups[k][B - 1]`` = S(k, B) for B in
    1..max_batch_size; ``best_k[B - 1]`` the recommended k there when each batch size could
    run its own k (0 = plain decoding wins); ``schedule`` the bands a schedule runs (k = 0
    bands priced ``off_overhead`` slower); ``config`` what to deploy."""

    cost: StepCost
    k_max: int
    max_batch_size: int
    speedups: tuple[tuple[float, ...], ...]
    best_k: tuple[int, ...]
    schedule_k: tuple[int, ...]
    schedule: tuple[ScheduleEntry, ...]
    config: SpecConfig
    off_overhead: float
    notes: tuple[str, ...]

    def speedup(self, k: int, batch: int) -> float:
        return self.speedups[k][batch - 1]

    def schedule_speedup(self, batch: int) -> float:
        """What the recommended configuration delivers at ``batch`` over plain decoding."""
        k = self.config.k_at(batch)
        if self.config.k == 0:
            return 1.0
        if k == 0:
            return 1.0 / (1.0 + self.off_overhead)
        return self.speedup(k, batch)

    def speculative_config(self, method: str) -> dict[str, Any] | None:
        """vLLM's ``--speculative-config`` JSON for the configuration (None: run without)."""
        if self.config.k == 0:
            return None
        return speculative_config(method, self.config.k, self.config.schedule)

    def to_dict(self, columns: Sequence[int], method: str) -> dict[str, Any]:
        c = self.cost
        return {
            "step_cost": {
                "base_seconds": c.base,
                "per_token_seconds": c.per_token,
                "knee_tokens": c.knee,
                "draft_base_seconds": c.draft_base,
                "draft_per_seq_seconds": c.draft_per_seq,
                "verify_per_draft_seconds": c.verify_per_draft,
            },
            "k_max": self.k_max,
            "max_batch_size": self.max_batch_size,
            "off_overhead": self.off_overhead,
            "batch_sizes": list(columns),
            "map": [
                {"k": k, "speedup": [self.speedup(k, b) for b in columns]}
                for k in range(self.k_max + 1)
            ],
            "best_k": [{"batch_size": b, "k": self.best_k[b - 1]} for b in columns],
            "best_k_all": list(self.best_k),
            "schedule": [list(e) for e in self.schedule],
            "recommended": {
                "kind": _kind(self.config),
                "num_speculative_tokens": self.config.k,
                "describe": self.config.describe(),
                "speculative_config": self.speculative_config(method),
            },
            "notes": list(self.notes),
        }


def _kind(config: SpecConfig) -> str:
    if config.k == 0:
        return "off"
    return "schedule" if config.schedule else "single"


def batch_map(
    survival: Sequence[float],
    cost: StepCost,
    *,
    k_max: int,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    tolerance: float = RECOMMENDED_K_TOLERANCE,
    off_overhead: float = SCHEDULE_OFF_OVERHEAD,
) -> BatchMap:
    """Price every (k, B) for k in 0..k_max and B in 1..max_batch_size."""
    sizes = range(1, max_batch_size + 1)
    speedups = tuple(
        tuple(speedup_at_batch(survival, k, b, cost) for b in sizes) for k in range(k_max + 1)
    )
    best: list[int] = []
    in_schedule: list[int] = []
    off_band = 1.0 / (1.0 + off_overhead)
    for i in range(max_batch_size):
        column = [speedups[k][i] for k in range(k_max + 1)]
        k_best = recommended_k_from_speedups(column, tolerance=tolerance)
        best.append(k_best)
        if k_best > 0 or k_max == 0:
            in_schedule.append(k_best)
            continue
        # Plain wins here, but a k = 0 band under a drafter runs slower than plain decoding:
        # price the band at off_band and keep the best k >= 1 when it beats that.
        relative = [1.0, *(v / off_band for v in column[1:])]
        in_schedule.append(recommended_k_from_speedups(relative, tolerance=tolerance))
    schedule = compress_schedule(in_schedule)
    notes: list[str] = []
    if all(k == 0 for k in best):
        config = SpecConfig(0)
        notes.append("Plain decoding wins at every batch size: run without --speculative-config.")
    elif len(schedule) == 1:
        config = SpecConfig(schedule[0][2])
        if len(set(best)) > 1:
            notes.append(
                "The best k differs by batch size only where plain decoding wins, and a "
                f"k = 0 band would run {off_overhead:.0%} slower than plain decoding under a "
                "drafter (vLLM #49548), so one k is recommended."
            )
    else:
        config = SpecConfig(max(k for _, _, k in schedule), schedule)
    notes.extend(_schedule_notes(config, off_overhead))
    return BatchMap(
        cost=cost,
        k_max=k_max,
        max_batch_size=max_batch_size,
        speedups=speedups,
        best_k=tuple(best),
        schedule_k=tuple(in_schedule),
        schedule=schedule,
        config=config,
        off_overhead=off_overhead,
        notes=tuple(notes),
    )


def _schedule_notes(config: SpecConfig, off_overhead: float) -> list[str]:
    if not config.schedule:
        return []
    notes = []
    zero = [(a, b) for a, b, k in config.schedule if k == 0]
    if zero:
        bands = ", ".join(f"{a}-{b}" for a, b in zero)
        notes.append(
            f"k = 0 band(s) at batch sizes {bands}: the engine keeps KV lookahead slots "
            f"reserved there (vLLM #49548) and runs ~{off_overhead:.0%} slower than one "
            "launched without a drafter; if most of your traffic sits there, restart without "
            "speculation instead."
        )
    edges = [b for _, b, _ in config.schedule[:-1]]
    low = [e for e in edges if e < _LOW_EDGE]
    if low:
        notes.append(
            f"Band edge(s) at batch size {', '.join(str(e) for e in low)}: prefills move the "
            "running count across a low edge every few steps and k flaps (vLLM #49548 "
            "measured ~232 -> 24-157 tok/s); keep edges away from where your server sits "
            "(specwise recommend places them with margins from the measured distribution)."
        )
    notes.append(
        "num_speculative_tokens_per_batch_size needs vLLM with dynamic speculative decoding "
        "(#32374) and is ignored with data parallelism > 1."
    )
    return notes
