"""Requests that wait for a pooled connection get one in the order they asked
(fastpost.pool_gate), from the real pools: asyncpg's for reads, SQLAlchemy's for writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text

from fastpost.db import Database
from fastpost.settings import DatabaseSettings
from fastpost.writes import Step, WriteProgram
from tests.helpers import TEST_POSTGRES_URL, postgres_url

POOL_SIZE = 2
# Far more than the pools hold, arriving one per loop turn while earlier ones wait: the case
# where a newcomer can find a connection just handed back, before the waiter it was handed
# to runs. Without the gates, in this test, some requests were overtaken by 250 others.
REQUESTS = 300

pytestmark = pytest.mark.skipif(not TEST_POSTGRES_URL, reason="needs FASTPOST_TEST_POSTGRES_URL")

ECHO = text("SELECT CAST(:n AS integer) AS n")


@pytest.fixture
async def small_pools() -> AsyncIterator[Database]:
    """A database whose read and write pools hold two connections each, both open."""
    db = Database(
        DatabaseSettings(url=postgres_url("test"), pool_size=POOL_SIZE, write_pool_size=POOL_SIZE)
    )
    await db.connect()
    await asyncio.gather(*(db.fetch_all(ECHO, {"n": 0}) for _ in range(POOL_SIZE)))
    async with db.transaction() as first, db.transaction() as second:
        await asyncio.gather(first.execute(ECHO, {"n": 0}), second.execute(ECHO, {"n": 0}))
    try:
        yield db
    finally:
        await db.dispose()


def request_number() -> int:
    task = asyncio.current_task()
    assert task is not None
    return int(task.get_name())


async def start_in_turn(request: Callable[[int], Coroutine[Any, Any, Any]]) -> None:
    """Start REQUESTS requests, one per loop turn, each in a task named by its number."""
    tasks: list[asyncio.Task[Any]] = []
    for n in range(REQUESTS):
        tasks.append(asyncio.create_task(request(n), name=str(n)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)


def most_overtaken(served: list[int]) -> int:
    """The most requests that asked later than one request and got a connection before it."""
    return max(sum(1 for m in served[: served.index(n)] if m > n) for n in served)


async def test_reads_get_a_connection_in_the_order_they_asked(
    small_pools: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[int] = []
    acquire = asyncpg.pool.Pool.acquire

    async def acquire_in_order(pool: asyncpg.Pool, *args: Any, **kwargs: Any) -> Any:
        connection = await acquire(pool, *args, **kwargs)
        served.append(request_number())
        return connection

    monkeypatch.setattr(asyncpg.pool.Pool, "acquire", acquire_in_order)

    await start_in_turn(lambda n: small_pools.fetch_all(ECHO, {"n": n}))

    assert sorted(served) == list(range(REQUESTS))
    assert most_overtaken(served) == 0


async def test_writes_get_a_connection_in_the_order_they_asked(small_pools: Database) -> None:
    served: list[int] = []
    event.listen(
        small_pools.write_engine.sync_engine,
        "checkout",
        lambda *_: served.append(request_number()),
    )

    await start_in_turn(lambda n: small_pools.write(_echo(n)))

    assert sorted(served) == list(range(REQUESTS))
    assert most_overtaken(served) == 0


async def test_a_failed_write_gives_its_place_back(small_pools: Database) -> None:
    def fail(n: int) -> WriteProgram[int]:
        yield Step(ECHO, {"n": n})
        raise RuntimeError("boom")

    async def fail_then_succeed(n: int) -> int:
        with pytest.raises(RuntimeError):
            await small_pools.write(fail(n))
        return await small_pools.write(_echo(n))

    # Each failure must hand its place on: with one lost, the last requests would wait for
    # ever (the gate's timeout turns that into a DatabaseUnavailable, failing the test).
    await start_in_turn(fail_then_succeed)


async def test_a_session_takes_no_place_before_its_first_statement(small_pools: Database) -> None:
    # A registration hashes its password inside its session, before any statement: that must
    # not keep write programs waiting.
    async with small_pools.transaction(), small_pools.transaction():
        served = await asyncio.wait_for(
            asyncio.gather(*(small_pools.write(_echo(n)) for n in range(POOL_SIZE))), 5
        )
    assert served == list(range(POOL_SIZE))


def _echo(n: int) -> WriteProgram[int]:
    rows = yield Step(ECHO, {"n": n})
    return int(rows[0][0])
