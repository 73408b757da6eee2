"""Where an HTTP feed may fetch from: never an internal address, unless the feed allows it.

A feed index is written by someone else; if warnd followed its links (or redirects) anywhere,
anyone who can put a link in it could make the duty server send requests to services only it
can reach: ``127.0.0.1:…``, the intranet, a cloud's metadata address ``169.254.169.254``. Every
URL a feed fetches passes one ``FetchGuard`` at the fetch layer, at two points:

- before each request and each redirect hop, the URL (``check_url``): an address written in the
  URL that is internal is refused;
- when a host name is resolved (the guard's resolver, in sessions made by ``session``): the
  internal addresses a name resolves to are dropped; a name with nothing else is refused. So a
  name that points inward (or is re-pointed after the check: DNS rebinding) is refused too.

Internal means not globally routable: loopback, private (RFC 1918, ULA), link-local, shared
(100.64/10), multicast, unspecified, reserved, and IPv4 addresses mapped into IPv6. The feed's
own host is always allowed (a spool mirror on the intranet is normal); further hosts — names,
addresses or networks — with ``[[feeds]] allow_hosts``. A refusal raises ``InternalAddress`` (a
``PermanentError``: never retried), is logged once (``feed.fetch_refused``) and counted
(``warnd_feed_fetches_refused_total{feed}``).

For every feed adapter that fetches over HTTP::

    guard = FetchGuard(name, url, allow=cfg.allow_hosts)
    session = guard.session(headers={...})            # resolves through the guard
    async with guard.get(session, link, headers=h, timeout=t) as resp:
        ...                                            # redirects followed and checked here
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from warnd.core.errors import PermanentError
from warnd.edges import metrics

log = structlog.get_logger("warnd.feeds.guard")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class InternalAddress(PermanentError):
    """A fetch refused: its URL or its host's address is internal and not allowed."""

    def __init__(self, url: str, address: str, kind: str) -> None:
        self.url, self.address, self.kind = url, address, kind
        super().__init__(f"内部地址被拒绝 refused: {url} is {kind} ({address}), not allow-listed")


def internal_kind(address: Address) -> str | None:
    """Why ``address`` is internal (``loopback``, ``private``…), or None if it is global."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "not-global"


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


class FetchGuard:
    """The addresses one feed may fetch from (see the module docstring)."""

    def __init__(self, feed: str, feed_url: str, allow: Iterable[str] = ()) -> None:
        self.feed = feed
        own = (urlsplit(feed_url).hostname or "").lower().rstrip(".")
        self._hosts = {own}
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            try:
                self._networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                self._hosts.add(entry.strip().lower().rstrip("."))

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".").strip("[]") in self._hosts

    def address_allowed(self, address: Address) -> bool:
        return internal_kind(address) is None or any(address in n for n in self._networks)

    def refuse(self, url: str, address: str, kind: str) -> InternalAddress:
        """Log and count a refusal; the caller raises what this returns."""
        metrics.FEED_REFUSED.labels(self.feed).inc()
        log.warning("feed.fetch_refused", feed=self.feed, url=url, address=address, reason=kind)
        return InternalAddress(url, address, kind)

    def check_url(self, url: str) -> None:
        """Refuse a URL that is not http(s), or whose host is an internal address literal."""
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise PermanentError(f"不是 http(s) 地址 not an http(s) URL: {url}")
        host = parts.hostname
        address = _address(host)
        if address is None or self.host_allowed(host):
            return  # a name: its addresses are checked when it is resolved
        kind = internal_kind(address)
        if kind is not None and not self.address_allowed(address):
            raise self.refuse(url, str(address), kind)

    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        """A client session whose host names are resolved through this guard."""
        connector = aiohttp.TCPConnector(resolver=_GuardedResolver(self))
        return aiohttp.ClientSession(connector=connector, **kwargs)

    @asynccontextmanager
    async def get(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        max_redirects: int = 5,
        **kwargs: Any,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET ``url``, following redirects here (each hop checked), at most ``max_redirects``."""
        for _hop in range(max_redirects + 1):
            self.check_url(url)
            async with session.get(url, allow_redirects=False, **kwargs) as resp:
                location = resp.headers.get("Location")
                if resp.status in _REDIRECTS and location:
                    url = str(resp.url.join(URL(location)))
                    continue
                yield resp
                return
        raise PermanentError(f"重定向过多 more than {max_redirects} redirects: {url}")


class _GuardedResolver(AbstractResolver):
    """The default resolver, with the internal addresses of names not allowed removed."""

    def __init__(self, guard: FetchGuard) -> None:
        self._guard = guard
        self._inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if self._guard.host_allowed(host):
            return found
        kept = []
        for info in found:
            address = _address(info["host"])
            if address is not None and self._guard.address_allowed(address):
                kept.append(info)
        if kept:
            return kept
        first = _address(found[0]["host"]) if found else None
        kind = internal_kind(first) if first is not None else None
        raise self._guard.refuse(
            f"http://{host}:{port}/", str(first) if first else host, kind or "internal"
        )

    async def close(self) -> None:
        await self._inner.close()
