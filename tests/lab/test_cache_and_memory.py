"""The cache experiment goes through the real app and cache; streaming holds one batch."""

from __future__ import annotations

import os
import socket
from dataclasses import replace

import pytest
from sqlalchemy.engine import make_url

from fastpost.lab import caching, streaming
from fastpost.lab.context import Lab
from tests.helpers import local_redis_url

# The lab's Redis database in tests (other suites use other numbers).
REDIS_URL = os.environ.get("FASTPOST_TEST_LAB_REDIS_URL") or local_redis_url(12)


def _redis_reachable(url: str) -> bool:
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 6379), 0.5):
            return True
    except OSError:
        return False


@pytest.fixture
async def lab_with_redis(lab: Lab) -> Lab:
    if not _redis_reachable(REDIS_URL):
        pytest.skip(f"no Redis at {REDIS_URL}")
    database = lab.seeded
    settings = database.settings.model_copy(update={"redis_url": REDIS_URL})
    return Lab(lab.config, replace(database, settings=settings))


async def test_cold_post_detail_queries_the_database_and_warm_makes_no_query(lab: Lab) -> None:
    result = await caching.run(lab)

    cold = result.variant("cold (cache emptied)")
    warm = result.variant("warm tier 1 (in process)")
    assert cold.queries == 1
    assert cold.details["served_from"] == "database"
    assert warm.queries == 0
    assert warm.details["mean_queries"] == 0
    assert [m.variant for m in result.measurements] == [
        "cold (cache emptied)",
        "warm tier 1 (in process)",
    ]


async def test_with_redis_the_second_tier_serves_without_a_query(lab_with_redis: Lab) -> None:
    result = await caching.run(lab_with_redis)

    assert result.variant("cold (cache emptied)").queries == 1
    assert result.variant("warm tier 2 (Redis)").queries == 0
    assert result.variant("warm tier 1 (in process)").queries == 0
    assert result.extra["cache_stats"]["redis:hit"] > 0


async def test_streaming_peaks_far_below_loading_every_row(lab: Lab) -> None:
    # 2,000 posts of a few hundred characters each against batches of 25. Streaming has a
    # fixed cost of its own (about 340 KB on PostgreSQL, measured), so the result must be
    # large enough for the difference to be several times over, not noise: about 2 MB.
    result = await streaming.run(lab)

    everything = result.variant("load all rows")
    streamed = result.variant("session.stream")
    pages = result.variant("keyset pages")
    # The published ones among 2,000 posts (the seed makes about 5% drafts).
    rows = int(everything.size.removesuffix(" rows").replace(",", ""))
    assert 1500 < rows < 2000
    assert streamed.size == pages.size == everything.size
    assert everything.memory_bytes
    assert streamed.memory_bytes
    assert pages.memory_bytes
    assert streamed.memory_bytes * 3 < everything.memory_bytes
    assert pages.memory_bytes * 3 < everything.memory_bytes
    assert everything.queries == streamed.queries == 1
    # Pages of 25, the last one short.
    assert pages.queries == -(-rows // 25)
