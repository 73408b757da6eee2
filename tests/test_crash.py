"""``warnd serve`` killed with SIGKILL mid-fan-out, restarted, and nothing is lost.

The daemon runs as a real subprocess (the ``warnd`` console script) with a file clock; the
gateway fake runs in this test process. The test kills the daemon at three points of a
county-sized fan-out, restarts it, posts acknowledgements between kills, moves the file clock
through every ack window and checks the store and what the gateway received.

Waiting is always on an observable (gateway request count, a log line, the store having no
due work at the current file-clock time), in bounded polling loops; see docs/testing.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
from factory import cap_xml, county_rows, write_contacts
from gateway_fake import BODY_KEYS, GatewayFake

from warnd.clock import FileClock
from warnd.signature import sign

CST = timezone(timedelta(hours=8))
T0 = datetime(2025, 6, 14, 8, 0, tzinfo=CST)
ID = "43312241600000_20250614080000"
SECRET = b"crash-test-hook-secret-0123456789abc"
WINDOW = timedelta(minutes=5)  # longer than two outbox leases (60 s): see docs/testing.md
ATTEMPTS = 3
LEASE = timedelta(seconds=61)
WARND = Path(sys.executable).parent / "warnd"


def _utc(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class Kill:
    received: int  # gateway requests received when the process was killed
    in_flight: set[str]  # received before the kill, still pending/sending in the store


@dataclass
class Posted:
    """An acknowledgement the daemon answered 200/ok before it was killed."""

    outbox_id: str
    source: str
    answered_at: float  # time.monotonic()


@dataclass
class Run:
    tmp: Path
    now: datetime = T0
    proc: asyncio.subprocess.Process | None = None
    port: int | None = None
    monitor: int | None = None  # the port of /healthz and /metrics
    runs: int = 0
    kills: list[Kill] = field(default_factory=list)
    posted: list[Posted] = field(default_factory=list)
    dead_instances: set[str] = field(default_factory=set)
    killed: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.gateway = GatewayFake(now=lambda: self.now)

    @property
    def db(self) -> Path:
        return self.tmp / "warnd.db"

    @property
    def clock_file(self) -> Path:
        return self.tmp / "clock.txt"

    # ---- the process ----------------------------------------------------------------------

    def set_clock(self, when: datetime) -> None:
        """Move the daemon's clock: an atomic replace of the clock file."""
        self.now = when
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(when.isoformat(), encoding="utf-8")
        os.replace(tmp, self.clock_file)

    async def start(self) -> None:
        self.runs += 1
        log = self.tmp / f"serve-{self.runs}.log"
        with log.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                str(WARND),
                "serve",
                "--config",
                str(self.tmp / "warnd.toml"),
                "--clock-file",
                str(self.clock_file),
                "--tick",
                "0.2",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
            )
        self.port, self.monitor = await self._started(log)

    async def _started(self, log: Path, timeout: float = 30.0) -> tuple[int, int]:
        """The ports (hooks, monitor) from the ``daemon_started`` log line (both listen by then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"warnd serve exited: {log.read_text()[-2000:]}")
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                if '"daemon_started"' in line:
                    started = json.loads(line)
                    return tuple(  # type: ignore[return-value]
                        int(started[k].rsplit(":", 1)[1]) for k in ("listen", "monitor")
                    )
            await asyncio.sleep(0.05)
        raise AssertionError(f"no daemon_started within {timeout}s: {log.read_text()[-2000:]}")

    def sigkill(self) -> None:
        """One SIGKILL per process: a second one raced asyncio's reaping (exit status 255)."""
        assert self.proc is not None
        if self.proc.returncode is None and self.proc.pid not in self.killed:
            self.killed.add(self.proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)

    async def kill(self) -> Kill:
        """SIGKILL (unless a gateway trigger already did), then what was in flight."""
        assert self.proc is not None
        self.sigkill()
        await asyncio.wait_for(self.proc.wait(), 60)  # generous: CI machines are shared
        assert self.proc.returncode == -signal.SIGKILL
        received = self.gateway.count
        ids = {r.id for r in self.gateway.receipts}
        with self.sql() as con:
            q = "SELECT id FROM outbox WHERE state IN ('pending', 'sending')"
            unsent = {i for (i,) in con.execute(q)}
            self.dead_instances |= {
                c for (c,) in con.execute("SELECT DISTINCT claimed_by FROM outbox") if c
            }
        self.gateway.release()  # answer what it held: the sockets are gone with the process
        kill = Kill(received, ids & unsent)
        self.kills.append(kill)
        return kill

    async def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 60)  # a graceful stop, on a busy machine

    # ---- the store (read-only, from outside) ----------------------------------------------

    def sql(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db, timeout=30)
        con.row_factory = sqlite3.Row
        return con

    def rows(self, query: str, *args: Any) -> list[sqlite3.Row]:
        with self.sql() as con:
            return list(con.execute(query, args))

    def busy(self) -> list[str]:
        """Work due at the file clock's time, or sends in progress in the live process."""
        t = self.now
        out = []
        for r in self.rows("SELECT id, due_at FROM stage WHERE state = 'pending'"):
            if _utc(r["due_at"]) <= t:  # type: ignore[operator]
                out.append(f"stage {r['id']}")
        for r in self.rows("SELECT id, next_due_at FROM call WHERE state = 'active'"):
            if r["next_due_at"] and _utc(r["next_due_at"]) <= t:  # type: ignore[operator]
                out.append(f"call {r['id']}")
        for r in self.rows("SELECT id, due_at FROM outbox WHERE state = 'pending'"):
            if _utc(r["due_at"]) <= t:  # type: ignore[operator]
                out.append(f"outbox {r['id']} pending")
        for r in self.rows("SELECT id, lease_until, claimed_by FROM outbox WHERE state='sending'"):
            expired = _utc(r["lease_until"]) <= t  # type: ignore[operator]
            if expired or r["claimed_by"] not in self.dead_instances:
                out.append(f"outbox {r['id']} sending")
        return out

    async def quiet(self, timeout: float = 30.0) -> None:
        """Poll until the live daemon has done everything due at the current clock time."""
        deadline = time.monotonic() + timeout
        while busy := self.busy():
            if time.monotonic() > deadline:
                raise AssertionError(f"still busy at {self.now} after {timeout}s: {busy[:5]}")
            await asyncio.sleep(0.05)

    async def advance(self, when: datetime) -> None:
        self.set_clock(when)
        await self.quiet()

    # ---- hooks ----------------------------------------------------------------------------

    async def hook(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        raw = json.dumps(body).encode()
        ts = int(self.now.timestamp())
        headers = {
            "Content-Type": "application/json",
            "X-Warnd-Timestamp": str(ts),
            "X-Warnd-Signature": sign(SECRET, ts, raw),
        }
        url = f"http://127.0.0.1:{self.port}{path}"
        async with aiohttp.ClientSession() as s, s.post(url, data=raw, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            answer: dict[str, Any] = await resp.json()
        assert answer["ok"] is True, answer
        return answer

    async def ack_ivr(self, outbox_id: str) -> None:
        await self.hook("/hooks/ivr", {"id": outbox_id, "digits": "1"})
        self.posted.append(Posted(outbox_id, "ivr", time.monotonic()))

    async def ack_sms(self, body: dict[str, Any], text: str) -> None:
        await self.hook("/hooks/reply", {"from": body["to"], "text": text})
        self.posted.append(Posted(body["id"], "sms", time.monotonic()))


def write_setup(tmp: Path, gateway_url: str) -> None:
    (tmp / "hook-secret").write_bytes(SECRET)
    write_contacts(tmp / "contacts", county_rows(townships=6, villages=8))
    (tmp / "warnd.toml").write_text(
        f"""
timezone = "Asia/Shanghai"
[store]
url = "sqlite:///{tmp / "warnd.db"}"
[contacts]
path = "{tmp / "contacts"}"
[[stages]]
level = "county"
lead = "6h"
[[stages]]
level = "township"
lead = "3h"
[[stages]]
level = "village"
lead = "1h"
[ack]
window = "5m"
attempts = {ATTEMPTS}
[escalation]
ladder = ["backup", "superior", "duty"]
[trigger]
min_severity = "Moderate"
[listen]
host = "127.0.0.1"
port = 0
[hooks]
secret_file = "{tmp / "hook-secret"}"
[[feeds]]
name = "incoming"
path = "{tmp / "incoming"}"
interval = "1s"
[channels.gateway]
type = "webhook"
url = "{gateway_url}"
kinds = ["voice", "sms"]
""",
        encoding="utf-8",
    )
    incoming = tmp / "incoming"
    incoming.mkdir()
    alert = incoming / "alert.xml"
    # no onset, no effective: every stage is past at arrival and fires at once
    alert.write_bytes(cap_xml(ID, T0, expires=T0 + timedelta(hours=12)))
    old = time.time() - 60  # settled: the folder feed takes it on its first poll
    os.utime(alert, (old, old))


async def test_sigkill_mid_fan_out_loses_nothing(tmp_path: Path) -> None:
    run = Run(tmp_path)
    url = await run.gateway.start()
    write_setup(tmp_path, url)
    run.set_clock(T0)
    try:
        await _scenario(run)
    finally:
        if run.proc is not None and run.proc.returncode is None:
            run.proc.kill()
            await run.proc.wait()
        await run.gateway.stop()


async def _scenario(run: Run) -> None:
    gw = run.gateway
    started = time.monotonic()

    # -- run 1: the gateway answers 5 requests and then stalls; SIGKILL with sends in flight.
    #    What the dead process had claimed (leased; up to a whole claim batch) goes out again
    #    only when the lease runs out, one minute of clock time later.
    gw.hold_after(5)
    await run.start()
    await gw.wait_for(6)
    k1 = await run.kill()
    assert k1.in_flight, "some sends must have been in flight at the first kill"

    # -- run 2: acknowledge three of the first calls; the lease runs out; kill mid-resend ---
    await run.start()
    await run.quiet()
    early = {r.id for r in gw.receipts[k1.received :]} & k1.in_flight
    assert early == set(), "a leased message must not be resent before its lease runs out"
    for r in gw.receipts[:3]:
        await run.ack_ivr(r.id)
    gw.hold_after(40)
    run.set_clock(T0 + LEASE)
    await gw.wait_for(41)
    await run.kill()
    assert len(run.rows("SELECT id FROM ack")) == 3  # committed before the kill
    resent = {r.id for r in gw.receipts[k1.received :]}
    assert k1.in_flight & resent, "in-flight messages are resent under their own id"
    assert not resent & {r.id for r in gw.receipts[:3]}, "acknowledged calls are not resent"

    # -- run 3: two more acks, the second lease runs out, then a kill while the redials
    #    stream out freely (no stall: some answered by the gateway, not yet marked sent)
    await run.start()
    await run.quiet()
    acked = {r.body["contact"] for r in gw.receipts[:3]}
    fresh = list({r.body["contact"]: r.body for r in gw.receipts if r.ok}.values())
    fresh = [b for b in fresh if b["contact"] not in acked]  # one message each, not yet acked
    await run.ack_sms(fresh[0], f"好的 {fresh[0]['reply_code']}")
    await run.ack_ivr(fresh[1]["id"])
    await run.advance(T0 + 2 * LEASE)
    stage_ids = {r["id"] for r in run.rows("SELECT id FROM outbox WHERE attempt = 1")}
    assert stage_ids - {r.id for r in gw.receipts} == set(), "every first attempt went out"
    wave_start = gw.count
    gw.on_count(wave_start + 15, lambda _r: run.sigkill())  # killed at the 15th redial
    run.set_clock(T0 + WINDOW)
    await gw.wait_for(wave_start + 15)
    k3 = await run.kill()
    assert k3.received < wave_start + 45, "the third kill must fall inside the redial wave"

    # -- run 4: to the end of the ladder, through a flaky gateway (retried under the same id)
    gw.share_5xx = 0.03
    await run.start()
    await run.quiet()
    for when in [T0 + WINDOW + LEASE] + [T0 + k * WINDOW for k in range(2, 13)]:
        await run.advance(when)
    assert await run.terminate() == 0  # SIGTERM: a clean stop
    elapsed = time.monotonic() - started

    _verify(run)
    print(
        f"\ncrash test: {gw.count} requests, kills at {[k.received for k in run.kills]},"
        f" in flight {[len(k.in_flight) for k in run.kills]}, {elapsed:.1f}s"
    )


def _verify(run: Run) -> None:
    gw = run.gateway
    outbox = {r["id"]: r for r in run.rows("SELECT * FROM outbox")}
    calls = {r["id"]: r for r in run.rows("SELECT * FROM call")}
    divisions = {r["id"]: r for r in run.rows("SELECT * FROM division")}
    received: dict[int, set[int]] = defaultdict(set)  # call id → attempts the gateway got
    for r in gw.receipts:
        assert r.body.keys() >= BODY_KEYS and r.body["warning"] == ID
        row = outbox[r.id]
        assert r.body["contact"] == row["contact_id"] and r.body["purpose"] == row["purpose"]
        if row["purpose"] == "call":
            received[row["call_id"]].add(row["attempt"])

    # 1. every A person of every division got its stage call, every attempt of it
    a_rows = [r for r in county_rows(townships=6, villages=8) if r[4] == "A"]
    stage_calls = {(c["contact_id"], c["rung"]): c for c in calls.values() if c["rung"] == "stage"}
    assert {cid for cid, _ in stage_calls} == {r[0] for r in a_rows}
    assert len(stage_calls) == len(a_rows) == 55
    for c in stage_calls.values():
        assert received[c["id"]] == set(range(1, c["attempts_made"] + 1)), dict(c)
        if c["state"] != "acked":
            assert (c["state"], c["attempts_made"]) == ("failed", ATTEMPTS), dict(c)

    # 2. no acknowledgement posted before a kill is lost, and those calls stopped there
    acks = {a["outbox_id"]: a for a in run.rows("SELECT * FROM ack")}
    assert len(run.posted) == 5 and {p.outbox_id for p in run.posted} <= acks.keys()
    for p in run.posted:
        a, msg = acks[p.outbox_id], outbox[p.outbox_id]
        assert a["source"] == p.source and a["late"] == 0
        call = calls[msg["call_id"]]
        assert call["state"] == "acked" and call["attempts_made"] == msg["attempt"]
        assert received[call["id"]] == set(range(1, msg["attempt"] + 1))
        later = [
            r for r in gw.receipts if r.at > p.answered_at and outbox[r.id]["call_id"] == call["id"]
        ]
        assert later == [], f"call {call['id']} got attempts after its acknowledgement"
        assert divisions[call["division_id"]]["reached_at"] is not None

    # 3. the same id twice only if it was in flight at a kill (received, not marked sent)
    in_flight = set().union(*(k.in_flight for k in run.kills))
    retried = {r.id for r in gw.receipts if not r.ok}  # answered 503: retried, same id
    repeats = {i for i, n in gw.id_counts().items() if n > 1}
    assert repeats <= in_flight | retried, repeats - in_flight - retried
    assert gw.unexpected_repeats(allowed=in_flight) == []
    assert any(r.status == 503 for r in gw.receipts), "the flaky gateway was exercised"
    assert all(row["state"] in ("sent", "cancelled") for row in outbox.values())

    # 4. redials and escalations happened: every unreached division went up the whole ladder
    duty_calls = defaultdict(list)
    for c in calls.values():
        if c["rung"] == "duty":
            duty_calls[c["division_id"]].append(c)
    unreached = [d for d in divisions.values() if d["reached_at"] is None]
    assert len(unreached) == len(divisions) - 5
    for d in unreached:
        assert d["rung"] == "ended" and d["unreached_at"] is not None, dict(d)
        rungs = {c["rung"] for c in calls.values() if c["division_id"] == d["id"]}
        expected = {"stage", "backup", "duty"} | ({"superior"} if len(d["code"]) > 6 else set())
        assert rungs == expected, (d["code"], rungs)
        (duty,) = duty_calls[d["id"]]
        assert (duty["contact_id"], duty["attempts_made"]) == ("c-433122-duty", ATTEMPTS)
        assert received[duty["id"]] == {1, 2, 3}


def test_file_clock_sees_every_rewrite(tmp_path: Path) -> None:
    """A rewrite inside the file system's timestamp granularity is not missed."""
    path = tmp_path / "clock.txt"
    path.write_text(T0.isoformat())
    clock = FileClock(str(path))
    assert clock.now() == T0
    stamp = path.stat().st_mtime_ns
    later = T0 + timedelta(minutes=5, seconds=30)
    path.write_text(later.isoformat() + "\n")
    os.utime(path, ns=(stamp, stamp))  # same mtime as before, as on a coarse-grained kernel
    assert clock.now() == later
    run = Run(tmp_path)
    run.set_clock(later + WINDOW)  # the test's own writer: an atomic replace
    assert clock.now() == later + WINDOW
