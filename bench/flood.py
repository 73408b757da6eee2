"""Connection flood against ``warnd serve`` on loopback, with the open-file limit of systemd's
default (soft 1,024): does dispatch, feed reading and ``/healthz`` go on? (docs/hardening.md)

The daemon runs as a subprocess (real clock, ``window = "5s"``: redials fall due every few
seconds) with a spool folder and an HTTP feed; the gateway fake and the feed server run in this
process. Once the first warning's calls are out, ``--conns`` idle TCP connections (connected,
nothing sent: what a flood of half-open clients looks like to the listener) are opened from
``--sources`` loopback addresses (127.0.2.x) and held for ``--hold`` seconds. Meanwhile, every
second: ``GET /healthz`` (2 s timeout), and one signed hook from 127.0.0.1; half-way a second
warning is dropped in the spool. Printed (JSON): the longest silence of the gateway while
redials were due, how late the second warning's first call went out, /healthz and hook
answers, feed polls that failed, and what the log took during the flood.

With ``--reconnect`` every connection the daemon closes is opened again (once a second).

Usage: .venv/bin/python bench/flood.py [--conns 1100] [--sources 1] [--hold 35] [--nofile 1024]
                                       [--reconnect] [--warnd PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import signal
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from factory import cap_xml, county_rows, write_contacts  # noqa: E402
from gateway_fake import GatewayFake  # noqa: E402

from warnd.edges.signature import sign  # noqa: E402

WARND = Path(sys.executable).parent / "warnd"
SECRET = b"flood-bench-hook-secret-0123456789abcdef"
ID1 = "43312241600000_20250614080000"
ID2 = "43312241600000_20250614090000"


def config(tmp: Path, gateway: str, feed: str) -> Path:
    path = tmp / "warnd.toml"
    path.write_text(
        f"""
[store]
url = "sqlite:///{tmp / "warnd.db"}"
[contacts]
path = "{tmp / "contacts"}"
[ack]
window = "5s"
attempts = 20
[listen]
host = "127.0.0.1"
port = 0
[hooks]
secret_env = "WARND_FLOOD_SECRET"
[[feeds]]
name = "incoming"
path = "{tmp / "incoming"}"
interval = "1s"
[[feeds]]
name = "http"
url = "{feed}"
interval = "2s"
timeout = "2s"
[channels.gateway]
type = "webhook"
url = "{gateway}"
kinds = ["voice", "sms"]
timeout = "5s"
""",
        encoding="utf-8",
    )
    return path


def drop(folder: Path, name: str, data: bytes) -> None:
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(data)
    old = time.time() - 60
    os.utime(tmp, (old, old))
    os.replace(tmp, folder / name)


async def started(log: Path, proc: asyncio.subprocess.Process) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise SystemExit(f"warnd serve exited: {log.read_text()[-2000:]}")
        for line in log.read_text(errors="replace").splitlines():
            if '"daemon_started"' in line:
                found: dict[str, Any] = json.loads(line)
                return found
        await asyncio.sleep(0.05)
    raise SystemExit("no daemon_started line within 60 s")


def reopen_closed(socks: list[socket.socket], port: int, sources: int) -> int:
    """Replace every flood connection the daemon closed by a new one; how many."""
    n = 0
    for i, s in enumerate(socks):
        try:
            closed = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            closed = False  # open, nothing sent: as intended
        except OSError:
            closed = True
        if closed:
            s.close()
            fresh = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            fresh.bind((f"127.0.2.{1 + i % sources}", 0))
            fresh.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                fresh.connect_ex(("127.0.0.1", port))
            socks[i] = fresh
            n += 1
    return n


def open_flood(port: int, conns: int, sources: int) -> list[socket.socket]:
    """``conns`` connections to the listener, spread over ``sources`` addresses; held idle.

    Opened in batches of 100 (one listen backlog's worth) a fifth of a second apart, so that
    the kernel does not drop SYNs of a burst: every connection reaches the listener.
    """
    socks: list[socket.socket] = []
    for i in range(conns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((f"127.0.2.{1 + i % sources}", 0))
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect_ex(("127.0.0.1", port))
        socks.append(s)
        if i % 100 == 99:
            time.sleep(0.2)
    return socks


async def probe_health(url: str, out: list[tuple[float, int | str, float]]) -> None:
    t = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp,
        ):
            await resp.read()
            out.append((t, resp.status, time.monotonic() - t))
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        out.append((t, type(exc).__name__, time.monotonic() - t))


async def probe_hook(port: int, out: list[int | str]) -> None:
    raw = json.dumps({"id": "no-such-message", "digits": "1"}).encode()
    ts = int(time.time())
    headers = {"X-Warnd-Timestamp": str(ts), "X-Warnd-Signature": sign(SECRET, ts, raw)}
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"http://127.0.0.1:{port}/hooks/ivr",
                data=raw,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=2),
            ) as resp,
        ):
            out.append(resp.status)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        out.append(type(exc).__name__)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="warnd-flood-"))
    write_contacts(tmp / "contacts", county_rows(townships=4, villages=4))
    (tmp / "incoming").mkdir()
    gateway = GatewayFake()
    gw_url = await gateway.start()
    feed_hits = [0]

    async def feed(_request: web.Request) -> web.Response:
        feed_hits[0] += 1
        return web.Response(body=b"<feed xmlns='http://www.w3.org/2005/Atom'/>")

    app = web.Application()
    app.router.add_get("/feed", feed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    feed_port = runner.addresses[0][1]
    cfg = config(tmp, gw_url, f"http://127.0.0.1:{feed_port}/feed")
    log = tmp / "serve.log"
    now = datetime.now(UTC)
    drop(tmp / "incoming", "one.xml", cap_xml(ID1, now, expires=now + timedelta(hours=2)))

    def limit() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))

    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            args.warnd,
            "serve",
            "--config",
            str(cfg),
            *args.serve_args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "WARND_FLOOD_SECRET": SECRET.decode()},
            preexec_fn=limit,
        )
    flood: list[socket.socket] = []
    try:
        info = await started(log, proc)
        port = int(info["listen"].rsplit(":", 1)[1])
        monitor = info.get("monitor")
        health_url = f"http://{monitor}/healthz" if monitor else f"http://127.0.0.1:{port}/healthz"
        await gateway.wait_for(21, timeout=30)  # the first warning's stage calls
        await asyncio.sleep(6)  # one round of redials before the flood
        polls0 = feed_hits[0]
        log0 = log.stat().st_size
        t0 = time.monotonic()
        flood = open_flood(port, args.conns, args.sources)
        opened = time.monotonic() - t0
        health: list[tuple[float, int | str, float]] = []
        hooks: list[int | str] = []
        second_dropped: float | None = None
        fds: list[int] = []
        reopened = 0
        while time.monotonic() - t0 < args.hold:
            if args.reconnect:
                reopened += reopen_closed(flood, port, args.sources)
            with contextlib.suppress(OSError):
                fds.append(len(os.listdir(f"/proc/{proc.pid}/fd")))
            await asyncio.gather(probe_health(health_url, health), probe_hook(port, hooks))
            if second_dropped is None and time.monotonic() - t0 >= args.hold / 3:
                when = datetime.now(UTC)
                drop(tmp / "incoming", "two.xml", cap_xml(ID2, when, expires=when + 2 * H))
                second_dropped = time.monotonic()
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - health[-1][0])))
        t1 = time.monotonic()
        log1 = log.stat().st_size
        for s in flood:
            s.close()
        flood = []
        await asyncio.sleep(3)
        during = [r.at for r in gateway.receipts if t0 <= r.at <= t1]
        edges = [t0, *during, t1]
        silence = max(b - a for a, b in itertools.pairwise(edges))
        first2 = [r.at for r in gateway.receipts if r.body.get("warning") == ID2]
        text = log.read_bytes()[log0:log1].decode("utf-8", "replace")
        lines = text.splitlines()
        events: dict[str, int] = {}
        for line in lines:
            try:
                key = json.loads(line).get("event", "?")
            except ValueError:
                key = "(not JSON) " + line[:60]
            events[key] = events.get(key, 0) + 1
        top = dict(sorted(events.items(), key=lambda kv: -kv[1])[:8])
        ok_health = [h for h in health if h[1] == 200]
        return {
            "conns": args.conns,
            "sources": args.sources,
            "nofile": args.nofile,
            "hold_s": args.hold,
            "flood_open_s": round(opened, 2),
            "reconnected": reopened if args.reconnect else None,
            "daemon_open_files_max": max(fds, default=None),
            "daemon_nofile": _soft_limit(proc.pid),
            "gateway_requests_during": len(during),
            "gateway_longest_silence_s": round(silence, 1),
            "second_warning_first_call_after_s": (
                round(min(first2) - second_dropped, 1) if first2 and second_dropped else None
            ),
            "healthz": f"{len(ok_health)}/{len(health)} answered 200",
            "healthz_worst_s": round(max(h[2] for h in health), 2),
            "healthz_answers": sorted({str(h[1]) for h in health}),
            "hooks": f"{sum(1 for h in hooks if h == 200)}/{len(hooks)} answered 200",
            "http_feed_polls_during": feed_hits[0] - polls0,
            "feed_poll_failed_lines": events.get("feed_poll_failed", 0),
            "log_lines_during": len(lines),
            "log_bytes_during": log1 - log0,
            "log_top_events": top,
            "serve_log": str(log),
        }
    finally:
        for s in flood:
            s.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
        await gateway.stop()
        await runner.cleanup()


H = timedelta(hours=1)


def _soft_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return " ".join(line.split()[3:5])
    return "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conns", type=int, default=1100)
    p.add_argument("--sources", type=int, default=1)
    p.add_argument("--hold", type=float, default=35.0)
    p.add_argument("--nofile", type=int, default=1024)
    p.add_argument(
        "--reconnect", action="store_true", help="reopen every connection the daemon closes"
    )
    p.add_argument("--warnd", default=str(WARND), help="the warnd executable to measure")
    p.add_argument("serve_args", nargs="*", help="extra arguments for warnd serve")
    args = p.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.conns + 4096), hard))
    load = os.getloadavg()
    figures = asyncio.run(run(args))
    figures["load_average"] = [round(x, 2) for x in load]
    print(json.dumps(figures, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
