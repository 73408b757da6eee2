"""Make ``tests/golden/store-0002.json`` with the code of schema 0002 (see tests/store0002.py).

Run it with that code first on the path, e.g.::

    mkdir /tmp/warnd-0002 && git archive 2a6a09d | tar -x -C /tmp/warnd-0002
    PYTHONPATH=/tmp/warnd-0002:tests .venv/bin/python scripts/store_0002_fixture.py OUT.json

It drives the old engine on a ManualClock over a real SQLite file: the county warning's fan-out,
some messages recorded sent and the rest left claimed (the process "stopped" mid-send), answers,
the redial wave queued, an Update; then it dumps every row (the fixture's ``rows``), goes on with
``CONTINUATION`` and records the history the old code wrote (``history``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

from factory import cap_xml, county_rows, write_contacts
from store0002 import CONTINUATION, ID, SENDER, T0, TABLES, UPDATE_ID, at

from warnd.config.policy import Policy
from warnd.core import directory
from warnd.core.clock import ManualClock
from warnd.desk.drill import report
from warnd.edges.feeds import FeedItem
from warnd.engine import Context, Engine
from warnd.engine.outbox import Outcome
from warnd.store import Store


def dump(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    out: dict[str, Any] = {}
    for t in TABLES:
        rows = []
        for r in con.execute(f'SELECT * FROM "{t}" ORDER BY rowid'):
            row = dict(r)
            for k, v in row.items():
                if isinstance(v, bytes):
                    row[k] = {"base64": base64.b64encode(v).decode()}
            rows.append(row)
        out[t] = rows
    con.close()
    return out


async def latest_sent(engine: Engine, contact: str) -> dict[str, Any]:
    db = Path(engine.ctx.store.url[len("sqlite:///") :])
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    row = con.execute(
        "SELECT id, reply_code, \"to\" FROM outbox WHERE contact_id = ? AND purpose = 'call'"
        " AND state = 'sent' ORDER BY due_at DESC, rowid DESC LIMIT 1",
        (contact,),
    ).fetchone()
    con.close()
    return dict(row)


async def send_all(engine: Engine) -> None:
    claimed = await engine.claim(limit=100_000)
    await engine.mark([Outcome(m.id, True, "gateway/voice") for m in claimed])


async def main(out: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="warnd-0002-"))
    write_contacts(tmp / "contacts", county_rows(townships=2, villages=2))
    d, problems = directory.load(tmp / "contacts")
    assert not problems
    clock = ManualClock(T0)
    store = await Store.open(f"sqlite:///{tmp / 'warnd.db'}")
    engine = Engine(
        Context(store=store, directory=d, policy=Policy.default(), clock=clock, instance="old")
    )
    # the fan-out: five first attempts recorded sent, the rest claimed by a process that stops
    await engine.ingest(FeedItem(cap_xml(ID, T0, expires=at(12 * 60)), "fixture"))
    await engine.tick()
    claimed = await engine.claim(limit=100_000)
    await engine.mark([Outcome(m.id, True, "gateway/voice") for m in claimed[:5]])
    county_a, township_a = claimed[0], claimed[1]
    await engine.ack_ivr(county_a.id, "1")
    clock.set(at(1))
    await engine.ack_reply(township_a.to, f"收到 {township_a.reply_code}")
    clock.set(at(5))
    await engine.tick()  # second attempts queued, not sent
    update = cap_xml(
        UPDATE_ID,
        at(5),
        msg_type="Update",
        expires=at(12 * 60),
        references=[(SENDER, ID, T0)],
    )
    await engine.ingest(FeedItem(update, "fixture"))
    await store.close()
    db = tmp / "warnd.db"
    rows = dump(db)

    store = await Store.open(f"sqlite:///{db}")
    engine = Engine(
        Context(store=store, directory=d, policy=Policy.default(), clock=clock, instance="new")
    )
    for minutes, action in CONTINUATION:
        clock.set(at(minutes))
        if action == "tick":
            await engine.tick()
            await send_all(engine)
            continue
        kind, contact = action.split()
        msg = await latest_sent(engine, contact)
        if kind == "ivr":
            assert (await engine.ack_ivr(msg["id"], "1")).ok
        else:
            assert (await engine.ack_reply(msg["to"], msg["reply_code"])).ok
    history = (await report(store))["events"]
    await store.close()
    out.write_text(
        json.dumps({"rows": rows, "history": history}, ensure_ascii=False, indent=0) + "\n",
        encoding="utf-8",
    )
    print(f"{out}: {sum(len(v) for v in rows.values())} rows, {len(history)} events")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
