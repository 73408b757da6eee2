"""``warnd serve`` killed with SIGKILL mid-fan-out, restarted at once, and nothing is lost.

The daemon runs as a real subprocess (the ``warnd`` console script) with a file clock; the
gateway fake runs in this test process and records what it received and answered. A 2,001-person
fan-out is killed five times in the middle of its wave (at chosen gateway request counts, the
kill sent before the request is answered); acknowledgements are posted between kills; each
restarted daemon must send the rest of the wave at once (no lease to wait for: one daemon per
SQLite store), the whole chain then runs through its redials and backups, and at the end:
every person got every attempt, no acknowledgement answered 200 was lost, an id reached the
gateway twice only if it was in flight at a kill (received, not yet recorded sent), and what
was in flight at a kill never exceeded the channel's concurrency. Run with the default window
and with ``window = "60s"`` (where, with the clock moving across the restarts, a lease as long
as the window once cost first attempts).

Waiting is always on an observable (gateway request count, a log line, the store having no
due work at the current file-clock time), in bounded polling loops; see docs/testing.md.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

from crash_rig import ATTEMPTS, CONCURRENCY, ID, SECRET, T0, Run
from factory import cap_xml, county_rows, write_contacts
from gateway_fake import BODY_KEYS

from warnd.core.clock import FileClock
from warnd.core.duration import parse_duration
from warnd.testing import daemon_config


def write_setup(tmp: Path, gateway_url: str, *, window: str = "5m") -> None:
    write_contacts(tmp / "contacts", ROWS)
    daemon_config(
        tmp,
        gateway_url=gateway_url,
        secret=SECRET,
        stages=[("village", "1h")],
        window=window,
        attempts=ATTEMPTS,
        ladder=["backup"],
        feed_interval="1s",
        channel={"concurrency": CONCURRENCY},
    )
    incoming = tmp / "incoming"
    incoming.mkdir()
    alert = incoming / "alert.xml"
    # no onset, no effective: the village stage is past at arrival and fires at once
    alert.write_bytes(cap_xml(ID, T0, expires=T0 + timedelta(hours=12)))
    old = time.time() - 60  # settled: the folder feed takes it on its first poll
    os.utime(alert, (old, old))


#: 40 townships × 50 villages: 2,000 villages, an A and a B each, and the county's duty office
ROWS = county_rows(townships=40, villages=50)
VILLAGES = sorted({r[1] for r in ROWS if r[3] == "village"})
KILLS_AT = (150, 600, 1000, 1450, 1850)  # gateway request counts of the first wave


async def test_sigkill_mid_fan_out_loses_nothing(tmp_path: Path) -> None:
    await _case(tmp_path, "5m", step=timedelta(0))


async def test_sigkill_mid_fan_out_with_a_one_minute_window(tmp_path: Path) -> None:
    """Each restart takes 10 s of clock time: with a 60-second window the rest of the wave
    must still go out as first attempts, not be overtaken by the second ones."""
    await _case(tmp_path, "60s", step=timedelta(seconds=10))


async def _case(tmp: Path, window: str, *, step: timedelta) -> None:
    run = Run(tmp)
    url = await run.gateway.start()
    write_setup(tmp, url, window=window)
    run.set_clock(T0)
    try:
        await _scenario(run, parse_duration(window), step)
    finally:
        if run.proc is not None and run.proc.returncode is None:
            run.proc.kill()
            await run.proc.wait()
        await run.gateway.stop()


async def _scenario(run: Run, window: timedelta, step: timedelta) -> None:
    gw = run.gateway
    started = time.monotonic()
    resumed: list[float] = []  # seconds from a restart to its first request at the gateway
    # -- the first wave, killed five times: each restart sends the rest at once ------------
    for n, at in enumerate(KILLS_AT):
        gw.on_count(at, lambda _r: run.sigkill())
        if n == 0:
            await run.start()
        await gw.wait_for(at, timeout=60)
        before = gw.count
        kill = await run.kill()
        assert len(kill.in_flight) <= CONCURRENCY, (at, len(kill.in_flight))
        # answers for a few people who were called, posted to the next daemon
        run.set_clock(run.now + step)
        await run.start()
        await gw.wait_for(before + 1, timeout=10)
        resumed.append(gw.receipts[before].at - run.started_at[-1])
        for r in [r for r in gw.receipts[:before] if r.ok][n * 40 : n * 40 + 8]:
            await run.ack_ivr(r.id)
    restarted = run.started_at[-1]
    await run.quiet(timeout=30)
    finished = time.monotonic() - restarted
    first = {r["call_id"] for r in run.rows("SELECT call_id FROM outbox WHERE attempt = 1")}
    assert len(first) == len(VILLAGES) == 2000
    assert finished < 5, f"the rest of the wave took {finished:.1f} s after the last restart"
    assert all(s < 2 for s in resumed), resumed

    # -- answers by SMS too; then the chain to its end: redials, backups -------------------
    fresh = [r.body for r in gw.receipts if r.ok and r.body["contact"].endswith("-a")][-10:]
    for body in fresh[:5]:
        await run.ack_sms(body, f"好的 {body['reply_code']}")
    for k in range(1, 2 * ATTEMPTS + 1):
        await run.advance(T0 + k * window + len(KILLS_AT) * step)
    assert await run.terminate() == 0
    elapsed = time.monotonic() - started
    _verify(run)
    print(
        f"\ncrash test (window {window}): {gw.count} requests, kills at"
        f" {[k.received for k in run.kills]}, in flight {[len(k.in_flight) for k in run.kills]},"
        f" resumed after {[round(s, 2) for s in resumed]} s, rest of the wave {finished:.1f} s,"
        f" {elapsed:.1f} s in all"
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

    # 1. every person called got every attempt of the call
    stage = [c for c in calls.values() if c["rung"] == "stage"]
    assert len(stage) == len(VILLAGES)
    for c in calls.values():
        assert received[c["id"]] == set(range(1, c["attempts_made"] + 1)), dict(c)
        if c["state"] != "acked":
            assert (c["state"], c["attempts_made"]) == ("failed", ATTEMPTS), dict(c)

    # 2. no acknowledgement answered 200 is lost, and those calls stopped there
    acks = {a["outbox_id"]: a for a in run.rows("SELECT * FROM ack")}
    assert len(run.posted) == 5 * 8 + 5 and {p.outbox_id for p in run.posted} <= acks.keys()
    for p in run.posted:
        msg = outbox[p.outbox_id]
        call = calls[msg["call_id"]]
        assert acks[p.outbox_id]["source"] == p.source
        assert call["state"] == "acked", dict(call)
        later = [
            r for r in gw.receipts if r.at > p.answered_at and outbox[r.id]["call_id"] == call["id"]
        ]
        assert later == [], f"call {call['id']} got attempts after its acknowledgement"
        assert divisions[call["division_id"]]["reached_at"] is not None

    # 3. the same id twice only if it was in flight at a kill (received, not recorded sent)
    in_flight = set().union(*(k.in_flight for k in run.kills))
    repeats = {i for i, n in gw.id_counts().items() if n > 1}
    assert repeats <= in_flight, repeats - in_flight
    assert gw.unexpected_repeats(allowed=in_flight) == []
    assert all(row["state"] in ("sent", "cancelled") for row in outbox.values())

    # 4. every division nobody answered for went to its backup, who got every attempt
    unreached = [d for d in divisions.values() if d["reached_at"] is None]
    assert len(unreached) == len(divisions) - len(run.posted)
    for d in unreached:
        rungs = {c["rung"] for c in calls.values() if c["division_id"] == d["id"]}
        assert rungs == {"stage", "backup"} and d["rung"] == "ended", (d["code"], rungs)


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
    run.set_clock(later + timedelta(minutes=5))  # the test's own writer: an atomic replace
    assert clock.now() == later + timedelta(minutes=5)
