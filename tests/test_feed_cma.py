"""The CMA CAP feed relayed by WMO: identifiers, the area pre-filter, and what one poll costs.

Against ``tests/source_fakes.SourceFake`` on 127.0.0.1 (an RSS index of up to 500 items shaped
like the relay's, and the CAP documents it links to, each download counted).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from source_fakes import CST, RSS_PATH, CmaDoc, SourceFake, cma_id, elsewhere

from warnd.core import cap
from warnd.edges.feeds import FeedItem, IngestResult, Outcome
from warnd.edges.feeds.build import prefilter
from warnd.edges.feeds.cma import AreaScope, find_id, newest_item, parse_id
from warnd.edges.feeds.http import HttpFeed
from warnd.edges.feeds.index import IndexItem, read_index

T0 = datetime(2025, 6, 14, 8, 0, tzinfo=CST)
LUXI = AreaScope(["433122"])


class Sleep:
    async def __call__(self, delay: float) -> None:
        return None


class Ingest:
    """Parses like the daemon's ingest; remembers identities."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.seen: list[str] = []

    async def __call__(self, item: FeedItem) -> IngestResult:
        alert = cap.parse(item.data, source=item.origin)
        self.seen.append(alert.identifier)
        if alert.key in self.keys:
            return IngestResult(Outcome.DUPLICATE, key=alert.key)
        self.keys.add(alert.key)
        return IngestResult(Outcome.ACCEPTED, key=alert.key)


@pytest.fixture
async def fake() -> AsyncIterator[SourceFake]:
    srv = SourceFake()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def feed(srv: SourceFake, scope: AreaScope = LUXI) -> HttpFeed:
    return HttpFeed(
        "cma", srv.base + RSS_PATH, timeout_s=5, sleep=Sleep(), select=prefilter(lambda: scope)
    )


# -- identifiers ---------------------------------------------------------------------------------


def test_identifier_parts() -> None:
    found = parse_id("43312241600000_20250614081500")
    assert found is not None
    assert (found.area, found.organisation, found.unit, found.seq) == ("433122", "416", "000", "00")
    assert found.issued == datetime(2025, 6, 14, 8, 15, tzinfo=CST)
    assert found.issued.utcoffset() == timedelta(hours=8)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "4331224160000_20250614081500",  # 13 digits
        "43312241600000_20251314081500",  # month 13
        "43312241600000-20250614081500",
        "urn:oid:2.49.0.1.156.0.2025.6.14",
        "43312241600000_2025061408150",
    ],
)
def test_not_identifiers(text: str) -> None:
    assert parse_id(text) is None


def test_identifier_found_in_a_link_when_the_guid_is_not_one() -> None:
    link = "https://severeweather.wmo.int/v2/cap-alerts/cn-cma-xx/2025/06/14/43312241600000_20250614081500.xml"
    found = find_id("tag:wmo,2025:abc", link)
    assert found is not None and found.area == "433122"
    assert find_id(None, "https://x.invalid/a.xml") is None


@pytest.mark.parametrize(
    ("area", "concerns"),
    [
        ("433122", True),  # the county itself
        ("433100", True),  # its prefecture (湘西州) issues for it
        ("430000", True),  # its province
        ("433123", False),  # a neighbouring county
        ("433000", False),  # another prefecture of Hunan
        ("130602", False),  # Hebei
        ("100000", True),  # not a province code: a national centre? fetch and let CAP decide
        ("000000", True),
        ("43312A", True),  # unreadable: fetch
        (None, True),
    ],
)
def test_area_scope_fails_open(area: str | None, concerns: bool) -> None:
    assert LUXI.concerns(area) is concerns


def test_empty_scope_concerns_everything_and_names_nothing_outside_levels() -> None:
    assert AreaScope([]).concerns("130602")
    assert LUXI.names("433122", ["county"]) is True
    assert LUXI.names("430000", ["county"]) is False  # a province issuer: not unless asked
    assert LUXI.names("430000", ["province", "county"]) is True
    assert LUXI.names("100000", ["county", "province"]) is False  # strict: unreadable = no
    assert AreaScope(["43"]).names("433123", ["county"]) is True  # a whole configured province


def test_newest_item_by_issue_time() -> None:
    items = [
        IndexItem("https://x.invalid/a.xml", "43312241600000_20250614081500"),
        IndexItem("https://x.invalid/b.xml", "13060041600000_20250614091500"),
        IndexItem("https://x.invalid/c.xml", None),
    ]
    assert newest_item(items) == "13060041600000_20250614091500 (2025-06-14T09:15:00+08:00)"
    assert newest_item([IndexItem("https://x.invalid/c.xml")]) is None


# -- the index and the pre-filter ----------------------------------------------------------------


async def test_index_items_carry_guid_and_title(fake: SourceFake) -> None:
    doc = CmaDoc(cma_id("433122", T0), T0, "Luxi_Meteorological_Observatory", "433122000000")
    fake.publish(doc)
    index = read_index(fake.rss(), fake.base + RSS_PATH)
    assert index.kind == "rss" and index.embedded == ()
    (item,) = index.items
    assert item.guid == doc.identifier
    assert item.link == fake.base + fake.doc_path(doc.identifier)
    assert item.title and "rainstorm" in item.title
    assert index.links == (item.link,)


async def test_one_poll_of_500_items_downloads_only_new_documents_of_the_directory(
    fake: SourceFake,
) -> None:
    """The issue's polling-cost check: 500 items, 3 new, 1 of them for the directory → 1 GET."""
    ours = CmaDoc(cma_id("433122", T0), T0, "Luxi_Meteorological_Observatory", "433122000000")
    province = CmaDoc(
        cma_id("430000", T0 - timedelta(hours=1)),
        T0 - timedelta(hours=1),
        "Hunan_Meteorological_Observatory",
        "433100000000",
        office="湖南省气象台",
    )
    fake.publish(province, ours, *elsewhere(495, T0 - timedelta(days=1)))
    ingest = Ingest()
    f = feed(fake)
    first = await f.poll(ingest)
    assert len(fake.index) == 497
    assert (first.listed, first.skipped, first.items, first.error) == (497, 495, 2, None)
    assert fake.downloads() == 2  # the county's and the province's; nothing from elsewhere
    assert set(ingest.seen) == {ours.identifier, province.identifier}

    later = T0 + timedelta(minutes=30)
    new_ours = CmaDoc(
        cma_id("433122", later),
        later,
        "Luxi_Meteorological_Observatory",
        "433122000000",
        msg_type="Update",
        references=f"Luxi_Meteorological_Observatory,{ours.identifier},{T0.isoformat()}",
    )
    others = elsewhere(2, later + timedelta(minutes=1))
    fake.publish(new_ours, *others)
    assert len(fake.index) == 500
    before = fake.downloads()
    second = await f.poll(ingest)
    assert fake.downloads() - before == 1  # exactly the one new document that concerns us
    assert fake.hits[fake.doc_path(new_ours.identifier)] == 1
    assert (second.listed, second.items, second.accepted, second.error) == (500, 1, 1, None)
    assert second.skipped == 497  # every entry of another area, left alone again (no GET)

    third = await f.poll(ingest)  # nothing new: no document fetched at all
    assert fake.downloads() - before == 1 and third.items == 0
    assert third.newest is not None and third.newest.startswith(others[-1].identifier)


async def test_entries_that_say_nothing_about_their_area_are_fetched(fake: SourceFake) -> None:
    """Fail open: a guid and link without a CMA identifier cannot prove another area."""
    ours = CmaDoc(cma_id("433122", T0), T0, "Luxi_Meteorological_Observatory", "433122000000")
    fake.publish(ours)
    body = fake.rss().replace(ours.identifier.encode(), b"opaque-guid-1")
    fake.docs["opaque-guid-1"] = ours.xml()
    fake.rss_override = body
    report = await feed(fake).poll(Ingest())
    assert (report.items, report.accepted, report.skipped) == (1, 1, 0)
    assert fake.hits["/cap/opaque-guid-1.xml"] == 1


async def test_seen_by_guid_and_link_an_entry_with_a_new_link_is_fetched(fake: SourceFake) -> None:
    """Nothing lost: an entry updated in place (same guid, new document) is fetched again."""
    ours = CmaDoc(cma_id("433122", T0), T0, "Luxi_Meteorological_Observatory", "433122000000")
    fake.publish(ours)
    f = feed(fake)
    await f.poll(Ingest())
    assert (await f.poll(Ingest())).items == 0 and fake.downloads() == 1
    fake.rss_override = fake.rss().replace(b"/cap/", b"/cap/./")  # the same guid, a new link
    ingest = Ingest()
    report = await f.poll(ingest)
    assert report.items == 1 and fake.downloads() == 2 and ingest.seen == [ours.identifier]


async def test_without_prefilter_everything_new_is_downloaded(fake: SourceFake) -> None:
    fake.publish(*elsewhere(12, T0))
    f = HttpFeed("cma", fake.base + RSS_PATH, timeout_s=5, sleep=Sleep())
    report = await f.poll(Ingest())
    assert (report.items, report.skipped) == (12, 0) and fake.downloads() == 12


async def test_index_down_means_not_answered(fake: SourceFake) -> None:
    fake.fail[RSS_PATH] = [404]
    report = await feed(fake).poll(Ingest())
    assert report.answered is False and report.error and "404" in report.error
    ok = await feed(fake).poll(Ingest())
    assert ok.answered is True and ok.error is None


def test_cma_doc_of_the_fake_parses_as_cma_does() -> None:
    doc = CmaDoc(cma_id("433122", T0), T0, "Luxi_Meteorological_Observatory", "433122000000")
    alert = cap.parse(doc.xml())
    assert alert.geocodes == ("433122",) and len(alert.infos) == 2
    assert alert.headline == "泸溪县气象台发布暴雨橙色预警信号"
    assert alert.sent.astimezone(UTC) == T0.astimezone(UTC)


async def test_the_relay_index_as_a_check_list_downloads_nothing(fake: SourceFake) -> None:
    from datetime import timedelta as td

    from warnd.edges.feeds.crosscheck import CheckFeed

    ours = CmaDoc(cma_id("433122", T0), T0, "Luxi_Meteorological_Observatory", "433122000000")
    fake.publish(ours, *elsewhere(30, T0 - td(hours=2)))
    check = CheckFeed(
        "wmo-check",
        fake.base + RSS_PATH,
        list_format="index",
        grace=td(minutes=10),
        levels=["county"],
        scope=lambda: LUXI,
        timeout_s=5,
        sleep=Sleep(),
    )
    report = await check.poll()
    assert (report.listed, report.skipped, report.items, report.error) == (31, 30, 0, None)
    assert check.items is not None and [i.ref for i in check.items] == [ours.identifier]
    assert check.items[0].issued == T0 and check.items[0].area == "433122"
    assert fake.downloads() == 0
    await check.aclose()
