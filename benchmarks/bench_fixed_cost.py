"""What a request pays outside its endpoint: CPU per request of fastpost's routes, in process.

For each route it measures, in alternating rounds (fastpost.bench.in_process explains the
method), the process CPU time per request of:

    lean       the app as it runs (create_app, everything on: access log, metrics)
    routed     the same app with its plain and lean routes taken out (fastpost.routing
               RouteTable), so that every request goes through FastAPI's routers, dependency
               solving and response handling, as before they existed
    starlette  bare Starlette answering the exact bytes fastpost answered
    asyncpg    for the uncached post: Starlette + asyncpg running the same SQL by hand
               (benchmarks/baseline_apps.py)

No HTTP server, no socket: what uvicorn and the kernel add is the same for every app and
left out, so these ratios are lower than the served ones of bench_reads.py, bench_cache.py
and bench_observability.py; the differences in microseconds carry over.

    .venv/bin/python -m benchmarks.bench_fixed_cost [--rounds 9] [--keep-db]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop
from fastapi import FastAPI
from rich.console import Console
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from benchmarks.baseline_apps import asyncpg_app
from fastpost.bench.database import asyncpg_dsn, drop_postgres, prepare_postgres
from fastpost.bench.in_process import environment
from fastpost.bench.servers import base_env
from fastpost.routing import RouteTable

console = Console()
Headers = Sequence[tuple[bytes, bytes]]


def _routed(app: FastAPI) -> FastAPI:
    app.router.routes[:] = [r for r in app.router.routes if not isinstance(r, RouteTable)]
    return app


def _constant(body: bytes) -> Starlette:
    async def answer(request: Any) -> Response:
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", answer)])


async def _call(
    app: ASGIApp,
    method: str,
    path: str,
    query: bytes = b"",
    headers: Headers = (),
    body: bytes = b"",
) -> dict[str, Any]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    answer: dict[str, Any] = {}

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = dict(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            answer["body"] = message.get("body", b"")

    await app(scope, receive, send)
    return answer


async def _cpu_us(app: ASGIApp, path: str, query: bytes, headers: Headers, requests: int) -> float:
    async def client(count: int) -> None:
        for _ in range(count):
            await _call(app, "GET", path, query, headers)

    concurrency = 8
    started = time.process_time()
    await asyncio.gather(*(client(requests // concurrency) for _ in range(concurrency)))
    return (time.process_time() - started) / (requests // concurrency * concurrency) * 1e6


async def measure(rounds: int, requests: int) -> list[dict[str, Any]]:
    from fastpost.app import create_app
    from fastpost.settings import CacheSettings, Settings
    from fastpost.worker import tune_gc_while_serving

    def served(settings: Settings | None = None) -> Any:
        """The app as a `fastpost serve` worker runs it (fastpost.worker)."""
        return tune_gc_while_serving(create_app(settings))

    cache_off = Settings(cache=CacheSettings(enabled=False))
    apps: dict[str, Any] = {
        "lean": served(),
        "routed": _routed(served()),
        "lean-nc": served(cache_off),
        "routed-nc": _routed(served(cache_off)),
        "asyncpg": asyncpg_app(),
    }
    async with contextlib.AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        lean = apps["lean"]
        login = await _call(
            lean,
            "POST",
            "/auth/login",
            headers=[(b"content-type", b"application/x-www-form-urlencoded")],
            body=b"username=testuser&password=testpass",
        )
        token = json.loads(login["body"])["access_token"].encode()
        bearer = [(b"authorization", b"Bearer " + token)]
        first = json.loads((await _call(lean, "GET", "/posts/", b"limit=1"))["body"])["items"][0]
        post = f"/posts/{first['id']}"
        etag = (await _call(lean, "GET", post))["headers"][b"etag"]
        user = f"/users/{first['author']['id']}"
        cases: dict[str, tuple[str, str, bytes, Headers]] = {
            "GET /health": ("", "/health", b"", ()),
            "GET /posts/{id} cached": ("", post, b"", ()),
            "GET /posts/{id} 304": ("", post, b"", [(b"if-none-match", etag)]),
            "GET /posts/{id} cache off": ("-nc", post, b"", ()),
            "GET /posts/{id} logged in": ("", post, b"", bearer),
            "GET /posts/?limit=20 cached": ("", "/posts/", b"limit=20", ()),
            "GET /posts/?limit=20 cache off": ("-nc", "/posts/", b"limit=20", ()),
            "GET /posts/popular": ("", "/posts/popular", b"", ()),
            "GET /users/me": ("", "/users/me", b"", bearer),
            "GET /users/{id}": ("", user, b"", ()),
            "GET /users/{id}/overview": ("", f"{user}/overview", b"", ()),
            "GET /tags/": ("", "/tags/", b"", ()),
            "GET /api/articles": ("", "/api/articles", b"", ()),
            "GET /api/tags": ("", "/api/tags", b"", ()),
        }
        baselines: dict[str, ASGIApp] = {}
        for name, (variant, path, query, headers) in cases.items():
            got = await _call(apps["lean" + variant], "GET", path, query, headers)
            routed = await _call(apps["routed" + variant], "GET", path, query, headers)
            if (got["status"], got["body"]) != (routed["status"], routed["body"]):
                raise RuntimeError(f"{name}: the lean and routed apps answer differently")
            full = got if got["status"] != 304 else await _call(apps["lean"], "GET", path)
            baselines[name] = _constant(full["body"])
        figures: dict[str, dict[str, list[float]]] = {name: {} for name in cases}
        for _ in range(rounds):
            for name, (variant, path, query, headers) in cases.items():
                runs: dict[str, tuple[ASGIApp, Headers]] = {
                    "routed": (apps["routed" + variant], headers),
                    "lean": (apps["lean" + variant], headers),
                    "starlette": (baselines[name], ()),
                }
                if variant == "-nc" and path == post:
                    runs["asyncpg"] = (apps["asyncpg"], ())
                for app_name, (app, sent) in runs.items():
                    cost = await _cpu_us(app, path, query, sent, requests)
                    figures[name].setdefault(app_name, []).append(cost)
    return [
        {"route": name, **{app: min(values) for app, values in by_app.items()}}
        for name, by_app in figures.items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds (best kept)")
    parser.add_argument("--requests", type=int, default=400, help="requests per app per round")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL URL of a role that may create databases (env BENCH_ADMIN_URL)",
    )
    parser.add_argument("--db-name", default="fastpost_bench_fixed", help="scratch database")
    parser.add_argument("--keep-db", action="store_true", help="keep (and reuse) the database")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)
    env = base_env()
    url = prepare_postgres(
        args.database_url,
        args.db_name,
        seed_args={"users": 100, "posts": 1000},
        keep=args.keep_db,
        env=env,
        console=console,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="bench-fixed-cost-") as scratch:
            tmp = Path(scratch)
            (tmp / "metrics").mkdir()
            app_env = {
                **env,
                "FASTPOST_DB__URL": url.render_as_string(hide_password=False),
                "FASTPOST_DATA_DIR": str(tmp),
                "FASTPOST_OBSERVABILITY__LOG_FORMAT": "json",
                "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
                "BENCH_PG_DSN": asyncpg_dsn(url),
                "BENCH_PG_POOL_MIN": "1",
            }
            # The access lines go to a file, as a served app's would.
            with (
                environment(app_env),
                (tmp / "access.log").open("w") as log,
                contextlib.redirect_stdout(log),
            ):
                rows = uvloop.run(measure(args.rounds, args.requests))
    finally:
        if not args.keep_db:
            drop_postgres(args.database_url, args.db_name, console)
    print("CPU µs per request, in process (best of the rounds)")
    print(f"{'route':<34}{'routed':>9}{'lean':>9}{'starlette':>11}{'asyncpg':>9}")
    for row in rows:
        asyncpg = f"{row['asyncpg']:9.1f}" if "asyncpg" in row else ""
        print(
            f"{row['route']:<34}{row['routed']:9.1f}{row['lean']:9.1f}"
            f"{row['starlette']:11.1f}{asyncpg}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
