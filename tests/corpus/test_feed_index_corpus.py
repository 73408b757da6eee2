"""``read_index`` on the external corpus's feeds (tests/data/feeds has the repository's own)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree
from samples import CORPUS

from warnd.core.errors import CapError
from warnd.core.xmlsafe import parse_xml
from warnd.edges.feeds.index import CAP_NAMESPACES, read_index

VALID = sorted((CORPUS / "feeds" / "valid").iterdir())
INVALID = sorted((CORPUS / "feeds" / "invalid").iterdir())
BASE = "https://feeds.example.test/cap/index.atom"
EXPECTED = {f["file"]: f for f in json.loads((CORPUS / "expected.json").read_text())["files"]}

# (kind, embedded alerts, links) per file; alert counts agree with expected.json (checked below).
VALID_COUNTS = {
    "capparselib_rfs.xml": ("edxl", 1, 0),
    "capparselib_sweden.atom": ("atom", 0, 4),
    "capparselib_us_nws_weather.atom": ("atom", 0, 2),
    "capparselib_usgs_alerthub.atom": ("atom", 0, 1),
    "fpas_au-bom-en.rss.xml": ("rss", 0, 1),
    "gcap_amber.atom": ("atom", 1, 0),
    "gcap_amber.rss": ("rss", 0, 1),
    "gcap_bushfire_valid.edxlde": ("edxl", 7, 0),
    "gcap_canada_signed.atom": ("atom", 1, 0),
    "gcap_earthquake_index.atom": ("atom", 0, 1),
    "gcap_empty_weather_index.atom": ("atom", 0, 0),
    "gcap_ny_index.rss": ("rss", 0, 2),
    "gcap_weather.atom": ("atom", 1, 0),
    "gcap_weather_index.atom": ("atom", 0, 2),
}


def _alert_identifier(doc: bytes) -> str | None:
    root = parse_xml(doc)
    for el in root.iterchildren(tag=etree.Element):
        if etree.QName(el).localname == "identifier":
            return (el.text or "").strip()
    return None


def test_every_valid_feed_has_an_expectation() -> None:
    assert {p.name for p in VALID} == set(VALID_COUNTS)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_feed_counts(path: Path) -> None:
    kind, n_embedded, n_links = VALID_COUNTS[path.name]
    result = read_index(path.read_bytes(), BASE)
    assert (result.kind, len(result.embedded), len(result.links)) == (kind, n_embedded, n_links)
    facts = EXPECTED[f"feeds/valid/{path.name}"]
    assert len(result.embedded) == len(facts["alerts"])
    assert result.ignored == ()
    # Each embedded alert is a standalone CAP document with the identifier the corpus records.
    for doc, alert in zip(result.embedded, facts["alerts"], strict=True):
        root = parse_xml(doc)
        assert etree.QName(root).localname == "alert"
        assert etree.QName(root).namespace in CAP_NAMESPACES
        assert _alert_identifier(doc) == alert["identifier"]
    for link in result.links:
        assert link.startswith(("http://", "https://"))


def test_link_choice_follows_cap_typed_link_not_html_page() -> None:
    data = (CORPUS / "feeds/valid/capparselib_usgs_alerthub.atom").read_bytes()
    assert read_index(data, BASE).links == (
        "http://earthquake.usgs.gov/earthquakes/eventpage/usb000qfgs.cap",
    )
    data = (CORPUS / "feeds/valid/gcap_earthquake_index.atom").read_bytes()
    assert read_index(data, BASE).links == (
        "http://earthquake.usgs.gov/earthquakes/catalogs/cap/us2010apcd",
    )


def test_rss_links_in_document_order() -> None:
    data = (CORPUS / "feeds/valid/gcap_ny_index.rss").read_bytes()
    assert read_index(data, BASE).links == (
        "http://www.nyalert.gov/Public/News/GetCapAlert.aspx?capID=NYAlert-ALLHAZALERT-3167113",
        "http://www.nyalert.gov/Public/News/GetCapAlert.aspx?capID=NYAlert-ALLHAZALERT-3162202",
    )


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_feeds_are_refused_or_parsed_never_crash(path: Path) -> None:
    try:
        result = read_index(path.read_bytes(), BASE)
    except CapError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(BASE)
        return
    for doc in result.embedded:
        parse_xml(doc)  # every item handed on is at least well-formed XML


@pytest.mark.parametrize("name", ["gcap_xee.atom", "capparselib_pelmorex.atom"])
def test_hostile_or_broken_feeds_refused(name: str) -> None:
    with pytest.raises(CapError):
        read_index((CORPUS / "feeds/invalid" / name).read_bytes(), BASE)


def test_invalid_feed_specifics() -> None:
    def load(name: str) -> tuple[int, int]:
        r = read_index((CORPUS / "feeds/invalid" / name).read_bytes(), BASE)
        return len(r.embedded), len(r.links)

    assert load("gcap_no_entries.atom") == (0, 0)  # a stray alert outside <entry> is ignored
    assert load("gcap_bushfire_invalid.edxlde") == (7, 0)  # bad alerts are the parser's job
    assert load("gcap_no_link.atom") == (0, 0)
    assert load("gcap_invalid.rss") == (0, 0)
    assert load("capparselib_oregon_nws.atom") == (1, 0)


def test_single_cap_document_is_passed_on_byte_for_byte() -> None:
    data = (CORPUS / "valid/gcap/gcap_earthquake-iso8859-1.cap").read_bytes()
    result = read_index(data, "http://x.test/a.cap")
    assert result.kind == "cap" and result.embedded == (data,) and result.links == ()
