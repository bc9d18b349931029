"""What "off" (k = 0) means, and how it is applied: the one home of every k = 0 rule.

vLLM cannot draft zero tokens through ``num_speculative_tokens``, so "off" has two forms
with different costs (docs/design.md):

- ``restart``: restart without ``--speculative-config``. Minutes of lost capacity, and the
  engine exports no spec-decode counters afterwards (nothing left to re-check alpha with).
- ``schedule``: keep the speculative config and add a ``num_speculative_tokens_per_batch_size``
  entry with k = 0 at every batch size. No restart of the drafter's config, but such an
  engine ran 6-22% slower than one started without it (vLLM #49548), and it still exports
  its k positions (all zero), so the counters alone do not show that it is off.

The policy picks the form (:func:`choose_off`), the controller renders the deployed config
(:func:`deployment_config`), reads the k really in force back from the counters
(:func:`effective_k`) and explains an engine that is off (:func:`off_reason`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

__all__ = [
    "ALL_OFF_SCHEDULE",
    "RESTART_OFF",
    "SCHEDULE_OFF",
    "OffMode",
    "choose_off",
    "deployment_config",
    "effective_k",
    "is_schedule_off",
    "off_on_purpose",
    "off_reason",
    "speculative_config_for",
]

OffMode = Literal["schedule", "restart"]

#: The schedule that drafts nothing at any batch size (vLLM reuses the last range's k).
ALL_OFF_SCHEDULE: tuple[tuple[int, int, int], ...] = ((1, 1 << 20, 0),)

SCHEDULE_OFF = (
    "a batch-size schedule entry with k = 0 keeps the speculative config: no restart, but "
    "such an engine ran 6-22% slower than one started without it (vLLM #49548)"
)
RESTART_OFF = (
    "restart without --speculative-config: minutes of lost capacity, and no acceptance "
    "counters afterwards (re-check alpha on a canary)"
)


def choose_off(
    mode: Literal["auto", "schedule", "restart"],
    schedule: Sequence[tuple[int, int, int]] | None,
    *,
    overhead: float,
) -> tuple[OffMode, str, float | None]:
    """The form of k = 0 to recommend: (mode, its cost in words, its speedup if not 1.0).

    "auto" keeps the config (a schedule entry) when a batch-size schedule still drafts at
    some batch size, else restarts without speculation. A schedule that drafts nowhere
    runs ``1 - overhead`` of plain decoding's speed.
    """
    drafts_somewhere = schedule is not None and any(e[2] > 0 for e in schedule)
    if mode == "schedule" or (mode == "auto" and drafts_somewhere):
        return "schedule", SCHEDULE_OFF, None if drafts_somewhere else 1.0 - overhead
    return "restart", RESTART_OFF, None


def speculative_config_for(template: Mapping[str, Any], k: int) -> dict[str, Any] | None:
    """The ``--speculative-config`` JSON for k; None for k = 0 (start without speculation)."""
    if k == 0:
        return None
    config = dict(template)
    config["num_speculative_tokens"] = k
    return config


def deployment_config(
    template: Mapping[str, Any],
    *,
    k: int,
    off_mode: OffMode | None,
    schedule: Sequence[tuple[int, int, int]] | None,
    keep_k: int,
) -> dict[str, Any] | None:
    """The speculative config that deploys k (None: restart without speculation).

    k = 0 in ``schedule`` form keeps ``keep_k`` (the k the engine runs now) as
    ``num_speculative_tokens`` and drafts nothing at any batch size; a k > 0 with a schedule
    deploys the schedule's largest k and the schedule itself.
    """
    if k == 0 and off_mode == "schedule":
        spec = speculative_config_for(template, keep_k) or {}
        spec["num_speculative_tokens_per_batch_size"] = [list(e) for e in ALL_OFF_SCHEDULE]
        return spec
    if schedule is not None and k > 0:
        spec = speculative_config_for(template, max(e[2] for e in schedule)) or {}
        spec["num_speculative_tokens_per_batch_size"] = [list(e) for e in schedule]
        return spec
    return speculative_config_for(template, k)


def is_schedule_off(spec: Mapping[str, Any] | None) -> bool:
    """Whether a deployed config is "off" in schedule form (k = 0 at every batch size)."""
    if not spec:
        return False
    entries = spec.get("num_speculative_tokens_per_batch_size")
    if not isinstance(entries, Sequence) or not entries:
        return False
    return all(isinstance(e, Sequence) and len(e) == 3 and e[2] == 0 for e in entries)


def effective_k(observed_k: int | None, *, schedule_off: bool) -> int | None:
    """The k in force from the k the counters show (their number of positions).

    An engine turned off through a schedule entry still exports its k positions, all
    zero: while the config specwise applied is such a schedule, the k in force is 0.
    """
    if observed_k is None:
        return None
    return 0 if schedule_off else observed_k


def off_on_purpose(deployed: int | None, *, sources_answered: bool) -> bool:
    """An engine restarted without speculation exports no spec counters: while its sources
    answer, a class at k = 0 is off on purpose, not stale."""
    return deployed == 0 and sources_answered


def off_reason(
    reason: str, *, deployed: int | None, evidence: bool, recommended_k: int
) -> str | None:
    """Why an engine that is off stays off, or None when it is not off (``deployed`` != 0)."""
    if deployed != 0:
        return None
    if evidence and recommended_k == 0:
        return f"speculation is off (k = 0), as the last evidence says: {reason}"
    if not evidence:
        return (
            "speculation is off (k = 0): vLLM exports no acceptance counters, so there is "
            "nothing to re-check until a re-enable probe ([probes], `specwise probe CLASS`) "
            "measures alpha again"
        )
    return None
