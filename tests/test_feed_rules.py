"""The pure rules behind the real sources: dedup keys, check lists, the feed watch, the config.

Table tests over values; no server, no store (those are in test_sources_e2e.py).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from factory import cap_xml
from source_fakes import DATA

from warnd.config.policy import load_config
from warnd.core import cap
from warnd.core.cap.dedup import (
    DedupKey,
    key_from,
    key_of,
    office_and_event,
    same_warning,
    uncovered,
    with_area,
)
from warnd.core.errors import CapError, ConfigError
from warnd.edges.feeds import PollReport
from warnd.edges.feeds.crosscheck import CheckItem, Delivered, delivered, item_from, read_nmc
from warnd.edges.feeds.watch import Watch, Watched

CST = timezone(timedelta(hours=8))
T = datetime(2025, 6, 14, 8, 15, tzinfo=CST)
M = timedelta(minutes=1)


# -- dedup keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headline", "office", "event"),
    [
        ("泸溪县气象台发布暴雨橙色预警信号", "泸溪县气象台", "暴雨"),
        ("保定市气象台更新雷电黄色预警[Ⅲ级/较重]", "保定市气象台", "雷电"),
        ("北京市气象台2021年10月09日15时40分发布大风蓝色预警信号", "北京市气象台", "大风"),
        ("烟台市气象台发布大雾黄色预警", "烟台市气象台", "大雾"),  # 台 inside the city name
        ("将乐县气象台发布暴雨橙色预警信号", "将乐县气象台", "暴雨"),  # 将 inside the name
        ("台江县气象台继续发布暴雨黄色预警信号", "台江县气象台", "暴雨"),
        ("湘西州气象台将暴雨黄色预警升级为橙色预警", "湘西州气象台", "暴雨"),
        ("湖南省气象台发布地质灾害气象风险预警", "湖南省气象台", "地质灾害气象风险"),
        ("泸溪县气象台解除暴雨蓝色预警", "泸溪县气象台", "暴雨"),
        ("泸溪县 气象台 发布 暴雨 橙色 预警", "泸溪县气象台", "暴雨"),  # spacing
        ("Strong Wind Warning - Orange", None, "暴雨"),  # no office: no key
        ("发布暴雨橙色预警", None, "暴雨"),
        (None, None, "暴雨"),
    ],
)
def test_office_and_event_from_official_titles(
    headline: str | None, office: str | None, event: str
) -> None:
    assert office_and_event(headline, "暴雨预警") == (office, event)


def test_key_of_cap_and_of_stored_columns_agree() -> None:
    alert = cap.parse(cap_xml("43312241600000_20250614081500", T))
    key = key_of(alert)
    assert key == DedupKey("泸溪县气象台", "暴雨", "Severe", "Alert", False, T.astimezone(UTC))
    stored = key_from(alert.headline, "暴雨", "Severe", "Alert", False, T.astimezone(UTC))
    assert stored == key
    assert (
        key is not None
        and key.text() == "泸溪县气象台|暴雨|Severe|Alert|real|2025-06-14T00:15:00+00:00"
    )
    drill = key_of(cap.parse(cap_xml("x_1", T, status="Exercise")))
    assert drill is not None and drill.text().split("|")[4] == "drill"


def _k(**kw: Any) -> DedupKey:
    base: dict[str, Any] = {
        "office": "泸溪县气象台",
        "event": "暴雨",
        "severity": "Severe",
        "kind": "Alert",
        "drill": False,
        "issued": T,
    }
    return DedupKey(**(base | kw))


@pytest.mark.parametrize(
    ("other", "same"),
    [
        (_k(), True),
        (_k(issued=T + 5 * M), True),  # at most the window apart
        (_k(issued=T - 5 * M), True),
        (_k(issued=T + 5 * M + timedelta(seconds=1)), False),
        (_k(severity="Extreme"), False),  # a different level is a different message
        (_k(kind="Update"), False),  # an Update minutes later is not the Alert again
        (_k(drill=True), False),
        (_k(office="凤凰县气象台"), False),
        (_k(event="大风"), False),
    ],
)
def test_same_warning_is_strict(other: DedupKey, same: bool) -> None:
    assert same_warning(_k(), other) is same


def test_area_union_of_a_later_copy() -> None:
    assert uncovered(["433122"], ("433122101", "433122")) == ()
    assert uncovered(["433122101"], ("433122", "433122101")) == ("433122",)
    alert = cap.parse(cap_xml("x_1", T, geocodes=("433122101000",)))
    merged = with_area(alert, ("433122", "433123"))
    assert merged.geocodes == ("433122101", "433122", "433123")
    assert merged.identifier == alert.identifier and merged.sent == alert.sent


# -- check lists -----------------------------------------------------------------------------


def test_nmc_list_read_and_deduplicated_across_its_two_lists() -> None:
    items, problems = read_nmc((DATA / "nmc" / "findAlarm.json").read_bytes(), "nmc")
    assert problems == []
    assert [i.ref for i in items] == [
        "43312241600000_20250614081500",
        "13060041600000_20250614073642",
        "43312341600000_20250614080000",
        "43000041600000_20250614060000",
    ]
    luxi = items[0]
    assert (luxi.area, luxi.office, luxi.event, luxi.severity) == (
        "433122",
        "泸溪县气象台",
        "暴雨",
        "Severe",
    )
    assert luxi.issued == T


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>busy</html>", "not a JSON warning list"),
        (b'{"code": 500, "msg": "error"}', "answered code 500"),
        (b'{"code": 0, "data": {"page": {}}}', "no `data.page.list`"),
        (b'{"code": 0}', "no `data`"),
    ],
)
def test_nmc_garbage_is_one_line(body: bytes, message: str) -> None:
    with pytest.raises(CapError, match=message):
        read_nmc(body, "nmc")


def test_nmc_entries_without_an_id_or_title_are_problems_not_crashes() -> None:
    body = b'{"code":0,"data":{"page":{"list":[{"x":1},"s",{"title":"t","issuetime":"bad"}]}}}'
    items, problems = read_nmc(body, "nmc")
    assert [i.ref for i in items] == ["t"] and items[0].issued is None and items[0].area is None
    assert problems == ["entry 0: neither alertid nor title", "entry 1: not an object"]


def _item(**kw: Any) -> CheckItem:
    found = item_from(
        identifier="43312241600000_20250614081500",
        title="泸溪县气象台发布暴雨橙色预警[Ⅱ级/严重]",
        issued=T,
    )
    assert found is not None
    return CheckItem(**({f: getattr(found, f) for f in found.__slots__} | kw))


@pytest.mark.parametrize(
    ("message", "found"),
    [
        (Delivered("43312241600000_20250614081500", T, "Severe", None, None), True),
        (Delivered("202506140815105837988676", T + 2 * M, "Severe", "泸溪县气象台", "暴雨"), True),
        (Delivered("q1", T + 2 * M, None, "泸溪县气象台", "暴雨"), True),  # severity unknown
        (Delivered("q1", T + 2 * M, "Moderate", "泸溪县气象台", "暴雨"), False),
        (Delivered("q1", T + 6 * M, "Severe", "泸溪县气象台", "暴雨"), False),
        (Delivered("q1", T, "Severe", "泸溪县气象台", "大风"), False),
        (Delivered("q1", T, "Severe", None, "暴雨"), False),
    ],
)
def test_delivered_by_identifier_or_by_a_copy(message: Delivered, found: bool) -> None:
    assert delivered(_item(), [message]) is found


# -- the watch -------------------------------------------------------------------------------


def report(*, answered: bool = True, error: str | None = None) -> PollReport:
    return PollReport("x", 0, 0, 0, 0, error, answered=answered)


def watch() -> Watch:
    feeds = [
        Watched("cma", "dispatch", 1, timedelta(minutes=15)),
        Watched("folder", "dispatch", 3, None),
        Watched("nmc", "check", 2, None, timedelta(minutes=10)),
    ]
    return Watch(feeds, started=T)


def test_missing_after_grace_from_the_later_of_issue_and_first_sight() -> None:
    w = watch()
    late = _item(issued=T - 60 * M)  # issued an hour before the list first named it
    w.checked("nmc", [late], T)
    assert w.alarms(T + 9 * M, []) == {}
    fired = w.alarms(T + 10 * M, [])
    assert list(fired) == [f"missing:{late.ref}"] and fired[f"missing:{late.ref}"].since == T
    assert w.alarms(T + 10 * M, [late.ref]) == {}  # delivered: nothing
    w.checked("nmc", [late], T + 20 * M)  # still listed: first sight is kept
    assert f"missing:{late.ref}" in w.alarms(T + 20 * M, [])


def test_missing_is_over_only_with_proof() -> None:
    w = watch()
    key = f"missing:{_item().ref}"
    assert w.over(T, [key], []) == set()  # never read a list: no proof either way
    w.checked("nmc", [_item()], T)
    assert w.over(T, [key], []) == set()
    assert w.over(T, [key], [_item().ref]) == {key}  # delivered
    w.checked("nmc", [], T + M)
    assert w.over(T + M, [key], []) == {key}  # the list no longer names it


def test_stale_counts_from_start_and_needs_an_answer_to_end() -> None:
    w = watch()
    assert "stale:cma" not in w.alarms(T + 14 * M, [])
    assert "stale:cma" in w.alarms(T + 15 * M, [])
    assert "stale:folder" not in w.alarms(T + 600 * M, [])  # stale_after off
    assert "stale:nmc" not in w.alarms(T + 600 * M, [])  # a check list is never "stale"
    assert w.over(T + 15 * M, ["stale:cma"], []) == set()
    w.polled("cma", report(answered=False, error="HTTP 503"), T + 16 * M)
    assert (
        "stale:cma" in w.alarms(T + 16 * M, []) and w.over(T + 16 * M, ["stale:cma"], []) == set()
    )
    w.polled("cma", report(error="one bad document"), T + 17 * M)  # the index answered
    assert "stale:cma" not in w.alarms(T + 17 * M, [])
    assert w.over(T + 17 * M, ["stale:cma"], []) == {"stale:cma"}
    assert w.over(T, ["stale:gone"], []) == {"stale:gone"}  # no longer configured


def test_health_is_plain_data_most_trusted_first() -> None:
    w = watch()
    w.polled("cma", report(error="x"), T)
    health = w.health(T + 20 * M)
    assert [h.name for h in health] == ["cma", "nmc", "folder"]
    cma = health[0]
    assert (cma.last_answer_at, cma.last_ok_at, cma.last_error) == (T, None, "x")
    assert cma.consecutive_failures == 1 and cma.stale is True


# -- config ----------------------------------------------------------------------------------


def _config(tmp: Path, body: str) -> Path:
    path = tmp / "warnd.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_the_commented_examples_of_the_bundled_config_load(tmp_path: Path) -> None:
    """Uncommenting config/warnd.toml's real-source blocks gives a valid config."""
    text = (Path(__file__).parents[1] / "config" / "warnd.toml").read_text(encoding="utf-8")
    start = text.index('# [[feeds]]\n# name = "cma"')
    toml_line = re.compile(r"# (\[\[?[a-z_]+\]\]?|[a-z_]+ = .*|  \{ .*\},?|\])$")
    lines = [m.group(1) for m in map(toml_line.match, text[start:].splitlines()) if m]
    extra = "\n".join(lines)
    assert load_config(_config(tmp_path, text)).feeds[0].name == "incoming"  # as shipped: offline
    cfg = load_config(_config(tmp_path, text + "\n" + extra))
    names = [f.name for f in cfg.feeds]
    assert names == ["incoming", "cma", "qweather", "nmc-check"]
    cma, qw, nmc = cfg.feeds[1:]
    assert (cma.type, cma.priority, cma.stale_after) == ("http", 1, timedelta(minutes=15))
    assert qw.type == "qweather" and qw.auth is not None and qw.auth.kind == "jwt"
    assert [p.code for p in qw.points] == ["433122", "433122101"]
    assert qw.auth.key_file is not None and qw.auth.key_file.name == "qweather-ed25519"
    assert (nmc.role, nmc.grace, nmc.stale_after) == ("check", timedelta(minutes=10), None)
    assert cfg.feed_alarms is not None and cfg.feed_alarms.channel == "outbox"


@pytest.mark.parametrize(
    ("block", "field", "message"),
    [
        (
            'type = "qweather"\nhost = "https://q.invalid"\nkid = "K"\nproject = "P"\n'
            'key_file = "k.pem"',
            "feeds[0].points",
            "needs points",
        ),
        (
            'type = "qweather"\nhost = "https://q.invalid"\nkid = "K"\nproject = "P"\n'
            'key_file = "k.pem"\npoints = [{ code = "433100", lat = 28.0, lon = 110.0 }]',
            "feeds[0].points[0].code",
            "county/township/village",
        ),
        (
            'type = "qweather"\nhost = "https://q.invalid"\nkid = "K"\nproject = "P"\n'
            'key_file = "k.pem"\npoints = [{ code = "433122", lat = 98.0, lon = 110.0 }]',
            "feeds[0].points[0].lat",
            "±90",
        ),
        (
            'type = "qweather"\nhost = "https://q.invalid"\nproject = "P"\nkey_file = "k.pem"\n'
            'points = [{ code = "433122", lat = 28.0, lon = 110.0 }]',
            "feeds[0].kid",
            "missing",
        ),
        (
            'type = "qweather"\nhost = "https://q.invalid"\nauth = "jwt"\nkid = "K"\n'
            'project = "P"\npoints = [{ code = "433122", lat = 28.0, lon = 110.0 }]',
            "feeds[0].auth",
            "exactly one of",
        ),
        (
            'type = "nmc"\nurl = "https://n.invalid/rest/findAlarm"\nrole = "dispatch"',
            "feeds[0].role",
            "must be check",
        ),
        ('path = "x"\nrole = "check"', "feeds[0].role", "only http, nmc"),
        ('url = "https://x.invalid/rss.xml"\nareas = ["43x"]', "feeds[0].areas[0]", "division"),
        ('url = "https://x.invalid/rss.xml"\nprefilter = "yes"', "feeds[0].prefilter", "true or"),
        ('url = "https://x.invalid/rss.xml"\nkid = "K"', "feeds[0].kid", "unknown key"),
        ('type = "ftp"\nurl = "https://x.invalid/"', "feeds[0].type", "must be one of"),
    ],
)
def test_feed_config_errors_name_the_key(
    tmp_path: Path, block: str, field: str, message: str
) -> None:
    path = _config(tmp_path, f'[[feeds]]\nname = "s"\n{block}\n')
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert err.value.field == field and err.value.line is not None


def test_secrets_never_in_the_config(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        '[[feeds]]\nname = "q"\ntype = "qweather"\nhost = "https://q.invalid"\nauth = "api_key"\n'
        'api_key = "abc"\npoints = [{ code = "433122", lat = 28.0, lon = 110.0 }]\n',
    )
    with pytest.raises(ConfigError, match="密钥不能写在配置文件里"):
        load_config(path)


def test_feed_alarms_need_a_configured_channel(tmp_path: Path) -> None:
    body = '[channels.log]\ntype = "log"\n[feed_alarms]\nchannel = "duty"\n'
    with pytest.raises(ConfigError, match="no such channel") as err:
        load_config(_config(tmp_path, body))
    assert err.value.field == "feed_alarms.channel"
    body = '[channels.log]\ntype = "log"\n[feed_alarms]\nchannel = "log"\nto = ["12"]\n'
    with pytest.raises(ConfigError, match="not a phone number"):
        load_config(_config(tmp_path, body))
    ok = load_config(_config(tmp_path, body.replace('["12"]', '["13800000000"]')))
    assert ok.feed_alarms is not None and ok.feed_alarms.to == ("+8613800000000",)


def test_defaults_priority_in_file_order_and_stale_after(tmp_path: Path) -> None:
    body = (
        '[[feeds]]\nname = "a"\npath = "x"\n'
        '[[feeds]]\nname = "b"\nurl = "https://x.invalid/"\ninterval = "5m"\nstale_after = "off"\n'
        '[[feeds]]\nname = "c"\nurl = "https://x.invalid/"\ninterval = "5m"\n'
    )
    a, b, c = load_config(_config(tmp_path, body)).feeds
    assert (a.priority, b.priority, c.priority) == (100, 101, 102)
    assert a.stale_after == timedelta(minutes=10) and b.stale_after is None
    assert c.stale_after == timedelta(minutes=50)  # ten polls
    assert (a.type, c.type, c.role, c.prefilter) == ("folder", "http", "dispatch", True)
