"""FASTPOST_DB__REPLICA_URLS and its companions."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fastpost.settings import Settings

PRIMARY = "postgresql+asyncpg://postgres@127.0.0.1:5433/fastpost"


def test_replica_urls_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTPOST_DB__URL", PRIMARY)
    monkeypatch.setenv(
        "FASTPOST_DB__REPLICA_URLS",
        " postgresql+asyncpg://postgres@127.0.0.1:5434/fastpost,"
        "postgresql+asyncpg://postgres@127.0.0.1:5435/fastpost, ",
    )
    monkeypatch.setenv("FASTPOST_DB__REPLICA_MAX_LAG_SECONDS", "2.5")
    db = Settings().db
    assert db.replica_urls == [
        "postgresql+asyncpg://postgres@127.0.0.1:5434/fastpost",
        "postgresql+asyncpg://postgres@127.0.0.1:5435/fastpost",
    ]
    assert db.replica_max_lag_seconds == 2.5
    assert db.replica_check_interval_seconds == 0.5


def test_no_replicas_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTPOST_DB__REPLICA_URLS", raising=False)
    assert Settings().db.replica_urls == []


def test_replicas_need_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTPOST_DB__URL", "sqlite+aiosqlite:///data/fastpost.db")
    monkeypatch.setenv("FASTPOST_DB__REPLICA_URLS", PRIMARY)
    with pytest.raises(ValidationError, match="need PostgreSQL"):
        Settings()
