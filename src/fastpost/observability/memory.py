"""Memory: what one request allocates (`fastpost profile --memory`), and whether memory grows
with the requests served (`fastpost profile --growth N`), both in process.

One request runs under tracemalloc, started just before it (after a warm-up), so that every
traced block is the request's: the report lists the lines that allocated what the request
held as it sent its answer, and what it left behind once it had ended. With memray installed,
`--memray FILE` writes memray's capture of the request instead (native allocations too) and
lists the allocations at its high-water mark.

The growth check serves the request a thousand times per N after a warm-up (lazily built
routes, the statement cache, pools, first imports), with tracemalloc started after the
warm-up: every block still traced at the end was allocated by the measured requests and
outlived them. It is measured after each third, and the check holds the smaller of the last
two thirds' growth, per request, against its threshold: what fills once (bounded caches, a
batch of records waiting for its flush, a table that doubles its size once) grows one third
at most, while a leak grows by the same amount in every third. RSS is reported beside it; it
is not judged, since the allocator keeps freed memory for reuse and returns it to the system
when it likes.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.util
import os
import sys
import tracemalloc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastpost.observability.access_log import AccessLog
from fastpost.observability.logging import configure_logging
from fastpost.observability.profiling import request_body, send_request

# The check's default threshold, bytes that stay allocated per request served. A leak
# of the smallest container per request (an empty dict: 64 bytes, its list slot 8) stays
# under it; anything that keeps a request's data (a row, a body, a RequestStats) goes
# over it. GET /posts/{id} and GET /health grow by a few bytes per request at most
# (tests/observability/test_memory.py checks the first; README, "Memory", shows a run).
DEFAULT_MAX_BYTES_PER_REQUEST = 64.0
# tracemalloc's own frames and this module's: the measuring, not the measured.
_MEASURING = (tracemalloc.__file__, __file__)


@dataclass(frozen=True)
class Allocation:
    """Memory allocated by one line and still held: its size and how many blocks."""

    where: str  # file:line, the file shortened to its import path where it has one
    size: int
    count: int


@dataclass(frozen=True)
class RequestMemory:
    """What one request allocated, by line."""

    status: int
    # Alive as the request sent the last of its answer, allocated since it started.
    held: list[Allocation]
    held_bytes: int
    # Still alive after it ended (a cache it filled, a record waiting for its batch).
    left: list[Allocation]
    left_bytes: int
    # The most traced memory at any one time while it ran.
    peak_bytes: int


@dataclass(frozen=True)
class MemrayCapture:
    status: int
    path: Path
    # At the high-water mark of the request, by the line that allocated.
    top: list[Allocation]
    peak_bytes: int


def _thirds(requests: int) -> tuple[int, int, int]:
    third = max(requests // 3, 1)
    return third, third, max(requests - 2 * third, 1)


@dataclass
class MemoryGrowth:
    """Memory that stayed allocated while the same request was served many times."""

    requests: int  # measured, after the warm-up
    statuses: dict[int, int]
    # Bytes still traced, allocated by the measured requests, after each third of them.
    traced: tuple[int, int, int]
    rss_before: int | None
    rss_after: int | None
    # The lines whose memory grew over the last third, most first.
    top: list[Allocation] = field(default_factory=list)

    @property
    def bytes_per_request(self) -> float:
        """Growth per request over the second and the last third, whichever is smaller: a
        leak grows in both, a one-off (one CI run met a 32 KiB table growing once) in one."""
        second_third, last_third = _thirds(self.requests)[1:]
        first, second, last = self.traced
        return min((second - first) / second_third, (last - second) / last_third)

    def leaks(self, max_bytes_per_request: float = DEFAULT_MAX_BYTES_PER_REQUEST) -> bool:
        return self.bytes_per_request > max_bytes_per_request


def rss_bytes() -> int | None:
    """This process's resident set size, where it can be read."""
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return None
        return pages * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.Process().memory_info().rss)


def _short(filename: str) -> str:
    """A file's path from its import root (sys.path), or as it is."""
    best = filename
    for root in sys.path:
        if root and filename.startswith(root.rstrip(os.sep) + os.sep):
            candidate = filename[len(root.rstrip(os.sep)) + 1 :]
            if len(candidate) < len(best):
                best = candidate
    return best


def _measured(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    return snapshot.filter_traces([tracemalloc.Filter(False, name) for name in _MEASURING])


def _by_line(stats: list[tracemalloc.Statistic], top: int) -> list[Allocation]:
    return [
        Allocation(f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}", s.size, s.count)
        for s in stats[:top]
    ]


def _snapshot_as_it_answers(app: ASGIApp, taken: list[tracemalloc.Snapshot]) -> ASGIApp:
    """`app`, with a tracemalloc snapshot taken as it sends the last of its answer."""

    async def answering(scope: Scope, receive: Receive, send: Send) -> None:
        async def watched(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                taken.append(tracemalloc.take_snapshot())
            await send(message)

        await app(scope, receive, watched)

    return answering


async def trace_request(
    app: Any,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    warmup: int = 1,
    top: int = 25,
) -> RequestMemory:
    """Run one request in process under tracemalloc, after `warmup` untraced ones, and
    return the lines that allocated what it held as it answered and what it left."""
    request_headers, body = request_body(json_body, headers or {})
    taken: list[tracemalloc.Snapshot] = []
    watched = _snapshot_as_it_answers(app, taken)
    async with app.router.lifespan_context(app):
        for _ in range(warmup):
            await send_request(app, method, path, request_headers, body)
        gc.collect()
        tracemalloc.start()
        try:
            status = await send_request(watched, method, path, request_headers, body)
            gc.collect()
            after = tracemalloc.take_snapshot()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # Filtered once tracing has stopped: the filters' own allocations (fnmatch's cache)
    # would be traced otherwise.
    held = _measured(taken[0]).statistics("lineno") if taken else []
    left = _measured(after).statistics("lineno")
    return RequestMemory(
        status=status,
        held=_by_line(held, top),
        held_bytes=sum(s.size for s in held),
        left=_by_line(left, top),
        left_bytes=sum(s.size for s in left),
        peak_bytes=peak,
    )


async def memray_request(
    app: Any,
    method: str,
    path: str,
    out: Path,
    *,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    warmup: int = 1,
    top: int = 25,
) -> MemrayCapture:
    """Run one request in process under memray (which must be installed), writing its
    capture to `out`, and return the allocations at the request's high-water mark."""
    # Not a dependency (nor typed): found at run time where it is installed.
    memray: Any = importlib.import_module("memray")
    request_headers, body = request_body(json_body, headers or {})
    async with app.router.lifespan_context(app):
        for _ in range(warmup):
            await send_request(app, method, path, request_headers, body)
        with memray.Tracker(out):
            status = await send_request(app, method, path, request_headers, body)
    reader = memray.FileReader(out)
    by_line: dict[str, list[int]] = {}
    for record in reader.get_high_watermark_allocation_records(merge_threads=True):
        frames = record.stack_trace(max_stacks=1)
        if frames and frames[0][1] == __file__:  # the measuring, not the measured
            continue
        where = f"{_short(frames[0][1])}:{frames[0][2]}" if frames else "<native>"
        size_count = by_line.setdefault(where, [0, 0])
        size_count[0] += record.size
        size_count[1] += record.n_allocations
    ranked = sorted(by_line.items(), key=lambda item: item[1][0], reverse=True)
    return MemrayCapture(
        status=status,
        path=out,
        top=[Allocation(where, size, count) for where, (size, count) in ranked[:top]],
        peak_bytes=int(reader.metadata.peak_memory),
    )


async def measure_growth(
    app: Any,
    method: str,
    path: str,
    *,
    requests: int,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    warmup: int = 500,
    settle_seconds: float | None = None,
    top: int = 10,
) -> MemoryGrowth:
    """Serve the request `warmup` times, then `requests` times under tracemalloc, and
    return how much memory the measured requests left allocated.

    Before each measurement the app is left idle for `settle_seconds` (default: longer
    than its periodic flushes of metrics and access lines), so that the records it holds
    for its next batch are handed on and do not pass for growth."""
    if settle_seconds is None:
        flush_seconds = app.state.settings.observability.metrics_flush_seconds
        settle_seconds = max(flush_seconds, AccessLog.FLUSH_SECONDS) * 1.5
    # One request id for all: the edge gives a request without one an id from a batch it
    # makes 1,024 at a time, whose unused part would pass for growth.
    request_headers, body = request_body(
        json_body, {"x-request-id": "fastpost-memory-check", **(headers or {})}
    )
    statuses: dict[int, int] = {}

    async def settled() -> tracemalloc.Snapshot:
        await asyncio.sleep(settle_seconds)
        gc.collect()
        return tracemalloc.take_snapshot()

    async def serve(times: int) -> None:
        for _ in range(times):
            status = await send_request(app, method, path, request_headers, body)
            statuses[status] = statuses.get(status, 0) + 1

    async with app.router.lifespan_context(app):
        await serve(warmup)
        statuses.clear()
        gc.collect()
        rss_before = rss_bytes()
        tracemalloc.start()
        snapshots = []
        try:
            for third in _thirds(requests):
                await serve(third)
                snapshots.append(await settled())
        finally:
            tracemalloc.stop()
        rss_after = rss_bytes()
    # Filtered once tracing has stopped (see trace_request).
    first, second, last = (_measured(snapshot) for snapshot in snapshots)
    grown = [s for s in last.compare_to(second, "lineno") if s.size_diff > 0]
    return MemoryGrowth(
        requests=requests,
        statuses=statuses,
        traced=(_traced(first), _traced(second), _traced(last)),
        rss_before=rss_before,
        rss_after=rss_after,
        top=[
            Allocation(
                f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}",
                s.size_diff,
                s.count_diff,
            )
            for s in grown[:top]
        ],
    )


def _traced(snapshot: tracemalloc.Snapshot) -> int:
    return sum(statistic.size for statistic in snapshot.statistics("filename"))


def _kib(size: int | float) -> str:
    return f"{size / 1024:,.1f} KiB"


def _table(title: str, allocations: list[Allocation], *, growth: bool = False) -> list[str]:
    lines = [title]
    if not allocations:
        return [*lines, "  (nothing)"]
    width = max(len(a.where) for a in allocations)
    sign = "+" if growth else ""
    lines.append(f"  {'file:line':<{width}}  {'bytes':>12}  {'blocks':>8}")
    for a in allocations:
        size = f"{a.size:{sign},}"
        count = f"{a.count:{sign},}"
        lines.append(f"  {a.where:<{width}}  {size:>12}  {count:>8}")
    return lines


def format_request_memory(report: RequestMemory) -> str:
    return "\n".join(
        [
            f"traced: {_kib(report.held_bytes)} held as it answered, "
            f"{_kib(report.left_bytes)} left after it ended, peak {_kib(report.peak_bytes)}",
            "",
            *_table("held as it answered, by line:", report.held),
            "",
            *_table("left after it ended, by line:", report.left),
        ]
    )


def format_memray(capture: MemrayCapture) -> str:
    return "\n".join(
        [
            f"memray: peak {_kib(capture.peak_bytes)}; capture in {capture.path} "
            f"(memray flamegraph {capture.path}, memray stats {capture.path})",
            "",
            *_table("at the high-water mark, by line:", capture.top),
        ]
    )


def format_growth(growth: MemoryGrowth, max_bytes_per_request: float) -> str:
    statuses = ", ".join(f"{n:,} x {status}" for status, n in sorted(growth.statuses.items()))
    rss = "unknown"
    if growth.rss_before is not None and growth.rss_after is not None:
        rss = (
            f"{growth.rss_before / 2**20:,.1f} MiB -> {growth.rss_after / 2**20:,.1f} MiB "
            f"({(growth.rss_after - growth.rss_before) / 2**20:+,.1f} MiB)"
        )
    verdict = "LEAKS" if growth.leaks(max_bytes_per_request) else "ok"
    return "\n".join(
        [
            f"{growth.requests:,} requests after the warm-up ({statuses})",
            "traced memory still allocated after each third: "
            + ", ".join(_kib(size) for size in growth.traced),
            f"growth per request, the smaller of the last two thirds': "
            f"{growth.bytes_per_request:,.1f} bytes (threshold {max_bytes_per_request:,.0f}): "
            f"{verdict}",
            f"RSS: {rss}",
            "",
            *_table("grew over the last third, by line:", growth.top, growth=True),
        ]
    )


def memory_command(
    app: Any,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str],
    json_body: Any,
    memray_out: Path | None,
    growth_thousands: int | None,
    max_bytes_per_request: float | None,
    top: int,
) -> int:
    """`fastpost profile --memory`, `--memray FILE` and `--growth N`: print the report and
    return the exit status (1: the growth check found a leak; 2: memray is missing)."""
    request = f"{method} {path}"
    if growth_thousands is not None:
        threshold = max_bytes_per_request or DEFAULT_MAX_BYTES_PER_REQUEST
        observability = app.state.settings.observability
        # Thousands of access lines are made as in production (JSON, a batch at a time) and
        # thrown away, not printed.
        with open(os.devnull, "w") as discard:
            configure_logging(
                level=observability.log_level,
                json=True,
                stream=discard,
                access_lines=observability.access_log,
                access_log=app.state.observability.access_log,
            )
            growth = asyncio.run(
                measure_growth(
                    app, method, path, requests=growth_thousands * 1000, headers=headers,
                    json_body=json_body, top=top,
                )
            )  # fmt: skip
        print(f"{request}: memory growth check (log lines discarded)")
        print(format_growth(growth, threshold))
        return 1 if growth.leaks(threshold) else 0
    if memray_out is not None:
        if importlib.util.find_spec("memray") is None:
            print("memray is not installed: pip install memray (or --memory alone: tracemalloc)")
            return 2
        memray_out.unlink(missing_ok=True)  # memray refuses to write over a capture
        capture = asyncio.run(
            memray_request(app, method, path, memray_out, headers=headers, json_body=json_body,
                           top=top)
        )  # fmt: skip
        print(f"{request} -> {capture.status}")
        print(format_memray(capture))
        return 0
    report = asyncio.run(
        trace_request(app, method, path, headers=headers, json_body=json_body, top=top)
    )
    print(f"{request} -> {report.status}")
    print(format_request_memory(report))
    return 0
