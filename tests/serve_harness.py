"""Crash-consistency soak: a county scenario through ``warnd serve`` killed at random points,
checked against the ``warnd drill simulate`` oracle on the same inputs (docs/hardening.md).

Built on ``tests/crash_rig.py``'s ``Run`` (the daemon as a subprocess on a file clock, the
gateway fake in this process, waiting on observables only). A case is drawn from a seed: a
county, a warning with an Update and a Cancel, responders who answer after ``ack_after``. The
clock steps from one due time to the next (stages, redials, escalations, lease expiries, answers,
feed messages); at chosen steps the daemon is SIGKILLed — in the middle of a fan-out (at the
n-th gateway request), in the middle of a tick (a random moment after the clock moved), or
while an acknowledgement is being posted — and started again at once. Responders answer
through the signed hooks. At the end the store's event history must equal the oracle's, every
queued attempt must have reached the gateway (or have been overtaken), no acknowledgement the
daemon answered may be lost, and an id may reach the gateway twice only if it was in flight at
a kill. Used by ``tests/test_soak.py`` (short) and ``bench/soak.py`` (full, with figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from click.testing import CliRunner
from crash_rig import SECRET, T0, Posted, Run, _utc
from factory import cap_xml, county_rows, write_contacts

from warnd.desk.views import history
from warnd.desk.views.reader import open_reader
from warnd.edges.signature import sign
from warnd.testing import daemon_config, eventually

WINDOW, ATTEMPTS = timedelta(minutes=5), 3
#: Simultaneous inputs and timers may be taken in either order by a live daemon (a file clock
#: moves before the harness can post), while the oracle takes feed messages and answers first.
#: So no input lands on a timer: timers run on the 5-minute grid of the stage times and on the
#: grid of the Update (+150 s); the Cancel comes at +20 s; an answer comes ``ack_after`` after a
#: call's start with ``ack_after`` mod 300 s not in {0, 150, 20, 170}, and longer than the
#: outbox lease (60 s) so that a message in flight at a kill is resent before it is answered.
ANSWERS = [timedelta(seconds=s) for s in (90, 200, 260, 420, 490, 730, 850)]
UPDATE_AT = timedelta(hours=1, minutes=32, seconds=30)
CANCEL_AT = timedelta(hours=4, minutes=5, seconds=20)
SENDER = "433122_Meteorological_Observatory"
KINDS = ("fanout", "tick", "hook")


@dataclass
class Case:
    """One scenario: contacts, feed messages (sent time, file name, bytes), responders."""

    seed: int
    rows: list[list[str]]
    messages: list[tuple[datetime, str, bytes]]
    responders: dict[str, timedelta | None]


def make_case(seed: int, townships: int = 3, villages: int = 3) -> Case:
    rng = random.Random(seed)
    rows = county_rows(townships=townships, villages=villages)
    rows = [r for r in rows if not (r[4] == "B" and rng.random() < 0.25)]  # some posts lack a B
    t0 = T0
    wid = f"43312241600000_{seed:06d}0800"
    onset = t0 + timedelta(hours=4)  # county at arrival, township at +1h, village at +3h
    messages = [
        (t0, "1-alert.xml", cap_xml(wid, t0, onset=onset, expires=t0 + timedelta(hours=9))),
        (
            t0 + UPDATE_AT,
            "2-update.xml",
            cap_xml(
                f"43312241600000_{seed:06d}0930",
                t0 + UPDATE_AT,
                onset=onset + timedelta(minutes=30),
                expires=t0 + timedelta(hours=9),
                msg_type="Update",
                severity="Extreme",  # the level rose: notified divisions are called again
                references=[(SENDER, wid, t0)],
            ),
        ),
        (
            t0 + CANCEL_AT,
            "3-cancel.xml",
            cap_xml(
                f"43312241600000_{seed:06d}1205",
                t0 + CANCEL_AT,
                msg_type="Cancel",
                references=[(SENDER, wid, t0)],
            ),
        ),
    ]
    responders: dict[str, timedelta | None] = {}
    for r in rows:
        roll = rng.random()
        if roll < 0.55:
            responders[r[0]] = rng.choice(ANSWERS)
        elif roll < 0.65:
            responders[r[0]] = None  # listed as "never"
    return Case(seed, rows, messages, responders)


def write_case(case: Case, tmp: Path, gateway_url: str) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    write_contacts(tmp / "contacts", case.rows)
    (tmp / "feed").mkdir(exist_ok=True)
    for _sent, name, data in case.messages:
        (tmp / "feed" / name).write_bytes(data)
    lines = ["contact_id,ack_after"] + [
        f"{cid},{'never' if d is None else f'{int(d.total_seconds())}s'}"
        for cid, d in case.responders.items()
    ]
    (tmp / "responders.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp / "incoming").mkdir(exist_ok=True)
    daemon_config(
        tmp, gateway_url=gateway_url, secret=SECRET, attempts=ATTEMPTS, feed_interval="1s"
    )


Event = tuple[str, datetime, str | None, str | None, str | None, int | None]


def _event(kind: str, at: datetime, contact: Any, division: Any, data: dict[str, Any]) -> Event:
    """What must agree between the store and the oracle (the ack's source may not)."""
    return (kind, at.astimezone(UTC), contact, division, data.get("rung"), data.get("attempt"))


def oracle(tmp: Path) -> list[Event]:
    """``warnd drill simulate`` on the case's own files: the events the chain must produce."""
    from warnd.cli import main

    out = tmp / "oracle.json"
    result = CliRunner().invoke(
        main,
        [
            "drill",
            "simulate",
            "--feed",
            str(tmp / "feed"),
            "--contacts",
            str(tmp / "contacts"),
            "--responders",
            str(tmp / "responders.csv"),
            "--report",
            str(out),
            "--config",
            str(tmp / "warnd.toml"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    return [
        _event(e["type"], datetime.fromisoformat(e["at"]), e["contact_id"], e["division"], e)
        for e in report["events"]
    ]


@dataclass
class Soak(Run):
    """``Run`` plus the soak: stepping, answering, killing, checking."""

    seed: int = 0
    kill_plan: dict[datetime, str] = field(default_factory=dict)  # clock time -> kind
    kinds: Counter[str] = field(default_factory=Counter)
    steps: int = 0
    answered: set[int] = field(default_factory=set)  # call ids whose answer was decided
    restarts: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rng = random.Random(self.seed * 7919 + 1)
        self._killed: object = None

    # ---- the process ----------------------------------------------------------------------

    def sigkill(self) -> None:
        """SIGKILL this process once, by pid. (``Popen.send_signal`` polls first and may reap a
        killed child under asyncio's child watcher, which then reports exit status 255 — the
        second ``sigkill`` that ``Run.kill`` sends after a gateway trigger's is such a race.)"""
        assert self.proc is not None
        if self.proc.returncode is None and self._killed is not self.proc:
            self._killed = self.proc
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def crashed(self) -> None:
        """Bookkeeping for a SIGKILL (ours or a trigger's), then start again at once."""
        assert self.proc is not None
        code = self.proc.returncode
        if code is not None and code != -signal.SIGKILL:  # died by itself: that is a finding
            log = (self.tmp / f"serve-{self.runs}.log").read_text(errors="replace")
            raise AssertionError(f"warnd serve exited {code} on its own: {log[-3000:]}")
        await self.kill()
        await self.start()
        self.restarts += 1

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until the live daemon has done everything due now; restart it if it died."""

        async def done() -> bool:
            if not self.alive():
                await self.crashed()
            return self.alive() and not self.busy()

        await eventually(
            done,
            timeout=timeout,
            every=0.03,
            what=lambda: f"settled at {self.now}: {self.busy()[:5]}",
        )

    # ---- time -----------------------------------------------------------------------------

    def next_due(self) -> datetime | None:
        """The earliest stored timer after now (stages, calls, outbox, leases)."""
        queries = (
            "SELECT s.due_at FROM stage s JOIN warning w ON w.id = s.warning_id"
            " WHERE s.state = 'pending' AND w.state = 'active'",
            "SELECT start_due FROM division WHERE start_due IS NOT NULL",
            "SELECT next_due_at FROM call WHERE state = 'active'",
            "SELECT due_at FROM outbox WHERE state = 'pending'",
        )
        times = [_utc(r[0]) for q in queries for r in self.rows(q) if r[0] is not None]
        later = [t for t in times if t is not None and t > self.now]
        return min(later) if later else None

    def due_answers(self, responders: dict[str, timedelta | None]) -> list[tuple[datetime, Any]]:
        """(when, call row) of every answer not yet decided, by the drill's rule."""
        out = []
        for c in self.rows("SELECT * FROM call"):
            after = responders.get(c["contact_id"])
            if c["id"] in self.answered or after is None or after >= WINDOW * ATTEMPTS:
                continue
            start = _utc(c["start_at"])
            assert start is not None
            out.append((start + after, c))
        return out

    # ---- inputs ---------------------------------------------------------------------------

    async def deliver_file(self, name: str, data: bytes) -> None:
        """Drop a feed file (atomically, settled) and wait until the daemon has taken it."""
        tmp = self.tmp / "incoming" / f".{name}.tmp"
        tmp.write_bytes(data)
        old = time.time() - 60
        os.utime(tmp, (old, old))
        os.replace(tmp, self.tmp / "incoming" / name)

        async def taken() -> bool:
            if not self.alive():
                await self.crashed()
            return not (self.tmp / "incoming" / name).exists()

        await eventually(taken, timeout=30, every=0.05, what=f"{name} taken")

    async def answer(self, call: Any, *, kill: bool) -> None:
        """The responder answers call ``call`` by IVR key or SMS code; a kill may cut across."""
        receipts = [r for r in self.gateway.receipts if r.body.get("contact") == call["contact_id"]]
        ids = {o["id"] for o in self.rows("SELECT id FROM outbox WHERE call_id = ?", call["id"])}
        mine = [r for r in receipts if r.id in ids]
        assert mine, f"call {call['id']} answered before any attempt reached the gateway"
        latest = mine[-1].body
        by_ivr = self.rng.random() < 0.5
        path = "/hooks/ivr" if by_ivr else "/hooks/reply"
        body = (
            {"id": latest["id"], "digits": "1"}
            if by_ivr
            else {"from": latest["to"], "text": f"收到 {latest['reply_code']}"}
        )
        while True:
            task = asyncio.ensure_future(self._post(path, body))
            if kill:
                await asyncio.sleep(self.rng.uniform(0.0, 0.02))
                self.sigkill()
            answer = await task
            if kill:
                self.kinds["hook"] += 1
                await self.crashed()
                kill = False
            if answer is not None:
                assert answer["ok"] is True, answer
                self.posted.append(_posted(latest["id"], "ivr" if by_ivr else "sms"))
                return
            await self.settle()  # the request died with the process: the platform retries

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        raw = json.dumps(body, ensure_ascii=False).encode()
        ts = int(self.now.timestamp())
        headers = {
            "Content-Type": "application/json",
            "X-Warnd-Timestamp": str(ts),
            "X-Warnd-Signature": sign(SECRET, ts, raw),
        }
        try:
            async with (
                aiohttp.ClientSession() as s,
                s.post(f"http://127.0.0.1:{self.port}{path}", data=raw, headers=headers) as resp,
            ):
                if resp.status != 200:
                    return None
                answer: dict[str, Any] = await resp.json()
                return answer
        except (aiohttp.ClientError, OSError):
            return None

    # ---- the run --------------------------------------------------------------------------

    async def drive(self, case: Case) -> None:
        """Step the clock from due time to due time until nothing is left, killing as planned."""
        feed = sorted(case.messages)
        self.set_clock(feed[0][0])
        if self.kill_plan.get(self.now) == "fanout":
            self.gateway.on_count(self.rng.randint(1, 3), self._trip)
        await self.start()
        while True:
            self.steps += 1
            kind = self.kill_plan.get(self.now)
            if kind == "tick":  # the clock just moved: the daemon is somewhere in its work
                await asyncio.sleep(self.rng.uniform(0.0, 0.35))
                self.sigkill()
                self.kinds["tick"] += 1
                await self.crashed()
            while feed and feed[0][0] <= self.now:
                _sent, name, data = feed.pop(0)
                await self.deliver_file(name, data)
            await self.settle()
            due = [a for a in self.due_answers(case.responders) if a[0] <= self.now]
            for _at, call in sorted(due, key=lambda a: a[1]["id"]):
                self.answered.add(call["id"])
                (fresh,) = self.rows("SELECT state FROM call WHERE id = ?", call["id"])
                if fresh["state"] == "active":
                    await self.answer(call, kill=kind == "hook")
                    kind = None
                await self.settle()
            if kind == "hook":  # nobody answered after all: kill here instead
                self.sigkill()
                self.kinds["hook"] += 1
                await self.settle()
            later = [a for a, _c in self.due_answers(case.responders) if a > self.now]
            nxt = [t for t in (self.next_due(), feed[0][0] if feed else None) if t is not None]
            if not nxt + later:
                return
            target = min(nxt + later)
            if self.kill_plan.get(target) == "fanout":  # SIGKILL at the k-th request of the wave
                self.gateway.on_count(self.gateway.count + self.rng.randint(1, 3), self._trip)
            self.set_clock(target)

    def _trip(self, _receipt: object) -> None:
        self.kinds["fanout"] += 1
        self.sigkill()

    # ---- the verdict ----------------------------------------------------------------------

    async def live_events(self) -> list[Event]:
        """The store's history (``warnd.desk.views.history``), as the oracle's events."""
        reader = await open_reader(f"sqlite:///{self.db}")
        try:
            events = await history.events(reader, UTC)
        finally:
            await reader.close()
        return [
            _event(e["type"], datetime.fromisoformat(e["at"]), e["contact_id"], e["division"], e)
            for e in events
        ]

    async def verify(self, expected: list[Event]) -> dict[str, Any]:
        """Compare with the oracle; the figures of the case, ``problems`` empty when it held."""
        problems: list[str] = []
        live = Counter(await self.live_events())
        want = Counter(expected)
        if live != want:
            missing, extra = want - live, live - want
            problems.append(f"events differ: missing {list(missing)[:3]}, extra {list(extra)[:3]}")
        outbox = {r["id"]: r for r in self.rows("SELECT * FROM outbox")}
        calls = {r["id"]: r for r in self.rows("SELECT * FROM call")}
        accepted = {r.id for r in self.gateway.receipts if r.ok}
        unsent = []
        for o in outbox.values():
            if o["id"] in accepted:
                continue
            superseded = o["state"] == "cancelled" and o["error"] == "call no longer open"
            if not superseded or o["call_id"] is None:
                unsent.append((o["id"], o["purpose"], o["state"], o["error"]))
        if unsent:
            problems.append(f"queued but never delivered: {unsent[:3]}")
        for o in outbox.values():  # an overtaken attempt is fine only if its call moved on
            if o["id"] not in accepted and o["call_id"] is not None:
                call = calls[o["call_id"]]
                if call["state"] == "active" and call["attempts_made"] == o["attempt"]:
                    problems.append(f"the live attempt {o['id']} of call {call['id']} was dropped")
        notified = {o["contact_id"] for o in outbox.values() if o["id"] in accepted}
        oracle_notified = {e[2] for e in expected if e[0] in ("notify", "update", "cancel")}
        if notified != oracle_notified:
            problems.append(f"persons notified differ: {notified ^ oracle_notified}")
        acks = {a["outbox_id"]: a for a in self.rows("SELECT * FROM ack")}
        lost = [p.outbox_id for p in self.posted if p.outbox_id not in acks]
        if lost:
            problems.append(f"acknowledgements answered 200 and lost: {lost}")
        if sum(e[0] == "ack" for e in expected) != len(acks):
            problems.append(f"{len(acks)} acks stored, oracle has a different number")
        in_flight = set().union(*(k.in_flight for k in self.kills)) if self.kills else set()
        retried = {r.id for r in self.gateway.receipts if not r.ok}
        twice = {i for i, n in self.gateway.id_counts().items() if n > 1}
        if twice - in_flight - retried or self.gateway.unexpected_repeats(allowed=in_flight):
            problems.append(f"sent twice without a kill in flight: {twice - in_flight}")
        return {
            "seed": self.seed,
            "steps": self.steps,
            "kills": len(self.kills),
            "kill_kinds": dict(self.kinds),
            "restarts": self.restarts,
            "events": sum(want.values()),
            "gateway_requests": self.gateway.count,
            "in_flight_at_kills": len(in_flight),
            "resent_same_id": len(twice & in_flight),
            "acks_posted": len(self.posted),
            "items_lost": len(unsent) + len(lost),
            "problems": problems,
        }


def _posted(outbox_id: str, source: str) -> Posted:
    return Posted(outbox_id, source, time.monotonic())


def plan_kills(expected: list[Event], kills: int, rng: random.Random) -> dict[datetime, str]:
    """At which clock times to kill, and how: waves of sends, answers, any moment."""
    sends = Counter(e[1] for e in expected if e[0] in ("notify", "update", "cancel"))
    where = {
        "fanout": sorted(t for t, n in sends.items() if n >= 3),
        "hook": sorted({e[1] for e in expected if e[0] == "ack"}),
        "tick": sorted({e[1] for e in expected}),
    }
    plan: dict[datetime, str] = {}
    for i in range(kills):
        kind = KINDS[i % len(KINDS)]
        free = [t for t in where[kind] if t not in plan]
        if not free:
            kind, free = "tick", [t for t in where["tick"] if t not in plan]
        if not free:
            break
        plan[rng.choice(free)] = kind
    return plan


async def soak_case(
    tmp: Path, seed: int, kills: int, *, flaky: float = 0.0, townships: int = 3, villages: int = 3
) -> dict[str, Any]:
    """Run one case with ``kills`` kills; return its figures (``problems`` empty if it held)."""
    case = make_case(seed, townships, villages)
    soak = Soak(tmp, now=case.messages[0][0], seed=seed)
    url = await soak.gateway.start()
    write_case(case, tmp, url)
    expected = await asyncio.to_thread(oracle, tmp)  # the CLI runs its own event loop
    soak.kill_plan = plan_kills(expected, kills, random.Random(seed))
    soak.gateway.share_5xx = flaky
    started = time.monotonic()
    try:
        await soak.drive(case)
        assert await soak.terminate() == 0
    finally:
        if soak.proc is not None and soak.proc.returncode is None:
            soak.proc.kill()
            with contextlib.suppress(Exception):
                await soak.proc.wait()
        await soak.gateway.stop()
    figures = await soak.verify(expected)
    figures["seconds"] = round(time.monotonic() - started, 1)
    # the comparison is not vacuous: one event fewer in the oracle, and it objects
    figures["oracle_sensitive"] = bool((await soak.verify(expected[1:]))["problems"])
    return figures


def canonical(report: dict[str, Any]) -> dict[str, Any]:
    """The report with runs of update/cancel events at one instant sorted by person, and
    without its wall time."""
    events, out, i = report["events"], [], 0
    while i < len(events):
        e = events[i]
        if e["type"] in ("update", "cancel"):
            j = i
            while j < len(events) and (events[j]["type"], events[j]["at"]) == (e["type"], e["at"]):
                j += 1
            out.extend(sorted(events[i:j], key=lambda x: x["contact_id"]))
            i = j
        else:
            out.append(e)
            i += 1
    summary = {k: v for k, v in report["summary"].items() if k != "wall_seconds"}
    return {"events": out, "summary": summary}
