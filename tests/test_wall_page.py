"""The status wall in headless Chromium: what the page shows against the duty desk's commands.

The room (tests/wall_room.py) is served by a real daemon; tests/chromium.py drives Chromium over
the DevTools protocol. Every figure the page shows (read from its DOM by ``data-n`` key) is
compared with ``warnd status --json`` / ``warnd unreached --json`` / ``warnd report --format
json`` run on the same store at the same clock — before and after answers arrive through the
daemon (an officer's record, a signed IVR key press), without a reload. Screenshots at 1920×1080
and 1280×720 go to ``$WARND_WALL_SCREENSHOTS`` when it is set (docs/operations.md shows them),
else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from chromium import Page
from factory import cap_xml
from scenario import T0, Scenario
from wall_room import (
    DRILL,
    REAL,
    TOKEN,
    YELLOW,
    H,
    M,
    Room,
    copy,
    expected,
    master,
)

from warnd.desk.wall.data import shown_phone

__all__ = ["copy", "master"]  # the room's fixtures, used here by name

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
