"""Fan-out benchmark: a province-wide warning (~100,000 persons) through the real daemon.

Prints, in one run on this machine:
  * time to ingest the warning and persist its plan, and to fire all three stages
    (divisions, calls, outbox rows for every A person);
  * sustained attempts/s from the daemon's sender to a local gateway fake (a separate
    process), next to a bare aiohttp client posting the same bodies to the same fake in the same
    run (once before and once after the daemon; their mean is the baseline): the ratio is the
    figure that matters on a shared, noisy machine; process CPU per message, daemon and bare
    client, is the steadier view of the same thing; and the ratio to the same client with the
    garbage collector paused (in this big heap it costs the bare client ~20 % per request);
  * time for the engine to process ~100,000 overdue escalations (every village call fails at
    once with attempts = 1, each division moves to its backup rung);
  * the floor of that sweep, in the same run: bare ``sqlite3`` (WAL, ``synchronous=FULL``, the
    store's own schema) updating as many call rows by id and inserting as many attempt rows
    (the outbox: its two indexes) in one transaction, and the sweep as a multiple of it.

Targets: sender / bare client ≥ 0.80; sweep ≤ 5 × its floor (exit 1 when missed; SQLite only:
the floor is SQLite's).

Usage: .venv/bin/python bench/fanout.py [--villages-per-township 17] [--store-url URL]
       [--pg-url postgresql://…/postgres] [--keep]
(``--pg-url``: a server where a database is created for the run and dropped after it.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from directory_gen import generate  # noqa: E402
from factory import cap_xml  # noqa: E402

from warnd.config.policy import load_config  # noqa: E402
from warnd.core.clock import ManualClock  # noqa: E402
from warnd.edges import logs  # noqa: E402
from warnd.edges.daemon import Daemon  # noqa: E402
from warnd.edges.feeds import FeedItem  # noqa: E402
from warnd.store import Store  # noqa: E402

CONCURRENCY = 64
TARGET_SEND, TARGET_SWEEP = 0.80, 5.0


async def sweep_floor(tmp: Path, n: int, text_sample: str) -> float:
    """Seconds for bare sqlite3 to update ``n`` call rows by id and insert ``n`` attempt rows
    (the real schema, WAL, synchronous=FULL) in one transaction, with that many calls there."""
    path = tmp / "floor.db"
    await (await Store.open(f"sqlite:///{path}")).close()  # the schema, by its migrations
    con = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "cache_size=-65536"):
        con.execute("PRAGMA " + pragma)
    at, due = "2025-07-01 00:00:00.000000", "2025-07-01 00:05:00.000000"
    con.execute("BEGIN")
    con.execute(
        "INSERT INTO warning (id, key, sender, identifier, drill, state, area, arrived_at,"
        " updated_at) VALUES (1, 'k', 's', 'k', 0, 'active', '[]', ?, ?)",
        (at, at),
    )
    con.executemany(
        "INSERT INTO division (id, warning_id, code, name, level, round, rung, stopped)"
        " VALUES (?, 1, ?, ?, 'village', 1, 'stage', 0)",
        [(i, f"43{i:010d}", f"村{i}") for i in range(1, n // 4 + 2)],
    )
    con.executemany(
        'INSERT INTO "call" (id, warning_id, division_id, key, contact_id, phone, rung, round,'
        " start_at, attempts_made, next_due_at, state) VALUES (?, 1, ?, ?, ?, ?, 'stage', 1, ?,"
        " 1, ?, 'active')",
        [
            (i, i // 4 + 1, f"1:stage:c-{i:07d}", f"c-{i:07d}", f"+861381{i:07d}", at, due)
            for i in range(1, n + 1)
        ],
    )
    con.execute("COMMIT")
    ids = sorted(os.urandom(16).hex() for _ in range(n))
    t = time.perf_counter()
    con.execute("BEGIN IMMEDIATE")
    con.executemany(
        'UPDATE "call" SET attempts_made = ?, next_due_at = ?, state = ?, ended_at = ?,'
        " acked_at = ?, ack_source = ?, last_message = ? WHERE id = ?",
        [(1, None, "failed", due, None, None, None, i) for i in range(1, n + 1)],
    )
    con.executemany(
        'INSERT INTO outbox (id, warning_id, call_id, message_id, contact_id, "to", purpose,'
        " attempt, rung, text, at, due_at, state, tries, drill, seq)"
        " VALUES (?, 1, ?, NULL, ?, ?, 'call', 1, 'backup', ?, ?, ?, 'pending', 0, 0, ?)",
        [
            (mid, i, f"c-{i:07d}", f"+861381{i:07d}", text_sample, due, due, i)
            for i, mid in enumerate(ids, start=1)
        ],
    )
    con.execute("COMMIT")
    elapsed = time.perf_counter() - t
    con.close()
    return elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    raise RuntimeError("gateway fake did not start")


async def bare_client(url: str, n: int, *, gc_off: bool = False) -> tuple[float, float]:
    """Baseline: the same JSON bodies posted by a plain aiohttp client, CONCURRENCY at a time.

    Returns (requests/s, process CPU µs per request). ``gc_off``: with the cyclic garbage
    collector paused, as the daemon pauses it for each batch of sends — the cost of HTTP alone.
    """
    body = {
        "id": "",
        "to": "+8613800000000",
        "kind": "voice",
        "purpose": "call",
        "text": "【预警叫应】" + "暴雨橙色预警" * 5,
        "warning": "w",
        "contact": "c",
    }
    sem = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession() as s:

        async def one(i: int) -> None:
            async with sem, s.post(url, json={**body, "id": f"bare-{i}"}) as r:
                await r.read()

        if gc_off:
            gc.disable()
        try:
            start, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one(i) for i in range(n)))
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        finally:
            gc.enable()
        return n / elapsed, cpu / n * 1e6


def province_alert(now: datetime) -> bytes:
    """The benchmarks' warning: the whole province (430000), no onset, so every stage is due."""
    return cap_xml(
        "43000041600000_20250701000000",
        now,
        geocodes=["430000000000"],
        headline="湖南省气象台发布暴雨红色预警",
        severity="Extreme",
    )


def write_config(tmp: Path, url: str, store_url: str, contacts: Path, attempts: int) -> Path:
    (tmp / "secret").write_text("bench-secret-0123456789abcdefghijkl\n")
    cfg = tmp / "warnd.toml"
    cfg.write_text(
        f"""
[store]
url = "{store_url}"
[contacts]
path = "{contacts}"
[ack]
window = "5m"
attempts = {attempts}
[listen]
host = "127.0.0.1"
port = 0
[hooks]
secret_file = "{tmp / "secret"}"
[[feeds]]
name = "incoming"
path = "{tmp / "incoming"}"
[channels.gateway]
type = "webhook"
url = "{url}"
kinds = ["voice", "sms"]
concurrency = {CONCURRENCY}
""",
        encoding="utf-8",
    )
    return cfg


async def start_daemon(tmp: Path, gateway_url: str, store_url: str) -> tuple[Daemon, ManualClock]:
    """The real daemon over ``tmp/contacts`` (attempts = 1), on a manual clock at 2025-07-01,
    started and settled (the start's own wake, and any sender it started, is over)."""
    cfg = load_config(write_config(tmp, gateway_url, store_url, tmp / "contacts", 1))
    clock = ManualClock(datetime(2025, 7, 1, 0, 0, tzinfo=UTC))
    daemon = Daemon(cfg, clock=clock, scheduler=False, port=0)
    await daemon.start()
    await daemon.settle()
    return daemon, clock


async def run(args: argparse.Namespace) -> dict[str, object]:
    logs.configure(json=True, level="warning")
    tmp = Path(tempfile.mkdtemp(prefix="warnd-fanout-"))
    load = os.getloadavg()
    gen = generate(tmp / "contacts", 122, 12, args.villages_per_township, 8, seed=7)
    port = free_port()
    gateway = subprocess.Popen([sys.executable, str(ROOT / "bench" / "gateway.py"), str(port)])
    base = f"http://127.0.0.1:{port}"
    figures: dict[str, object] = {"load_average": load, "rows": gen.rows, "villages": gen.villages}
    try:
        await wait_up(base + "/stats")
        store_url = args.store_url or f"sqlite:///{tmp / 'warnd.db'}"
        if args.pg_url:
            from conftest import fresh_pg_database

            store_url = await fresh_pg_database(args.pg_url)
            figures["store"] = store_url.rsplit("@", 1)[-1]
        daemon, clock = await start_daemon(tmp, base + "/send", store_url)
        assert daemon.engine is not None
        engine, now = daemon.engine, clock.now()
        alert = province_alert(now)
        t = time.perf_counter()
        await engine.ingest(FeedItem(alert, "bench"))
        figures["ingest_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        report = await engine.tick()
        figures["fire_stages_s"] = round(time.perf_counter() - t, 3)
        figures["stages_fired"] = report.stages_fired
        # sending: the daemon's own sender (claim → dispatch → mark), started by a wake that
        # finds no timer work due, until nothing is left to send; a bare client before and
        # after it (the mean is the baseline: one short run alone moves with the machine)
        ((queued,),) = await engine.ctx.store.fetch("SELECT count(*) FROM outbox")
        bare_n = min(queued, 20000)
        before, before_cpu = await bare_client(base + "/send", bare_n)
        tx0 = engine.ctx.store.writer.transactions
        t, cpu = time.perf_counter(), time.process_time()
        await daemon.wake()
        await daemon.settle()  # the sender may run as a background task of the wake
        figures["send_transactions"] = engine.ctx.store.writer.transactions - tx0
        send_s, send_cpu = time.perf_counter() - t, time.process_time() - cpu
        after, after_cpu = await bare_client(base + "/send", bare_n)
        ((sent,),) = await engine.ctx.store.fetch(
            "SELECT count(*) FROM outbox WHERE state = 'sent'"
        )
        bare, bare_cpu = (before + after) / 2, (before_cpu + after_cpu) / 2
        figures["attempts_sent"] = sent
        figures["attempts_left_unsent"] = queued - sent
        figures["send_s"] = round(send_s, 3)
        figures["daemon_attempts_per_s"] = round(sent / send_s, 1)
        figures["bare_client_per_s"] = round(bare, 1)
        figures["bare_client_before_after_per_s"] = [round(before, 1), round(after, 1)]
        figures["ratio_daemon_vs_bare"] = round(sent / send_s / bare, 3)
        # process CPU per message (all threads: the store's driver thread too); steadier than
        # rates on a shared machine
        figures["daemon_cpu_us_per_attempt"] = round(send_cpu / sent * 1e6, 1)
        figures["bare_cpu_us_per_request"] = round(bare_cpu, 1)
        figures["cpu_ratio_bare_vs_daemon"] = round(bare_cpu / (send_cpu / sent * 1e6), 3)
        # the bare client in this big heap pays the garbage collector on every request; the
        # same client with it paused is the stricter baseline
        strict, strict_cpu = await bare_client(base + "/send", bare_n, gc_off=True)
        figures["bare_client_gc_paused_per_s"] = round(strict, 1)
        figures["bare_gc_paused_cpu_us_per_request"] = round(strict_cpu, 1)
        figures["ratio_daemon_vs_gc_paused_bare"] = round(sent / send_s / strict, 3)
        async with aiohttp.ClientSession() as s, s.get(base + "/stats") as r:
            stats = await r.json()
        figures["gateway_requests"] = stats["requests"]
        # every call fails at once (attempts = 1): the escalation sweep
        clock.advance(timedelta(minutes=5))
        t = time.perf_counter()
        report = await engine.tick()
        figures["escalation_s"] = round(time.perf_counter() - t, 3)
        figures["calls_failed_and_escalated"] = report.calls_advanced
        ((made,),) = await engine.ctx.store.fetch(
            "SELECT count(*) FROM outbox WHERE rung = 'backup'"
        )
        ((sample,),) = await engine.ctx.store.fetch(
            "SELECT text FROM outbox WHERE rung = 'backup' LIMIT 1"
        )
        figures["backup_attempts_made"] = made
        await daemon.stop()
        if engine.ctx.store.is_sqlite:
            floor = await sweep_floor(tmp, report.calls_advanced, sample)
            figures["escalation_floor_s"] = round(floor, 3)
            figures["escalation_vs_floor"] = round(figures["escalation_s"] / floor, 2)  # type: ignore[operator]
    finally:
        gateway.terminate()
        gateway.wait()
        if args.pg_url and figures.get("store"):
            from conftest import drop_pg_database

            await drop_pg_database(args.pg_url, store_url)
        if args.keep:
            print(f"store and contacts kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)  # ~250 MB of store per full-size run
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--villages-per-township", type=int, default=17)
    p.add_argument("--store-url", default=None)
    p.add_argument("--pg-url", default=None, help="a PostgreSQL server to make a database on")
    p.add_argument("--keep", action="store_true", help="keep the temporary store and contacts")
    args = p.parse_args()
    figures = asyncio.run(run(args))
    missed = []
    if figures["ratio_daemon_vs_bare"] < TARGET_SEND:  # type: ignore[operator]
        missed.append(f"sender / bare ≥ {TARGET_SEND}")
    if figures.get("escalation_vs_floor", 0) > TARGET_SWEEP:  # type: ignore[operator]
        missed.append(f"escalation ≤ {TARGET_SWEEP} × floor")
    figures["load_average_after"] = os.getloadavg()
    figures["targets_missed"] = missed
    print(json.dumps(figures, ensure_ascii=False, indent=1))
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
