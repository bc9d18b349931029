"""Per-source bookkeeping: when each source was tried, answered, and how it failed."""

from __future__ import annotations

from collections import Counter

from specwise.controller.state import SourceStatus
from specwise.errors import DataError, ParseError, SourceError, SpecwiseError

__all__ = ["SourceTrack", "error_kind"]


def error_kind(exc: BaseException) -> str:
    """The ``kind`` label of ``specwise_source_errors_total`` for one failure."""
    if isinstance(exc, ParseError):
        return "parse"
    if isinstance(exc, DataError):
        return "data"
    if isinstance(exc, SourceError) and exc.status_code is not None:
        return "http"
    if not isinstance(exc, SpecwiseError):
        return "internal"  # a failure no layer mapped (e.g. a header requests cannot encode)
    return "unreachable"


class SourceTrack:
    """One source's attempts, successes and errors by kind."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last_attempt: float | None = None
        self.last_success: float | None = None
        self.errors: Counter[str] = Counter()
        self.last_error = ""

    def ok(self, now: float) -> None:
        self.last_attempt = self.last_success = now

    def fail(self, now: float, exc: BaseException) -> None:
        self.last_attempt = now
        self.errors[error_kind(exc)] += 1
        self.last_error = str(exc) if isinstance(exc, SpecwiseError) else repr(exc)

    def status(self) -> SourceStatus:
        return SourceStatus(
            self.name, self.last_attempt, self.last_success, dict(self.errors), self.last_error
        )
