"""wrk's output, as captured from real runs (tests/bench/wrk_output/), read into figures; and
servers loaded together."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from fastpost.bench.servers import Server, base_env
from fastpost.bench.wrk import duration_ms, parse_wrk, run_wrk_together, wrk_command

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
