"""What feeds may make warnd touch (issue 12; docs/hardening.md §8).

HTTP feeds: an index whose links (or whose own URL) lead to internal addresses — two loopback
addresses here, 127.0.0.1 serving the index and 127.0.0.2 the "internal service" — is refused
link by link with one log line and a metric, unless the feed allows that host; the feed's own
host stays allowed. The spool: symbolic links, folders and FIFOs named ``*.xml`` are never read
and never left behind silently.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from daemon_rig import T0, Harness, config_toml
from factory import cap_xml, write_contacts

from warnd.config.policy import load_config
from warnd.core.errors import PermanentError
from warnd.edges import logs, metrics
from warnd.edges.daemon import Daemon
from warnd.edges.feeds import FeedItem, IngestResult, Outcome
from warnd.edges.feeds.guard import FetchGuard, InternalAddress
from warnd.edges.feeds.http import HttpFeed

H = timedelta(hours=1)


def doc(n: int) -> bytes:
    return cap_xml(f"43312241600000_2025061408{n:04d}", T0, expires=T0 + 12 * H)


class Server:
    """A real HTTP server on one loopback address; records every path it is asked for."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.hits: list[str] = []
        self.routes: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> Server:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        status, body, headers = self.routes.get(request.path, (404, b"", {}))
        return web.Response(status=status, body=body, headers=headers)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def atom(*links: str) -> bytes:
    entries = "".join(
        f'<entry><id>{i}</id><link type="application/cap+xml" href="{u}"/></entry>'
        for i, u in enumerate(links)
    )
    return f"<feed xmlns='http://www.w3.org/2005/Atom'>{entries}</feed>".encode()


class Ingest:
    def __init__(self) -> None:
        self.items: list[FeedItem] = []

    async def __call__(self, item: FeedItem) -> IngestResult:
        self.items.append(item)
        return IngestResult(Outcome.ACCEPTED)


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server, Server]]:
    """The feed's host (127.0.0.1), another service on it, and an internal one (127.0.0.2)."""
    feed, other, internal = Server("127.0.0.1"), Server("127.0.0.1"), Server("127.0.0.2")
    for s in (feed, other, internal):
        await s.start()
    try:
        yield feed, other, internal
    finally:
        for s in (feed, other, internal):
            await s.stop()


def refused_metric(feed: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("warnd_feed_fetches_refused_total", {"feed": feed}) or 0
    )


async def test_links_and_redirects_to_internal_addresses_are_refused(
    servers: tuple[Server, Server, Server],
) -> None:
    """Before: every link was fetched, redirects followed (blind GETs to internal services)."""
    buf = io.StringIO()
    logs.configure(json=True, file=buf)
    feed, other, internal = servers
    internal.routes = {p: (200, doc(9), {}) for p in ("/secret.xml", "/moved.xml", "/ok.xml")}
    other.routes["/own-host.xml"] = (200, doc(1), {})
    feed.routes["/hop.xml"] = (302, b"", {"Location": internal.url("/moved.xml")})
    feed.routes["/index.xml"] = (
        200,
        atom(
            internal.url("/secret.xml"),  # an internal address written in the link
            other.url("/x.xml", host="localhost"),  # a name that resolves inward
            feed.url("/hop.xml"),  # the feed's host, redirecting inward
            other.url("/own-host.xml"),  # the feed's own host, another port: allowed
        ),
        {},
    )
    before = refused_metric("idx")
    ingest = Ingest()
    reader = HttpFeed("idx", feed.url("/index.xml"), timeout_s=2, max_tries=3)
    try:
        report = await reader.poll(ingest)
        assert (report.accepted, report.error) == (1, None)  # refusals are not poll errors
        assert [i.origin for i in ingest.items] == [other.url("/own-host.xml")]
        assert internal.hits == [] and "/x.xml" not in other.hits  # nothing reached them
        assert refused_metric("idx") - before == 3
        # remembered: the next poll neither fetches nor logs them again
        feed.routes["/index.xml"] = (200, feed.routes["/index.xml"][1] + b" ", {})
        await reader.poll(ingest)
        assert refused_metric("idx") - before == 3 and internal.hits == []
    finally:
        await reader.aclose()
    refused = [json.loads(x) for x in buf.getvalue().splitlines() if "fetch_refused" in x]
    assert len(refused) == 3  # one line each
    assert Counter(e["reason"] for e in refused) == Counter({"loopback": 3})
    assert {e["address"] for e in refused} == {"127.0.0.2", "127.0.0.1"}


async def test_a_feed_url_that_redirects_inward_is_a_poll_error(
    servers: tuple[Server, Server, Server],
) -> None:
    feed, _other, internal = servers
    internal.routes["/index.xml"] = (200, atom(), {})
    feed.routes["/feed"] = (301, b"", {"Location": internal.url("/index.xml")})
    reader = HttpFeed("moved", feed.url("/feed"), timeout_s=2, max_tries=3)
    try:
        report = await reader.poll(Ingest())
    finally:
        await reader.aclose()
    assert report.error is not None and "127.0.0.2" in report.error and "refused" in report.error
    assert feed.hits == ["/feed"] and internal.hits == []  # asked once: never retried


async def test_an_allow_listed_host_is_fetched(servers: tuple[Server, Server, Server]) -> None:
    feed, _other, internal = servers
    internal.routes["/allowed.xml"] = (200, doc(2), {})
    feed.routes["/index.xml"] = (200, atom(internal.url("/allowed.xml")), {})
    for allow in (("127.0.0.2",), ("127.0.0.0/30",)):
        ingest = Ingest()
        reader = HttpFeed("ok", feed.url("/index.xml"), timeout_s=2, allow=allow)
        try:
            assert (await reader.poll(ingest)).accepted == 1
        finally:
            await reader.aclose()
    assert internal.hits == ["/allowed.xml"] * 2


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.1.2.3/cap.xml", "private"),
        ("http://192.168.0.1/cap.xml", "private"),
        ("http://172.16.5.4:8080/cap.xml", "private"),
        ("http://100.64.0.1/cap.xml", "not-global"),
        ("http://0.0.0.0:8620/a", "unspecified"),
        ("http://[::1]:8621/metrics", "loopback"),
        ("http://[fc00::1]/cap.xml", "private"),
        ("http://[fe80::1]/cap.xml", "link-local"),
        ("http://[::ffff:127.0.0.1]/cap.xml", "loopback"),
        ("http://224.0.0.1/cap.xml", "multicast"),
    ],
)
def test_every_kind_of_internal_address_is_refused_before_any_request(url: str, kind: str) -> None:
    guard = FetchGuard("g", "https://cap.example.cn/rss.xml")
    with pytest.raises(InternalAddress) as err:
        guard.check_url(url)
    assert err.value.kind == kind and isinstance(err.value, PermanentError)


def test_global_addresses_names_and_allowed_networks_pass_the_url_check() -> None:
    guard = FetchGuard("g", "http://10.0.0.7/rss.xml", allow=("192.168.0.0/16", "mirror.local"))
    for url in (
        "http://10.0.0.7:9000/own-host.xml",  # the feed's own host
        "http://192.168.3.4/allowed-network.xml",
        "http://8.8.8.8/cap.xml",
        "http://[2001:4860:4860::8888]/cap.xml",
        "https://cap.example.cn/a.xml",  # names are checked when resolved
        "http://mirror.local/a.xml",
    ):
        guard.check_url(url)
    for url in ("file:///etc/passwd", "gopher://10.0.0.1/", "http:///nohost"):
        with pytest.raises(PermanentError):
            guard.check_url(url)


async def test_the_daemon_gives_each_http_feed_its_allow_list(
    tmp_path: Path, servers: tuple[Server, Server, Server]
) -> None:
    feed, _other, internal = servers
    internal.routes["/allowed.xml"] = (200, doc(4), {})
    feed.routes["/index.xml"] = (200, atom(internal.url("/allowed.xml")), {})

    class WithHttpFeed(Harness):
        async def start(self) -> None:
            url = await self.gateway.start()
            write_contacts(self.tmp / "contacts", self.rows)
            path = config_toml(self.tmp, url)
            with path.open("a", encoding="utf-8") as f:
                f.write(
                    f'[[feeds]]\nname = "mirror"\nurl = "{feed.url("/index.xml")}"\n'
                    'allow_hosts = ["127.0.0.2"]\n'
                )
            self.config = load_config(path)
            self.daemon = Daemon(self.config, clock=self.clock, scheduler=False, port=0)
            await self.daemon.start()
            self.base = f"http://127.0.0.1:{self.daemon.bound_port}"
            self.monitor = f"http://127.0.0.1:{self.daemon.monitor_port}"
            self.http = aiohttp.ClientSession()

    h = WithHttpFeed(tmp_path)
    await h.start()
    try:
        mirror = next(f for f in h.daemon.feeds if f.name == "mirror")
        report = await h.daemon.poll_feed(mirror)
        assert (report.accepted, report.error) == (1, None) and internal.hits == ["/allowed.xml"]
    finally:
        await h.stop()


# ---- the spool: links, folders and FIFOs ----------------------------------------------------


async def feed_items(h: Harness) -> Counter[str]:
    async with h.http.get(h.monitor + "/metrics") as resp:
        text = await resp.text()
    out: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith('warnd_feed_items_total{feed="incoming"'):
            outcome = line.split('outcome="')[1].split('"')[0]
            out[outcome] = int(float(line.rsplit(" ", 1)[1]))
    return out


async def test_symlinks_folders_and_fifos_in_the_spool_are_rejected_with_a_reason(
    tmp_path: Path,
) -> None:
    """Before: not read (good) but left there forever without a log line or a metric."""
    buf = io.StringIO()
    logs.configure(json=True, file=buf)
    h = Harness(tmp_path)
    await h.start()
    try:
        spool = tmp_path / "incoming"
        spool.mkdir(exist_ok=True)
        outside = tmp_path / "elsewhere.xml"
        outside.write_bytes(doc(1))  # a valid warning: taken only if copied into the spool
        os.symlink(outside, spool / "link.xml")
        os.symlink("/etc/passwd", spool / "passwd.xml")
        os.symlink(tmp_path / "nowhere.xml", spool / "dangling.xml")
        (spool / "folder.xml").mkdir()
        (spool / "folder.xml" / "inside.xml").write_bytes(doc(2))
        os.mkfifo(spool / "pipe.xml")  # opening it to read would block the poll
        good = spool / "good.xml"
        good.write_bytes(doc(3))
        old = time.time() - 60
        os.utime(good, (old, old))
        before = await feed_items(h)

        started = time.monotonic()
        report = await asyncio.wait_for(h.daemon.poll_feed(h.daemon.feeds[0]), 10)
        assert time.monotonic() - started < 5
        await h.daemon.settle()
        assert (report.accepted, report.rejected, report.error) == (1, 5, None)
        names = ("link.xml", "passwd.xml", "dangling.xml", "folder.xml", "pipe.xml")
        rejected = spool / "rejected"
        for name in names:
            assert not (spool / name).exists() and not (spool / name).is_symlink(), name
            assert (rejected / name).exists() or (rejected / name).is_symlink(), name
        reasons = {n: (rejected / f"{n}.reason.txt").read_text(encoding="utf-8") for n in names}
        assert "symbolic link" in reasons["link.xml"] and "symbolic link" in reasons["passwd.xml"]
        assert "folder" in reasons["folder.xml"] and "FIFO" in reasons["pipe.xml"]
        assert outside.read_bytes() == doc(1)  # the target was never touched
        assert (rejected / "folder.xml" / "inside.xml").is_file()
        items = await feed_items(h)
        assert items["rejected"] - before["rejected"] == 5
        assert items["accepted"] - before["accepted"] == 1
        await h.daemon.poll_feed(h.daemon.feeds[0])  # nothing is left behind to report again
    finally:
        await h.stop()
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    rejected_lines = [e for e in lines if e["event"] == "feed.item_rejected"]
    assert sorted(e["origin"].split(":")[1] for e in rejected_lines) == sorted(names)
