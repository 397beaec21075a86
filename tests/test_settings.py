"""Configuration: environment variables, the development key, production refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fastpost.settings import Settings


def test_settings_read_nested_groups_from_prefixed_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FASTPOST_DB__URL", "postgresql+asyncpg://u@h/db")
    monkeypatch.setenv("FASTPOST_DB__POOL_SIZE", "7")
    monkeypatch.setenv("FASTPOST_AUTH__TOKEN_LIFETIME_SECONDS", "120")
    monkeypatch.setenv("FASTPOST_OBSERVABILITY__LOG_LEVEL", "WARNING")
    settings = Settings()
    assert settings.db.url == "postgresql+asyncpg://u@h/db"
    assert settings.db.pool_size == 7
    assert settings.auth.token_lifetime_seconds == 120
    assert settings.observability.log_level == "WARNING"


def test_the_default_database_is_a_sqlite_file_under_data() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.db.url == "sqlite+aiosqlite:///data/fastpost.db"
    assert settings.db.is_sqlite


def test_a_dotenv_file_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("FASTPOST_DB__POOL_SIZE=3\n")
    assert Settings().db.pool_size == 3


def test_development_generates_a_secret_key_once_and_keeps_it(tmp_path: Path) -> None:
    first = Settings(env="development", data_dir=tmp_path).secret_key
    second = Settings(env="development", data_dir=tmp_path).secret_key
    assert first == second
    assert len(first) >= 32
    key_file = tmp_path / "secret_key"
    assert key_file.stat().st_mode & 0o077 == 0  # readable by its owner only


@pytest.mark.parametrize("key", [None, "", "short-key"])
def test_production_refuses_to_start_without_a_strong_key(
    key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FASTPOST_AUTH__SECRET_KEY", raising=False)
    with pytest.raises(ValidationError, match="FASTPOST_AUTH__SECRET_KEY"):
        Settings(env="production", auth={"secret_key": key})


def test_production_accepts_a_strong_key() -> None:
    key = "k" * 48
    assert Settings(env="production", auth={"secret_key": key}).secret_key == key


def test_shard_id_must_fit_the_id_layout() -> None:
    with pytest.raises(ValidationError):
        Settings(db={"shard_id": 32})
