"""Regression test (no vLLM needed) for a controller bug the end-to-end suite found
(``test_5_closed_loop_off.py``): after turning speculation off, the controller restarted
vLLM again (k = 0 once more) every ``min_dwell`` until the hourly cap or ``stale_after``.

With k = 0 vLLM exports no spec-decode families, so the class gets no new deltas and
``Controller._observed_k`` keeps the k seen before the restart (3). In ``_decide``, once
``min_dwell`` has passed and the class is not yet stale (``stale_after`` > ``min_dwell``),
"observed != gate current_k" resets the gate's current_k to that old 3, the policy again
recommends 0 over "current k = 3 gives 0.53x", and the actuator runs again: a redundant
vLLM restart. Live: two ``("tiny", 0)`` restarts 36 s apart. With the defaults
(min_dwell 30m > stale_after 5m) the class is stale first, which hides it.

Fixed in d4b4e78 (the k seen in the counters counts as deployed only while they arrive);
this was a strict xfail until then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from specwise.actuators import ActuationResult
from specwise.collectors.snapshot import Snapshot
from specwise.config import parse_config
from specwise.controller import Controller

LABELS = {"engine": "0", "instance": "127.0.0.1:8000", "model_name": "tiny-llama"}


class OnThenOff:
    """A random drafter's counters at k = 3, then (after the restart) no spec families."""

    def __init__(self) -> None:
        self.calls = 0

    def collect(self, now: float) -> Sequence[Snapshot]:
        self.calls += 1
        if self.calls > 1:
            return []
        return [
            Snapshot(
                labels=LABELS,
                timestamp=now,
                drafts=3019.0,
                draft_tokens=9057.0,
                accepted=5.0,
                accepted_per_position=(5.0, 0.0, 0.0),
                k=3,
                process_start_time=now - 60,
            )
        ]


class Recorder:
    kind = "command"

    def __init__(self) -> None:
        self.calls: list[tuple[float, int]] = []

    def apply(
        self,
        class_name: str,
        k: int,
        *,
        speculative_config: Mapping[str, Any] | None,
        reason: str,
        now: float,
    ) -> ActuationResult:
        self.calls.append((now, k))
        return ActuationResult(class_name, k, True, now, "restarted")


def test_off_is_applied_once() -> None:
    config = parse_config(
        {
            "controller": {"stale_after": "10m"},
            "source": {"kind": "scrape", "urls": ["http://127.0.0.1:8000/metrics"]},
            "estimator": {"min_drafts": 100},
            "policy": {"min_dwell": "20s", "max_changes_per_hour": 3},
            "classes": [{"name": "tiny", "match": '{model_name="tiny-llama"}', "cost": 0.3}],
        }
    )
    actuator = Recorder()
    controller = Controller(config, source=OnThenOff(), actuator=actuator, clock=lambda: 0.0)
    t0 = 1_800_000_000.0
    controller.step(t0)
    assert actuator.calls == [(t0, 0)]  # passes: the losing drafter is turned off
    for dt in (10.0, 30.0, 60.0, 90.0):
        controller.step(t0 + dt)
    assert actuator.calls == [(t0, 0)]  # was: k = 0 applied again at t0 + 30 and t0 + 60
