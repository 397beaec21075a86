"""An open-loop (fixed-rate) HTTP/1.1 load generator on asyncio and uvloop.

Requests leave on a fixed schedule, whatever the server does, and each one's latency runs
from the time it *should* have been sent: a stalled server cannot hide its tail by slowing
the generator down (coordinated omission: a closed-loop generator sends nothing while it
waits, so the requests a stall would have delayed are never timed;
tests/bench/test_fixed_rate.py shows a stall counted). A request waiting for a free
connection is still waiting, so that wait counts too. The time from the actual send (what a
closed-loop tool such as wrk reports) is kept beside it.

Written here because none of wrk2, vegeta or oha is a Debian or PyPI package. Kept lean:
persistent connections, raw requests encoded once, httptools (uvicorn's parser) for
responses, no per-request timers. Its own CPU share is part of every result
(`generator_cpu`, the schedule's ticks included): past 90% of its core the generator, not
the server, sets the pace, and `fastpost bench` marks the run INVALID (its "generator CPU"
column shows how far below that a run stayed). For throughput, use wrk.

    python -m fastpost.bench.fixed_rate --url http://127.0.0.1:8000 --requests reqs.tsv \
        --rate 500 --duration 10 --out result.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import httptools

from fastpost.bench.latency import Sample
from fastpost.bench.requests_file import HttpRequest, read_requests

# loop.time() on uvloop has millisecond resolution (libuv's cached uv_now): too coarse for
# latencies of a millisecond or two.
clock = time.perf_counter
# Past this the generator, not the server, sets the pace (as for wrk).
GENERATOR_CPU_LIMIT = 0.9


@dataclass
class FixedRateResult:
    rate: float  # offered requests/s
    duration_s: float  # length of the schedule
    elapsed_s: float  # from the first intended send to the last answer
    connections: int
    generator_cpu: float  # share of one core this process used while it ran
    samples: list[Sample] = field(default_factory=list)
    # The schedule's start on `clock`, which samples' intended_s count from. On Linux
    # perf_counter is CLOCK_MONOTONIC, one clock for every process: another process's
    # events (a shard move's steps, benchmarks/bench_shard_move.py) fall on this timeline.
    started_at: float = 0.0

    @property
    def achieved_rps(self) -> float:
        answered = sum(1 for s in self.samples if s.status)
        return answered / self.elapsed_s if self.elapsed_s else 0.0

    def to_json(self) -> dict[str, object]:
        """Return the result with samples as compact rows
        [intended, latency, service, status, route number, error], and the route names."""
        data = asdict(self)
        routes = sorted({s.route for s in self.samples})
        number = {route: n for n, route in enumerate(routes)}
        data["routes"] = routes
        data["samples"] = [
            [
                round(s.intended_s, 6),
                round(s.latency_s, 6),
                round(s.service_s, 6),
                s.status,
                number[s.route],
                s.error,
            ]
            for s in self.samples
        ]
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> FixedRateResult:
        """Rebuild a result written by to_json."""
        rows = data.pop("samples")
        routes = data.pop("routes", [])
        assert isinstance(rows, list)
        assert isinstance(routes, list)
        result = cls(**data)  # type: ignore[arg-type]
        result.samples = [
            Sample(
                float(row[0]),
                float(row[1]),
                float(row[2]),
                int(row[3]),
                *_route_and_error(routes, row),
            )
            for row in rows
        ]
        return result


def _route_and_error(routes: list[str], row: list[object]) -> tuple[str, str]:
    if len(row) < 6:  # written before samples had routes
        return "", ""
    return routes[int(row[4])], str(row[5])  # type: ignore[call-overload]


class _WriteFailed(ConnectionResetError):
    """The connection was closed before the request could be written."""


class _Connection(asyncio.Protocol):
    """One persistent HTTP/1.1 connection: one request in flight at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.WriteTransport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, only alike.
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("connection closed"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def send(self, raw: bytes) -> asyncio.Future[int]:
        if self.transport is None or self.closed:
            raise _WriteFailed("connection closed")
        self.waiter = self.loop.create_future()
        self.transport.write(raw)
        return self.waiter


async def drive(
    url: str,
    requests: Sequence[HttpRequest],
    *,
    rate: float,
    duration: float,
    connections: int,
    drain_seconds: float = 10.0,
) -> FixedRateResult:
    """Send `requests` in a cycle at `rate` per second for `duration` seconds.

    Each sample names its request's route and, for a request that got no answer, why:
    `connect` (no connection), `write` (closed before the request went out), `read`
    (closed or garbled before the answer), `timeout` (no answer `drain_seconds` after the
    schedule ended). A status outside 2xx/3xx is an error of its own (`is_error`).
    """
    if rate <= 0 or duration <= 0 or connections < 1 or not requests:
        raise ValueError("rate, duration, connections and requests must be positive")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    raws = [r.encode(f"{host}:{port}") for r in requests]
    routes = [r.route for r in requests]
    loop = asyncio.get_running_loop()
    total = max(1, int(rate * duration))
    # (request number, intended send time on loop.time()), in schedule order.
    due: deque[tuple[int, float]] = deque()
    idle: deque[asyncio.Future[None]] = deque()
    samples: list[Sample | None] = [None] * total
    start = clock() + 0.05
    finished = False

    opened: list[_Connection] = []

    async def connect() -> _Connection:
        _, protocol = await loop.create_connection(lambda: _Connection(loop), host, port)
        opened.append(protocol)
        return protocol

    async def worker() -> None:
        conn: _Connection | None = None
        while True:
            if not due:
                if finished:
                    return
                wake: asyncio.Future[None] = loop.create_future()
                idle.append(wake)
                await wake
                continue
            number, intended = due.popleft()
            sent = clock()
            status = 0
            error = ""
            try:
                if conn is None or conn.closed:
                    error = "connect"
                    conn = await connect()
                error = "write"
                answer = conn.send(raws[number % len(raws)])
                error = "read"
                status = await answer
                error = ""
            except (OSError, httptools.HttpParserError):
                conn = None
            done = clock()
            samples[number] = Sample(
                intended - start,
                done - intended,
                done - sent,
                status,
                routes[number % len(routes)],
                error,
            )

    def wake_one() -> None:
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    cpu_before = _cpu_seconds()
    wall_before = time.monotonic()
    workers = [asyncio.ensure_future(worker()) for _ in range(connections)]
    scheduled = 0
    while scheduled < total:
        # Release every request whose time has come; sleeping per request would cost more
        # than the requests at high rates, so the schedule is checked about every 1 ms.
        now = clock()
        ready = min(total, int((now - start) * rate) + 1) if now >= start else 0
        while scheduled < ready:
            due.append((scheduled, start + scheduled / rate))
            scheduled += 1
            wake_one()
        # uvloop's timers tick in whole milliseconds: a shorter sleep would spin.
        await asyncio.sleep(0.001)
    finished = True
    for waiter in idle:
        if not waiter.done():
            waiter.set_result(None)
    _, pending = await asyncio.wait(workers, timeout=drain_seconds)
    end = clock()
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for conn in opened:
        if conn.transport is not None:
            conn.transport.close()
    # Let the transports finish closing before the loop does.
    await asyncio.sleep(0)
    cpu = _cpu_seconds() - cpu_before
    wall = time.monotonic() - wall_before
    # A request still unanswered at the end counts as an error whose latency runs to now.
    rows = [
        s
        if s is not None
        else Sample(
            n / rate, end - (start + n / rate), end - start, 0, routes[n % len(routes)], "timeout"
        )
        for n, s in enumerate(samples)
    ]
    return FixedRateResult(
        rate=rate,
        duration_s=duration,
        elapsed_s=max(end - start, 1e-9),
        connections=connections,
        generator_cpu=cpu / wall if wall else 0.0,
        samples=rows,
        started_at=start,
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(
    url: str,
    requests: Sequence[HttpRequest],
    *,
    rate: float,
    duration: float,
    connections: int,
    timeout: float = 10.0,
) -> FixedRateResult:
    """Run `drive` on uvloop (asyncio's own loop where uvloop is missing)."""
    coroutine = drive(
        url,
        requests,
        rate=rate,
        duration=duration,
        connections=connections,
        drain_seconds=timeout,
    )
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def main(argv: list[str] | None = None) -> int:
    """Run the generator from the command line and write its result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--requests", type=Path, required=True, help="request list (TSV)")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait at the end")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON")
    args = parser.parse_args(argv)
    result = run(
        args.url,
        read_requests(args.requests),
        rate=args.rate,
        duration=args.duration,
        connections=args.connections,
        timeout=args.timeout,
    )
    args.out.write_text(json.dumps(result.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
