"""The drill-simulate rig: a scenario of CAP files and responders, and the report's events
by type and time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from factory import county_rows, write_contacts

from warnd.config.policy import Policy
from warnd.core import directory
from warnd.desk.drill import simulate

CST = timezone(timedelta(hours=8))


SENT = datetime(2025, 6, 14, 8, 0, tzinfo=CST)


class Scenario:
    def __init__(self, tmp: Path, rows: list[list[str]] | None = None) -> None:
        self.tmp = tmp
        self.feed = tmp / "feed"
        self.feed.mkdir()
        write_contacts(
            tmp / "contacts", rows if rows is not None else county_rows(townships=1, villages=1)
        )
        self.directory, problems = directory.load(tmp / "contacts")
        assert problems == []
        self.n = 0
        self.responders: dict[str, str] = {}

    def message(self, data: bytes) -> None:
        self.n += 1
        (self.feed / f"{self.n:03d}.xml").write_bytes(data)

    async def run(self, policy: Policy | None = None) -> dict[str, Any]:
        path = self.tmp / "responders.csv"
        path.write_text(
            "contact_id,ack_after\n" + "".join(f"{k},{v}\n" for k, v in self.responders.items()),
            encoding="utf-8",
        )
        return await simulate([self.feed], self.directory, policy or Policy.default(), path)


def of(report: dict[str, Any], type_: str, **match: object) -> list[dict[str, Any]]:
    return [
        e
        for e in report["events"]
        if e["type"] == type_ and all(e.get(k) == v for k, v in match.items())
    ]


def at(e: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(e["at"])
