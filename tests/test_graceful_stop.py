"""SIGTERM to `fastpost serve --workers 2`: what is in flight finishes, then the process exits.

Requests are held in flight for certain, not by timing: each POST's body is sent but for
its last bytes before the signal, and the rest after it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fastpost.cluster.processes import free_port
from tests.helpers import environment, migrate_and_seed
from tests.servers import stop_group, wait_until_ready

IN_FLIGHT_POSTS = 6
# Two workers importing fastpost on a busy two-core machine.
READY_TIMEOUT_SECONDS = 60.0
# How long the test gives the process to exit once the last request has its answer.
EXIT_TIMEOUT_SECONDS = 15.0


class Served:
    def __init__(self, process: subprocess.Popen[bytes], port: int, database: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.database = database


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start `fastpost serve --workers 2 ARGS` on a seeded SQLite database."""
    database = tmp_path / "data" / "fastpost.db"
    env = {**environment(tmp_path), "FASTPOST_AUTH__SECRET_KEY": "k" * 48}
    migrate_and_seed(env, tmp_path, "--users", "5", "--posts", "20", "--follows", "5")
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> Served:
        port = free_port()
        command = ["serve", "--workers", "2", "--port", str(port), *args]
        process = subprocess.Popen(
            [sys.executable, "-m", "fastpost.cli", *command],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        started.append(process)
        wait_until_ready(
            f"http://127.0.0.1:{port}/health",
            process,
            lambda: f"exit code {process.poll()}",
            timeout=READY_TIMEOUT_SECONDS,
        )
        return Served(process, port, database)

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                stop_group(process)


@pytest.fixture
def served(serve: Callable[..., Served]) -> Served:
    """`fastpost serve --workers 2`, which waits for every request in flight."""
    return serve()


class HeldPosts:
    """POSTs whose bodies stop short of their end until `release()`."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str], count: int) -> None:
        self._released = asyncio.Event()
        self.tasks = [
            asyncio.create_task(client.post("/posts/", content=self._body(n), headers=headers))
            for n in range(count)
        ]

    async def _body(self, n: int) -> AsyncIterator[bytes]:
        yield b'{"title": "in flight %d", "content": "sent' % n
        await self._released.wait()
        yield b' after SIGTERM"}'

    async def release(self) -> list[httpx.Response | BaseException]:
        self._released.set()
        return await asyncio.gather(*self.tasks, return_exceptions=True)


def _connection_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


async def _login(client: httpx.AsyncClient) -> dict[str, str]:
    answer = await client.post("/auth/login", json={"username": "testuser", "password": "testpass"})
    return {
        "Authorization": f"Bearer {answer.json()['access_token']}",
        "Content-Type": "application/json",
    }


async def test_sigterm_lets_requests_in_flight_finish_then_exits_0(served: Served) -> None:
    limits = httpx.Limits(max_connections=IN_FLIGHT_POSTS + 1)
    async with httpx.AsyncClient(base_url=served.url, timeout=30, limits=limits) as client:
        headers = await _login(client)
        held = HeldPosts(client, headers, IN_FLIGHT_POSTS)
        await asyncio.sleep(1.0)  # every request's headers and first bytes are in

        served.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)  # the workers are stopping, waiting on the held requests
        assert served.process.poll() is None
        answers = await held.release()
        released = time.monotonic()

    assert [getattr(a, "status_code", a) for a in answers] == [201] * IN_FLIGHT_POSTS
    exit_code = await asyncio.to_thread(served.process.wait, EXIT_TIMEOUT_SECONDS)
    assert exit_code == 0
    assert time.monotonic() - released < EXIT_TIMEOUT_SECONDS
    assert _connection_refused(served.port)
    with sqlite3.connect(served.database) as db:
        (made,) = db.execute("SELECT count(*) FROM posts WHERE title LIKE 'in flight %'").fetchone()
    assert made == IN_FLIGHT_POSTS


async def test_a_new_connection_is_refused_while_requests_in_flight_finish(
    served: Served,
) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        held = HeldPosts(client, await _login(client), 1)
        await asyncio.sleep(1.0)
        served.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)
        newcomer = asyncio.create_task(asyncio.to_thread(_connection_refused, served.port))
        await asyncio.sleep(0.5)
        answers = await held.release()
        refused = await newcomer

    assert [getattr(a, "status_code", a) for a in answers] == [201]
    assert refused


async def test_a_graceful_timeout_cuts_off_what_is_still_in_flight_and_exits_0(
    serve: Callable[..., Served],
) -> None:
    timeout = 2
    served = serve("--graceful-timeout", str(timeout))
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        held = HeldPosts(client, await _login(client), 2)  # never released in time
        await asyncio.sleep(1.0)
        served.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        exit_code = await asyncio.to_thread(served.process.wait, timeout + EXIT_TIMEOUT_SECONDS)
        stopped_after = time.monotonic() - signalled
        answers = await held.release()

    assert exit_code == 0
    assert timeout <= stopped_after < timeout + EXIT_TIMEOUT_SECONDS
    assert all(isinstance(a, httpx.TransportError) for a in answers), answers
