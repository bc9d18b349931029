"""The controller's per-class bookkeeping of actuations and of the series behind a class.

:class:`ActuationRecords` keeps what each actuation did: applied changes and dry-run
proposals counted apart, the last outcome (or error), and the k = 0 that specwise itself
applied (in which form). :class:`SeriesLabels` remembers the values of the alert rules'
class labels (e.g. ``model_name``) that a class's series carry, so an alert on vLLM's own
series can join on them. Neither decides anything (see :mod:`specwise.controller.decide`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from specwise.collectors.classes import CLASS_LABEL, ClassConfig
from specwise.collectors.snapshot import CounterDelta
from specwise.controller.actuators import ActuationResult
from specwise.policies.off import is_schedule_off

__all__ = ["ActuationRecords", "SeriesLabels"]

LabelSet = tuple[tuple[str, str], ...]


class ActuationRecords:
    """Per class: changes applied, proposals made, the last outcome, and specwise's own k = 0."""

    def __init__(self) -> None:
        self.changes: Counter[str] = Counter()  # applied (file written, command run)
        self.proposals: Counter[str] = Counter()  # dry-run: proposed, nothing deployed
        self.last_proposal: dict[str, float] = {}
        self.outcome: dict[str, tuple[str, str]] = {}  # (detail, error)
        self.turned_off: set[str] = set()  # k = 0 by specwise's own applied decision
        # k = 0 applied as a schedule entry: (the kept num_speculative_tokens, when)
        self.schedule_off: dict[str, tuple[int, float]] = {}

    def failed(self, name: str, error: str) -> None:
        self.outcome[name] = ("", error)

    def refused(self, name: str, detail: str) -> None:
        self.outcome[name] = (detail, "")

    def proposed(self, name: str, result: ActuationResult) -> None:
        self.outcome[name] = (_detail(result), "")
        self.proposals[name] += 1
        self.last_proposal[name] = result.at

    def applied(self, name: str, result: ActuationResult, spec: Mapping[str, Any] | None) -> str:
        """Record an applied change; returns its one-line detail."""
        detail = _detail(result)
        self.outcome[name] = (detail, "")
        self.changes[name] += 1
        if result.k == 0:
            self.turned_off.add(name)
        else:
            self.turned_off.discard(name)
        if spec is not None and is_schedule_off(spec):
            self.schedule_off[name] = (int(spec["num_speculative_tokens"]), result.at)
        else:
            self.schedule_off.pop(name, None)
        return detail

    def check_schedule_off(self, name: str, delta: CounterDelta, *, min_dwell: float) -> None:
        """Forget a schedule-form k = 0 once the counters show another config: another k,
        or drafts a dwell after the change (someone turned speculation back on)."""
        off = self.schedule_off.get(name)
        if off is None:
            return
        keep, at = off
        if (delta.k is not None and delta.k != keep) or (
            delta.draft_tokens > 0 and delta.start >= at + min_dwell
        ):
            del self.schedule_off[name]

    def off_by_specwise(self, name: str, current_k: int | None) -> bool:
        """k = 0 by specwise's own applied decision, and still 0 (nobody turned it back on)."""
        if name in self.turned_off and current_k not in (0, None):
            self.turned_off.discard(name)
        return name in self.turned_off


def _detail(result: ActuationResult) -> str:
    """What an actuation did, with the command's exit status and last line when it ran one."""
    if result.exit_status is None:
        return result.detail
    line = result.last_line
    return f"{result.detail} (exit {result.exit_status}){': ' + line if line else ''}"


class SeriesLabels:
    """The values of ``labels`` (the alert rules' class labels) seen per class."""

    def __init__(self, labels: Sequence[str], classes: ClassConfig) -> None:
        self.labels = tuple(labels) or ("model_name",)
        self.classes = classes
        self.seen: dict[str, set[LabelSet]] = {}

    def add(self, name: str, labels: Mapping[str, str]) -> None:
        self.seen.setdefault(name, set()).add(tuple(labels.items()))

    def note(
        self, deltas: Iterable[CounterDelta], classify: Callable[[Mapping[str, str]], str]
    ) -> None:
        """Remember the label values of each raw series' class (series lacking one skipped)."""
        for d in deltas:
            values = tuple((label, d.labels.get(label, "")) for label in self.labels)
            if all(v for _, v in values):
                name = d.labels.get(CLASS_LABEL) or classify(d.labels)
                self.seen.setdefault(name, set()).add(values)

    def of(self, name: str) -> tuple[dict[str, str], ...]:
        """The class's label values seen on its series, else its equality matchers'."""
        seen = self.seen.get(name)
        if seen:
            return tuple(dict(labels) for labels in sorted(seen))
        for cls in self.classes.classes:
            if cls.name == name:
                eq = {m.label: m.value for m in cls.matchers if m.op == "="}
                if all(label in eq for label in self.labels):
                    return ({label: eq[label] for label in self.labels},)
        return ()
