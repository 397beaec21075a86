"""The client's WAL position: its text form, and the cookie that carries it (no database)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from fastpost.replicas import (
    LSN_COOKIE,
    PRIMARY_UNTIL_EXPIRY,
    ReadYourWrites,
    Routing,
    carries_position,
    lsn_text,
    parse_lsn,
)
from fastpost.replicas import _routing as current_routing


@pytest.mark.parametrize("lsn", [0, 1, 0x3016038, (0x16 << 32) | 0xB374D848, PRIMARY_UNTIL_EXPIRY])
def test_a_position_reads_back_as_written(lsn: int) -> None:
    assert parse_lsn(lsn_text(lsn)) == lsn


def test_positions_are_written_as_postgresql_writes_them() -> None:
    assert lsn_text((0x16 << 32) | 0xB374D848) == "16/B374D848"


@pytest.mark.parametrize("text", ["", "16", "16/", "/1", "-1/2", "1_0/2", "123456789/1", "x/y"])
def test_anything_else_is_not_a_position(text: str) -> None:
    assert parse_lsn(text) is None


class _Seen:
    """An endpoint that notes where its reads would go, and writes when asked to."""

    def __init__(self) -> None:
        self.routing: Routing | None = None
        self.carries_position = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.routing = current_routing.get()
        self.carries_position = carries_position()
        assert self.routing is not None
        if scope["path"] == "/write":
            self.routing.written = 0x3000000
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture
def seen() -> _Seen:
    return _Seen()


@pytest.fixture
async def client(seen: _Seen) -> AsyncIterator[httpx.AsyncClient]:
    app = ReadYourWrites(seen, max_age_seconds=7)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.mark.parametrize(
    ("cookie", "floor"),
    [
        (f"{LSN_COOKIE}=0/3016038", 0x3016038),
        (f"a=b; {LSN_COOKIE}=1/0; c=d", 1 << 32),
        (f"other_{LSN_COOKIE}=0/5; {LSN_COOKIE}=0/6", 6),
        (f"other_{LSN_COOKIE}=0/5", None),
        (f"{LSN_COOKIE}=nonsense", None),
    ],
)
async def test_reads_carry_the_position_of_the_cookie_and_nothing_else(
    client: httpx.AsyncClient, seen: _Seen, cookie: str, floor: int | None
) -> None:
    response = await client.get("/", headers={"Cookie": cookie})
    assert response.status_code == 200
    assert seen.routing is not None
    assert seen.routing.floor_known is (floor is not None)
    assert seen.routing.floor == (floor or 0)
    assert seen.carries_position is bool(floor)
    assert not seen.routing.primary
    assert "set-cookie" not in response.headers


async def test_a_write_sets_the_greater_of_its_position_and_the_one_it_came_with(
    client: httpx.AsyncClient, seen: _Seen
) -> None:
    older = await client.post("/write", headers={"Cookie": f"{LSN_COOKIE}=0/1"})
    newer = await client.post("/write", headers={"Cookie": f"{LSN_COOKIE}=1/0"})
    assert seen.routing is not None
    assert seen.routing.primary  # a POST's reads go to the primary
    assert older.headers["set-cookie"] == (
        f"{LSN_COOKIE}=0/3000000; Max-Age=7; Path=/; HttpOnly; SameSite=Lax"
    )
    assert newer.headers["set-cookie"].startswith(f"{LSN_COOKIE}=1/0;")
