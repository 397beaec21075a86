"""How much work one feed statement does inside PostgreSQL: buffers touched and time spent.

Under many concurrent connections the feed's time went to waiting inside PostgreSQL (issue
14: 62 ms of database time per request at -c64 for a statement that takes about 1 ms
alone), so the figure that matters is the work per call, which every concurrent call
contends for: the shared buffers it pins and reads, and the planning it repeats. This runs
the feed statements exactly as the services build them (fastpost.posts.queries.
feed_statement, for the native API and for RealWorld) as the app does: a prepared
statement per shape on one connection, executed for every reader once (a pooled
connection that has served a few requests: PostgreSQL's plan cache then settles on a
generic plan, or keeps planning for each call's values), then EXPLAIN (ANALYZE, BUFFERS)
EXECUTE for each reader, the median of --repeat warm runs. The readers are those
`fastpost bench` logs in, and the ones following the most authors; the pages are the first
and the one after --depth rows. It measures no throughput, so it can run on a busy machine.

    .venv/bin/fastpost db upgrade && .venv/bin/fastpost seed --users 1000 --posts 20000 \\
        --follows 10000 --likes 20000        # what `fastpost bench` seeds by default
    .venv/bin/python -m benchmarks.explain_feed --url postgresql://postgres@127.0.0.1/DB

--plans generic or custom forces PostgreSQL's choice (plan_cache_mode); --each prints a line
per reader, --plan each plan.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import itertools
import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import Select
from sqlalchemy.dialects import postgresql

from fastpost.pagination import Page
from fastpost.posts import queries
from fastpost.posts.queries import PostRead
from fastpost.realworld import service as realworld_service
from fastpost.social import service as social_service

DIALECT = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]


def _feed_statement(read: PostRead, shape: tuple[bool, bool], *, total: bool) -> Select[Any]:
    # So that the same script measures the statement as it was before migration 0007
    # (commit 93d3807, whose builder took no dialect), run against that commit's src/.
    build: Any = queries.feed_statement
    if "dialect" in inspect.signature(build.__wrapped__).parameters:
        return build("postgresql", read, shape, total=total)  # type: ignore[no-any-return]
    return build(read, shape, total=total)  # type: ignore[no-any-return]


def _compile(stmt: Select[Any], params: Mapping[str, Any]) -> tuple[str, list[Any]]:
    compiled = stmt.compile(dialect=DIALECT)
    values = {**compiled.params, **params}
    return str(compiled), [values[name] for name in compiled.positiontup or ()]


@dataclass
class Call:
    buffers: int  # shared buffers the execution touched
    ms: float  # execution
    planning_ms: float  # spent on every call that is not served a cached generic plan
    generic: bool
    plan: str


def _call(explained: dict[str, Any], plan: str) -> Call:
    top = explained["Plan"]
    return Call(
        buffers=top["Shared Hit Blocks"] + top["Shared Read Blocks"],
        ms=explained["Execution Time"],
        planning_ms=explained.get("Planning Time", 0.0),
        # A generic plan compares with the parameters themselves, $1, not their values.
        generic="$1" in plan,
        plan=plan,
    )


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


class Prepared:
    """One statement prepared on the connection, as asyncpg prepares each the app sends."""

    _names = itertools.count()

    def __init__(self, conn: asyncpg.Connection, stmt: Select[Any]) -> None:
        self.conn, self.stmt = conn, stmt
        self.name = f"feed_{next(self._names)}"

    async def prepare(self) -> None:
        await self.conn.execute(f"PREPARE {self.name} AS {_compile(self.stmt, {})[0]}")

    def _execute(self, params: Mapping[str, Any]) -> str:
        return f"EXECUTE {self.name}({', '.join(map(_literal, _compile(self.stmt, params)[1]))})"

    async def run(self, params: Mapping[str, Any]) -> None:
        await self.conn.execute(self._execute(params))

    async def explain(self, params: Mapping[str, Any], repeat: int) -> Call:
        sql = self._execute(params)
        runs = []
        for _ in range(repeat):
            raw = await self.conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}")
            runs.append(json.loads(raw)[0])
        text = await self.conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        last = _call(runs[-1], "\n".join(row[0] for row in text))
        last.ms = statistics.median(run["Execution Time"] for run in runs)
        last.planning_ms = statistics.median(run.get("Planning Time", 0.0) for run in runs)
        return last


async def _deep_cursor(conn: asyncpg.Connection, viewer: int, depth: int) -> tuple[datetime, int]:
    row = await conn.fetchrow(
        "SELECT p.created_at, p.id FROM posts p JOIN follows f ON f.followee_id = p.author_id"
        " WHERE f.follower_id = $1 AND p.status = 'published'"
        " ORDER BY p.created_at DESC, p.id DESC OFFSET $2 LIMIT 1",
        viewer,
        depth - 1,
    )
    return (row["created_at"], row["id"]) if row else (datetime.max, 0)


# As `fastpost bench` picks who logs in (fastpost.bench.scenarios.discover and log_in):
# testuser, then the lowest ids among the authors of the 500 newest published posts.
_BENCH_USERS = """
    SELECT id FROM (
        (SELECT 1 AS rank, id FROM users WHERE username = 'testuser')
        UNION ALL
        (SELECT 2, author_id FROM (
            SELECT DISTINCT author_id FROM (
                SELECT author_id FROM posts WHERE status = 'published'
                ORDER BY created_at DESC, id DESC LIMIT 500) AS newest) AS authors
         ORDER BY author_id)
    ) AS chosen
    ORDER BY rank, id LIMIT $1
"""


async def _viewers(conn: asyncpg.Connection, args: argparse.Namespace) -> list[int]:
    n = args.bench_users
    # testuser may be among the authors too: the bench logs them in once.
    chosen = list(dict.fromkeys(row["id"] for row in await conn.fetch(_BENCH_USERS, 2 * n)))
    chosen = chosen[:n]
    most = await conn.fetch(
        "SELECT follower_id FROM follows GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT $1",
        args.viewers,
    )
    for viewer in [row["follower_id"] for row in most] + args.viewer:
        if viewer not in chosen:
            chosen.append(viewer)
    return chosen


def _cases(args: argparse.Namespace) -> list[tuple[str, bool, Page]]:
    """(name, native API, page): the first page and the page after `depth` rows."""
    first, deep = Page(args.limit, None, 0), Page(args.limit, None, args.depth)
    return [
        ("native, first page", True, first),
        (f"native, cursor after {args.depth}", True, first),
        ("realworld, offset 0", False, first),
        (f"realworld, offset {args.depth}", False, deep),
    ]


def _params(
    viewer: int,
    is_native: bool,
    page: Page,
    cursors: Mapping[int, tuple[datetime, int]],
    limit: int,
) -> dict[str, Any]:
    values: dict[str, Any] = {"viewer_id": viewer, **page.params}
    if is_native:
        at, last_id = cursors[viewer]
        values |= {"cursor_created_at": at, "cursor_id": last_id}
    else:
        values["limit"] = limit  # RealWorld asks for no extra row
    return values


async def _measure(
    conn: asyncpg.Connection, args: argparse.Namespace, viewers: list[int]
) -> dict[str, list[tuple[int, Call]]]:
    native = social_service._FEED
    realworld = realworld_service.post_read("postgresql", body=False, viewer=True)
    cursors = {viewer: await _deep_cursor(conn, viewer, args.depth) for viewer in viewers}
    results: dict[str, list[tuple[int, Call]]] = {}
    for name, is_native, page in _cases(args):
        if is_native:
            stmt = _feed_statement(native, ("cursor" in name, False), total=False)
        else:
            stmt = _feed_statement(realworld, page.shape, total=True)

        prepared = Prepared(conn, stmt)
        await prepared.prepare()
        for viewer in viewers:  # the plan cache's first executions, and a warm cache
            await prepared.run(_params(viewer, is_native, page, cursors, args.limit))
        for viewer in viewers:
            values = _params(viewer, is_native, page, cursors, args.limit)
            call = await prepared.explain(values, args.repeat)
            results.setdefault(name, []).append((viewer, call))
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/feed_scratch")
    parser.add_argument(
        "--bench-users", type=int, default=20, help="the readers `fastpost bench` logs in"
    )
    parser.add_argument("--viewers", type=int, default=3, help="and the N following most")
    parser.add_argument("--viewer", type=int, action="append", default=[], help="and this one")
    parser.add_argument("--depth", type=int, default=200, help="rows before the deep page")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--plans", choices=["auto", "generic", "custom"], default="auto")
    parser.add_argument("--plan", action="store_true")
    parser.add_argument("--each", action="store_true", help="a line per reader, not a summary")
    args = parser.parse_args()

    conn = await asyncpg.connect(args.url)
    try:
        mode = {"auto": "auto", "generic": "force_generic_plan", "custom": "force_custom_plan"}
        await conn.execute(f"SET plan_cache_mode = {mode[args.plans]}")
        viewers = await _viewers(conn, args)
        results = await _measure(conn, args, viewers)
    finally:
        await conn.close()

    if args.each or args.plan:
        print(f"{'reader':>7}  {'statement':<28} {'buffers':>8} {'ms':>7} {'plan ms':>7}")
        for name, calls in results.items():
            for viewer, call in calls:
                print(
                    f"{viewer:>7}  {name:<28} {call.buffers:>8} {call.ms:>7.3f}"
                    f" {call.planning_ms:>7.3f}"
                )
                if args.plan:
                    print(call.plan, end="\n\n")
    print(f"{len(viewers)} readers, plan_cache_mode = {args.plans}; per call:")
    print(
        f"{'statement':<28} {'buffers mean':>12} {'max':>6} {'ms mean':>8} {'max':>7}"
        f" {'plan ms':>8} {'generic':>8}"
    )
    for name, calls in results.items():
        buffers = [call.buffers for _, call in calls]
        times = [call.ms for _, call in calls]
        planning = statistics.mean(call.planning_ms for _, call in calls)
        generic = sum(call.generic for _, call in calls)
        print(
            f"{name:<28} {statistics.mean(buffers):>12.0f} {max(buffers):>6}"
            f" {statistics.mean(times):>8.3f} {max(times):>7.3f} {planning:>8.3f}"
            f" {generic:>4}/{len(calls)}"
        )


if __name__ == "__main__":
    asyncio.run(main())
