"""7. CPU-bound work (Argon2 password hashing, with fastpost's settings) on the event loop,
in a worker thread and in a process pool, measured as the lag a cheap concurrent task sees."""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from argon2 import PasswordHasher

from fastpost.lab.context import Lab
from fastpost.lab.measure import LoopLagProbe
from fastpost.lab.result import ExperimentResult, Measurement
from fastpost.security import Passwords
from fastpost.settings import AuthSettings, Settings

PASSWORD = "correct horse battery staple"


def hash_in_process(time_cost: int, memory_cost: int, parallelism: int, password: str) -> str:
    """Hash in a pool process (module level, so that it pickles)."""
    return PasswordHasher(time_cost, memory_cost, parallelism=parallelism).hash(password)


async def with_probe(work: Callable[[], Awaitable[object]]) -> tuple[float, dict[str, float]]:
    """Run `work` beside a loop-lag probe: wall seconds and the probe's lag summary."""
    async with LoopLagProbe() as probe:
        started = time.perf_counter()
        await work()
        seconds = time.perf_counter() - started
    return seconds, probe.summary_ms()


async def run(lab: Lab) -> ExperimentResult:
    """Hash passwords on the loop, in threads and in processes beside a lag probe."""
    count = lab.config.hashes
    # fastpost's default Argon2 parameters, the ones it hashes with in production.
    auth = AuthSettings(secret_key=secrets.token_urlsafe(48))
    passwords = Passwords(Settings(env="development", auth=auth))
    params = (auth.argon2_time_cost, auth.argon2_memory_cost_kib, auth.argon2_parallelism)
    result = ExperimentResult(
        key="cpu_bound",
        title="7. CPU-bound work: password hashing",
        why="CPU work on the event loop stops every other request for its whole duration",
        ratio_of="p99 loop lag",
    )

    async def on_loop() -> None:
        async def one() -> str:
            return passwords.hash_sync(PASSWORD)

        await asyncio.gather(*(one() for _ in range(count)))

    async def in_threads() -> None:
        await asyncio.gather(*(passwords.hash(PASSWORD) for _ in range(count)))

    workers = lab.config.process_workers
    loop = asyncio.get_running_loop()
    # spawn, not fork: this process has threads (aiosqlite's, the default executor's), and
    # a forked child may inherit a lock one of them held.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        # Start the pool's processes before measuring: their start-up is not the lesson.
        await asyncio.gather(
            *(
                loop.run_in_executor(pool, partial(hash_in_process, 1, 8, 1, "warm"))
                for _ in range(workers)
            )
        )

        async def in_processes() -> None:
            job = partial(hash_in_process, *params, PASSWORD)
            await asyncio.gather(*(loop.run_in_executor(pool, job) for _ in range(count)))

        variants = (
            ("on the event loop", on_loop, False),
            ("asyncio.to_thread (fastpost)", in_threads, True),
            (f"process pool ({workers})", in_processes, False),
        )
        figures: dict[str, list[tuple[float, dict[str, float]]]] = {n: [] for n, _, _ in variants}
        for _ in range(max(1, lab.repeat)):
            for name, work, _ in variants:
                figures[name].append(await with_probe(work))
    size = f"{count} hashes"
    for name, _, is_fix in variants:
        runs = sorted(figures[name], key=lambda f: f[1]["lag_p99_ms"])
        seconds, lags = runs[(len(runs) - 1) // 2]  # the run with the median p99 lag
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
    result.set_ratios("loop_lag_ms")
    fix_lag = result.variant("asyncio.to_thread (fastpost)").details["lag_p99_ms"]
    blocked = result.variant("on the event loop")
    result.add_note("lab.cpu_bound.note", time=params[0], memory=params[1], lanes=params[2])
    result.verdict = (
        f"on the loop a concurrent task waited up to {blocked.details['lag_max_ms']:.0f} ms "
        f"(p99 {blocked.details['lag_p99_ms']:.0f} ms); in a thread p99 {fix_lag:.1f} ms"
    )
    result.verdict_params = {
        "lag_max": blocked.details["lag_max_ms"],
        "lag_p99": blocked.details["lag_p99_ms"],
        "fix_lag": fix_lag,
    }
    return result
