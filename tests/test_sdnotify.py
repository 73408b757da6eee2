"""READY and WATCHDOG on a real unix datagram socket, as systemd's NOTIFY_SOCKET receives them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from factory import county_rows, write_contacts

from warnd.edges.sdnotify import Notifier


def listener(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(20)
    return s


def test_not_under_systemd_sends_nothing() -> None:
    n = Notifier(env={})
    assert not n.enabled and n.send("READY=1") is False and n.watchdog_s is None


def test_watchdog_interval_is_taken_from_the_environment(tmp_path: Path) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "s"), "WATCHDOG_USEC": "4000000"})
    assert n.watchdog_s == 4.0
    other = Notifier(env={"NOTIFY_SOCKET": "x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None  # meant for another process


async def test_pings_come_from_the_event_loop_and_stop_when_it_blocks(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    sock = listener(path)
    sock.setblocking(False)
    n = Notifier(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "100000"})  # ping every 50 ms
    n.start_watchdog()
    loop = asyncio.get_running_loop()

    async def received_within(seconds: float) -> list[bytes]:
        got: list[bytes] = []
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            try:
                got.append(sock.recv(4096))
            except BlockingIOError:
                await asyncio.sleep(0.01)
        return got

    assert b"WATCHDOG=1" in await received_within(0.5)
    while True:  # drain what was queued
        try:
            sock.recv(4096)
        except BlockingIOError:
            break
    time.sleep(0.5)  # the loop is blocked: this IS the fault under test, not a wait for a timer
    during = []
    while True:
        try:
            during.append(sock.recv(4096))
        except BlockingIOError:
            break
    assert len(during) <= 1  # at most the ping that was due as the loop blocked
    await n.stop()
    sock.close()


def test_serve_sends_ready_after_start_and_watchdog_pings(tmp_path: Path) -> None:
    """``warnd serve`` as systemd runs it: READY=1 once the store is open, then pings."""
    write_contacts(tmp_path / "contacts", county_rows(townships=1, villages=1))
    (tmp_path / "secret").write_text("s3cret-for-the-sdnotify-test-0123456789\n")
    (tmp_path / "warnd.toml").write_text(
        f"""
[store]
url = "sqlite:///{tmp_path / "warnd.db"}"
[contacts]
path = "{tmp_path / "contacts"}"
[listen]
host = "127.0.0.1"
port = 0
[hooks]
secret_file = "{tmp_path / "secret"}"
[[feeds]]
name = "incoming"
path = "{tmp_path / "incoming"}"
[channels.outbox]
type = "log"
path = "{tmp_path / "outbox.jsonl"}"
""",
        encoding="utf-8",
    )
    path = tmp_path / "notify"
    sock = listener(path)
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    warnd = str(Path(sys.executable).parent / "warnd")
    proc = subprocess.Popen(
        [warnd, "serve", "--config", str(tmp_path / "warnd.toml")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        messages = []
        while not any(b"WATCHDOG=1" in m for m in messages):
            messages.append(sock.recv(4096))  # bounded by the socket timeout (20 s)
        ready = [m for m in messages if b"READY=1" in m]
        assert ready and b"STATUS=serving on 127.0.0.1:" in ready[0]
        assert messages.index(ready[0]) < next(
            i for i, m in enumerate(messages) if b"WATCHDOG=1" in m
        )
        assert (tmp_path / "warnd.db").exists()  # the store was open before READY
        proc.send_signal(signal.SIGTERM)
        while True:
            m = sock.recv(4096)
            if b"STOPPING=1" in m:
                break
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
