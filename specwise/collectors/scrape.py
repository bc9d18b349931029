"""Scrape vLLM ``/metrics`` URLs directly (concurrently), or read a saved capture file.

Every target is scraped with ``Accept: text/plain;version=0.0.4`` so negotiating exporters
keep ``vllm:`` names (both spellings are parsed anyway). One failing target never hides the
others: its error is recorded in its ``ScrapeResult`` and ``ScrapeSource.errors``. Each
Snapshot gets an ``instance`` label (``host:port`` of the URL, as Prometheus would set it)
so engine "0" of two servers never collide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
from requests.auth import HTTPBasicAuth

from specwise.collectors.exposition import parse_exposition
from specwise.collectors.snapshot import Snapshot
from specwise.collectors.urls import (
    basic_auth_from,
    check_bearer_token,
    check_http_url,
    check_timeout,
)
from specwise.errors import ParseError, SourceError

__all__ = [
    "ACCEPT_HEADER",
    "FileSource",
    "ScrapeResult",
    "ScrapeSource",
    "decode_page",
    "instance_label",
]

ACCEPT_HEADER = "text/plain;version=0.0.4"
#: Largest body read from one target: a vLLM page is ~55 KB; 64 MB means something is wrong.
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ScrapeResult:
    """What one target gave: Snapshots, or the error that stopped it (never both)."""

    target: str
    snapshots: tuple[Snapshot, ...] = ()
    error: SourceError | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def instance_label(url: str) -> str:
    """``host:port`` of a URL (Prometheus' ``instance``), or the URL itself if it has none."""
    parts = urlsplit(url)
    return parts.netloc or url


def _fetch(
    session: requests.Session,
    url: str,
    *,
    timeout: float,
    verify: bool | str,
    headers: dict[str, str],
    cert: str | tuple[str, str] | None = None,
    auth: HTTPBasicAuth | None = None,
) -> str:
    try:
        resp = session.get(
            url,
            headers={"Accept": ACCEPT_HEADER, **headers},
            timeout=timeout,
            verify=verify,
            cert=cert,
            auth=auth,
            stream=True,
        )
    except requests.exceptions.Timeout as exc:
        raise SourceError(
            f"Scraping {url} timed out after {timeout:g} s; check the server or raise --timeout.",
            url=url,
            retryable=True,
        ) from exc
    except requests.exceptions.SSLError as exc:
        raise SourceError(
            f"TLS to {url} failed ({exc.__class__.__name__}); pass the server's CA bundle or "
            "check the certificate.",
            url=url,
        ) from exc
    except requests.exceptions.RequestException as exc:
        raise SourceError(
            f"Cannot reach {url} ({exc.__class__.__name__}); check the URL and that vLLM is up.",
            url=url,
            retryable=True,
        ) from exc
    with resp:
        if resp.status_code != 200:
            snippet = resp.text[:120].strip().replace("\n", " ") if resp.content else ""
            retryable = resp.status_code in (429, 502, 503, 504)
            if retryable:
                fix = "the server is restarting or overloaded; the next scrape tries again."
            elif resp.status_code in (401, 403):
                fix = (
                    "the server wants credentials (vLLM --api-key): set [source] "
                    "bearer_token_file to a file holding that key."
                )
            else:
                fix = "check that the URL is vLLM's /metrics endpoint."
            raise SourceError(
                f"{url} answered HTTP {resp.status_code} ({snippet or 'empty body'}); {fix}",
                url=url,
                status_code=resp.status_code,
                retryable=retryable,
            )
        try:
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_content(chunk_size=65536):
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise SourceError(
                        f"{url} sent more than {MAX_BODY_BYTES // 2**20} MB; point specwise "
                        "at vLLM's /metrics, not a federation or dump endpoint.",
                        url=url,
                    )
                chunks.append(chunk)
        except requests.exceptions.Timeout as exc:
            raise SourceError(
                f"Reading {url} timed out after {timeout:g} s; raise --timeout.",
                url=url,
                retryable=True,
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise ParseError(
                f"The body from {url} was cut off ({exc.__class__.__name__}); scrape it again.",
                url=url,
            ) from exc
    # A server's body that is not a page is reported by the parser ("holds no sample").
    return b"".join(chunks).decode("utf-8", errors="replace")


def decode_page(body: bytes, where: str) -> str:
    """A saved metrics page as text; a ParseError when it is binary (NUL bytes, not UTF-8),
    instead of a "truncated" warning quoting its raw bytes."""
    head = body[:65536]
    if b"\x00" in head:
        raise ParseError(
            f"{where} is binary data, not a Prometheus text page; give vLLM's /metrics URL or "
            "a capture saved with curl -s URL/metrics > FILE.",
            url=where,
        )
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"{where} is not UTF-8 text (byte {body[exc.start]:#04x} at offset {exc.start}), so "
            "not a Prometheus text page; give vLLM's /metrics URL or a capture saved with "
            "curl -s URL/metrics > FILE.",
            url=where,
        ) from exc


class ScrapeSource:
    """Direct scrape of one or many vLLM ``/metrics`` URLs; satisfies ``SnapshotSource``."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        session: requests.Session,
        timeout: float = 5.0,
        max_workers: int = 16,
        verify: bool | str = True,
        headers: dict[str, str] | None = None,
        cert: str | tuple[str, str] | None = None,
        bearer_token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise SourceError("No /metrics URL given; pass at least one target URL.")
        self.urls = list(urls)
        self.session = session
        self.timeout = check_timeout(timeout)
        self.max_workers = max(1, min(max_workers, len(self.urls)))
        for url in self.urls:
            check_http_url(url, what="/metrics URL")
        self.verify = verify
        self.cert = cert
        self.headers = dict(headers or {})
        if bearer_token:  # vLLM --api-key protects /metrics on some setups
            self.headers["Authorization"] = f"Bearer {check_bearer_token(bearer_token)}"
        self.auth = basic_auth_from(basic_auth)
        self.clock = clock
        #: Errors of the last ``collect`` (one per failing target).
        self.errors: list[SourceError] = []

    def _one(self, url: str, now: float) -> ScrapeResult:
        started = self.clock()
        try:
            text = _fetch(
                self.session,
                url,
                timeout=self.timeout,
                verify=self.verify,
                headers=self.headers,
                cert=self.cert,
                auth=self.auth,
            )
            snaps = parse_exposition(
                text,
                timestamp=now,
                source=url,
                extra_labels={"instance": instance_label(url)},
            )
        except SourceError as exc:
            return ScrapeResult(url, error=exc, seconds=self.clock() - started)
        return ScrapeResult(url, snapshots=tuple(snaps), seconds=self.clock() - started)

    def scrape(self, now: float) -> list[ScrapeResult]:
        """One result per URL, in the order given; never raises for a target's failure."""
        if self.max_workers == 1:
            return [self._one(u, now) for u in self.urls]
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            return list(pool.map(lambda u: self._one(u, now), self.urls))

    def collect(self, now: float) -> list[Snapshot]:
        """Snapshots of every target that answered; failures go to ``self.errors``.

        Raises the first SourceError only when every target failed.
        """
        results = self.scrape(now)
        self.errors = [r.error for r in results if r.error is not None]
        if results and len(self.errors) == len(results):
            first = self.errors[0]
            if len(results) == 1:
                raise first
            raise SourceError(
                f"All {len(results)} targets failed; the first: {first}",
                url=first.url,
                status_code=first.status_code,
                retryable=first.retryable,
            ) from first
        return [s for r in results for s in r.snapshots]


@dataclass
class FileSource:
    """A saved ``/metrics`` capture; ``collect`` re-reads it (timestamp = ``now``)."""

    path: Path
    instance: str | None = None
    errors: list[SourceError] = field(default_factory=list)

    def read_text(self) -> str:
        try:
            body = self.path.read_bytes()
        except OSError as exc:
            raise SourceError(
                f"Cannot read metrics file {self.path} ({exc.strerror or exc}); check the path.",
                url=str(self.path),
            ) from exc
        return decode_page(body, f"metrics file {self.path}")

    def collect(self, now: float) -> list[Snapshot]:
        return parse_exposition(
            self.read_text(),
            timestamp=now,
            source=str(self.path),
            extra_labels={"instance": self.instance or str(self.path)},
        )
