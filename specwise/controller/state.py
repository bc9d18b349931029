"""The controller's readable state: what it knows per class and per source, right now.

Plain frozen records, so the exporter, ``/recommendations``, the demo table and the tests
all read the same thing, and a state file can persist what must survive a restart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from specwise.errors import ConfigError

__all__ = [
    "ClassStatus",
    "ControllerState",
    "PersistedClass",
    "SourceStatus",
    "load_persisted",
    "persisted_json",
]


@dataclass(frozen=True)
class ClassStatus:
    """One workload class after the last tick."""

    name: str
    cost: float
    deployed_k: int | None
    recommended_k: int | None
    optimal_k: int | None = None  # the exact maximiser, shown beside recommended_k if it differs
    alpha: float | None = None
    alpha_low: float | None = None
    alpha_high: float | None = None
    method: str = "insufficient"
    drafts: float = 0.0
    mean_acceptance_length: float | None = None
    survival: tuple[float, ...] = ()
    survival_low: tuple[float, ...] = ()
    survival_high: tuple[float, ...] = ()
    predicted_speedup_deployed: float | None = None
    predicted_speedup_recommended: float | None = None
    paying_off: bool | None = None
    fit_ok: bool | None = None
    drift: bool = False
    stale: bool = True
    last_data_at: float | None = None
    data_age: float | None = None
    reason: str = "no data yet"
    change_allowed: bool = False
    hold_reason: str = ""
    last_change_at: float | None = None
    changes: int = 0  # applied (file written, command run)
    actuation: str = ""
    actuation_error: str = ""
    speculative_config: Mapping[str, Any] | None = None
    schedule: tuple[tuple[int, int, int], ...] = ()
    notes: tuple[str, ...] = ()
    #: False for a class discovered from labels, not in ``[[classes]]``: never actuated
    declared: bool = True
    #: dry-run proposals (nothing deployed), counted apart from ``changes``
    proposals: int = 0
    last_proposal_at: float | None = None
    #: k = 0 by specwise's own applied decision (its spec-decode counters vanish on purpose)
    off_by_specwise: bool = False
    #: the values of the alert rules' class labels (e.g. model_name) of the class's series
    series_labels: tuple[Mapping[str, str], ...] = ()
    #: the cost side (see :mod:`specwise.controller.load`): measured and predicted speedup,
    #: fitted step costs, the batch-size distribution, the recommended configuration and
    #: its bands; ``load_aware`` False (and the note) when the latency families are missing
    load: Mapping[str, Any] | None = None
    #: the configuration in force: k and, when one is deployed, its batch-size schedule
    deployed_schedule: tuple[tuple[int, int, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["class"] = data.pop("name")
        data["survival"] = list(self.survival)
        data["series_labels"] = [dict(labels) for labels in self.series_labels]
        return data


@dataclass(frozen=True)
class SourceStatus:
    """One data source (a /metrics URL, or the Prometheus API)."""

    name: str
    last_attempt: float | None = None
    last_success: float | None = None
    errors: Mapping[str, int] = field(default_factory=dict)
    last_error: str = ""

    @property
    def up(self) -> bool:
        return self.last_success is not None and self.last_success == self.last_attempt


@dataclass(frozen=True)
class ControllerState:
    """Everything the controller exports, as of ``updated_at``."""

    started_at: float
    updated_at: float | None
    ticks: int
    classes: tuple[ClassStatus, ...] = ()
    sources: tuple[SourceStatus, ...] = ()
    actuator: str = "dry-run"
    #: the controller's own failures by kind ("internal": a tick step failed; "actuator":
    #: an actuator raised an unmapped error), exported as specwise_controller_errors_total
    errors: Mapping[str, int] = field(default_factory=dict)
    last_error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "ticks": self.ticks,
            "actuator": self.actuator,
            "errors": dict(self.errors),
            "last_error": self.last_error,
            "classes": [c.to_json() for c in self.classes],
            "sources": [
                {
                    "name": s.name,
                    "up": s.up,
                    "last_attempt": s.last_attempt,
                    "last_success": s.last_success,
                    "errors": dict(s.errors),
                    "last_error": s.last_error,
                }
                for s in self.sources
            ],
        }


@dataclass(frozen=True)
class PersistedClass:
    """What must survive a controller restart so it causes no burst of changes."""

    deployed_k: int | None
    change_times: tuple[float, ...] = ()
    off_by_specwise: bool = False
    series_labels: tuple[Mapping[str, str], ...] = ()
    #: the batch-size schedule specwise deployed with ``deployed_k`` (None: none)
    deployed_schedule: tuple[tuple[int, int, int], ...] | None = None
    #: the class's load window (``LoadWindow.to_json``), so a restart keeps the day's load
    load_window: Mapping[str, Any] | None = None


def persisted_json(classes: Mapping[str, PersistedClass]) -> str:
    return json.dumps(
        {
            "version": 1,
            "classes": {
                name: {
                    "deployed_k": p.deployed_k,
                    "change_times": list(p.change_times),
                    "off_by_specwise": p.off_by_specwise,
                    "series_labels": [dict(labels) for labels in p.series_labels],
                    "deployed_schedule": (
                        None
                        if p.deployed_schedule is None
                        else [list(e) for e in p.deployed_schedule]
                    ),
                    "load_window": None if p.load_window is None else dict(p.load_window),
                }
                for name, p in sorted(classes.items())
            },
        },
        indent=2,
    )


def _schedule(raw: Any) -> tuple[tuple[int, int, int], ...] | None:
    if raw is None:
        return None
    return tuple((int(a), int(b), int(k)) for a, b, k in raw)


def load_persisted(path: Path) -> dict[str, PersistedClass]:
    """Read a state file written by ``persisted_json``; a missing file is an empty state."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(
            f"cannot read state file {path} ({exc.strerror}); fix [controller] state_file",
            field="[controller] state_file",
        ) from exc
    try:
        data = json.loads(text)
        return {
            str(name): PersistedClass(
                None if item["deployed_k"] is None else int(item["deployed_k"]),
                tuple(float(t) for t in item.get("change_times", ())),
                bool(item.get("off_by_specwise", False)),
                tuple(
                    {str(k): str(v) for k, v in labels.items()}
                    for labels in item.get("series_labels", ())
                ),
                _schedule(item.get("deployed_schedule")),
                item.get("load_window") if isinstance(item.get("load_window"), dict) else None,
            )
            for name, item in data["classes"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"state file {path} is not a specwise state file ({exc}); move it away to start fresh",
            field="[controller] state_file",
        ) from exc
