"""The fixed-rate generator measures from intended send times, so a stall cannot hide."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastpost.bench.fixed_rate import FixedRateResult, run
from fastpost.bench.latency import Sample, summarise
from fastpost.bench.requests_file import HttpRequest
from fastpost.bench.routes import fixed_rate_rows
from fastpost.bench.servers import free_port
from tests.helpers import route_server
from tests.servers import stop_group

STALL_SECONDS = 1.0
RATE = 200.0
DURATION = 2.0


@pytest.fixture
def stalling_server() -> Iterator[str]:
    """A server that blocks for STALL_SECONDS before its 100th answer (0.5 s into the run)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("stall_server.py")), str(port), "100",
         str(STALL_SECONDS)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stdout.close()
        stop_group(process)


def test_fixed_rate_latency_counts_queueing_behind_a_stall(stalling_server: str) -> None:
    # One connection, as a closed-loop client with one user would have: while the server
    # stalls, the requests scheduled in the meantime wait for it and the clock runs for them.
    result = run(
        stalling_server, [HttpRequest("GET", "/")], rate=RATE, duration=DURATION, connections=1
    )
    from_intended = summarise(result.samples)
    from_send = summarise(result.samples, from_send=True)

    assert from_intended.count == int(RATE * DURATION)
    assert from_intended.errors == 0
    # The requests due during the stall waited up to its whole length: p99 is about the stall.
    assert from_intended.p99_ms >= 0.8 * STALL_SECONDS * 1000
    delayed = [s for s in result.samples if s.latency_s >= 0.25 * STALL_SECONDS]
    assert len(delayed) >= 0.25 * RATE * STALL_SECONDS
    # Timed from the actual send (what a closed-loop tool reports) only the one request the
    # server sat on was slow: its p99 hides the stall.
    assert from_send.max_ms >= 0.8 * STALL_SECONDS * 1000
    assert from_send.p99_ms < 0.5 * STALL_SECONDS * 1000


def test_fixed_rate_keeps_the_schedule_and_counts_refused_connections_as_errors() -> None:
    result = run(
        f"http://127.0.0.1:{free_port()}",
        [HttpRequest("GET", "/")],
        rate=50,
        duration=0.4,
        connections=2,
    )
    assert len(result.samples) == 20
    assert summarise(result.samples).errors == 20
    assert [round(s.intended_s, 3) for s in result.samples[:3]] == [0.0, 0.02, 0.04]


def test_fixed_rate_names_each_requests_route_and_why_it_failed() -> None:
    requests = [
        HttpRequest("GET", "/ok/1"),
        HttpRequest("GET", "/status/503"),
        HttpRequest("GET", "/close"),
        HttpRequest("GET", "/hang"),
    ]
    with route_server() as url:
        # Each hung request holds its connection: 16 leave room for the others.
        result = run(url, requests, rate=40, duration=1, connections=16, timeout=0.5)
    by_route: dict[str, list[Sample]] = {}
    for sample in result.samples:
        by_route.setdefault(sample.route, []).append(sample)

    assert {route: len(group) for route, group in by_route.items()} == {
        "GET /ok/{id}": 10, "GET /status/{id}": 10, "GET /close": 10, "GET /hang": 10,
    }  # fmt: skip
    assert {(s.status, s.error) for s in by_route["GET /ok/{id}"]} == {(200, "")}
    assert {(s.status, s.error) for s in by_route["GET /status/{id}"]} == {(503, "")}
    assert {(s.status, s.error) for s in by_route["GET /close"]} == {(0, "read")}
    assert {(s.status, s.error) for s in by_route["GET /hang"]} == {(0, "timeout")}

    rows = {row["route"]: row for row in fixed_rate_rows(result.samples, result.elapsed_s)}
    assert rows["GET /status/{id}"]["errors"]["status"] == {"503": 10}
    assert rows["GET /close"]["errors"]["socket"] == {"connect": 0, "read": 10, "write": 0}
    assert rows["GET /hang"]["errors"]["timeout"] == 10
    assert rows["GET /ok/{id}"]["error_rate"] == 0
    assert all(row["share"] == 0.25 and row["attempted"] == 10 for row in rows.values())
    # The samples keep their routes and errors through the JSON the generator writes.
    again = FixedRateResult.from_json(json.loads(json.dumps(result.to_json())))
    assert [(s.route, s.status, s.error) for s in again.samples] == [
        (s.route, s.status, s.error) for s in result.samples
    ]


def test_refused_connections_are_connect_errors() -> None:
    result = run(
        f"http://127.0.0.1:{free_port()}", [HttpRequest("GET", "/")],
        rate=50, duration=0.2, connections=2,
    )  # fmt: skip
    assert {(s.status, s.error, s.route) for s in result.samples} == {(0, "connect", "GET /")}
