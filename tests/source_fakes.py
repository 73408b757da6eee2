"""Real aiohttp servers on 127.0.0.1 that answer like the public warning sources (docs/feeds.md).

One server, three sources, each shaped as its public documentation (or, for nmc.cn, its
public clients) describes:

- **WMO relay of the CMA CAP feed**: ``/v2/cap-alerts/cn-cma-xx/rss.xml`` (RSS 2.0, one
  ``<item>`` per CAP document: title, link, pubDate, ``<guid isPermaLink="false">`` = the CMA
  identifier, ``cap:`` extension elements) and the documents under ``/cap/<id>.xml``. Every
  download is counted per path (``hits``), so tests can say exactly what a poll fetched.
- **QWeather weather alerts**: ``/weatheralert/v1/current/{lat}/{lon}`` answering gzip JSON
  (``Content-Encoding: gzip``) per point; the JWT is verified with the public key (EdDSA,
  ``kid``, ``sub``, ``iat``/``exp``), or an ``X-QW-Api-Key``; a bad one gets the provider's
  401 error body.
- **nmc.cn warning list**: ``/rest/findAlarm`` (JSON).

Anything can be made to fail (``fail[path] = [status, ...]``) or be garbage.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DATA = Path(__file__).parent / "data"
CST = timezone(timedelta(hours=8))
RSS_PATH = "/v2/cap-alerts/cn-cma-xx/rss.xml"
NMC_PATH = "/rest/findAlarm"
QW_PREFIX = "/weatheralert/v1/current/"
_ITEM = (DATA / "wmo" / "rss-item.xml").read_text(encoding="utf-8")
#: county codes far from Hunan: Hebei, Guizhou, Guangdong, Sichuan, Yunnan, Xinjiang, Jilin
ELSEWHERE = (
    *("130602", "130709", "130184", "520402", "522727", "440306", "440113", "510104"),
    *("510922", "530102", "530629", "650102", "650203", "220104", "220182", "370102"),
    *("410105", "420111", "350102", "330106"),
)


@dataclass(frozen=True)
class CmaDoc:
    """One CMA CAP message as the relay publishes it."""

    identifier: str
    sent: datetime
    sender: str
    geocode: str
    event_zh: str = "暴雨"
    event_en: str = "rainstorm"
    severity: str = "Severe"
    colour: str = "橙色"
    office: str = "泸溪县气象台"
    msg_type: str = "Alert"
    references: str = ""
    onset: datetime | None = None

    def xml(self) -> bytes:
        t = self.sent.isoformat(timespec="seconds")
        onset = self.onset.isoformat(timespec="seconds") if self.onset else t
        expires = (self.sent + timedelta(hours=24)).isoformat(timespec="seconds")
        refs = f"<references>{escape(self.references)}</references>" if self.references else ""
        verb = {"Alert": "发布", "Update": "更新", "Cancel": "解除"}[self.msg_type]
        headline = f"{self.office}{verb}{self.event_zh}{self.colour}预警信号"

        def info(lang: str, event: str, head: str, desc: str) -> str:
            return f"""
    <info>
        <language>{lang}</language>
        <category>Met</category>
        <event>{escape(event)}</event>
        <urgency>Unknown</urgency>
        <severity>{self.severity}</severity>
        <certainty>Unknown</certainty>
        <effective>{t}</effective>
        <onset>{onset}</onset>
        <expires>{expires}</expires>
        <senderName>值班预报员</senderName>
        <headline>{escape(head)}</headline>
        <description>{escape(desc)}</description>
        <area>
            <areaDesc>{escape(self.office)}</areaDesc>
            <geocode>
                <valueName>CPEAS Geographic Code</valueName>
                <value>{self.geocode}</value>
            </geocode>
        </area>
    </info>"""

        en = f"{self.sender} {self.msg_type.lower()}s {self.event_en} warning"
        body = f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
    <identifier>{self.identifier}</identifier>
    <sender>{escape(self.sender)}</sender>
    <sent>{t}</sent>
    <status>Actual</status>
    <msgType>{self.msg_type}</msgType>
    <scope>Public</scope>
    <note></note>
    {refs}{info("en-US", self.event_en, en, en)}{info("zh-CN", self.event_zh, headline, headline)}
</alert>
"""
        return body.encode("utf-8")


def cma_id(area: str, sent: datetime, seq: int = 0) -> str:
    """``<area 6>416000<seq 2>_<YYYYMMDDhhmmss>`` in Beijing time."""
    return f"{area}416000{seq:02d}_{sent.astimezone(CST):%Y%m%d%H%M%S}"


def elsewhere(n: int, start: datetime) -> list[CmaDoc]:
    """``n`` documents issued in other provinces, a minute apart, newest last."""
    out = []
    for i in range(n):
        area = ELSEWHERE[i % len(ELSEWHERE)]
        sent = start + timedelta(minutes=i)
        out.append(
            CmaDoc(cma_id(area, sent, i % 100), sent, f"{area}_Observatory", area + "000000")
        )
    return out


@dataclass
class QWeatherAccount:
    """What the fake accepts: a JWT under this public key, kid and project; or an API key."""

    public_key: Ed25519PublicKey | None = None
    kid: str = "KID0000001"
    project: str = "PROJ000001"
    api_key: str | None = None
    max_ttl: int = 86400
    now: Callable[[], float] = time.time
    seen: list[dict[str, Any]] = field(default_factory=list)

    def check(self, headers: Any) -> str | None:
        """None when the request is let in, else why not."""
        if self.api_key is not None and headers.get("X-QW-Api-Key") == self.api_key:
            return None
        auth = headers.get("Authorization", "")
        if self.public_key is None or not auth.startswith("Bearer "):
            return "no credentials"
        try:
            head_b, body_b, sig_b = auth[7:].split(".")

            def unb64(s: str) -> bytes:
                return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

            header, payload = json.loads(unb64(head_b)), json.loads(unb64(body_b))
            self.public_key.verify(unb64(sig_b), f"{head_b}.{body_b}".encode())
        except (ValueError, InvalidSignature):
            return "bad token"
        self.seen.append({"header": header, "payload": payload})
        now = self.now()
        if header.get("alg") != "EdDSA" or header.get("kid") != self.kid:
            return "wrong alg or kid"
        if payload.get("sub") != self.project:
            return "wrong sub"
        iat, exp = payload.get("iat"), payload.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            return "no iat/exp"
        if iat > now + 60 or exp <= now or exp - iat > self.max_ttl:
            return "expired or too long"
        return None


class SourceFake:
    """The three sources on one loopback server; tests set what each answers."""

    def __init__(self) -> None:
        self.base = ""
        self.hits: Counter[str] = Counter()
        self.docs: dict[str, bytes] = {}
        self.index: list[CmaDoc] = []
        self.rss_override: bytes | None = None
        self.points: dict[str, Any] = {}  # "lat/lon" -> JSON value, or bytes (sent as they are)
        self.account = QWeatherAccount()
        self.nmc: Any = {"code": 0, "msg": "success", "data": {"page": {"list": []}}}
        self.fail: dict[str, list[int]] = {}
        self.gzip = True
        self._runner: web.AppRunner | None = None

    # ---- setting answers ------------------------------------------------------------------

    def publish(self, *docs: CmaDoc) -> None:
        """Add documents to the relay's index (newest first, as the relay lists them)."""
        for d in docs:
            self.docs[d.identifier] = d.xml()
        self.index = sorted([*self.index, *docs], key=lambda d: d.sent, reverse=True)[:500]

    def doc_path(self, identifier: str) -> str:
        return f"/cap/{identifier}.xml"

    def rss(self) -> bytes:
        items = []
        for d in self.index:
            items.append(
                _ITEM.format(
                    title=escape(f"{d.sender} issues {d.event_en} warning"),
                    link=self.base + self.doc_path(d.identifier),
                    pub=format_datetime(d.sent.astimezone(UTC)),
                    guid=d.identifier,
                    event=d.event_en,
                    severity=d.severity,
                    expires=format_datetime((d.sent + timedelta(days=1)).astimezone(UTC)),
                    area="Show area",
                )
            )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<rss version="2.0" xmlns:cap="urn:oasis:names:tc:emergency:cap:1.1">\n'
            "  <channel>\n    <title>China: CMA CAP alerts</title>\n"
            f"    <link>{self.base}{RSS_PATH}</link>\n"
            "    <description>CAP alerts relayed by WMO</description>\n"
            "    <copyright>public domain</copyright>\n" + "".join(items) + "  </channel>\n</rss>\n"
        ).encode("utf-8")

    def point(self, lat: float, lon: float, answer: Any) -> None:
        self.points[f"{lat:.2f}/{lon:.2f}"] = answer

    # ---- serving --------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self.base

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def downloads(self) -> int:
        """CAP documents fetched so far."""
        return sum(n for path, n in self.hits.items() if path.startswith("/cap/"))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] += 1
        queue = self.fail.get(path) or self.fail.get("*")
        if queue:
            status = queue.pop(0)
            return web.Response(status=status, text="busy")
        if path == RSS_PATH:
            body = self.rss_override if self.rss_override is not None else self.rss()
            return web.Response(body=body, content_type="application/rss+xml")
        if path.startswith("/cap/"):
            doc = self.docs.get(path[5:].removesuffix(".xml"))
            if doc is None:
                return web.Response(status=404, text="no such document")
            return web.Response(body=doc, content_type="application/xml")
        if path == NMC_PATH:
            body = self.nmc if isinstance(self.nmc, bytes) else json.dumps(self.nmc).encode()
            return web.Response(body=body, content_type="application/json")
        if path.startswith(QW_PREFIX):
            return self._qweather(request, path[len(QW_PREFIX) :])
        return web.Response(status=404, text="not here")

    def _qweather(self, request: web.Request, where: str) -> web.Response:
        why = self.account.check(request.headers)
        if why is not None:
            error = {
                "error": {
                    "status": 401,
                    "type": "https://dev.qweather.com/docs/resource/error-code/#unauthorized",
                    "title": "Unauthorized",
                    "detail": why,
                }
            }
            return web.json_response(error, status=401)
        answer = self.points.get(where)
        if answer is None:
            answer = json.loads((DATA / "qweather" / "empty.json").read_text(encoding="utf-8"))
        raw = (
            answer if isinstance(answer, bytes) else json.dumps(answer, ensure_ascii=False).encode()
        )
        headers = {"Content-Type": "application/json"}
        if self.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
            raw = gzip.compress(raw)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=raw, headers=headers)


def qweather_json(name: str) -> Any:
    return json.loads((DATA / "qweather" / name).read_text(encoding="utf-8"))


def nmc_json(name: str = "findAlarm.json") -> Any:
    return json.loads((DATA / "nmc" / name).read_text(encoding="utf-8"))
