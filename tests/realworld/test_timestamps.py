"""The API's timestamps: always milliseconds and a zone, whatever the driver hands back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from fastpost.realworld.service import iso_ms


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 2, 3, 4, 5, 678999, tzinfo=UTC),  # asyncpg
        datetime(2026, 1, 2, 3, 4, 5, 678999),  # SQLite: naive, stored as UTC
        datetime(2026, 1, 2, 5, 4, 5, 678999, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_timestamps_are_utc_with_milliseconds_truncated(moment: datetime) -> None:
    assert iso_ms(moment) == "2026-01-02T03:04:05.678Z"


def test_a_whole_second_still_shows_its_milliseconds() -> None:
    assert iso_ms(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"
