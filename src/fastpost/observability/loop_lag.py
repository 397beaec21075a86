"""Event-loop lag: how late a worker's event loop runs a timer that is due.

Whatever holds the loop (a blocking call in async code, CPU-bound work, a long garbage
collection) delays every request in flight on that worker by as long as it holds it; the lag
is what they all waited on top of their own work. It is measured the usual way (Node's
`event-loop-lag` and `toobusy-js` packages do the same): a task sleeps for an interval and,
on waking, records how much later than asked it woke, on the loop's monotonic clock.
That costs one timer per interval, however busy the worker is.

A worker cannot report a stall while it is in it: the check that sees a 2 s stall is the
first one after it. So the gauge (the last check) tells how the loop is doing now, and the
histogram, which counts every check, is what an alert reads (ops/prometheus/alerts.yml).
`fastpost lab` measures its blocking-I/O and CPU-bound experiments with the same
`watch_lag`, every millisecond (fastpost.lab.measure.LoopLagProbe).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from fastpost.observability import metrics

TASK_NAME = "event-loop-lag"


async def watch_lag(interval: float, record: Callable[[float], None]) -> None:
    """Sleep `interval` seconds at a time, forever, passing `record` how late each wake-up
    came, in seconds."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        # asyncio may run a timer up to its clock resolution early: that is no lag.
        record(max(0.0, loop.time() - due))


def record_in_metrics(lag: float) -> None:
    """Set this worker's lag gauge and count the check in the lag histogram."""
    # Read at each check, not at import: `fastpost serve` may fork its workers after import.
    metrics.event_loop_lag_seconds.labels(str(os.getpid())).set(lag)
    metrics.event_loop_lag_distribution_seconds.observe(lag)


def start_watching(interval: float) -> asyncio.Task[None]:
    """Check this worker's event-loop lag every `interval` seconds, into the metrics, until
    the task returned is cancelled."""
    return asyncio.create_task(watch_lag(interval, record_in_metrics), name=TASK_NAME)
