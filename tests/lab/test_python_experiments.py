"""Experiments that need no database: membership, CPU-bound work, outbound HTTP."""

from __future__ import annotations

import json
from io import StringIO

from rich.console import Console

from fastpost.lab import cpu_bound, membership, outbound_http
from fastpost.lab.context import Lab
from fastpost.lab.report import print_report, to_json
from fastpost.lab.result import LabReport
from tests.lab.conftest import tiny_config


async def test_membership_measures_list_and_set_at_every_size() -> None:
    result = membership.membership((10, 1000), repeat=1)

    assert [(m.variant, m.size) for m in result.measurements] == [
        ("x in list", "10 items"),
        ("x in set", "10 items"),
        ("x in list", "1,000 items"),
        ("x in set", "1,000 items"),
    ]
    for m in result.measurements:
        assert m.time_ms is not None
        assert m.time_ms > 0
    # A set keeps its own hash table: more memory than the list of the same items.
    big_list = result.variant("x in list", "1,000 items").memory_bytes
    big_set = result.variant("x in set", "1,000 items").memory_bytes
    assert big_list
    assert big_set
    assert big_set > big_list


def test_membership_probes_look_up_present_and_absent_values() -> None:
    values = membership.probes(100)

    assert sum(v < 100 for v in values) == len(values) // 2


async def test_hashing_on_the_loop_starves_a_concurrent_task_and_a_thread_does_not() -> None:
    # Four hashes with fastpost's Argon2 settings: a stall of 100 ms or more on the loop.
    result = await cpu_bound.run(Lab(tiny_config(hashes=4)))

    on_loop = result.variant("on the event loop")
    in_thread = result.variant("asyncio.to_thread (fastpost)")
    in_process = result.variant("process pool (2)")
    # Blocked for the whole run, the probe only wakes once it is over (and once more on the
    # way out); beside a thread or a process it keeps waking every millisecond.
    assert on_loop.details["wakeups"] <= 2
    assert in_thread.details["wakeups"] > 2
    assert in_process.details["wakeups"] > 2
    # So the loop lag (p99) of the anti-pattern is the fixes' times over.
    assert on_loop.loop_lag_ms is not None
    assert in_thread.loop_lag_ms is not None
    assert in_process.loop_lag_ms is not None
    assert on_loop.loop_lag_ms > in_thread.loop_lag_ms
    assert on_loop.loop_lag_ms > in_process.loop_lag_ms
    assert result.ratio_of == "p99 loop lag"
    assert in_thread.ratio == 1.0


async def test_blocking_requests_hold_the_loop_and_httpx_lets_it_run() -> None:
    result = await outbound_http.run(Lab(tiny_config()))

    blocking = result.variant("requests (blocking)")
    async_client = result.variant("httpx.AsyncClient + gather")
    assert blocking.details["wakeups"] <= 2
    assert async_client.details["wakeups"] > 2
    assert {m.size for m in result.measurements} == {"4 calls x 20 ms"}
    # Four calls of at least 20 ms, one after the other, with the loop held throughout (the
    # probe was due 1 ms after they began).
    assert blocking.loop_lag_ms is not None
    assert async_client.loop_lag_ms is not None
    assert blocking.loop_lag_ms >= 4 * 20 - 1
    assert blocking.loop_lag_ms > async_client.loop_lag_ms

    report = LabReport(environment={"repeat": 1}, experiments=[result])
    out = StringIO()
    print_report(report, Console(file=out, width=200, color_system=None))
    assert "loop lag p99 (ms)" in out.getvalue()
    measured = json.loads(to_json(report))["experiments"][0]["measurements"]
    assert {m["variant"]: m["loop_lag_ms"] for m in measured} == {
        m.variant: m.loop_lag_ms for m in result.measurements
    }
