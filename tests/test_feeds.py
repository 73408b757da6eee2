"""Feed readers against real files and a real aiohttp server on 127.0.0.1 (no sleeping)."""

from __future__ import annotations

import asyncio
import builtins
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from lxml import etree
from samples import CAP, FEEDS

from warnd.core.errors import CapError, ConfigError
from warnd.core.xmlsafe import MAX_BYTES, parse_xml
from warnd.edges.feeds import FeedItem, IngestResult, Outcome
from warnd.edges.feeds.folder import FolderFeed
from warnd.edges.feeds.http import HttpFeed

# three distinct CAP messages of the repository's samples (tests/data)
THUNDER = (CAP / "valid/luxi-rainstorm-alert.xml").read_bytes()
WEATHER = (CAP / "valid/xiangxi-geohazard-villages.xml").read_bytes()
CANADA = (CAP / "valid/luxi-rainstorm-update.xml").read_bytes()
T0 = 1_750_000_000.0


class Store:
    """Stands in for the daemon's ingest: parse, deduplicate on (sender, identifier, sent)."""

    def __init__(self) -> None:
        self.keys: set[tuple[str, str, str]] = set()
        self.calls: list[FeedItem] = []
        self.down = False

    async def __call__(self, item: FeedItem) -> IngestResult:
        self.calls.append(item)
        if self.down:
            raise ConnectionError("database is locked")
        try:
            root = parse_xml(item.data, source=item.origin)
        except CapError as exc:
            return IngestResult(Outcome.REJECTED, reason=str(exc))
        if etree.QName(root).localname != "alert":
            return IngestResult(Outcome.REJECTED, reason=f"{item.origin}: not a CAP alert")
        fields = {etree.QName(el).localname: (el.text or "").strip() for el in root}
        key = (fields.get("sender", ""), fields.get("identifier", ""), fields.get("sent", ""))
        if key in self.keys:
            return IngestResult(Outcome.DUPLICATE, key="|".join(key))
        self.keys.add(key)
        return IngestResult(Outcome.ACCEPTED, key="|".join(key))


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeSleep:
    """Records the backoff instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


# -- folder feed -------------------------------------------------------------------------------


def _drop(folder: Path, name: str, data: bytes, mtime: float) -> Path:
    path = folder / name
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


async def test_folder_accepted_duplicate_rejected(tmp_path: Path) -> None:
    spool = tmp_path / "incoming"  # missing: the feed creates it
    feed = FolderFeed("incoming", spool, now=Clock())
    store = Store()
    assert (await feed.poll(store)).items == 0
    assert spool.is_dir()

    _drop(spool, "a.xml", THUNDER, T0 - 30)
    _drop(spool, "b.XML", THUNDER, T0 - 20)  # same message again: a duplicate
    _drop(spool, "c.xml", b"<html>not cap</html>", T0 - 10)
    report = await feed.poll(store)

    assert (report.items, report.accepted, report.duplicates, report.rejected) == (3, 1, 1, 1)
    assert report.error is None and report.feed == "incoming"
    assert [c.origin for c in store.calls] == ["incoming:a.xml", "incoming:b.XML", "incoming:c.xml"]
    assert store.calls[0].data == THUNDER
    assert _names(spool / "processed") == {"a.xml", "b.XML"}
    assert _names(spool / "rejected") == {"c.xml", "c.xml.reason.txt"}
    reason = (spool / "rejected" / "c.xml.reason.txt").read_text(encoding="utf-8")
    assert reason.count("\n") == 1 and "not a CAP alert" in reason
    assert _names(spool) == {"processed", "rejected"}
    assert feed.status.consecutive_failures == 0 and feed.status.last_ok_at == T0


async def test_folder_ignores_temporary_hidden_and_other_files(tmp_path: Path) -> None:
    for name in (".hidden.xml", "x.xml.tmp", "y.xml.part", "notes.txt", "z.cap"):
        _drop(tmp_path, name, THUNDER, T0 - 60)
    (tmp_path / "sub.xml").mkdir()  # never read; moved to rejected/ (docs/hardening.md)
    _drop(tmp_path / "sub.xml", "inner.xml", THUNDER, T0 - 60)
    store = Store()
    report = await FolderFeed("f", tmp_path, now=Clock()).poll(store)
    assert (report.items, report.rejected) == (1, 1) and store.calls == []
    assert {"x.xml.tmp", "y.xml.part", ".hidden.xml", "notes.txt", "z.cap"} <= _names(tmp_path)
    assert (tmp_path / "rejected" / "sub.xml" / "inner.xml").is_file()


async def test_folder_processes_in_mtime_then_name_order(tmp_path: Path) -> None:
    _drop(tmp_path, "a-update.xml", CANADA, T0 - 10)
    _drop(tmp_path, "z-alert.xml", THUNDER, T0 - 50)
    _drop(tmp_path, "m.xml", WEATHER, T0 - 10)
    store = Store()
    await FolderFeed("f", tmp_path, now=Clock()).poll(store)
    assert [c.origin for c in store.calls] == ["f:z-alert.xml", "f:a-update.xml", "f:m.xml"]


async def test_folder_waits_for_half_written_file(tmp_path: Path) -> None:
    clock = Clock()
    feed = FolderFeed("f", tmp_path, settle_s=2.0, now=clock)
    store = Store()
    path = _drop(tmp_path, "a.xml", THUNDER[:100], clock.t - 0.5)  # just written
    assert (await feed.poll(store)).items == 0

    # The writer goes on; even once the mtime is old enough, a size change means "not yet".
    path.write_bytes(THUNDER)
    os.utime(path, (clock.t - 5, clock.t - 5))
    clock.t += 5
    assert (await feed.poll(store)).items == 0 and store.calls == []

    clock.t += 5  # unchanged since the previous poll and settled: now it is read
    report = await feed.poll(store)
    assert report.accepted == 1 and store.calls[0].data == THUNDER
    assert _names(tmp_path / "processed") == {"a.xml"}


async def test_folder_keeps_file_when_ingest_raises(tmp_path: Path) -> None:
    feed = FolderFeed("f", tmp_path, now=Clock())
    store = Store()
    store.down = True
    _drop(tmp_path, "a.xml", THUNDER, T0 - 60)
    report = await feed.poll(store)
    assert report.items == 0 and report.error is not None
    assert "database is locked" in report.error and "f:a.xml" in report.error
    assert "\n" not in report.error
    assert (tmp_path / "a.xml").exists() and not (tmp_path / "processed").exists()
    assert feed.status.consecutive_failures == 1 and feed.status.last_error == report.error

    store.down = False
    report = await feed.poll(store)
    assert report.accepted == 1 and report.error is None
    assert _names(tmp_path / "processed") == {"a.xml"}
    assert feed.status.consecutive_failures == 0


async def test_folder_name_collision_gets_suffix(tmp_path: Path) -> None:
    feed = FolderFeed("f", tmp_path, now=Clock())
    store = Store()
    for round_ in range(3):
        _drop(tmp_path, "a.xml", THUNDER, T0 - 60 + round_)
        await feed.poll(store)
    assert _names(tmp_path / "processed") == {"a.xml", "a.1.xml", "a.2.xml"}
    _drop(tmp_path, "bad.xml", b"junk", T0 - 60)
    await feed.poll(store)
    _drop(tmp_path, "bad.xml", b"junk", T0 - 50)
    await feed.poll(store)
    assert _names(tmp_path / "rejected") == {
        "bad.xml",
        "bad.xml.reason.txt",
        "bad.1.xml",
        "bad.1.xml.reason.txt",
    }


async def test_folder_unreadable_file_rejected_and_others_still_processed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = builtins.open

    def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith("locked.xml"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("warnd.edges.feeds.folder.open", guarded_open, raising=False)
    _drop(tmp_path, "locked.xml", THUNDER, T0 - 60)
    _drop(tmp_path, "ok.xml", WEATHER, T0 - 30)
    store = Store()
    report = await FolderFeed("f", tmp_path, now=Clock()).poll(store)
    assert (report.accepted, report.rejected, report.error) == (1, 1, None)
    assert [c.origin for c in store.calls] == ["f:ok.xml"]
    reason = (tmp_path / "rejected" / "locked.xml.reason.txt").read_text(encoding="utf-8")
    assert "Permission denied" in reason


async def test_folder_reports_file_it_cannot_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace

    def no_rejected(src: Any, dst: Any) -> None:
        if "rejected" in str(dst):
            raise PermissionError(13, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr("warnd.edges.feeds.folder.os.replace", no_rejected)
    _drop(tmp_path, "bad.xml", b"junk", T0 - 60)
    _drop(tmp_path, "ok.xml", THUNDER, T0 - 30)
    report = await FolderFeed("f", tmp_path, now=Clock()).poll(Store())
    assert report.accepted == 1 and report.rejected == 1
    assert report.error is not None and "bad.xml" in report.error
    assert (tmp_path / "bad.xml").exists() and _names(tmp_path / "processed") == {"ok.xml"}


async def test_folder_rejects_oversized_file_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.xml"
    with big.open("wb") as fh:
        fh.truncate(MAX_BYTES + 1)
    os.utime(big, (T0 - 60, T0 - 60))
    store = Store()
    report = await FolderFeed("f", tmp_path, now=Clock()).poll(store)
    assert report.rejected == 1 and store.calls == []
    assert "larger than" in (tmp_path / "rejected" / "big.xml.reason.txt").read_text()


# -- HTTP feed ---------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """A real aiohttp server whose routes (by path and query) the test changes at will."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.hits: Counter[str] = Counter()
        self.headers: dict[str, list[dict[str, str]]] = {}
        self.release = asyncio.Event()
        self.base = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key = request.path_qs
        self.hits[key] += 1
        self.headers.setdefault(key, []).append(dict(request.headers))
        handler = self.routes.get(key)
        if handler is None:
            return web.Response(status=404, text="no such thing")
        return await handler(request)

    def url(self, path: str) -> str:
        return self.base + path

    def serve(self, path: str, body: bytes, *, etag: str | None = None, **headers: str) -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            if etag is not None and request.headers.get("If-None-Match") == etag:
                return web.Response(status=304)
            lm = headers.get("Last-Modified")
            if lm is not None and request.headers.get("If-Modified-Since") == lm:
                return web.Response(status=304)
            extra = dict(headers)
            if etag is not None:
                extra["ETag"] = etag
            return web.Response(body=body, content_type="application/xml", headers=extra)

        self.routes[path] = handler

    def status(self, path: str, *codes: int, then: bytes | None = None) -> None:
        """Answer with ``codes`` in turn, then with ``then`` (200)."""
        queue = list(codes)

        async def handler(request: web.Request) -> web.StreamResponse:
            if queue:
                code = queue.pop(0)
                headers = {"Retry-After": "3"} if code == 429 else {}
                return web.Response(status=code, text="busy", headers=headers)
            if then is None:
                return web.Response(status=503, text="down")
            return web.Response(body=then, content_type="application/xml")

        self.routes[path] = handler

    def hang(self, path: str) -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            await self.release.wait()
            return web.Response(text="too late")

        self.routes[path] = handler


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", srv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    srv.base = f"http://{host}:{port}"
    try:
        yield srv
    finally:
        srv.release.set()
        await runner.cleanup()


def _feed(srv: Server, path: str, sleep: FakeSleep | None = None, **kw: Any) -> HttpFeed:
    kw.setdefault("timeout_s", 5.0)
    return HttpFeed("cma", srv.url(path), sleep=sleep or FakeSleep(), now=Clock(), **kw)


def _local_index(srv: Server) -> bytes:
    """The repository's Atom index sample with its links pointed at the test server."""
    data = (FEEDS / "valid/index.atom").read_bytes()
    return data.replace(b"https://alerts.example.test", srv.base.encode())


LINK_A = "/cap/43312241600000_20250614081500.xml"
LINK_B = "/cap/43310041700000_20250702160000.xml"


async def test_http_index_fetches_linked_documents_once(server: Server) -> None:
    server.serve("/index.atom", _local_index(server))
    server.serve(LINK_A, THUNDER)
    server.serve(LINK_B, WEATHER)
    feed = _feed(server, "/index.atom")
    store = Store()
    try:
        report = await feed.poll(store)
        assert (report.items, report.accepted, report.error) == (2, 2, None)
        assert [c.origin for c in store.calls] == [server.url(LINK_A), server.url(LINK_B)]
        assert [c.data for c in store.calls] == [THUNDER, WEATHER]

        # Unchanged index (no validators from this server): nothing is fetched again.
        report = await feed.poll(store)
        assert report.items == 0 and report.error is None
        assert server.hits["/index.atom"] == 2
        assert server.hits[LINK_A] == 1 and server.hits[LINK_B] == 1

        # A new entry (relative link): only the new document is fetched.
        index = _local_index(server).replace(
            b"</feed>",
            b"<entry><id>n</id><link type='application/cap+xml' href='new/canada.cap'/></entry>"
            b"<entry><id>f</id><link href='file:///etc/passwd.xml'/></entry></feed>",
        )
        server.serve("/index.atom", index)
        server.serve("/new/canada.cap", CANADA)
        report = await feed.poll(store)
        assert (report.items, report.accepted, report.error) == (1, 1, None)
        assert server.hits["/new/canada.cap"] == 1
        assert server.hits[LINK_A] == 1 and server.hits[LINK_B] == 1
        assert feed.status.consecutive_failures == 0 and feed.status.last_ok_at == T0
    finally:
        await feed.aclose()


async def test_http_fat_feed_and_conditional_get(server: Server) -> None:
    fat = (FEEDS / "valid/fat.atom").read_bytes()
    server.serve("/fat.atom", fat, etag='"v1"')
    feed = _feed(server, "/fat.atom")
    store = Store()
    try:
        report = await feed.poll(store)
        assert (report.items, report.accepted) == (1, 1)
        assert store.calls[0].origin == server.url("/fat.atom") + "#1"
        root = parse_xml(store.calls[0].data)
        assert etree.QName(root).localname == "alert"

        report = await feed.poll(store)
        assert report.items == 0 and report.error is None
        assert server.headers["/fat.atom"][1]["If-None-Match"] == '"v1"'
        assert len(store.calls) == 1
    finally:
        await feed.aclose()


async def test_http_single_cap_with_last_modified(server: Server) -> None:
    lm = "Tue, 17 Jun 2003 21:57:00 GMT"
    server.serve("/latest.cap", THUNDER, **{"Last-Modified": lm})
    feed = _feed(server, "/latest.cap")
    store = Store()
    try:
        first = await feed.poll(store)
        second = await feed.poll(store)
    finally:
        await feed.aclose()
    assert (first.items, first.accepted) == (1, 1)
    assert store.calls[0] == FeedItem(THUNDER, server.url("/latest.cap"))
    assert second.items == 0
    assert server.headers["/latest.cap"][1]["If-Modified-Since"] == lm


async def test_http_edxl_distribution(server: Server) -> None:
    server.serve("/de.xml", (FEEDS / "valid/edxl-three-alerts.xml").read_bytes())
    feed = _feed(server, "/de.xml")
    try:
        report = await feed.poll(Store())
    finally:
        await feed.aclose()
    assert (report.items, report.accepted, report.error) == (3, 3, None)


async def test_http_retries_transient_faults_with_backoff(server: Server) -> None:
    server.status("/busy.cap", 500, 429, then=THUNDER)
    sleep = FakeSleep()
    feed = _feed(server, "/busy.cap", sleep)
    try:
        report = await feed.poll(Store())
    finally:
        await feed.aclose()
    assert (report.accepted, report.error) == (1, None)
    assert server.hits["/busy.cap"] == 3
    assert sleep.delays == [1.0, 3.0]  # 1 s backoff, then the server's Retry-After: 3


async def test_http_gives_up_after_max_tries_then_recovers(server: Server) -> None:
    server.status("/down.cap", 503, 502, 500, 500, then=THUNDER)
    sleep = FakeSleep()
    feed = _feed(server, "/down.cap", sleep, max_tries=3)
    store = Store()
    try:
        report = await feed.poll(store)
        assert report.items == 0 and report.error is not None and "HTTP 500" in report.error
        assert server.hits["/down.cap"] == 3 and sleep.delays == [1.0, 2.0]
        assert feed.status.consecutive_failures == 1 and feed.status.last_ok_at is None

        report = await feed.poll(store)  # one 500 left, then the fault clears
        assert report.accepted == 1 and report.error is None
        assert server.hits["/down.cap"] == 5 and sleep.delays == [1.0, 2.0, 1.0]
        assert feed.status.consecutive_failures == 0 and feed.status.last_ok_at == T0
    finally:
        await feed.aclose()


async def test_http_hanging_endpoint_times_out(server: Server) -> None:
    server.hang("/slow.cap")
    sleep = FakeSleep()
    feed = _feed(server, "/slow.cap", sleep, timeout_s=0.2, max_tries=2)
    store = Store()
    try:
        report = await feed.poll(store)
        assert report.error is not None and "timed out" in report.error
        assert server.hits["/slow.cap"] == 2 and sleep.delays == [1.0]

        server.serve("/slow.cap", THUNDER)
        report = await feed.poll(store)
        assert report.accepted == 1 and report.error is None
    finally:
        await feed.aclose()


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"<html><body>Service moved</body></html>", 200, "not a CAP alert, Atom/RSS feed"),
        (b"\x00\x01garbage", 200, "malformed XML"),
        (b"gone", 404, "HTTP 404"),
        (b"", 403, "HTTP 403"),
    ],
)
async def test_http_permanent_failures_reported_not_retried(
    server: Server, body: bytes, status: int, needle: str
) -> None:
    async def bad(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, status=status)

    server.routes["/feed"] = bad
    sleep = FakeSleep()
    feed = _feed(server, "/feed", sleep)
    try:
        report = await feed.poll(Store())
        assert report.error is not None and needle in report.error
        assert "\n" not in report.error
        assert server.hits["/feed"] == 1 and sleep.delays == []

        server.serve("/feed", THUNDER)  # the fault clears: the next poll works
        report = await feed.poll(Store())
        assert report.accepted == 1 and report.error is None
    finally:
        await feed.aclose()


async def test_http_failed_link_is_retried_next_poll(server: Server) -> None:
    server.serve("/index.atom", _local_index(server), etag='"i1"')
    server.serve(LINK_A, THUNDER)
    server.status(LINK_B, 500, 500)
    feed = _feed(server, "/index.atom", max_tries=2)
    store = Store()
    try:
        report = await feed.poll(store)
        assert report.accepted == 1 and report.error is not None
        assert LINK_B in report.error and "HTTP 500" in report.error

        server.serve(LINK_B, WEATHER)
        report = await feed.poll(store)
        assert (report.items, report.accepted, report.error) == (1, 1, None)
        # The index was fetched again in full (validators are only kept after a clean poll).
        assert "If-None-Match" not in server.headers["/index.atom"][1]
        assert server.hits[LINK_A] == 1

        report = await feed.poll(store)
        assert report.items == 0 and server.headers["/index.atom"][2]["If-None-Match"] == '"i1"'
    finally:
        await feed.aclose()


async def test_http_store_down_items_retried(server: Server) -> None:
    server.serve("/fat.atom", (FEEDS / "valid/fat.atom").read_bytes(), etag='"a"')
    feed = _feed(server, "/fat.atom")
    store = Store()
    store.down = True
    try:
        report = await feed.poll(store)
        assert report.items == 0 and report.error is not None and "ingest" in report.error
        store.down = False
        report = await feed.poll(store)
        assert report.accepted == 1 and report.error is None
    finally:
        await feed.aclose()


async def test_http_body_size_limit(server: Server) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "application/xml"
        await resp.prepare(request)
        chunk = b"<a>" + b"x" * 65_536
        try:
            for _ in range(MAX_BYTES // len(chunk) + 20):
                await resp.write(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client stopped reading, as it should
        return resp

    server.routes["/huge"] = endless
    feed = _feed(server, "/huge")
    try:
        report = await feed.poll(Store())
    finally:
        await feed.aclose()
    assert report.error is not None and "larger than" in report.error
    assert server.hits["/huge"] == 1


async def test_http_redirect_to_file_scheme_is_refused(server: Server) -> None:
    async def sneaky(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("file:///etc/passwd")

    server.routes["/moved"] = sneaky
    server.serve("/index.rss", _rss_index(server.url("/moved")))
    feed = _feed(server, "/index.rss")
    store = Store()
    try:
        report = await feed.poll(store)
    finally:
        await feed.aclose()
    assert report.items == 0 and store.calls == []
    assert report.error is not None and server.url("/moved") in report.error
    assert "file:///etc/passwd" in report.error
    assert server.hits["/moved"] == 1


def _rss_index(*links: str) -> bytes:
    items = "".join(f"<item><title>t</title><link>{link}</link></item>" for link in links)
    return f'<rss version="2.0"><channel><title>x</title>{items}</channel></rss>'.encode()


async def test_http_connection_refused_is_transient(server: Server) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleep = FakeSleep()
    feed = HttpFeed(
        "gone", f"http://127.0.0.1:{port}/x", timeout_s=2, max_tries=2, sleep=sleep, now=Clock()
    )
    try:
        report = await feed.poll(Store())
    finally:
        await feed.aclose()
    assert report.error is not None and "connection failed" in report.error
    assert sleep.delays == [1.0]


async def test_http_shared_session_is_not_closed(server: Server) -> None:
    import aiohttp

    server.serve("/a.cap", THUNDER)
    async with aiohttp.ClientSession() as session:
        feed = HttpFeed("s", server.url("/a.cap"), timeout_s=5, session=session)
        assert (await feed.poll(Store())).accepted == 1
        await feed.aclose()
        assert not session.closed


@pytest.mark.parametrize("url", ["ftp://example.test/a.xml", "file:///etc/passwd", "nonsense"])
def test_http_feed_refuses_non_http_url(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        HttpFeed("bad", url, timeout_s=1)
    assert "\n" not in str(info.value) and "feeds.bad.url" in str(info.value)
