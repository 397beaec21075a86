"""First come, first served for pooled database connections.

asyncpg's pool and SQLAlchemy's async pool both hand out connections through an
`asyncio.Queue`, and that queue is not fair. When a connection comes back, the first waiter
is woken, but it runs a loop turn later; a request that asks in between finds the
connection free and takes it, and the woken waiter goes back to the end of the line. With
more requests than connections (64 connections of load on a pool of 10), some reads are
overtaken again and again: under wrk -c64 on `GET /feed`, one worker, the statement's wait
had a p50 of 8 ms and a p99 of 121 ms, and so had the response. The same load on a pool
with a connection per request (no waiting) had a p99 of 52 ms at the same throughput.

A `PoolGate` of the pool's size in front of it admits requests in the order they asked:
asyncio.Semaphore has been first-in first-out since CPython 3.11 (gh-90155: a newcomer
waits while anyone is queued). Only as many requests as there are connections get past
it, so the pool's own queue stays empty and cannot reorder them. The cost is one counter
test when no one waits; and at the read pool, where every holder of a connection passes
the gate, a read let through at once finds a connection free and needs no timer on its
wait. (ORM sessions take the write pool's connections beside its gate, at their first
statement: what a session does before, such as hashing a password, holds no place.)

The price, at saturation: a request that finds no connection free always waits its turn (a
suspension and a wake-up), where a newcomer used to take one without waiting while a waiter
paid for it in the tail. benchmarks/bench_reads.py, uncached GET /posts/{id}, 64 connections
on a pool of 10: about 13 % more CPU a request, for a p99 three to five times lower.
"""

from __future__ import annotations

import asyncio


class PoolGate:
    """At most `size` holders at once, admitted in the order they arrived.

    One semaphore per event loop: a semaphore that has had waiters belongs to the loop it
    waited in, and the app, its tests and the CLI each run their own loops over the same
    `Database`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore = asyncio.Semaphore(size)

    def _current(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._semaphore = asyncio.Semaphore(self.size)
        return self._semaphore

    def has_room(self) -> bool:
        """Whether `acquire` would return at once: no one is waiting and a place is free."""
        return not self._current().locked()

    async def acquire(self) -> None:
        """Wait for a place (callers bound the wait with their pool timeout)."""
        await self._current().acquire()

    def release(self) -> None:
        self._semaphore.release()
