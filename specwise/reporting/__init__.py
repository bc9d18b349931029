"""Reporting: before/after comparison of two windows per class (:mod:`.report`, the numbers),
and its rendering to Markdown, HTML, JSON and PNGs (:mod:`.render`, :mod:`.plots`).

Only the computation is imported here; the renderers load matplotlib and are imported when
a report is written.
"""

from __future__ import annotations

from specwise.reporting.report import ClassReport, Report, WindowClass, WindowInfo
from specwise.reporting.windows import TimeRange

__all__ = ["ClassReport", "Report", "TimeRange", "WindowClass", "WindowInfo"]
