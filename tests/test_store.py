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
