"""`fastpost db top` and `fastpost db explain` (fastpost.observability.db_top, db_explain)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from fastpost.app import create_app
from fastpost.cluster.postgres import PgNode
from fastpost.db import Database
from fastpost.migrations import upgrade
from fastpost.observability.db_explain import (
    explain_request,
    explainable,
    render_explain,
    slowest_postgres_node,
)
from fastpost.observability.db_top import one_line
from fastpost.observability.statements import record_statements
from fastpost.posts.models import Post
from fastpost.settings import (
    AuthSettings,
    CacheSettings,
    DatabaseSettings,
    RateLimitSettings,
    Settings,
)
from fastpost.timeutil import utcnow
from fastpost.users.models import User
from tests.helpers import (
    environment,
    fastpost,
    migrate_and_seed,
    postgres_cluster,
    postgres_missing_reason,
    scrape,
    serve_fastpost,
)

REQUESTS = 7
# Wide enough that no statement is cut before the part the tests look for.
WIDE = {"COLUMNS": "1000"}
ENABLING_STEPS = (
    "shared_preload_libraries = 'pg_stat_statements'",
    "restart PostgreSQL",
    "CREATE EXTENSION pg_stat_statements;",
)


def calls_of(output: str, statement: str) -> int | None:
    """The calls column of the `db top` row whose statement begins like `statement`."""
    start = one_line(statement, 1000)[:80]
    for line in output.splitlines():
        if start in line:
            return int(line.split()[0].replace(",", ""))
    return None


# --- db top on PostgreSQL ---------------------------------------------------------------


@pytest.fixture(scope="module")
def stats_node() -> Iterator[PgNode]:
    """A throwaway PostgreSQL server with pg_stat_statements preloaded (the machine's own
    cluster is not to be restarted)."""
    reason = postgres_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    preload = {"shared_preload_libraries": "'pg_stat_statements'"}
    with postgres_cluster(apply_delays=(), settings=preload) as cluster:
        yield cluster.primary


async def test_db_top_lists_the_statement_a_request_sent_with_at_least_its_calls(
    stats_node: PgNode, tmp_path: Path
) -> None:
    url = stats_node.url(driver="postgresql+asyncpg")
    db = Database(DatabaseSettings(url=url))
    await upgrade(db.write_engine, db.settings)
    async with db.reader() as conn:
        await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
    async with db.transaction() as session:
        author = User(username="ada", email="ada@example.com", password_hash="x")
        session.add(author)
        await session.flush()
        post = Post(author_id=author.id, title="T", content="C", status="published")
        post.created_at = post.updated_at = utcnow()
        session.add(post)
        await session.flush()
        post_id = post.id
    await db.dispose()
    settings = Settings(
        env="test",
        db=DatabaseSettings(url=url),
        auth=AuthSettings(secret_key="k" * 48),
        cache=CacheSettings(enabled=False),
        rate_limits=RateLimitSettings(enabled=False),
        data_dir=tmp_path / "data",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            with record_statements() as sent:
                for _ in range(REQUESTS):
                    assert (await client.get(f"/posts/{post_id}")).status_code == 200
    statement = next(s for s in sent if explainable(s))

    env = {**environment(tmp_path), **WIDE, "FASTPOST_DB__URL": url}
    result = fastpost("db", "top", "--order", "calls", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "pg_stat_statements in database postgres" in result.stdout
    assert result.stdout.splitlines()[2].split()[:4] == ["calls", "total", "ms", "mean"]
    calls = calls_of(result.stdout, statement)
    assert calls is not None, result.stdout
    assert calls >= REQUESTS


def test_db_top_without_the_extension_says_how_to_enable_it_and_fails(tmp_path: Path) -> None:
    url = os.environ.get("FASTPOST_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("FASTPOST_TEST_POSTGRES_URL is not set")
    preloaded = fastpost_scalar(url, "SHOW shared_preload_libraries")
    if "pg_stat_statements" in preloaded:
        pytest.skip("the machine's PostgreSQL preloads pg_stat_statements")
    asyncpg_url = make_url(url).set(drivername="postgresql+asyncpg")
    env = {
        **environment(tmp_path),
        "FASTPOST_DB__URL": asyncpg_url.render_as_string(hide_password=False),
    }

    result = fastpost("db", "top", env=env, cwd=tmp_path)

    assert result.returncode == 1
    for step in ENABLING_STEPS:
        assert step in result.stdout, result.stdout


def fastpost_scalar(url: str, sql: str) -> str:
    import asyncio

    async def run() -> str:
        async_url = make_url(url).set(drivername="postgresql+asyncpg")
        db = Database(DatabaseSettings(url=async_url.render_as_string(hide_password=False)))
        try:
            async with db.reader() as conn:
                return str(await conn.scalar(text(sql)))
        finally:
            await db.dispose()

    return asyncio.run(run())


# --- db top on SQLite, and the explain command end to end -------------------------------


def test_db_top_on_sqlite_shows_fastposts_own_statement_metrics(tmp_path: Path) -> None:
    env = {**environment(tmp_path), **WIDE}
    migrate_and_seed(env, tmp_path, "--users", "5", "--posts", "10", "--follows", "5")
    with serve_fastpost(env=env, cwd=tmp_path) as serving:
        with httpx.Client(base_url=serving.base) as client:
            for _ in range(REQUESTS):
                assert client.get("/posts/1", headers={"Cache-Control": "no-cache"}).is_success
        selects = scrape(serving.base)[("db_queries_total", (("operation", "select"),))]

        result = fastpost("db", "top", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "fastpost's own metrics" in result.stdout
    assert str(tmp_path / "data" / "metrics") in result.stdout
    calls = calls_of(result.stdout, "SELECT (every statement of this kind)")
    assert calls == int(selects)
    assert calls >= 1


def test_db_explain_command_prints_a_plan_with_its_slowest_node_marked(tmp_path: Path) -> None:
    env = {**environment(tmp_path), **WIDE}
    migrate_and_seed(env, tmp_path, "--users", "5", "--posts", "10", "--follows", "5")

    result = fastpost(
        "db", "explain", "GET", "/posts/1", "--user", "testuser", env=env, cwd=tmp_path
    )
    unknown = fastpost(
        "db", "explain", "GET", "/posts/1", "--user", "nobody", env=env, cwd=tmp_path
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("GET /posts/1 -> 200")
    assert "SEARCH posts" in result.stdout
    assert re.search(r"^ >> .+<< ", result.stdout, re.MULTILINE)
    assert unknown.returncode == 1
    assert "no user named 'nobody'" in unknown.stdout


def test_db_top_refuses_an_unknown_order(tmp_path: Path) -> None:
    result = fastpost("db", "top", "--order", "speed", env=environment(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "--order is one of: total, calls, mean, rows" in result.stdout


# --- db explain on each backend ---------------------------------------------------------


async def test_explain_plans_every_statement_of_a_read_and_marks_its_slowest_node(
    settings: Settings, factory: Any, client: httpx.AsyncClient
) -> None:
    author = await factory.user()
    post_id = await factory.post(author)
    with record_statements() as sent:
        assert (await client.get(f"/posts/{post_id}")).status_code == 200

    report = await explain_request(settings, "GET", f"/posts/{post_id}")

    assert report.status == 200
    assert [s.sent.sql for s in report.statements] == [s for s in sent if explainable(s)]
    output = render_explain(report)
    marked = [line for line in output.splitlines() if line.startswith(" >> ")]
    assert len(marked) == len(report.statements) >= 1
    if report.dialect == "postgresql":
        assert all("actual time=" in line for line in marked)
        assert "EXPLAIN (ANALYZE, BUFFERS)" in output
    else:
        assert "EXPLAIN QUERY PLAN" in output


async def test_explaining_a_write_leaves_the_data_unchanged(
    settings: Settings, factory: Any, db: Database
) -> None:
    author = await factory.user(username="writer")
    await factory.post(author)

    async def posts() -> int:
        async with db.reader() as conn:
            return int(await conn.scalar(text("SELECT count(*) FROM posts")) or 0)

    before = await posts()
    body = json.dumps({"title": "Explained", "content": "Never kept", "tags": ["plans"]})

    report = await explain_request(settings, "POST", "/posts/", username="writer", json_body=body)

    assert report.status == 201
    writes = [s for s in report.statements if "INSERT INTO posts" in s.sent.sql]
    assert writes
    if report.dialect == "postgresql":
        assert all("actual time=" in s.plan[s.slowest or 0] for s in writes)
    else:  # a plain INSERT ... VALUES reads no table: SQLite has no plan for it
        assert all(s.note for s in writes)
    assert await posts() == before


def test_slowest_node_is_the_one_with_the_most_time_of_its_own() -> None:
    plan = [
        "Nested Loop  (cost=0..1 rows=1 width=4) (actual time=0.010..5.000 rows=10 loops=1)",
        "  ->  Seq Scan on a  (cost=0..1 rows=1 width=4) "
        "(actual time=0.001..1.000 rows=10 loops=1)",
        "  ->  Index Scan using b_pkey on b  (cost=0..1 rows=1 width=4) "
        "(actual time=0.001..0.300 rows=1 loops=10)",
        "Planning Time: 0.1 ms",
    ]
    # The loop itself: 5.0 - 1.0 - 0.3 x 10 = 1.0 ms; the scan of b: 3.0 ms over its loops.
    assert slowest_postgres_node(plan) == (2, pytest.approx(3.0))
