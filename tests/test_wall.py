"""The duty room's status wall (``GET /wall``) on a real daemon over a store filled by the engine.

The scenario (tests/scenario.py: the real engine on a ManualClock, SQLite and PostgreSQL) is the
one of tests/test_cli_status.py with real place and person names, plus a yellow warning whose
township stage is still to come: 泸溪县, 2 townships × 2 villages, every post with an A and a B,
the county duty office on a landline.

- real, orange, onset T0+8h (16:00): at 15:50 every stage has fired; 铁山村 was reached through
  its superior, 新寨村 and 岩门村 are on the not-woken list (岩门村's A is refused by the
  gateway), the duty office is being redialled;
- an Exercise (drill) for 浦市镇 from T0+6h, everything reached;
- real, yellow, for 武溪镇 from 15:30, onset 19:00: the county called at arrival, the township
  stage due at 16:00 (in ten minutes).

A ``Daemon`` (no scheduler, ManualClock at 15:50, port 0) serves the copy of the store; its wall
is read by headless Chromium over the DevTools protocol (tests/chromium.py), and every figure
the page shows is compared with ``warnd status --json`` / ``warnd unreached --json`` /
``warnd report --format json`` run on the same store at the same clock — before and after
answers arrive through the daemon (a signed IVR key press, an officer's record). Screenshots
at 1920×1080 and 1280×720 go to ``$WARND_WALL_SCREENSHOTS`` when it is set (docs/operations.md
shows them), else to the test's temporary folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog.testing
from aiohttp import web
from chromium import Page
from click.testing import CliRunner
from conftest import BACKENDS, PG_URL, drop_pg_database, fresh_pg_database
from factory import cap_xml
from scenario import T0, Scenario
from test_cli_status import copy_pg_database

from warnd.cli import main
from warnd.clock import ManualClock
from warnd.daemon import Daemon
from warnd.errors import ConfigError
from warnd.policy import load_config
from warnd.signature import sign
from warnd.wall.data import feed_health, shown_phone

H, M = timedelta(hours=1), timedelta(minutes=1)
REAL = "43312241600000_20250614080000"
DRILL = "43312241600000_20250614140000"
YELLOW = "43312241600000_20250614153000"
AT = T0 + 7 * H + 50 * M  # 15:50 in Asia/Shanghai
TOKEN = "wall-token-for-tests-0123456789"
SECRET = b"hook-secret-for-wall-tests"
RESPONDERS: dict[str, timedelta | None] = {
    "c-433122-a": 2 * M,
    "c-433122100-a": 7 * M,
    "c-433122101-b": 4 * M,
    "c-433122100200-a": 3 * M,
}
PLACES = {
    "433122": ("泸溪县", "county", "张建国", "李卫东"),
    "433122100": ("浦市镇", "township", "王志强", "刘洋"),
    "433122100200": ("马王溪村", "village", "赵大勇", "孙丽"),
    "433122100201": ("铁山村", "village", "周海", "吴敏"),
    "433122101": ("武溪镇", "township", "陈明", "杨帆"),
    "433122101200": ("新寨村", "village", "郑刚", "冯婷"),
    "433122101201": ("岩门村", "village", "何伟", "罗芳"),
}


def room_rows() -> list[list[str]]:
    """泸溪县 with names: an A and a B per post, the duty office on a landline."""
    rows, n = [], 0
    for code, (name, level, a, b) in PLACES.items():
        for rank, who in (("A", a), ("B", b)):
            n += 1
            cid = f"c-{code}-{rank.lower()}"
            rows.append([cid, code, name, level, rank, "防汛责任人", who, f"1381{n:07d}", ""])
        if level == "county":
            rows.append([f"c-{code}-duty", code, name, level, "duty", "值班室", "县应急局值班室",
                         "0743-6522110", ""])  # fmt: skip
    return rows


async def fill(sc: Scenario) -> None:
    async with sc:
        await sc.arrive(cap_xml(REAL, T0, onset=T0 + 8 * H))
        await sc.run_until(T0 + 6 * H)
        drill = cap_xml(DRILL, T0 + 6 * H, onset=T0 + 7 * H, status="Exercise",
                        geocodes=("433122100000",), headline="浦市镇暴雨预警演练")  # fmt: skip
        await sc.arrive(drill)
        await sc.run_until(T0 + 7 * H + 30 * M)
        yellow = cap_xml(YELLOW, T0 + 7 * H + 30 * M, onset=T0 + 11 * H, severity="Moderate",
                         geocodes=("433122101000",), event="雷电",
                         headline="泸溪县气象台发布雷电黄色预警信号")  # fmt: skip
        await sc.arrive(yellow)
        await sc.run_until(AT)


@pytest.fixture(scope="module", params=BACKENDS)
def master(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The scenario run once per backend; each test serves a copy of it."""
    tmp = tmp_path_factory.mktemp("wall")
    url = None
    if request.param == "postgresql":
        assert PG_URL is not None
        url = asyncio.run(fresh_pg_database(PG_URL))
    sc = Scenario(tmp, url, rows=room_rows(), responders=RESPONDERS, failing={"c-433122101201-a"})
    asyncio.run(fill(sc))
    yield sc.url, sc.contacts
    if url is not None:
        assert PG_URL is not None
        asyncio.run(drop_pg_database(PG_URL, url))


@pytest.fixture
async def copy(master: tuple[str, Path], tmp_path: Path) -> AsyncIterator[str]:
    url, _ = master
    if url.startswith("sqlite:///"):
        shutil.copyfile(url[len("sqlite:///") :], tmp_path / "copy.db")
        yield f"sqlite:///{tmp_path / 'copy.db'}"
        return
    assert PG_URL is not None
    dup = await copy_pg_database(PG_URL, url)
    try:
        yield dup
    finally:
        await drop_pg_database(PG_URL, dup)


def write_config(
    tmp: Path,
    url: str,
    contacts: Path,
    *,
    wall: str | None = None,
    feeds: str = "",
    timezone: str = "Asia/Shanghai",
) -> Path:
    """A daemon config on ``url``; ``wall``: the body of the ``[wall]`` table (None: no wall)."""
    (tmp / "hook-secret").write_bytes(SECRET)
    (tmp / "wall-token").write_text(TOKEN + "\n", encoding="utf-8")
    (tmp / "incoming").mkdir(exist_ok=True)
    text = f"""timezone = "{timezone}"
[store]
url = "{url}"
[contacts]
path = "{contacts}"
[listen]
host = "127.0.0.1"
port = 0
[hooks]
secret_file = "{tmp / "hook-secret"}"
[[feeds]]
name = "incoming"
path = "{tmp / "incoming"}"
{feeds}
[channels.outbox]
type = "log"
path = "{tmp / "outbox.jsonl"}"
"""
    if wall is not None:
        text += f'[wall]\nsecret_file = "{tmp / "wall-token"}"\n{wall}\n'
    path = tmp / "warnd.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Room:
    """A daemon serving the wall over a store, and the duty desk's commands on the same store."""

    def __init__(
        self, tmp: Path, url: str, contacts: Path, *, at: datetime = AT, **config: Any
    ) -> None:
        self.tmp = tmp
        self.config_path = write_config(tmp, url, contacts, **config)
        self.clock = ManualClock(at)
        self.clock_file = tmp / "clock"
        self.clock_file.write_text(at.isoformat(), encoding="utf-8")

    async def __aenter__(self) -> Room:
        self.daemon = Daemon(load_config(self.config_path), clock=self.clock, scheduler=False)
        self.daemon.port = 0
        await self.daemon.start()
        self.base = f"http://127.0.0.1:{self.daemon.bound_port}"
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()
        if self.daemon.store is not None:  # not stopped by the test
            await self.daemon.stop()

    async def cli(self, *args: str) -> Any:
        """A duty-desk command with ``--json`` on the same store and clock (in a thread: the
        commands run their own event loop)."""
        extra = ["--config", str(self.config_path)]
        if args[0] in ("status", "unreached"):
            extra += ["--json", "--clock-file", str(self.clock_file)]
        res = await asyncio.to_thread(CliRunner().invoke, main, [*args, *extra])
        assert res.exit_code == 0, res.output
        return json.loads(res.output)

    async def data(self, token: str | None = TOKEN) -> tuple[int, Any]:
        query = {} if token is None else {"token": token}
        async with self.http.get(self.base + "/wall/data", params=query) as resp:
            return resp.status, await resp.json()

    async def fresh(self, seq: int, timeout: float = 10.0) -> Any:
        """``/wall/data`` once the wall has computed its figures again (its cache lives one
        second of real time: wait for the next ``seq``, not for a fixed time)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status, data = await self.data()
            assert status == 200, data
            if data["seq"] > seq:
                return data
            assert asyncio.get_running_loop().time() < deadline, "the wall's figures never changed"
            await asyncio.sleep(0.1)

    async def ivr(self, contact: str) -> None:
        """The contact presses 1 on their open call's last attempt (a signed hook)."""
        assert self.daemon.store is not None
        from sqlalchemy import text

        async with self.daemon.store.read() as s:
            row = (
                await s.execute(
                    text(
                        "SELECT o.id FROM outbox o JOIN call c ON c.id = o.call_id"
                        " WHERE c.contact_id = :c AND c.state = 'active' AND o.purpose = 'call'"
                        " ORDER BY o.attempt DESC"
                    ),
                    {"c": contact},
                )
            ).first()
        assert row is not None, f"{contact} has no open call"
        raw = json.dumps({"id": row[0], "digits": "1"}).encode()
        stamp = int(self.clock.now().timestamp())
        headers = {"X-Warnd-Timestamp": str(stamp), "X-Warnd-Signature": sign(SECRET, stamp, raw)}
        async with self.http.post(self.base + "/hooks/ivr", data=raw, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["ok"] is True
        await self.daemon.settle()


def level(w: dict[str, Any], name: str) -> dict[str, Any]:
    return next(lv for lv in w["levels"] if lv["level"] == name)


COUNTS = ("divisions", "reached", "escalated", "not_woken", "overdue", "persons_notified",
          "persons_acknowledged", "redialling", "open_calls")  # fmt: skip


async def expected(room: Room) -> dict[str, Any]:
    """What the duty desk's commands say on the same store, by warning key and level."""
    status = await room.cli("status")
    unreached = await room.cli("unreached")
    out: dict[str, Any] = {"status": status, "unreached": unreached, "levels": {}}
    for w in status["warnings"]:
        detail = await room.cli("status", w["key"])
        report = (await room.cli("report", w["key"], "--format", "json"))["warnings"][0]
        for lv in w["levels"]:
            divs = [d for d in detail["divisions"] if d["level"] == lv["level"]]
            calling = sum(
                1
                for d in divs
                if d["reached_at"] is None
                and not d["stopped"]
                and not (d["not_woken_at"] and d["resolved_at"] is None)
            )
            rep = next(x for x in report["levels"] if x["level"] == lv["level"])
            out["levels"][(w["key"], lv["level"])] = {
                **{k: lv[k] for k in COUNTS},
                "reached_in_time": rep["reached_in_time"],
                "reached_late": lv["reached"] - rep["reached_in_time"],
                "calling": calling,
            }
    return out


def check_data(data: dict[str, Any], want: dict[str, Any]) -> None:
    """``/wall/data`` against the commands: the same warnings, numbers and not-woken list."""
    status, unreached = want["status"], want["unreached"]
    assert data["now"] == status["now"] == "2025-06-14T15:50:00+08:00"
    assert {w["key"] for w in data["warnings"]} == {w["key"] for w in status["warnings"]}
    by_key = {w["key"]: w for w in status["warnings"]}
    for w in data["warnings"]:
        same = ("severity", "drill", "state", "onset", "time_to_onset_s", "next_stage", "totals")
        for k in same:
            if k == "next_stage" and w[k] is not None:
                assert {x: w[k][x] for x in ("level", "due", "in_s")} == by_key[w["key"]][k]
            else:
                assert w[k] == by_key[w["key"]][k], (w["key"], k)
        for lv in w["levels"]:
            want_lv = want["levels"][(w["key"], lv["level"])]
            assert {k: lv[k] for k in want_lv} == want_lv, (w["key"], lv["level"])
            assert lv["reached_in_time"] + lv["reached_late"] == lv["reached"]
    for side in ("real", "drill"):
        assert {k: data["totals"][side][k] for k in COUNTS} == status["totals"][side]
    nw = data["not_woken"]
    assert nw["total"] == len(unreached["entries"])
    assert (nw["real"], nw["drill"]) == (unreached["counts"]["real"], unreached["counts"]["drill"])
    for got, exp in zip(nw["entries"], unreached["entries"], strict=True):
        assert (got["warning"], got["division"], got["since"]) == (
            exp["warning"],
            exp["division"],
            exp["since"],
        )
        assert [(c["rung"], c["name"], c["phone"]) for c in got["to_call"]] == [
            (c["rung"], c["name"], shown_phone(c["phone"], data["masked"])) for c in exp["to_call"]
        ]


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


# ---- the page in headless Chromium --------------------------------------------------------

#: everything the page shows, read from its DOM: numbers by their data-n key, and whether each
#: card, row and entry is inside the viewport
READ_DOM = """(() => {
  const de = document.documentElement;
  const inView = (e) => {
    const r = e.getBoundingClientRect();
    return !e.closest('[hidden]') && r.width > 0 && r.height > 0 && r.top >= -1
      && r.left >= -1 && r.bottom <= innerHeight + 1 && r.right <= innerWidth + 1;
  };
  const nums = (root) => Object.fromEntries(
    [...root.querySelectorAll('[data-n]')].map(e => [e.dataset.n, e.textContent]));
  let minFont = 1e9;
  for (const e of document.querySelectorAll('body *')) {
    const own = [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (own && inView(e)) minFont = Math.min(minFont, parseFloat(getComputedStyle(e).fontSize));
  }
  return {
    seq: Number(document.body.dataset.seq),
    navigations: performance.getEntriesByType('navigation').length,
    marker: window.__marker || null,
    size: [innerWidth, innerHeight],
    scroll: [de.scrollWidth, de.scrollHeight, document.body.scrollWidth,
             document.body.scrollHeight],
    minFont,
    time: document.getElementById('time').textContent,
    summary: nums(document.getElementById('summary')),
    warnings: [...document.querySelectorAll('#warnings .warning')].map(c => ({
      key: c.dataset.key, drill: c.classList.contains('drill'), hidden: c.hidden,
      inView: inView(c), text: c.innerText, colour: c.dataset.colour,
      fits: [...c.querySelectorAll('.body, .head, .times, table')].every(
        e => e.scrollWidth <= e.clientWidth + 1),
      band: getComputedStyle(c.querySelector('.band')).backgroundColor,
      stage: (c.querySelector('.cd.stage') || {}).textContent || null,
      levels: [...c.querySelectorAll('tr[data-level]')].map(tr => ({
        level: tr.dataset.level, cells: nums(tr), inView: inView(tr)})),
    })),
    more: [...document.querySelectorAll('.more')].filter(e => !e.hidden).map(e => e.textContent),
    notWoken: {
      count: document.getElementById('nw-count').dataset.n,
      entries: [...document.querySelectorAll('#nw-list li.nw')].map(li => ({
        warning: li.dataset.warning, division: li.dataset.division, hidden: li.hidden,
        inView: inView(li), text: li.innerText,
        calls: [...li.querySelectorAll('.tc')].map(t => ({
          rung: t.dataset.rung, phone: t.querySelector('.phone').textContent,
          who: t.querySelector('.who').textContent}))})),
    },
    banners: [...document.querySelectorAll('#banners .banner')].map(b => b.textContent),
    text: document.body.innerText,
  };
})()"""


def check_dom(dom: dict[str, Any], want: dict[str, Any], size: tuple[int, int]) -> None:
    """What the page shows equals what the commands say; it fits the screen, legibly."""
    assert dom["size"] == list(size)
    assert max(dom["scroll"][0], dom["scroll"][2]) <= size[0], dom["scroll"]  # no page scroll
    assert max(dom["scroll"][1], dom["scroll"][3]) <= size[1], dom["scroll"]
    assert dom["minFont"] >= size[1] / 55, dom["minFont"]  # 13 px at 720, 19.6 px at 1080
    assert dom["time"].startswith("15:5"), dom["time"]  # the server's clock, Asia/Shanghai
    status, unreached = want["status"], want["unreached"]
    real = status["totals"]["real"]
    assert dom["summary"]["real.warnings"] == str(sum(not w["drill"] for w in status["warnings"]))
    for k in ("reached", "divisions", "not_woken", "overdue"):
        assert dom["summary"][f"real.{k}"] == str(real[k]), k
    cards = dom["warnings"]
    assert {c["key"] for c in cards} == {w["key"] for w in status["warnings"]}
    shown = [c for c in cards if not c["hidden"]]
    assert shown and all(c["inView"] and c["fits"] for c in shown)
    if len(shown) < len(cards):
        assert f"另有 {len(cards) - len(shown)} 个预警未显示" in " ".join(dom["more"])
    for c in shown:
        assert ("【演练】" in c["text"]) == c["drill"] == (c["key"] == DRILL)
        for lv in c["levels"]:
            assert lv["inView"]
            exp = want["levels"][(c["key"], lv["level"])]
            assert lv["cells"] == {k: str(exp[k]) for k in lv["cells"]}, (c["key"], lv["level"])
            assert set(lv["cells"]) == {"divisions", "reached_in_time", "reached_late",
                "calling", "escalated", "not_woken", "overdue", "persons_acknowledged",
                "persons_notified"}  # fmt: skip
    nw = dom["notWoken"]
    assert nw["count"] == str(len(unreached["entries"]))
    entries = [e for e in nw["entries"] if not e["hidden"]]
    assert all(e["inView"] for e in entries)
    for got, exp in zip(entries, unreached["entries"], strict=False):
        assert (got["warning"], got["division"]) == (exp["warning"], exp["division"])
        assert exp["division_name"] in got["text"]
        assert got["calls"] == [
            {"rung": x["rung"], "phone": shown_phone(x["phone"]), "who": x["name"]}
            for x in exp["to_call"]
        ]
    if len(entries) < len(unreached["entries"]):
        assert f"另有 {len(unreached['entries']) - len(entries)} 条" in " ".join(dom["more"])


def stage_left(text: str) -> timedelta:
    h, m, s = (int(x) for x in text.split(":"))
    return timedelta(hours=h, minutes=m, seconds=s)


def shots_dir(tmp: Path) -> Path:
    return Path(os.environ.get("WARND_WALL_SCREENSHOTS") or tmp / "shots")


async def test_wall_in_chromium_shows_what_status_says_before_and_after_answers(
    copy: str, master: tuple[str, Path], tmp_path: Path
) -> None:
    shots = shots_dir(tmp_path)
    wall = 'refresh = "1s"\ntitle = "泸溪县防汛抗旱指挥部办公室"'
    async with Room(tmp_path, copy, master[1], wall=wall) as room:
        page = await Page(tmp_path / "profile").start()
        try:
            await page.size(1920, 1080)
            await page.goto(f"{room.base}/wall?token={TOKEN}")
            await page.wait_for("document.body.dataset.loaded === '1'")
            assert await page.evaluate("location.search") == ""  # the token left the address
            before = await expected(room)
            dom = await page.evaluate(READ_DOM)
            check_dom(dom, before, (1920, 1080))
            assert [c["key"] for c in dom["warnings"]] == [REAL, YELLOW, DRILL]
            assert all(not c["hidden"] for c in dom["warnings"])  # all three fit at 1080
            colours = {c["key"]: (c["colour"], c["band"]) for c in dom["warnings"]}
            assert colours[REAL] == ("orange", "rgb(255, 122, 0)")
            assert colours[YELLOW] == ("yellow", "rgb(245, 204, 0)")
            yellow = dom["warnings"][1]
            assert timedelta(minutes=9) < stage_left(yellow["stage"]) <= timedelta(minutes=10)
            assert "下一阶段 乡镇 16:00" in yellow["text"]
            assert "泸溪县防汛抗旱指挥部办公室" in dom["text"] and not dom["banners"]
            assert "0743 652 2110" in dom["text"] and "郑刚" in dom["text"]
            await page.screenshot(shots / "wall-1920x1080.png")

            await page.size(1280, 720)
            await page.wait_for("innerWidth === 1280 && innerHeight === 720")
            dom = await page.evaluate(READ_DOM)
            check_dom(dom, before, (1280, 720))
            await page.screenshot(shots / "wall-1280x720.png")

            # answers arrive while the page is open: an officer resolves 新寨村, the duty
            # office presses 1 for 岩门村; the page follows without a reload
            await page.evaluate("window.__marker = 'same page'")
            ack = await room.daemon.engine.ack_by_officer(  # type: ignore[union-attr]
                warning=REAL, contact_id=None, division="433122101200", by="张三", note="电话"
            )
            assert ack.ok, ack.reason
            await room.ivr("c-433122-duty")
            _, data = await room.data()  # computed before or after the answers
            await page.wait_for(f"Number(document.body.dataset.seq) > {data['seq']}")
            after = await expected(room)
            assert after["status"]["totals"] != before["status"]["totals"]
            dom = await page.evaluate(READ_DOM)
            assert (dom["marker"], dom["navigations"]) == ("same page", 1)
            check_dom(dom, after, (1280, 720))
            real = next(c for c in dom["warnings"] if c["key"] == REAL)
            village = next(lv["cells"] for lv in real["levels"] if lv["level"] == "village")
            assert (village["reached_in_time"], village["not_woken"]) == ("4", "1")
            assert [e["division"] for e in dom["notWoken"]["entries"]] == ["433122101201"]
            assert "值班室已确认，待处置" in dom["notWoken"]["entries"][0]["text"]
            await page.screenshot(tmp_path / "wall-1280x720-after.png")
        finally:
            await page.close()


# ---- a busy room: more than one screen holds, masked numbers, a failing feed, a lost link --


def busy_rows() -> list[list[str]]:
    """泸溪县 with 3 townships × 5 villages, named people, nobody of whom answers."""
    surnames, given = (
        "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗",
        "伟芳敏静丽强磊军洋勇艳杰涛明超秀霞平刚桂",
    )
    rows, n = [], 0

    def add(code: str, name: str, level: str) -> None:
        nonlocal n
        for rank in ("A", "B"):
            n += 1
            who = surnames[n % len(surnames)] + given[(n * 7) % len(given)]
            rows.append([f"c-{code}-{rank.lower()}", code, name, level, rank, "防汛责任人", who,
                         f"1391{n:07d}", ""])  # fmt: skip

    add("433122", "泸溪县", "county")
    rows.append(["c-433122-duty", "433122", "泸溪县", "county", "duty", "值班室",
                 "县应急局值班室", "0743-6522110", ""])  # fmt: skip
    towns = ("浦市镇", "武溪镇", "潭溪镇")
    villages = ("马王溪村", "铁山村", "新寨村", "岩门村", "黄家桥村")
    for ti, town in enumerate(towns):
        tcode = f"433122{100 + ti:03d}"
        add(tcode, town, "township")
        for vi, village in enumerate(villages):
            add(f"{tcode}{200 + vi:03d}", f"{village[:-1]}{ti + 1}村", "village")
    return rows


async def fill_busy(sc: Scenario) -> None:
    """Six warnings over the county an hour apart; nobody answers, so every division goes
    through B and superior to the not-woken list."""
    colours = [
        ("Extreme", "暴雨红色"),
        ("Severe", "暴雨橙色"),
        ("Moderate", "雷电黄色"),
        ("Severe", "地质灾害气象风险橙色"),
        ("Moderate", "大风<script>alert(1)</script>黄色"),  # a hostile headline: text only
        ("Severe", "暴雨橙色"),
    ]
    async with sc:
        for i, (severity, what) in enumerate(colours):
            sent = T0 + i * 20 * M
            drill = i == 5
            await sc.arrive(
                cap_xml(
                    f"43312241600000_2025061408{i:02d}00",
                    sent,
                    onset=T0 + 3 * H + i * 10 * M,
                    severity=severity,
                    status="Exercise" if drill else "Actual",
                    headline=("【演练】" if drill else "") + f"泸溪县气象台发布{what}预警信号",
                )
            )
            await sc.run_until(sent + 20 * M)
        await sc.run_until(T0 + 3 * H)


async def test_wall_in_a_busy_room_cuts_lists_masks_numbers_and_shows_trouble(
    store_url: str, tmp_path: Path
) -> None:
    sc = Scenario(tmp_path / "sc", store_url, rows=busy_rows())
    await fill_busy(sc)
    shots = shots_dir(tmp_path)
    agency = web.AppRunner(web.Application())  # a feed server that has lost the file: 404
    await agency.setup()
    site = web.TCPSite(agency, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    feed = f'[[feeds]]\nname = "cma"\nurl = "http://127.0.0.1:{port}/cap/rss.xml"'
    room = Room(tmp_path, sc.url, sc.contacts, at=T0 + 3 * H, feeds=feed, timezone="Asia/Urumqi",
                wall='mask_phones = true\nrefresh = "1s"')  # fmt: skip
    # the wall shows the daemon's feed health: this feed's first poll fails
    async with room:
        report = await room.daemon.poll_feed(room.daemon.feeds[1])
        assert report.error is not None
        status, data = await room.data()
        assert status == 200
        raw = json.dumps(data, ensure_ascii=False)
        assert len(data["warnings"]) == 6 and data["not_woken"]["total"] > 40
        assert len(data["not_woken"]["entries"]) == 40  # the rest is a count
        for row in busy_rows():  # no full number anywhere in the data, in any form
            digits = row[7].replace("-", "")
            e164 = "+86" + digits.lstrip("0")
            assert digits not in raw and e164 not in raw and shown_phone(e164) not in raw
        assert "0743 *** 2110" in raw and "139 **** " in raw
        assert data["feeds"][1]["name"] == "cma" and data["feeds"][1]["ok"] is False
        unreached = await room.cli("unreached")  # the whole list: the wall shows its head
        assert [data["not_woken"][k] for k in ("real", "drill")] == [
            unreached["counts"]["real"],
            unreached["counts"]["drill"],
        ]
        assert unreached["counts"]["drill"] == 4  # the drill's county and townships, listed last
        head = [(e["warning"], e["division"]) for e in unreached["entries"][:40]]
        assert [(e["warning"], e["division"]) for e in data["not_woken"]["entries"]] == head

        page = await Page(tmp_path / "profile").start()
        try:
            await page.size(1280, 720)
            await page.goto(f"{room.base}/wall?token={TOKEN}")
            await page.wait_for("document.body.dataset.loaded === '1'")
            dom = await page.evaluate(READ_DOM)
            assert max(dom["scroll"][1], dom["scroll"][3]) <= 720  # still one screen
            assert dom["time"].startswith("09:"), dom["time"]  # 03:00 UTC in Asia/Urumqi
            shown = [c for c in dom["warnings"] if not c["hidden"]]
            assert 1 <= len(shown) < 6 and all(c["inView"] and c["fits"] for c in shown)
            assert f"另有 {6 - len(shown)} 个预警未显示" in " ".join(dom["more"])
            assert [c["key"] for c in dom["warnings"]] == [w["key"] for w in data["warnings"]]
            assert dom["warnings"][-1]["drill"]  # drills last, real ones by urgency
            assert dom["warnings"][0]["colour"] == "red"
            entries = [e for e in dom["notWoken"]["entries"] if not e["hidden"]]
            assert 1 <= len(entries) < 40 and all(e["inView"] for e in entries)
            rest = data["not_woken"]["total"] - len(entries)
            assert f"另有 {rest} 条" in " ".join(dom["more"])
            phones = [c["phone"] for e in entries for c in e["calls"]]
            assert phones and all("****" in p or p == "0743 *** 2110" for p in phones)
            assert not any(row[7] in dom["text"] for row in busy_rows())
            assert any("预警来源“cma”异常" in b for b in dom["banners"])
            hostile = "document.querySelector('#warnings')"
            assert await page.evaluate(f"{hostile}.textContent.includes('大风<script>alert(1)')")
            assert await page.evaluate(f"{hostile}.querySelectorAll('script').length") == 0
            await page.screenshot(shots / "wall-1280x720-busy.png")

            await room.daemon.stop()  # the daemon goes away: the page says so, keeps its data
            await page.wait_for("document.body.classList.contains('stale')", timeout=20)
            dom = await page.evaluate(READ_DOM)
            assert any("无法连接 warnd" in b for b in dom["banners"])
            assert len([c for c in dom["warnings"] if not c["hidden"]]) == len(shown)
            await page.screenshot(tmp_path / "wall-1280x720-lost.png")
        finally:
            await page.close()
    await agency.cleanup()


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
