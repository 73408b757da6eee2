"""A store of schema 0002 with a warning at work, and how it goes on: the migration test's input.

``tests/golden/store-0002.json`` was made by ``scripts/store_0002_fixture.py`` with the code of
schema 0002 (commit 2a6a09d): every row of its store at the moment the daemon stopped (a county
warning without onset: first attempts sent, some still claimed by the stopped process, answers by
IVR and SMS, second attempts queued, an Update's notices queued), and the history the old code
wrote when it went on from there with ``CONTINUATION``. The migration test loads those rows into
a fresh schema-0002 store, upgrades it, goes on with the same continuation and compares.

The continuation is data, so that both codes can follow it: at each (minutes after T0, action)
the clock is moved there, then: ``tick`` — the engine's timer work, then every due message sent
(all succeed); ``ivr CONTACT`` — the person presses 1 on their latest call attempt that reached
the gateway; ``sms CONTACT`` — they reply with that attempt's short code.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

T0 = datetime(2025, 6, 14, 0, 0, tzinfo=UTC)
ID = "43312241600000_20250614080000"
UPDATE_ID = "43312241600000_20250614080600"
SENDER = "433122_Meteorological_Observatory"
TABLES = ("warning", "message", "stage", "division", "call", "outbox", "ack", "event", "receipt")

#: (minutes after T0, action)
CONTINUATION: list[tuple[int, str]] = [
    (6, "tick"),
    (9, "ivr c-433122101-a"),
    (10, "tick"),
    (15, "tick"),
    (17, "sms c-433122100200-b"),
    *[(m, "tick") for m in range(20, 95, 5)],
]


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)
