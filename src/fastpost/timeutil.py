"""UTC timestamps, the one clock every row uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utcnow() -> datetime:
    """Return the current time in UTC, aware."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Treat a naive timestamp as UTC: SQLite hands back what it stored without a zone."""
    if value.tzinfo is UTC:  # asyncpg's timestamptz: nothing to convert, on every row read
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def unix_micros(moment: datetime) -> int:
    """Microseconds since 1970, exactly: `timestamp() * 1e6` is a float and is one off for
    some dates, enough to make a cursor skip or repeat rows that share a timestamp."""
    return (as_utc(moment) - EPOCH) // MICROSECOND
