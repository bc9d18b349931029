"""The one exception tree of specwise.

Every error a user can cause (bad input, an unreachable server, a bad config value) is a
``SpecwiseError`` whose message is one sentence naming the bad value and the fix. The CLI
turns it into a single ``Error: ...`` line; the controller records it and keeps running.
"""

from __future__ import annotations

__all__ = [
    "ActuatorError",
    "AlertDeliveryError",
    "ConfigError",
    "DataError",
    "ModelInputError",
    "ParseError",
    "ReportError",
    "SourceError",
    "SpecwiseError",
]


class SpecwiseError(Exception):
    """Base of every error specwise raises on purpose."""


class ModelInputError(SpecwiseError, ValueError):
    """A value outside the domain of the speedup model (alpha outside [0, 1], c < 0, ...)."""

    def __init__(self, message: str, *, field: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class ConfigError(SpecwiseError, ValueError):
    """A configuration value (file or flag) that cannot be used; ``field`` names it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SourceError(SpecwiseError):
    """A data source (a /metrics URL, a Prometheus server, a log file) failed."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status_code: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code
        self.retryable = retryable


class ParseError(SourceError):
    """A source answered, but its body could not be read as the expected format."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        metric: str | None = None,
        line: str | None = None,
    ) -> None:
        super().__init__(message, url=url)
        self.metric = metric
        self.line = line


class DataError(SpecwiseError, ValueError):
    """Counters that contradict each other (accepted > drafted, NaN, positions rising)."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class ActuatorError(SpecwiseError):
    """Applying a recommendation (writing a file, running a command) failed."""


class AlertDeliveryError(SpecwiseError):
    """Alertmanager was unreachable or refused the alerts (``url``, ``status_code``)."""

    def __init__(self, message: str, *, url: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code


class ReportError(SpecwiseError):
    """A report could not be produced (no data in a window, output folder exists, ...)."""
