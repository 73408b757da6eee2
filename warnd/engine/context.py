"""What every engine manager shares: the store, the directory, the rules and the clock."""

from __future__ import annotations

import base64
import gc
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from warnd import division as div_codes
from warnd.chain.ladder import STAGE, Record, Rules, SendAttempt
from warnd.clock import Clock
from warnd.directory import Directory
from warnd.notice import WarningFacts, call_text
from warnd.policy import Policy
from warnd.store import Store
from warnd.store.tables import WarningRow


class DirectoryPeople:
    """The ladder's view of the directory: who to call for a division at each rung."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    def superior_of(self, code: str) -> str | None:
        """The nearest enclosing division that has A persons (the township of a village…)."""
        parent = div_codes.parent_of(code)
        while parent is not None:
            if self.directory.division(parent) is not None and self.directory.persons(parent, "A"):
                return parent
            parent = div_codes.parent_of(parent)
        return None

    def for_rung(self, code: str, rung: str) -> tuple[str, ...]:
        d = self.directory
        if rung == STAGE:
            return tuple(c.contact_id for c in d.persons(code, "A"))
        if rung == "backup":
            return tuple(c.contact_id for c in d.persons(code, "B"))
        if rung == "superior":
            sup = self.superior_of(code)
            return tuple(c.contact_id for c in d.persons(sup, "A")) if sup else ()
        if rung == "duty":
            county = code[:6]
            return tuple(c.contact_id for c in d.persons(county, "duty"))
        raise ValueError(f"unknown rung {rung!r}")


@dataclass
class Context:
    store: Store
    directory: Directory
    policy: Policy
    clock: Clock
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    public_url: str | None = None  # base of confirmation links; None: no links
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def rules(self) -> Rules:
        return Rules(self.policy.ack.window, self.policy.ack.attempts, tuple(self.policy.ladder))

    @property
    def people(self) -> DirectoryPeople:
        return DirectoryPeople(self.directory)

    def now(self) -> datetime:
        return self.clock.now()

    def set_directory(self, directory: Directory) -> None:
        self.directory = directory


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a batch (a bulk step, a batch of sends).

    A province-wide batch allocates hundreds of thousands of short-lived, acyclic objects
    (rows, states, requests), freed by reference counting; meanwhile the collector would run
    thousands of times, each full pass walking the whole heap — the directory's million
    objects included — which cost a third of the sender's CPU and a sixth of the engine's.
    Whoever found it running turns it back on, so it is never left off after a batch.
    """
    running = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if running:
            gc.enable()


def facts(w: WarningRow) -> WarningFacts:
    return WarningFacts(
        key=w.key,
        headline=w.headline or w.event or w.key,
        severity=w.severity,
        reference_at=w.reference_at,
        reference_kind=w.reference_kind or "onset",
        drill=w.drill,
    )


def division_name(ctx: Context, code: str, fallback: str | None = None) -> str:
    d = ctx.directory.division(code)
    return d.name if d else (fallback or code)


class _Entropy:
    """Bytes from the OS's CSPRNG (``os.urandom``), read 64 KiB at a time.

    Every queued message needs an id, a reply code and a link token: three reads of the random
    source each, a tenth of the engine's time in a province-wide fan-out, against one read per
    ~1,000 messages here. Used from the event loop's thread only; bytes are never reused.
    """

    def __init__(self, size: int = 65536) -> None:
        self._size = size
        self._buf = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        pos = self._pos
        if pos + n > len(self._buf):
            self._buf, pos = os.urandom(self._size), 0
        self._pos = pos + n
        return self._buf[pos : pos + n]


_entropy = _Entropy()
_CODE_LIMIT = 65536 - 65536 % 9000  # 2 bytes below this map evenly onto 9,000 codes


def new_message_id() -> str:
    """32 hex digits, unique: a UUID version 7 (RFC 9562), millisecond time first.

    Time-ordered ids land at the end of the outbox's primary-key index instead of at a random
    page of it, which a province-wide fan-out (100,000 rows a tick) notices. The id is no
    secret (hooks are signed; links carry their own token), and 74 random bits keep it unique.
    """
    raw = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + _entropy.take(10))
    raw[6] = 0x70 | (raw[6] & 0x0F)  # version 7
    raw[8] = 0x80 | (raw[8] & 0x3F)  # RFC 4122 variant
    return raw.hex()


def route_message_id(message_id: str, route: int) -> str:
    """The id a channel is given for a message on its ``route``-th route (0: the first).

    The first route carries the message id itself; a fallback route (the SMS after a refused
    voice call) carries ``<id>-<route>``: contracts §5 lets a gateway drop a repeated id, and
    the fallback is another message, not a retry of the first — under the same id a
    deduplicating gateway would swallow exactly the message meant to get through. A retry of
    the same route keeps its id, so every route stays idempotent.
    """
    return message_id if route == 0 else f"{message_id}-{route}"


def message_id_of(sent_id: str) -> str:
    """The outbox id behind an id a channel reported (an IVR press, a vendor callback)."""
    base, dash, route = sent_id.rpartition("-")
    return base if dash and route.isdigit() and 0 < len(route) <= 2 and base else sent_id


def new_reply_code() -> str:
    """Four digits, 1000–9999, uniform (rejection sampling over two random bytes)."""
    while True:
        v = int.from_bytes(_entropy.take(2), "big")
        if v < _CODE_LIMIT:
            return str(v % 9000 + 1000)


def new_link_token() -> str:
    """192 random bits, URL-safe (what ``secrets.token_urlsafe(24)`` makes)."""
    return base64.urlsafe_b64encode(_entropy.take(24)).decode("ascii")


def carry_out(
    ctx: Context,
    w: WarningRow,
    drow: Any,
    commands: list[Any],
    call_ids: dict[str, int],
    phones: dict[str, str],
    now: datetime,
    outbox: list[tuple[Any, ...]],
    events: list[tuple[Any, ...]],
    wf: WarningFacts | None = None,
) -> int:
    """Turn the ladder's commands into outbox and event rows (appended). Returns attempts.

    ``wf`` is ``facts(w)``, when the caller already has it (one per warning, not per division).
    """
    queued = 0
    if wf is None:
        wf = facts(w)
    wid, wkey, drill = w.id, w.key, w.drill  # ORM attributes, read once
    base = ctx.public_url.rstrip("/") if ctx.public_url else None
    tz = ctx.tz
    for cmd in commands:
        if isinstance(cmd, SendAttempt):
            on_behalf = drow.name if cmd.rung in ("superior", "duty") else None
            token = new_link_token() if base is not None else None
            code = new_reply_code()
            link = f"{base}/a/{token}" if token else None
            text = call_text(
                wf,
                division_name=drow.name,
                rung=cmd.rung,
                attempt=cmd.attempt,
                reply_code=code,
                link=link,
                tz=tz,
                on_behalf_of=on_behalf,
            )
            outbox.append(
                _outbox(
                    wid,
                    drill,
                    cmd.contact_id,
                    phones.get(cmd.contact_id, ""),
                    "call",
                    text,
                    now,
                    call_ids[cmd.call_key],
                    cmd.attempt,
                    cmd.rung,
                    code,
                    token,
                )
            )
            queued += 1
        elif isinstance(cmd, Record):
            events.append(
                _event(wid, wkey, now, cmd.type, cmd.contact_id, drow.code, drow.level, cmd.data)
            )
    return queued


def outbox_row(
    w: WarningRow,
    *,
    contact_id: str,
    to: str,
    purpose: str,
    text: str,
    now: datetime,
    call_id: int | None = None,
    attempt: int | None = None,
    rung: str | None = None,
    reply_code: str | None = None,
    token: str | None = None,
) -> tuple[Any, ...]:
    """An outbox row in ``chainrows.OUTBOX_COLS`` order."""
    return _outbox(
        w.id, w.drill, contact_id, to, purpose, text, now, call_id, attempt, rung, reply_code, token
    )


def _outbox(  # a row in OUTBOX_COLS order
    warning_id: int | None,
    drill: bool,
    contact_id: str,
    to: str,
    purpose: str,
    text: str,
    now: datetime,
    call_id: int | None,
    attempt: int | None,
    rung: str | None,
    reply_code: str | None,
    token: str | None,
) -> tuple[Any, ...]:
    return (
        new_message_id(),
        warning_id,
        call_id,
        contact_id,
        to,
        purpose,
        attempt,
        rung,
        text,
        now,
        "pending",
        0,
        reply_code,
        token,
        drill,
    )


def event_row(
    w: WarningRow,
    at: datetime,
    type_: str,
    *,
    contact_id: str | None,
    division: str | None,
    level: str | None,
    data: dict[str, Any] | None = None,
) -> tuple[Any, ...]:
    """An event row in ``chainrows.EVENT_COLS`` order."""
    return _event(w.id, w.key, at, type_, contact_id, division, level, data or {})


def _event(
    warning_id: int | None,
    warning_key: str,
    at: datetime,
    type_: str,
    contact_id: str | None,
    division: str | None,
    level: str | None,
    data: Mapping[str, Any] | Iterable[tuple[str, Any]],
) -> tuple[Any, ...]:  # a row in EVENT_COLS order
    return (warning_id, at, type_, warning_key, contact_id, division, level, dict(data))


def phones_for(ctx: Context, contact_ids: list[str] | tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for cid in contact_ids:
        c = ctx.directory.contact(cid)
        if c is not None:
            out[cid] = c.phone
    return out
