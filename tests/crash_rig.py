"""``warnd serve`` as a subprocess on a file clock, watched from outside (docs/testing.md): the
rig of the crash tests (SIGKILL mid-fan-out), the soak and the listener's process tests. The
process itself is ``warnd.testing.ServeProcess``; this adds the gateway fake, the file clock,
the store read from outside and the acknowledgements posted between kills.

Not a test module: the test modules that run a daemon process import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
from gateway_fake import GatewayFake

from warnd.edges.signature import sign
from warnd.testing import ServeProcess, eventually

CST = timezone(timedelta(hours=8))


T0 = datetime(2025, 6, 14, 8, 0, tzinfo=CST)


ID = "43312241600000_20250614080000"


SECRET = b"crash-test-hook-secret-0123456789abc"


ATTEMPTS = 2


CONCURRENCY = 16


def _utc(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class Kill:
    received: int  # gateway requests received when the process was killed
    in_flight: set[str]  # received before the kill, not recorded sent in the store


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
    killed: set[int] = field(default_factory=set)
    started_at: list[float] = field(default_factory=list)  # time.monotonic() of each start

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

    async def start(self, preexec: Callable[[], None] | None = None) -> None:
        self.runs += 1
        self.serving = ServeProcess(
            self.tmp / "warnd.toml",
            self.tmp / f"serve-{self.runs}.log",
            clock_file=self.clock_file,
            preexec=preexec,
        )
        await self.serving.start()
        self.proc = self.serving.proc
        self.port, self.monitor = self.serving.port, self.serving.monitor
        self.started_at.append(time.monotonic())

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
        """Work due at the file clock's time (stages, divisions to start, calls, messages).

        Stored times are UTC text in a fixed format, so SQLite compares them as text."""
        t = self.now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        queries = {
            "stage": "SELECT id FROM stage WHERE state = 'pending' AND due_at <= ?",
            "division": "SELECT id FROM division WHERE start_due <= ?",
            "call": "SELECT id FROM call WHERE state = 'active' AND next_due_at <= ?",
            "outbox": "SELECT id FROM outbox WHERE state IN ('pending', 'sending') AND due_at <= ?",
        }
        return [f"{what} {r[0]}" for what, q in queries.items() for r in self.rows(q, t)]

    async def quiet(self, timeout: float = 30.0) -> None:
        """Poll until the live daemon has done everything due at the current clock time."""
        await eventually(
            lambda: not self.busy(),
            timeout=timeout,
            every=0.05,
            what=lambda: f"quiet at {self.now}: still busy {self.busy()[:5]}",
        )

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
