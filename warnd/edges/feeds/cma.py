"""CMA (12379) warning identifiers, and whether an issuing area can concern the directory.

Pure. A CMA identifier is ``<area 6><organisation 3><unit 3><seq 2>_<YYYYMMDDhhmmss>``
(``43312241600000_20250614081500``: area 433122, organisation 416 = meteorology, unit 000,
sequence 00, issued 2025-06-14 08:15:00 Beijing time); docs/cap.md explains it. The WMO relay
of the CMA feed uses it as the ``<guid>`` of every RSS item, so the CAP feed can skip the
documents of other provinces before downloading them (``AreaScope.concerns``).

The area in an identifier is the *issuing office's* area, not the warning's: a provincial
observatory (430000) issues for counties inside its province, a county observatory for its
own county. ``concerns`` therefore keeps every item whose issuer contains or lies inside a
division of the directory, and keeps (fails open on) anything it cannot read: an unparsable
identifier, a national or unknown issuer code. Dropping an item is only allowed when the
identifier proves it belongs elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol
from urllib.parse import unquote, urlsplit

from warnd.core.division import level_of, normalise, overlaps

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
_ID = re.compile(r"(\d{6})(\d{3})(\d{3})(\d{2})_(\d{14})")
_ID_IN = re.compile(r"(?<!\d)\d{14}_\d{14}(?!\d)")
#: province-level codes of GB/T 2260 (11 Beijing … 65 Xinjiang, 71 Taiwan, 81/82 HK/Macao)
PROVINCES = frozenset(
    {
        *(str(n) for n in (11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37)),
        *(str(n) for n in (41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65)),
        "71",
        "81",
        "82",
    }
)


class _Named(Protocol):
    """An index entry as far as identifiers go (``warnd.edges.feeds.index.IndexItem``)."""

    @property
    def link(self) -> str: ...
    @property
    def guid(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class CmaId:
    """The parts of a CMA identifier; ``issued`` is aware (Beijing time)."""

    text: str
    area: str
    organisation: str
    unit: str
    seq: str
    issued: datetime


def parse_id(text: str | None) -> CmaId | None:
    """``43312241600000_20250614081500`` → its parts; None for anything else."""
    if not text:
        return None
    m = _ID.fullmatch(text.strip())
    if m is None:
        return None
    try:
        issued = datetime.strptime(m.group(5), "%Y%m%d%H%M%S").replace(tzinfo=BEIJING)
    except ValueError:  # month 13, hour 25: not an identifier
        return None
    return CmaId(m.group(0), m.group(1), m.group(2), m.group(3), m.group(4), issued)


def find_id(*texts: str | None) -> CmaId | None:
    """The first CMA identifier in ``texts``: a guid as it is, else inside a link's path."""
    for text in texts:
        if not text:
            continue
        found = parse_id(text)
        if found is None:
            path = unquote(urlsplit(text).path) if "://" in text else text
            m = _ID_IN.search(path)
            found = parse_id(m.group(0)) if m else None
        if found is not None:
            return found
    return None


def _scope_code(raw: str) -> str | None:
    """A configured area (``43``, ``4331``, ``433122``, ``433122101``…) as a division code."""
    code = normalise(raw)
    if code is None:
        return None
    return code[:6] if len(code) > 6 else code  # an issuer is never finer than a county


class AreaScope:
    """The divisions warnd serves, as 6-digit codes (counties, or wider configured areas)."""

    __slots__ = ("_cache", "codes")

    def __init__(self, codes: Iterable[str]) -> None:
        found = {c for c in (_scope_code(r) for r in codes) if c is not None}
        self.codes: frozenset[str] = frozenset(found)
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.codes)

    def concerns(self, area: str | None) -> bool:
        """May an item issued for ``area`` concern these divisions? (fails open)."""
        if not self.codes or area is None or len(area) != 6 or not area.isdigit():
            return True
        if area[:2] not in PROVINCES:
            return True  # a national centre or an unknown code: let the document decide
        hit = self._cache.get(area)
        if hit is None:
            hit = self._cache[area] = any(overlaps(area, c) for c in self.codes)
        return hit

    def names(self, area: str | None, levels: Iterable[str]) -> bool:
        """Does an issuer at ``area`` (of one of ``levels``) surely concern these divisions?

        Strict, for the cross-check: an unreadable or national code does not.
        """
        if area is None or len(area) != 6 or not area.isdigit() or area[:2] not in PROVINCES:
            return False
        if level_of(area) not in set(levels):
            return False
        return self.concerns(area) if self.codes else True


def newest_item(items: Iterable[_Named]) -> str | None:
    """``identifier (issued)`` of the most recently issued CMA entry, for reports; else None."""
    best: CmaId | None = None
    for item in items:
        found = find_id(item.guid, item.link)
        if found is not None and (best is None or found.issued > best.issued):
            best = found
    return f"{best.text} ({best.issued.isoformat()})" if best is not None else None
