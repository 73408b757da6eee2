"""Two ``warnd serve`` processes on one PostgreSQL database: one is SIGKILLed mid fan-out.

Both processes (the ``warnd`` console script, ``--clock-file``, ``--tick 0.2``) share a fresh
database, one config file (so one spool folder, one contacts directory) and one file clock; a
gateway fake in this test process is their ``webhook`` channel. The alert has no onset: all
three stages fire at once, a 55-call county fan-out. The gateway holds requests so that both
processes are caught with sends in flight; the process that polls the feeds is SIGKILLed, the
other carries on and, once the dead one has missed two heartbeats (``[store] heartbeat =
"1s"``), sends again what the dead one held, under the same ids; the dead one is restarted,
and the clock moves through every ack window to the end of the ladder. Acknowledgements go to
both processes' hooks. See docs/testing.md ("Several instances on PostgreSQL").

Waiting is on observables (gateway receipts, log lines, the store having nothing due at the
file clock's time) in bounded polls; the test never sleeps for a timer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from conftest import drop_pg_database, fresh_pg_database
from factory import cap_xml, county_rows, write_contacts
from gateway_fake import BODY_KEYS, GatewayFake

from warnd.edges.signature import sign
from warnd.testing import WARND, daemon_config, eventually

PG_URL = os.environ.get("WARND_TEST_PG_URL")
pytestmark = [
    pytest.mark.postgres,
    # with WARND_REQUIRE_PG=1 (CI) a missing server is an error in conftest, never a skip
    pytest.mark.skipif(
        not PG_URL and os.environ.get("WARND_REQUIRE_PG") != "1",
        reason="needs a PostgreSQL server: set WARND_TEST_PG_URL",
    ),
]

CST = timezone(timedelta(hours=8))
T0 = datetime(2025, 6, 14, 8, 0, tzinfo=CST)
ID = "43312241600000_20250614080000"
ID_LATE = "43312241600000_20250614080100"  # below min_severity: recorded, nothing sent
SECRET = b"multi-instance-hook-secret-0123456789"
WINDOW = timedelta(minutes=5)
ATTEMPTS = 3
HEARTBEAT_S = 1.0  # [store] heartbeat: a dead instance's messages are queued again after 2
SLOTS = 2  # the channel's concurrency: claims of 8 × 2 = 16, a wave of 55 is shared
HELD = 4  # requests the gateway answers before it holds a wave
TAKEOVER_S = 10.0  # bound on real seconds for the survivor to carry on (tick 0.2 s)


@dataclass
class Proc:
    """One ``warnd serve`` process slot (restarted processes get a new instance id)."""

    name: str
    proc: asyncio.subprocess.Process | None = None
    port: int | None = None
    monitor: int | None = None  # the port of /healthz and /metrics
    ident: str | None = None  # Context.instance: what it writes into outbox.claimed_by
    logs: list[Path] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log_events(self, event: str) -> list[dict[str, Any]]:
        out = []
        for log in self.logs:
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                if f'"{event}"' in line:
                    out.append(json.loads(line))
        return out


@dataclass
class Kill:
    at: float  # time.monotonic() of the SIGKILL
    ident: str
    in_flight: set[str]  # the dead one's: received by the gateway, not recorded sent
    sent_by_dead: set[str]  # received by the gateway while claimed by the dead process
    unclaimed: set[str]  # due and claimed by nobody: the survivor's to send


@dataclass
class Posted:
    outbox_id: str
    source: str
    answered_at: float


@dataclass
class Cluster:
    tmp: Path
    url: str
    now: datetime = T0
    procs: list[Proc] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    posted: list[Posted] = field(default_factory=list)
    dead: set[str] = field(default_factory=set)
    db: asyncpg.Connection | None = None

    def __post_init__(self) -> None:
        self.gateway = GatewayFake(now=lambda: self.now)
        self.procs = [Proc("a"), Proc("b")]

    def set_clock(self, when: datetime) -> None:
        self.now = when
        tmp = self.tmp / "clock.tmp"
        tmp.write_text(when.isoformat(), encoding="utf-8")
        os.replace(tmp, self.tmp / "clock.txt")

    async def start(self, p: Proc) -> None:
        log = self.tmp / f"serve-{p.name}{len(p.logs) + 1}.log"
        p.logs.append(log)
        with log.open("wb") as err:
            p.proc = await asyncio.create_subprocess_exec(
                str(WARND),
                "serve",
                "--config",
                str(self.tmp / "warnd.toml"),
                "--clock-file",
                str(self.tmp / "clock.txt"),
                "--tick",
                "0.2",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
            )

        def up() -> list[dict[str, Any]]:
            assert p.alive, f"{p.name} exited: {log.read_text()[-2000:]}"
            return p.log_events("daemon_started")[len(p.logs) - 1 :]

        started = await eventually(
            up, timeout=30, every=0.05, what=lambda: f"{p.name} started: {log.read_text()[-2000:]}"
        )
        p.port = int(started[0]["listen"].rsplit(":", 1)[1])
        p.monitor = int(started[0]["monitor"].rsplit(":", 1)[1])
        p.ident = started[0]["instance"]

    async def kill(self, p: Proc) -> Kill:
        """SIGKILL, then what the store says was in flight, then answer what the gateway held."""
        assert p.proc is not None and p.ident is not None
        p.proc.send_signal(signal.SIGKILL)
        at = time.monotonic()
        await asyncio.wait_for(p.proc.wait(), 60)  # generous: CI machines are shared
        received = {r.id for r in self.gateway.receipts}
        rows = await self.rows("SELECT id, state, claimed_by FROM outbox")
        self.dead.add(p.ident)
        kill = Kill(
            at,
            p.ident,
            {
                r["id"]
                for r in rows
                if r["state"] in ("pending", "sending") and r["claimed_by"] == p.ident
            }
            & received,
            {r["id"] for r in rows if r["claimed_by"] == p.ident} & received,
            {r["id"] for r in rows if r["state"] == "pending"},
        )
        self.kills.append(kill)
        self.gateway.release()
        return kill

    # ---- the store, read from outside -----------------------------------------------------

    async def rows(self, query: str, *args: Any) -> list[asyncpg.Record]:
        assert self.db is not None
        return list(await self.db.fetch(query, *args))

    async def busy(self) -> list[str]:
        """Work due at the clock's time, or sends in progress (a live instance's, or a dead
        one's that a live instance will take back after two missed heartbeats)."""
        t = self.now
        q = [
            ("stage", "SELECT id FROM stage WHERE state = 'pending' AND due_at <= $1"),
            ("division", "SELECT id FROM division WHERE start_due <= $1"),
            ("call", "SELECT id FROM call WHERE state = 'active' AND next_due_at <= $1"),
            ("pending", "SELECT id FROM outbox WHERE state = 'pending' AND due_at <= $1"),
            ("sending", "SELECT id FROM outbox WHERE state = 'sending' AND due_at <= $1"),
        ]
        out = []
        for kind, sql in q:
            out += [f"{kind} {r['id']}" for r in await self.rows(sql, t)]
        return out

    async def quiet(self, timeout: float = 30.0) -> None:

        async def idle() -> bool:
            for p in self.procs:
                if p.proc is not None and p.proc.returncode not in (None, -signal.SIGKILL):
                    raise AssertionError(f"{p.name} exited: {p.logs[-1].read_text()[-2000:]}")
            return not await self.busy()

        await eventually(idle, timeout=timeout, every=0.05, what=f"quiet at {self.now}")

    async def advance(self, when: datetime) -> None:
        self.set_clock(when)
        await self.quiet()

    async def both_held(self, live: list[Proc], timeout: float = 20.0) -> None:
        """Wait until every live process has a request held by the gateway (sends in flight)."""

        async def held_by_all() -> bool:
            held = {r.id for r in self.gateway.receipts if r.status is None}
            rows = await self.rows("SELECT id, claimed_by FROM outbox WHERE state = 'sending'")
            holders = {r["claimed_by"] for r in rows if r["id"] in held}
            fired = not await self.rows(
                "SELECT id FROM stage WHERE state = 'pending' AND due_at <= $1", self.now
            )
            return fired and holders >= {p.ident for p in live}

        await eventually(
            held_by_all, timeout=timeout, every=0.02, what="a held request of every live process"
        )

    async def first_receipt(self, ids: set[str], after: float, timeout: float = 20.0) -> float:
        """Seconds from ``after`` to the first gateway receipt of one of ``ids`` after it."""

        def hits() -> list[float]:
            return [r.at for r in self.gateway.receipts if r.at > after and r.id in ids]

        hit = await eventually(
            hits, timeout=timeout, every=0.01, what=f"one of {len(ids)} messages at the gateway"
        )
        return min(hit) - after

    async def metric(self, p: Proc, name: str) -> float:
        """The sum of a counter's samples on a process's ``/metrics`` page."""
        url = f"http://127.0.0.1:{p.monitor}/metrics"
        async with aiohttp.ClientSession() as s, s.get(url) as resp:
            assert resp.status == 200
            text = await resp.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + "{", name + " "))
        )

    # ---- hooks ----------------------------------------------------------------------------

    async def hook(self, p: Proc, path: str, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        ts = int(self.now.timestamp())  # the daemons judge freshness by the file clock
        headers = {
            "Content-Type": "application/json",
            "X-Warnd-Timestamp": str(ts),
            "X-Warnd-Signature": sign(SECRET, ts, raw),
        }
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"http://127.0.0.1:{p.port}{path}", data=raw, headers=headers) as resp,
        ):
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["ok"] is True

    async def ack_ivr(self, p: Proc, outbox_id: str) -> None:
        await self.hook(p, "/hooks/ivr", {"id": outbox_id, "digits": "1"})
        self.posted.append(Posted(outbox_id, "ivr", time.monotonic()))

    async def ack_sms(self, p: Proc, body: dict[str, Any]) -> None:
        await self.hook(
            p, "/hooks/reply", {"from": body["to"], "text": f"收到 {body['reply_code']}"}
        )
        self.posted.append(Posted(body["id"], "sms", time.monotonic()))


def write_setup(tmp: Path, store_url: str, gateway_url: str) -> None:
    write_contacts(tmp / "contacts", county_rows(townships=6, villages=8))
    daemon_config(
        tmp,
        gateway_url=gateway_url,
        secret=SECRET,
        store_url=store_url,
        heartbeat=f"{HEARTBEAT_S:g}s",
        attempts=ATTEMPTS,
        feed_interval="1s",
        channel={"concurrency": SLOTS},
    )
    (tmp / "incoming").mkdir()
    drop(tmp, "alert.xml", cap_xml(ID, T0, expires=T0 + timedelta(hours=12)))


def drop(tmp: Path, name: str, data: bytes) -> None:
    """A CAP file in the spool folder, settled (the folder feed takes it on its next poll)."""
    path = tmp / "incoming" / name
    path.write_bytes(data)
    old = time.time() - 60
    os.utime(path, (old, old))


async def test_two_instances_one_killed_mid_fan_out(tmp_path: Path) -> None:
    assert PG_URL, "WARND_REQUIRE_PG=1 needs WARND_TEST_PG_URL"
    url = await fresh_pg_database(PG_URL)
    c = Cluster(tmp_path, url)
    gw_url = await c.gateway.start()
    write_setup(tmp_path, url, gw_url)
    c.set_clock(T0)
    try:
        c.db = await asyncpg.connect(url.replace("postgresql://", "postgres://", 1))
        await _scenario(c)
    finally:
        for p in c.procs:
            if p.alive:
                assert p.proc is not None
                p.proc.kill()
                await p.proc.wait()
        await c.gateway.stop()
        if c.db is not None:
            await c.db.close()
        await drop_pg_database(PG_URL, url)


async def _scenario(c: Cluster) -> None:
    gw = c.gateway
    started = time.monotonic()

    # -- both start at once on the empty database (one creates the schema, the other waits);
    #    the gateway answers HELD requests, then holds: both processes have sends in flight
    gw.hold_after(HELD)
    await asyncio.gather(*(c.start(p) for p in c.procs))
    await c.both_held(c.procs)
    (poller,) = [p for p in c.procs if p.log_events("message_accepted")]
    (survivor,) = [p for p in c.procs if p is not poller]

    assert await c.metric(poller, "warnd_feed_polls_total") > 0
    assert await c.metric(survivor, "warnd_feed_polls_total") == 0  # the lock is taken

    # -- SIGKILL the feed poller mid fan-out; the survivor sends what nobody had claimed, and
    #    after two missed heartbeats what the dead one held, under the same ids
    k = await c.kill(poller)
    assert k.in_flight and k.sent_by_dead and k.unclaimed, k
    carry_on_s = await c.first_receipt(k.unclaimed, k.at)
    assert carry_on_s < TAKEOVER_S
    reclaim_s = await c.first_receipt(k.in_flight, k.at)
    # its last heartbeat ≤ 1 beat before the kill; silent for two beats, seen at the survivor's
    # next beat, then sent at once
    assert HEARTBEAT_S <= reclaim_s < 3 * HEARTBEAT_S + 2, reclaim_s
    await c.quiet()

    # -- the feed lock went with the dead process: the survivor polls the spool folder now
    drop(c.tmp, "late.xml", cap_xml(ID_LATE, T0, severity="Minor"))
    dropped = time.monotonic()
    await eventually(
        lambda: (
            ID_LATE in {e["key"].split(",")[1] for e in survivor.log_events("message_accepted")}
        ),
        timeout=15,
        every=0.05,
        what="the survivor took over the feeds",
    )
    feeds_s = time.monotonic() - dropped

    # -- three acknowledgements to the survivor: those calls are not called again
    first = [r for r in gw.receipts if r.ok][:3]
    for r in first:
        await c.ack_ivr(survivor, r.id)
    resent = {r.id for r in gw.receipts if r.at > k.at}
    assert k.in_flight <= resent, "messages in flight at the kill are resent under their own id"

    # -- the dead one restarts; the redial wave is shared again (both caught in flight)
    restarted = poller
    await c.start(restarted)
    gw.hold_after(gw.count + HELD)
    c.set_clock(T0 + WINDOW)
    await c.both_held(c.procs)
    wave = [r.body for r in gw.receipts if r.body["purpose"] == "call" and r.status is None]
    acked = {r.body["contact"] for r in first}
    fresh = list({b["contact"]: b for b in wave if b["contact"] not in acked}.values())
    await c.ack_sms(restarted, fresh[0])  # a redial still held by the gateway: answered anyway
    await c.ack_ivr(survivor, fresh[1]["id"])
    gw.release()
    await c.quiet()

    # -- every window to the end of the ladder; then a clean stop of both
    for n in range(2, 13):
        await c.advance(T0 + n * WINDOW)
    assert await c.metric(survivor, "warnd_feed_polls_total") > 0
    assert await c.metric(restarted, "warnd_feed_polls_total") == 0  # the survivor polls
    for p in c.procs:
        assert await c.metric(p, "warnd_messages_total") > 0, f"{p.name} sent nothing"
    for p in c.procs:
        assert p.proc is not None
        p.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(p.proc.wait(), 60) == 0  # a graceful stop, busy machine
    await _verify(c, survivor, restarted)
    print(
        f"\nmulti-instance: {gw.count} requests; killed {k.ident} with {len(k.in_flight)} in"
        f" flight; survivor's next send {carry_on_s:.2f}s after the kill; its messages resent"
        f" {reclaim_s:.2f}s after the kill; feeds taken over in {feeds_s:.2f}s;"
        f" {time.monotonic() - started:.1f}s"
    )


async def _verify(c: Cluster, survivor: Proc, restarted: Proc) -> None:
    gw = c.gateway
    outbox = {r["id"]: r for r in await c.rows("SELECT * FROM outbox")}
    calls = {r["id"]: r for r in await c.rows("SELECT * FROM call")}
    divisions = {r["id"]: r for r in await c.rows("SELECT * FROM division")}
    received: dict[int, set[int]] = defaultdict(set)
    for r in gw.receipts:
        assert r.body.keys() >= BODY_KEYS and r.body["warning"] == ID
        row = outbox[r.id]
        assert (r.body["contact"], r.body["purpose"]) == (row["contact_id"], row["purpose"])
        if row["purpose"] == "call":
            received[row["call_id"]].add(row["attempt"])

    # 1. every A person got every attempt of their stage call (or up to the acknowledged one)
    a_rows = [r for r in county_rows(townships=6, villages=8) if r[4] == "A"]
    stage_calls = [x for x in calls.values() if x["rung"] == "stage"]
    assert sorted(x["contact_id"] for x in stage_calls) == sorted(r[0] for r in a_rows)
    assert len(stage_calls) == 55
    for x in stage_calls:
        assert received[x["id"]] == set(range(1, x["attempts_made"] + 1)), dict(x)
        if x["state"] != "acked":
            assert (x["state"], x["attempts_made"]) == ("failed", ATTEMPTS), dict(x)

    # 2. no acknowledgement lost, whichever process took it; nothing after it for that call
    acks = {a["outbox_id"]: a for a in await c.rows("SELECT * FROM ack")}
    assert len(c.posted) == 5 and {p.outbox_id for p in c.posted} == acks.keys()
    for p in c.posted:
        a, msg = acks[p.outbox_id], outbox[p.outbox_id]
        assert a["source"] == p.source and a["late"] is False
        call = calls[msg["call_id"]]
        assert call["state"] == "acked" and call["attempts_made"] == msg["attempt"]
        assert received[call["id"]] == set(range(1, msg["attempt"] + 1))
        later = [
            r for r in gw.receipts if r.at > p.answered_at and outbox[r.id]["call_id"] == call["id"]
        ]
        assert later == [], f"call {call['id']} got attempts after its acknowledgement"
        assert divisions[call["division_id"]]["reached_at"] is not None

    # 3. the same id twice only if in flight at the kill, or answered non-2xx
    (k,) = c.kills
    retried = {r.id for r in gw.receipts if not r.ok}
    repeats = {i for i, n in gw.id_counts().items() if n > 1}
    assert repeats <= k.in_flight | retried, repeats - k.in_flight - retried
    assert gw.unexpected_repeats(allowed=k.in_flight) == []
    assert all(row["state"] in ("sent", "cancelled") for row in outbox.values())

    # 4. both processes did work: the dead one sent before it died; the survivor and the
    #    restarted process each have messages they claimed, sent and recorded
    sent_by = {row["claimed_by"] for row in outbox.values() if row["state"] == "sent"}
    assert k.sent_by_dead and {survivor.ident, restarted.ident} <= sent_by, sent_by
    assert survivor.ident != restarted.ident != k.ident

    # 5. one poller at a time: each message ingested once, by one process
    msgs = await c.rows("SELECT identifier FROM message ORDER BY id")
    assert [m["identifier"] for m in msgs] == [ID, ID_LATE]
    ingested = [e["key"].split(",")[1] for p in c.procs for e in p.log_events("message_accepted")]
    assert sorted(ingested) == [ID, ID_LATE]
    assert not any(p.log_events("message_duplicate") for p in c.procs), "a file read twice"

    # 6. the ladder ran to its end for every unreached division
    unreached = [d for d in divisions.values() if d["reached_at"] is None]
    assert len(unreached) == len(divisions) - 5
    for d in unreached:
        assert d["rung"] == "ended" and d["unreached_at"] is not None, dict(d)
        rungs = {x["rung"] for x in calls.values() if x["division_id"] == d["id"]}
        expected = {"stage", "backup", "duty"} | ({"superior"} if len(d["code"]) > 6 else set())
        assert rungs == expected, (d["code"], rungs)
        (duty,) = [x for x in calls.values() if x["division_id"] == d["id"] and x["rung"] == "duty"]
        assert received[duty["id"]] == {1, 2, 3}
