"""The frozen values a CAP message becomes (what the rest of warnd reads).

Feeds are untrusted: parsing is hardened (no DTD, entities, network or XInclude; bounded size),
the rules warnd relies on are checked here with messages a duty officer can act on, and the OASIS
schema is consulted last. What is accepted and refused, and why, is in docs/cap.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from warnd.core.xmlsafe import MAX_BYTES as MAX_BYTES

Severity = Literal["Extreme", "Severe", "Moderate", "Minor", "Unknown"]
#: rank for comparisons: Unknown < Minor < Moderate < Severe < Extreme
SEVERITY_RANK: dict[str, int] = {"Unknown": 0, "Minor": 1, "Moderate": 2, "Severe": 3, "Extreme": 4}


@dataclass(frozen=True, slots=True)
class Reference:
    sender: str
    identifier: str
    sent: str  # verbatim: real feeds get it wrong, so it is never parsed for matching


@dataclass(frozen=True, slots=True)
class Geocode:
    value_name: str
    value: str
    division: str | None  # normalised division code (warnd.core.division.normalise) or None


@dataclass(frozen=True, slots=True)
class Circle:
    lat: float
    lon: float
    radius_km: float


@dataclass(frozen=True, slots=True)
class Area:
    description: str
    polygons: tuple[tuple[tuple[float, float], ...], ...] = ()  # (lat, lon) points
    circles: tuple[Circle, ...] = ()
    geocodes: tuple[Geocode, ...] = ()
    altitude: float | None = None
    ceiling: float | None = None


@dataclass(frozen=True, slots=True)
class Info:
    language: str
    categories: tuple[str, ...]
    event: str
    event_codes: tuple[tuple[str, str], ...]
    urgency: str
    severity: str
    certainty: str
    effective: datetime | None
    onset: datetime | None
    expires: datetime | None
    sender_name: str | None
    headline: str | None
    description: str | None
    instruction: str | None
    web: str | None
    areas: tuple[Area, ...]
    audience: str | None = None
    contact: str | None = None
    response_types: tuple[str, ...] = ()
    parameters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Alert:
    version: str  # "1.0" | "1.1" | "1.2"
    identifier: str
    sender: str
    sent: datetime  # keeps the offset given
    status: str  # Actual | Exercise | System | Test | Draft
    msg_type: str  # Alert | Update | Cancel | Ack | Error
    scope: str
    references: tuple[Reference, ...]
    infos: tuple[Info, ...]
    note: str | None = None
    warnings: tuple[str, ...] = field(default=())  # accepted deviations (e.g. XSD element order)
    codes: tuple[str, ...] = ()  # <code>: profile markers such as "IPAWSv1.0"
    signed: bool = False  # carries an XML-DSig <Signature> (not verified, see docs/cap.md)

    # Derived views used by the planner and the commands. Multi-info messages (zh-CN + en-US
    # copies of one warning) are read conservatively: highest severity, earliest onset,
    # latest expiry, union of areas.

    @property
    def is_drill(self) -> bool:
        """Exercise and Test messages run the chain marked as drills, never as real warnings."""
        return self.status in ("Exercise", "Test")

    @property
    def severity(self) -> str | None:
        """The highest severity over the info blocks (None when there is no info)."""
        if not self.infos:
            return None
        return max((i.severity for i in self.infos), key=lambda s: SEVERITY_RANK.get(s, 0))

    @property
    def onset(self) -> datetime | None:
        values = [i.onset for i in self.infos if i.onset is not None]
        return min(values) if values else None

    @property
    def effective(self) -> datetime | None:
        values = [i.effective for i in self.infos if i.effective is not None]
        return min(values) if values else None

    @property
    def expires(self) -> datetime | None:
        values = [i.expires for i in self.infos if i.expires is not None]
        return max(values) if values else None

    @property
    def areas(self) -> tuple[Area, ...]:
        return tuple(a for i in self.infos for a in i.areas)

    @property
    def geocodes(self) -> tuple[str, ...]:
        """Normalised division codes of every area, deduplicated, in first-seen order."""
        seen: dict[str, None] = {}
        for area in self.areas:
            for g in area.geocodes:
                if g.division is not None:
                    seen.setdefault(g.division, None)
        return tuple(seen)

    @property
    def unmatched_geocodes(self) -> tuple[str, ...]:
        """Geocode values that are no division code (reported, never a crash)."""
        seen: dict[str, None] = {}
        for area in self.areas:
            for g in area.geocodes:
                if g.division is None:
                    seen.setdefault(g.value, None)
        return tuple(seen)

    @property
    def primary_info(self) -> Info | None:
        """The Chinese info block when there is one (operators read Chinese), else the first."""
        for info in self.infos:
            if info.language.lower().startswith("zh"):
                return info
        return self.infos[0] if self.infos else None

    @property
    def headline(self) -> str | None:
        info = self.primary_info
        if info is None:
            return None
        return info.headline or info.event

    @property
    def key(self) -> str:
        """Identity of this message: (sender, identifier, sent as an instant)."""
        return f"{self.sender},{self.identifier},{self.sent.astimezone(UTC).isoformat()}"
