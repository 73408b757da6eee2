"""Hooks, links and secrets at the edge (issue 12; docs/hardening.md §8), through the real
listener of an in-process daemon (``tests/daemon_rig.py``).

A signed hook nested 30,000 deep is a 400; a traceback is one masked JSON line; every 401 has
the same body; a confirmation link acknowledges only from its own page, and guessing links is
budgeted per address; the public example secret and short secrets are refused by ``warnd
serve``, and the quick start runs as one command in demo mode.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from daemon_rig import ID, PUBLIC, SECRET, T0, Harness, Rig, calls_out, link
from factory import cap_xml

from warnd.cli import main
from warnd.edges import ack, logs
from warnd.edges.signature import sign
from warnd.testing import eventually

REPO = Path(__file__).resolve().parents[1]
H = timedelta(hours=1)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Rig]:
    harness = Rig(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


# ---- bodies that break parsers; tracebacks in the log ---------------------------------------


async def test_deep_nesting_is_a_400_and_a_traceback_is_one_masked_json_line(h: Rig) -> None:
    """Before: 500, and a multi-line plain-text RecursionError in the JSON log."""
    buf = io.StringIO()
    logs.configure(json=True, file=buf)
    await h.feed(cap_xml(ID, T0, expires=T0 + 12 * H))
    target = (await calls_out(h))[0]
    before = await h.snapshot()
    for pad, path in enumerate(("/hooks/ivr", "/hooks/reply")):
        for deep in (b"[" * 30_000, b'{"a":' * 10_000):  # both under the 64 KiB limit
            deep += b" " * pad  # a request of its own on each path (else: a replay, 401)
            ts = int(h.clock.now().timestamp())
            headers = {"X-Warnd-Timestamp": str(ts), "X-Warnd-Signature": sign(SECRET, ts, deep)}
            status, text = await h.post(path, deep, headers)
            assert status == 400 and "nested too deeply" in str(text), (path, status)
    assert await h.snapshot() == before

    # a bug inside a hook: its traceback, with a number and the secret in the message
    engine: Any = h.daemon.engine

    async def broken(*_args: Any) -> Any:
        raise RuntimeError(f"boom for {target.to} with {SECRET.decode()}")

    engine.ack_ivr = broken
    status, _ = await h.hook("/hooks/ivr", {"id": target.id, "digits": "1"})
    assert status == 500
    await asyncio.sleep(0.05)
    lines = buf.getvalue().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    (crash,) = [e for e in events if e.get("exception")]
    assert crash["logger"] == "aiohttp.server" and crash["level"] == "error"
    (exc,) = crash["exception"]
    assert exc["exc_type"] == "RuntimeError" and exc["frames"]
    assert target.to not in buf.getvalue() and SECRET.decode() not in buf.getvalue()
    assert target.to[:6] + "****" in exc["exc_value"]  # masked, still telling numbers apart


# ---- 401: one body, the reason only in the log ------------------------------------------------


async def test_every_401_has_the_same_body_and_the_log_names_the_check(h: Rig) -> None:
    """Before: the body named the failed check (missing, mismatch, too_old, replayed)."""
    buf = io.StringIO()
    logs.configure(json=True, file=buf)
    body = {"id": "x", "digits": "1"}
    raw, good = h.signed(body)
    now = int(h.clock.now().timestamp())
    assert (await h.post("/hooks/ivr", raw, good))[0] == 200
    cases = {
        "missing": (raw, {}),
        "malformed": (raw, {**good, "X-Warnd-Signature": "sha1=00"}),
        "mismatch": h.signed(body, secret=SECRET + b"x"),
        "too_old": h.signed(body, ts=now - 301),
        "too_new": h.signed(body, ts=now + 120),
        "replayed": (raw, good),
    }
    answers = set()
    for data, headers in cases.values():
        status, text = await h.post("/hooks/ivr", data, headers)
        assert status == 401
        answers.add(text)
    assert answers == {ack.UNAUTHORIZED}
    reasons = [json.loads(x)["reason"] for x in buf.getvalue().splitlines() if "hook_refused" in x]
    assert reasons == list(cases)


# ---- links: same origin only, and guessing is budgeted ------------------------------------


async def test_a_cross_site_post_does_not_acknowledge(h: Rig) -> None:
    """Before: a POST from evil.example acknowledged."""
    await h.feed(cap_xml(ID, T0, expires=T0 + 12 * H))
    rows = await calls_out(h)
    before = await h.snapshot()
    foreign = [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # a sandboxed frame or a file: not our page
        {"Origin": h.base.replace("127.0.0.1", "127.0.0.2")},  # another host
        {"Sec-Fetch-Site": "cross-site"},  # no Origin, but the browser says where it came from
    ]
    for headers in foreign:
        async with h.http.post(h.base + link(rows[0]), headers=headers) as resp:
            assert resp.status == 403 and "已确认" not in await resp.text(), headers
    assert await h.snapshot() == before
    own = [
        {"Origin": h.base},  # the confirmation page itself (the Host it was served under)
        {"Origin": PUBLIC},  # behind a proxy: the public URL of the links
        {},  # no Origin at all, as some phones' browsers send
    ]
    for row, headers in zip(rows, own, strict=False):
        async with h.http.post(h.base + link(row), headers=headers) as resp:
            assert resp.status == 200 and "已确认收到" in await resp.text(), headers
    assert len((await h.snapshot())[0]) == 3  # three acknowledgements


async def _from(h: Harness, source: str, method: str, path: str) -> int:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.request(method, h.base + path) as resp,
    ):
        return resp.status


async def test_guessing_links_is_budgeted_per_address(h: Rig) -> None:
    """Before: 2,000 guesses in 10 s from one client (199/s), every one looked up."""
    buf = io.StringIO()
    logs.configure(json=True, file=buf)
    await h.feed(cap_xml(ID, T0, expires=T0 + 12 * H))
    rows = await calls_out(h)
    started = time.monotonic()
    statuses: Counter[int] = Counter()
    for _ in range(300):
        token = secrets.token_urlsafe(24)
        statuses[await _from(h, "127.0.0.5", "POST", f"/a/{token}")] += 1
    elapsed = time.monotonic() - started
    burst, rate = ack.LINK_MISSES
    assert statuses[404] <= burst + rate * elapsed + 1  # looked up: 20, then 10 a minute
    assert statuses[429] >= 300 - statuses[404] and set(statuses) == {404, 429}
    # the budget is per address: the person's own phone is not locked out
    assert await _from(h, "127.0.0.6", "GET", link(rows[0])) == 200
    assert await _from(h, "127.0.0.6", "POST", link(rows[0])) == 200
    assert await _from(h, "127.0.0.5", "GET", link(rows[1])) == 429  # the guesser's is
    refusals = [json.loads(x) for x in buf.getvalue().splitlines() if "link_refused" in x]
    assert 1 <= len(refusals) <= 5  # a few lines, not one a guess


# ---- secrets: the example refused outside demo mode, short ones refused --------------------


def _serve(*args: str) -> Any:
    return CliRunner().invoke(main, ["serve", *args])


def test_serve_refuses_the_example_secret_and_short_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the public example secret and a 3-byte secret were accepted silently."""
    monkeypatch.chdir(REPO)
    result = _serve("--config", "config/warnd.toml")  # the bundled config, without --demo
    assert result.exit_code == 2
    (line,) = [x for x in result.stderr.splitlines() if not x.startswith("{")]
    assert line.startswith("warnd: config/warnd.toml: hooks.secret_file: ") and "--demo" in line
    text = (REPO / "config/warnd.toml").read_text(encoding="utf-8")
    short = tmp_path / "short.toml"
    short.write_text(text.replace('secret_file = "config/hook-secret.example"', 'secret_env = "S"'))
    monkeypatch.setenv("S", "abc")
    result = _serve("--config", str(short))
    assert result.exit_code == 2 and "hooks.secret_env: 密钥太短" in result.stderr
    assert "abc" not in result.stderr.replace("abc…", "")  # never echoed


async def test_the_quick_start_runs_as_one_command_in_demo_mode(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (first,) = [x for x in readme.splitlines() if "warnd serve" in x and x.startswith("python3")]
    assert first.rstrip().endswith(".venv/bin/warnd serve --demo --config config/warnd.toml")
    for part in ("config", "contacts", "examples"):
        shutil.copytree(REPO / part, tmp_path / part)
    config = tmp_path / "config" / "warnd.toml"  # any free ports: tests run side by side
    config.write_text(config.read_text(encoding="utf-8").replace("port = 8620", "port = 0"))
    (tmp_path / "var/spool/incoming").mkdir(parents=True)
    for cap in (REPO / "examples/feed").glob("*.xml"):
        shutil.copy(cap, tmp_path / "var/spool/incoming")
    warnd = str(Path(sys.executable).parent / "warnd")
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            warnd, "serve", "--demo", "--config", "config/warnd.toml", cwd=tmp_path, stderr=err
        )
    try:

        def sent() -> bool:
            assert proc.returncode is None, log.read_text()[-2000:]
            return (tmp_path / "var/outbox.jsonl").exists()

        await eventually(sent, timeout=30, every=0.1, what=lambda: log.read_text()[-2000:])
        events = [json.loads(x) for x in log.read_text().splitlines()]
        demo = [e for e in events if e["event"] == "demo_mode"]
        assert len(demo) == 1 and "演示模式" in demo[0]["note"] and "demo mode" in demo[0]["note"]
        (started,) = [e for e in events if e["event"] == "daemon_started"]
        assert started["demo"] is True and started["listen"].startswith("127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert os.path.getsize(tmp_path / "var/outbox.jsonl") > 0
    assert re.search(r"【演练】", (tmp_path / "var/outbox.jsonl").read_text(encoding="utf-8"))
