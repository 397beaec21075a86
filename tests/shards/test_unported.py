"""What sharded mode does not serve yet answers 501, and says so."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fastpost.settings import DatabaseSettings
from tests.shards.conftest import Api


async def test_routes_not_ported_yet_answer_501(api: Api) -> None:
    _, headers = await api.user("early")
    post_id = await api.post(headers, "Early")
    for method, path in (
        ("GET", "/posts/search?q=early"),
        ("GET", f"/posts/{post_id}/comments"),
    ):
        response = await api.client.request(method, path, headers=headers, json={})
        assert response.status_code == 501, (method, path, response.text)
        assert response.json()["detail"].endswith("is not available in sharded mode yet")


async def test_the_realworld_api_is_not_mounted_in_sharded_mode(api: Api) -> None:
    assert (await api.client.get("/api/articles")).status_code == 404


def test_sharded_mode_refuses_sqlite() -> None:
    with pytest.raises(ValidationError, match="needs PostgreSQL"):
        DatabaseSettings(shards=["sqlite+aiosqlite:///a.db", "sqlite+aiosqlite:///b.db"])


def test_sharded_mode_reads_its_databases_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastpost.settings import Settings

    urls = ["postgresql+asyncpg://h/a", "postgresql+asyncpg://h/b"]
    monkeypatch.setenv(
        "FASTPOST_DB__SHARDS", '["postgresql+asyncpg://h/a", "postgresql+asyncpg://h/b"]'
    )
    assert Settings(_env_file=None).db.shards == urls  # type: ignore[call-arg]
