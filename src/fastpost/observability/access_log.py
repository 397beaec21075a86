"""The access log: one line per served request, made a batch at a time.

Each app has its own (on its Observability), written to the stream configure_logging gives
it; create_app adds its `log_served` to the app's served requests' sinks.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TextIO

import orjson
import structlog

from fastpost.observability.logging import redact_text
from fastpost.observability.request_stats import RequestStats
from fastpost.observability.served import ServedRequests


class AccessLog:
    """The access line: once per request, so it has a path of its own.

    A structlog `info()` with the full processor chain is a large share of a whole
    `GET /health`: the context merge (which walks every context variable of the request),
    the redaction pass and the generic renderer. The access line's fields are named by the
    edge layer and safe by construction (the route template and path, never a body or a
    header; a request id that passed a strict pattern), so in JSON mode it is printed
    straight into a fixed template of the same shape as structlog's lines, cheaper than
    building a dict for orjson. What the line costs as it is made is the difference between
    the "with" and "no-log" servers of benchmarks/bench_observability.py. Only the path can
    hold characters JSON must escape; it goes through orjson (and its credentials are masked:
    tests/observability/test_secrets.py). In console mode the line goes through structlog as
    any other line.

    Lines are made a batch at a time, as the app's ServedRequests hands the requests on
    (fastpost.observability.served). While the app serves, JSON lines are written
    WRITE_BYTES at a time, and at least every FLUSH_SECONDS: containers commonly set
    PYTHONUNBUFFERED, which makes every write to stdout a system call of its own, a large
    share of the layer's time on `GET /health` if made per request (the access line's share
    is in benchmarks/bench_observability.py, with the log written to a file as in
    production). A crash loses at most that much.
    """

    FLUSH_SECONDS = 0.5
    WRITE_BYTES = 64 * 1024
    # A line is the template, with the fields of its request's route (method to the key of
    # the duration) and the end of the line filled in.
    _LINE = b'{"event":"request","level":"info","timestamp":"%s.%06dZ","request_id":"%s",%s%s,%s'
    _ROUTE_FIELDS = b'"method":"%s","route":%s,"path":%s,"status":%d,"duration_ms":'
    _LINE_END = b'"db_queries":%d,"db_ms":%.2f,"cache_hits":%d,"cache_misses":%d,"user_id":%s}\n'
    # The end of the line of a request that made no query, used no cache and named no user
    # (a health check, a 304, a page of the response cache): nothing to format.
    _LINE_END_NOTHING = (
        b'"db_queries":0,"db_ms":0.00,"cache_hits":0,"cache_misses":0,"user_id":null}\n'
    )
    # A request under 10 ms takes its duration from this table, by hundredths of a
    # millisecond, as Server-Timing does (fastpost.observability.edge): formatting a float
    # costs more than the rest of its field.
    _HUNDREDTHS = tuple(b"%d.%02d" % divmod(hundredths, 100) for hundredths in range(1000))

    def __init__(self, served: ServedRequests) -> None:
        # The requests this log writes lines for: flush hands them on first.
        self.served = served
        self.enabled = True
        self.json = False
        self.stream: TextIO = sys.stdout
        # While the app serves: JSON lines made and not written yet, up to WRITE_BYTES.
        self._holding = False
        self._unwritten: list[bytes] = []
        self._unwritten_bytes = 0
        self._second = -1
        self._prefix = b""
        # JSON-encoded route templates (a few dozen, fixed by the app).
        self._routes: dict[str, bytes] = {}
        # The fields from method to duration's key of requests whose path is their route's
        # template (a route without parameters), by method, route and status: a few dozen
        # too, each line's largest part made once.
        self._route_fields: dict[tuple[str, str, int], bytes] = {}

    def configure(self, level: str, json: bool, stream: TextIO, wanted: bool = True) -> None:
        self.flush()  # what was served so far goes where it was meant to
        self.enabled = wanted and logging.getLevelNamesMapping()[level] <= logging.INFO
        self.json = json
        self.stream = stream

    @property
    def to_console(self) -> bool:
        """Whether access lines are written for a person to read (not in JSON)."""
        return self.enabled and not self.json

    def flush(self) -> None:
        """Write the lines of every request served so far."""
        self.served.hand_on()
        self._write_unwritten()

    def _write_unwritten(self) -> None:
        if self._unwritten:
            data = b"".join(self._unwritten)
            self._unwritten, self._unwritten_bytes = [], 0
            self._write(data)

    def _write(self, data: bytes) -> None:
        binary = getattr(self.stream, "buffer", None)  # a text stream over a file
        if binary is not None:
            self.stream.flush()  # what was written to it as text goes out first
            binary.write(data)
            binary.flush()
        else:
            self.stream.write(data.decode())
            self.stream.flush()

    def start_batching(self) -> asyncio.Task[None]:
        """Hold lines back for a write of WRITE_BYTES from now on; return the task that
        writes them out periodically (cancel it, then call stop_batching)."""
        self._holding = True
        return asyncio.create_task(self._flush_forever())

    def stop_batching(self) -> None:
        """Write what is held back, and each batch's lines as they come from now on."""
        self._holding = False
        self.flush()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.FLUSH_SECONDS)
            self.flush()

    def log_served(self, batch: list[RequestStats]) -> None:
        """Log these served requests, from their records (see RequestStats)."""
        if not self.enabled:
            return
        if self.json:
            lines = self._lines(batch)
            if not self._holding:
                self._write(lines)
                return
            self._unwritten.append(lines)
            self._unwritten_bytes += len(lines)
            if self._unwritten_bytes >= self.WRITE_BYTES:
                self._write_unwritten()
            return
        log = structlog.get_logger("fastpost.access")
        for stats in batch:
            log.info(
                "request",
                request_id=stats.request_id.decode("latin-1"),
                method=stats.method,
                route=stats.route,
                path=stats.path,
                status=stats.status,
                duration_ms=round(stats.duration * 1000, 2),
                db_queries=stats.db_queries,
                db_ms=round(stats.db_seconds * 1000, 2),
                cache_hits=stats.cache_hits,
                cache_misses=stats.cache_misses,
                user_id=stats.user_id,
            )

    def _lines(self, batch: list[RequestStats]) -> bytes:
        """The JSON lines of these served requests.

        One loop with everything inline, no call per line, and one format for the whole
        batch (its template repeated): a batch is the access log's whole cost
        (benchmarks/bench_observability.py, "with" against "no-log")."""
        # From the requests' clock (time.perf_counter) to the wall clock, read once: the
        # batch is at most FLUSH_SECONDS old.
        clock_offset = time.time() - time.perf_counter()
        route_template = self._ROUTE_FIELDS
        end_template, end_nothing = self._LINE_END, self._LINE_END_NOTHING
        hundredths_table = self._HUNDREDTHS
        routes, known_fields = self._routes, self._route_fields
        dumps = orjson.dumps
        last_second, prefix = self._second, self._prefix
        values: list[object] = []
        for stats in batch:
            now = stats.ended + clock_offset
            second = int(now)
            if second != last_second:
                last_second = second
                prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
            route = stats.route
            key = (stats.method, route, stats.status)
            if stats.path == route:
                fields = known_fields.get(key)
                if fields is None:
                    as_json = dumps(route)
                    fields = known_fields[key] = route_template % (
                        key[0].encode(),
                        as_json,
                        as_json,
                        key[2],
                    )
            else:
                route_json = routes.get(route)
                if route_json is None:
                    route_json = routes[route] = dumps(route)
                # Masked like every other line (a token may sit in a path).
                path_json = dumps(redact_text(stats.path))
                fields = route_template % (key[0].encode(), route_json, path_json, key[2])
            duration_ms = stats.duration * 1000
            hundredths = int(duration_ms * 100 + 0.5)
            user_id = stats.user_id
            if user_id is None and not (stats.db_queries or stats.cache_hits or stats.cache_misses):
                end = end_nothing
            else:
                end = end_template % (
                    stats.db_queries,
                    stats.db_seconds * 1000,
                    stats.cache_hits,
                    stats.cache_misses,
                    b"null" if user_id is None else b"%d" % user_id,
                )
            values += (
                prefix,
                int((now - second) * 1_000_000),
                stats.request_id,
                fields,
                hundredths_table[hundredths] if hundredths < 1000 else b"%.2f" % duration_ms,
                end,
            )
        self._second, self._prefix = last_second, prefix
        return (self._LINE * len(batch)) % tuple(values)
