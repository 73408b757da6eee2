"""The listeners a duty server exposes, attacked (issue 12; docs/hardening.md §8).

A connection flood against ``warnd serve`` (a subprocess, as tests/test_crash.py runs it) with
systemd's default open-file limit of 1,024: the chain, the feeds and ``/healthz`` go on, the
log gets a few summary lines. The listener's limits one by one on a real listener (per-address
cap, full listener making room, header and body timeouts). ``/healthz`` and ``/metrics`` only
on the monitor listener, on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from crash_rig import SECRET, Run
from daemon_rig import T0, Harness
from factory import cap_xml, county_rows, write_contacts

from warnd.edges import listener, logs
from warnd.edges.signature import sign
from warnd.testing import eventually

M = timedelta(minutes=1)
H = timedelta(hours=1)
NOFILE = 1024  # systemd's default soft limit (the unit now sets LimitNOFILE)


def _raise_own_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the test process needs {wanted} open files, hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _connect_idle(source: str, port: int) -> socket.socket:
    """A connection that sends nothing: what a flood of half-open clients looks like."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        s.connect_ex(("127.0.0.1", port))
    return s


def _flood(port: int, sources: list[str], n: int) -> list[socket.socket]:
    """``n`` idle connections, round robin over ``sources``, in backlog-sized batches (a burst
    larger than the listen backlog would lose SYNs in the kernel instead of reaching warnd)."""
    socks = []
    for i in range(n):
        socks.append(_connect_idle(sources[i % len(sources)], port))
        if i % 100 == 99:
            time.sleep(0.2)
    return socks


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class FloodRun(Run):
    """``Run`` with the daemon's open-file soft limit lowered to systemd's default."""

    async def start(self, preexec: Callable[[], None] | None = None) -> None:
        def limit() -> None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, hard))

        await super().start(preexec or limit)

    def fds(self) -> int:
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def log_lines(self) -> list[str]:
        return (self.tmp / f"serve-{self.runs}.log").read_text(errors="replace").splitlines()


def _setup(tmp: Path, gateway_url: str) -> None:
    (tmp / "hook-secret").write_bytes(SECRET)
    write_contacts(tmp / "contacts", county_rows(townships=4, villages=4))  # 21 A persons
    (tmp / "incoming").mkdir()
    (tmp / "warnd.toml").write_text(
        f"""
[store]
url = "sqlite:///{tmp / "warnd.db"}"
[contacts]
path = "{tmp / "contacts"}"
[listen]
host = "127.0.0.1"
port = 0
header_timeout = "3s"
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


async def _healthz(run: FloodRun) -> tuple[int, float]:
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"http://127.0.0.1:{run.monitor}/healthz", timeout=aiohttp.ClientTimeout(total=5)
        ) as resp,
    ):
        await resp.read()
        return resp.status, time.monotonic() - started


async def _hook(run: FloodRun, n: int) -> int:
    """A signed IVR hook (for a message that does not exist: 200 with ok false)."""
    raw = json.dumps({"id": f"no-such-message-{n}", "digits": "1"}).encode()
    ts = int(run.now.timestamp())
    headers = {"X-Warnd-Timestamp": str(ts), "X-Warnd-Signature": sign(SECRET, ts, raw)}
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"http://127.0.0.1:{run.port}/hooks/ivr",
            data=raw,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=5),
        ) as resp,
    ):
        return resp.status


async def _still_serving(run: FloodRun, n: int, when: Any) -> None:
    """During the flood: /healthz and a hook answer at once; a new warning dropped in the
    spool is taken and its 21 calls reach the gateway; redials go out when due."""
    status, took = await _healthz(run)
    assert status == 200 and took < 2.0, (status, took)
    assert await _hook(run, n) == 200
    before = run.gateway.count
    data = cap_xml(f"43312241600000_2025061408{n:04d}", when, expires=when + 12 * H)
    path = run.tmp / "incoming" / f"w{n}.xml"
    path.write_bytes(data)
    old = time.time() - 60
    os.utime(path, (old, old))
    await run.gateway.wait_for(before + 21, timeout=15)  # the new warning's stage calls


async def test_a_connection_flood_leaves_dispatch_feeds_and_healthz_working(
    tmp_path: Path,
) -> None:
    """Issue 12, row 1. Before: 1,100 idle connections took all 1,024 descriptors; /healthz
    and hooks timed out, every feed poll failed, 124,000 tracebacks in 35 s (bench/flood.py)."""
    _raise_own_limit(4096)
    run = FloodRun(tmp_path)
    url = await run.gateway.start()
    _setup(tmp_path, url)
    run.set_clock(T0)
    await run.start()
    flood: list[socket.socket] = []
    try:
        await _still_serving(run, 1, T0)
        started = time.monotonic()
        # 1. one address, 1,100 connections: the per-address cap (64) refuses the rest at once
        flood += await asyncio.to_thread(_flood, run.port, ["127.0.2.1"], 1100)
        assert run.fds() < NOFILE - 200
        await _still_serving(run, 2, T0)
        # 2. fifty addresses, 1,100 more: the listener is full (its cap is what the open-file
        #    limit leaves), the longest idle connections make room for new ones
        sources = [f"127.0.3.{i}" for i in range(1, 51)]
        flood += await asyncio.to_thread(_flood, run.port, sources, 1100)
        assert run.fds() < NOFILE - 100
        await _still_serving(run, 3, T0)
        # redials fall due during the flood: they go out (3 warnings x 21 calls)
        before = run.gateway.count
        run.set_clock(T0 + 5 * M)
        await run.gateway.wait_for(before + 63, timeout=15)
        # 3. the header timeout (3 s) closes the idle connections that are left
        await eventually(
            lambda: all(_closed(s) for s in flood[-200:]),
            timeout=15,
            every=0.2,
            what="idle connections closed by the header timeout",
        )
        flooded = time.monotonic() - started
        assert await run.terminate() == 0
    finally:
        for s in flood:
            s.close()
        if run.proc is not None and run.proc.returncode is None:
            run.proc.kill()
            await run.proc.wait()
        await run.gateway.stop()

    lines = run.log_lines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    text = "\n".join(lines)
    assert "out of system resource" not in text and "Too many open files" not in text
    assert not [e for e in events if e["event"] in ("feed_poll_failed", "sender_failed")]
    summaries = [e for e in events if e["event"] == "listener_refused"]
    # a summary line per listener every 10 s at most (plus the first refusal's own line)
    assert 2 <= len(summaries) <= flooded / 10 + 3, len(summaries)
    reasons = [r for e in summaries for r in e["reasons"]]
    assert {"per_address", "evicted_idle"} <= set(reasons)
    assert sum(e["reasons"].get("per_address", 0) for e in summaries) >= 1100 - 64
    assert len(lines) < 400  # against 742,536 lines (50 MB) before


# ---- the limits one by one, on a real listener ------------------------------------------


@pytest.fixture
async def small() -> AsyncIterator[tuple[listener.Listener, list[str]]]:
    """A listener with tiny limits in front of an app that records what reaches it."""
    seen: list[str] = []
    app = web.Application()

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(body.decode() or request.path)
        return web.Response(text="ok")

    app.router.add_route("*", "/{tail:.*}", echo)
    limits = listener.Limits(max_connections=4, per_address=2, header_timeout=2.5, body_timeout=1.0)
    each = await listener.start_listener("test", app, "127.0.0.1", 0, limits)
    try:
        yield each, seen
    finally:
        await each.stop()


async def _request(port: int, source: str, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(raw)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_per_address_cap_full_listener_and_timeouts(
    small: tuple[listener.Listener, list[str]],
) -> None:
    each, seen = small
    port = each.port
    get = b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    # per address: two idle connections from .10 are held, the third is closed at once
    a1, a2, a3 = (_connect_idle("127.0.4.10", port) for _ in range(3))
    await asyncio.sleep(0.3)
    assert (_closed(a1), _closed(a2), _closed(a3)) == (False, False, True)
    assert each.gate.open == 2
    # another address still gets in, and is served
    assert (await _request(port, "127.0.4.11", get)).startswith(b"HTTP/1.1 200")
    # the listener full (4): a new client makes the longest idle connection go, not itself
    b1, b2 = (_connect_idle("127.0.4.12", port) for _ in range(2))
    await asyncio.sleep(0.3)
    assert each.gate.open == 4
    assert (await _request(port, "127.0.4.13", get)).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(0.1)
    assert _closed(a1) and not _closed(b2)  # the longest idle one made room
    # full again: room is made at the address holding the most, not at a lone client's
    lone = _connect_idle("127.0.4.16", port)
    await asyncio.sleep(0.3)
    assert each.gate.open == 4
    assert (await _request(port, "127.0.4.17", get)).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(0.1)
    assert _closed(b1) and not _closed(lone) and not _closed(a2) and not _closed(b2)
    # a header that never ends, a body that never comes: closed after 2.5 s / 408 after 1 s
    slow = _connect_idle("127.0.4.14", port)
    await asyncio.sleep(0.05)
    slow.send(b"GET /slow HTTP/1.1\r\nHost: t\r\nX-Drip: 1")
    started = time.monotonic()
    answer = await _request(
        port, "127.0.4.15", b"POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhalf"
    )
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 3
    await eventually(lambda: _closed(slow), timeout=5, every=0.1, what="slow header closed")
    assert "/slow" not in seen and "half" not in seen
    for s in (a1, a2, a3, b1, b2, lone, slow):
        s.close()


async def test_refusals_are_one_summary_line_per_period() -> None:
    buf = io.StringIO()
    logs.configure(json=True, file=buf)
    now = [0.0]
    gate = listener.Gate(
        "hooks",
        listener.Limits(max_connections=1, per_address=1, header_timeout=1, body_timeout=1),
        now=lambda: now[0],
    )

    class Conn:
        def __init__(self, address: str) -> None:
            self.address = address
            self.evicted = False

        def evict(self) -> None:
            self.evicted = True

    first: Any = Conn("127.0.0.9")
    assert gate.admit(first) is None
    gate.busy(first)  # in the middle of a request: never closed to make room
    for _ in range(5000):
        assert gate.admit(Conn("127.0.0.9")) == "per_address"  # type: ignore[arg-type]
        assert gate.admit(Conn("127.0.0.8")) == "listener_full"  # type: ignore[arg-type]
    now[0] += 10  # the period is over: the next refusal writes the summary
    assert gate.admit(Conn("127.0.0.7")) == "listener_full"  # type: ignore[arg-type]
    gate.close()
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [(e["event"], e["refused"], e["reasons"]) for e in lines] == [
        ("listener_refused", 1, {"per_address": 1}),  # the first refusal at once
        ("listener_refused", 10_000, {"per_address": 4999, "listener_full": 5001}),
    ]
    assert lines[1]["addresses"] == {"127.0.0.8": 5000, "127.0.0.9": 4999, "127.0.0.7": 1}
    assert not first.evicted and gate.open == 1


# ---- /healthz and /metrics: the monitor listener, on loopback ------------------------------


async def test_healthz_and_metrics_are_on_the_monitor_listener_only(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    try:
        for path in ("/healthz", "/metrics"):
            async with h.http.get(h.base + path) as resp:
                assert resp.status == 404, path  # not on the listener the world can reach
            async with h.http.get(h.monitor + path) as resp:
                assert resp.status == 200, path
        hooks, monitor = h.daemon.listeners
        assert monitor.site._server is not None
        (sock,) = monitor.site._server.sockets
        assert sock.getsockname()[0] == "127.0.0.1"  # the default, whatever [listen] says
        assert (hooks.name, monitor.name) == ("hooks", "monitor")
    finally:
        await h.stop()


def test_the_unit_sets_an_open_file_limit_and_stays_hardened() -> None:
    unit = Path(__file__).resolve().parents[1] / "systemd" / "warnd.service"
    assert "\nLimitNOFILE=65536\n" in unit.read_text(encoding="utf-8")
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(
        [analyze, "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for warnd\.service: ([0-9.]+)", result.stdout)
    if found is None:
        pytest.skip(f"systemd-analyze security --offline=true did not run: {result.stderr[:200]}")
    assert float(found[1]) <= 1.5, result.stdout[-500:]
