"""Direct push to Alertmanager's v2 API, for teams without Prometheus alerting.

``AlertmanagerPusher`` is the controller's alert sink: after every tick it evaluates the
same alerts as the generated rules (``specwise.alerting.rules.AlertEvaluator``: same names, labels,
thresholds, ``for:``) and posts the firing ones to ``POST /api/v2/alerts`` with an
``endsAt`` a few minutes ahead (so a dead controller's alerts expire), and the ones that
stopped firing with ``endsAt`` = now (resolved). A failed post raises
``AlertDeliveryError``; the controller logs it and the next tick sends everything again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import requests

from specwise.alerting.rules import Alert, AlertEvaluator
from specwise.config import AlertSettings
from specwise.controller.state import ControllerState
from specwise.errors import AlertDeliveryError

__all__ = ["AlertmanagerPusher", "rfc3339"]

Key = tuple[tuple[str, str], ...]


def rfc3339(t: float) -> str:
    """Unix seconds -> ``2026-11-28T17:00:43.123Z`` (what Alertmanager's API expects)."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AlertmanagerPusher:
    """Posts firing alerts every tick and resolves the ones that stopped (``endsAt`` = now).

    ``url`` is Alertmanager's base URL; ``clock`` is the wall clock for ``startsAt``/``endsAt``
    (the ``now`` the controller passes is its own clock, used for ``for:`` durations);
    ``ttl`` is how far ahead ``endsAt`` of a firing alert lies; ``labels`` are added to every
    alert (e.g. ``{"job": "specwise"}``).
    """

    def __init__(
        self,
        url: str,
        *,
        session: requests.Session,
        settings: AlertSettings,
        timeout: float = 5.0,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
        generator_url: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.session = session
        self.timeout = timeout
        self.ttl = ttl
        self.clock = clock
        self.generator_url = generator_url or settings.generator_url
        self.labels = dict(labels or {})
        self.evaluator = AlertEvaluator(settings)
        self.firing: dict[Key, dict[str, Any]] = {}

    def _payload(self, alert: Alert, starts: float, ends: float) -> dict[str, Any]:
        body: dict[str, Any] = {
            "labels": {**self.labels, **alert.labels},
            "annotations": dict(alert.annotations),
            "startsAt": rfc3339(starts),
            "endsAt": rfc3339(ends),
        }
        if self.generator_url:
            body["generatorURL"] = self.generator_url
        return body

    def __call__(self, state: ControllerState, now: float) -> None:
        """The controller's alert sink: evaluate ``state`` and post to Alertmanager."""
        wall = self.clock()
        current: dict[Key, dict[str, Any]] = {}
        for alert in self.evaluator.evaluate(state, now):
            previous = self.firing.get(alert.key)
            starts = (
                _parse_start(previous) if previous else wall - max(0.0, now - alert.active_since)
            )
            current[alert.key] = self._payload(alert, starts, wall + self.ttl)
        resolved = [
            {**body, "endsAt": rfc3339(wall)}
            for key, body in self.firing.items()
            if key not in current
        ]
        batch = [*current.values(), *resolved]
        if not batch:
            return
        try:
            self.post(batch)
        except AlertDeliveryError:
            # keep the resolved ones so the next tick resolves them again
            self.firing = {**{k: v for k, v in self.firing.items()}, **current}
            raise
        self.firing = current

    def post(self, alerts: list[dict[str, Any]]) -> None:
        """``POST /api/v2/alerts``; raise ``AlertDeliveryError`` unless it answers 200."""
        endpoint = f"{self.url}/api/v2/alerts"
        try:
            resp = self.session.post(endpoint, json=alerts, timeout=self.timeout)
        except requests.RequestException as exc:
            raise AlertDeliveryError(
                f"Alertmanager at {self.url} is unreachable ({type(exc).__name__}); check "
                "[alerts] alertmanager_url and that Alertmanager is running",
                url=endpoint,
            ) from exc
        if resp.status_code != 200:
            detail = " ".join(resp.text.split())[:200]
            raise AlertDeliveryError(
                f"Alertmanager at {self.url} answered {resp.status_code} to {len(alerts)} "
                f"alert(s): {detail or resp.reason}; check [alerts] alertmanager_url "
                "(the base URL, without /api/v2)",
                url=endpoint,
                status_code=resp.status_code,
            )


def _parse_start(body: Mapping[str, Any]) -> float:
    text = str(body["startsAt"]).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()
