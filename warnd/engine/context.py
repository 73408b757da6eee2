"""What every engine manager shares: the store, the directory, the rules and the clock."""

from __future__ import annotations

import secrets
import uuid
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


def new_message_id() -> str:
    return uuid.uuid4().hex


def new_reply_code() -> str:
    return f"{secrets.randbelow(9000) + 1000}"


def carry_out(
    ctx: Context,
    w: WarningRow,
    drow: Any,
    commands: list[Any],
    call_ids: dict[str, int],
    phones: dict[str, str],
    now: datetime,
    outbox: list[dict[str, Any]],
    events: list[dict[str, Any]],
    wf: WarningFacts | None = None,
) -> int:
    """Turn the ladder's commands into outbox and event rows (appended). Returns attempts.

    ``wf`` is ``facts(w)``, when the caller already has it (one per warning, not per division).
    """
    queued = 0
    if wf is None:
        wf = facts(w)
    base = ctx.public_url.rstrip("/") if ctx.public_url else None
    tz = ctx.tz
    for cmd in commands:
        if isinstance(cmd, SendAttempt):
            on_behalf = drow.name if cmd.rung in ("superior", "duty") else None
            token = secrets.token_urlsafe(24) if base is not None else None
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
                outbox_row(
                    w,
                    contact_id=cmd.contact_id,
                    to=phones.get(cmd.contact_id, ""),
                    purpose="call",
                    text=text,
                    now=now,
                    call_id=call_ids[cmd.call_key],
                    attempt=cmd.attempt,
                    rung=cmd.rung,
                    reply_code=code,
                    token=token,
                )
            )
            queued += 1
        elif isinstance(cmd, Record):
            events.append(
                event_row(
                    w,
                    now,
                    cmd.type,
                    contact_id=cmd.contact_id,
                    division=drow.code,
                    level=drow.level,
                    data=dict(cmd.data),
                )
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
) -> dict[str, Any]:
    return {
        "id": new_message_id(),
        "warning_id": w.id,
        "call_id": call_id,
        "contact_id": contact_id,
        "to": to,
        "purpose": purpose,
        "attempt": attempt,
        "rung": rung,
        "text": text,
        "due_at": now,
        "state": "pending",
        "tries": 0,
        "channel": None,
        "error": None,
        "lease_until": None,
        "claimed_by": None,
        "sent_at": None,
        "reply_code": reply_code,
        "token": token,
        "drill": w.drill,
    }


def event_row(
    w: WarningRow,
    at: datetime,
    type_: str,
    *,
    contact_id: str | None,
    division: str | None,
    level: str | None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "warning_id": w.id,
        "at": at,
        "type": type_,
        "warning_key": w.key,
        "contact_id": contact_id,
        "division": division,
        "level": level,
        "data": dict(data or {}),
    }


def phones_for(ctx: Context, contact_ids: list[str] | tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for cid in contact_ids:
        c = ctx.directory.contact(cid)
        if c is not None:
            out[cid] = c.phone
    return out
