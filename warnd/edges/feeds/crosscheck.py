"""Cross-check lists: sources read only to see whether the dispatching sources missed a warning.

A check source never dispatches. Its entries (``CheckItem``) name warnings: the CMA
identifier when the list gives one, the official title (office, event, colour), the issue
time. ``warnd.edges.feeds.watch`` raises an alarm when an entry for an area of the directory has
not been delivered by any dispatching source within ``grace``.

Two list formats (docs/feeds.md):

- ``nmc``: the public list behind nmc.cn's warning page (``/rest/findAlarm``), JSON
  ``{"code": 0, "data": {"page": {"list": [...]}, "provinceAlarms": [...]}}``; each entry has
  ``alertid`` (the CMA identifier), ``issuetime`` (``2025/06/14 08:15``, Beijing time),
  ``title`` (``泸溪县气象台发布暴雨橙色预警[Ⅱ级/严重]``) and ``url``. Not documented by its
  publisher: the reader takes what it finds and reports a body it cannot read.
- ``index``: an Atom/RSS index such as the WMO relay of the CMA feed, read for its entries'
  guids (CMA identifiers) without downloading any document.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import structlog

from warnd.core.cap.dedup import DEFAULT_WINDOW, office_and_event
from warnd.core.errors import CapError, ConfigError, WarndError
from warnd.core.xmlsafe import MAX_BYTES
from warnd.edges.feeds import FeedStatus, Ingest, PollReport, StatusTracker, Tally, one_line
from warnd.edges.feeds.cma import BEIJING, AreaScope, CmaId, find_id
from warnd.edges.feeds.http import ACCEPT, HttpFeed, Sleep
from warnd.edges.feeds.index import read_index

log = structlog.get_logger("warnd.feeds.crosscheck")

COLOUR_SEVERITY = {"蓝": "Minor", "黄": "Moderate", "橙": "Severe", "红": "Extreme"}
_COLOUR = re.compile(r"([红橙黄蓝])色预警")
_NMC_TIME = re.compile(r"(\d{4})[/-](\d{1,2})[/-](\d{1,2})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?")


@dataclass(frozen=True, slots=True)
class CheckItem:
    """One warning a check list names. ``ref`` identifies it (identifier, else title)."""

    ref: str
    title: str | None
    identifier: str | None
    area: str | None  # the issuing office's area, from the identifier
    issued: datetime | None
    office: str | None
    event: str | None
    severity: str | None


@dataclass(frozen=True, slots=True)
class Delivered:
    """A message a dispatching source delivered (as the store has it)."""

    identifier: str
    sent: datetime
    severity: str | None
    office: str | None
    event: str | None


def item_from(
    *, identifier: str | None, title: str | None, issued: datetime | None, link: str | None = None
) -> CheckItem | None:
    """A check entry from what a list gives; None when it names nothing recognisable."""
    cma: CmaId | None = find_id(identifier, link)
    office, event = office_and_event(title)
    colour = _COLOUR.search(title or "")
    ref = cma.text if cma else (identifier or title or "")
    if not ref:
        return None
    return CheckItem(
        ref=ref,
        title=title,
        identifier=cma.text if cma else identifier,
        area=cma.area if cma else None,
        issued=issued or (cma.issued if cma else None),
        office=office,
        event=event or None,
        severity=COLOUR_SEVERITY[colour.group(1)] if colour else None,
    )


def _nmc_time(value: Any) -> datetime | None:
    m = _NMC_TIME.fullmatch(str(value).strip()) if value is not None else None
    if m is None:
        return None
    y, mo, d, h, mi, s = m.groups()
    try:
        return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0), tzinfo=BEIJING)
    except ValueError:
        return None


def read_nmc(data: bytes, source: str) -> tuple[list[CheckItem], list[str]]:
    """Entries of an nmc.cn ``findAlarm`` answer, and one-line problems with single entries."""
    if len(data) > MAX_BYTES:
        raise CapError(f"response larger than {MAX_BYTES} bytes refused", source=source)
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:120]
        raise CapError(f"not a JSON warning list: {detail}", source=source) from None
    if isinstance(doc, dict) and doc.get("code") not in (None, 0, "0", 200, "200"):
        raise CapError(f"warning list answered code {doc.get('code')!r}", source=source)
    body = doc.get("data") if isinstance(doc, dict) else doc
    entries: list[Any] = []
    if isinstance(body, list):
        entries = body
    elif isinstance(body, dict):
        page = body.get("page")
        listed = page.get("list") if isinstance(page, dict) else None
        entries = [*(listed if isinstance(listed, list) else [])]
        province = body.get("provinceAlarms")
        entries += province if isinstance(province, list) else []
        if not isinstance(listed, list) and not isinstance(province, list):
            raise CapError("no `data.page.list` in the warning list", source=source)
    else:
        raise CapError("no `data` in the warning list", source=source)
    items: dict[str, CheckItem] = {}
    problems: list[str] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"entry {i}: not an object")
            continue
        ident = entry.get("alertid") or entry.get("alertId")
        title = entry.get("title")
        item = item_from(
            identifier=str(ident) if ident is not None else None,
            title=str(title) if title is not None else None,
            issued=_nmc_time(entry.get("issuetime")),
        )
        if item is None:
            problems.append(f"entry {i}: neither alertid nor title")
        else:
            items.setdefault(item.ref, item)  # the county list and the province list overlap
    return list(items.values()), problems


def read_check_index(data: bytes, base_url: str) -> tuple[list[CheckItem], list[str]]:
    """Entries of an Atom/RSS index (their guids and titles; nothing is downloaded)."""
    index = read_index(data, base_url)
    items: dict[str, CheckItem] = {}
    for entry in index.items:
        item = item_from(identifier=entry.guid, title=entry.title, issued=None, link=entry.link)
        if item is not None:
            items.setdefault(item.ref, item)
    return list(items.values()), []


def delivered(
    item: CheckItem, messages: Iterable[Delivered], window: timedelta = DEFAULT_WINDOW
) -> bool:
    """Did a dispatching source deliver the warning ``item`` names?

    The same identifier; or (for a copy under another identifier, such as QWeather's) the same
    office and event, the same severity when both say, issued at most ``window`` apart.
    """
    for m in messages:
        if item.identifier is not None and m.identifier == item.identifier:
            return True
        if item.office is None or item.event is None or item.issued is None:
            continue
        if (m.office, m.event) != (item.office, item.event):
            continue
        if item.severity is not None and m.severity is not None and m.severity != item.severity:
            continue
        if abs(m.sent - item.issued) <= window:
            return True
    return False


class CheckFeed:
    """A check list polled like a feed; it hands nothing to ``ingest``.

    After each poll ``items`` holds the entries that concern the directory (None until a poll
    read the list); the daemon gives them to the watch (``warnd.edges.feeds.watch``).
    """

    role = "check"

    def __init__(
        self,
        name: str,
        url: str,
        *,
        list_format: str,
        grace: timedelta,
        levels: Sequence[str],
        scope: Callable[[], AreaScope],
        timeout_s: float = 30.0,
        session: aiohttp.ClientSession | None = None,
        sleep: Sleep = asyncio.sleep,
        now: Callable[[], float] = time.time,
        max_tries: int = 4,
    ) -> None:
        if list_format not in ("nmc", "index"):
            raise ConfigError("应为 must be nmc or index", field=f"feeds.{name}.format")
        self.name = name
        self.url = url
        self.list_format = list_format
        self.grace = grace
        self.levels = tuple(levels)
        self._scope = scope
        self._http = HttpFeed(
            name,
            url,
            timeout_s=timeout_s,
            session=session,
            sleep=sleep,
            now=now,
            max_tries=max_tries,
        )
        self._tracker = StatusTracker(now)
        self.items: tuple[CheckItem, ...] | None = None

    @property
    def status(self) -> FeedStatus:
        return self._tracker.status

    async def aclose(self) -> None:
        await self._http.aclose()

    async def read(self) -> tuple[list[CheckItem], list[str]]:
        """Every entry of the list (``WarndError`` when it cannot be had or read)."""
        accept = "application/json" if self.list_format == "nmc" else ACCEPT
        body = await self._http.fetch(self.url, headers={"Accept": accept})
        if self.list_format == "nmc":
            return read_nmc(body, self.url)
        return read_check_index(body, self.url)

    async def poll(self, ingest: Ingest | None = None) -> PollReport:
        """Read the list; keep the entries for the directory in ``items``. Never dispatches."""
        tally = Tally(self.name)
        try:
            entries, problems = await self.read()
        except WarndError as exc:
            tally.answered = False
            tally.fail(f"获取失败 fetch failed: {self.url}: {one_line(exc)}")
            log.warning("feed.check_failed", feed=self.name, error=str(exc))
            return self._tracker.record(tally.report())
        for problem in problems[:3]:
            tally.fail(problem)
        scope = self._scope()
        mine = tuple(i for i in entries if scope.names(i.area, self.levels))
        self.items = mine
        tally.listed, tally.skipped = len(entries), len(entries) - len(mine)
        dated = [i for i in mine if i.issued is not None]
        newest = max(dated, key=lambda i: i.issued or datetime.min, default=None)
        if newest is not None and newest.issued is not None:
            tally.newest = f"{newest.ref} ({newest.issued.isoformat()})"
        return self._tracker.record(tally.report())
