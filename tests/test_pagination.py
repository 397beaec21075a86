"""Cursors: opaque, round-trip exactly, and refuse garbage with a clear error."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fastpost.errors import InvalidInput
from fastpost.pagination import Cursor, cut_page


def test_a_cursor_round_trips_to_the_microsecond() -> None:
    cursor = Cursor(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), 2**53 - 1)
    assert Cursor.decode(cursor.encode()) == cursor


def test_a_naive_timestamp_from_sqlite_is_read_as_utc() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5, 6)
    decoded = Cursor.decode(Cursor(naive, 7).encode())
    assert decoded.created_at == naive.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "token", ["", "!!!", "bm90LWEtY3Vyc29y", "MTIzOmFiYw", "OTk5OTk5OTk5OTk5OTk5OTk5OTk5OjE"]
)
def test_garbage_cursors_are_refused_as_invalid_input(token: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Cursor.decode(token)
    assert caught.value.field == "cursor"


def test_cut_page_returns_a_cursor_only_when_more_rows_follow() -> None:
    rows = [(datetime(2026, 1, 1, tzinfo=UTC), i) for i in range(5, 0, -1)]
    page, cursor = cut_page(rows, 4, lambda r: Cursor(*r))
    assert len(page) == 4
    assert cursor is not None
    assert Cursor.decode(cursor).id == 2
    page, cursor = cut_page(rows, 5, lambda r: Cursor(*r))
    assert len(page) == 5
    assert cursor is None
