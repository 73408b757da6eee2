"""An HTTP feed: one URL that serves a CAP alert, an Atom/RSS index or an EDXL-DE distribution.

Polite and robust: conditional GET on the index, bounded bodies, retries with exponential
backoff only for faults that can pass (connection errors, timeouts, 5xx, 429), and linked CAP
documents fetched once. Anything that fails is retried on the next poll: the index validators
(ETag, Last-Modified) are only kept when a poll handled everything it saw, and a linked
document is only remembered after ``ingest`` has answered for it. Every fetch and redirect
passes the feed's ``FetchGuard`` (no internal addresses, ``warnd.edges.feeds.guard``); a link to one
is refused once, remembered and not fetched again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from warnd import __version__
from warnd.core.errors import CapError, ConfigError, PermanentError, TransientError, WarndError
from warnd.core.xmlsafe import MAX_BYTES
from warnd.edges.feeds import (
    FeedItem,
    FeedStatus,
    Ingest,
    Outcome,
    PollReport,
    StatusTracker,
    Tally,
    one_line,
)
from warnd.edges.feeds.cma import newest_item
from warnd.edges.feeds.guard import FetchGuard, InternalAddress
from warnd.edges.feeds.index import IndexItem, read_index

log = structlog.get_logger("warnd.feeds.http")

Sleep = Callable[[float], Awaitable[None]]
#: which index entries to download (the CMA area pre-filter, warnd.edges.feeds.cma); None: all
Select = Callable[[IndexItem], bool]

ACCEPT = (
    "application/cap+xml, application/atom+xml, application/rss+xml, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"
)
USER_AGENT = f"warnd/{__version__} (+early-warning feed reader)"
_CHUNK = 64 * 1024
_FETCH_CONCURRENCY = 4


class _RetryLater(TransientError):
    """A transient HTTP fault, with the server's ``Retry-After`` (seconds) if it gave one."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Fetched:
    body: bytes
    etag: str | None
    last_modified: str | None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (the HTTP-date form is ignored: clocks differ)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _check_url(url: str, *, field: str = "url") -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError("feed URL must be http:// or https://", field=field, value=url)


class HttpFeed:
    """Poll one URL; fetch the CAP documents an index links to."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        timeout_s: float,
        session: aiohttp.ClientSession | None = None,
        max_tries: int = 4,
        sleep: Sleep = asyncio.sleep,
        now: Callable[[], float] = time.time,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        remember: int = 10_000,
        select: Select | None = None,
        allow: tuple[str, ...] = (),
    ) -> None:
        _check_url(url, field=f"feeds.{name}.url")
        if max_tries < 1:
            raise ConfigError(
                "must be at least 1", field=f"feeds.{name}.max_tries", value=max_tries
            )
        self.name = name
        self.url = url
        self.timeout_s = timeout_s
        self._session = session
        self._own_session = session is None
        self._max_tries = max_tries
        self._sleep = sleep
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._capacity = remember
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._etag: str | None = None
        self._last_modified: str | None = None
        self._digest: str | None = None
        self._tracker = StatusTracker(now)
        self._select = select
        self._listing: tuple[int, str | None] = (0, None)  # (entries, newest) of the last index
        self.guard = FetchGuard(name, url, allow)

    @property
    def status(self) -> FeedStatus:
        return self._tracker.status

    async def aclose(self) -> None:
        """Close the HTTP session if this feed opened it (a shared one belongs to its owner)."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self.guard.session(headers={"User-Agent": USER_AGENT})
            self._own_session = True
        return self._session

    # -- fetching ---------------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff (1 s, 2 s, 4 s… capped), stretched to honour ``Retry-After``."""
        delay: float = min(self._max_backoff_s, self._backoff_s * 2.0 ** (state.attempt_number - 1))
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _RetryLater) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self._max_backoff_s))
        return delay

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.info(
            "feed.http.retry",
            feed=self.name,
            attempt=state.attempt_number,
            wait_s=state.upcoming_sleep,
            error=str(exc),
        )

    async def fetch(self, url: str, *, headers: Mapping[str, str] | None = None) -> bytes:
        """One GET through this feed's fetch layer (retries, bounded body, timeouts): the way
        other source types (QWeather, the cross-check lists) reach the network."""
        fetched = await self._get(url, conditional=False, extra=headers)
        if fetched is None:  # 304 to an unconditional GET: a broken server
            raise PermanentError("unexpected 304")
        return fetched.body

    async def _get(
        self, url: str, *, conditional: bool, extra: Mapping[str, str] | None = None
    ) -> _Fetched | None:
        """GET with retries; ``None`` for 304. Raises ``PermanentError``/``TransientError``."""
        headers = {"Accept": ACCEPT, "User-Agent": USER_AGENT, **(extra or {})}
        if conditional and self._etag:
            headers["If-None-Match"] = self._etag
        if conditional and self._last_modified:
            headers["If-Modified-Since"] = self._last_modified
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_tries),
            wait=self._wait,
            retry=retry_if_exception_type(TransientError),
            sleep=self._sleep,
            reraise=True,
            before_sleep=self._log_retry,
        )
        result: _Fetched | None = await retrying(self._get_once, url, headers)
        return result

    async def _get_once(self, url: str, headers: dict[str, str]) -> _Fetched | None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with self.guard.get(
                self._client(), url, headers=headers, timeout=timeout, max_redirects=5
            ) as resp:
                status = resp.status
                if status == 304:
                    return None
                if status == 429 or status >= 500:
                    raise _RetryLater(
                        f"HTTP {status} {resp.reason or ''}",
                        status=status,
                        retry_after=_retry_after(resp.headers.get("Retry-After")),
                    )
                if not 200 <= status < 300:
                    raise PermanentError(f"HTTP {status} {resp.reason or ''}", status=status)
                if resp.content_length is not None and resp.content_length > MAX_BYTES:
                    raise PermanentError(f"响应过大 body larger than {MAX_BYTES} bytes")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    body += chunk
                    if len(body) > MAX_BYTES:  # stop reading: never buffer an endless body
                        raise PermanentError(f"响应过大 body larger than {MAX_BYTES} bytes")
                return _Fetched(
                    bytes(body), resp.headers.get("ETag"), resp.headers.get("Last-Modified")
                )
        except WarndError:
            raise
        except TimeoutError:
            raise _RetryLater(f"超时 timed out after {self.timeout_s:g} s") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise _RetryLater(f"连接失败 connection failed: {one_line(exc)}") from None
        except (aiohttp.ClientError, ValueError) as exc:  # bad redirect, invalid URL, ...
            raise PermanentError(
                f"请求失败 request failed: {type(exc).__name__}: {one_line(exc)}"
            ) from None

    # -- polling ----------------------------------------------------------------------------

    async def poll(self, ingest: Ingest) -> PollReport:
        tally = Tally(self.name)
        try:
            fetched = await self._get(self.url, conditional=True)
        except WarndError as exc:
            tally.answered = False
            return self._finish(tally, f"获取失败 fetch failed: {self.url}: {one_line(exc)}")
        tally.listed, tally.newest = self._listing  # unless the index changed
        if fetched is None:  # 304 Not Modified
            return self._finish(tally)
        digest = hashlib.sha256(fetched.body).hexdigest()
        if digest == self._digest:  # same body as the last complete poll: nothing new
            return self._finish(tally, validators=fetched)
        try:
            index = read_index(fetched.body, self.url)
        except CapError as exc:
            return self._finish(tally, f"内容无效 unusable feed body: {one_line(exc)}")

        for link in index.ignored:
            log.warning("feed.link_ignored", feed=self.name, link=link, reason="not http(s)")
        for i, data in enumerate(index.embedded, 1):
            origin = self.url if index.kind == "cap" else f"{self.url}#{i}"
            key = "sha256:" + hashlib.sha256(data).hexdigest()
            if key in self._seen:  # an entry of a "fat" feed handled at an earlier poll
                self._seen.move_to_end(key)
            elif await self._ingest(FeedItem(data, origin), ingest, tally):
                self._remember(key)

        tally.listed = len(index.items) + len(index.embedded)
        tally.newest = newest_item(index.items)
        self._listing = (tally.listed, tally.newest)
        new: list[tuple[str, str]] = []  # (remembered as, link)
        for item in index.items:
            # An entry is new when its link or its guid is: an entry updated in place under
            # the same guid with a new document is fetched again (the store drops repeats).
            key = f"{item.guid} {item.link}" if item.guid else item.link
            if key in self._seen:
                self._seen.move_to_end(key)  # still listed: keep it remembered
            elif self._select is not None and not self._select(item):
                tally.skipped += 1  # its area cannot concern the directory: never downloaded
            else:
                new.append((key, item.link))
        for start in range(0, len(new), _FETCH_CONCURRENCY):
            batch = new[start : start + _FETCH_CONCURRENCY]
            docs = await asyncio.gather(*(self._fetch_doc(link) for _key, link in batch))
            for (key, link), doc in zip(batch, docs, strict=True):
                if doc is None:  # an internal address: refused (logged, counted) for good
                    self._remember(key)
                elif isinstance(doc, str):
                    tally.fail(doc)
                elif await self._ingest(FeedItem(doc, link), ingest, tally):
                    self._remember(key)
        return self._finish(tally, validators=fetched, digest=digest)

    async def _fetch_doc(self, link: str) -> bytes | str | None:
        """A linked CAP document's body, a one-line error (retried next poll), or None for a
        link the guard refused (never fetched)."""
        try:
            fetched = await self._get(link, conditional=False)
        except InternalAddress:
            return None
        except WarndError as exc:
            log.warning("feed.link_failed", feed=self.name, link=link, error=str(exc))
            return f"获取失败 fetch failed: {link}: {one_line(exc)}"
        if fetched is None:  # 304 to an unconditional GET: a broken server
            return f"获取失败 fetch failed: {link}: unexpected 304"
        return fetched.body

    async def _ingest(self, item: FeedItem, ingest: Ingest, tally: Tally) -> bool:
        """Hand one item over; True once the store has answered (whatever the outcome)."""
        try:
            result = await ingest(item)
        except Exception as exc:  # store down or a bug: the item is retried next poll
            tally.fail(f"入库失败 ingest failed for {item.origin}: {one_line(exc)}")
            log.warning("feed.ingest_failed", feed=self.name, origin=item.origin, error=str(exc))
            return False
        tally.count(result.outcome)
        if result.outcome is Outcome.REJECTED:
            log.warning(
                "feed.item_rejected", feed=self.name, origin=item.origin, reason=result.reason
            )
        return True

    def _remember(self, key: str) -> None:
        """Bounded LRU of handled links and embedded-alert digests."""
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)

    def _finish(
        self,
        tally: Tally,
        error: str | None = None,
        *,
        validators: _Fetched | None = None,
        digest: str | None = None,
    ) -> PollReport:
        if error is not None:
            tally.fail(error)
        report = tally.report()
        if report.error is None and validators is not None:
            # Only a poll that handled everything may let the server say "nothing new" next time.
            self._etag = validators.etag
            self._last_modified = validators.last_modified
            self._digest = digest or self._digest
        if report.items or report.error:
            (log.warning if report.error else log.info)(
                "feed.poll",
                url=self.url,
                feed=self.name,
                listed=report.listed,
                skipped=report.skipped,
                items=report.items,
                accepted=report.accepted,
                duplicates=report.duplicates,
                rejected=report.rejected,
                error=report.error,
            )
        return self._tracker.record(report)
