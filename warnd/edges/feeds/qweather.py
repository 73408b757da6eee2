"""The QWeather (和风天气) weather-alert feed: configured points polled, alerts handed over as CAP.

Each poll asks ``{host}/weatheralert/v1/current/{lat}/{lon}`` for every configured point (one
per county or township, each standing for a division code), through the same fetch layer as
``HttpFeed`` (retries, timeouts, bounded bodies, and the address checks that layer applies).
An alert reported by several points is one message whose area is those points' codes; it is
written as CAP (``warnd.edges.feeds.qwalert``) and handed to the same ``ingest`` as every feed.

Authentication (docs/feeds.md): an Ed25519-signed JWT (``alg: EdDSA``, ``kid`` = credential
id; payload ``sub`` = project id, ``iat`` 30 s in the past, ``exp``), renewed before it
expires and signed with a key read from a file or systemd credential, never from the config;
or the ``X-QW-Api-Key`` header with an API key from a file or environment variable.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import structlog

from warnd.core.errors import CapError, ConfigError, WarndError
from warnd.edges.feeds import (
    FeedItem,
    FeedStatus,
    Ingest,
    Outcome,
    PollReport,
    StatusTracker,
    Tally,
    one_line,
)
from warnd.edges.feeds.http import HttpFeed, Sleep
from warnd.edges.feeds.qwalert import Point, Response, alert_id, issued, read_response, to_cap

log = structlog.get_logger("warnd.feeds.qweather")

PATH = "/weatheralert/v1/current/{lat:.2f}/{lon:.2f}"
API_KEY_HEADER = "X-QW-Api-Key"
_CONCURRENCY = 4


class Auth(Protocol):
    """What a request needs to be let in."""

    def headers(self) -> dict[str, str]: ...


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_ed25519(path: Path, *, field: str) -> Any:
    """An Ed25519 private key from a PEM (PKCS#8) file; ConfigError naming ``field`` if not."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"无法读取密钥文件 cannot read key file: {exc.strerror}", field=field, value=str(path)
        ) from None
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"不是 PEM 私钥 not a PEM private key: {one_line(exc)}", field=field, value=str(path)
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            "不是 Ed25519 私钥 not an Ed25519 key", field=field, value=type(key).__name__
        )
    return key


class JwtAuth:
    """``Authorization: Bearer <JWT>`` signed with Ed25519 (EdDSA), reused until near expiry."""

    def __init__(
        self,
        key: Any,
        *,
        kid: str,
        project: str,
        ttl_s: float = 900.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self.kid = kid
        self.project = project
        self.ttl_s = ttl_s
        self._now = now
        self._token: str | None = None
        self._renew_at = 0.0

    def token(self) -> str:
        now = self._now()
        if self._token is None or now >= self._renew_at:
            iat = int(now) - 30  # the provider's advice: a little in the past against clock skew
            exp = iat + int(self.ttl_s)
            header = {"alg": "EdDSA", "kid": self.kid}
            payload = {"sub": self.project, "iat": iat, "exp": exp}
            signing = (
                _b64(json.dumps(header, separators=(",", ":")).encode())
                + "."
                + _b64(json.dumps(payload, separators=(",", ":")).encode())
            )
            signature = self._key.sign(signing.encode("ascii"))
            self._token = f"{signing}.{_b64(signature)}"
            self._renew_at = exp - max(60.0, self.ttl_s / 5)
        return self._token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}


class ApiKeyAuth:
    """``X-QW-Api-Key: <key>`` (the provider limits API-key requests; JWT is preferred)."""

    def __init__(self, key: str) -> None:
        self._key = key

    def headers(self) -> dict[str, str]:
        return {API_KEY_HEADER: self._key}


class QWeatherFeed:
    """Poll every configured point; hand each alert over once (again when its area grows)."""

    def __init__(
        self,
        name: str,
        host: str,
        points: Sequence[Point],
        *,
        auth: Auth,
        timeout_s: float = 30.0,
        lang: str = "zh",
        session: aiohttp.ClientSession | None = None,
        sleep: Sleep = asyncio.sleep,
        now: Callable[[], float] = time.time,
        max_tries: int = 4,
        remember: int = 10_000,
    ) -> None:
        if not points:
            raise ConfigError("至少需要一个点 needs at least one point", field=f"feeds.{name}")
        self.name = name
        self.host = host.rstrip("/")
        self.points = tuple(points)
        self.lang = lang
        self._auth = auth
        # the fetch layer of every HTTP source (warnd.edges.feeds.http): its host is the API host
        self._http = HttpFeed(
            name,
            self.host,
            timeout_s=timeout_s,
            session=session,
            sleep=sleep,
            now=now,
            max_tries=max_tries,
        )
        self._tracker = StatusTracker(now)
        self._capacity = remember
        # alert id -> (digest of the alert, division codes handed over so far)
        self._handed: OrderedDict[str, tuple[str, frozenset[str]]] = OrderedDict()

    @property
    def status(self) -> FeedStatus:
        return self._tracker.status

    async def aclose(self) -> None:
        await self._http.aclose()

    def url(self, point: Point) -> str:
        return self.host + PATH.format(lat=point.lat, lon=point.lon) + f"?lang={self.lang}"

    async def fetch_point(self, point: Point) -> Response:
        """One point's answer; ``WarndError`` (one line) when it cannot be had or read."""
        headers = {"Accept": "application/json", **self._auth.headers()}
        body = await self._http.fetch(self.url(point), headers=headers)
        return read_response(body, f"{self.name}:{point.label}")

    async def _answers(self, tally: Tally) -> list[tuple[Point, Response]]:
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def one(point: Point) -> tuple[Point, Response | str]:
            async with gate:
                try:
                    return point, await self.fetch_point(point)
                except WarndError as exc:
                    return (
                        point,
                        f"{point.label} ({point.lat:.2f},{point.lon:.2f}): {one_line(exc)}",
                    )

        out: list[tuple[Point, Response]] = []
        for point, got in await asyncio.gather(*(one(p) for p in self.points)):
            if isinstance(got, str):
                tally.fail(f"获取失败 fetch failed: {got}")
                log.warning("feed.point_failed", feed=self.name, point=point.label, error=got)
            else:
                for problem in got.problems:
                    tally.fail(f"{point.label}: {problem}")
                out.append((point, got))
        return out

    async def poll(self, ingest: Ingest) -> PollReport:
        tally = Tally(self.name)
        answers = await self._answers(tally)
        tally.answered = bool(answers)
        reported: dict[str, tuple[Mapping[str, Any], list[Point]]] = {}
        for point, response in answers:
            for alert in response.alerts:
                aid = alert_id(alert) or f"?{len(reported)}"
                entry = reported.setdefault(aid, (alert, []))
                if point not in entry[1]:
                    entry[1].append(point)
        tally.listed = len(reported)
        times = {a: issued(reported[a][0]) for a in reported}
        stamp = {a: t.timestamp() for a, t in times.items() if t is not None}
        order = sorted(reported, key=lambda a: (a not in stamp, stamp.get(a, 0.0), a))
        dated = [a for a in order if a in stamp]
        latest = times[dated[-1]] if dated else None
        if latest is not None:
            tally.newest = f"{dated[-1]} ({latest.isoformat()})"
        for aid in order:
            alert, points = reported[aid]
            await self._hand_over(aid, alert, points, ingest, tally)
        report = tally.report()
        if report.items or report.error:
            (log.warning if report.error else log.info)(
                "feed.poll",
                feed=self.name,
                points=len(self.points),
                listed=report.listed,
                items=report.items,
                accepted=report.accepted,
                duplicates=report.duplicates,
                rejected=report.rejected,
                error=report.error,
            )
        return self._tracker.record(report)

    async def _hand_over(
        self,
        aid: str,
        alert: Mapping[str, Any],
        points: list[Point],
        ingest: Ingest,
        tally: Tally,
    ) -> None:
        digest = hashlib.sha256(
            json.dumps(alert, sort_keys=True, ensure_ascii=False, default=str).encode()
        ).hexdigest()[:16]
        codes = frozenset(p.code for p in points)
        before = self._handed.get(aid)
        identifier: str | None = None
        extends: str | None = None
        if before is not None and before[0] == digest:
            self._handed.move_to_end(aid)
            if codes <= before[1]:
                return  # handed over already, with this area
            # More points report it than when it was handed over (one failed then): an area
            # update of it, so that the divisions of those points are not left out.
            codes = codes | before[1]
            points = [
                *points,
                *(Point(c, 0.0, 0.0, c) for c in before[1] - {p.code for p in points}),
            ]
            identifier = f"{aid}~{hashlib.sha256(','.join(sorted(codes)).encode()).hexdigest()[:8]}"
            extends = aid
        origin = f"{self.name}:{aid}"
        try:
            data = to_cap(alert, points, identifier=identifier, extends=extends)
        except CapError as exc:  # cannot become a message: counted, logged once per version
            tally.count(Outcome.REJECTED)
            log.warning("feed.item_rejected", feed=self.name, origin=origin, reason=str(exc))
            self._remember(aid, digest, codes)
            return
        try:
            result = await ingest(FeedItem(data, origin))
        except Exception as exc:  # the store is down: handed over again next poll
            tally.fail(f"入库失败 ingest failed for {origin}: {one_line(exc)}")
            log.warning("feed.ingest_failed", feed=self.name, origin=origin, error=str(exc))
            return
        tally.count(result.outcome)
        if result.outcome is Outcome.REJECTED:
            log.warning("feed.item_rejected", feed=self.name, origin=origin, reason=result.reason)
        self._remember(aid, digest, codes)

    def _remember(self, aid: str, digest: str, codes: frozenset[str]) -> None:
        self._handed[aid] = (digest, codes)
        self._handed.move_to_end(aid)
        while len(self._handed) > self._capacity:
            self._handed.popitem(last=False)
