"""Prometheus range answers (``resultType`` matrix) parsed column by column.

``PrometheusClient.query_range`` parses a range answer point by point (``json.loads``, then a
tuple per point): a few hundred bytes of Python objects per point.
:func:`parse_matrix_columns` reads the same bytes into float64 columns (pandas' C CSV parser
on the ``values`` arrays, a bounded piece at a time), so its cost and memory follow the number
of points and not the decoded JSON; ``PrometheusClient.query_range_columns`` uses it.
"""

from __future__ import annotations

import io
import json
import re
import warnings as _warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from specwise.errors import ParseError

__all__ = ["ColumnResult", "ColumnSeries", "parse_matrix_columns"]

_MATRIX_HEAD = re.compile(
    rb'\s*\{\s*"status"\s*:\s*"success"\s*,\s*"data"\s*:\s*\{\s*"resultType"\s*:\s*"matrix"'
    rb'\s*,\s*"result"\s*:\s*\['
)
_SERIES_HEAD = re.compile(rb'\s*\{\s*"metric"\s*:\s*')
_VALUES_HEAD = re.compile(rb'\s*,\s*"values"\s*:\s*\[\s*')
_SERIES_TAIL = re.compile(rb"\s*\]\s*\}\s*(,?)")
#: Bytes of ``values`` turned into numbers at a time (bounds the parser's scratch memory).
_PIECE = 1 << 16
#: Below this many bytes a batch is read by numpy instead of pandas.
_SMALL = 1 << 15


@dataclass(frozen=True)
class ColumnSeries:
    """One range series as two float64 columns (Unix seconds, values), in time order."""

    labels: Mapping[str, str]
    times: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class ColumnResult:
    """A range result parsed column by column, plus what the server said about it."""

    series: tuple[ColumnSeries, ...]
    warnings: tuple[str, ...] = ()
    infos: tuple[str, ...] = ()
    partial: bool = False
    requests: int = 1


class _Layout(Exception):
    """The body is valid JSON of another layout: parse it the slow, general way."""


def _read_lines(text: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``,t,v`` lines -> float64 times and values (exactly n lines): pandas' C parser, or
    for a small batch numpy's (less fixed cost per call, more per number)."""
    if len(text) < _SMALL:
        with _warnings.catch_warnings():
            _warnings.simplefilter("error")
            try:
                flat = np.fromstring(text[1:], dtype=np.float64, sep=",")
            except (ValueError, Warning) as exc:
                raise _Layout from exc
        if flat.shape != (2 * n,) or np.isnan(flat[0::2]).any():
            raise _Layout
        return flat[0::2], flat[1::2]
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")
        try:
            frame = pd.read_csv(
                io.BytesIO(text),
                header=None,
                names=["_", "t", "v"],
                usecols=["t", "v"],
                dtype=np.float64,
                engine="c",
                na_values=["NaN"],
                keep_default_na=False,
                skipinitialspace=True,
            )
        except (ValueError, Warning, pd.errors.ParserError) as exc:
            raise _Layout from exc
    t, v = frame["t"].to_numpy(), frame["v"].to_numpy()
    if t.shape != (n,) or v.shape != (n,) or np.isnan(t).any():
        raise _Layout
    return t, v


def _values_columns(
    body: bytes, spans: list[tuple[int, int]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``[t,"v"],[t,"v"]...`` arrays at ``spans`` of ``body`` -> float64 times and values
    per span, allocated once at their final size. The arrays are cut into pieces at point
    boundaries, each piece turned into CSV lines (``,t,v``), and pieces of several series read
    by one call of pandas' C parser: no Python object per point, and the scratch memory is
    bounded by the piece size."""
    counts = [body.count(b"[", start, end) for start, end in spans]
    out = [(np.empty(n), np.empty(n)) for n in counts]
    filled = [0] * len(spans)
    batch: list[bytes] = []
    owners: list[tuple[int, int]] = []  # (span, points) of each piece in the batch
    size = 0

    def flush() -> None:
        text = b"".join(batch)
        batch.clear()
        t, v = _read_lines(text, sum(n for _, n in owners))
        del text
        off = 0
        for i, n in owners:
            at = filled[i]
            if at + n > counts[i]:
                raise _Layout
            out[i][0][at : at + n] = t[off : off + n]
            out[i][1][at : at + n] = v[off : off + n]
            filled[i] = at + n
            off += n
        owners.clear()

    for i, (start, end) in enumerate(spans):
        p = start
        while p < end:
            q = end if end - p <= _PIECE else body.rfind(b"]", p, p + _PIECE) + 1
            if q <= p:  # one point longer than a piece
                q = body.find(b"]", p, end) + 1
            if q <= p or body[p : p + 1] != b"[":
                raise _Layout
            piece = body[p:q]
            batch.append(b"," + piece.translate(None, b'["').replace(b"]", b"\n"))
            owners.append((i, piece.count(b"[")))
            size += len(batch[-1])
            if size >= _PIECE:
                flush()
                size = 0
            nxt = body.find(b"[", q, end)
            p = end if nxt < 0 else nxt
    if batch:
        flush()
    if filled != counts:
        raise _Layout
    return out


def _decode_object(body: bytes, start: int) -> tuple[Any, int]:
    """Decode the JSON value starting at ``body[start]`` (small: a label set), reading a
    growing window of the body rather than all of it; returns it and the offset after it."""
    dec = json.JSONDecoder()
    width = 1024
    while True:
        text = body[start : start + width].decode("utf-8", errors="replace")
        try:
            obj, used = dec.raw_decode(text)
        except json.JSONDecodeError:
            if start + width >= len(body):
                raise _Layout from None
            width *= 8
            continue
        return obj, start + len(text[:used].encode("utf-8", errors="replace"))


def _tail_fields(tail: bytes) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """warnings, infos and isPartial from the bytes after the result array (small)."""
    found: dict[str, Any] = {}
    dec = json.JSONDecoder()
    text = tail.decode("utf-8", errors="replace")
    for key in ("warnings", "infos", "isPartial"):
        m = re.search(rf'"{key}"\s*:\s*', text)
        if m:
            try:
                found[key] = dec.raw_decode(text, m.end())[0]
            except json.JSONDecodeError:
                continue
    return (
        tuple(str(w) for w in found.get("warnings") or ()),
        tuple(str(i) for i in found.get("infos") or ()),
        bool(found.get("isPartial", False)),
    )


def _columns_fast(body: bytes) -> ColumnResult:
    m = _MATRIX_HEAD.match(body)
    if not m:
        raise _Layout
    pos = m.end()
    label_sets: list[dict[str, str]] = []
    spans: list[tuple[int, int]] = []
    if re.compile(rb"\s*\]").match(body, pos):
        pos = body.index(b"]", pos) + 1
    else:
        while True:
            h = _SERIES_HEAD.match(body, pos)
            if not h:
                raise _Layout
            labels, pos = _decode_object(body, h.end())
            if not isinstance(labels, dict):
                raise _Layout
            v = _VALUES_HEAD.match(body, pos)
            if not v:
                raise _Layout
            if body.startswith(b"]", v.end()):
                end = v.end()
            else:
                end = body.find(b"]]", v.end())
                if end < 0:
                    raise _Layout
                end += 1
            spans.append((v.end(), end))
            t = _SERIES_TAIL.match(body, end)
            if not t:
                raise _Layout
            pos = t.end()
            label_sets.append({str(k): str(x) for k, x in labels.items()})
            if not t.group(1):
                close = re.compile(rb"\s*\]").match(body, pos)
                if not close:
                    raise _Layout
                pos = close.end()
                break
    w, i, partial = _tail_fields(body[pos:])
    columns = _values_columns(body, spans)
    series = [ColumnSeries(lab, t, v) for lab, (t, v) in zip(label_sets, columns, strict=True)]
    return ColumnResult(tuple(series), w, i, partial)


def _columns_general(body: bytes) -> ColumnResult:
    doc = json.loads(body)
    data = doc["data"]
    if data.get("resultType") != "matrix":
        raise ValueError(f"resultType {data.get('resultType')!r}, expected matrix")
    series = []
    for item in data["result"]:
        pts = np.asarray(
            [(float(t), float(v)) for t, v in item.get("values") or ()], dtype=np.float64
        ).reshape(-1, 2)
        series.append(
            ColumnSeries({str(k): str(x) for k, x in item["metric"].items()}, pts[:, 0], pts[:, 1])
        )
    return ColumnResult(
        tuple(series),
        tuple(str(w) for w in doc.get("warnings") or ()),
        tuple(str(i) for i in doc.get("infos") or ()),
        bool(doc.get("isPartial", False)),
    )


def parse_matrix_columns(body: bytes, *, url: str = "", query: str = "") -> ColumnResult:
    """Parse a ``query_range`` answer (a successful ``matrix``) column by column.

    The point arrays are read straight from the bytes, a bounded piece at a time, into
    float64 columns: no Python object per point, so memory follows the number of points, not
    the size of the decoded JSON. A layout this fast path does not know (pretty-printed JSON,
    keys in another order, native histograms) falls back to ``json.loads``.
    """
    try:
        try:
            return _columns_fast(body)
        except _Layout:
            return _columns_general(body)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ParseError(
            f"Prometheus at {url or 'the server'} sent an unreadable range result for query "
            f"{query!r} ({exc}); check that the URL is a Prometheus-compatible API.",
            url=url or None,
        ) from exc
