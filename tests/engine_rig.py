"""The engine rig over a county of one township and one village, on a ManualClock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from factory import county_rows, write_contacts
from sqlalchemy import func, select

from warnd.edges.feeds import FeedItem
from warnd.edges.feeds import Outcome as Ingested
from warnd.engine import Engine
from warnd.testing import EngineRig

T0 = datetime(2025, 6, 14, 0, 0, tzinfo=UTC)


class Rig(EngineRig):
    """``warnd.testing.EngineRig`` over a county of one township and one village."""

    def __init__(self, tmp: Path, url: str | None = None) -> None:
        self.tmp = tmp
        contacts = write_contacts(tmp / "contacts", county_rows(townships=1, villages=1))
        url = url or f"sqlite:///{tmp / 'warnd.db'}"
        super().__init__(contacts, url, start=T0, public_url="http://127.0.0.1:8620")

    async def count(self, model: type, **where: object) -> int:
        assert self.engine is not None
        async with self.engine.ctx.store.read() as s:
            q = select(func.count()).select_from(model)
            for k, v in where.items():
                q = q.where(getattr(model, k) == v)
            return int((await s.execute(q)).scalar_one())


async def ingest(engine: Engine, data: bytes) -> Ingested:
    return (await engine.ingest(FeedItem(data, "test"))).outcome
