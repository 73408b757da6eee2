"""Hardened XML parsing shared by the CAP parser and the feed reader.

Feeds come from networks warnd does not control: no DTD, no entities, no network, no XInclude,
bounded size. A document that declares a DOCTYPE is refused outright rather than parsed with the
declaration ignored, so that an entity bomb is reported as what it is.
"""

from __future__ import annotations

import re

from lxml import etree

from warnd.core.errors import CapError

MAX_BYTES = 5 * 1024 * 1024
_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_BOM = b"\xef\xbb\xbf"


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


def parse_xml(data: bytes, *, source: str | None = None) -> etree._Element:
    """Parse untrusted bytes into an element tree, or raise one-line ``CapError``."""
    if not isinstance(data, bytes | bytearray):
        raise CapError("expected bytes", source=source)
    if len(data) > MAX_BYTES:
        raise CapError(f"document larger than {MAX_BYTES} bytes", source=source, value=len(data))
    body = bytes(data)
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    if not body.strip():
        raise CapError("empty document", source=source)
    # Literal "<!DOCTYPE"/"<!ENTITY" can only be markup (or sit in a CDATA section, which no
    # CAP producer needs): refusing on sight is simpler than trusting parser flags alone.
    if _DOCTYPE.search(body):
        raise CapError(
            "DOCTYPE/entity declarations are not allowed (possible XML attack)", source=source
        )
    try:
        root = etree.fromstring(body, parser=_parser())
    except etree.XMLSyntaxError as exc:
        msg = str(exc.msg if hasattr(exc, "msg") and exc.msg else exc).splitlines()[0]
        line = exc.lineno if getattr(exc, "lineno", None) else None
        raise CapError(f"malformed XML: {msg}", source=source, line=line) from None
    except (ValueError, etree.LxmlError) as exc:
        raise CapError(f"malformed XML: {exc}", source=source) from None
    if root is None:
        raise CapError("empty document", source=source)
    return root
