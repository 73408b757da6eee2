"""The store shared by several instances: one feed poller at a time, taken over when it dies."""

from __future__ import annotations

from warnd.store import Store


async def test_one_instance_holds_the_feed_lock_and_another_takes_over(store_url: str) -> None:
    first = await Store.open(store_url)
    second = await Store.open(store_url)
    try:
        assert await first.hold_lock("warnd-feeds")
        assert await first.hold_lock("warnd-feeds")  # held: still ours
        if first.is_sqlite:
            assert await second.hold_lock("warnd-feeds")  # one writer process: no contention
            return
        assert not await second.hold_lock("warnd-feeds")
        assert await second.hold_lock("another-lock")  # locks are per name
        await first.close()  # the poller dies: its connection closes, the lock is freed
        assert await second.hold_lock("warnd-feeds")
    finally:
        await first.close()
        await second.close()


async def test_the_feed_lock_asked_twice_at_once_stays_held(store_url: str) -> None:
    """The feed watch and a feed poll ask at the same moment: both hear "held", and no second
    session is left holding the lock (two queries at once on its connection used to drop it)."""
    import asyncio

    first = await Store.open(store_url)
    second = await Store.open(store_url)
    try:
        assert await first.hold_lock("warnd-feeds")
        for _ in range(20):
            asked = [first.hold_lock("warnd-feeds") for _ in range(8)]
            assert await asyncio.gather(*asked) == [True] * 8
        if not first.is_sqlite:
            assert not await second.hold_lock("warnd-feeds")
            sessions = await second.fetch(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            assert sessions[0][0] == 1
    finally:
        await first.close()
        await second.close()
