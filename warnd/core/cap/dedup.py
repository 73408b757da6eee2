"""The same warning from two sources: the key it is recognised by, and when two copies match.

Pure functions over values (docs/feeds.md, "One chain for one warning"). The CMA CAP feed and
QWeather relay the same official warning under different identifiers and senders, so the
identity of a message (sender, identifier, sent) cannot tell that they are one warning. What
both copies carry is the official title, ``<issuing office><verb><event><colour>预警``
(``泸溪县气象台发布暴雨橙色预警信号``), the CAP severity and the issue time. Two messages are
copies of one warning when they come from different senders and agree on the office, the
event, the severity, the message type and drill status, with issue times at most ``window``
apart.

A false match would silence a real warning; a missed match only calls people twice. So
everything is strict: a headline that does not name an office gives no key (never
deduplicated), and severity and message type must be equal.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from warnd.core.cap.model import Alert, Area, Geocode
from warnd.core.division import contains

#: how far apart the issue times of two copies may be (QWeather gives minutes, CAP seconds)
DEFAULT_WINDOW = timedelta(minutes=5)

#: verbs that follow the office in an official title (the first one found ends the office)
_VERB = re.compile(r"发布|更新|解除|取消|撤销|变更|调整|升级|降级|维持|延长|继续发布|将")
#: a date or time written into a title between the office and the verb
_DATE = re.compile(
    r"\d{2,4}年\d{1,2}月\d{1,2}日(?:\d{1,2}时(?:\d{1,2}分)?)?|\d{1,2}时(?:\d{1,2}分)?"
)
_TRAILING = re.compile(r"(?:继续|再次|已|于|在|今天|今日)+$")
_COLOUR = re.compile(r"[红橙黄蓝白]色")
_EVENT_SUFFIX = re.compile(r"(?:预警信号|预警|信号)$")
_CJK = re.compile(r"[\u4e00-\u9fff]")
#: how an issuing body's name ends (气象台, 气象局, 预警中心, 自然资源厅, 指挥部, 办公室 ...)
_INSTITUTION = re.compile(r"[台局站厅部室会院所]$|中心$")
MAX_OFFICE = 32


@dataclass(frozen=True, slots=True)
class DedupKey:
    """What two copies of one warning agree on (``issued`` is an instant in UTC)."""

    office: str
    event: str
    severity: str
    kind: str  # the CAP msgType: Alert | Update | Cancel
    drill: bool
    issued: datetime

    def text(self) -> str:
        """One line for ``warnd inspect`` and logs: ``office|event|severity|kind|real|issued``."""
        mode = "drill" if self.drill else "real"
        at = self.issued.astimezone(UTC).isoformat(timespec="seconds")
        return f"{self.office}|{self.event}|{self.severity}|{self.kind}|{mode}|{at}"


def _clean(text: str) -> str:
    """NFKC (full-width digits and letters), no whitespace."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def office_and_event(headline: str | None, event: str | None = None) -> tuple[str | None, str]:
    """The issuing office and the event an official title names.

    ``泸溪县气象台发布暴雨橙色预警信号`` → (``泸溪县气象台``, ``暴雨``);
    ``北京市气象台2021年10月09日15时40分发布大风蓝色预警信号`` → (``北京市气象台``, ``大风``).
    The office is None when the title names none; the event then falls back to ``event``.
    """
    fallback = _EVENT_SUFFIX.sub("", _clean(event or ""))
    title = _clean(headline or "")
    for verb in _VERB.finditer(title):  # 将乐县气象台发布…: the first 将 is part of the name
        office = _TRAILING.sub("", _DATE.sub("", title[: verb.start()]))
        if 0 < len(office) <= MAX_OFFICE and _CJK.search(office) and _INSTITUTION.search(office):
            break
    else:
        return None, fallback
    rest = title[verb.end() :]
    colour = _COLOUR.search(rest)
    cut = colour.start() if colour else rest.find("预警")
    named = _EVENT_SUFFIX.sub("", rest[:cut] if cut > 0 else "")
    return office, named or fallback


def key_from(
    headline: str | None,
    event: str | None,
    severity: str | None,
    kind: str,
    drill: bool,
    issued: datetime,
) -> DedupKey | None:
    """The key of a message from stored columns; None when it names no office or event."""
    office, name = office_and_event(headline, event)
    if office is None or not name:
        return None
    return DedupKey(office, name, severity or "Unknown", kind, drill, issued.astimezone(UTC))


def key_of(alert: Alert) -> DedupKey | None:
    """The key of a parsed message (its Chinese info block's headline and event)."""
    info = alert.primary_info
    return key_from(
        alert.headline,
        info.event if info is not None else None,
        alert.severity,
        alert.msg_type,
        alert.is_drill,
        alert.sent,
    )


def same_warning(a: DedupKey, b: DedupKey, window: timedelta = DEFAULT_WINDOW) -> bool:
    """True when ``a`` and ``b`` are copies of one warning."""
    return (
        a.office == b.office
        and a.event == b.event
        and a.severity == b.severity
        and a.kind == b.kind
        and a.drill == b.drill
        and abs(a.issued - b.issued) <= window
    )


def uncovered(area: list[str] | tuple[str, ...], codes: tuple[str, ...]) -> tuple[str, ...]:
    """The division codes of ``codes`` that no code of ``area`` contains."""
    return tuple(c for c in codes if not any(contains(a, c) for a in area))


def with_area(alert: Alert, extra: tuple[str, ...]) -> Alert:
    """``alert`` with the division codes ``extra`` added to its area (a copy's area merged).

    The codes go into one more ``<area>`` of the primary info block, so ``Alert.geocodes`` is
    the union and nothing else of the message changes.
    """
    info = alert.primary_info
    if info is None or not extra:
        return alert
    added = Area(
        description="合并自另一来源 (merged from another source)",
        geocodes=tuple(Geocode("CPEAS Geographic Code", c, c) for c in extra),
    )
    merged = replace(info, areas=(*info.areas, added))
    return replace(alert, infos=tuple(merged if i is info else i for i in alert.infos))
