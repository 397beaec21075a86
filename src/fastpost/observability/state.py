"""What one app records about itself: its served requests, their access log, its statement
recorder. create_app builds one per app (`app.state.observability`) and adds the sinks of
its served requests; nothing here registers itself anywhere at import, and two apps in one
process never see each other's records.

What stays process-wide does because the thing it feeds is: the Prometheus metrics
(prometheus_client's registry: see fastpost.observability.metrics), the logging
configuration (structlog's and the root logger's), and the contextvars of the request being
served and of the statement log, which are per request or per context anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from fastpost.observability import metrics
from fastpost.observability.access_log import AccessLog
from fastpost.observability.served import ServedRequests
from fastpost.observability.statements import StatementRecorder


class Observability:
    """One app's observability state (see the module)."""

    def __init__(self) -> None:
        self.served = ServedRequests()
        self.access_log = AccessLog(self.served)
        self.statements = StatementRecorder()
        # While the app serves: the periodic flushes (start_serving, stop_serving).
        self._tasks: list[asyncio.Task[None]] = []

    def flush_metrics(self) -> None:
        """Hand this app's served requests on (to the metrics among its sinks), then fold
        this worker's tallies into the registry."""
        self.served.hand_on()
        metrics.flush()

    def start_serving(
        self,
        pools: Callable[[], dict[str, tuple[int, int, int]]],
        *,
        flush_interval: float,
        sample_interval: float,
    ) -> None:
        """As the app starts serving: hand served requests on a batch at a time, and flush
        the metrics and the access log periodically."""
        # A batch at a time, except where a developer watches the access lines on a
        # console, each as it happens.
        if not self.access_log.to_console:
            self.served.start_batching()
        self._tasks = [
            asyncio.create_task(
                metrics.flush_and_sample_forever(
                    self.flush_metrics,
                    pools,
                    flush_interval=flush_interval,
                    sample_interval=sample_interval,
                )
            ),
            self.access_log.start_batching(),
        ]

    async def stop_serving(self) -> None:
        """As the app stops: stop the flushes, write out what is held back, and wait for the
        slow query log's EXPLAINs."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.served.stop_batching()
        self.access_log.stop_batching()
        await self.statements.wait_for_explains()
