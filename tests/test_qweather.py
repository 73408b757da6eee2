"""QWeather (和风天气) weather alerts: the payload as CAP, and the feed against a loopback fake.

The fake (tests/source_fakes.py) answers gzip JSON shaped like the public documentation and
checks every request's JWT with the public key: a token warnd signs wrongly is refused there,
exactly as the provider would refuse it.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from source_fakes import DATA, SourceFake, qweather_json

from warnd.core import cap
from warnd.core.cap.dedup import key_of
from warnd.core.errors import CapError, ConfigError
from warnd.edges.feeds import FeedItem, IngestResult, Outcome
from warnd.edges.feeds.qwalert import Point, parse_time, read_response, to_cap
from warnd.edges.feeds.qweather import ApiKeyAuth, JwtAuth, QWeatherFeed, load_ed25519

COUNTY = Point("433122", 28.22, 110.22, "泸溪县")
TOWN = Point("433122101", 28.29, 110.18, "浦市镇")
OTHER = Point("433122102", 28.11, 110.02, "白沙镇")
CST = timezone(timedelta(hours=8))


def alert_of(name: str, i: int = 0) -> dict[str, Any]:
    alert: dict[str, Any] = qweather_json(name)["alerts"][i]
    return alert


class Sleep:
    async def __call__(self, delay: float) -> None:
        return None


class Ingest:
    def __init__(self) -> None:
        self.items: list[cap.Alert] = []
        self.keys: set[str] = set()

    async def __call__(self, item: FeedItem) -> IngestResult:
        alert = cap.parse(item.data, source=item.origin)
        self.items.append(alert)
        if alert.key in self.keys:
            return IngestResult(Outcome.DUPLICATE, key=alert.key)
        self.keys.add(alert.key)
        return IngestResult(Outcome.ACCEPTED, key=alert.key)


# -- the payload as CAP (pure) -------------------------------------------------------------------


def test_alert_becomes_the_cap_message_inspect_shows() -> None:
    alert = cap.parse(to_cap(alert_of("luxi-alert.json"), [COUNTY, TOWN]))
    s = cap.summary(alert)
    assert s["identifier"] == "202506140815105837988676"
    assert s["sender"] == "qweather"
    assert s["sent"] == "2025-06-14T08:15:00+08:00"
    assert (s["status"], s["msg_type"], s["references"]) == ("Actual", "Alert", [])
    assert s["severity"] == "Severe"  # orange
    assert s["onset"] == "2025-06-14T14:00:00+08:00"
    assert s["effective"] == "2025-06-14T08:15:00+08:00"
    assert s["expires"] == "2025-06-15T08:15:00+08:00"
    assert s["geocodes"] == ["433122", "433122101"] and s["areas"] == 2
    assert s["event"] == "暴雨" and s["headline"] == "泸溪县气象台发布暴雨橙色预警信号"
    assert alert.warnings == ()  # a schema-valid CAP 1.2 document
    info = alert.primary_info
    assert info is not None and ("QWeather_EventType", "1003") in info.event_codes
    assert ("qweather:color", "orange") in info.parameters
    assert alert.note is not None and "202506140815105837988676" in alert.note


def test_update_and_cancel_name_what_they_supersede() -> None:
    update = cap.parse(to_cap(alert_of("luxi-update.json"), [COUNTY]))
    assert update.msg_type == "Update" and update.severity == "Extreme"
    (ref,) = update.references
    assert (ref.sender, ref.identifier) == ("qweather", "202506140815105837988676")
    cancel = cap.parse(to_cap(alert_of("luxi-cancel.json"), [COUNTY]))
    assert cancel.msg_type == "Cancel" and cancel.onset is None
    assert [r.identifier for r in cancel.references] == ["202506141100208812736651"]


@pytest.mark.parametrize(
    ("colour", "severity", "expected"),
    [
        ("blue", "severe", "Minor"),  # China's colour is the level
        ("yellow", None, "Moderate"),
        ("ORANGE", "minor", "Severe"),
        ("red", None, "Extreme"),
        ("purple", "severe", "Severe"),  # an unknown colour: the provider's severity
        ("white", "catastrophic", "Unknown"),  # both unknown: data, not a crash
        (None, None, "Unknown"),
    ],
)
def test_severity_from_colour_then_severity(
    colour: str | None, severity: str | None, expected: str
) -> None:
    raw = alert_of("luxi-alert.json") | {"color": {"code": colour}, "severity": severity}
    assert cap.parse(to_cap(raw, [COUNTY])).severity == expected


def test_unknown_codes_and_missing_fields_are_data() -> None:
    odd = alert_of("odd.json", 0)  # numeric id, messageType "amend", no name, no times
    alert = cap.parse(to_cap(odd, [COUNTY]))
    assert alert.identifier == "2025061409001234" and alert.msg_type == "Alert"
    assert alert.severity == "Unknown" and alert.onset is None and alert.expires is None
    assert alert.primary_info is not None and alert.primary_info.event == "9999"
    assert alert.note is not None and "unknown messageType 'amend'" in alert.note
    assert key_of(alert) is None  # no office named: never taken for a copy of anything
    loose = alert_of("odd.json", 5)  # messageType as a bare string, bad onset, odd enums
    alert = cap.parse(to_cap(loose, [COUNTY]))
    assert alert.msg_type == "Alert"  # an "update" that supersedes nothing starts a warning
    assert alert.onset is None and alert.expires is not None  # 25:99 dropped, not fatal
    assert alert.primary_info is not None and alert.primary_info.urgency == "Unknown"


@pytest.mark.parametrize(
    ("index", "reason"),
    [
        (1, "no usable issuedTime"),
        (2, "without an id"),
        (3, "cancel that names nothing"),
    ],
)
def test_what_cannot_become_a_message_is_refused_in_one_line(index: int, reason: str) -> None:
    with pytest.raises(CapError, match=reason) as err:
        to_cap(alert_of("odd.json", index), [COUNTY])
    assert "\n" not in str(err.value)


def test_control_characters_and_containers_do_not_break_the_document() -> None:
    raw = alert_of("luxi-alert.json") | {
        "headline": "泸溪县气象台\x00发布暴雨\x1b橙色预警信号",
        "description": {"nested": "object"},
        "instruction": ["a", "list"],
        "expiredTime": "2025-06-15T09:00+08:00",
    }
    del raw["expireTime"]
    alert = cap.parse(to_cap(raw, [COUNTY]))
    assert alert.headline == "泸溪县气象台发布暴雨橙色预警信号"
    assert alert.primary_info is not None and alert.primary_info.description is None
    assert alert.expires == datetime(2025, 6, 15, 9, 0, tzinfo=CST)  # the other spelling


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-10-24T11:19+08:00", datetime(2025, 10, 24, 11, 19, tzinfo=CST)),
        ("2025-10-16T21:00Z", datetime(2025, 10, 16, 21, 0, tzinfo=UTC)),
        ("2025-10-16T21:00:30.5+0800", datetime(2025, 10, 16, 21, 0, 30, tzinfo=CST)),
        ("2025-10-16T21:00", None),  # no offset: not guessed
        ("2025-02-30T10:00+08:00", None),
        ("", None),
        (1750000000, None),
    ],
)
def test_times(text: Any, expected: datetime | None) -> None:
    assert parse_time(text) == expected


def test_responses_read_gzip_errors_and_garbage() -> None:
    raw = (DATA / "qweather" / "luxi-alert.json").read_bytes()
    assert len(read_response(gzip.compress(raw), "f").alerts) == 1  # saved as it came
    assert read_response((DATA / "qweather" / "empty.json").read_bytes(), "f").alerts == ()
    with pytest.raises(CapError, match="QWeather error 401: Unauthorized"):
        read_response((DATA / "qweather" / "error-401.json").read_bytes(), "f")
    with pytest.raises(CapError, match="not a QWeather JSON response"):
        read_response(b"<html><body>502 Bad Gateway</body></html>", "f")
    with pytest.raises(CapError, match="no `alerts` list"):
        read_response(b'{"metadata": {"zeroResult": false}, "alerts": {"id": 1}}', "f")
    with pytest.raises(CapError, match="expected a JSON object"):
        read_response(b"[1, 2]", "f")
    with pytest.raises(CapError, match="once inflated"):  # a gzip bomb stops at the limit
        read_response(gzip.compress(b"{" + b" " * (6 * 1024 * 1024) + b"}"), "f")
    odd = read_response((DATA / "qweather" / "odd.json").read_bytes(), "f")
    assert len(odd.alerts) == 5 and odd.problems == ("alerts[4]: not an object",)


# -- authentication -----------------------------------------------------------------------------


def write_key(tmp: Path) -> tuple[Path, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    path = tmp / "qweather-ed25519.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path, key


def test_key_file_must_hold_an_ed25519_key(tmp_path: Path) -> None:
    path, _key = write_key(tmp_path)
    assert load_ed25519(path, field="feeds.qw.key_file") is not None
    (tmp_path / "bad.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(ConfigError, match="not a PEM private key"):
        load_ed25519(tmp_path / "bad.pem", field="feeds.qw.key_file")
    with pytest.raises(ConfigError, match="cannot read key file"):
        load_ed25519(tmp_path / "missing.pem", field="feeds.qw.key_file")


def test_token_is_reused_then_renewed_before_it_expires() -> None:
    t = [1_750_000_000.0]
    auth = JwtAuth(
        Ed25519PrivateKey.generate(), kid="K1", project="P1", ttl_s=900, now=lambda: t[0]
    )
    first = auth.token()
    t[0] += 600
    assert auth.token() == first  # still well within its life
    t[0] += 200  # 60 s before exp (iat was 30 s early): renewed
    assert auth.token() != first
    payload = json.loads(_b64d(auth.token().split(".")[1]))
    assert payload["exp"] - payload["iat"] == 900 and payload["iat"] == int(t[0]) - 30


def _b64d(s: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# -- the feed against the fake ------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[SourceFake]:
    srv = SourceFake()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def jwt_feed(
    fake: SourceFake, key: Ed25519PrivateKey, points: list[Point], **kw: Any
) -> QWeatherFeed:
    fake.account.public_key = key.public_key()
    auth = JwtAuth(key, kid=fake.account.kid, project=fake.account.project)
    return QWeatherFeed("qweather", fake.base, points, auth=auth, timeout_s=5, sleep=Sleep(), **kw)


async def test_points_reporting_one_alert_make_one_message(fake: SourceFake) -> None:
    key = Ed25519PrivateKey.generate()
    for p in (COUNTY, TOWN):
        fake.point(p.lat, p.lon, qweather_json("luxi-alert.json"))
    feed = jwt_feed(fake, key, [COUNTY, TOWN, OTHER])
    ingest = Ingest()
    report = await feed.poll(ingest)
    assert (report.listed, report.items, report.accepted, report.error) == (1, 1, 1, None)
    (alert,) = ingest.items
    assert alert.geocodes == ("433122", "433122101")  # OTHER's point reported nothing
    assert report.newest == "202506140815105837988676 (2025-06-14T08:15:00+08:00)"
    seen = fake.account.seen[-1]
    assert seen["header"] == {"alg": "EdDSA", "kid": fake.account.kid}
    assert seen["payload"]["sub"] == fake.account.project
    assert fake.hits["/weatheralert/v1/current/28.22/110.22"] == 1
    again = await feed.poll(ingest)  # nothing new: nothing handed over
    assert again.items == 0 and again.error is None
    await feed.aclose()


async def test_update_then_cancel_through_the_feed(fake: SourceFake) -> None:
    key = Ed25519PrivateKey.generate()
    feed = jwt_feed(fake, key, [COUNTY])
    ingest = Ingest()
    for name, kind in (
        ("luxi-alert.json", "Alert"),
        ("luxi-update.json", "Update"),
        ("luxi-cancel.json", "Cancel"),
    ):
        fake.point(COUNTY.lat, COUNTY.lon, qweather_json(name))
        report = await feed.poll(ingest)
        assert (report.items, report.error) == (1, None)
        assert ingest.items[-1].msg_type == kind
    assert [r.identifier for r in ingest.items[-1].references] == ["202506141100208812736651"]
    await feed.aclose()


async def test_wrong_key_is_refused_by_the_fake_and_reported(fake: SourceFake) -> None:
    fake.account.public_key = Ed25519PrivateKey.generate().public_key()
    auth = JwtAuth(Ed25519PrivateKey.generate(), kid=fake.account.kid, project=fake.account.project)
    feed = QWeatherFeed("qweather", fake.base, [COUNTY], auth=auth, timeout_s=5, sleep=Sleep())
    report = await feed.poll(Ingest())
    assert report.answered is False and report.error and "HTTP 401" in report.error
    assert feed.status.consecutive_failures == 1
    await feed.aclose()


async def test_expired_token_is_refused(fake: SourceFake) -> None:
    key = Ed25519PrivateKey.generate()
    fake.account.public_key = key.public_key()
    stale = JwtAuth(
        key, kid=fake.account.kid, project=fake.account.project, now=lambda: 1_000_000_000.0
    )  # signed long ago: exp is in the past
    feed = QWeatherFeed("qweather", fake.base, [COUNTY], auth=stale, timeout_s=5, sleep=Sleep())
    report = await feed.poll(Ingest())
    assert report.error and "401" in report.error
    await feed.aclose()


async def test_api_key_header(fake: SourceFake) -> None:
    fake.account.api_key = "k-0123456789"
    fake.point(COUNTY.lat, COUNTY.lon, qweather_json("luxi-alert.json"))
    feed = QWeatherFeed(
        "qweather", fake.base, [COUNTY], auth=ApiKeyAuth("k-0123456789"), timeout_s=5, sleep=Sleep()
    )
    assert (await feed.poll(Ingest())).accepted == 1
    wrong = QWeatherFeed(
        "qweather", fake.base, [COUNTY], auth=ApiKeyAuth("nope"), timeout_s=5, sleep=Sleep()
    )
    assert "401" in ((await wrong.poll(Ingest())).error or "")
    await feed.aclose()
    await wrong.aclose()


async def test_a_point_that_failed_is_added_by_an_area_update(fake: SourceFake) -> None:
    key = Ed25519PrivateKey.generate()
    for p in (COUNTY, TOWN):
        fake.point(p.lat, p.lon, qweather_json("luxi-alert.json"))
    fake.fail["/weatheralert/v1/current/28.29/110.18"] = [503] * 4  # every try of one poll
    feed = jwt_feed(fake, key, [COUNTY, TOWN])
    ingest = Ingest()
    first = await feed.poll(ingest)
    assert first.answered and first.error and "浦市镇" in first.error and first.accepted == 1
    assert ingest.items[-1].geocodes == ("433122",)
    second = await feed.poll(ingest)
    assert (second.items, second.error) == (1, None)
    grown = ingest.items[-1]
    assert grown.msg_type == "Update" and grown.identifier.startswith("202506140815105837988676~")
    assert [r.identifier for r in grown.references] == ["202506140815105837988676"]
    assert grown.geocodes == ("433122", "433122101")
    assert (await feed.poll(ingest)).items == 0  # handed over with this area: done
    await feed.aclose()


async def test_garbage_from_one_point_does_not_stop_the_others(fake: SourceFake) -> None:
    key = Ed25519PrivateKey.generate()
    fake.point(COUNTY.lat, COUNTY.lon, b"<html>502 Bad Gateway</html>")
    fake.point(TOWN.lat, TOWN.lon, qweather_json("odd.json"))
    fake.point(OTHER.lat, OTHER.lon, qweather_json("luxi-alert.json"))
    feed = jwt_feed(fake, key, [COUNTY, TOWN, OTHER])
    ingest = Ingest()
    report = await feed.poll(ingest)
    assert report.answered is True
    assert report.error and "not a QWeather JSON response" in report.error
    # odd.json: two alerts usable, three refused (no time, no id, empty cancel); luxi: one
    assert (report.accepted, report.rejected) == (3, 3)
    ids = {a.identifier for a in ingest.items}
    assert ids == {"2025061409001234", "202506140930000000000042", "202506140815105837988676"}
    again = await feed.poll(ingest)  # refused alerts are not refused again every poll
    assert again.rejected == 0 and again.items == 0
    await feed.aclose()


async def test_the_fake_really_gzips(fake: SourceFake) -> None:
    import aiohttp

    key = Ed25519PrivateKey.generate()
    fake.account.public_key = key.public_key()
    fake.point(COUNTY.lat, COUNTY.lon, qweather_json("luxi-alert.json"))
    auth = JwtAuth(key, kid=fake.account.kid, project=fake.account.project)
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        url = f"{fake.base}/weatheralert/v1/current/28.22/110.22"
        async with s.get(url, headers={**auth.headers(), "Accept-Encoding": "gzip"}) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            body = await resp.read()
    assert json.loads(gzip.decompress(body))["alerts"][0]["id"] == "202506140815105837988676"


def test_sent_in_utc_keeps_the_instant() -> None:
    raw = alert_of("luxi-alert.json") | {"issuedTime": "2025-06-14T00:15Z"}
    alert = cap.parse(to_cap(raw, [COUNTY]))
    assert alert.sent == datetime(2025, 6, 14, 8, 15, tzinfo=CST)
    assert alert.sent.utcoffset() == timedelta(0)
