"""``/healthz`` tells the truth (issue 12; docs/hardening.md §8): 503 naming the cause when the
store cannot write (a real full disk: a 2 MB tmpfs, as root), when the sender is stuck past its
leases, when a feed has not been read for three intervals, or when a check does not answer;
200 again once it has recovered. Harness: ``tests/daemon_rig.py`` (ManualClock, real SQLite,
the daemon's real listeners).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from daemon_rig import T0, Harness
from factory import cap_xml

from warnd.edges import logs
from warnd.edges.health import WriteWatch
from warnd.store.tables import Ack, Outbox, WarningRow
from warnd.testing import eventually

H = timedelta(hours=1)
S = timedelta(seconds=1)


async def healthz(h: Harness) -> tuple[int, dict[str, Any]]:
    async with h.http.get(h.monitor + "/healthz") as resp:
        return resp.status, await resp.json()


def spool(h: Harness, name: str, data: bytes) -> None:
    path = h.tmp / "incoming" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    old = time.time() - 60
    os.utime(path, (old, old))


def doc(n: int) -> bytes:
    return cap_xml(f"43312241600000_2025061408{n:04d}", T0, expires=T0 + 12 * H)


# ---- the store cannot write: a full disk ------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the full-disk test runs as root in CI)")
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace')[:200]}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write until the file system is full (ENOSPC); the filler's path."""
    path = folder / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC
    finally:
        os.close(fd)
    return path


async def test_a_small_write_that_fits_on_a_full_disk_does_not_clear_the_failure() -> None:
    """After a failure, a transaction that went through (an update fitting in pages the store
    has) is confirmed by the probe at the next check: still full, still a failure."""
    space = [False]

    async def probe() -> None:
        if not space[0]:
            raise OSError(28, "No space left on device")

    clock = [0.0]
    watch = WriteWatch(probe, now=lambda: clock[0], probe_every_s=10)
    assert await watch.check() is None
    watch.failed(OSError(28, "No space left on device"))
    watch.ok()  # a small update committed
    assert "cannot write" in (await watch.check() or "")  # the probe found no space
    assert "cannot write" in (await watch.check() or "")  # and is not run again at once
    space[0] = True
    watch.ok()  # space again and a write went through: cleared at the next check
    assert await watch.check() is None
    watch.failed("disk full")
    assert "cannot write" in (await watch.check() or "")  # nothing wrote; not yet due
    clock[0] += 10
    assert await watch.check() is None  # the periodic probe finds the space
    bare = WriteWatch()  # without a probe the transactions' outcome is all there is
    bare.failed("disk full")
    bare.ok()
    assert await bare.check() is None


async def test_a_full_disk_is_a_503_naming_the_store_and_recovery_shows(
    small_disk: Path,
) -> None:
    """Before: ingest failed every second, hooks answered 500, /healthz said 200 ok:true."""
    buf = io.StringIO()
    logs.configure(json=True, file=buf)
    h = Harness(small_disk)
    await h.start()
    try:
        await h.feed(doc(1))
        assert (await healthz(h))[0] == 200
        target = (await h.all(Outbox, Outbox.purpose == "call"))[0]
        spool(h, "two.xml", doc(2))
        spool(h, "three.xml", doc(3))
        filler = fill(small_disk)

        report = await h.daemon.poll_feed(h.daemon.feeds[0])  # ingest cannot write
        assert report.accepted == 0 and report.error and "full" in report.error
        status, answer = await h.hook("/hooks/ivr", {"id": target.id, "digits": "1"})
        assert status == 500 and await h.all(Ack) == []  # nothing changed
        status, report_ = await healthz(h)
        assert status == 503 and report_["ok"] is False
        cause = report_["problems"]["store"]
        assert "cannot write" in cause and ("disk is full" in cause or "No space" in cause)
        assert len(await h.all(WarningRow)) == 1

        filler.unlink()  # space again: the next write succeeds and /healthz says so
        report = await h.daemon.poll_feed(h.daemon.feeds[0])
        assert (report.accepted, report.error) == (2, None)
        status, report_ = await healthz(h)
        assert (status, report_["problems"]) == (200, {})
        status, answer = await h.hook("/hooks/ivr", {"id": target.id, "digits": "1"})
        assert status == 200 and answer["ok"] is True  # the platform's retry is taken

        # full again, then freed while nothing writes: the probe (every 10 s) finds out
        spool(h, "four.xml", doc(4))
        filler = fill(small_disk)
        assert (await h.daemon.poll_feed(h.daemon.feeds[0])).accepted == 0
        assert (await healthz(h))[0] == 503
        filler.unlink()
        assert (await healthz(h))[0] == 503  # nothing has written since: still the failure
        clock = [time.monotonic() + 60]  # the probe's period has passed
        h.daemon.writes._now = lambda: clock[0]
        status, report_ = await healthz(h)
        assert (status, report_["problems"]) == (200, {})
    finally:
        await h.stop()
    lines = buf.getvalue().splitlines()
    events = [json.loads(line)["event"] for line in lines]  # every line JSON, tracebacks too
    assert events.count("store_cannot_write") == 2 and events.count("store_writable_again") == 2


# ---- a hung send: the sender is stuck --------------------------------------------------------


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


async def test_a_hung_send_is_a_503(h: Harness) -> None:
    assert h.daemon.dispatcher is not None
    release = asyncio.Event()
    real = h.daemon.dispatcher.send

    async def hangs(*args: Any, **kwargs: Any) -> Any:
        await release.wait()  # a send that never returns: a hung gateway client, a bug
        return await real(*args, **kwargs)

    h.daemon.dispatcher.send = hangs  # type: ignore[method-assign]
    spool(h, "001.xml", doc(1))
    await h.daemon.poll_feed(h.daemon.feeds[0])
    await h.daemon.wake()  # the sender claims the 7 calls and hangs on them
    limit = timedelta(seconds=2 * h.daemon.dispatcher.deadline_s)
    try:
        sender = h.daemon.sender
        await eventually(lambda: sender is not None and sender.holding >= 7, what="7 sends held")
        h.clock.set(T0 + limit)  # a long send, within twice its deadline: not yet a finding
        assert (await healthz(h))[0] == 200
        h.clock.set(T0 + limit + S)  # held longer than any send may take: stuck
        status, report = await healthz(h)
        assert status == 503
        assert "7 messages without an outcome for over" in report["problems"]["sender"]
    finally:
        release.set()
    await h.daemon.settle()
    assert {o.state for o in await h.all(Outbox)} == {"sent"}
    assert (await healthz(h))[0] == 200


# ---- a feed not read for three intervals ----------------------------------------------------


async def test_a_feed_not_read_for_three_intervals_is_a_503(h: Harness) -> None:
    now = [1000.0]
    h.daemon.feed_watch._now = lambda: now[0]
    feed = h.daemon.feeds[0]
    assert (await h.daemon.poll_feed(feed)).error is None  # read (interval 10 s)
    folder = h.tmp / "incoming"
    folder.rmdir()
    folder.write_text("the mount point was replaced by a file")
    for _ in range(3):  # polls fail, 10 s apart: within three intervals, not yet a finding
        now[0] += 9.9
        assert (await h.daemon.poll_feed(feed)).error is not None
        assert (await healthz(h))[0] == 200
    now[0] += 0.4  # 30.1 s since the last good read
    status, report = await healthz(h)
    assert status == 503
    cause = report["problems"]["feed:incoming"]
    assert "not read for 30 s (3 intervals of 10 s)" in cause and "cannot list folder" in cause
    folder.unlink()
    assert (await h.daemon.poll_feed(feed)).error is None
    assert (await healthz(h))[0] == 200


async def test_a_check_that_does_not_answer_is_a_503_not_a_hang(h: Harness) -> None:
    h.daemon.checks.timeout_s = 0.2

    async def hung() -> str | None:
        await asyncio.sleep(3600)
        return None

    h.daemon.checks.add("store", hung)  # e.g. a database that takes the query and never answers
    started = time.monotonic()
    status, report = await healthz(h)
    assert time.monotonic() - started < 2.0
    assert status == 503 and report["problems"]["store"] == "无响应 no answer within 0.2 s"
