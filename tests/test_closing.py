"""An app's shutdown ends: a pool with a connection never handed back, or a background task
whose teardown will not finish, is given a bound and then dropped (fastpost.closing)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from fastpost.closing import close_pool, stop_task
from tests.conftest import POSTGRES_URL


@pytest.mark.skipif(POSTGRES_URL is None, reason="needs FASTPOST_TEST_POSTGRES_URL")
async def test_a_pool_with_a_connection_never_released_closes_within_its_bound() -> None:
    assert POSTGRES_URL is not None
    pool = await asyncpg.create_pool(POSTGRES_URL, min_size=1, max_size=2)
    held = await pool.acquire()  # a request that never gives it back
    started = time.monotonic()
    await close_pool(pool, within=0.3)
    assert time.monotonic() - started < 2
    with pytest.raises(asyncpg.InterfaceError):  # terminated, and taken from its holder
        await held.fetchval("SELECT 1")


async def test_a_task_whose_teardown_outlives_cancellation_is_left_after_the_bound() -> None:
    teardown_done = asyncio.Event()

    async def listener() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            # Like redis-py's PubSub teardown: shielded, and it does not end.
            await asyncio.shield(teardown_done.wait())

    task = asyncio.create_task(listener())
    await asyncio.sleep(0)
    started = time.monotonic()
    await stop_task(task, within=0.2)
    assert time.monotonic() - started < 1
    assert not task.done()
    teardown_done.set()
    await asyncio.wait({task})
    assert task.cancelled()


async def test_a_task_that_ends_on_cancellation_is_awaited_to_its_end() -> None:
    task = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    await stop_task(task)
    assert task.cancelled()
