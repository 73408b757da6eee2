"""The status wall's test room: a store filled by the engine, a daemon serving its wall, and the
duty desk's commands on the same store (tests/test_wall.py, tests/test_wall_page.py).


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

A ``Room`` is a ``Daemon`` (no scheduler, ManualClock at 15:50, port 0) serving a copy of the
store with a ``[wall]`` table; ``expected`` is what ``warnd status --json`` /
``warnd status WARNING --json`` / ``warnd report --format json`` / ``warnd unreached --json``
say on the same store at the same clock, and ``check_data`` compares ``/wall/data`` with it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from conftest import BACKENDS, PG_URL, copy_pg_database, drop_pg_database, fresh_pg_database
from factory import cap_xml
from scenario import T0, Scenario

from warnd.cli import main
from warnd.config.policy import load_config
from warnd.core.clock import ManualClock
from warnd.desk.wall.data import shown_phone
from warnd.edges.daemon import Daemon
from warnd.edges.signature import sign

H, M = timedelta(hours=1), timedelta(minutes=1)
REAL = "43312241600000_20250614080000"
DRILL = "43312241600000_20250614140000"
YELLOW = "43312241600000_20250614153000"
AT = T0 + 7 * H + 50 * M  # 15:50 in Asia/Shanghai
TOKEN = "wall-token-for-tests-0123456789"
SECRET = b"hook-secret-for-the-wall-tests-of-warnd"
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
