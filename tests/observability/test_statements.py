"""Finding bottlenecks in the database: the N+1 detector and the slow query log."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import bindparam, select

from fastpost.db import Database, table_of
from fastpost.observability import statements
from fastpost.observability.statements import SlowQueryLog, StatementRecorder
from fastpost.users.models import User
from tests.conftest import Factory
from tests.observability.conftest import LogLines

users = table_of(User)
USER_BY_ID = select(users.c.id, users.c.username).where(users.c.id == bindparam("user_id"))


def add_routes(app: FastAPI) -> None:
    async def one_query_per_user() -> list[str]:
        db: Database = app.state.db
        names = []
        for user_id in range(1, 8):
            row = await db.fetch_one(USER_BY_ID, {"user_id": user_id})
            names.append(row["username"] if row else "")
        return names

    async def few_queries() -> list[str]:
        db: Database = app.state.db
        return [str(await db.fetch_one(USER_BY_ID, {"user_id": i})) for i in range(3)]

    app.add_api_route("/n-plus-one", one_query_per_user)
    app.add_api_route("/few", few_queries)


@pytest.mark.allow_n_plus_one
async def test_a_statement_repeated_past_the_threshold_is_reported_with_its_route(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, logs: LogLines
) -> None:
    await factory.users(7)
    add_routes(app)
    with statements.collect_n_plus_one() as found:
        assert (await client.get("/n-plus-one")).status_code == 200
    [repeated] = found
    assert repeated.route == "/n-plus-one"
    assert repeated.count == 7
    assert "FROM users" in repeated.statement
    [warning] = [r for r in logs.records() if r["event"] == "n+1 query"]
    assert warning["route"] == "/n-plus-one"
    assert warning["level"] == "warning"
    assert warning["request_id"]


async def test_a_few_repeats_are_not_an_n_plus_one(app: FastAPI, client: httpx.AsyncClient) -> None:
    add_routes(app)
    with statements.collect_n_plus_one() as found:
        await client.get("/few")
    assert found == []


def test_statement_shapes_ignore_literals_and_parameter_lists() -> None:
    a = statements.normalise("SELECT * FROM posts WHERE id IN (?, ?, ?) AND author_id = 12")
    b = statements.normalise("SELECT * FROM posts WHERE id IN (?, ?) AND author_id = 7")
    assert a == b
    assert statements.normalise("SELECT $1::BIGINT, 'x'") == statements.normalise(
        "SELECT $2::BIGINT, 'y'"
    )


@pytest.fixture
def slow_queries(app: FastAPI) -> object:
    recorder: StatementRecorder = app.state.observability.statements
    previous = recorder.slow_query_log
    db: Database = app.state.db
    # Every statement counts as slow here.
    recorder.slow_query_log = SlowQueryLog(
        0.0, explain=db.explain if db.dialect == "postgresql" else None
    )
    yield
    recorder.slow_query_log = previous


async def test_slow_statements_are_logged_with_duration_and_postgres_plan_but_no_values(
    app: FastAPI, client: httpx.AsyncClient, factory: Factory, logs: LogLines, slow_queries: object
) -> None:
    author = await factory.user("secretive", email="private-address@example.com")
    await factory.post(author)
    await client.get(f"/users/{author.id}/posts")
    await client.get(f"/users/{author.id}")
    await app.state.observability.statements.wait_for_explains()
    # Those of the requests (the factory's inserts above are logged too, outside any).
    slow = [r for r in logs.records() if r["event"] == "slow query" and "request_id" in r]
    assert slow
    assert all(r["duration_ms"] >= 0 for r in slow)
    assert "private-address" not in logs.text
    if app.state.db.dialect == "postgresql":
        plans = [r["plan"] for r in slow if "plan" in r]
        assert plans
        assert any("Scan" in plan for plan in plans)


async def test_queries_are_counted_by_operation(client: httpx.AsyncClient) -> None:
    from prometheus_client import REGISTRY

    from fastpost.observability import metrics

    metrics.flush()
    before = REGISTRY.get_sample_value("db_queries_total", {"operation": "select"}) or 0
    await client.get("/posts/")
    metrics.flush()
    assert (REGISTRY.get_sample_value("db_queries_total", {"operation": "select"}) or 0) > before
