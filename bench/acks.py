"""Acknowledgement benchmark: a province's answers through the running daemon, and the engine's.

A province-wide warning (``bench/fanout.py``'s directory and warning) is fanned out by the real
daemon (SQLite, WAL, ``synchronous=FULL``; its sender to ``bench/gateway.py``). Then, in one run:

* **through HTTP**: signed IVR key presses (contracts §6) for 60 % of the persons, posted to the
  daemon's ``/hooks/ivr`` by a 64-connection client in a process of its own
  (``bench/ackclient.py``); a 200 means the answer is committed (durable before 200). Figure:
  durable acks/s, and the daemon's process CPU per ack.
* **the floor**: the same client with the same bodies against a bare aiohttp server (a process
  of its own) that verifies the same HMAC and answers 200; measured before and after the
  daemon, their mean. Figure: daemon / bare (target ≥ 0.5), daemon ≥ 2,000/s.
* **in the engine**: the remaining 40 % of the persons' attempts acknowledged by
  ``engine.ack_ivr`` directly, by 64 and by 1,000 concurrent callers (each call returns once its
  answer is committed; the single writer group-commits what queues meanwhile). Target
  ≥ 10,000/s.
* **the floors of the engine's figure**, bare ``sqlite3`` on the same store file afterwards
  (WAL, ``synchronous=FULL``, SQLite only): one committed ``UPDATE`` of a call per answer (the
  floor without batching), and the engine's own statements per answer — the attempt's call, the
  division and its calls read, the dedupe key probed, the call and the division updated, the
  ack inserted — 1,000 answers per transaction (the floor of the batched path at this scale).

Exits 1 when a target is missed. Logs at level ``warning`` (as the other benchmarks): at ``info``
each answer also writes two log lines.

Usage: .venv/bin/python bench/acks.py [--villages-per-township 17] [--keep]
       [--pg-url postgresql://…/postgres]   (a database made for the run on that server)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from directory_gen import generate  # noqa: E402
from fanout import free_port, province_alert, start_daemon, wait_up  # noqa: E402

from warnd.edges import logs  # noqa: E402
from warnd.edges.feeds import FeedItem  # noqa: E402
from warnd.engine import Engine  # noqa: E402

SHARE = 0.6
CONNECTIONS = 64
TARGET_HTTP, TARGET_RATIO, TARGET_ENGINE = 2000.0, 0.5, 10000.0


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client(url: str, secret: Path, ids: Path, ts: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ackclient.py"), "client", url, str(secret),
         str(ids), str(ts), "--connections", str(CONNECTIONS)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def client_async(url: str, secret: Path, ids: Path, ts: int) -> dict[str, Any]:
    return await asyncio.to_thread(client, url, secret, ids, ts)


async def engine_acks(engine: Engine, ids: list[str], callers: int) -> tuple[float, float]:
    """acks/s and process CPU µs per ack with ``callers`` concurrent ``engine.ack_ivr``."""
    it = iter(ids)
    bad = 0

    async def caller() -> None:
        nonlocal bad
        for mid in it:
            if not (await engine.ack_ivr(mid, "1")).ok:
                bad += 1

    t, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    assert bad == 0, f"{bad} answers refused"
    return len(ids) / elapsed, cpu / len(ids) * 1e6


def sql_floors(db: Path, message_ids: list[str]) -> dict[str, Any]:
    """Bare sqlite3 doing an answer's SQL on the store the engine just used (its rows are
    changed: the store is thrown away after)."""
    import sqlite3

    con = sqlite3.connect(db, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "cache_size=-65536"):
        con.execute("PRAGMA " + pragma)
    ids = [r[0] for r in con.execute('SELECT id FROM "call" ORDER BY random() LIMIT 5000')]
    t = time.perf_counter()
    for cid in ids:
        con.execute("BEGIN IMMEDIATE")
        con.execute("UPDATE \"call\" SET ack_source = 'floor' WHERE id = ?", (cid,))
        con.execute("COMMIT")
    one = len(ids) / (time.perf_counter() - t)
    at = "2025-07-01 00:03:00.000000"
    mids = message_ids[:20_000]
    t = time.perf_counter()
    for i in range(0, len(mids), 1000):
        part = mids[i : i + 1000]
        marks = ", ".join("?" * len(part))
        con.execute("BEGIN IMMEDIATE")
        refs = con.execute(
            'SELECT o.id, c.id, c.division_id FROM outbox o JOIN "call" c ON c.id = o.call_id'
            f" WHERE o.id IN ({marks})",
            part,
        ).fetchall()
        divs = sorted({r[2] for r in refs})
        dm = ", ".join("?" * len(divs))
        con.execute(f"SELECT * FROM division WHERE id IN ({dm})", divs).fetchall()
        con.execute(f'SELECT * FROM "call" WHERE division_id IN ({dm})', divs).fetchall()
        keys = [f"floor:{r[0]}" for r in refs]
        con.execute(
            f"SELECT dedupe_key FROM ack WHERE dedupe_key IN ({', '.join('?' * len(keys))})",
            keys,
        ).fetchall()
        con.executemany(
            "UPDATE \"call\" SET state = 'acked', acked_at = ?, ack_source = 'floor',"
            " next_due_at = NULL WHERE id = ?",
            [(at, r[1]) for r in refs],
        )
        con.executemany(
            "UPDATE division SET reached_at = ?, reached_by = 'floor', reached_source = 'floor'"
            " WHERE id = ?",
            [(at, d) for d in divs],
        )
        con.executemany(
            "INSERT INTO ack (warning_id, call_id, division_id, outbox_id, source, received_at,"
            " dedupe_key, late, counted) VALUES (1, ?, ?, ?, 'floor', ?, ?, 0, 0)",
            [(r[1], r[2], r[0], at, k) for r, k in zip(refs, keys, strict=True)],
        )
        con.execute("COMMIT")
    batched = len(mids) / (time.perf_counter() - t)
    con.close()
    return {
        "floor_one_committed_update_per_s": round(one, 1),
        "floor_engine_sql_1000_per_commit_per_s": round(batched, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    logs.configure(json=True, level="warning")
    tmp = Path(tempfile.mkdtemp(prefix="warnd-acks-"))
    figures: dict[str, Any] = {"load_average": os.getloadavg()}
    gen = generate(tmp / "contacts", 122, 12, args.villages_per_township, 8, seed=7)
    figures["rows"] = gen.rows
    gw_port, bare_port = free_port(), free_port()
    procs = [
        subprocess.Popen([sys.executable, str(ROOT / "bench" / "gateway.py"), str(gw_port)]),
    ]
    try:
        await wait_up(f"http://127.0.0.1:{gw_port}/stats")
        store_url = f"sqlite:///{tmp / 'warnd.db'}"
        if args.pg_url:
            from conftest import fresh_pg_database

            store_url = await fresh_pg_database(args.pg_url)
            figures["store"] = store_url.rsplit("@", 1)[-1]
        daemon, clock = await start_daemon(tmp, f"http://127.0.0.1:{gw_port}/send", store_url)
        secret = tmp / "secret"
        procs.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "ackclient.py"), "server", str(bare_port),
                 str(secret)]
            )
        )  # fmt: skip
        await wait_up(f"http://127.0.0.1:{bare_port}/ready")
        assert daemon.engine is not None and daemon.store is not None
        engine, store = daemon.engine, daemon.store
        t = time.perf_counter()
        await engine.ingest(FeedItem(province_alert(clock.now()), "bench"))
        await daemon.wake()
        await daemon.settle()
        figures["fan_out_s"] = round(time.perf_counter() - t, 1)
        rows = await store.fetch(
            "SELECT id FROM outbox WHERE purpose = 'call' AND attempt = 1 AND state = 'sent'"
            " ORDER BY id"
        )
        ids = [r[0] for r in rows]
        random.Random(7).shuffle(ids)
        cut = int(len(ids) * SHARE)
        http_ids, engine_ids = ids[:cut], ids[cut:]
        figures["persons_called"] = len(ids)
        (tmp / "ids.txt").write_text("\n".join(http_ids), encoding="utf-8")
        ts = int(clock.now().timestamp())  # the daemon judges a signature's age by its clock
        bare_url = f"http://127.0.0.1:{bare_port}/hooks/ivr"
        bare_cpu = proc_cpu(procs[1].pid)
        before = await client_async(bare_url, secret, tmp / "ids.txt", ts)
        bare_cpu = proc_cpu(procs[1].pid) - bare_cpu
        port = daemon.bound_port
        tx0 = store.writer.transactions
        cpu = time.process_time()
        mine = await client_async(f"http://127.0.0.1:{port}/hooks/ivr", secret, tmp / "ids.txt", ts)
        cpu = time.process_time() - cpu
        after = await client_async(bare_url, secret, tmp / "ids.txt", ts + 1)
        ((acked,),) = await store.fetch("SELECT count(*) FROM ack WHERE counted")
        assert mine["ok"] == len(http_ids) == acked, (mine, acked)
        bare = (before["per_s"] + after["per_s"]) / 2
        figures["http_acks"] = mine["ok"]
        figures["http_durable_acks_per_s"] = mine["per_s"]
        figures["bare_server_per_s"] = round(bare, 1)
        figures["bare_before_after_per_s"] = [before["per_s"], after["per_s"]]
        figures["ratio_daemon_vs_bare"] = round(mine["per_s"] / bare, 3)
        figures["daemon_cpu_us_per_http_ack"] = round(cpu / len(http_ids) * 1e6, 1)
        figures["bare_server_cpu_us_per_request"] = round(bare_cpu / len(http_ids) * 1e6, 1)
        figures["client_cpu_us_per_request_daemon_bare"] = [
            mine["client_cpu_us"],
            before["client_cpu_us"],
        ]
        figures["http_acks_per_commit"] = round(
            len(http_ids) / max(1, store.writer.transactions - tx0), 1
        )
        half = len(engine_ids) // 2
        t0 = store.writer.transactions
        rate64, cpu64 = await engine_acks(engine, engine_ids[:half], 64)
        tx64 = store.writer.transactions - t0
        t0 = store.writer.transactions
        rate1000, cpu1000 = await engine_acks(engine, engine_ids[half:], 1000)
        tx1000 = store.writer.transactions - t0
        figures["engine_acks_per_s_64_callers"] = round(rate64, 1)
        figures["engine_cpu_us_per_ack_64_callers"] = round(cpu64, 1)
        figures["engine_acks_per_batch_64_callers"] = round(half / max(1, tx64), 1)
        figures["engine_acks_per_s_1000_callers"] = round(rate1000, 1)
        figures["engine_cpu_us_per_ack_1000_callers"] = round(cpu1000, 1)
        figures["engine_acks_per_batch_1000_callers"] = round(
            (len(engine_ids) - half) / max(1, tx1000), 1
        )
        await daemon.stop()
        if store_url.startswith("sqlite"):
            figures.update(sql_floors(tmp / "warnd.db", engine_ids))
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        if args.pg_url and figures.get("store"):
            from conftest import drop_pg_database

            await drop_pg_database(args.pg_url, store_url)
        if args.keep:
            print(f"store and contacts kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    figures["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    figures["load_average_after"] = os.getloadavg()
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--villages-per-township", type=int, default=17)
    p.add_argument("--keep", action="store_true", help="keep the temporary store and contacts")
    p.add_argument("--pg-url", default=None, help="a PostgreSQL server to make a database on")
    args = p.parse_args()
    figures = asyncio.run(run(args))
    engine_best = max(
        figures["engine_acks_per_s_64_callers"], figures["engine_acks_per_s_1000_callers"]
    )
    missed = [
        name
        for name, ok in (
            ("http ≥ 2,000/s", figures["http_durable_acks_per_s"] >= TARGET_HTTP),
            ("daemon/bare ≥ 0.5", figures["ratio_daemon_vs_bare"] >= TARGET_RATIO),
            ("engine ≥ 10,000/s", engine_best >= TARGET_ENGINE),
        )
        if not ok
    ]
    figures["targets_missed"] = missed
    print(json.dumps(figures, ensure_ascii=False, indent=1))
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
