"""Send overhead: the daemon's CPU per message with the HTTP request taken out.

The same province store as ``bench/fanout.py`` (``--villages-per-township 4`` by default:
26,596 call attempts), the daemon's own sender (claim → dispatch → deliver → mark), but
``WebhookChannel.send`` replaced by a coroutine that returns at once: what remains is the
durable bookkeeping and the plumbing around each request — what the daemon adds to a bare
aiohttp request.

Usage: .venv/bin/python bench/send_overhead.py [--villages-per-township 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from directory_gen import generate  # noqa: E402
from fanout import province_alert, start_daemon  # noqa: E402

from warnd.edges import logs  # noqa: E402
from warnd.edges.channels import Outbound, webhook  # noqa: E402
from warnd.edges.feeds import FeedItem  # noqa: E402


async def _accepted(_self: webhook.WebhookChannel, _msg: Outbound) -> None:
    await asyncio.sleep(0)  # a request yields to the loop at least once


async def run(villages: int) -> dict[str, Any]:
    logs.configure(json=True, level="warning")
    webhook.WebhookChannel.send = _accepted  # type: ignore[method-assign]
    tmp = Path(tempfile.mkdtemp(prefix="warnd-sendover-"))
    try:
        generate(tmp / "contacts", 122, 12, villages, 8, seed=7)
        url = f"sqlite:///{tmp / 'warnd.db'}"
        daemon, clock = await start_daemon(tmp, "http://127.0.0.1:9/send", url)
        engine = daemon.engine
        assert engine is not None
        await engine.ingest(FeedItem(province_alert(clock.now()), "bench"))
        await engine.tick()
        start, cpu = time.perf_counter(), time.process_time()
        await daemon.wake()
        await daemon.settle()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        async with engine.ctx.store.read() as s:
            sent = (
                await s.execute(text("SELECT count(*) FROM outbox WHERE state = 'sent'"))
            ).scalar_one()
        await daemon.stop()
        return {
            "messages_sent": sent,
            "send_s": round(wall, 2),
            "process_cpu_us_per_message": round(cpu / sent * 1e6, 1),
            "wall_us_per_message": round(wall / sent * 1e6, 1),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--villages-per-township", type=int, default=4)
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args.villages_per_township)), indent=1))


if __name__ == "__main__":
    main()
