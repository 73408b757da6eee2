"""Headless Chromium driven over the DevTools protocol, for tests of pages served by warnd.

The Debian ``chromium`` binary with a fresh profile and no network services (the flags of
docs/testing.md), ``--remote-debugging-port=0``; the port is read from the profile's
``DevToolsActivePort`` file, the page's websocket found with ``/json/list``, and commands sent
with aiohttp's websocket client (no browser download, no extra dependency).
``Page.evaluate`` returns a JavaScript value; ``wait_for`` polls an expression until it is
truthy (waiting on what the page shows, never on a timer of the code under test).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from warnd.testing import eventually

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def find_chromium() -> str:
    """The binary, or a skip with the reason (a failure when WARND_REQUIRE_CHROMIUM=1)."""
    for path in (os.environ.get("CHROMIUM"), *CANDIDATES):
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "headless Chromium not found (apt-get install -y chromium fonts-noto-cjk)"
    if os.environ.get("WARND_REQUIRE_CHROMIUM") == "1":
        pytest.fail(reason + " and WARND_REQUIRE_CHROMIUM=1")
    pytest.skip(reason)


class CDPError(RuntimeError):
    pass


class Page:
    """One Chromium process with one page."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.proc: asyncio.subprocess.Process | None = None
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.console: list[str] = []

    async def start(self, timeout: float = 30.0) -> Page:
        binary = find_chromium()
        self.profile.mkdir(parents=True, exist_ok=True)
        port_file = self.profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # a profile used before: its port is gone
        self.proc = await asyncio.create_subprocess_exec(
            binary,
            *FLAGS,
            f"--user-data-dir={self.profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        proc = self.proc

        def port_written() -> str:
            if proc.returncode is not None:
                raise CDPError("chromium exited before opening its DevTools port")
            return port_file.read_text().strip() if port_file.exists() else ""

        try:
            port = int((await eventually(port_written, timeout=timeout, every=0.05)).split()[0])
        except AssertionError:
            raise CDPError("chromium did not open its DevTools port") from None
        self.http = aiohttp.ClientSession()
        http = self.http

        async def page_target() -> dict[str, Any] | None:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets: list[dict[str, Any]] = await resp.json()
            return next((t for t in targets if t.get("type") == "page"), None)

        try:
            target = await eventually(page_target, timeout=timeout, every=0.05)
        except AssertionError:
            raise CDPError("chromium has no page target") from None
        url = target["webSocketDebuggerUrl"]
        self.ws = await self.http.ws_connect(url, max_msg_size=64 * 1024 * 1024)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._waiting:
                self._waiting.pop(data["id"]).set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", "")) for a in args))
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.console.append("exception: " + json.dumps(details, ensure_ascii=False))

    async def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        self._ids += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._ids] = fut
        await self.ws.send_str(json.dumps({"id": self._ids, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        out = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in out:
            raise CDPError(json.dumps(out["exceptionDetails"], ensure_ascii=False))
        return out["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        try:
            return await eventually(
                lambda: self.evaluate(expression), timeout=timeout, every=0.1, what=expression
            )
        except AssertionError as exc:
            raise CDPError(f"{exc}; console: {self.console}") from None

    async def size(self, width: int, height: int) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for(f"location.href.startsWith({json.dumps(url.split('?')[0])})")
        await self.wait_for("document.readyState === 'complete'")

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
