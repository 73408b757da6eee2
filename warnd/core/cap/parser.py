"""Parsing CAP 1.0/1.1/1.2 XML into the frozen values of ``warnd.core.cap.model``.

Feeds are untrusted: parsing is hardened (no DTD, entities, network or XInclude; bounded size),
the rules warnd relies on are checked here with messages a duty officer can act on, and the OASIS
schema is consulted last. What is accepted and refused, and why, is in docs/cap.md.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from functools import cache
from importlib import resources
from typing import Any, NoReturn

from lxml import etree

from warnd.core.cap.model import Alert, Area, Circle, Geocode, Info, Reference
from warnd.core.division import normalise
from warnd.core.errors import CapError
from warnd.core.xmlsafe import MAX_BYTES as MAX_BYTES
from warnd.core.xmlsafe import parse_xml

# --- parsing -----------------------------------------------------------------------------------

NAMESPACES: dict[str, str] = {
    "urn:oasis:names:tc:emergency:cap:1.2": "1.2",
    "urn:oasis:names:tc:emergency:cap:1.1": "1.1",
    "http://www.incident.com/cap/1.0": "1.0",
}
SCHEMA_FILES: dict[str, str] = {"1.2": "CAP-v1.2.xsd", "1.1": "CAP-v1.1.xsd", "1.0": "cap10.xsd"}
XMLDSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
_XINCLUDE = ("{http://www.w3.org/2001/XInclude}*", "{http://www.w3.org/2003/XInclude}*")
_CATEGORIES = ("Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport")
_CERTAINTIES = ("Likely", "Possible", "Unlikely", "Unknown")
#: enumerations per version (CAP 1.1 added Draft, CBRNE and Observed; 1.0 had "Very Likely")
ENUMS: dict[str, dict[str, tuple[str, ...]]] = {
    v: {
        "status": ("Actual", "Exercise", "System", "Test", *(("Draft",) if v != "1.0" else ())),
        "msgType": ("Alert", "Update", "Cancel", "Ack", "Error"),
        "scope": ("Public", "Restricted", "Private"),
        "category": (*_CATEGORIES, "Infra", *(("CBRNE",) if v != "1.0" else ()), "Other"),
        "urgency": ("Immediate", "Expected", "Future", "Past", "Unknown"),
        "severity": ("Extreme", "Severe", "Moderate", "Minor", "Unknown"),
        "certainty": ("Very Likely" if v == "1.0" else "Observed", *_CERTAINTIES),
    }
    for v in ("1.0", "1.1", "1.2")
}
_DOCTYPE = re.compile(r"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_DOCTYPE_BYTES = re.compile(_DOCTYPE.pattern.encode(), re.IGNORECASE)
#: byte prefixes of UTF-16/32 documents, in which a byte search cannot see "<!DOCTYPE"
_WIDE = (
    ((b"\xff\xfe\x00\x00", b"<\x00\x00\x00"), "utf-32-le"),
    ((b"\x00\x00\xfe\xff", b"\x00\x00\x00<"), "utf-32-be"),
    ((b"\xff\xfe", b"<\x00"), "utf-16-le"),
    ((b"\xfe\xff", b"\x00<"), "utf-16-be"),
)
_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", re.ASCII
)
_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_NUMBER = re.compile(_NUM, re.ASCII)
_PAIR = re.compile(rf"({_NUM}),({_NUM})", re.ASCII)
_COMMA = re.compile(r"\s*,\s*")
MAX_ID_LENGTH = 256
MIN_YEAR, MAX_YEAR = 1970, 2200
_BAD_ID = re.compile(r"[\s,<&]")
#: geocode schemes that look like digits but are not Chinese division codes (US SAME/FIPS,
#: Canada CAP-CP/CLC, MeteoAlarm EMMA, DWD warn cells, NUTS, Australian AMOC, postcodes);
#: any other valueName with 6/9/12 digits is read as a division code (feeds name it variously)
_FOREIGN_GEOCODE = re.compile(
    r"\s*(SAME|FIPS|UGC|EMMA|NUTS|WARNCELL|AMOC|ZIP|POST|ISO|profile:CAP-CP|layer:)",
    re.IGNORECASE,
)
_SCHEMA_LOCK = threading.Lock()  # an XMLSchema keeps its error log on itself

_El = etree._Element
_Kids = dict[str, list[etree._Element]]


def parse(data: bytes, *, source: str | None = None, strict: bool = False) -> Alert:
    """Turn one CAP document into an ``Alert``, or raise a one-line ``CapError``.

    ``strict`` refuses whatever the schema of the document's version refuses; otherwise a
    document that passes warnd's own checks and breaks the schema only by element order or
    unknown extra elements is accepted, the schema error kept in ``Alert.warnings``.
    """
    try:
        return _Parser(source, strict).run(data)
    except CapError:
        raise
    except Exception as exc:  # whatever happens, callers only ever see a CapError
        detail = " ".join(str(exc).split())[:160]
        raise CapError(f"cannot read CAP: {type(exc).__name__}: {detail}", source=source) from exc


def parse_file(path: str | os.PathLike[str], *, strict: bool = False) -> Alert:
    """Read and parse one CAP file (never more than MAX_BYTES + 1 bytes); errors name the file."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise CapError(f"cannot read file: {exc.strerror or exc}", source=source) from None
    return parse(data, source=source, strict=strict)


def summary(alert: Alert) -> dict[str, Any]:
    """The ``warnd inspect --json`` view of a message (contracts §4) plus a few extra keys."""
    info = alert.primary_info
    return {
        "identifier": alert.identifier,
        "sender": alert.sender,
        "sent": alert.sent.isoformat(),
        "status": alert.status,
        "msg_type": alert.msg_type,
        "references": [
            {"sender": r.sender, "identifier": r.identifier, "sent": r.sent}
            for r in alert.references
        ],
        "severity": alert.severity,
        "onset": _iso(alert.onset),
        "expires": _iso(alert.expires),
        "geocodes": list(alert.geocodes),
        "areas": len(alert.areas),
        "version": alert.version,
        "scope": alert.scope,
        "key": alert.key,
        "drill": alert.is_drill,
        "effective": _iso(alert.effective),
        "headline": alert.headline,
        "event": info.event if info is not None else None,
        "language": info.language if info is not None else None,
        "infos": len(alert.infos),
        "unmatched_geocodes": list(alert.unmatched_geocodes),
        "signed": alert.signed,
        "warnings": list(alert.warnings),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _text(el: _El) -> str:
    return (el.text or "").strip()


@cache
def _schema(version: str) -> etree.XMLSchema:
    """Load a packaged XSD once, lazily; its parser cannot fetch anything."""
    data = resources.files("warnd").joinpath("schemas", SCHEMA_FILES[version]).read_bytes()
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.XMLSchema(etree.fromstring(data, parser=parser))


class _Parser:
    """One document's parse: the source name for errors, the version, the warnings so far."""

    def __init__(self, source: str | None, strict: bool) -> None:
        self.source, self.strict = source, strict
        self.version, self.ns = "1.2", ""
        self.warnings: list[str] = []
        self.lenient: set[str] = set()  # paths of elements accepted leniently (warned already)
        self.tree: etree._ElementTree | None = None
        self.line: int | None = None  # for errors that have no element (schema errors)
        self.wrapped: set[str] = set()  # geometries already warned about for longitude > 180

    def fail(
        self, where: str | None, msg: str, el: _El | None = None, value: object = None
    ) -> NoReturn:
        line = el.sourceline if el is not None else self.line
        raise CapError(msg, source=self.source, line=line, field=where, value=value)

    def warn(self, where: str, msg: str, el: _El | None = None) -> None:
        at = f"line {el.sourceline}: " if el is not None and el.sourceline else ""
        self.warnings.append(f"{at}{where}: {msg}")

    def run(self, data: bytes) -> Alert:
        root = self._load(data)
        alert = self._alert(root)
        self._check_schema(root)
        return replace(alert, warnings=tuple(self.warnings)) if self.warnings else alert

    # -- the document

    def _load(self, data: bytes) -> _El:
        if not isinstance(data, bytes | bytearray):
            self.fail(None, f"expected bytes, got {type(data).__name__}")
        if len(data) > MAX_BYTES:
            self.fail(None, f"document larger than {MAX_BYTES} bytes refused", value=len(data))
        data = bytes(data)
        wide = next((codec for heads, codec in _WIDE if data.startswith(heads)), None)
        if _DOCTYPE_BYTES.search(data) or (
            wide and _DOCTYPE.search(data.decode(wide, errors="replace"))
        ):
            self.fail(None, "DOCTYPE/entities are not allowed (refused unparsed: XML attack risk)")
        root = parse_xml(data, source=self.source)
        self.tree = root.getroottree()
        doc = self.tree.docinfo
        if doc.doctype or doc.internalDTD is not None or doc.externalDTD is not None:
            self.fail(None, "DOCTYPE/entities are not allowed (XML attack risk)")
        if next(root.iter(*_XINCLUDE), None) is not None:
            self.fail(None, "XInclude is not allowed (refused; nothing was included)")
        name = etree.QName(root)
        if name.localname != "alert":
            where = f" in namespace {name.namespace}" if name.namespace else ""
            self.fail(None, f"not a CAP alert: root element is <{name.localname}>{where}", root)
        if name.namespace not in NAMESPACES:
            what = f"unknown namespace {name.namespace!r}" if name.namespace else "no namespace"
            self.fail(None, f"not a CAP alert: <alert> with {what}", root)
        self.ns, self.version = name.namespace, NAMESPACES[name.namespace]
        return root

    def _alert(self, root: _El) -> Alert:
        w, kids = "alert", self._kids(root)
        identifier = self._need(kids, "identifier", w, root)
        sender = self._need(kids, "sender", w, root)
        for name, value in (("identifier", identifier), ("sender", sender)):
            if len(value) > MAX_ID_LENGTH:
                # it becomes the warning key every message and gateway request carries
                self.fail(
                    f"{w}/{name}", f"longer than {MAX_ID_LENGTH} characters", None, f"{value[:40]}…"
                )
            if _BAD_ID.search(value):
                self.warn(f"{w}/{name}", "contains a space, comma, '<' or '&' (CAP forbids them)")
        self._need(kids, "sent", w, root)
        sent = self._time(kids, "sent", w)
        assert sent is not None  # _need made sure
        status = self._enum(kids, "status", w, root)
        msg_type = self._enum(kids, "msgType", w, root)
        scope = self._enum(kids, "scope", w, root)
        references = self._references(self._one(kids, "references", w))
        if msg_type in ("Update", "Cancel") and not references:
            refs = self._one(kids, "references", w)
            where = refs if refs is not None else root
            self.fail(f"{w}/references", f"{msg_type} without references", where)
        infos = kids.get("info", [])
        signature = etree.QName(XMLDSIG_NS, "Signature").text
        return Alert(
            version=self.version,
            identifier=identifier,
            sender=sender,
            sent=sent,
            status=status,
            msg_type=msg_type,
            scope=scope,
            references=references,
            infos=tuple(self._info(el, f"{w}/info[{i}]") for i, el in enumerate(infos, 1)),
            note=self._opt(kids, "note", w),
            codes=tuple(_text(c) for c in kids.get("code", [])),
            signed=root.find(signature) is not None,
        )

    def _references(self, el: _El | None) -> tuple[Reference, ...]:
        out: list[Reference] = []
        for token in _text(el).split() if el is not None else ():
            parts = token.split(",")
            if len(parts) != 3 or not all(parts):
                msg = "malformed reference (want sender,identifier,sent)"
                self.fail("alert/references", msg, el, token)
            out.append(Reference(parts[0], parts[1], parts[2]))
        return tuple(out)

    def _info(self, el: _El, w: str) -> Info:
        kids = self._kids(el)
        if "category" not in kids and self.version != "1.0":
            self.fail(f"{w}/category", "required element is missing", el)
        categories = tuple(self._value(c, "category", w) for c in kids.get("category", []))
        event = self._need(kids, "event", w, el)
        urgency, severity, certainty = (
            self._enum(kids, n, w, el) for n in ("urgency", "severity", "certainty")
        )
        for k, res in enumerate(kids.get("resource", []), 1):
            res_kids = self._kids(res)
            for name in ("resourceDesc", "mimeType")[: 2 if self.version == "1.2" else 1]:
                if name not in res_kids:
                    self.fail(f"{w}/resource[{k}]/{name}", "required element is missing", res)
        areas = kids.get("area", [])
        return Info(
            language=self._opt(kids, "language", w) or "en-US",
            categories=categories,
            event=event,
            event_codes=self._pairs(kids.get("eventCode", []), f"{w}/eventCode"),
            urgency=urgency,
            severity=severity,
            certainty=certainty,
            effective=self._time(kids, "effective", w),
            onset=self._time(kids, "onset", w),
            expires=self._time(kids, "expires", w),
            sender_name=self._opt(kids, "senderName", w),
            headline=self._opt(kids, "headline", w),
            description=self._opt(kids, "description", w),
            instruction=self._opt(kids, "instruction", w),
            web=self._opt(kids, "web", w),
            areas=tuple(self._area(a, f"{w}/area[{j}]") for j, a in enumerate(areas, 1)),
            audience=self._opt(kids, "audience", w),
            contact=self._opt(kids, "contact", w),
            response_types=tuple(_text(r) for r in kids.get("responseType", [])),
            parameters=self._pairs(kids.get("parameter", []), f"{w}/parameter"),
        )

    def _area(self, el: _El, w: str) -> Area:
        kids = self._kids(el)
        if self._one(kids, "areaDesc", w) is None:
            self.fail(f"{w}/areaDesc", "required element is missing", el)
        polygons = (
            self._polygon(p, f"{w}/polygon[{k}]") for k, p in enumerate(kids.get("polygon", []), 1)
        )
        circles = (
            self._circle(c, f"{w}/circle[{k}]") for k, c in enumerate(kids.get("circle", []), 1)
        )
        geocodes: list[Geocode] = []
        for name, value in self._pairs(kids.get("geocode", []), f"{w}/geocode"):
            if not value:
                self.warn(f"{w}/geocode", f"empty geocode ignored (valueName {name!r})", el)
                continue
            digits = value.isascii() and value.isdigit() and len(value) in (6, 9, 12)
            chinese = digits and not _FOREIGN_GEOCODE.match(name)
            geocodes.append(Geocode(name, value, normalise(value) if chinese else None))
        altitude, ceiling = self._number(kids, "altitude", w), self._number(kids, "ceiling", w)
        if ceiling is not None and altitude is None:
            self.warn(f"{w}/ceiling", "ceiling without altitude", el)
        return Area(
            description=self._opt(kids, "areaDesc", w) or "",
            polygons=tuple(p for p in polygons if p),
            circles=tuple(circles),
            geocodes=tuple(geocodes),
            altitude=altitude,
            ceiling=ceiling,
        )

    def _polygon(self, el: _El, w: str) -> tuple[tuple[float, float], ...]:
        text = _COMMA.sub(",", _text(el))
        if "(" in text or ")" in text:  # GDACS writes WKT-ish rings: keep the points, say so
            self.warn(w, "parentheses in polygon removed", el)
            text = text.replace("(", "").replace(")", "")
        if not text:
            self.warn(w, "empty polygon ignored", el)
            return ()
        points = tuple(self._point(t, w, el, "polygon point") for t in text.split())
        if len(points) < 4 or points[0] != points[-1]:
            self.warn(w, f"polygon not closed or under 4 points ({len(points)} points)", el)
        return points

    def _circle(self, el: _El, w: str) -> Circle:
        tokens = _COMMA.sub(",", _text(el)).split()
        if len(tokens) != 2 or not _NUMBER.fullmatch(tokens[1]):
            self.fail(w, "malformed circle (want 'lat,lon radius')", el, _text(el))
        lat, lon = self._point(tokens[0], w, el, "circle centre")
        if float(tokens[1]) < 0:
            self.fail(w, "negative circle radius", el, _text(el))
        return Circle(lat, lon, float(tokens[1]))

    def _point(self, token: str, w: str, el: _El, what: str) -> tuple[float, float]:
        m = _PAIR.fullmatch(token)
        if m is None:
            self.fail(w, f"malformed {what} (want lat,lon)", el, token)
        lat, lon = float(m[1]), float(m[2])
        if not (-90.0 <= lat <= 90.0 and -360.0 <= lon <= 360.0):
            self.fail(w, f"{what} out of range (lat -90..90, lon -360..360)", el, token)
        if abs(lon) > 180.0 and w not in self.wrapped:
            self.wrapped.add(w)
            self.warn(w, f"longitude beyond ±180 kept as given (antimeridian?): {token}", el)
        return lat, lon

    # -- element helpers

    def _kids(self, el: _El) -> _Kids:
        """Children in the document's CAP namespace by local name; the schema pass sees others."""
        out: _Kids = {}
        for child in el:
            if isinstance(child.tag, str):
                name = etree.QName(child)
                if name.namespace == self.ns:
                    out.setdefault(name.localname, []).append(child)
        return out

    def _one(self, kids: _Kids, name: str, w: str) -> _El | None:
        found = kids.get(name, [])
        if len(found) > 1:
            self.fail(f"{w}/{name}", f"<{name}> appears {len(found)} times", found[1])
        return found[0] if found else None

    def _opt(self, kids: _Kids, name: str, w: str) -> str | None:
        el = self._one(kids, name, w)
        return (_text(el) or None) if el is not None else None

    def _need(self, kids: _Kids, name: str, w: str, parent: _El) -> str:
        el = self._one(kids, name, w)
        if el is None:
            self.fail(f"{w}/{name}", "required element is missing", parent)
        if not _text(el):
            self.fail(f"{w}/{name}", "required value is empty", el, "")
        return _text(el)

    def _enum(self, kids: _Kids, name: str, w: str, parent: _El) -> str:
        el = self._one(kids, name, w)
        if el is None:
            self.fail(f"{w}/{name}", "required element is missing", parent)
        return self._value(el, name, w)

    def _value(self, el: _El, name: str, w: str) -> str:
        if _text(el) not in ENUMS[self.version][name]:
            label = "message type" if name == "msgType" else name
            self.fail(f"{w}/{name}", f"not a CAP {self.version} {label}", el, _text(el))
        return _text(el)

    def _number(self, kids: _Kids, name: str, w: str) -> float | None:
        el = self._one(kids, name, w)
        if el is not None and not _NUMBER.fullmatch(_text(el)):
            self.fail(f"{w}/{name}", "not a number", el, _text(el))
        return float(_text(el)) if el is not None else None

    def _pairs(self, els: list[_El], w: str) -> tuple[tuple[str, str], ...]:
        """eventCode/parameter/geocode: valueName + value (1.1, 1.2) or "name=value" (1.0)."""
        out: list[tuple[str, str]] = []
        for k, el in enumerate(els, 1):
            if self.version == "1.0":
                name, sep, value = _text(el).partition("=")
                out.append((name.strip(), value.strip()) if sep else ("", name.strip()))
                continue
            kids = self._kids(el)
            for part in ("valueName", "value"):
                if self._one(kids, part, f"{w}[{k}]") is None:
                    self.fail(f"{w}[{k}]/{part}", "required element is missing", el)
            out.append((_text(kids["valueName"][0]), _text(kids["value"][0])))
        return tuple(out)

    def _time(self, kids: _Kids, name: str, w: str) -> datetime | None:
        el, w = self._one(kids, name, w), f"{w}/{name}"
        if el is None:
            return None
        raw = _text(el)
        m = _TIME.fullmatch(raw)
        if m is None:
            self.fail(w, "not a CAP date-time (want YYYY-MM-DDThh:mm:ss+hh:mm)", el, raw)
        year, month, day, hour, minute, second, frac, offset = m.groups()
        if offset is None:
            self.fail(w, "date-time without a UTC offset (want e.g. +08:00)", el, raw)
        if offset == "Z":
            self._lenient(el, w, f"'Z' accepted as +00:00 (CAP wants +00:00) in {raw!r}")
        elif int(offset[1:3]) > 14 or int(offset[4:6]) > 59:
            self.fail(w, "UTC offset out of range", el, raw)
        if frac:
            self._lenient(el, w, f"fractional seconds accepted (CAP has none) in {raw!r}")
        hh, mm = (0, 0) if offset == "Z" else (int(offset[1:3]), int(offset[4:6]))
        delta = timedelta(hours=hh, minutes=mm) * (-1 if offset[0] == "-" else 1)
        micro = int((frac[1:] + "000000")[:6]) if frac else 0
        if not MIN_YEAR <= int(year) <= MAX_YEAR:
            # 0001 or 9999 with an offset overflows when converted to UTC further on
            self.fail(w, f"year outside {MIN_YEAR}–{MAX_YEAR}", el, raw)
        try:
            ymd = int(year), int(month), int(day)
            return datetime(*ymd, int(hour), int(minute), int(second), micro, timezone(delta))
        except ValueError as exc:
            self.fail(w, f"not a valid date-time: {exc}", el, raw)

    def _lenient(self, el: _El, w: str, msg: str) -> None:
        self.warn(w, msg, el)
        if self.tree is not None:
            self.lenient.add(self.tree.getpath(el))

    # -- the schema

    def _check_schema(self, root: _El) -> None:
        """Last word to the XSD: order/unknown-element errors are warnings unless strict."""
        schema = _schema(self.version)
        with _SCHEMA_LOCK:
            if schema.validate(root):
                return
            errors = list(schema.error_log)
        for err in errors:
            if err.message.startswith("Element '{" + XMLDSIG_NS + "}"):
                continue  # a Signature where the 1.0/1.1 schema has no slot for one: ignored
            if not self.strict and err.path in self.lenient:
                continue  # a time already accepted with a warning
            msg = re.sub(r"\{[^}]*\}", "", " ".join(err.message.split()))
            if self.strict or "This element is not expected" not in msg:
                self.line = err.line or None
                self.fail(None, f"does not conform to the CAP {self.version} schema: {msg}")
            self.warnings.append(f"line {err.line}: schema (element order/unknown element): {msg}")
