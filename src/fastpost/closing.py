"""Shutdown steps that end: an app that stops (a worker told to exit, a test's app) must
not wait forever on a connection that never comes back or a client library's teardown."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

log = structlog.get_logger("fastpost.closing")

POOL_CLOSE_SECONDS = 5.0
TASK_STOP_SECONDS = 2.0


async def close_pool(pool: Any, *, within: float = POOL_CLOSE_SECONDS) -> None:
    """Close an asyncpg pool, dropping its connections if that takes longer than `within`.

    `Pool.close()` first waits for every connection to come back to the pool: one that
    never does (a task still holding it, a server that stopped answering) would hold the
    shutdown forever. Cancelled by the timeout, asyncpg terminates the pool instead."""
    try:
        async with asyncio.timeout(within):
            await pool.close()
    except TimeoutError:
        log.warning("pool_close_timed_out", seconds=within, action="terminated")


async def stop_task(task: asyncio.Task[Any], *, within: float = TASK_STOP_SECONDS) -> None:
    """Cancel a background task and wait for it, but no longer than `within`.

    redis-py shields a PubSub's teardown from cancellation and waits for it uncancellably
    (redis/asyncio/client.py, PubSub.aclose), so a listener whose teardown stalls would
    never finish; it is then left to the event loop's end rather than holding the app's."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=within)
    if not done:
        log.warning("task_stop_timed_out", task=task.get_name(), seconds=within)
        return
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
