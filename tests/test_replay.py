"""Live drills: archive rewriting (pure), the scaled clock, and ``drill replay`` end to end.

The end-to-end tests run the real Daemon (real store on SQLite and PostgreSQL, real hooks
listener, real webhook channel to tests/gateway_fake.py) on a ScaledClock whose real-time
source is a fake that the replay's ``sleep`` advances: nothing waits for a timer, and the
real-time offsets the gateway sees are exact.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from factory import cap_xml, county_rows, write_contacts
from gateway_fake import GatewayFake
from rich.console import Console
from sqlmodel import select

from warnd.cli import main
from warnd.cli.progress import DelayedBar, drill_time
from warnd.config.policy import load_config
from warnd.core import cap
from warnd.core.clock import ScaledClock
from warnd.core.errors import InputError
from warnd.desk.drill import load_feed
from warnd.desk.replay import drill_identifier, live_risk, prepare, real_work, run
from warnd.edges.signature import sign
from warnd.store import Store
from warnd.store.tables import Call, Message, Outbox, Stage, WarningRow

CST = timezone(timedelta(hours=8))
H, M, S = timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)
SENDER = "433122_Meteorological_Observatory"
ARCHIVED = datetime(2024, 7, 1, 8, 0, tzinfo=CST)  # when the archived warning was sent
START = datetime(2025, 6, 1, 10, 0, tzinfo=CST)  # the drill's virtual start
WALL0 = datetime(2025, 5, 20, 9, 0, tzinfo=UTC)  # the real instant the drill starts at
ID1 = "43312241600000_20240701080000"
ID2 = "43312241600000_20240701090000"
SECRET = b"replay-hook-secret-0123456789abcdef"
RESPONDERS = {"c-433122-a", "c-433122100-a", "c-433122100200-a"}


def archive(folder: Path, *, status: str = "Actual", area: str = "433122000000") -> Path:
    """A warning (onset 6 h after it was sent) and an Update an hour later moving onset +1 h."""
    folder.mkdir(parents=True, exist_ok=True)
    first = cap_xml(
        ID1,
        ARCHIVED,
        onset=ARCHIVED + 6 * H,
        expires=ARCHIVED + 12 * H,
        status=status,
        geocodes=(area,),
    )
    update = cap_xml(
        ID2,
        ARCHIVED + H,
        onset=ARCHIVED + 7 * H,
        expires=ARCHIVED + 12 * H,
        status=status,
        msg_type="Update",
        references=[(SENDER, ID1, ARCHIVED)],
        geocodes=(area,),
    )
    # written in the wrong name order: the replay goes by sent, not by file name
    (folder / "b-first.xml").write_bytes(first)
    (folder / "a-update.xml").write_bytes(update)
    return folder


def config_toml(tmp: Path, store_url: str, channel: str) -> Path:
    (tmp / "hook-secret").write_bytes(SECRET)
    write_contacts(tmp / "contacts", county_rows(townships=2, villages=2))
    text = f"""
timezone = "Asia/Shanghai"
[store]
url = "{store_url}"
[contacts]
path = "{tmp / "contacts"}"
[listen]
host = "127.0.0.1"
port = 0
[hooks]
secret_file = "{tmp / "hook-secret"}"
[[feeds]]
name = "incoming"
path = "{tmp / "incoming"}"
{channel}
"""
    path = tmp / "warnd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def webhook(url: str) -> str:
    return f'[channels.gateway]\ntype = "webhook"\nurl = "{url}"\nrate = "1000/s"\n'


def log_channel(tmp: Path) -> str:
    return f'[channels.outbox]\ntype = "log"\npath = "{tmp / "outbox.jsonl"}"\n'


# ---- the clock -----------------------------------------------------------------------------


def test_scaled_clock_runs_speed_times_faster_from_when_it_begins() -> None:
    real = [100.0]
    clock = ScaledClock(START, 60, real=lambda: real[0], wall_start=WALL0, paused=True)
    real[0] += 30  # paused: a daemon starting up does not eat drill time
    assert clock.now() == START
    clock.begin()
    real[0] += 6 * 60  # six real minutes ...
    assert clock.now() == START + 6 * H  # ... are the county's six hours
    assert clock.real_elapsed() == 360
    assert clock.real_delay(START + 6 * H + 5 * M) == pytest.approx(5.0)  # a 5 min window: 5 s
    assert clock.real_delay(START) == 0.0
    assert clock.wall() == WALL0 + 6 * M
    assert clock.wall(START + 3 * H) == WALL0 + 3 * M
    with pytest.raises(ValueError):
        ScaledClock(START, 0)
    with pytest.raises(ValueError):
        ScaledClock(START.replace(tzinfo=None), 60)


# ---- preparing the archive -----------------------------------------------------------------


def test_prepare_rewrites_as_exercise_shifted_and_tagged(tmp_path: Path) -> None:
    plan = prepare(load_feed([archive(tmp_path / "arc")]), START, "T1")
    first, update = plan.messages
    assert [m.alert.msg_type for m in plan.messages] == ["Alert", "Update"]
    for m in plan.messages:
        again = cap.parse(m.raw, strict=True)  # still valid CAP 1.2 (element order kept)
        assert again.status == "Exercise" and again.is_drill
        assert m.actual and "【演练】" in (again.note or "")
    a = first.alert
    assert a.identifier == drill_identifier(ID1, "T1") == f"{ID1}-drill-T1"
    assert a.sent == START and a.onset == START + 6 * H and a.expires == START + 12 * H
    u = update.alert
    assert u.sent == START + H and u.onset == START + 7 * H
    ref = u.references[0]
    assert (ref.sender, ref.identifier) == (SENDER, a.identifier)
    assert datetime.fromisoformat(ref.sent) == a.sent  # the reference follows the rewrite
    assert u.headline == "泸溪县气象台发布暴雨橙色预警信号"  # the rest is as it was
    assert plan.actual == (first.origin, update.origin)
    assert not plan.dropped


def test_prepare_only_cuts_the_area_to_one_township(tmp_path: Path) -> None:
    folder = tmp_path / "arc"
    archive(folder)
    elsewhere = cap_xml(
        "43312341600000_20240701083000", ARCHIVED + 30 * M, geocodes=("433123000000",)
    )
    (folder / "c-other-county.xml").write_bytes(elsewhere)
    mixed = cap_xml(
        "43312241600000_20240701084000",
        ARCHIVED + 40 * M,
        geocodes=("433122101200", "433122100201", "433122102000"),
    )
    (folder / "d-mixed.xml").write_bytes(mixed)
    covering_id = "43312241600000_20240701085000"
    covering = cap_xml(
        covering_id,
        ARCHIVED + 50 * M,
        geocodes=("433122101201", "433122000000", "43312Z"),
    )
    (folder / "e-covering.xml").write_bytes(covering)
    plan = prepare(load_feed([folder]), START, "T2", only="433122101")
    kept = {m.alert.identifier.split("-drill-")[0]: m.alert for m in plan.messages}
    assert set(kept) == {ID1, ID2, "43312241600000_20240701084000", covering_id}
    assert kept[ID1].geocodes == ("433122101",)  # the county-wide area became the township
    assert kept["43312241600000_20240701084000"].geocodes == ("433122101200",)
    # one geocode covers the township: the whole township, not just the village listed first
    assert kept[covering_id].geocodes == ("433122101",)
    assert kept[covering_id].unmatched_geocodes == ()
    assert [d.origin for d in plan.dropped] == [str(folder / "c-other-county.xml")]
    with pytest.raises(InputError, match="--only"):
        prepare(load_feed([folder]), START, "T3", only="4331")


def test_clock_progress_shows_after_a_second_on_the_drill_time() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    now = [0.0]
    bar = DelayedBar("演练回放", console, describe=drill_time, clock=lambda: now[0])
    bar(600, 7200)
    assert not bar.shown and out.getvalue() == ""
    now[0] = 1.5
    bar(3600, 7200)
    assert bar.shown and bar.total == 7200
    bar.close()
    assert "演练回放" in out.getvalue() and "演练时间 1h / 约 2h" in out.getvalue()


async def test_simulate_reports_progress_up_to_the_end(tmp_path: Path) -> None:
    from warnd.config.policy import Policy
    from warnd.core.directory import load
    from warnd.desk.drill import simulate

    write_contacts(tmp_path / "contacts", county_rows(townships=1, villages=1))
    directory, _ = load(tmp_path / "contacts")
    (tmp_path / "responders.csv").write_text("contact_id,ack_after\n", encoding="utf-8")
    seen: list[tuple[float, float]] = []
    await simulate(
        [archive(tmp_path / "arc")],
        directory,
        Policy.default(),
        tmp_path / "responders.csv",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert len(seen) > 10
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and seen[-1][0] == seen[-1][1]
    assert all(d < t for d, t in seen[:-1])  # 99 % at most until the simulation has settled


def test_live_risk_only_for_real_warnings_through_channels_to_people(tmp_path: Path) -> None:
    url = "sqlite:///" + str(tmp_path / "w.db")
    live = load_config(config_toml(tmp_path, url, webhook("http://127.0.0.1:9/send")))
    logged = load_config(config_toml(tmp_path, url, log_channel(tmp_path)))
    actual = prepare(load_feed([archive(tmp_path / "a")]), START, "T")
    exercise = prepare(load_feed([archive(tmp_path / "e", status="Exercise")]), START, "T")
    message = live_risk(actual, live)
    assert message is not None and "--confirm-live" in message and "gateway" in message
    assert live_risk(actual, logged) is None
    assert live_risk(exercise, live) is None


# ---- the real daemon on drill time -----------------------------------------------------------


class Drill:
    """A replay with a fake real-time source; ``sleep`` answers calls like responders do."""

    def __init__(self, tmp: Path, store_url: str) -> None:
        self.tmp = tmp
        self.store_url = store_url
        self.real = [0.0]
        self.clock = ScaledClock(
            START, 3600, real=lambda: self.real[0], wall_start=WALL0, paused=True
        )
        self.gateway = GatewayFake(now=self.clock.wall)
        self.answered = 0
        self.acks: list[dict[str, Any]] = []
        self.port: int | None = None
        self.stop = asyncio.Event()
        self.stop_after: datetime | None = None

    async def run(self, **kwargs: Any) -> dict[str, Any]:
        url = await self.gateway.start()
        self.config = load_config(config_toml(self.tmp, self.store_url, webhook(url)))
        plan = prepare(load_feed([archive(self.tmp / "arc")]), START, "T1")
        self.plan = plan
        try:
            async with aiohttp.ClientSession() as self.http:
                return await run(
                    self.config,
                    plan,
                    self.clock,
                    sleep=self.sleep,
                    stop=self.stop,
                    on_start=self.started,
                    **kwargs,
                )
        finally:
            await self.gateway.stop()

    def started(self, daemon: Any) -> None:
        self.port = daemon.bound_port

    async def sleep(self, seconds: float) -> None:
        for r in self.gateway.receipts[self.answered :]:
            if r.body["purpose"] == "call" and r.body["contact"] in RESPONDERS:
                await self.press_1(r.body["id"])
        self.answered = self.gateway.count
        self.real[0] += seconds
        if self.stop_after is not None and self.clock.now() >= self.stop_after:
            self.stop.set()
        await asyncio.sleep(0)

    async def press_1(self, message_id: str) -> None:
        raw = json.dumps({"id": message_id, "digits": "1"}).encode()
        ts = int(self.clock.wall().timestamp())  # a real platform signs with real time
        headers = {"X-Warnd-Timestamp": str(ts), "X-Warnd-Signature": sign(SECRET, ts, raw)}
        base = f"http://127.0.0.1:{self.port}"
        async with self.http.post(f"{base}/hooks/ivr", data=raw, headers=headers) as resp:
            self.acks.append(await resp.json())


async def test_replay_runs_the_chain_compressed_and_marked_as_a_drill(
    tmp_path: Path, store_url: str
) -> None:
    drill = Drill(tmp_path, store_url)
    result = await drill.run()
    gw = drill.gateway
    assert gw.count > 20
    assert all(r.body["text"].startswith("【演练】") for r in gw.receipts)
    assert all(a["ok"] for a in drill.acks) and len(drill.acks) >= 3

    # compressed: 6 h/3 h/1 h of drill time are 6/3/1 s of real time at ×3600
    def real_offset(contact: str, purpose: str = "call") -> float:
        first = next(r for r in gw.receipts if r.body["contact"] == contact)
        assert first.body["purpose"] == purpose
        assert first.virtual is not None
        return (first.virtual - WALL0).total_seconds()

    assert real_offset("c-433122-a") == pytest.approx(0.0, abs=1e-3)  # onset 6 h ahead: at once
    # the Update (sent +1 h, real 1 s) moved onset to +7 h: townships at +4 h, villages at +6 h
    assert real_offset("c-433122101-a") == pytest.approx(4.0, abs=1e-3)
    assert real_offset("c-433122101201-a") == pytest.approx(6.0, abs=1e-3)
    updates = [r for r in gw.receipts if r.body["purpose"] == "update"]
    assert {r.body["contact"] for r in updates} == {"c-433122-a"}  # notified before the Update
    assert updates[0].virtual is not None
    assert (updates[0].virtual - WALL0).total_seconds() == pytest.approx(1.0, abs=1e-3)

    store = await Store.open(store_url)
    try:
        async with store.read() as s:
            warnings = (await s.execute(select(WarningRow))).scalars().all()
            stages = (await s.execute(select(Stage).order_by(Stage.idx))).scalars().all()
            messages = (await s.execute(select(Message))).scalars().all()
            outbox = (await s.execute(select(Outbox))).scalars().all()
        assert [(w.key, w.drill, w.state) for w in warnings] == [
            (f"{ID1}-drill-T1", True, "ended")  # the run is over: so is its warning
        ]
        assert {m.status for m in messages} == {"Exercise"}
        assert outbox and all(o.drill for o in outbox)
        fired = [(st.level, st.fired_at) for st in stages]
        assert [lv for lv, _ in fired] == ["county", "township", "village"]
        for (_lv, at), want in zip(fired, (START, START + 4 * H, START + 6 * H), strict=True):
            assert at is not None and abs(at - want) < S
        assert await real_work(store) == 0  # nothing real was touched or left due
    finally:
        await store.close()

    r, s = result["replay"], result["summary"]
    assert r["interrupted"] is False and r["fed"] == 2 and r["warnings"] == [f"{ID1}-drill-T1"]
    assert s["drill"] is True and s["warnings"] == 1
    # the ladder ran: a silent township went to its B, a silent village all the way to duty
    rungs = {(e["division"], e.get("rung")) for e in result["events"] if e["type"] == "escalate"}
    assert ("433122101", "backup") in rungs and ("433122101201", "duty") in rungs
    acked = {e["contact_id"] for e in result["events"] if e["type"] == "ack"}
    assert acked == RESPONDERS
    assert s["unreached"] >= 2  # the villages under the silent township
    # the run ended when nothing was due: after the last ladder of the villages
    assert r["real_seconds"] == pytest.approx(drill.real[0])
    assert 6.5 < drill.real[0] < 8.0
    assert [st["real_at"] is not None for st in result["stages"]] == [True, True, True]


async def test_a_finished_replay_is_over_in_status_and_shows_no_negative_times(
    tmp_path: Path, store_url: str
) -> None:
    """Issue 13 item 4: the duty desk after a replay, at the real time it ended (the drill's
    clock ran ×3600, so its records lie hours ahead of the wall clock)."""
    drill = Drill(tmp_path, store_url)
    await drill.run()
    clock = tmp_path / "clock"
    clock.write_text(drill.clock.wall().isoformat(), encoding="utf-8")
    base = ["--config", str(tmp_path / "warnd.toml")]

    async def cli(*args: str) -> Any:
        extra = ["--clock-file", str(clock)] if args[0] in ("status", "unreached") else []
        return await asyncio.to_thread(CliRunner().invoke, main, [*args, *base, *extra])

    shown = await cli("status", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["warnings"] == []  # not 进行中 for ever
    every = json.loads((await cli("status", "--all", "--json")).stdout)
    assert [(w["key"], w["state"]) for w in every["warnings"]] == [(f"{ID1}-drill-T1", "ended")]
    text = (await cli("status", "--all")).stdout
    assert "已结束" in text and "进行中" not in text
    listed = (await cli("unreached", "--all")).stdout
    assert "演练时间" in listed  # its entries are on the drill's clock, ahead of now
    assert "（-" not in listed and "-" not in "".join(re.findall(r"（[^）]*前）", listed))
    assert (await cli("unreached", "--json")).exit_code == 0
    assert json.loads((await cli("unreached", "--json")).stdout)["entries"] == []


async def test_interrupted_replay_cancels_what_is_left(tmp_path: Path, store_url: str) -> None:
    drill = Drill(tmp_path, store_url)
    drill.stop_after = START + 4 * H + 10 * M  # Ctrl-C while the townships are being called
    result = await drill.run()
    assert result["replay"]["interrupted"] is True
    store = await Store.open(store_url)
    try:
        async with store.read() as s:
            (w,) = (await s.execute(select(WarningRow))).scalars().all()
            stages = (await s.execute(select(Stage).order_by(Stage.idx))).scalars().all()
            calls = (await s.execute(select(Call))).scalars().all()
            outbox = (await s.execute(select(Outbox))).scalars().all()
        assert w.state == "cancelled" and "interrupted" in (w.note or "")
        assert [st.state for st in stages] == ["fired", "fired", "cancelled"]
        assert not [c for c in calls if c.state == "active"]
        assert not [o for o in outbox if o.state in ("pending", "sending")]
    finally:
        await store.close()
    villages = [r for r in drill.gateway.receipts if len(r.body["contact"]) > 16]
    assert not villages  # the village stage never fired


async def test_replay_refuses_a_store_with_real_warnings_at_work(
    tmp_path: Path, store_url: str
) -> None:
    from warnd.core.clock import ManualClock
    from warnd.core.directory import load
    from warnd.edges.feeds import FeedItem
    from warnd.engine import Context, Engine

    config = load_config(config_toml(tmp_path, store_url, log_channel(tmp_path)))
    directory, _ = load(tmp_path / "contacts")
    store = await Store.open(store_url)
    try:
        clock = ManualClock(START)
        engine = Engine(Context(store, directory, config.policy, clock))
        real = cap_xml("real-1", START, onset=START + 8 * H, expires=START + 12 * H)
        await engine.ingest(FeedItem(real, "incoming:real.xml"))
        assert await real_work(store) == 3  # three stages still to fire
    finally:
        await store.close()
    plan = prepare(load_feed([archive(tmp_path / "arc", status="Exercise")]), START, "T")
    clock = ScaledClock(START, 3600, real=lambda: 0.0, paused=True)
    with pytest.raises(InputError, match="real warnings at work"):
        await run(config, plan, clock)


# ---- the command ---------------------------------------------------------------------------


def test_cli_refuses_real_warnings_to_people_without_confirm_live(tmp_path: Path) -> None:
    url = "sqlite:///" + str(tmp_path / "w.db")
    cfg = config_toml(tmp_path, url, webhook("http://127.0.0.1:9/send"))
    arc = archive(tmp_path / "arc")
    res = CliRunner().invoke(main, ["drill", "replay", str(arc), "--config", str(cfg)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "--confirm-live" in lines[0] and "Actual" in lines[0]
    assert not (tmp_path / "w.db").exists()  # refused before anything was opened
    bad = CliRunner().invoke(
        main, ["drill", "replay", str(arc), "--config", str(cfg), "--only", "43"]
    )
    assert bad.exit_code == 2 and "--only" in bad.output


def test_cli_replays_through_a_log_channel(tmp_path: Path) -> None:
    """The whole command at ×5000: a warning without onset (every stage at once) and its
    ladder to the duty office, an hour of drill time, take under a second of real time."""
    url = "sqlite:///" + str(tmp_path / "w.db")
    cfg = config_toml(tmp_path, url, log_channel(tmp_path))
    arc = tmp_path / "arc"
    arc.mkdir()
    (arc / "w.xml").write_bytes(cap_xml(ID1, ARCHIVED, expires=ARCHIVED + 12 * H))
    args = ["drill", "replay", str(arc), "--config", str(cfg), "--speed", "5000"]
    args += ["--start", "2025-06-01T10:00:00+08:00", "--json", "--report", str(tmp_path / "r.json")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert "倍速 ×5000" in res.stderr and "每次呼叫等待应答 0.1 秒" in res.stderr
    assert out["replay"]["start"] == "2025-06-01T10:00:00+08:00"
    assert out["replay"]["speed"] == 5000 and out["summary"]["drill"] is True
    assert [st["level"] for st in out["stages"]] == ["county", "township", "village"]
    assert all(st["state"] == "fired" for st in out["stages"])
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["events"] and {e["type"] for e in report["events"]} >= {"notify", "unreached"}
    lines = (tmp_path / "outbox.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines and all(json.loads(x)["text"].startswith("【演练】") for x in lines)
