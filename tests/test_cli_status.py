"""``warnd status`` and ``warnd unreached`` on a store filled by a simulated scenario.

The scenario (tests/scenario.py: the real engine on a ManualClock over a real store, SQLite
and PostgreSQL): 泸溪县 with 2 townships × 2 villages, every post with an A and a B.
A real warning, onset T0+8h (stages at +2h, +5h, +7h), and from T0+6h an Exercise for the
township 433122100, onset T0+7h (late: every stage fires on arrival). Who answers:

- county A after 2 min; township 100 A after 7 min (of each of its calls); township 101 B after
  4 min; village 100200 A after 3 min; nobody else;
- village 101201 A's number is refused by the gateway (HTTP 400).

At T0+7h50m: village 100201 was reached through its superior (7:37); villages 101200 and
101201 went through B and superior to the duty office's list at 7:45, and the duty office is
being redialled (attempt 2 at 7:50). No test sleeps: the commands read a clock file.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import BACKENDS, copy_pg_database, drop_pg_database, fresh_pg_database, pg_url
from factory import cap_xml, county_rows
from rich.console import Console
from scenario import T0, Scenario
from sqlalchemy import func, select

from warnd.cli import main, status
from warnd.cli.statusview import Fmt, detail_view
from warnd.desk import views
from warnd.store import Store
from warnd.store.tables import Call, Event

H, M = timedelta(hours=1), timedelta(minutes=1)
REAL = "43312241600000_20250614080000"
DRILL = "43312241600000_20250614140000"
AT = T0 + 7 * H + 50 * M
RESPONDERS: dict[str, timedelta | None] = {
    "c-433122-a": 2 * M,
    "c-433122100-a": 7 * M,
    "c-433122101-b": 4 * M,
    "c-433122100200-a": 3 * M,
}


def e164(n: int) -> str:
    return f"+861381{n:07d}"


class Desk:
    """A copy of the filled store, a config naming it and the clock file the commands read."""

    def __init__(self, tmp: Path, url: str, contacts: Path) -> None:
        self.url = url
        self.config = tmp / "warnd.toml"
        self.config.write_text(
            f'[store]\nurl = "{url}"\n[contacts]\npath = "{contacts}"\n', encoding="utf-8"
        )
        self.clock = tmp / "clock"
        self.set_clock(AT)

    def set_clock(self, when: datetime) -> None:
        self.clock.write_text(when.isoformat(), encoding="utf-8")

    def run(self, *args: str, sleep: Any = None) -> Any:
        """The command; ``sleep``: what ``--watch`` waits with (``status.watch_sleep``)."""
        extra = ["--config", str(self.config)]
        if args and args[0] in ("status", "unreached"):
            extra += ["--clock-file", str(self.clock)]
        return CliRunner().invoke(main, [*args, *extra], obj={"sleep": sleep} if sleep else None)

    def json(self, *args: str) -> Any:
        res = self.run(*args, "--json")
        assert res.exit_code == 0, res.output
        return json.loads(res.output)


async def fill(sc: Scenario) -> None:
    async with sc:
        await sc.arrive(cap_xml(REAL, T0, onset=T0 + 8 * H))
        await sc.run_until(T0 + 6 * H)
        await sc.arrive(
            cap_xml(
                DRILL,
                T0 + 6 * H,
                onset=T0 + 7 * H,
                status="Exercise",
                geocodes=("433122100000",),
                headline="【演练】浦市镇暴雨演练",
            )
        )
        await sc.run_until(AT)


@pytest.fixture(scope="module", params=BACKENDS)
def master(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The scenario run once per backend (about 2 s); tests work on copies of it."""
    tmp = tmp_path_factory.mktemp("desk")
    url = None
    if request.param == "postgresql":
        url = asyncio.run(fresh_pg_database(pg_url()))
    sc = Scenario(
        tmp,
        url,
        rows=county_rows(townships=2, villages=2),
        responders=RESPONDERS,
        failing={"c-433122101201-a"},
    )
    asyncio.run(fill(sc))
    yield sc.url, sc.contacts
    if url is not None:
        asyncio.run(drop_pg_database(pg_url(), url))


@pytest.fixture
def desk(master: tuple[str, Path], tmp_path: Path) -> Iterator[Desk]:
    url, contacts = master
    if url.startswith("sqlite:///"):
        source = Path(url[len("sqlite:///") :])
        shutil.copyfile(source, tmp_path / "copy.db")
        yield Desk(tmp_path, f"sqlite:///{tmp_path / 'copy.db'}", contacts)
        return
    copy = asyncio.run(copy_pg_database(pg_url(), url))
    try:
        yield Desk(tmp_path, copy, contacts)
    finally:
        asyncio.run(drop_pg_database(pg_url(), copy))


def level(w: dict[str, Any], name: str) -> dict[str, Any]:
    return next(lv for lv in w["levels"] if lv["level"] == name)


def test_status_json_counts_every_level_and_keeps_drills_apart(desk: Desk) -> None:
    out = desk.json("status")
    assert out["now"] == "2025-06-14T15:50:00+08:00"
    keys = [w["key"] for w in out["warnings"]]
    assert keys == [DRILL, REAL]  # newest first
    real = out["warnings"][1]
    assert real["drill"] is False and real["state"] == "active"
    assert real["onset"] == "2025-06-14T16:00:00+08:00" and real["time_to_onset_s"] == 600
    assert real["next_stage"] is None  # every stage has fired
    county, town, village = (level(real, n) for n in ("county", "township", "village"))
    assert county["due"] == "2025-06-14T10:00:00+08:00"
    assert county["deadline"] == "2025-06-14T13:00:00+08:00"  # before the townships' T − 3h
    assert town["deadline"] == "2025-06-14T15:00:00+08:00"
    assert village["deadline"] == "2025-06-14T16:00:00+08:00"  # the onset
    assert {k: county[k] for k in ("divisions", "reached", "persons_notified")} == {
        "divisions": 1,
        "reached": 1,
        "persons_notified": 1,
    }
    assert (town["divisions"], town["reached"], town["escalated"]) == (2, 2, 1)
    assert (town["persons_notified"], town["persons_acknowledged"]) == (3, 2)
    assert village == {
        **village,
        "divisions": 4,
        "reached": 2,
        "escalated": 3,  # 100201 → superior; 101200, 101201 → duty
        "not_woken": 2,
        "overdue": 0,  # the deadline (onset 16:00) has not passed
        "persons_notified": 10,
        "persons_acknowledged": 2,  # 100200's A and township 100's A as superior
        "redialling": 1,  # the duty office, attempt 2
        "open_calls": 2,
        "stage_state": "fired",
    }
    assert out["totals"]["real"] == real["totals"]
    drill = out["warnings"][0]
    assert drill["drill"] is True and out["totals"]["drill"] == drill["totals"]
    assert drill["totals"]["divisions"] == 4 and drill["totals"]["reached"] == 4
    assert out["totals"]["real"]["divisions"] == 7  # the drill's 4 are not in it


def test_status_shows_overdue_once_the_deadline_has_passed(desk: Desk) -> None:
    desk.set_clock(T0 + 8 * H + 10 * M)
    real = next(w for w in desk.json("status")["warnings"] if w["key"] == REAL)
    assert level(real, "village")["overdue"] == 2
    assert real["time_to_onset_s"] == -600
    detail = desk.json("status", REAL, "--level", "village")
    overdue = sorted(d["code"] for d in detail["divisions"] if d["overdue"])
    assert overdue == ["433122101200", "433122101201"]


def test_status_warning_lists_every_person_with_phone_attempts_and_answers(desk: Desk) -> None:
    out = desk.json("status", "43312241600000_2025061408")  # a unique prefix
    assert out["warning"]["key"] == REAL
    by_code = {d["code"]: d for d in out["divisions"]}
    assert list(by_code)[:3] == ["433122", "433122100", "433122101"]
    town = by_code["433122101"]
    assert town["reached_by"] == "c-433122101-b" and town["escalations"] == ["backup"]
    a, b = town["persons"]
    assert (a["rank"], a["rung"], a["phone"], a["attempts"], a["state"]) == (
        "A",
        "stage",
        e164(10),
        3,
        "failed",
    )
    assert a["last_attempt_at"] == "2025-06-14T13:10:00+08:00" and a["last_channel"] == "gateway"
    assert (b["rank"], b["state"], b["ack_source"]) == ("B", "acked", "ivr")
    assert b["acknowledged_at"] == "2025-06-14T13:19:00+08:00"
    woken = by_code["433122101200"]
    assert woken["not_woken_at"] == "2025-06-14T15:45:00+08:00"
    assert woken["escalations"] == ["backup", "superior", "duty"]
    assert [(p["rung"], p["phone"]) for p in woken["persons"]] == [
        ("stage", e164(12)),
        ("backup", e164(13)),
        ("superior", e164(10)),
        ("duty", e164(3)),
    ]
    duty = woken["persons"][3]
    assert duty["state"] == "active" and duty["attempts"] == 2
    assert duty["next_attempt_at"] == "2025-06-14T15:55:00+08:00"
    refused = by_code["433122101201"]["persons"][0]
    assert refused["last_delivery"] == "failed" and refused["last_channel"] is None
    assert a["name"] == "镇长1"  # names by default where the contacts are configured
    named = desk.json("status", REAL, "--names", "--level", "township")  # --names still works
    assert [p["name"] for p in named["divisions"][1]["persons"]] == ["镇长1", "副镇长1"]
    unnamed = desk.json("status", REAL, "--no-names", "--level", "township")
    assert [p["name"] for p in unnamed["divisions"][1]["persons"]] == [None, None]


def test_status_filters(desk: Desk) -> None:
    village = desk.json("status", REAL, "--level", "village")
    assert {d["level"] for d in village["divisions"]} == {"village"}
    assert len(village["divisions"]) == 4
    pending = desk.json("status", REAL, "--pending")
    persons = [p for d in pending["divisions"] for p in d["persons"]]
    assert persons and all(p["state"] != "acked" for p in persons)
    assert "433122" not in {d["code"] for d in pending["divisions"]}  # everyone answered there
    assert "433122101" in {d["code"] for d in pending["divisions"]}  # its A never did
    unreached = desk.json("status", REAL, "--unreached")
    assert [d["code"] for d in unreached["divisions"]] == ["433122101200", "433122101201"]


def test_status_terminal_has_chinese_headers_full_numbers_and_red_overdue_rows(
    desk: Desk,
) -> None:
    res = desk.run("status", REAL)
    assert res.exit_code == 0, res.output
    for word in ("区划", "角色", "电话", "最后呼叫", "应答", "升级", "未叫醒", e164(12)[3:]):
        assert word in res.output
    assert e164(12) not in res.output  # the number as dialled, not E.164
    summary = desk.run("status")
    assert "【演练】" in summary.output and "不计入" in summary.output

    async def styled() -> str:
        store = await Store.open(desk.url, create=False)
        try:
            now = T0 + 8 * H + 10 * M
            w = await views.warning(store, REAL, now)
            d = await views.detail(store, w, now)
        finally:
            await store.close()
        con = Console(record=True, width=200, force_terminal=True, color_system="standard")
        con.print(detail_view(d, Fmt(_tz(), now)))
        return con.export_text(styles=True)

    lines = asyncio.run(styled()).splitlines()
    overdue = next(line for line in lines if e164(13)[3:] in line)  # village 101200's B, overdue
    answered = next(line for line in lines if e164(11)[3:] in line)  # township 101's B, answered
    assert "\x1b[31m" in overdue and "\x1b[31m" not in answered
    assert "\x1b[32m" in answered


def test_status_terminal_shows_the_most_urgent_divisions_first(desk: Desk) -> None:
    res = desk.run("status", REAL, "--limit", "2")
    assert res.exit_code == 0, res.output
    assert "显示最紧急的 2/7 个区划" in res.output
    listed = res.output[res.output.index("区划  ") :]
    assert "433122101200" in listed and "433122101201" in listed  # on the not-woken list
    assert "县 泸溪县 433122" not in listed and "433122100200" not in listed
    everything = desk.run("status", REAL, "--limit", "0")
    assert "县 泸溪县 433122" in everything.output and "显示最紧急" not in everything.output


def _tz() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Asia/Shanghai")


def test_unknown_and_ambiguous_warnings_are_one_line_errors(desk: Desk) -> None:
    amb = desk.run("status", "43312241600000_2025")
    assert amb.exit_code == 2 and "matches several warnings" in amb.output
    assert len(amb.output.strip().splitlines()) == 1
    unknown = desk.run("status", "nope")
    assert unknown.exit_code == 2 and "no warning" in unknown.output
    assert desk.run("status", "--pending").exit_code == 2


def test_a_missing_store_is_a_one_line_error_and_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    cfg = tmp_path / "warnd.toml"
    cfg.write_text(f'[store]\nurl = "sqlite:///{db}"\n', encoding="utf-8")
    for cmd in (["status"], ["unreached"], ["report", "x"]):
        res = CliRunner().invoke(main, [*cmd, "--config", str(cfg)])
        assert res.exit_code == 2, res.output
        assert res.output.startswith("warnd: ") and "no store" in res.output
        assert len(res.output.strip().splitlines()) == 1
    assert not db.exists()


def test_status_only_reads(desk: Desk) -> None:
    async def counts() -> tuple[int, int]:
        store = await Store.open(desk.url, create=False)
        try:
            async with store.read() as s:
                ev = (await s.execute(select(func.count()).select_from(Event))).scalar_one()
                calls = (
                    await s.execute(select(func.count()).where(Call.state == "active"))  # type: ignore[arg-type]
                ).scalar_one()
                return int(ev), int(calls)
        finally:
            await store.close()

    before = asyncio.run(counts())
    desk.set_clock(T0 + 12 * H)  # long past every due time: a daemon would act, status must not
    for args in (("status",), ("status", REAL), ("unreached",)):
        assert desk.run(*args).exit_code == 0
    assert asyncio.run(counts()) == before


def test_watch_redraws_with_the_clock_and_never_sleeps(
    desk: Desk,
) -> None:
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:  # time passes on the clock file only
        waits.append(seconds)
        desk.set_clock(AT + timedelta(seconds=seconds * len(waits)))

    res = desk.run("status", "--watch", "30", "--iterations", "3", sleep=fake_sleep)
    assert res.exit_code == 0, res.output
    assert waits == [30.0, 30.0]
    frames = re.findall(r"预警叫应进度 status\s+(\d\d:\d\d)", res.output)  # each frame's clock
    assert frames == ["15:50", "15:50", "15:51"]
    assert "预警叫应进度" in res.output
    assert desk.run("status", "--watch", "--json").exit_code == 2
    mistaken = desk.run("status", "--watch", "4331224160")  # the key taken for SECONDS
    assert mistaken.exit_code == 2 and "before --watch" in mistaken.output


def test_watch_loop_redraws_in_place() -> None:
    calls = 0

    async def render() -> str:
        nonlocal calls
        calls += 1
        return f"frame {calls}"

    async def no_sleep(_s: float) -> None:
        return None

    con = Console(record=True, force_terminal=True, width=40)
    frames = asyncio.run(status.watch_loop(render, 5.0, 3, con, sleep=no_sleep))
    assert frames == 3 and calls == 3
    text = con.export_text()
    assert "frame 3" in text


def test_unreached_oldest_first_real_before_drill_and_resolved_by_ack(desk: Desk) -> None:
    out = desk.json("unreached")
    entries = out["entries"]
    assert [(e["warning"], e["division"]) for e in entries] == [
        (REAL, "433122101200"),
        (REAL, "433122101201"),
    ]
    assert out["counts"] == {"real": 2, "drill": 0}
    first = entries[0]
    assert first["since"] == "2025-06-14T15:45:00+08:00" and first["waiting_s"] == 300
    assert [(c["rung"], c["phone"], c["name"]) for c in first["to_call"]] == [
        ("stage", e164(12), "村支书1-0"),
        ("backup", e164(13), "村主任1-0"),
        ("superior", e164(10), "镇长1"),
        ("duty", e164(3), "县应急局值班室"),
    ]
    text = desk.run("unreached")
    assert text.exit_code == 0 and e164(12)[3:] in text.output and "待处置" in text.output
    ack = desk.run(
        "ack", REAL, "--division", "433122101200", "--by", "值班员张三", "--note", "电话叫醒"
    )
    assert ack.exit_code == 0, ack.output
    after = desk.json("unreached")
    assert [e["division"] for e in after["entries"]] == ["433122101201"]
    everything = desk.json("unreached", "--all")
    done = next(e for e in everything["entries"] if e["division"] == "433122101200")
    assert done["resolved"] is True
    assert (done["resolved_by"], done["resolved_note"]) == ("值班员张三", "电话叫醒")
    detail = desk.json("status", REAL, "--unreached")
    assert [d["code"] for d in detail["divisions"]] == ["433122101201"]


def test_unreached_by_county_and_limited_on_the_terminal(desk: Desk) -> None:
    assert len(desk.json("unreached", "--county", "433122101")["entries"]) == 2
    assert desk.json("unreached", "--county", "433122100")["entries"] == []
    assert desk.run("unreached", "--county", "43%").exit_code == 2
    res = desk.run("unreached", "--limit", "1")
    assert "显示 1/2 条" in res.output and e164(12)[3:] in res.output
    assert e164(14)[3:] not in res.output


def test_unreached_lists_drill_entries_after_real_ones(tmp_path: Path, store_url: str) -> None:
    sc = Scenario(tmp_path, store_url, rows=county_rows(townships=1, villages=1))

    async def run() -> None:
        async with sc:
            await sc.arrive(cap_xml(REAL, T0))  # no onset: everything fires now
            await sc.run_until(T0 + 10 * M)
            await sc.arrive(cap_xml(DRILL, T0 + 10 * M, status="Exercise"))
            await sc.run_until(T0 + 3 * H)

    asyncio.run(run())
    d = Desk(tmp_path, sc.url, sc.contacts)
    d.set_clock(T0 + 3 * H)
    out = d.json("unreached", "--no-names")
    drills = [e["drill"] for e in out["entries"]]
    assert drills == sorted(drills) and True in drills and False in drills
    assert out["counts"]["drill"] == drills.count(True)
    real_since = [e["since"] for e in out["entries"] if not e["drill"]]
    assert real_since == sorted(real_since)
    assert all(c["name"] is None for e in out["entries"] for c in e["to_call"])
    text = d.run("unreached")
    assert "【演练】" in text.output
