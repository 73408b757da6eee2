"""Test rigs for warnd (as structlog ships ``structlog.testing``): what every test suite of
warnd — and of a deployment that drives it — needs, in one place (docs/testing.md).

- ``eventually`` / ``wait_until``: wait on an observable, never on a timer: poll a probe until
  it holds, fail with what it last saw. The only polling loop the tests have.
- ``EngineRig``: the real engine on a ``ManualClock`` over a real store (a SQLite file or a
  PostgreSQL database); the engine is built as the drill simulation builds its own
  (``warnd.desk.drill.engine_for``). Time moves only when the test moves the clock.
- ``daemon_config``: a ``warnd.toml`` with every table a daemon needs (contracts §2, §7),
  one webhook channel to a gateway; each table's values can be changed.
- ``ServeProcess``: ``warnd serve`` as a real subprocess (the console script), started and
  waited for on its ``daemon_started`` log line (its ports), killed or stopped.

Nothing here is imported by warnd itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

from warnd.config.policy import Policy
from warnd.core import directory as directory_mod
from warnd.core.clock import ManualClock
from warnd.core.directory import Directory
from warnd.engine import Engine
from warnd.engine.outbox import Attempt
from warnd.store import Store

T = TypeVar("T")
#: what a wait says when it gives up: a text, or a function giving one (a log's tail…)
What = str | Callable[[], str]

#: the ``warnd`` console script of the running interpreter's environment
WARND = Path(sys.executable).parent / "warnd"


# ---- waiting on an observable ---------------------------------------------------------------


def _said(what: What, last: object) -> str:
    text = what() if callable(what) else what
    return f"{text or 'condition'} did not hold within the timeout (last seen: {last!r})"


async def eventually(
    probe: Callable[[], T | Awaitable[T | None] | None],
    *,
    timeout: float = 10.0,
    every: float = 0.02,
    what: What = "",
) -> T:
    """Call ``probe`` (plain or async) every ``every`` seconds until it returns something
    truthy, and return that. An exception from ``probe`` ends the wait at once (a process
    that died is not waited for); after ``timeout`` seconds, AssertionError naming ``what``
    and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(_said(what, value))
        await asyncio.sleep(every)


def wait_until(
    probe: Callable[[], T | None], *, timeout: float = 10.0, every: float = 0.05, what: What = ""
) -> T:
    """``eventually`` for code without an event loop (a subprocess watched from a plain test)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(_said(what, value))
        time.sleep(every)


# ---- the engine on a manual clock -----------------------------------------------------------

T0 = datetime(2025, 6, 14, 0, 0, tzinfo=UTC)


class EngineRig:
    """The real engine on a ``ManualClock`` over a real store; ``async with`` opens and closes
    it (or ``open`` / ``close``, to reopen the same store: a restart)."""

    def __init__(
        self,
        contacts: Path | Directory,
        store_url: str,
        *,
        policy: Policy | None = None,
        start: datetime = T0,
        public_url: str | None = None,
    ) -> None:
        if isinstance(contacts, Path):
            contacts, problems = directory_mod.load(contacts)
            assert problems == [], problems
        self.directory = contacts
        self.url = store_url
        self.policy = policy or Policy.default()
        self.clock = ManualClock(start)
        self.public_url = public_url
        self.store: Store | None = None
        self.engine: Engine | None = None

    async def open(self, **store_options: Any) -> Engine:
        from warnd.desk.drill import engine_for

        self.store = await Store.open(self.url, **store_options)
        self.engine = engine_for(
            self.store, self.directory, self.policy, self.clock, public_url=self.public_url
        )
        return self.engine

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send_all(self, channel: str = "test") -> list[Attempt]:
        """Claim everything due and record it sent on ``channel``; what was sent."""
        assert self.engine is not None
        claimed = await self.engine.claim()
        await self.engine.record([m.sent(channel) for m in claimed])
        return claimed


# ---- a daemon's config ----------------------------------------------------------------------

DEFAULT_STAGES = (("county", "6h"), ("township", "3h"), ("village", "1h"))


def daemon_config(
    tmp: Path,
    *,
    gateway_url: str,
    secret: bytes,
    store_url: str | None = None,
    heartbeat: str | None = None,
    public_url: str | None = None,
    stages: Sequence[tuple[str, str]] = DEFAULT_STAGES,
    window: str = "5m",
    attempts: int = 3,
    ladder: Sequence[str] = ("backup", "superior", "duty"),
    feed_interval: str = "10s",
    channel: dict[str, Any] | None = None,
    extra: str = "",
) -> Path:
    """Write ``tmp/warnd.toml`` (and the hook secret ``tmp/hook-secret``) for a daemon over
    ``tmp/warnd.db`` (unless ``store_url``), contacts in ``tmp/contacts``, the folder feed
    ``tmp/incoming`` and one webhook channel ``gateway`` (``channel``: more of its options);
    listen port 0 (any free port); ``heartbeat``: ``[store] heartbeat`` (PostgreSQL instances).
    ``extra``: more TOML, appended."""
    (tmp / "hook-secret").write_bytes(secret + b"\n")
    url = store_url or f"sqlite:///{tmp / 'warnd.db'}"
    text = [
        'timezone = "Asia/Shanghai"\n',
        f'[store]\nurl = "{url}"\n' + (f'heartbeat = "{heartbeat}"\n' if heartbeat else ""),
        f'[contacts]\npath = "{tmp / "contacts"}"\n',
        *(f'[[stages]]\nlevel = "{level}"\nlead = "{lead}"\n' for level, lead in stages),
        f'[ack]\nwindow = "{window}"\nattempts = {attempts}\n',
        f"[escalation]\nladder = {json.dumps(list(ladder))}\n",
        '[trigger]\nmin_severity = "Moderate"\n',
        '[listen]\nhost = "127.0.0.1"\nport = 0\n'
        + (f'public_url = "{public_url}"\n' if public_url else ""),
        f'[hooks]\nsecret_file = "{tmp / "hook-secret"}"\n',
        f'[[feeds]]\nname = "incoming"\npath = "{tmp / "incoming"}"\n'
        f'interval = "{feed_interval}"\n',
        "[channels.gateway]\n"
        + "".join(
            f"{k} = {json.dumps(v, ensure_ascii=False)}\n"
            for k, v in {
                "type": "webhook",
                "url": gateway_url,
                "kinds": ["voice", "sms"],
                **(channel or {}),
            }.items()
        ),
        extra,
    ]
    path = tmp / "warnd.toml"
    path.write_text("\n".join(text), encoding="utf-8")
    return path


# ---- ``warnd serve`` as a subprocess --------------------------------------------------------


class ServeProcess:
    """One ``warnd serve`` process: its stderr (JSON log lines) goes to ``log``."""

    def __init__(
        self,
        config: Path,
        log: Path,
        *,
        clock_file: Path | None = None,
        tick: float = 0.2,
        env: dict[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        """``preexec``: run in the child before ``warnd`` starts (lower a resource limit…)."""
        self.config, self.log, self.clock_file, self.tick = config, log, clock_file, tick
        self.env, self.preexec = env, preexec
        self.proc: asyncio.subprocess.Process | None = None
        self.port: int | None = None  # the hooks' listener
        self.monitor: int | None = None  # /healthz and /metrics
        self.instance: str | None = None  # ``outbox.claimed_by``
        self._killed = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def events(self, name: str) -> list[dict[str, Any]]:
        """The log's JSON lines whose event is ``name``."""
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if f'"{name}"' in line:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == name:
                        out.append(event)
        return out

    def tail(self, n: int = 2000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-n:]

    async def start(self, timeout: float = 30.0) -> None:
        """Start, and return once it listens (its ``daemon_started`` line)."""
        args = ["serve", "--config", str(self.config), "--tick", str(self.tick)]
        if self.clock_file is not None:
            args += ["--clock-file", str(self.clock_file)]
        with self.log.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                str(WARND),
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
                env=self.env,
                preexec_fn=self.preexec,
            )

        def started() -> dict[str, Any] | None:
            if not self.alive:
                raise AssertionError(f"warnd serve exited: {self.tail()}")
            found = self.events("daemon_started")
            return found[0] if found else None

        event = await eventually(
            started, timeout=timeout, every=0.05, what=lambda: f"daemon_started: {self.tail()}"
        )
        self.port = int(event["listen"].rsplit(":", 1)[1])
        self.monitor = int(event["monitor"].rsplit(":", 1)[1])
        self.instance = event.get("instance")

    def sigkill(self) -> None:
        """SIGKILL once, by pid (a second one could race asyncio's reaping: exit status 255)."""
        assert self.proc is not None
        if self.proc.returncode is None and not self._killed:
            self._killed = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)

    async def wait(self, timeout: float = 60.0) -> int:
        """Its exit status (generous timeout: test machines are shared)."""
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (a graceful stop), then its exit status."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait(timeout)


__all__ = [
    "DEFAULT_STAGES",
    "WARND",
    "EngineRig",
    "ServeProcess",
    "daemon_config",
    "eventually",
    "wait_until",
]
