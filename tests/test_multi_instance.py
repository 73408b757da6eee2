"""Exploration harness (will be replaced)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from conftest import drop_pg_database, fresh_pg_database
from factory import cap_xml, county_rows, write_contacts
from gateway_fake import GatewayFake

from warnd.signature import sign

PG_URL = os.environ.get("WARND_TEST_PG_URL")
REQUIRE_PG = os.environ.get("WARND_REQUIRE_PG") == "1"
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not PG_URL and not REQUIRE_PG, reason="needs WARND_TEST_PG_URL"),
]

CST = timezone(timedelta(hours=8))
T0 = datetime(2025, 6, 14, 8, 0, tzinfo=CST)
ID = "43312241600000_20250614080000"
SECRET = b"multi-instance-hook-secret"
WINDOW = timedelta(minutes=5)
ATTEMPTS = 3
LEASE = timedelta(seconds=61)
WARND = Path(sys.executable).parent / "warnd"


@dataclass
class Instance:
    name: str
    tmp: Path
    proc: asyncio.subprocess.Process | None = None
    port: int | None = None
    ident: str | None = None
    runs: int = 0
    idents: list[str] = field(default_factory=list)

    async def start(self, config: Path, clock: Path) -> None:
        self.runs += 1
        log = self.tmp / f"serve-{self.name}{self.runs}.log"
        with log.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                str(WARND),
                "serve",
                "--config",
                str(config),
                "--clock-file",
                str(clock),
                "--tick",
                "0.2",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.returncode is None, log.read_text()[-2000:]
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                if '"daemon_started"' in line:
                    doc = json.loads(line)
                    self.port = int(doc["listen"].rsplit(":", 1)[1])
                    self.ident = doc["instance"]
                    self.idents.append(doc["instance"])
                    return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no daemon_started: {log.read_text()[-2000:]}")


async def test_explore(tmp_path: Path) -> None:
    assert PG_URL
    url = await fresh_pg_database(PG_URL)
    gw = GatewayFake()
    gurl = await gw.start()
    (tmp_path / "hook-secret").write_bytes(SECRET)
    write_contacts(tmp_path / "contacts", county_rows(townships=6, villages=8))
    cfg = tmp_path / "warnd.toml"
    cfg.write_text(
        f"""
timezone = "Asia/Shanghai"
[store]
url = "{url}"
[contacts]
path = "{tmp_path / "contacts"}"
[ack]
window = "5m"
attempts = {ATTEMPTS}
[escalation]
ladder = ["backup", "superior", "duty"]
[listen]
host = "127.0.0.1"
port = 0
[hooks]
secret_file = "{tmp_path / "hook-secret"}"
[[feeds]]
name = "incoming"
path = "{tmp_path / "incoming"}"
interval = "1s"
[channels.gateway]
type = "webhook"
url = "{gurl}"
kinds = ["voice", "sms"]
"""
    )
    inc = tmp_path / "incoming"
    inc.mkdir()
    alert = inc / "alert.xml"
    alert.write_bytes(cap_xml(ID, T0, expires=T0 + timedelta(hours=12)))
    old = time.time() - 60
    os.utime(alert, (old, old))
    clock = tmp_path / "clock.txt"
    clock.write_text(T0.isoformat())
    a, b = Instance("a", tmp_path), Instance("b", tmp_path)
    try:
        await asyncio.gather(a.start(cfg, clock), b.start(cfg, clock))
        await gw.wait_for(55)
        await asyncio.sleep(2)
        con = await asyncpg.connect(url)
        for r in await con.fetch("select claimed_by, state, count(*) from outbox group by 1, 2"):
            print(dict(r), a.ident, b.ident)
        for k in range(1, 13):
            clock.write_text((T0 + k * WINDOW).isoformat() + " " * k)
            await asyncio.sleep(1.5)
            print(
                k,
                gw.count,
                [
                    dict(r)
                    for r in await con.fetch(
                        "select claimed_by, count(*) from outbox group by 1 order by 1"
                    )
                ],
            )
        await con.close()
    finally:
        for i in (a, b):
            if i.proc and i.proc.returncode is None:
                i.proc.kill()
                await i.proc.wait()
        await gw.stop()
        await drop_pg_database(PG_URL, url)
