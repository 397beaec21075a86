"""Lists that span shards: each shard's page, merged into one (a k-way merge)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastpost.db import Database, ReadStatement, Row
from fastpost.shards.router import Shards


def newest_first(row: Row) -> tuple[Any, int]:
    """The sort key of the keyset lists, (created_at, id), to merge them newest first."""
    return row["created_at"], row["id"]


async def fetch_each(
    databases: Sequence[Database],
    statement: ReadStatement,
    params: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    owned_by: Shards | None = None,
) -> list[Sequence[Row]]:
    """Run one read on several databases at once (the same parameters, or one set each);
    the first failure is raised once every read has ended (none keeps a connection past
    the response). With `owned_by`, each database's rows are those of the logical shards
    its map gives that database (Shards.owned), for lists of rows keyed by "id"."""
    per_db = [params] * len(databases) if isinstance(params, Mapping) else params
    results = await asyncio.gather(
        *(db.fetch_all(statement, p) for db, p in zip(databases, per_db, strict=True)),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    pages = [r for r in results if not isinstance(r, BaseException)]
    if owned_by is None:
        return pages
    return [owned_by.owned(db, rows) for db, rows in zip(databases, pages, strict=True)]


def merge_sorted(
    streams: Sequence[Sequence[Row]],
    count: int,
    key: Callable[[Row], Any] = newest_first,
) -> list[Row]:
    """The first `count` rows of streams each sorted by `key` descending, in that order.

    Each shard ran the list's statement with the same keyset bound and LIMIT, so the merged
    first `count` rows are exactly what one database holding every row would have returned:
    a row beyond some shard's LIMIT sorts after that shard's last row, which is in the
    merge already."""
    if len(streams) == 1:
        return list(streams[0][:count])
    return list(itertools.islice(heapq.merge(*streams, key=key, reverse=True), count))
