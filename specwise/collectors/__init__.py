"""Collectors: read vLLM spec-decode counters from /metrics, Prometheus-compatible APIs and
vLLM logs into ``Snapshot``s; turn them into ``CounterDelta``s per series and per class."""

from __future__ import annotations

from specwise.collectors.classes import ClassConfig, Matcher, WorkloadClass, parse_selector
from specwise.collectors.deltas import (
    check_delta,
    check_snapshot,
    counter_increase,
    series_deltas,
    sum_by_class,
    window_deltas,
)
from specwise.collectors.exposition import filter_exposition, parse_exposition
from specwise.collectors.prometheus import PrometheusClient, PrometheusSource, QueryError
from specwise.collectors.scrape import FileSource, ScrapeResult, ScrapeSource
from specwise.collectors.snapshot import CounterDelta, Snapshot, SnapshotSource

__all__ = [
    "ClassConfig",
    "CounterDelta",
    "FileSource",
    "Matcher",
    "PrometheusClient",
    "PrometheusSource",
    "QueryError",
    "ScrapeResult",
    "ScrapeSource",
    "Snapshot",
    "SnapshotSource",
    "WorkloadClass",
    "check_delta",
    "check_snapshot",
    "counter_increase",
    "filter_exposition",
    "parse_exposition",
    "parse_selector",
    "series_deltas",
    "sum_by_class",
    "window_deltas",
]
