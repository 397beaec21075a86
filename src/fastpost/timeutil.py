"""UTC timestamps, the one clock every row uses."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Return the current time in UTC, aware."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Treat a naive timestamp as UTC: SQLite hands back what it stored without a zone."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
