"""``warnd db upgrade`` from schema 0003 to 0004 (bundled attempts, contracts §8): rows kept,
none of them bundled, and the schema then exactly what the tables say."""

from __future__ import annotations

import pytest
from schema_rig import execute, schema_diff
from sqlalchemy import select

from warnd.store import Store, schema
from warnd.store.tables import Outbox


async def test_a_0003_store_is_upgraded_to_bundled_attempts(store_url: str) -> None:
    store = await Store.open(store_url, schema_head="0003")  # as the write path's release made it
    await store.close()
    await execute(
        store_url,
        "INSERT INTO warning (key, sender, identifier, drill, state, area, arrived_at,"
        " updated_at) VALUES ('k1', 's', 'k1', false, 'active', '[]',"
        " '2025-07-01 00:00:00', '2025-07-01 00:00:00')",
    )
    await execute(
        store_url,
        'INSERT INTO outbox (id, warning_id, contact_id, "to", purpose, text, at, due_at, state,'
        " tries, drill, seq) VALUES ('m1', 1, 'p', '+86', 'call', 't', '2025-07-01 00:00:00',"
        " '2025-07-01 00:00:00', 'sent', 1, false, 1)",
    )
    with pytest.raises(Exception, match="warnd db upgrade"):
        await Store.open(store_url)
    store = await Store.open(store_url, migrate=True)
    try:
        assert await store.revision() == schema.HEAD == "0004"
        async with store.read() as s:
            rows = (await s.execute(select(Outbox.id, Outbox.bundle))).all()
        assert [tuple(r) for r in rows] == [("m1", None)]
    finally:
        await store.close()
    assert await schema_diff(store_url) == []
