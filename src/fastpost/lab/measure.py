"""Timing, statement counting, peak memory and event-loop lag, shared by the experiments."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastpost.observability.loop_lag import watch_lag
from fastpost.observability.statements import record_statements

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Run(Generic[T]):
    """What one measured call returned, how long it took and the statements it sent."""

    value: T
    seconds: float
    statements: list[str]


async def run_once(action: Callable[[], Awaitable[T]]) -> Run[T]:
    """Run `action` once, timing it and recording every SQL statement it sends."""
    with record_statements() as log:
        started = time.perf_counter()
        value = await action()
        seconds = time.perf_counter() - started
    return Run(value, seconds, list(log))


async def median_run(action: Callable[[], Awaitable[T]], repeat: int) -> Run[T]:
    """Run `action` `repeat` times; the run with the median time (its value and statements)."""
    runs = [await run_once(action) for _ in range(max(1, repeat))]
    runs.sort(key=lambda r: r.seconds)
    return runs[(len(runs) - 1) // 2]


async def peak_memory(action: Callable[[], Awaitable[Any]]) -> int:
    """Peak bytes Python allocated while `action` ran, above what was allocated before.

    Measured in a run of its own: tracemalloc slows every allocation down, so the timed
    runs go without it.
    """
    gc.collect()
    already = tracemalloc.is_tracing()
    if not already:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        await action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not already:
            tracemalloc.stop()
    return max(0, peak - before)


def percentile(values: list[float], pct: float) -> float:
    """The `pct` percentile (nearest rank) of `values`; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class LoopLagProbe:
    """A cheap task that sleeps `interval` seconds in a loop and records how late it wakes:
    what a server's `fastpost_event_loop_lag_seconds` measures (the same `watch_lag`), every
    millisecond instead of every quarter second, kept in a list instead of metrics.

    It stands for every other request the worker is serving: whatever blocks the event
    loop delays it by the same amount.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLagProbe:
        self._task = asyncio.create_task(watch_lag(self.interval, self.lags.append))
        # Let it take its first step, so it is sleeping when the measured work starts.
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        # Let the probe take the wake-up it is owed: after a stall its timer is due, but
        # this task was made ready first and would cancel it before it could record it.
        await asyncio.sleep(self.interval * 2)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def summary_ms(self) -> dict[str, float]:
        """p50, p99 and max lag in milliseconds, with the number of wake-ups."""
        return {
            "lag_p50_ms": percentile(self.lags, 50) * 1000,
            "lag_p99_ms": percentile(self.lags, 99) * 1000,
            "lag_max_ms": max(self.lags, default=0.0) * 1000,
            "wakeups": float(len(self.lags)),
        }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
