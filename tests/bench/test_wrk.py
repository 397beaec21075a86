"""wrk's output, as captured from real runs (tests/bench/wrk_output/), read into figures;
per-route figures from lua/requests.lua; and servers loaded together."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from fastpost.bench.requests_file import HttpRequest, write_requests
from fastpost.bench.routes import wrk_rows
from fastpost.bench.servers import Server, base_env
from fastpost.bench.wrk import (
    REQUESTS_SCRIPT,
    WrkRun,
    duration_ms,
    parse_wrk,
    run_wrk_together,
    wrk_command,
)
from tests.helpers import route_server

OUTPUT = Path(__file__).with_name("wrk_output")


def test_parse_wrk_reads_the_latency_table_and_totals() -> None:
    figures = parse_wrk((OUTPUT / "plain.txt").read_text())
    assert figures.rps == 344.97
    assert figures.requests == 354
    assert (figures.p50_ms, figures.p90_ms, figures.p99_ms) == (9.13, 38.47, 76.53)
    assert figures.max_ms == 88.19
    assert figures.p95_ms is None  # wrk's own table has no p95
    assert (figures.non_2xx, figures.socket_errors) == (0, 0)


def test_parse_wrk_reads_errors_and_the_p95_printed_by_the_lua_script() -> None:
    figures = parse_wrk((OUTPUT / "script_with_non_2xx.txt").read_text())
    assert figures.non_2xx == 176
    assert figures.requests == 353
    assert figures.p95_ms == 75.44
    assert figures.max_ms == 133.68


def test_parse_wrk_reads_socket_errors() -> None:
    text = (
        (OUTPUT / "plain.txt")
        .read_text()
        .replace(
            "Requests/sec:", "  Socket errors: connect 0, read 2, write 0, timeout 5\nRequests/sec:"
        )
    )
    assert parse_wrk(text).socket_errors == 7


def test_parse_wrk_refuses_output_without_figures() -> None:
    with pytest.raises(ValueError, match="could not read wrk output"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


@pytest.mark.parametrize(
    ("text", "ms"), [("812.00us", 0.812), ("1.86ms", 1.86), ("2.01s", 2010.0), ("1.50m", 90_000.0)]
)
def test_duration_ms_converts_every_unit_wrk_prints(text: str, ms: float) -> None:
    assert duration_ms(text) == pytest.approx(ms)


def test_wrk_command_gives_whole_seconds_and_passes_script_arguments() -> None:
    command = wrk_command(
        "http://h:1", seconds=0.4, connections=8, threads=1, cpu=[1],
        script=Path("r.lua"), script_args=["reqs.tsv"],
    )  # fmt: skip
    assert command[:3] == ["taskset", "-c", "1"]
    assert "-d1s" in command
    assert command[-4:] == ["r.lua", "http://h:1", "--", "reqs.tsv"]


def test_servers_loaded_together_are_each_measured_on_their_own(tmp_path: Path) -> None:
    # Two servers, the second of which blocks for 1.5 s early on; each has its own wrk,
    # all at once. The figures come back in the order given, each from its own server.
    stall_server = str(Path(__file__).with_name("stall_server.py"))
    steady = Server(
        "steady", base_env(), None, tmp_path,
        command=[sys.executable, stall_server, "{port}", str(10**9), "0"],
    )  # fmt: skip
    stalling = Server(
        "stalling", base_env(), None, tmp_path,
        command=[sys.executable, stall_server, "{port}", "50", "1.5"],
    )  # fmt: skip
    try:
        for server in (steady, stalling):
            wait_for_port(server.port)
        runs = run_wrk_together(
            [(f"{steady.base_url}/", steady), (f"{stalling.base_url}/", stalling)],
            seconds=2, connections=4, threads=1, cpu=None,
        )  # fmt: skip
    finally:
        steady.stop()
        stalling.stop()
    assert [run.errors for run in runs] == [0, 0]
    assert runs[0].requests > 2 * runs[1].requests > 0
    assert all(run.server_cpu_us_per_request > 0 for run in runs)


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_parse_wrk_reads_each_routes_count_statuses_and_tail() -> None:
    # Captured from lua/requests.lua against tests/bench/route_server.py.
    figures = parse_wrk((OUTPUT / "routes.txt").read_text())
    by_route = {r.route: r for r in figures.routes}

    assert list(by_route) == ["GET /ok/{id}", "GET /status/{id}", "POST /status/{id}"]
    assert sum(r.requests for r in figures.routes) == 49513 == figures.requests
    assert by_route["GET /status/{id}"].statuses == {500: 12378}
    assert by_route["GET /status/{id}"].status_errors == {500: 12378}
    assert by_route["POST /status/{id}"].status_errors == {}  # 201 is a success
    ok = by_route["GET /ok/{id}"]
    assert ok.percentiles_ms["p50"] == 0.062
    assert ok.percentiles_ms["p99.99"] == 29.988
    assert ok.max_ms == 31.826
    assert ok.unanswered == 1


def test_parse_wrk_reads_socket_errors_by_kind_and_counts_attempts_once() -> None:
    text = (
        (OUTPUT / "plain.txt")
        .read_text()
        .replace(
            "Requests/sec:", "  Socket errors: connect 3, read 2, write 1, timeout 5\nRequests/sec:"
        )
    )
    figures = parse_wrk(text)
    assert (figures.connect_errors, figures.read_errors, figures.write_errors) == (3, 2, 1)
    assert figures.timeouts == 5
    run = WrkRun(**{**asdict(figures), "routes": []}, wrk_cpu=0, server_cpu=0,
                 server_cpu_us_per_request=0)  # fmt: skip
    # Attempted: the 354 answered and the 6 lost to the socket; a timeout is a slow request.
    assert run.attempted == 360
    assert run.error_rate == 11 / 360


def test_wrk_script_counts_each_route_by_the_request_id_the_server_sends_back(
    tmp_path: Path,
) -> None:
    requests = [
        HttpRequest("GET", "/ok/1"),
        HttpRequest("GET", "/status/503"),
        HttpRequest("GET", "/ok/2"),
        HttpRequest("POST", "/status/201", "Bearer x", '{"a": 1}'),
    ]
    write_requests(tmp_path / "requests.tsv", requests)
    with route_server() as url:
        output = subprocess.run(
            wrk_command(url, seconds=1, connections=8, threads=2,
                        script=REQUESTS_SCRIPT, script_args=[str(tmp_path / "requests.tsv")]),
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    figures = parse_wrk(output)
    by_route = {r.route: r for r in figures.routes}

    assert set(by_route) == {"GET /ok/{id}", "GET /status/{id}", "POST /status/{id}"}
    assert sum(r.requests for r in figures.routes) == figures.requests
    assert set(by_route["GET /status/{id}"].statuses) == {503}
    assert set(by_route["POST /status/{id}"].statuses) == {201}
    # The list holds /ok twice for each other request, and each thread walks it in order.
    ok, other = by_route["GET /ok/{id}"].requests, by_route["GET /status/{id}"].requests
    assert ok / other == pytest.approx(2, rel=0.01)
    for route in by_route.values():
        tail = [route.percentiles_ms[p] for p in ("p50", "p90", "p99", "p99.9")]
        assert 0 < tail[0] <= tail[1] <= tail[2] <= tail[3] <= (route.max_ms or 0)


def test_wrk_route_rows_give_shares_of_requests_sent_and_errors_of_answers() -> None:
    figures = parse_wrk((OUTPUT / "routes.txt").read_text())
    run = WrkRun(**{**asdict(figures), "routes": figures.routes}, wrk_cpu=0, server_cpu=0,
                 server_cpu_us_per_request=0)  # fmt: skip
    rows = {row["route"]: row for row in wrk_rows(run)}

    # 24,757 + 1 of 49,513 + 3 sent (one of each route still out when wrk stopped).
    assert rows["GET /ok/{id}"]["share"] == 24758 / 49516
    assert sum(row["share"] for row in rows.values()) == pytest.approx(1)
    assert rows["GET /status/{id}"]["errors"] == {
        "timeout": None, "socket": None, "status": {"500": 12378},
    }  # fmt: skip
    assert rows["GET /status/{id}"]["error_rate"] == 1.0
    assert rows["GET /ok/{id}"]["rps"] == pytest.approx(48287.28 * 24757 / 49513)
    # The run's one error rate: the 500s over everything attempted.
    assert run.error_rate == 12378 / 49513
