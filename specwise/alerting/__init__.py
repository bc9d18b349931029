"""Alerting: the Prometheus recording and alerting rules, and pushing the same alerts to
Alertmanager for teams without Prometheus alerting."""

from __future__ import annotations

from specwise.alerting.alertmanager import AlertmanagerPusher
from specwise.alerting.rules import ALERT_NAMES, Alert, AlertEvaluator, AlertRule, build_rules

__all__ = [
    "ALERT_NAMES",
    "Alert",
    "AlertEvaluator",
    "AlertRule",
    "AlertmanagerPusher",
    "build_rules",
]
