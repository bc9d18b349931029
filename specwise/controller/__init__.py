"""Controller: the loop that turns collected evidence into a k per class and acts on it.

The loop (:class:`Controller`: the bookkeeping of deltas, state, actuation records and
status), the pure per-class decision it calls (:mod:`specwise.controller.decide`: evidence
in, decision out), the actuators that apply or propose a change (dry-run, file, command),
the state it keeps and persists, the Prometheus exporter of that state, and the
wiring that builds all of it from a :class:`~specwise.config.SpecwiseConfig`
(:mod:`specwise.controller.wiring`, the composition root: it imports the sources, the
actuators and the alerting, so it is not imported here).
"""

from __future__ import annotations

from specwise.controller.actuators import (
    ActuationResult,
    Actuator,
    CommandActuator,
    DryRunActuator,
    FileActuator,
    PollingActuator,
)
from specwise.controller.exporter import ExporterServer, controller_registry
from specwise.controller.loop import Controller
from specwise.controller.state import ClassStatus, ControllerState, SourceStatus

__all__ = [
    "ActuationResult",
    "Actuator",
    "ClassStatus",
    "CommandActuator",
    "Controller",
    "ControllerState",
    "DryRunActuator",
    "ExporterServer",
    "FileActuator",
    "PollingActuator",
    "SourceStatus",
    "controller_registry",
]
