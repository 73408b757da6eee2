"""Fan-out on PostgreSQL: one daemon instance, then two instances sharing the database.

The province-wide warning of ``bench/fanout.py`` (its generator, gateway process, config writer
and bare client are imported, not copied), on a fresh PostgreSQL database per configuration.
Each instance is a real ``Daemon`` (store, engine, channels, its own sender) in its own process
(``multiprocessing``, spawn), all on one ``ManualClock`` time; barriers start every phase in
all of them at once. Prints, for each configuration:

  * ``fire_stages_s``: every instance calls ``engine.tick()`` at once: one marks a stage's
    divisions due (stages are claimed with ``SKIP LOCKED``), then all of them start those
    divisions' calls in batches (``SKIP LOCKED`` again): ``divisions_started_by_instance`` is the
    split of the stages' work (target: each of two instances ≥ 30 % of a province stage);
  * ``attempts_per_s``: every instance wakes its sender at once (claims with ``SKIP LOCKED``);
    attempts marked sent over the time until the last instance's sender finished; the split of
    the work (``outbox.claimed_by``) and the daemons' CPU per attempt (all instances' process
    time summed);
  * the bare aiohttp client of ``bench/fanout.py`` against the same gateway process, before and
    after the daemons in the same run (their mean is the baseline), and the ratio; for n
    instances also n bare client processes at once (the same number of senders; the one
    gateway process and the cores they share set the ceiling).

Usage: .venv/bin/python bench/fanout_instances.py [--villages-per-township 4]
       [--instances 1,2] [--pg-url postgresql://postgres@127.0.0.1:55432/postgres]
(``--villages-per-township 17`` is the full province, ~127,000 attempts: several minutes.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fanout
from conftest import drop_pg_database, fresh_pg_database
from directory_gen import generate
from factory import cap_xml

from warnd.config.policy import load_config
from warnd.core.clock import ManualClock
from warnd.edges import logs
from warnd.edges.daemon import Daemon
from warnd.edges.feeds import FeedItem

NOW = datetime(2025, 7, 1, 0, 0, tzinfo=UTC)
ALERT = cap_xml(
    "43000041600000_20250701000000",
    NOW,
    geocodes=["430000000000"],
    headline="湖南省气象台发布暴雨红色预警",
    severity="Extreme",
)


def instance(index: int, config: str, barrier: Any, results: Any) -> None:
    """One daemon process (the ``multiprocessing`` target)."""
    results.put(asyncio.run(_instance(index, config, barrier)))


async def _instance(index: int, config: str, barrier: Any) -> dict[str, Any]:
    logs.configure(json=True, level="warning")
    daemon = Daemon(load_config(Path(config)), clock=ManualClock(NOW), scheduler=False, port=0)
    await daemon.start()
    await daemon.settle()
    assert daemon.engine is not None and daemon.store is not None
    # the bench ticks each instance itself (and counts what each did): no wakes on the side
    daemon.store.on_work = None
    engine = daemon.engine
    out: dict[str, Any] = {"instance": engine.ctx.instance}

    async def together() -> None:
        await asyncio.to_thread(barrier.wait)

    await together()  # every instance is up
    if index == 0:
        t = time.perf_counter()
        await engine.ingest(FeedItem(ALERT, "bench"))
        out["ingest_s"] = time.perf_counter() - t
    await together()
    t = time.perf_counter()
    out["stages_fired"] = out["divisions_started"] = 0
    while True:  # as a daemon's wakes would: until nothing of the stages is left to do
        report = await engine.tick()
        out["stages_fired"] += report.stages_fired
        out["divisions_started"] += report.divisions_started
        if report.progressed:
            continue
        ((left,),) = await engine.ctx.store.fetch(
            "SELECT count(*) FROM stage WHERE state = 'pending'"
            " UNION ALL SELECT count(*) FROM division WHERE start_due IS NOT NULL"
            " ORDER BY 1 DESC LIMIT 1"
        )
        if not left:
            break
        await asyncio.sleep(0.02)  # another instance is marking a stage's divisions
    out["fire_s"] = time.perf_counter() - t
    await together()
    t, cpu = time.perf_counter(), time.process_time()
    await daemon.wake()  # nothing else is due: the sender claims and sends until none is left
    await daemon.settle()
    out["send_s"], out["send_cpu_s"] = time.perf_counter() - t, time.process_time() - cpu
    async with engine.ctx.store.read() as s:
        q = "SELECT count(*) FROM outbox WHERE state = 'sent' AND claimed_by = :me"
        out["sent"] = (await s.execute(text(q), {"me": engine.ctx.instance})).scalar_one()
    await together()  # nobody stops (and closes its pool) while another still counts
    await daemon.stop()
    return out


def bare(url: str, count: int, barrier: Any, results: Any) -> None:
    """One bare client process (the ``multiprocessing`` target)."""
    barrier.wait()
    results.put(asyncio.run(fanout.bare_client(url, count))[0])


async def bare_clients(url: str, n: int, count: int) -> float:
    """``n`` bare client processes at once, as many senders as daemon instances: requests/s."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=bare, args=(url, count, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    rates = [await asyncio.to_thread(results.get) for _ in procs]
    for p in procs:
        p.join()
    return float(sum(rates))


async def measure(n: int, tmp: Path, base_pg: str, gateway: str) -> dict[str, Any]:
    """One configuration: ``n`` instances on a fresh database."""
    url = await fresh_pg_database(base_pg)
    try:
        work = tmp / f"x{n}"
        work.mkdir()
        config = fanout.write_config(work, gateway + "/send", url, tmp / "contacts", 1)
        ctx = mp.get_context("spawn")
        barrier, results = ctx.Barrier(n), ctx.Queue()
        procs = [
            ctx.Process(target=instance, args=(i, str(config), barrier, results)) for i in range(n)
        ]
        for p in procs:
            p.start()
        outs = [await asyncio.to_thread(results.get) for _ in procs]
        for p in procs:
            p.join()
            assert p.exitcode == 0, f"instance exited with {p.exitcode}"
    finally:
        await drop_pg_database(base_pg, url)
    sent = sum(o["sent"] for o in outs)
    send_s = max(o["send_s"] for o in outs)
    return {
        "instances": n,
        "ingest_s": round(next(o["ingest_s"] for o in outs if "ingest_s" in o), 3),
        "fire_stages_s": round(max(o["fire_s"] for o in outs), 3),
        "stages_fired_by_instance": [o["stages_fired"] for o in outs],
        "divisions_started_by_instance": [o["divisions_started"] for o in outs],
        "divisions_started_share": [
            round(o["divisions_started"] / max(1, sum(x["divisions_started"] for x in outs)), 3)
            for o in outs
        ],
        "attempts_sent": sent,
        "send_s": round(send_s, 3),
        "attempts_per_s": round(sent / send_s, 1),
        "sent_by_instance": [o["sent"] for o in outs],
        "daemon_cpu_us_per_attempt": round(sum(o["send_cpu_s"] for o in outs) / sent * 1e6, 1),
    }


async def gateway_requests(base: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(base + "/stats") as r:
        return int((await r.json())["requests"])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="warnd-fanout-instances-"))
    gen = generate(tmp / "contacts", 122, 12, args.villages_per_township, 8, seed=7)
    port = fanout.free_port()
    gateway = subprocess.Popen(
        [sys.executable, str(fanout.ROOT / "bench" / "gateway.py"), str(port)]
    )
    base = f"http://127.0.0.1:{port}"
    figures: dict[str, Any] = {
        "date": datetime.now(UTC).date().isoformat(),
        "villages_per_township": args.villages_per_township,
        "rows": gen.rows,
        "villages": gen.villages,
        "nproc": os.cpu_count(),
        "runs": [],
    }
    try:
        await fanout.wait_up(base + "/stats")
        for n in args.instances:
            bare_n = 20_000
            before, _ = await fanout.bare_client(base + "/send", bare_n)
            seen = await gateway_requests(base)
            fig = await measure(n, tmp, args.pg_url, base)
            # each attempt reached the gateway exactly once: no message was claimed twice
            fig["gateway_requests"] = await gateway_requests(base) - seen
            after, _ = await fanout.bare_client(base + "/send", bare_n)
            bare = (before + after) / 2
            fig["bare_client_per_s"] = round(bare, 1)
            fig["bare_client_before_after_per_s"] = [round(before, 1), round(after, 1)]
            fig["ratio_vs_bare"] = round(fig["attempts_per_s"] / bare, 3)
            if n > 1:  # the fair baseline for n senders: n client processes at once
                together = await bare_clients(base + "/send", n, bare_n // n)
                fig[f"bare_clients_x{n}_per_s"] = round(together, 1)
                fig[f"ratio_vs_bare_x{n}"] = round(fig["attempts_per_s"] / together, 3)
            figures["runs"].append(fig)
    finally:
        gateway.terminate()
        gateway.wait()
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--villages-per-township", type=int, default=4)
    p.add_argument("--instances", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2])
    p.add_argument(
        "--pg-url",
        default=os.environ.get(
            "WARND_TEST_PG_URL", "postgresql://postgres@127.0.0.1:55432/postgres"
        ),
        help="a server where the bench may create and drop databases",
    )
    figures = asyncio.run(run(p.parse_args()))
    print(json.dumps(figures, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
