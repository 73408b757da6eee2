"""The duty room's status wall (``GET /wall``): its figures against the duty desk's commands,
its token, its configuration (the page itself in headless Chromium: tests/test_wall_page.py).

The room (tests/wall_room.py): the real engine on a ManualClock filled a store (SQLite and
PostgreSQL) with an orange warning with two villages on the not-woken list, a yellow warning
whose township stage is ten minutes away and a drill; a real daemon serves its wall.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import structlog.testing
from wall_room import (
    AT,
    DRILL,
    REAL,
    TOKEN,
    YELLOW,
    Room,
    check_data,
    copy,
    expected,
    level,
    master,
)

from warnd.config.policy import load_config
from warnd.core.errors import ConfigError
from warnd.desk.wall.data import feed_health, shown_phone, wall_data
from warnd.edges.daemon import Daemon
from warnd.store import Store
from warnd.store.records import EVENT_INSERT
from warnd.store.tx import Tx

__all__ = ["copy", "master"]  # the room's fixtures, used here by name

# ---- the data -----------------------------------------------------------------------------


async def test_wall_data_is_what_status_says_before_and_after_answers(
    copy: str, master: tuple[str, Path], tmp_path: Path
) -> None:
    async with Room(tmp_path, copy, master[1], wall='refresh = "1s"') as room:
        status, data = await room.data()
        assert status == 200
        before = await expected(room)
        check_data(data, before)
        # urgency: the real warning with people to wake, the yellow one, the drill last
        assert [w["key"] for w in data["warnings"]] == [REAL, YELLOW, DRILL]
        real, yellow = data["warnings"][0], data["warnings"][1]
        assert (real["colour"], real["urgent"], yellow["colour"]) == ("orange", True, "yellow")
        village = level(real, "village")
        assert (village["divisions"], village["reached"], village["not_woken"]) == (4, 2, 2)
        assert (village["reached_in_time"], village["calling"]) == (2, 0)
        assert yellow["next_stage"]["in_s"] == 600 and yellow["next_stage"]["level"] == "township"
        assert level(yellow, "township")["stage_state"] == "pending"
        names = {e["division_name"]: e for e in data["not_woken"]["entries"]}
        assert set(names) == {"新寨村", "岩门村"}
        duty = [c for c in names["新寨村"]["to_call"] if c["rung"] == "duty"]
        assert duty[0]["phone"] == "0743 652 2110" and duty[0]["name"] == "县应急局值班室"
        assert names["新寨村"]["to_call"][0]["name"] == "郑刚"
        assert data["feeds"] == [{"name": "incoming", "ok": True, "problem": None}]

        # answers arrive: an officer records 新寨村 as woken (its entry resolved, its duty call
        # stopped), then the duty office presses 1 on its call for 岩门村 (reached, but the
        # entry stays until an officer resolves it)
        ack = await room.daemon.engine.ack_by_officer(  # type: ignore[union-attr]
            warning=REAL, contact_id=None, division="433122101200", by="张三", note="电话叫醒"
        )
        assert ack.ok, ack.reason
        await room.ivr("c-433122-duty")
        data = await room.fresh(data["seq"])
        after = await expected(room)
        check_data(data, after)
        real = next(w for w in data["warnings"] if w["key"] == REAL)
        village = level(real, "village")
        assert village["reached"] == 4 and village["not_woken"] == 1  # 岩门村 still unresolved
        assert village["reached_late"] == 0 and village["reached_in_time"] == 4
        assert [e["division_name"] for e in data["not_woken"]["entries"]] == ["岩门村"]
        assert data["not_woken"]["entries"][0]["state_zh"] == "值班室已确认，待处置"
        assert data["seq"] > 1


# ---- access, configuration, helpers -------------------------------------------------------


async def test_the_wall_shows_nothing_without_its_token(
    copy: str, master: tuple[str, Path], tmp_path: Path
) -> None:
    async with Room(tmp_path, copy, master[1], wall="") as room:
        with structlog.testing.capture_logs() as logs:
            for path, query in (
                ("/wall", {}),
                ("/wall", {"token": "wrong-token-wrong-token"}),
                ("/wall", {"token": TOKEN[:-1]}),
                ("/wall/data", {}),
                ("/wall/data", {"token": "x"}),
            ):
                async with room.http.get(room.base + path, params=query) as resp:
                    body = await resp.text()
                    assert resp.status == 401, path
                    assert "Set-Cookie" not in resp.headers
                    assert "郑刚" not in body and "1381" not in body and REAL not in body
            room.http.cookie_jar.update_cookies({"warnd_wall": TOKEN})  # the token is no cookie
            async with room.http.get(room.base + "/wall/data") as resp:
                assert resp.status == 401
        refused = [x for x in logs if x["event"] == "wall_refused"]
        assert len(refused) == 1 and refused[0]["refused_so_far"] == 1  # not one line each

        # the token once in the URL: the page, and a cookie for the wall's paths
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP address host
        async with aiohttp.ClientSession(cookie_jar=jar) as browser:
            async with browser.get(room.base + "/wall", params={"token": TOKEN}) as resp:
                assert resp.status == 200
                assert "/wall/wall.js" in await resp.text()
                csp = resp.headers["Content-Security-Policy"]
                assert "default-src 'none'" in csp and "script-src 'self'" in csp
                cookie = resp.cookies["warnd_wall"]
                assert cookie["httponly"] and cookie["samesite"] == "Strict"
                assert cookie["path"] == "/wall" and cookie.value != TOKEN
            async with browser.get(room.base + "/wall/data") as resp:
                assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
                assert (await resp.json())["warnings"]
                # the page's clock: the server's (injected) clock at the answer
                assert resp.headers["X-Warnd-Now"] == str(int(AT.timestamp() * 1000))
        for asset, kind in (("wall.js", "text/javascript"), ("wall.css", "text/css")):
            async with room.http.get(f"{room.base}/wall/{asset}") as resp:
                assert resp.status == 200 and resp.content_type == kind
                assert "1381" not in await resp.text()  # code, no data


async def test_no_wall_table_no_wall(copy: str, master: tuple[str, Path], tmp_path: Path) -> None:
    async with Room(tmp_path, copy, master[1]) as room:
        for path in ("/wall", "/wall/data", "/wall/wall.js"):
            async with room.http.get(room.base + path, params={"token": TOKEN}) as resp:
                assert resp.status == 404, path


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("mask_phones = true", "needs exactly one of secret_file, secret_env"),
        ('secret_file = "F"\nmask_phones = "yes"', "wall.mask_phones: 应为 true 或 false"),
        ('secret_file = "F"\nrefresh = "0s"', "wall.refresh: 至少 1s"),
        ('secret_file = "F"\nrefresh = "2m"', "wall.refresh: 至多 60s"),
        ('secret_file = "F"\ntoken = "abc"', "wall.token: 密钥不能写在配置文件里"),
        (
            'secret_file = "F"\nmask_phone = true',
            "wall.mask_phone: 未知的键 unknown key; did you mean",
        ),
        ('secret_file = "F"\nsecret_env = "X"', "needs exactly one of secret_file, secret_env"),
    ],
)
def test_wall_table_errors_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "warnd.toml"
    path.write_text(f"[wall]\n{table}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value)
    assert str(err.value).startswith(f"{path}:")


def test_wall_token_is_read_when_the_daemon_starts_and_must_be_long(tmp_path: Path) -> None:
    token = tmp_path / "wall-token"
    path = tmp_path / "warnd.toml"
    path.write_text(f'[wall]\nsecret_file = "{token}"\ntitle = "值班室"\n', encoding="utf-8")
    wall = load_config(path).wall  # loading never reads the secret
    assert wall is not None and wall.title == "值班室" and wall.refresh == timedelta(seconds=5)
    with pytest.raises(ConfigError, match="无法读取密钥文件"):
        wall.token()
    token.write_text("short\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"wall\.secret_file: 值班墙口令须为至少 16 个"):
        wall.token()
    token.write_text("a long enough wall token\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="without spaces"):
        wall.token()
    token.write_text("a-long-enough-wall-token\n", encoding="utf-8")
    assert wall.token() == "a-long-enough-wall-token"


def test_numbers_for_the_wall() -> None:
    assert shown_phone("+8613812345678") == "138 1234 5678"
    assert shown_phone("+8613812345678", mask=True) == "138 **** 5678"
    assert shown_phone("+867436522110", mask=True) == "0743 *** 2110"
    assert shown_phone("+12025550123", mask=True) == "+1 ***-***-0123"
    assert shown_phone("not a number") == "not a number"


def test_feed_health_from_the_daemons_health_report() -> None:
    report = {
        "feeds": {
            "incoming": {"last_error": "old", "consecutive_failures": 0},
            "cma": {"last_error": "HTTP 503 " + "x" * 300, "consecutive_failures": 4},
        }
    }
    ok, bad = feed_health(report)
    assert (ok.name, ok.problem) == ("incoming", None)  # an old error, polls fine since
    assert bad.name == "cma" and bad.problem is not None
    assert bad.problem.startswith("连续 4 次获取失败：HTTP 503 x") and len(bad.problem) < 180
    assert feed_health({}) == []
    (stale,) = feed_health({"feeds": {"cma": {"consecutive_failures": 0, "stale": True}}})
    assert stale.problem is not None and "stale_after" in stale.problem


async def _alarm_row(store: Store, type_: str, data: dict[str, str]) -> None:
    """An alarm row as ``warnd.edges.alarms`` writes it: an event without a warning."""

    async def job(tx: Tx) -> None:
        tx.insert("event", EVENT_INSERT, [(None, AT, type_, None, None, None, data, tx.seq())])

    await store.writer.run(job)


async def test_a_warning_no_source_delivered_is_a_banner_on_the_wall(store_url: str) -> None:
    """The feed watch's missing-warning alarm (an ``event`` row without a warning, as
    ``warnd.edges.alarms`` records it) reaches the wall as a feed banner until it is cleared."""
    store = await Store.open(store_url)
    try:
        key = "missing:43312241600000_20250614081500"
        await _alarm_row(
            store,
            "feed_alarm",
            {"kind": "missing", "feed": "nmc", "key": key, "text": "核查列表有预警未收到"},
        )
        data = await wall_data(store, AT, ZoneInfo("Asia/Shanghai"))
        assert data["feeds"] == [{"name": "nmc", "ok": False, "problem": "核查列表有预警未收到"}]
        await _alarm_row(store, "feed_alarm_cleared", {"key": key})
        assert (await wall_data(store, AT, ZoneInfo("Asia/Shanghai")))["feeds"] == []
    finally:
        await store.close()


async def test_a_short_wall_token_stops_the_daemon_with_one_line(
    copy: str, master: tuple[str, Path], tmp_path: Path
) -> None:
    room = Room(tmp_path, copy, master[1], wall="")
    (tmp_path / "wall-token").write_text("too-short\n", encoding="utf-8")
    daemon = Daemon(load_config(room.config_path), clock=room.clock, scheduler=False)
    daemon.port = 0
    try:
        with pytest.raises(ConfigError) as err:
            await daemon.start()
    finally:
        await daemon.stop()
    assert "\n" not in str(err.value) and "wall.secret_file" in str(err.value)
    assert daemon.bound_port is None  # it never listened
