"""A tiny ASGI app that answers every request after a fixed delay: the slow remote service
of the outbound HTTP experiment. Served by `python -m fastpost.lab.slow_endpoint PORT DELAY_MS`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from fastpost.bench.servers import free_port

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def make_app(delay: float) -> Callable[..., Awaitable[None]]:
    async def app(
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/ready":
            await asyncio.sleep(delay)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"ok":true}'})

    return app


class SlowEndpoint:
    """Start the slow endpoint in a process of its own (so that it never shares the event
    loop or the GIL with the code being measured) and stop it on exit."""

    def __init__(self, delay_ms: float) -> None:
        self.delay_ms = delay_ms
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SlowEndpoint:
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fastpost.lab.slow_endpoint",
                str(self.port),
                str(self.delay_ms),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{self.url}ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                stderr = b""
                if self._process.poll() is not None and self._process.stderr is not None:
                    stderr = self._process.stderr.read()
                self.__exit__()
                raise RuntimeError(f"the slow endpoint did not start: {stderr.decode()[-500:]}")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()


def main() -> None:
    import uvicorn

    port, delay_ms = int(sys.argv[1]), float(sys.argv[2])
    # No backlog surprises: the lab opens at most a few dozen connections at once.
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    uvicorn.run(
        make_app(delay_ms / 1000),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
