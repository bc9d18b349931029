"""vLLM's ``num_speculative_tokens_per_batch_size``: build, check and render a schedule.

A schedule is a list of ``[start_bs, end_bs, k]`` (docs/vllm-metrics.md#setting-k): ranges
inclusive and positive, start <= end, non-overlapping, the first starting at 1, k >= 0
(0 = no drafts at those batch sizes) and k <= ``num_speculative_tokens``; the tail past the
last range reuses the last k. It needs vLLM with dynamic speculative decoding (PR #32374),
is ignored with ``--data-parallel-size > 1``, and on Model Runner V1 works only for ngram,
eagle, eagle3, mtp, draft_model and dflash.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from specwise.errors import ConfigError

__all__ = [
    "ScheduleEntry",
    "compress_schedule",
    "schedule_k_at",
    "speculative_config",
    "validate_schedule",
]

#: One ``[start_bs, end_bs, k]`` range, inclusive.
ScheduleEntry = tuple[int, int, int]


def compress_schedule(best_k: Sequence[int]) -> tuple[ScheduleEntry, ...]:
    """Ranges from the best k at batch sizes 1, 2, ..., len(best_k) (index 0 = batch 1)."""
    if not best_k:
        raise ConfigError("a schedule needs the best k for at least batch size 1", field="schedule")
    entries: list[ScheduleEntry] = []
    start = 1
    for bs in range(2, len(best_k) + 1):
        if best_k[bs - 1] != best_k[bs - 2]:
            entries.append((start, bs - 1, int(best_k[bs - 2])))
            start = bs
    entries.append((start, len(best_k), int(best_k[-1])))
    return tuple(entries)


def validate_schedule(
    entries: Sequence[Sequence[int]], num_speculative_tokens: int | None = None
) -> tuple[ScheduleEntry, ...]:
    """Check a schedule against vLLM's rules; return it as tuples or raise ConfigError."""
    out: list[ScheduleEntry] = []
    previous_end = 0
    for n, entry in enumerate(entries):
        if len(entry) != 3 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in entry
        ):
            raise ConfigError(
                f"schedule entry {n} = {list(entry)!r} must be three whole numbers "
                "[start_bs, end_bs, k]",
                field="num_speculative_tokens_per_batch_size",
            )
        start, end, k = (int(v) for v in entry)
        if n == 0 and start != 1:
            raise ConfigError(
                f"the first schedule entry starts at batch size {start}; it must start at 1",
                field="num_speculative_tokens_per_batch_size",
            )
        if start < 1 or end < start or start <= previous_end:
            raise ConfigError(
                f"schedule entry {n} = {list(entry)!r} must be a positive range with start <= "
                f"end that starts after the previous end ({previous_end})",
                field="num_speculative_tokens_per_batch_size",
            )
        if k < 0 or (num_speculative_tokens is not None and k > num_speculative_tokens):
            raise ConfigError(
                f"schedule entry {n} has k = {k}; it must lie in 0..num_speculative_tokens "
                f"({num_speculative_tokens})",
                field="num_speculative_tokens_per_batch_size",
            )
        out.append((start, end, k))
        previous_end = end
    if not out:
        raise ConfigError(
            "the schedule is empty; give at least [[1, N, k]]",
            field="num_speculative_tokens_per_batch_size",
        )
    return tuple(out)


def schedule_k_at(entries: Sequence[ScheduleEntry], batch_size: int) -> int:
    """The k vLLM runs at ``batch_size``: gaps and the tail reuse the previous entry's k."""
    k = entries[0][2]
    for start, _end, entry_k in entries:
        if start > batch_size:
            break
        k = entry_k
    return k


def speculative_config(
    method: str,
    num_speculative_tokens: int,
    schedule: Sequence[ScheduleEntry] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``--speculative-config`` JSON object for k (and an optional schedule).

    k = 0 everywhere cannot be written this way (vLLM wants num_speculative_tokens > 0):
    drop ``--speculative-config`` to restart without speculation instead.
    """
    if num_speculative_tokens < 1:
        raise ConfigError(
            f"num_speculative_tokens = {num_speculative_tokens} cannot be written to "
            "--speculative-config; to turn speculation off, restart without that flag",
            field="num_speculative_tokens",
        )
    config: dict[str, Any] = {"method": method, **extra}
    config["num_speculative_tokens"] = num_speculative_tokens
    if schedule is not None:
        checked = validate_schedule(schedule, num_speculative_tokens)
        config["num_speculative_tokens_per_batch_size"] = [list(e) for e in checked]
    return config
