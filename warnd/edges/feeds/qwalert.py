"""QWeather (和风天气) weather-alert responses, and each alert as the CAP message warnd reads.

Pure: bytes in, values out. ``/weatheralert/v1/current/{lat}/{lon}`` answers (gzip-compressed
JSON, docs/feeds.md) ``{"metadata": {"tag", "zeroResult", "attributions"}, "alerts": [...]}``;
each alert has ``id``, ``senderName``, ``issuedTime``, ``messageType: {code, supersedes}``,
``eventType: {name, code}``, ``urgency``, ``severity``, ``certainty``, ``color: {code, ...}``,
``effectiveTime``, ``onsetTime``, ``expireTime``, ``headline``, ``description``,
``instruction``. Times are ISO 8601 with minutes and an offset (``2025-10-24T11:19+08:00``,
``2025-10-16T21:00Z``).

``to_cap`` writes one alert as a CAP 1.2 document, so that it goes through the same parser,
store, chain, dedup and drills as the CMA feed (``warnd inspect`` shows the same keys). The
provider asks its users not to hard-code its lists: an unknown code or value is data (kept in
a parameter, mapped to ``Unknown`` or to the safe default), never a crash. Only what cannot
become a message at all is refused, with a one-line reason: no ``id``, no usable issue time,
a cancel that names nothing to cancel.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from lxml import etree

from warnd.core.errors import CapError
from warnd.core.xmlsafe import MAX_BYTES

NS = "urn:oasis:names:tc:emergency:cap:1.2"
#: the CAP sender of every QWeather alert: ids are the provider's, references name them
SENDER = "qweather"
GEOCODE_NAME = "CPEAS Geographic Code"
MSG_TYPES = {"alert": "Alert", "update": "Update", "cancel": "Cancel"}
#: China's signal colours are the warning level: the CAP severity CMA gives them
COLOUR_SEVERITY = {"blue": "Minor", "yellow": "Moderate", "orange": "Severe", "red": "Extreme"}
SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
URGENCIES = ("Immediate", "Expected", "Future", "Past", "Unknown")
CERTAINTIES = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")
MAX_NOTE = 16 * 1024
_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d)(?::(\d\d)(?:\.\d+)?)?\s*(Z|[+-]\d\d:?\d\d)", re.ASCII
)
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_GZIP = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class Point:
    """A configured place polled for alerts, and the division code it stands for."""

    code: str
    lat: float
    lon: float
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.code


@dataclass(frozen=True, slots=True)
class Response:
    """The alerts of one answer (objects only) and what was wrong with the rest."""

    alerts: tuple[Mapping[str, Any], ...]
    problems: tuple[str, ...] = ()
    tag: str | None = None


def _text(value: Any) -> str | None:
    """A scalar as clean one-piece text (XML-safe); containers and blanks give None."""
    if value is None or isinstance(value, dict | list | bool):
        return None
    text = _NOT_XML.sub("", str(value)).strip()
    return text or None


def parse_time(value: Any) -> datetime | None:
    """``2025-10-24T11:19+08:00`` / ``2025-10-16T21:00Z`` / with seconds → aware; else None."""
    text = _text(value)
    m = _TIME.fullmatch(text) if text else None
    if m is None:
        return None
    y, mo, d, h, mi, s, off = m.groups()
    try:
        if off == "Z":
            tz = UTC
        else:
            sign = -1 if off[0] == "-" else 1
            hh, mm = int(off[1:3]), int(off[-2:])
            tz = timezone(sign * timedelta(hours=hh, minutes=mm))
        return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0), tzinfo=tz)
    except ValueError:  # 2025-13-40, offset +25:00
        return None


def _inflate(data: bytes, source: str) -> bytes:
    """A gzip body saved as it came (no HTTP client inflated it), bounded against bombs."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_BYTES + 1)
    except zlib.error as exc:
        raise CapError(f"broken gzip data: {exc}", source=source) from None
    if len(out) > MAX_BYTES or inflater.unconsumed_tail:
        raise CapError(f"response larger than {MAX_BYTES} bytes once inflated", source=source)
    return out


def read_response(data: bytes, source: str) -> Response:
    """The alerts of one weather-alert answer; ``CapError`` (one line) when it is unusable."""
    if len(data) > MAX_BYTES:
        raise CapError(f"response larger than {MAX_BYTES} bytes refused", source=source)
    if data[:2] == _GZIP:
        data = _inflate(data, source)
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:120]
        raise CapError(f"not a QWeather JSON response: {detail}", source=source) from None
    if not isinstance(doc, dict):
        raise CapError("not a QWeather response (expected a JSON object)", source=source)
    error = doc.get("error")
    if isinstance(error, dict):  # v2 error codes: {"error": {"status", "title", "detail"}}
        what = " ".join(t for t in (_text(error.get("title")), _text(error.get("detail"))) if t)
        raise CapError(
            f"QWeather error {error.get('status')}: {what or 'no detail'}", source=source
        )
    code = doc.get("code")
    if code is not None and str(code) != "200":  # v1 error codes: {"code": "401"}
        raise CapError(f"QWeather error code {code}", source=source)
    meta = doc.get("metadata")
    alerts = doc.get("alerts")
    if alerts is None and isinstance(meta, dict) and meta.get("zeroResult") is True:
        alerts = []
    if not isinstance(alerts, list):
        raise CapError("not a weather-alert response: no `alerts` list", source=source)
    problems = [
        f"alerts[{i}]: not an object" for i, a in enumerate(alerts) if not isinstance(a, dict)
    ]
    tag = _text(meta.get("tag")) if isinstance(meta, dict) else None
    return Response(tuple(a for a in alerts if isinstance(a, dict)), tuple(problems), tag)


def alert_id(alert: Mapping[str, Any]) -> str | None:
    """The alert's ``id`` as text, or None."""
    return _text(alert.get("id"))


def issued(alert: Mapping[str, Any]) -> datetime | None:
    """When the original warning was issued (``issuedTime``, else ``effectiveTime``)."""
    return parse_time(alert.get("issuedTime")) or parse_time(alert.get("effectiveTime"))


def _severity(alert: Mapping[str, Any]) -> str:
    """The signal colour when it is one of China's four, else ``severity``, else Unknown."""
    colour = alert.get("color")
    code = _text(colour.get("code")) if isinstance(colour, dict) else _text(colour)
    if code and code.lower() in COLOUR_SEVERITY:
        return COLOUR_SEVERITY[code.lower()]
    return _enum(alert.get("severity"), SEVERITIES)


def _enum(value: Any, allowed: Sequence[str]) -> str:
    text = (_text(value) or "").lower()
    return next((a for a in allowed if a.lower() == text), "Unknown")


def _message_type(alert: Mapping[str, Any], notes: list[str]) -> tuple[str, list[str]]:
    """CAP msgType and the superseded ids; unknown codes are read as safely as they can be."""
    kind = alert.get("messageType")
    raw_code = _text(kind.get("code")) if isinstance(kind, dict) else _text(kind)
    raw = kind.get("supersedes") if isinstance(kind, dict) else None
    raw = [raw] if isinstance(raw, str | int) else raw if isinstance(raw, list) else []
    ids: list[str] = []
    for value in raw:
        sid = _text(value)
        if sid and not re.search(r"[\s,]", sid):
            ids.append(sid)
        elif value is not None:
            notes.append(f"supersedes value ignored: {value!r}")
    code = (raw_code or "").lower()
    msg_type = MSG_TYPES.get(code)
    if msg_type is None:
        msg_type = "Update" if ids else "Alert"
        notes.append(f"unknown messageType {raw_code!r}: read as {msg_type}")
    if msg_type == "Update" and not ids:
        notes.append("update that supersedes nothing: read as a new alert")
        msg_type = "Alert"
    return msg_type, ids


def _add(parent: etree._Element, tag: str, text: str | None) -> None:
    if text is not None:
        etree.SubElement(parent, f"{{{NS}}}{tag}").text = text


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def to_cap(
    alert: Mapping[str, Any],
    points: Sequence[Point],
    *,
    identifier: str | None = None,
    extends: str | None = None,
) -> bytes:
    """One alert as a CAP 1.2 document; its area is the division codes of ``points``.

    ``identifier``/``extends``: an area update of an alert already handed over (more points
    reported it later): an Update that references the alert ``extends``.
    """
    source = f"qweather:{alert_id(alert) or '?'}"
    aid = alert_id(alert)
    if aid is None:
        raise CapError("QWeather alert without an id", source=source)
    sent = issued(alert)
    if sent is None:
        value = alert.get("issuedTime")
        raise CapError(f"QWeather alert {aid}: no usable issuedTime (got {value!r})", source=source)
    notes: list[str] = []
    msg_type, supersedes = _message_type(alert, notes)
    if extends is not None:
        msg_type, supersedes = "Update", [extends]
    if msg_type == "Cancel" and not supersedes:
        raise CapError(f"QWeather alert {aid}: cancel that names nothing to cancel", source=source)
    sent_text = sent.isoformat(timespec="seconds")

    root = etree.Element(f"{{{NS}}}alert", nsmap={None: NS})
    _add(root, "identifier", identifier or aid)
    _add(root, "sender", SENDER)
    _add(root, "sent", sent_text)
    _add(root, "status", "Actual")
    _add(root, "msgType", msg_type)
    _add(root, "scope", "Public")
    body = json.dumps(alert, ensure_ascii=False, separators=(",", ":"), default=str)
    note = " ".join([f"QWeather 和风天气 alert {aid}.", *notes, f"received: {body}"])
    _add(root, "note", _text(note[:MAX_NOTE]))
    if supersedes:
        _add(root, "references", " ".join(f"{SENDER},{s},{sent_text}" for s in supersedes))

    _info(etree.SubElement(root, f"{{{NS}}}info"), alert, points)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def _info(info: etree._Element, alert: Mapping[str, Any], points: Sequence[Point]) -> None:
    """The one ``<info>`` block (zh-CN) of an alert, its area one ``<area>`` per point."""
    event_type = alert.get("eventType")
    event_type = event_type if isinstance(event_type, dict) else {}
    event = _text(event_type.get("name")) or _text(event_type.get("code")) or "未知预警"
    _add(info, "language", "zh-CN")
    _add(info, "category", "Met")
    _add(info, "event", event)
    _add(info, "urgency", _enum(alert.get("urgency"), URGENCIES))
    _add(info, "severity", _severity(alert))
    _add(info, "certainty", _enum(alert.get("certainty"), CERTAINTIES))
    code = _text(event_type.get("code"))
    if code is not None:
        ec = etree.SubElement(info, f"{{{NS}}}eventCode")
        _add(ec, "valueName", "QWeather_EventType")
        _add(ec, "value", code)
    _add(info, "effective", _iso(parse_time(alert.get("effectiveTime"))))
    _add(info, "onset", _iso(parse_time(alert.get("onsetTime"))))
    expires = alert.get("expireTime", alert.get("expiredTime"))  # both spellings are documented
    _add(info, "expires", _iso(parse_time(expires)))
    _add(info, "senderName", _text(alert.get("senderName")))
    sender_name = _text(alert.get("senderName")) or ""
    _add(info, "headline", _text(alert.get("headline")) or f"{sender_name}{event}预警")
    _add(info, "description", _text(alert.get("description")))
    _add(info, "instruction", _text(alert.get("instruction")))
    for name in ("color", "severity", "criteria"):
        value = alert.get(name)
        value = value.get("code") if isinstance(value, dict) else value
        if _text(value) is not None:
            param = etree.SubElement(info, f"{{{NS}}}parameter")
            _add(param, "valueName", f"qweather:{name}")
            _add(param, "value", _text(value))
    for point in points:
        area = etree.SubElement(info, f"{{{NS}}}area")
        _add(area, "areaDesc", _text(point.label) or point.code)
        geocode = etree.SubElement(area, f"{{{NS}}}geocode")
        _add(geocode, "valueName", GEOCODE_NAME)
        _add(geocode, "value", point.code)
