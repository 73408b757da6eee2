"""``read_index`` on the repository's feed samples (tests/data/feeds) and on small hand-made
edge cases. The external corpus's feeds: tests/corpus/test_feed_index_corpus.py."""

from __future__ import annotations

import pytest
from lxml import etree
from samples import CAP, FEEDS

from warnd.core.errors import CapError
from warnd.core.xmlsafe import parse_xml
from warnd.edges.feeds.index import CAP_NAMESPACES, read_index

BASE = "https://alerts.example.test/cap/index.atom"
#: (kind, identifiers of the embedded alerts, links) per sample
VALID = {
    "index.atom": (
        "atom",
        (),
        (
            "https://alerts.example.test/cap/43312241600000_20250614081500.xml",
            "https://alerts.example.test/cap/43310041700000_20250702160000.xml",
        ),
    ),
    "index.rss": (
        "rss",
        (),
        (
            "https://weather.example.test/cap/43312241600000_20250614081500.xml",
            "https://weather.example.test/cap/43312241600001_20250614101000.xml",
        ),
    ),
    "fat.atom": ("atom", ("43312241600003_20250701090000",), ()),
    "edxl-three-alerts.xml": (
        "edxl",
        (
            "43312241600000_20250614081500",
            "43312241600001_20250614101000",
            "43310041700000_20250702160000",
        ),
        (),
    ),
    "empty-index.atom": ("atom", (), ()),
}
#: what the one-line error of each broken feed must say
INVALID = {
    "xxe.atom": "DOCTYPE/entity declarations are not allowed",
    "declared-utf8-is-gbk.atom": "malformed XML",
    "rss-without-channel.rss": "RSS document without <channel>",
    "not-a-feed.xml": "not a CAP alert, Atom/RSS feed or EDXL-DE distribution",
}


def _alert_identifier(doc: bytes) -> str | None:
    root = parse_xml(doc)
    for el in root.iterchildren(tag=etree.Element):
        if etree.QName(el).localname == "identifier":
            return (el.text or "").strip()
    return None


def test_every_feed_sample_has_an_expectation() -> None:
    assert {p.name for p in (FEEDS / "valid").iterdir()} == set(VALID)
    assert {p.name for p in (FEEDS / "invalid").iterdir()} == set(INVALID) | {"foreign-links.atom"}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_feed_sample(name: str) -> None:
    kind, identifiers, links = VALID[name]
    result = read_index((FEEDS / "valid" / name).read_bytes(), BASE)
    assert (result.kind, result.links, result.ignored) == (kind, links, ())
    # each embedded alert is a standalone CAP document, the one the sample embeds
    assert tuple(_alert_identifier(doc) for doc in result.embedded) == identifiers
    for doc in result.embedded:
        root = parse_xml(doc)
        assert etree.QName(root).localname == "alert"
        assert etree.QName(root).namespace in CAP_NAMESPACES


@pytest.mark.parametrize("name", sorted(INVALID))
def test_broken_feed_sample_is_a_one_line_error(name: str) -> None:
    with pytest.raises(CapError) as caught:
        read_index((FEEDS / "invalid" / name).read_bytes(), BASE)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(BASE) and INVALID[name] in text


def test_links_to_local_files_and_ftp_are_listed_as_ignored_never_followed() -> None:
    result = read_index((FEEDS / "invalid" / "foreign-links.atom").read_bytes(), BASE)
    assert result.links == ("https://alerts.example.test/cap/3.xml",)
    assert result.ignored == ("file:///etc/passwd.xml", "ftp://ftp.example.test/a.xml")


@pytest.mark.parametrize(
    "sample", ["valid/luxi-gb18030.xml", "valid/luxi-utf8-bom.xml"], ids=lambda s: s
)
def test_single_cap_document_is_passed_on_byte_for_byte(sample: str) -> None:
    data = (CAP / sample).read_bytes()
    result = read_index(data, "http://x.test/a.cap")
    assert result.kind == "cap" and result.embedded == (data,) and result.links == ()


def test_relative_links_resolved_and_foreign_schemes_ignored() -> None:
    feed = b"""<?xml version="1.0"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <entry><id>1</id><link href="alerts/one.xml"/></entry>
  <entry><id>2</id><link href="/two.cap" type="application/cap+xml"/></entry>
  <entry><id>3</id><link href="file:///etc/passwd.xml"/></entry>
  <entry><id>4</id><link href="ftp://ftp.example.test/four.xml"/></entry>
  <entry><id>5</id><link href="alerts/one.xml"/></entry>
  <entry><id>6</id><link rel="alternate" type="text/html" href="page.html"/></entry>
</feed>"""
    result = read_index(feed, "https://feeds.example.test/cap/index.atom")
    assert result.links == (
        "https://feeds.example.test/cap/alerts/one.xml",
        "https://feeds.example.test/two.cap",
    )
    assert result.ignored == ("file:///etc/passwd.xml", "ftp://ftp.example.test/four.xml")


def test_rss_enclosure_and_guid_links() -> None:
    rss = b"""<rss version="2.0"><channel><title>t</title>
  <item><enclosure url="a/1.cap" type="application/cap+xml"/><link>http://x.test/page</link></item>
  <item><guid>https://x.test/2.xml</guid></item>
  <item><guid isPermaLink="false">https://x.test/3.xml</guid></item>
</channel></rss>"""
    result = read_index(rss, "http://x.test/feed.rss")
    assert result.kind == "rss"
    assert result.links == ("http://x.test/a/1.cap", "https://x.test/2.xml")


@pytest.mark.parametrize(
    "body",
    [b"invalid", b"<feed></fee", b"<someotherxml/>", b"", b"<html><body>502</body></html>"],
)
def test_non_feeds_raise_cap_error(body: bytes) -> None:
    with pytest.raises(CapError) as info:
        read_index(body, BASE)
    assert "\n" not in str(info.value)
