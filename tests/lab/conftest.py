"""A small seeded lab database per backend (SQLite; PostgreSQL when
FASTPOST_TEST_POSTGRES_URL is set), made once per module by the lab itself."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fastpost.lab.config import LabConfig
from fastpost.lab.context import Lab
from fastpost.lab.environment import lab_database
from fastpost.seed import SeedPlan
from tests.conftest import BACKENDS, POSTGRES_URL

# Small enough to seed in about a second, large enough that every experiment has rows to
# read: authors with several posts, users with mutual follows, pages past the first.
TINY_PLAN = SeedPlan(users=40, posts=2000, follows=400, likes=800, seed=7)


def tiny_config(database_url: str | None = None, **sizes: object) -> LabConfig:
    values: dict[str, object] = {
        "plan": TINY_PLAN,
        "repeat": 1,
        "n_plus_one_posts": 12,
        "overview_users": 4,
        "list_sizes": (10, 1000),
        "pages": (1, 3, 1000),
        "page_size": 10,
        "index_lookups": 3,
        "cache_requests": 5,
        "hashes": 2,
        "stream_rows": 2000,
        "stream_batch": 25,
        "http_calls": 4,
        "http_delay_ms": 20.0,
    }
    values.update(sizes)
    return LabConfig(database_url=database_url, **values)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=BACKENDS)
async def lab(request: pytest.FixtureRequest) -> AsyncIterator[Lab]:
    """A lab on a freshly migrated and seeded database of each backend."""
    url = POSTGRES_URL if request.param == "postgres" else None
    config = tiny_config(url)
    async with lab_database(config) as database:
        yield Lab(config, database)
