"""What a fetched feed body holds: one CAP alert, embedded alerts, or links to CAP documents.

Pure: bytes in, values out, no I/O. The HTTP feed decides what to fetch; this module only says
which links an index names, so that the rules for "which link is the CAP link" live in one
place and can be tested on the corpus without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urljoin, urlsplit

from lxml import etree

from warnd.core.errors import CapError
from warnd.core.xmlsafe import parse_xml

IndexKind = Literal["cap", "atom", "rss", "edxl"]

CAP_NAMESPACES = frozenset(
    {
        "urn:oasis:names:tc:emergency:cap:1.2",
        "urn:oasis:names:tc:emergency:cap:1.1",
        "http://www.incident.com/cap/1.0",
    }
)
CAP_MIME = "application/cap+xml"
_CAP_SUFFIXES = (".xml", ".cap")
_FOLLOWED_SCHEMES = frozenset({"http", "https"})


@dataclass(frozen=True, slots=True)
class IndexItem:
    """One linked entry of an index: its CAP link, and the entry's guid/id and title if any.

    The guid lets a reader recognise an entry it has seen and, for the CMA feed, tell the
    issuing area before downloading anything (``warnd.edges.feeds.cma``).
    """

    link: str
    guid: str | None = None
    title: str | None = None


@dataclass(frozen=True, slots=True)
class IndexResult:
    """The items of one feed body: embedded alert documents and absolute CAP links.

    ``ignored`` lists links the index named but warnd will not follow (non-http schemes,
    unparseable URLs), so the caller can log them. ``items`` are the ``links`` with the guid
    and title of the entry that named each (same order).
    """

    kind: IndexKind
    embedded: tuple[bytes, ...]
    links: tuple[str, ...]
    ignored: tuple[str, ...] = ()
    items: tuple[IndexItem, ...] = ()


def _local(el: etree._Element) -> str:
    """The local name of an element (``{ns}name`` → ``name``; cheaper than ``etree.QName``)."""
    return str(el.tag).rpartition("}")[2]


def _ns(el: etree._Element) -> str | None:
    tag = str(el.tag)
    return tag[1 : tag.index("}")] if tag.startswith("{") else None


def _children(el: etree._Element, local: str) -> list[etree._Element]:
    """Element children with this local name, whatever their namespace."""
    return [c for c in el.iterchildren(tag=etree.Element) if _local(c) == local]


def _is_cap_alert(el: etree._Element) -> bool:
    return _local(el) == "alert" and _ns(el) in CAP_NAMESPACES


def _serialise(alert: etree._Element) -> bytes:
    """An embedded alert as a standalone document (in-scope namespaces are carried along)."""
    return etree.tostring(alert, encoding="UTF-8", xml_declaration=True, with_tail=False)


def _embedded_alerts(container: etree._Element) -> list[etree._Element]:
    """Outermost CAP alerts anywhere below ``container`` (an alert is not searched inside)."""
    found: list[etree._Element] = []
    stack = list(container.iterchildren(tag=etree.Element))
    stack.reverse()
    while stack:
        el = stack.pop()
        if _is_cap_alert(el):
            found.append(el)
            continue
        kids = list(el.iterchildren(tag=etree.Element))
        kids.reverse()
        stack.extend(kids)
    return found


def _looks_like_cap_url(href: str) -> bool:
    path = urlsplit(href).path.lower()
    return path.endswith(_CAP_SUFFIXES)


def _atom_entry_links(entry: etree._Element) -> list[str]:
    """The CAP links of one Atom entry, best first.

    1. links typed ``application/cap+xml``; else 2. links whose path ends ``.xml``/``.cap``;
    else 3. the entry's alternate link, unless it is typed as HTML (legacy NWS indexes give
    an untyped alternate link to the CAP document). ``rel="self"`` is never a CAP link.
    """
    links = [
        (
            (ln.get("href") or "").strip(),
            (ln.get("type") or "").strip().lower(),
            (ln.get("rel") or "alternate").strip().lower(),
        )
        for ln in _children(entry, "link")
    ]
    links = [(h, t, r) for h, t, r in links if h and r != "self"]
    typed = [h for h, t, _ in links if t.split(";")[0].strip() == CAP_MIME]
    if typed:
        return typed
    suffixed = [h for h, t, _ in links if _looks_like_cap_url(h) and "html" not in t]
    if suffixed:
        return suffixed
    return [h for h, t, r in links if r == "alternate" and "html" not in t][:1]


def _text(el: etree._Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _rss_item_links(item: etree._Element) -> list[str]:
    """The CAP link of one RSS item: a CAP enclosure, else ``<link>``, else a permalink guid."""
    for enc in _children(item, "enclosure"):
        url = (enc.get("url") or "").strip()
        kind = (enc.get("type") or "").strip().lower()
        if url and (kind.split(";")[0].strip() == CAP_MIME or _looks_like_cap_url(url)):
            return [url]
    # RSS <link> has no namespace; an atom:link inside an item carries href instead.
    for ln in _children(item, "link"):
        href = _text(ln) or (ln.get("href") or "").strip()
        if href:
            return [href]
    for guid in _children(item, "guid"):
        value = _text(guid)
        permalink = (guid.get("isPermaLink") or "true").strip().lower() != "false"
        if permalink and value and urlsplit(value).scheme.lower() in _FOLLOWED_SCHEMES:
            return [value]
    return []


_Href = tuple[str, str | None, str | None]  # (href, guid or Atom id, title)


def _collect(
    entries: list[etree._Element], link_rule: Literal["atom", "rss"]
) -> tuple[list[bytes], list[_Href]]:
    embedded: list[bytes] = []
    hrefs: list[_Href] = []
    for entry in entries:
        alerts = _embedded_alerts(entry)
        if alerts:  # a "fat" entry: its links point at the same alert, do not fetch it again
            embedded.extend(_serialise(a) for a in alerts)
            continue
        found = _atom_entry_links(entry) if link_rule == "atom" else _rss_item_links(entry)
        ident = next(
            (_text(e) for e in _children(entry, "guid" if link_rule == "rss" else "id")), ""
        )
        title = next((_text(e) for e in _children(entry, "title")), "")
        hrefs.extend((h, ident or None, title or None) for h in found)
    return embedded, hrefs


def _resolve(
    hrefs: list[_Href], base_url: str
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[IndexItem, ...]]:
    """Absolute, de-duplicated http(s) links in order, the links refused, and their items."""
    links: dict[str, IndexItem] = {}
    ignored: dict[str, None] = {}
    for href, guid, title in hrefs:
        try:
            absolute = urljoin(base_url, href)
            parts = urlsplit(absolute)
            ok = parts.scheme.lower() in _FOLLOWED_SCHEMES and bool(parts.hostname)
        except ValueError:
            absolute, ok = href, False
        if ok:
            links.setdefault(absolute, IndexItem(absolute, guid, title))
        else:
            ignored[absolute] = None
    return tuple(links), tuple(ignored), tuple(links.values())


def read_index(data: bytes, base_url: str) -> IndexResult:
    """Classify a feed body and list its items; raise one-line ``CapError`` for anything else.

    A root ``<alert>`` (any namespace: the CAP parser reports a wrong one precisely) is one
    item, passed on byte for byte so that encoding and signatures survive.
    """
    root = parse_xml(data, source=base_url)
    local = _local(root)
    if local == "alert":
        return IndexResult(kind="cap", embedded=(bytes(data),), links=())
    if local == "feed":
        embedded, hrefs = _collect(_children(root, "entry"), "atom")
        return IndexResult("atom", tuple(embedded), *_resolve(hrefs, base_url))
    if local in ("rss", "RDF"):
        channels = _children(root, "channel")
        items = [i for ch in channels for i in _children(ch, "item")]
        items += _children(root, "item")  # RSS 1.0 (RDF) keeps items beside the channel
        if local == "rss" and not channels:
            raise CapError("RSS document without <channel>", source=base_url)
        embedded, hrefs = _collect(items, "rss")
        return IndexResult("rss", tuple(embedded), *_resolve(hrefs, base_url))
    if local == "EDXLDistribution":
        found: list[bytes] = []
        for obj in _children(root, "contentObject"):
            for xml_content in _children(obj, "xmlContent"):
                for holder in _children(xml_content, "embeddedXMLContent"):
                    for el in holder.iterchildren(tag=etree.Element):
                        if _local(el) == "alert":
                            found.append(_serialise(el))
        return IndexResult("edxl", tuple(found), ())
    raise CapError(
        "not a CAP alert, Atom/RSS feed or EDXL-DE distribution",
        source=base_url,
        field="root",
        value=f"<{local}>",
    )
