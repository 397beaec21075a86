"""9. Outbound HTTP calls from async code: blocking `requests` against `httpx.AsyncClient`,
to a local endpoint that answers after a fixed delay (started by the lab itself)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
import requests

from fastpost.lab.context import Lab
from fastpost.lab.measure import LoopLagProbe
from fastpost.lab.result import ExperimentResult, Measurement
from fastpost.lab.slow_endpoint import SlowEndpoint


async def run(lab: Lab) -> ExperimentResult:
    """Call the slow endpoint with blocking requests, requests in threads and httpx."""
    calls, delay_ms = lab.config.http_calls, lab.config.http_delay_ms
    result = ExperimentResult(
        key="outbound_http",
        title="9. Outbound HTTP: blocking requests vs httpx.AsyncClient",
        why="a blocking call inside async code stops the event loop for the whole round trip",
    )
    size = f"{calls} calls x {delay_ms:g} ms"
    with SlowEndpoint(delay_ms) as endpoint, requests.Session() as blocking:
        url = endpoint.url
        # As many pooled connections as calls, like the httpx client below.
        blocking.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=calls))
        limits = httpx.Limits(max_connections=calls, max_keepalive_connections=calls)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def with_requests() -> list[int]:
                async def one() -> int:
                    # The anti-pattern: a blocking call in a coroutine. gather cannot overlap
                    # them, since none ever yields to the loop.
                    return blocking.get(url, timeout=30).status_code

                return list(await asyncio.gather(*(one() for _ in range(calls))))

            async def with_requests_in_threads() -> list[int]:
                def one() -> int:
                    return blocking.get(url, timeout=30).status_code

                return list(await asyncio.gather(*(asyncio.to_thread(one) for _ in range(calls))))

            async def with_httpx() -> list[int]:
                responses = await asyncio.gather(*(client.get(url) for _ in range(calls)))
                return [r.status_code for r in responses]

            variants: tuple[tuple[str, Callable[[], Awaitable[list[int]]], bool], ...] = (
                ("requests (blocking)", with_requests, False),
                ("requests in threads", with_requests_in_threads, False),
                ("httpx.AsyncClient + gather", with_httpx, True),
            )
            # Open the connections once, so that every variant measures calls, not handshakes.
            for _, work, _ in variants:
                await work()
            figures: dict[str, list[tuple[float, dict[str, float]]]] = {
                n: [] for n, _, _ in variants
            }
            for _ in range(max(1, lab.repeat)):
                for name, work, _ in variants:
                    async with LoopLagProbe() as probe:
                        started = time.perf_counter()
                        statuses = await work()
                        seconds = time.perf_counter() - started
                    if statuses != [200] * calls:
                        raise AssertionError(f"{name}: unexpected answers {statuses}")
                    figures[name].append((seconds, probe.summary_ms()))
    for name, _, is_fix in variants:
        runs = sorted(figures[name], key=lambda f: f[0])
        seconds, lags = runs[(len(runs) - 1) // 2]
        result.add(
            Measurement(
                name,
                size,
                seconds * 1000,
                loop_lag_ms=round(lags["lag_p99_ms"], 2),
                is_fix=is_fix,
                details={k: round(v, 2) for k, v in lags.items()},
            )
        )
    result.set_ratios()
    blocked = result.variant("requests (blocking)")
    result.add_note("lab.outbound_http.note", delay=delay_ms, calls=calls, serial=calls * delay_ms)
    result.verdict = (
        f"blocking requests took {(blocked.ratio or 0):.1f}x the time of httpx and held the "
        f"event loop for up to {blocked.details['lag_max_ms']:.0f} ms"
    )
    result.verdict_params = {
        "ratio": blocked.ratio or 0,
        "lag_max": blocked.details["lag_max_ms"],
    }
    return result
